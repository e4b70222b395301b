// tests/unit/tls_test.cpp -- HTTP and WebSocket over TLS against a real cserve::server
// SPDX-License-Identifier: BSL-1.0
//
// The server side is the library's (tls_stream, the context built from the config); the
// client side is Asio's ssl::stream and Beast. Certificates are made here with OpenSSL.
#include <cserve/detail/tls.hpp>
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/server_impl.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include <unistd.h>

// The test binary is linked with --wrap=SSL_new (tests/CMakeLists.txt): while `refuse` is
// above zero, the server's SSL_new fails as it does when memory runs out.
namespace {
std::atomic<SSL_CTX*> client_ctx{nullptr};
std::atomic<int> refuse{0};
std::atomic<int> refused{0};
} // namespace

extern "C" SSL* __real_SSL_new(SSL_CTX* ctx);

extern "C" SSL*
__wrap_SSL_new(SSL_CTX* ctx)
{
    if (ctx != client_ctx.load() && refuse.load() > 0) {
        --refuse;
        ++refused;
        return nullptr;
    }
    return __real_SSL_new(ctx);
}

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace ct = cserve_test;
namespace bhttp = boost::beast::http;
namespace http = cserve::http;

namespace {

// A self-signed P-256 certificate and its key, PEM-encoded.
struct identity {
    std::string cert;
    std::string key;
};

std::string
bio_text(BIO* bio)
{
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(n));
}

identity
make_identity(char const* cn)
{
    EVP_PKEY* key = EVP_EC_gen("P-256");
    REQUIRE(key);
    X509* x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<unsigned char const*>("cserve tests"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<unsigned char const*>(cn), -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                              std::pair{NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"}}) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    REQUIRE(X509_sign(x, key, EVP_sha256()) > 0);
    identity id;
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    id.cert = bio_text(b);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
    id.key = bio_text(b);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(key);
    return id;
}

// The server's and the client's identities, written to files once for the whole run.
struct fixture {
    identity server = make_identity("localhost");
    identity client = make_identity("cserve test client");
    identity stranger = make_identity("stranger");
    std::filesystem::path dir;
    std::string server_cert, server_key, client_ca, other_key;

    fixture()
    {
        char tmpl[] = "/tmp/cserve-tls-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        dir = tmpl;
        server_cert = write("server.pem", server.cert);
        server_key = write("server.key", server.key);
        client_ca = write("client-ca.pem", client.cert);
        other_key = write("other.key", stranger.key);
    }
    ~fixture() { std::filesystem::remove_all(dir); }

    std::string
    write(char const* name, std::string const& text) const
    {
        auto p = (dir / name).string();
        std::ofstream(p) << text;
        return p;
    }
};

fixture&
files()
{
    static fixture f;
    return f;
}

cserve::config
tls_config()
{
    auto cfg = ct::test_config();
    cfg.ssl_certfile = files().server_cert;
    cfg.ssl_keyfile = files().server_key;
    return cfg;
}

using tls_client = ssl::stream<net::ip::tcp::socket>;

// A client context that trusts the server's certificate, presenting `id` if given.
ssl::context
client_context(identity const* id = nullptr)
{
    ssl::context ctx(ssl::context::tls_client);
    ctx.add_certificate_authority(net::buffer(files().server.cert));
    ctx.set_verify_mode(ssl::verify_peer);
    if (id) {
        ctx.use_certificate_chain(net::buffer(id->cert));
        ctx.use_private_key(net::buffer(id->key), ssl::context::pem);
    }
    return ctx;
}

cserve::task<std::unique_ptr<tls_client>>
connect_tls(ssl::context& ctx, unsigned short port, boost::system::error_code& ec)
{
    auto ex = co_await net::this_coro::executor;
    auto s = std::make_unique<tls_client>(ex, ctx);
    co_await s->next_layer().async_connect({net::ip::make_address("127.0.0.1"), port}, net::use_awaitable);
    SSL_set_tlsext_host_name(s->native_handle(), "localhost");
    std::tie(ec) = co_await s->async_handshake(ssl::stream_base::client, ct::use_tuple);
    co_return s;
}

cserve::task<bhttp::response<bhttp::string_body>>
get(tls_client& s, std::string target)
{
    bhttp::request<bhttp::string_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "localhost");
    co_await bhttp::async_write(s, req, net::use_awaitable);
    boost::beast::flat_buffer buf;
    bhttp::response<bhttp::string_body> res;
    co_await bhttp::async_read(s, buf, res, net::use_awaitable);
    co_return res;
}

// What an application saw of its scope.
struct seen {
    std::string scheme;
    bool has_tls_extension = false;
    std::optional<cserve::tls_info> tls;
};

cserve::app_function
recording_app(std::vector<seen>& out)
{
    return [&out](cserve::scope& s, cserve::receive, cserve::send send) -> cserve::task<> {
        seen v;
        v.scheme = s.scheme;
        v.has_tls_extension = s.has_extension("tls");
        if (auto const* t = s.tls())
            v.tls = *t;
        out.push_back(std::move(v));
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "2"}}});
        co_await send(http::response_body{.body = "ok"});
    };
}

} // namespace

TEST_CASE("tls: requests over TLS see https and every field of the tls extension", "[tls]")
{
    std::vector<seen> apps;
    std::vector<int> statuses;
    boost::system::error_code hs;
    auto ctx = client_context();
    auto r = ct::run_server(recording_app(apps), tls_config(), [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(ctx, port, hs);
        if (hs)
            co_return;
        // Two requests on one connection: keep-alive over one handshake.
        for (int i = 0; i < 2; ++i)
            statuses.push_back((co_await get(*s, "/")).result_int());
        co_await s->async_shutdown(ct::use_tuple);
    });
    CSERVE_REQUIRE_RUN(r);
    INFO(hs.message());
    REQUIRE(!hs);
    CHECK(statuses == std::vector<int>{200, 200});
    REQUIRE(apps.size() == 2);
    for (auto const& a : apps) {
        CHECK(a.scheme == "https");
        CHECK(a.has_tls_extension);
        REQUIRE(a.tls);
        CHECK(a.tls->server_cert == files().server.cert);
        CHECK(a.tls->tls_version == 0x0304);
        // TLS 1.3's suites are 0x1301..0x1305 (RFC 8446 §B.4).
        CHECK(a.tls->cipher_suite >= 0x1301);
        CHECK(a.tls->cipher_suite <= 0x1305);
        CHECK(a.tls->client_cert_chain.empty());
        CHECK_FALSE(a.tls->client_cert_name);
        CHECK_FALSE(a.tls->client_cert_error);
    }
}

TEST_CASE("tls: a TLS 1.2 client gets 0x0303 and an ECDHE AEAD suite", "[tls]")
{
    std::vector<seen> apps;
    boost::system::error_code hs;
    auto ctx = client_context();
    SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    std::string cipher;
    auto r = ct::run_server(recording_app(apps), tls_config(), [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(ctx, port, hs);
        if (hs)
            co_return;
        (void)co_await get(*s, "/");
        cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(s->native_handle()));
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(!hs);
    REQUIRE(apps.size() == 1);
    REQUIRE(apps[0].tls);
    CHECK(apps[0].tls->tls_version == 0x0303);
    INFO(cipher);
    CHECK(cipher.starts_with("ECDHE-ECDSA-"));
    // 0xC02B/0xC02C: ECDHE-ECDSA AES-GCM; 0xCCA9: ECDHE-ECDSA ChaCha20-Poly1305 (RFC 8422, 7905).
    auto suite = apps[0].tls->cipher_suite;
    CHECK((suite == 0xC02B || suite == 0xC02C || suite == 0xCCA9));
}

TEST_CASE("tls: mutual TLS: the client certificate, its name, and a client without one refused", "[tls]")
{
    std::vector<seen> apps;
    auto cfg = tls_config();
    cfg.ssl_ca_certs = files().client_ca;
    cfg.ssl_cert_reqs = cserve::cert_reqs::required;
    boost::system::error_code with_cert, without_cert;
    int status = 0;
    bool refused = false;
    auto good = client_context(&files().client);
    auto none = client_context();
    auto r = ct::run_server(recording_app(apps), cfg, [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(good, port, with_cert);
        if (!with_cert)
            status = (co_await get(*s, "/")).result_int();
        // TLS 1.3: the client's handshake may complete before the server has refused it;
        // the refusal then ends the first read.
        auto t = co_await connect_tls(none, port, without_cert);
        if (without_cert) {
            refused = true;
        } else {
            bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/", 11};
            (void)co_await bhttp::async_write(*t, req, ct::use_tuple);
            boost::beast::flat_buffer buf;
            bhttp::response<bhttp::string_body> res;
            auto [rec, rn] = co_await bhttp::async_read(*t, buf, res, ct::use_tuple);
            refused = rec.failed();
        }
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(!with_cert);
    CHECK(status == 200);
    CHECK(refused);
    REQUIRE(apps.size() == 1);
    REQUIRE(apps[0].tls);
    REQUIRE(apps[0].tls->client_cert_chain.size() == 1);
    CHECK(apps[0].tls->client_cert_chain[0] == files().client.cert);
    CHECK(apps[0].tls->client_cert_name == std::optional<std::string>("CN=cserve test client,O=cserve tests"));
    CHECK_FALSE(apps[0].tls->client_cert_error);
    CHECK(r.logged("TLS handshake with 127.0.0.1:"));
}

TEST_CASE("tls: with optional client certificates an unverifiable one is served with its error", "[tls]")
{
    std::vector<seen> apps;
    auto cfg = tls_config();
    cfg.ssl_ca_certs = files().client_ca;
    cfg.ssl_cert_reqs = cserve::cert_reqs::optional;
    boost::system::error_code hs;
    auto other = client_context(&files().stranger);
    auto r = ct::run_server(recording_app(apps), cfg, [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(other, port, hs);
        if (!hs)
            (void)co_await get(*s, "/");
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(!hs);
    REQUIRE(apps.size() == 1);
    REQUIRE(apps[0].tls);
    CHECK(apps[0].tls->client_cert_name == std::optional<std::string>("CN=stranger,O=cserve tests"));
    REQUIRE(apps[0].tls->client_cert_error);
    CHECK(*apps[0].tls->client_cert_error == "self-signed certificate");
}

TEST_CASE("tls: plain HTTP to the TLS port is closed at once and harms no other connection", "[tls]")
{
    std::vector<seen> apps;
    boost::system::error_code plain_ec, hs;
    int status = 0;
    auto ctx = client_context();
    auto r = ct::run_server(recording_app(apps), tls_config(), [&](unsigned short port) -> cserve::task<> {
        auto ex = co_await net::this_coro::executor;
        net::ip::tcp::socket plain(ex);
        co_await plain.async_connect({net::ip::make_address("127.0.0.1"), port}, net::use_awaitable);
        std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        co_await net::async_write(plain, net::buffer(req), net::use_awaitable);
        std::string got;
        auto [ec, n] = co_await net::async_read(plain, net::dynamic_buffer(got), ct::use_tuple);
        plain_ec = ec;
        auto s = co_await connect_tls(ctx, port, hs);
        if (!hs)
            status = (co_await get(*s, "/")).result_int();
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK((plain_ec == net::error::eof || plain_ec == net::error::connection_reset));
    CHECK(!hs);
    CHECK(status == 200);
    CHECK(r.logged("TLS handshake with 127.0.0.1:"));
}

TEST_CASE("tls: a connection the server cannot make (SSL_new fails) is closed and the next one served",
          "[tls]")
{
    std::vector<seen> apps;
    boost::system::error_code first_hs, hs;
    int status = 0;
    auto ctx = client_context();
    client_ctx = ctx.native_handle();
    refused = 0;
    std::uint64_t failed = 0;
    auto r = ct::run_server(recording_app(apps), tls_config(),
                            [&](cserve::server& srv, unsigned short port) -> cserve::task<> {
                                refuse = 1;
                                co_await connect_tls(ctx, port, first_hs);
                                auto s = co_await connect_tls(ctx, port, hs);
                                if (!hs)
                                    status = (co_await get(*s, "/")).result_int();
                                failed = srv.metrics().accept_errors;
                            });
    refuse = 0;
    client_ctx = nullptr;
    CSERVE_REQUIRE_RUN(r);
    INFO(first_hs.message());
    CHECK(refused == 1);
    CHECK(first_hs);
    CHECK(!hs);
    CHECK(status == 200);
    CHECK(apps.size() == 1);
    CHECK(failed == 1);
    CHECK(r.logged("cannot start a connection: std::bad_alloc"));
}

TEST_CASE("tls: a client that connects and never starts the handshake is dropped at the header timeout",
          "[tls]")
{
    std::vector<seen> apps;
    auto cfg = tls_config();
    cfg.timeout_request_header = std::chrono::milliseconds(300);
    boost::system::error_code ec;
    std::chrono::steady_clock::duration waited{};
    auto r = ct::run_server(recording_app(apps), cfg, [&](unsigned short port) -> cserve::task<> {
        auto ex = co_await net::this_coro::executor;
        net::ip::tcp::socket silent(ex);
        co_await silent.async_connect({net::ip::make_address("127.0.0.1"), port}, net::use_awaitable);
        auto start = std::chrono::steady_clock::now();
        char c;
        std::tie(ec, std::ignore) = co_await silent.async_read_some(net::buffer(&c, 1), ct::use_tuple);
        waited = std::chrono::steady_clock::now() - start;
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(ec == net::error::eof);
    CHECK(waited >= std::chrono::milliseconds(250));
    CHECK(waited < std::chrono::milliseconds(3000));
    CHECK(r.logged("timed out"));
}

TEST_CASE("tls: graceful shutdown ends an idle TLS connection with close_notify", "[tls]")
{
    std::vector<seen> apps;
    boost::system::error_code hs, end;
    auto ctx = client_context();
    auto r = ct::run_server(
        recording_app(apps), tls_config(),
        [&](cserve::server& srv, unsigned short port) -> cserve::task<> {
            auto s = co_await connect_tls(ctx, port, hs);
            if (hs)
                co_return;
            (void)co_await get(*s, "/");
            srv.shutdown();
            char c;
            // close_notify reads as the end of the stream; a bare FIN as stream_truncated.
            std::tie(end, std::ignore) = co_await s->async_read_some(net::buffer(&c, 1), ct::use_tuple);
        });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(!hs);
    INFO(end.message());
    CHECK(end == net::error::eof);
}

TEST_CASE("tls: a WebSocket over TLS is a wss scope and echoes", "[tls][websocket]")
{
    std::string scheme;
    bool tls_seen = false;
    std::string echoed;
    auto app = [&](cserve::scope& s, cserve::receive receive, cserve::send send) -> cserve::task<> {
        scheme = s.scheme;
        tls_seen = s.tls() != nullptr && s.has_extension("tls");
        co_await receive(); // connect
        co_await send(cserve::websocket::accept{});
        auto e = co_await receive();
        if (auto* m = std::get_if<cserve::websocket::receive>(&e))
            co_await send(cserve::websocket::send{.bytes = m->bytes, .text = m->text});
        co_await receive(); // disconnect
    };
    std::string const big(300 * 1024, 'x');
    boost::system::error_code hs;
    auto ctx = client_context();
    auto r = ct::run_server(app, tls_config(), [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(ctx, port, hs);
        if (hs)
            co_return;
        boost::beast::websocket::stream<tls_client&> ws(*s);
        co_await ws.async_handshake("localhost", "/ws", net::use_awaitable);
        ws.binary(true);
        co_await ws.async_write(net::buffer(big), net::use_awaitable);
        boost::beast::flat_buffer buf;
        co_await ws.async_read(buf, net::use_awaitable);
        echoed = boost::beast::buffers_to_string(buf.data());
        co_await ws.async_close(boost::beast::websocket::close_code::normal, net::use_awaitable);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(!hs);
    CHECK(scheme == "wss");
    CHECK(tls_seen);
    CHECK(echoed == big);
}

TEST_CASE("tls: a context from ssl_context_factory serves, with ALPN added", "[tls]")
{
    std::vector<seen> apps;
    auto cfg = ct::test_config();
    cfg.http2 = false; // ALPN then chooses http/1.1 from the client's h2, http/1.1
    int made = 0;
    cfg.ssl_context_factory = [&] {
        ++made;
        auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
        ctx->use_certificate_chain(net::buffer(files().server.cert));
        ctx->use_private_key(net::buffer(files().server.key), ssl::context::pem);
        return ctx;
    };
    boost::system::error_code hs;
    std::string alpn;
    auto ctx = client_context();
    static constexpr unsigned char offer[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx.native_handle(), offer, sizeof offer);
    auto r = ct::run_server(recording_app(apps), cfg, [&](unsigned short port) -> cserve::task<> {
        auto s = co_await connect_tls(ctx, port, hs);
        if (hs)
            co_return;
        (void)co_await get(*s, "/");
        alpn = cserve::detail::alpn_protocol(s->native_handle());
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(made == 1);
    REQUIRE(!hs);
    CHECK(alpn == "http/1.1");
    REQUIRE(apps.size() == 1);
    CHECK(apps[0].scheme == "https");
}

TEST_CASE("tls: bad certificate, key and password settings fail with one line naming the file", "[tls]")
{
    auto& f = files();
    auto message = [](cserve::config cfg) -> std::string {
        net::io_context ioc(1);
        try {
            cserve::server srv(ioc, [](cserve::scope&, cserve::receive, cserve::send) -> cserve::task<> { co_return; },
                               cfg);
        } catch (cserve::detail::tls_config_error const& e) {
            return e.what();
        }
        return "no error";
    };
    auto cfg = tls_config();
    cfg.ssl_certfile = (f.dir / "missing.pem").string();
    CHECK(message(cfg) == "cannot read certificate file '" + cfg.ssl_certfile + "': No such file or directory");

    cfg = tls_config();
    cfg.ssl_keyfile = f.other_key;
    auto m = message(cfg);
    INFO(m);
    CHECK(m.starts_with("key file '" + f.other_key + "' does not match certificate file '" + f.server_cert + "'"));

    // An encrypted key: no password, a wrong one, the right one.
    std::string encrypted;
    {
        BIO* in = BIO_new_mem_buf(f.server.key.data(), static_cast<int>(f.server.key.size()));
        EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
        BIO_free(in);
        BIO* out = BIO_new(BIO_s_mem());
        char pass[] = "sesame";
        PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_256_cbc(), pass, 6, nullptr, nullptr);
        encrypted = bio_text(out);
        BIO_free(out);
        EVP_PKEY_free(key);
    }
    cfg = tls_config();
    cfg.ssl_keyfile = f.write("encrypted.key", encrypted);
    m = message(cfg);
    INFO(m);
    CHECK(m.starts_with("cannot load key file '" + cfg.ssl_keyfile + "': "));
    CHECK(m.find("give --ssl-keyfile-password") != std::string::npos);
    cfg.ssl_keyfile_password = "wrong";
    m = message(cfg);
    INFO(m);
    CHECK(m.find("wrong --ssl-keyfile-password") != std::string::npos);
    cfg.ssl_keyfile_password = "sesame";
    CHECK(message(cfg) == "no error");

    cfg = tls_config();
    cfg.ssl_ciphers = "NOT-A-CIPHER";
    CHECK(message(cfg).starts_with("invalid --ssl-ciphers 'NOT-A-CIPHER'"));

    cfg = tls_config();
    cfg.ssl_cert_reqs = cserve::cert_reqs::required;
    CHECK(message(cfg).starts_with("--ssl-cert-reqs 2 needs --ssl-ca-certs"));
    for (auto const& line : {message(cfg)})
        CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("tls: an idle keep-alive TLS connection holds no request state and waits in its op_slot",
          "[tls][idle][memory]")
{
    // Driven by hand over a socket pair, as server_impl starts a connection, so that the
    // connection object itself can be looked at between requests.
    net::io_context ioc{1};
    auto hello = [](cserve::scope&, cserve::receive, cserve::send send) -> cserve::task<> {
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "13"}}});
        co_await send(http::response_body{.body = "Hello, world!"});
    };
    cserve::detail::server_impl srv(ioc, hello, tls_config());
    REQUIRE(srv.tls_);
    net::local::stream_protocol::socket server_end(ioc);
    auto client_ctx = client_context();
    ssl::stream<net::local::stream_protocol::socket> client(ioc, client_ctx);
    net::local::connect_pair(client.next_layer(), server_end);
    using connection = cserve::detail::http1_connection<cserve::detail::tls_stream>;
    auto c = std::make_shared<connection>(srv, cserve::detail::socket_type(std::move(server_end)), *srv.tls_);
    std::weak_ptr<connection> weak = c;
    connection::start(std::move(c));

    auto run_until = [&](bool const& done) {
        while (!done && ioc.run_one() > 0) {
        }
        ioc.poll();
    };
    bool shaken = false;
    boost::system::error_code hs;
    client.async_handshake(ssl::stream_base::client, [&](boost::system::error_code ec) {
        hs = ec;
        shaken = true;
    });
    run_until(shaken);
    REQUIRE_FALSE(hs);
    bool const after_handshake = weak.lock()->holds_request_state();

    std::vector<bool> answered, idle_state, inline_wait;
    std::string in;
    for (int i = 0; i < 2; ++i) {
        net::write(client, net::buffer(std::string_view("GET / HTTP/1.1\r\nHost: t\r\n\r\n")));
        bool done = false;
        boost::system::error_code ec;
        net::async_read_until(client, net::dynamic_buffer(in), "Hello, world!",
                              [&](boost::system::error_code rec, std::size_t) {
                                  ec = rec;
                                  done = true;
                              });
        run_until(done);
        in.clear();
        answered.push_back(done && !ec);
        auto p = weak.lock();
        idle_state.push_back(p && p->holds_request_state());
        inline_wait.push_back(p && p->idle_read_inline());
    }
    bool const alive = !weak.expired();
    boost::system::error_code ignored;
    client.next_layer().close(ignored);
    ioc.run(); // the end of the stream ends the connection

    CHECK_FALSE(after_handshake);
    CHECK(answered == std::vector<bool>{true, true});
    CHECK(alive);
    CHECK(idle_state == std::vector<bool>{false, false});
    // The idle wait's operation fits the room the connection keeps for it: no allocation.
    CHECK(inline_wait == std::vector<bool>{true, true});
    CHECK(weak.expired());
}
