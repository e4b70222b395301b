// tests/unit/request_body_limit_test.cpp -- --limit-request-body: 413 before and while reading
// SPDX-License-Identifier: BSL-1.0
#include "catch.hpp"
#include "test_server.hpp"

#include <cserve/cserve.hpp>

#include <string>
#include <vector>

namespace ct = cserve_test;
namespace http = cserve::http;
using cserve::task;

namespace {

struct app_record {
    int calls = 0;
    std::size_t received = 0;
    bool saw_disconnect = false;
};

// Reads the whole body, then answers its size; with `commit_first`, answers 200 and sends
// a first piece before reading.
cserve::app_function
reader(app_record& rec, bool commit_first = false)
{
    return [&rec, commit_first](cserve::scope&, cserve::receive receive, cserve::send send) -> task<> {
        ++rec.calls;
        if (commit_first) {
            co_await send(http::response_start{.status = 200});
            co_await send(http::response_body{.body = "started\n", .more_body = true});
        }
        for (;;) {
            auto e = co_await receive();
            auto* r = std::get_if<http::request>(&e);
            if (!r) {
                rec.saw_disconnect = true;
                co_return;
            }
            rec.received += r->body.size();
            if (!r->more_body)
                break;
        }
        std::string body = std::to_string(rec.received);
        if (commit_first) {
            co_await send(http::response_body{.body = body});
            co_return;
        }
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", std::to_string(body.size())}}});
        co_await send(http::response_body{.body = body});
    };
}

cserve::config
limited(std::uint64_t bytes)
{
    auto cfg = ct::test_config();
    cfg.limit_request_body = bytes;
    return cfg;
}

std::string
chunked_request(std::size_t chunks, std::size_t chunk_size)
{
    std::string req = ct::get("/", "Transfer-Encoding: chunked\r\n", "POST");
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", chunk_size);
    for (std::size_t i = 0; i < chunks; ++i) {
        req += size;
        req += std::string(chunk_size, 'x');
        req += "\r\n";
    }
    req += "0\r\n\r\n";
    return req;
}

} // namespace

TEST_CASE("limit_request_body: a Content-Length past the limit is 413 before the application runs",
          "[limits][limit_request_body]")
{
    app_record rec;
    ct::read_result raw;
    auto r = ct::run_server(reader(rec), limited(1000), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, ct::get("/", "Content-Length: 1001\r\n", "POST") + std::string(1001, 'x'));
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    auto parsed = ct::parse_responses(raw.data);
    REQUIRE(parsed.responses.size() == 1);
    CHECK(parsed.responses[0].result_int() == 413);
    CHECK(parsed.responses[0].body() == "Content Too Large");
    CHECK(ct::field(parsed.responses[0], "connection") == "close");
    CHECK(raw.eof);
    CHECK(rec.calls == 0);
}

TEST_CASE("limit_request_body: a body at the limit is served, on a connection kept alive",
          "[limits][limit_request_body]")
{
    app_record rec;
    ct::response_result first, second;
    auto r = ct::run_server(reader(rec), limited(1000), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        boost::beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/", "Content-Length: 1000\r\n", "POST") + std::string(1000, 'x'));
        first = co_await ct::read_response(s, buf);
        co_await ct::write(s, chunked_request(4, 250));
        second = co_await ct::read_response(s, buf);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(first.status() == 200);
    CHECK(first.msg.body() == "1000");
    CHECK(second.status() == 200);
    CHECK(second.msg.body() == "2000"); // 1000 + 1000: the limit is per request
}

TEST_CASE("limit_request_body: a chunked body growing past the limit is 413, the application told it is gone",
          "[limits][limit_request_body]")
{
    app_record rec;
    ct::read_result raw;
    auto r = ct::run_server(reader(rec), limited(1000), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::try_write(s, chunked_request(8, 200));
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    auto parsed = ct::parse_responses(raw.data);
    REQUIRE(parsed.responses.size() == 1);
    CHECK(parsed.responses[0].result_int() == 413);
    CHECK(ct::field(parsed.responses[0], "connection") == "close");
    CHECK(rec.calls == 1);
    CHECK(rec.saw_disconnect);
    CHECK(rec.received <= 1000);
    CHECK(r.logged("Request body larger than --limit-request-body."));
}

TEST_CASE("limit_request_body: past the limit after the response went out, the connection closes",
          "[limits][limit_request_body]")
{
    app_record rec;
    ct::read_result raw;
    auto r = ct::run_server(reader(rec, true), limited(1000), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::try_write(s, chunked_request(8, 200));
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(raw.data.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(raw.data.find("started\n") != std::string::npos);
    CHECK(raw.data.find("413") == std::string::npos);
    CHECK_FALSE(raw.timed_out);
    // The chunked response was cut off: no last chunk.
    CHECK(raw.data.find("\r\n0\r\n\r\n") == std::string::npos);
    CHECK(rec.saw_disconnect);
}

TEST_CASE("limit_request_body: --limit-request-body and CSERVE_LIMIT_REQUEST_BODY set it", "[limits][run][flags]")
{
    char const* argv[] = {"cserve", "--limit-request-body", "1048576"};
    auto cl = cserve::parse_command_line(3, argv);
    CHECK(cl.cfg.limit_request_body == std::optional<std::uint64_t>(1048576));
    char const* none[] = {"cserve"};
    CHECK_FALSE(cserve::parse_command_line(1, none).cfg.limit_request_body);
    char const* bad[] = {"cserve", "--limit-request-body", "-5"};
    CHECK_THROWS_AS(cserve::parse_command_line(3, bad), cserve::usage_error);
}
