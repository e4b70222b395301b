// tests/unit/metrics_test.cpp -- server::metrics(): what is counted, and its Prometheus text
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>
#include <cserve/detail/exchange.hpp>
#include <cserve/detail/metrics.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <stdexcept>
#include <string>
#include <thread>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
using cserve::task;
using sm = cserve::server_metrics;

std::size_t
method(std::string_view m)
{
    return sm::method_index(m);
}

// Answers by path: /throw fails, /slow waits for the client to go, anything else reads the
// body and answers 200 with "abc".
cserve::app_function
counted_app()
{
    return [](cserve::scope& s, cserve::receive receive, cserve::send send) -> task<> {
        if (s.type != cserve::scope_type::http)
            co_return;
        if (s.path == "/throw")
            throw std::runtime_error("boom");
        for (;;) {
            auto e = co_await receive();
            auto* r = std::get_if<http::request>(&e);
            if (!r || !r->more_body)
                break;
        }
        if (s.path == "/missing") {
            co_await send(http::response_start{.status = 404, .headers = {{"content-length", "0"}}});
            co_await send(http::response_body{});
            co_return;
        }
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "3"}}});
        co_await send(http::response_body{.body = "abc"});
    };
}

} // namespace

TEST_CASE("metrics: requests counted by method and status class, with bytes, durations and connections")
{
    sm during{};
    sm after{};
    ct::read_result raw;
    auto r = ct::run_server(counted_app(), ct::test_config(), [&](cserve::server& srv, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                              "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                              "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                              "BREW / HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /throw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw = co_await ct::read_to_eof(s);
        during = srv.metrics();
        auto s2 = co_await ct::connect(port); // a second connection, closed at once
        s2.close();
        co_await ct::wait_for(ct::ms(50));
        after = srv.metrics();
    });
    CSERVE_REQUIRE_RUN(r);
    INFO(raw.data);
    CHECK(during.requests[method("GET")][2] == 1);
    CHECK(during.requests[method("POST")][2] == 1);
    CHECK(during.requests[method("HEAD")][2] == 1);
    CHECK(during.requests[method("_OTHER")][2] == 1); // BREW: not a label of its own
    CHECK(during.requests[method("GET")][4] == 1);    // 404
    CHECK(during.requests[method("GET")][5] == 1);    // the application threw: 500
    CHECK(during.request_count() == 6);
    CHECK(during.request_body_bytes == 5);
    // GET, POST, BREW (HEAD sends none), and the 500's "Internal Server Error".
    CHECK(during.response_body_bytes == 3 * 3 + 21);
    CHECK(during.active_requests == 0);
    std::uint64_t in_buckets = 0;
    for (auto n : during.duration_buckets)
        in_buckets += n;
    CHECK(in_buckets == 6);
    CHECK(during.duration_nanoseconds > 0);
    CHECK(during.connections == 1);
    CHECK(after.connections == 2);
    CHECK(after.active_connections == 0);
    CHECK(after.websocket_connections == 0);
}

TEST_CASE("metrics: requests refused before the application (400, 431) are counted, with the method of their "
          "request line, or as _OTHER without one")
{
    sm after{};
    std::string first, second, third;
    auto cfg = ct::test_config();
    cfg.max_header_bytes = 1024;
    auto r = ct::run_server(counted_app(), cfg, [&](cserve::server& srv, unsigned short port) -> task<> {
        auto a = co_await ct::connect(port); // a good request, then a line that is none
        co_await ct::write(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1 trailing\r\n\r\n");
        first = (co_await ct::read_to_eof(a)).data;
        auto b = co_await ct::connect(port); // a head without Host: its method is known
        co_await ct::write(b, "GET / HTTP/1.1\r\n\r\n");
        second = (co_await ct::read_to_eof(b)).data;
        auto c = co_await ct::connect(port); // a head past max_header_bytes, after its request line
        co_await ct::write(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'b') + "\r\n\r\n");
        third = (co_await ct::read_to_eof(c)).data;
        after = srv.metrics();
    });
    CSERVE_REQUIRE_RUN(r);
    INFO(first << "\n--\n" << second << "\n--\n" << third);
    REQUIRE(first.find("HTTP/1.1 400 ") != std::string::npos);
    REQUIRE(second.rfind("HTTP/1.1 400 ", 0) == 0);
    REQUIRE(third.rfind("HTTP/1.1 431 ", 0) == 0);
    CHECK(after.requests[method("GET")][2] == 1);
    CHECK(after.requests[method("GET")][4] == 2);    // no Host; the 431
    CHECK(after.requests[method("_OTHER")][4] == 1); // the bad line (not counted as the GET before it)
    CHECK(after.request_count() == 4);
    using cserve::detail::error_text;
    CHECK(after.response_body_bytes == 3 + 2 * error_text(400).size() + error_text(431).size());
    std::uint64_t in_buckets = 0;
    for (auto n : after.duration_buckets)
        in_buckets += n;
    CHECK(in_buckets == 4);
    CHECK(after.active_requests == 0);
}

TEST_CASE("metrics: a request in progress is active, and one the client abandons has status \"none\"")
{
    sm while_waiting{};
    sm after{};
    auto app = [](cserve::scope& s, cserve::receive receive, cserve::send) -> task<> {
        if (s.type != cserve::scope_type::http)
            co_return;
        for (;;) { // until the client leaves
            auto e = co_await receive();
            if (std::holds_alternative<http::disconnect>(e))
                co_return;
        }
    };
    auto r = ct::run_server(app, ct::test_config(), [&](cserve::server& srv, unsigned short port) -> task<> {
        {
            auto s = co_await ct::connect(port);
            co_await ct::write(s, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
            co_await ct::wait_for(ct::ms(100));
            while_waiting = srv.metrics();
        }
        co_await ct::wait_for(ct::ms(100));
        after = srv.metrics();
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(while_waiting.active_requests == 1);
    CHECK(while_waiting.active_connections == 1);
    CHECK(while_waiting.request_count() == 0);
    CHECK(after.active_requests == 0);
    CHECK(after.active_connections == 0);
    CHECK(after.requests[method("GET")][0] == 1); // "none"
}

TEST_CASE("metrics: each thread counts in a shard of its own and the snapshot adds them up")
{
    cserve::detail::metrics_registry reg;
    using reg_t = cserve::detail::metrics_registry;
    auto work = [&reg](int sign) {
        for (int i = 0; i < 100000; ++i) {
            auto& m = reg.local();
            reg_t::add<std::uint64_t>(m.connections, 1);
            reg_t::add<std::int64_t>(m.active_connections, sign);
        }
    };
    std::thread a(work, 1);
    std::thread b(work, -1); // a gauge lowered on another thread than the one that raised it
    a.join();
    b.join();
    work(1);
    auto m = reg.snapshot();
    CHECK(m.connections == 300000);
    CHECK(m.active_connections == 100000);

    cserve::detail::metrics_registry other; // a second server on the same threads
    reg_t::add<std::uint64_t>(other.local().connections, 7);
    reg_t::add<std::uint64_t>(reg.local().connections, 1);
    CHECK(other.snapshot().connections == 7);
    CHECK(reg.snapshot().connections == 300001);
}

TEST_CASE("metrics: the Prometheus text")
{
    sm m{};
    m.requests[method("GET")][2] = 5;
    m.requests[method("POST")][5] = 2;
    m.duration_buckets[0] = 3;  // <= 5 ms
    m.duration_buckets[6] = 3;  // <= 250 ms
    m.duration_buckets.back() = 1; // > 10 s
    m.duration_nanoseconds = 12'500'000'000;
    m.active_connections = 4;
    m.tls_handshake_errors = 9;
    m.workers = 2;
    m.restarts_hup = 2;
    auto text = cserve::format_prometheus(m);
    CHECK(text.find("# TYPE http_server_requests_total counter\n") != std::string::npos);
    CHECK(text.find("http_server_requests_total{method=\"GET\",status=\"2xx\"} 5\n") != std::string::npos);
    CHECK(text.find("http_server_requests_total{method=\"POST\",status=\"5xx\"} 2\n") != std::string::npos);
    CHECK(text.find("status=\"3xx\"") == std::string::npos); // zero series are left out
    CHECK(text.find("http_server_request_duration_seconds_bucket{le=\"0.005\"} 3\n") != std::string::npos);
    CHECK(text.find("http_server_request_duration_seconds_bucket{le=\"0.1\"} 3\n") != std::string::npos);
    CHECK(text.find("http_server_request_duration_seconds_bucket{le=\"0.25\"} 6\n") != std::string::npos); // cumulative
    CHECK(text.find("http_server_request_duration_seconds_bucket{le=\"10\"} 6\n") != std::string::npos);
    CHECK(text.find("http_server_request_duration_seconds_bucket{le=\"+Inf\"} 7\n") != std::string::npos);
    CHECK(text.find("http_server_request_duration_seconds_sum 12.5\n") != std::string::npos);
    CHECK(text.find("http_server_request_duration_seconds_count 7\n") != std::string::npos);
    CHECK(text.find("http_server_active_connections 4\n") != std::string::npos);
    CHECK(text.find("cserve_tls_handshakes_total{result=\"error\"} 9\n") != std::string::npos);
    CHECK(text.find("cserve_workers") == std::string::npos); // not supervised
    auto supervised = cserve::format_prometheus(m, true);
    CHECK(supervised.find("cserve_workers 2\n") != std::string::npos);
    CHECK(supervised.find("cserve_worker_restarts_total{cause=\"hup\"} 2\n") != std::string::npos);

    sm empty{};
    CHECK(cserve::format_prometheus(empty).find("http_server_requests_total{method=\"GET\",status=\"2xx\"} 0\n") !=
          std::string::npos);

    sm sum = m;
    sum += m;
    CHECK(sum.requests[method("GET")][2] == 10);
    CHECK(sum.active_connections == 8);
    CHECK(sum.duration_nanoseconds == 25'000'000'000);
    CHECK(sm::method_index("get") == sm::method_index("_OTHER")); // methods are case-sensitive
    CHECK(sm::status_index(101) == 1);
    CHECK(sm::status_index(0) == 0);
    CHECK(sm::status_index(600) == 0);
}
