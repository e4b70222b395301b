// tests/unit/http2_test.cpp -- HTTP/2 streams as exchanges, with nghttp2's client as the peer
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#if CSERVE_HTTP2

#include <cserve/detail/http2/session.hpp>

#include <nghttp2/nghttp2.h>

#include <map>
#include <string>
#include <vector>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
namespace net = boost::asio;
using cserve::task;

// One response as the client saw it.
struct h2_response {
    std::map<std::string, std::string> headers;
    std::vector<std::string> statuses; // every :status, interim ones first
    bool trailer_block = false;        // the header block being received is the trailers
    std::string body;
    std::map<std::string, std::string> trailers;
    bool closed = false;
    std::uint32_t error = 0; // the RST_STREAM code, 0 when it ended cleanly
};

// An HTTP/2 client over a loopback socket: nghttp2's client session, pumped by hand.
class h2_client {
public:
    explicit h2_client(std::uint32_t window = 65535)
    {
        nghttp2_session_callbacks* cb = nullptr;
        nghttp2_session_callbacks_new(&cb);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
        nghttp2_session_client_new(&session_, cb, this);
        nghttp2_session_callbacks_del(cb);
        nghttp2_settings_entry iv{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window};
        nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, &iv, 1);
    }
    ~h2_client() { nghttp2_session_del(session_); }

    // Submits a request; `body` (if any) is sent as DATA.
    std::int32_t
    request(std::string method, std::string path, std::string body = {}, bool with_body = false,
            std::string extra_value = {})
    {
        auto id_slot = bodies_.size();
        bodies_.push_back({std::move(body), 0});
        std::vector<std::pair<std::string, std::string>> h = {
            {":method", std::move(method)}, {":path", std::move(path)}, {":scheme", "http"}, {":authority", "example.test"},
            {"x-test", "yes"}};
        if (!extra_value.empty())
            h.emplace_back("x-extra", std::move(extra_value));
        std::vector<nghttp2_nv> nv;
        for (auto& [n, v] : h)
            nv.push_back({reinterpret_cast<std::uint8_t*>(n.data()), reinterpret_cast<std::uint8_t*>(v.data()), n.size(),
                          v.size(), NGHTTP2_NV_FLAG_NONE});
        nghttp2_data_provider p{};
        p.source.ptr = reinterpret_cast<void*>(id_slot);
        p.read_callback = read_body;
        return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), with_body ? &p : nullptr, nullptr);
    }

    void reset(std::int32_t id) { nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL); }

    // Exchanges frames until `done()` holds (or the server closes).
    template <class Done>
    task<>
    pump(net::ip::tcp::socket& s, Done done)
    {
        char buf[16384];
        for (;;) {
            std::uint8_t const* data = nullptr;
            while (auto n = nghttp2_session_mem_send(session_, &data)) {
                REQUIRE(n > 0);
                co_await net::async_write(s, net::buffer(data, static_cast<std::size_t>(n)), net::use_awaitable);
            }
            if (done())
                co_return;
            auto [ec, n] = co_await s.async_read_some(net::buffer(buf), ct::use_tuple);
            if (ec) {
                eof = true;
                co_return;
            }
            REQUIRE(nghttp2_session_mem_recv(session_, reinterpret_cast<std::uint8_t*>(buf), n) == static_cast<ssize_t>(n));
        }
    }

    std::map<std::int32_t, h2_response> responses;
    std::optional<std::uint32_t> goaway;
    std::int32_t goaway_last = -1;
    bool eof = false;

private:
    static h2_client& self(void* p) { return *static_cast<h2_client*>(p); }

    static int
    on_header(nghttp2_session*, nghttp2_frame const* f, std::uint8_t const* name, std::size_t namelen,
              std::uint8_t const* value, std::size_t valuelen, std::uint8_t, void* user)
    {
        auto& r = self(user).responses[f->hd.stream_id];
        std::string n(reinterpret_cast<char const*>(name), namelen), v(reinterpret_cast<char const*>(value), valuelen);
        if (r.trailer_block)
            r.trailers[n] = v;
        else
            r.headers[n] = v;
        if (n == ":status")
            r.statuses.push_back(v);
        return 0;
    }

    static int
    on_begin_headers(nghttp2_session*, nghttp2_frame const* f, void* user)
    {
        // A header block after a final status is the trailers.
        auto& r = self(user).responses[f->hd.stream_id];
        r.trailer_block = !r.statuses.empty() && r.statuses.back()[0] != '1';
        return 0;
    }

    static int
    on_data(nghttp2_session*, std::uint8_t, std::int32_t id, std::uint8_t const* data, std::size_t len, void* user)
    {
        self(user).responses[id].body.append(reinterpret_cast<char const*>(data), len);
        return 0;
    }

    static int
    on_close(nghttp2_session*, std::int32_t id, std::uint32_t error, void* user)
    {
        auto& r = self(user).responses[id];
        r.closed = true;
        r.error = error;
        return 0;
    }

    static int
    on_frame(nghttp2_session*, nghttp2_frame const* f, void* user)
    {
        if (f->hd.type == NGHTTP2_GOAWAY) {
            self(user).goaway = f->goaway.error_code;
            self(user).goaway_last = f->goaway.last_stream_id;
        }
        return 0;
    }

    static ssize_t
    read_body(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length, std::uint32_t* flags,
              nghttp2_data_source* source, void* user)
    {
        auto& c = self(user);
        auto& [body, pos] = c.bodies_[reinterpret_cast<std::size_t>(source->ptr)];
        auto n = std::min(length, body.size() - pos);
        std::memcpy(buf, body.data() + pos, n);
        pos += n;
        if (pos == body.size())
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(n);
    }

    nghttp2_session* session_ = nullptr;
    std::vector<std::pair<std::string, std::size_t>> bodies_;
};

// The application of these tests: by path.
cserve::app_function
h2_app()
{
    return [](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type != cserve::scope_type::http)
            co_return;
        if (scope.path == "/echo") {
            std::string body;
            for (;;) {
                auto e = co_await receive();
                auto* r = std::get_if<http::request>(&e);
                REQUIRE(r);
                body += r->body;
                if (!r->more_body)
                    break;
            }
            co_await send(http::response_start{.status = 200, .headers = {{"Content-Length", std::to_string(body.size())}}});
            // In pieces: each send() of a body that is not the last waits for the client's window.
            for (std::size_t i = 0; i < body.size(); i += 50000)
                co_await send(http::response_body{.body = body.substr(i, 50000), .more_body = i + 50000 < body.size()});
            if (body.empty())
                co_await send(http::response_body{});
        } else if (scope.path == "/scope") {
            std::string host;
            for (auto const& [n, v] : scope.headers)
                if (n == "host")
                    host = v;
            co_await send(http::response_start{.status = 200});
            co_await send(http::response_body{.body = std::string(scope.http_version) + " " + std::string(scope.method) + " " +
                                                      host + " " + std::string(scope.query_string)});
        } else if (scope.path == "/trailers") {
            co_await send(http::response_start{.status = 200, .trailers = true});
            co_await send(http::response_body{.body = "body"});
            co_await send(http::response_trailers{.headers = {{"X-Checksum", "abc"}}});
        } else if (scope.path == "/hints") {
            co_await send(http::response_early_hint{.links = {"</a.css>; rel=preload; as=style"}});
            co_await send(http::response_start{.status = 200});
            co_await send(http::response_body{.body = "hinted"});
        } else if (scope.path == "/throw-before") {
            throw std::runtime_error("before");
        } else if (scope.path == "/throw-after") {
            co_await send(http::response_start{.status = 200});
            co_await send(http::response_body{.body = "part", .more_body = true});
            throw std::runtime_error("after");
        } else {
            co_await send(http::response_start{.status = 404});
            co_await send(http::response_body{.body = "no"});
        }
    };
}

} // namespace

TEST_CASE("http2: the preface and base64url helpers")
{
    using cserve::detail::http2::match_preface;
    using cserve::detail::http2::preface_match;
    CHECK(match_preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nxyz") == preface_match::yes);
    CHECK(match_preface("PRI * HTTP/2") == preface_match::maybe);
    CHECK(match_preface("") == preface_match::maybe);
    CHECK(match_preface("PRI * HTTP/1.1\r\n") == preface_match::no);
    CHECK(match_preface("GET / HTTP/1.1\r\n\r\n") == preface_match::no);

    std::string out;
    REQUIRE(cserve::detail::http2::decode_base64url("AAMAAABkAAQAAP__", out));
    CHECK(out == std::string("\x00\x03\x00\x00\x00\x64\x00\x04\x00\x00\xff\xff", 12));
    CHECK(cserve::detail::http2::decode_base64url("", out));
    CHECK(out.empty());
    CHECK_FALSE(cserve::detail::http2::decode_base64url("AA+A", out)); // '+' is base64, not base64url
    CHECK_FALSE(cserve::detail::http2::decode_base64url("A", out));
}

TEST_CASE("http2: concurrent streams on one connection, each an exchange")
{
    h2_client c;
    std::string big(300000, '\0');
    for (std::size_t i = 0; i < big.size(); ++i)
        big[i] = static_cast<char>('a' + i % 26);
    std::int32_t scope_id = 0, echo_id = 0, head_id = 0, trailer_id = 0, missing_id = 0, hints_id = 0;
    auto r = ct::run_server(h2_app(), ct::test_config(), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        scope_id = c.request("GET", "/scope?x=1");
        echo_id = c.request("POST", "/echo", big, true);
        head_id = c.request("HEAD", "/scope");
        trailer_id = c.request("GET", "/trailers");
        missing_id = c.request("GET", "/missing");
        hints_id = c.request("GET", "/hints");
        co_await c.pump(s, [&] {
            for (auto id : {scope_id, echo_id, head_id, trailer_id, missing_id, hints_id})
                if (!c.responses[id].closed)
                    return false;
            return true;
        });
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(c.responses[scope_id].headers[":status"] == "200");
    CHECK(c.responses[scope_id].headers["server"] == "cserve");
    CHECK(c.responses[scope_id].body == "2 GET example.test x=1");
    CHECK(c.responses[echo_id].error == 0);
    CHECK(c.responses[echo_id].headers["content-length"] == std::to_string(big.size()));
    CHECK(c.responses[echo_id].body == big); // 300 KB both ways: past every initial window
    CHECK(c.responses[head_id].headers[":status"] == "200");
    CHECK(c.responses[head_id].body.empty());
    CHECK(c.responses[trailer_id].body == "body");
    CHECK(c.responses[trailer_id].trailers["x-checksum"] == "abc"); // lower-cased for HTTP/2
    CHECK(c.responses[missing_id].headers[":status"] == "404");
    CHECK(c.responses[hints_id].statuses == std::vector<std::string>{"103", "200"}); // a non-final HEADERS first
    CHECK(c.responses[hints_id].headers["link"] == "</a.css>; rel=preload; as=style");
    CHECK(c.responses[hints_id].body == "hinted");
}

TEST_CASE("http2: a failing application costs its own stream only")
{
    h2_client c;
    std::int32_t before = 0, after = 0, fine = 0;
    auto r = ct::run_server(h2_app(), ct::test_config(), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        before = c.request("GET", "/throw-before");
        after = c.request("GET", "/throw-after");
        co_await c.pump(s, [&] { return c.responses[before].closed && c.responses[after].closed; });
        fine = c.request("GET", "/scope");
        co_await c.pump(s, [&] { return c.responses[fine].closed; });
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(c.responses[before].headers[":status"] == "500");
    CHECK(c.responses[before].body == "Internal Server Error");
    CHECK(c.responses[after].headers[":status"] == "200");
    CHECK(c.responses[after].error == NGHTTP2_INTERNAL_ERROR); // started: the stream is reset
    CHECK(c.responses[fine].headers[":status"] == "200");      // and the connection goes on
    CHECK(r.logged("Exception in ASGI application"));
}

TEST_CASE("http2: a graceful shutdown sends GOAWAY and lets the open stream finish")
{
    h2_client c;
    std::int32_t slow = 0;
    auto app = [](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.type != cserve::scope_type::http)
            co_return;
        net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(300));
        co_await t.async_wait(net::use_awaitable);
        co_await send(http::response_start{.status = 200});
        co_await send(http::response_body{.body = "late"});
    };
    auto r = ct::run_server(app, ct::test_config(), [&](cserve::server& srv, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        slow = c.request("GET", "/");
        co_await c.pump(s, [] { return true; }); // sends the request, reads nothing
        // The request is out; now the server shuts down while the stream is open.
        net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(50));
        co_await t.async_wait(net::use_awaitable);
        srv.shutdown();
        co_await c.pump(s, [&] { return false; }); // until the server closes
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(c.goaway);
    CHECK(*c.goaway == NGHTTP2_NO_ERROR);
    CHECK(c.goaway_last == slow);
    CHECK(c.responses[slow].body == "late");
    CHECK(c.responses[slow].error == 0);
    CHECK(c.eof);
}

TEST_CASE("http2: a header list past max_header_bytes is answered 431 on its stream")
{
    h2_client c;
    std::int32_t big = 0, fine = 0;
    auto cfg = ct::test_config();
    cfg.max_header_bytes = 4096;
    auto r = ct::run_server(h2_app(), cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        big = c.request("GET", "/scope", {}, false, std::string(8000, 'h'));
        fine = c.request("GET", "/scope");
        co_await c.pump(s, [&] { return c.responses[big].closed && c.responses[fine].closed; });
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(c.responses[big].headers[":status"] == "431");
    CHECK(c.responses[big].body == "Request Header Fields Too Large");
    CHECK(c.responses[fine].headers[":status"] == "200"); // the connection goes on
    CHECK(c.responses[fine].body == "2 GET example.test ");
}

TEST_CASE("http2: a peer that keeps its window shut is dropped after timeout_write")
{
    h2_client c(0); // no stream may be sent a byte of DATA
    std::int32_t id = 0;
    auto cfg = ct::test_config();
    cfg.timeout_write = std::chrono::milliseconds(300);
    std::chrono::steady_clock::duration waited{};
    auto r = ct::run_server(h2_app(), cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        id = c.request("POST", "/echo", std::string(200000, 'x'), true);
        auto const start = std::chrono::steady_clock::now();
        co_await c.pump(s, [] { return false; }); // until the server closes
        waited = std::chrono::steady_clock::now() - start;
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(c.eof);
    CHECK(c.responses[id].body.empty());
    CHECK(waited >= std::chrono::milliseconds(250));
    CHECK(waited < std::chrono::seconds(5));
    CHECK(r.logged("read nothing of its responses for --timeout-write"));
}

#endif // CSERVE_HTTP2
