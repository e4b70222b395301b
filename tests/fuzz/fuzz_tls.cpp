// tests/fuzz/fuzz_tls.cpp -- libFuzzer harness: bytes into a real TLS connection
// SPDX-License-Identifier: BSL-1.0
//
// The connection is the server's own over TLS (http1_connection<tls_stream>: cserve's TLS
// glue over OpenSSL, detail/tls.hpp), with the certificate and key loaded as --ssl-certfile
// and --ssl-keyfile load them, on one end of a socket pair. Byte 0 says how the bytes arrive
// (0: one write, N: writes of N bytes with turns of the event loop between, as fuzz_http1);
// byte 1 chooses what the rest is:
//   bit 0 clear: the raw bytes a client sends, handshake and all: the handshake's input side
//     (TLS records that are garbage, cut short, or a ClientHello and then nonsense);
//   bit 0 set: a real client (Asio's ssl::stream) completes the handshake first, offering
//     ALPN "h2" (bit 1, in a build with HTTP/2) or "http/1.1", then sends the rest as
//     application data, in records of the chosen size: HTTP/1.1 requests, or HTTP/2 frames
//     after the connection preface, read through the TLS stream.
// The client then ends its side (a TCP half-close, no close_notify) and reads to the end.
// The application is fuzz_http1's.
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/tls.hpp>
#include <cserve/server.hpp>
#if defined(CSERVE_HEADER_ONLY)
#include <cserve/impl/http1/connection.ipp>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <unistd.h>

#include "fuzz_app.hpp"
#include "fuzz_client.hpp"

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using local_socket = net::local::stream_protocol::socket;

namespace {

// A self-signed P-256 certificate and its key, written once to files of the harness's own.
struct credentials {
    std::string cert;
    std::string key;
};

credentials const&
make_credentials()
{
    static credentials const made = [] {
        char dir[] = "/tmp/cserve-fuzz-tls-XXXXXX";
        if (!::mkdtemp(dir))
            std::abort();
        credentials c{std::string(dir) + "/cert.pem", std::string(dir) + "/key.pem"};
        EVP_PKEY* key = EVP_EC_gen("P-256");
        X509* x = X509_new();
        if (!key || !x)
            std::abort();
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 365);
        X509_set_pubkey(x, key);
        X509_NAME* name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<unsigned char const*>("localhost"), -1, -1, 0);
        X509_set_issuer_name(x, name);
        if (X509_sign(x, key, EVP_sha256()) == 0)
            std::abort();
        FILE* f = std::fopen(c.cert.c_str(), "w");
        FILE* k = std::fopen(c.key.c_str(), "w");
        if (!f || !k || !PEM_write_X509(f, x) || !PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr))
            std::abort();
        std::fclose(f);
        std::fclose(k);
        X509_free(x);
        EVP_PKEY_free(key);
        return c;
    }();
    return made;
}

cserve::config
tls_config()
{
    auto cfg = cserve_fuzz::config();
    cfg.ssl_certfile = make_credentials().cert;
    cfg.ssl_keyfile = make_credentials().key;
    cfg.timeout_request_header = std::chrono::seconds(5);
    return cfg;
}

// The real client: handshake, then the bytes as application data, then a half-close.
cserve::task<>
tls_client(local_socket& s, std::string_view input, std::size_t piece, bool h2)
{
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_verify_mode(ssl::verify_none);
    ssl::stream<local_socket&> tls(s, ctx);
    static constexpr unsigned char alpn_h2[] = {2, 'h', '2'};
    static constexpr unsigned char alpn_h1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    if (h2)
        SSL_set_alpn_protos(tls.native_handle(), alpn_h2, sizeof alpn_h2);
    else
        SSL_set_alpn_protos(tls.native_handle(), alpn_h1, sizeof alpn_h1);
    auto [hec] = co_await tls.async_handshake(ssl::stream_base::client, net::as_tuple(net::use_awaitable));
    if (!hec) {
        std::string framed;
        if (h2) {
            framed.assign("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 33);
            framed.append(input);
            input = framed;
        }
        co_await cserve_fuzz::write_in_pieces(tls, input, piece);
    }
    co_await cserve_fuzz::end_and_drain(s);
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    if (size < 2)
        return 0;
    std::size_t const piece = data[0];
    bool const handshake = (data[1] & 1) != 0;
    bool const h2 = CSERVE_HTTP2 && (data[1] & 2) != 0;
    std::string_view input(reinterpret_cast<char const*>(data) + 2, size - 2);

    net::io_context ioc{1};
    cserve::detail::server_impl srv(ioc, cserve_fuzz::app, tls_config());
    local_socket client_end(ioc);
    local_socket server_end(ioc);
    net::local::connect_pair(client_end, server_end);
    using connection = cserve::detail::http1_connection<cserve::detail::tls_stream>;
    connection::start(std::make_shared<connection>(srv, cserve::detail::socket_type(std::move(server_end)), *srv.tls_));
    if (handshake)
        net::co_spawn(ioc, tls_client(client_end, input, piece, h2), net::detached);
    else
        net::co_spawn(ioc, cserve_fuzz::client(client_end, input, piece), net::detached);
    ioc.run();
    return 0;
}
