// tests/unit/write_timeout_test.cpp -- --timeout-write: a client that reads nothing is dropped
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <chrono>
#include <string>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
namespace net = boost::asio;
using cserve::task;

struct stream_record {
    std::size_t sent = 0;      // body bytes send() took
    bool disconnected = false; // send() threw client_disconnected
    std::chrono::steady_clock::time_point last_send;
};

// Streams up to 256 MiB in 64 KiB pieces.
cserve::app_function
streamer(stream_record& rec)
{
    return [&rec](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        co_await send(http::response_start{.status = 200});
        std::string piece(64 * 1024, 'x');
        try {
            for (int i = 0; i < 4096; ++i) {
                co_await send(http::response_body{.body = piece, .more_body = true});
                rec.sent += piece.size();
                rec.last_send = std::chrono::steady_clock::now();
            }
            co_await send(http::response_body{});
        } catch (cserve::client_disconnected const&) {
            rec.disconnected = true;
        }
    };
}

} // namespace

TEST_CASE("timeout_write: a client that stops reading is dropped once a write has waited that long")
{
    stream_record rec;
    auto cfg = ct::test_config();
    cfg.timeout_write = std::chrono::milliseconds(300);
    std::chrono::steady_clock::time_point closed_at;
    auto r = ct::run_server(streamer(rec), cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // Read nothing until the server gives up; then the socket reads to its end.
        net::steady_timer t(co_await net::this_coro::executor);
        for (int i = 0; i < 100 && !rec.disconnected; ++i) {
            t.expires_after(std::chrono::milliseconds(50));
            co_await t.async_wait(net::use_awaitable);
        }
        closed_at = std::chrono::steady_clock::now();
        auto rest = co_await ct::read_to_eof(s, std::chrono::milliseconds(5000));
        CHECK(rest.data.size() < rec.sent + 65 * 1024); // what was sent, the piece in flight at most
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(rec.disconnected);
    CHECK(rec.sent < 64u * 1024 * 1024); // memory stayed bounded: the app was held back
    CHECK(closed_at - rec.last_send >= std::chrono::milliseconds(250));
    CHECK(r.logged("read nothing of its response for --timeout-write"));
}

TEST_CASE("timeout_write: a slow reader that keeps reading is not dropped")
{
    stream_record rec;
    auto cfg = ct::test_config();
    cfg.timeout_write = std::chrono::milliseconds(300);
    std::size_t got = 0;
    auto app = [&rec](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", std::to_string(4 << 20)}}});
        co_await send(http::response_body{.body = std::string(4 << 20, 'y')}); // one event, written over a second
        rec.sent = 4 << 20;
    };
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        net::steady_timer t(co_await net::this_coro::executor);
        char buf[256 * 1024];
        auto const start = std::chrono::steady_clock::now();
        for (;;) {
            // Up to 5 MiB a second, in steps well inside the timeout: never 300 ms without progress.
            t.expires_after(std::chrono::milliseconds(50));
            co_await t.async_wait(net::use_awaitable);
            auto [ec, n] = co_await s.async_read_some(net::buffer(buf), ct::use_tuple);
            if (ec)
                break;
            got += n;
            if (std::chrono::steady_clock::now() - start > std::chrono::seconds(20))
                break;
        }
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(rec.sent == (4u << 20));
    CHECK(got > (4u << 20)); // the head and every byte of the body
    CHECK_FALSE(r.logged("--timeout-write"));
}

namespace {

struct body_record {
    std::string body;
    bool disconnect = false; // receive() gave http.disconnect
};

// Reads the request body to its end (or a disconnect), then answers with its size.
cserve::app_function
body_reader(body_record& rec)
{
    return [&rec](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        for (;;) {
            auto e = co_await receive();
            if (auto* r = std::get_if<http::request>(&e)) {
                rec.body += r->body;
                if (!r->more_body)
                    break;
                continue;
            }
            rec.disconnect = true;
            co_return;
        }
        auto text = std::to_string(rec.body.size());
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", std::to_string(text.size())}}});
        co_await send(http::response_body{.body = text});
    };
}

} // namespace

TEST_CASE("timeout_write: a request body that stops arriving ends in http.disconnect")
{
    body_record rec;
    auto cfg = ct::test_config();
    cfg.timeout_write = std::chrono::milliseconds(300);
    auto r = ct::run_server(body_reader(rec), cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
        // Nothing more: the server gives up on the body, and closes.
        auto rest = co_await ct::read_to_eof(s, std::chrono::milliseconds(3000));
        CHECK_FALSE(rest.timed_out); // closed by the server
        CHECK(rest.data.empty());    // no response: the application saw the client go
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(rec.disconnect);
    CHECK(rec.body == "0123456789");
    CHECK(r.logged("sent nothing of its request body for --timeout-write"));
}

TEST_CASE("timeout_write: a request body that trickles in is read to its end")
{
    body_record rec;
    auto cfg = ct::test_config();
    cfg.timeout_write = std::chrono::milliseconds(300);
    auto r = ct::run_server(body_reader(rec), cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
        // A byte every 100 ms: 1.2 s in all, four times the timeout, never 300 ms without one.
        net::steady_timer t(co_await net::this_coro::executor);
        for (char c : std::string("trickled in!")) {
            t.expires_after(std::chrono::milliseconds(100));
            co_await t.async_wait(net::use_awaitable);
            co_await ct::write(s, std::string(1, c));
        }
        auto rest = co_await ct::read_to_eof(s, std::chrono::milliseconds(3000));
        CHECK(rest.data.find("\r\n\r\n12") != std::string::npos);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK_FALSE(rec.disconnect);
    CHECK(rec.body == "trickled in!");
    CHECK_FALSE(r.logged("--timeout-write"));
}
