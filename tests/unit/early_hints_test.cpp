// tests/unit/early_hints_test.cpp -- 103 Early Hints ("http.response.early_hint") over HTTP/1.1
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <string>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
using cserve::task;

struct hint_record {
    bool listed = false; // the scope lists the extension
    std::string late_error; // what send() of a hint after response_start threw
};

cserve::app_function
hinting(hint_record& rec)
{
    return [&rec](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        rec.listed = scope.has_extension("http.response.early_hint");
        co_await send(http::response_early_hint{.links = {"</a.css>; rel=preload; as=style"}});
        co_await send(http::response_early_hint{.links = {"</b.js>; rel=preload; as=script", "<https://cdn.test>; rel=preconnect"}});
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "6"}}});
        try {
            co_await send(http::response_early_hint{.links = {"</late>"}});
        } catch (boost::system::system_error const& e) {
            rec.late_error = e.what();
        }
        co_await send(http::response_body{.body = "hinted"});
    };
}

} // namespace

TEST_CASE("early hints: 103 responses with Link headers before the response, over HTTP/1.1")
{
    hint_record rec;
    ct::read_result raw;
    auto r = ct::run_server(hinting(rec), ct::test_config(), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(rec.listed);
    CHECK(raw.data.starts_with("HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload; as=style\r\n\r\n"
                               "HTTP/1.1 103 Early Hints\r\nlink: </b.js>; rel=preload; as=script\r\n"
                               "link: <https://cdn.test>; rel=preconnect\r\n\r\nHTTP/1.1 200 OK\r\n"));
    CHECK(raw.data.ends_with("\r\n\r\nhinted"));
    CHECK(raw.data.find("/late") == std::string::npos);
    CHECK(rec.late_error.find("Unexpected ASGI message 'http.response.early_hint' sent, after response already started") !=
          std::string::npos);
}

TEST_CASE("early hints: an HTTP/1.0 client gets none")
{
    hint_record rec;
    ct::read_result raw;
    auto r = ct::run_server(hinting(rec), ct::test_config(), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.0\r\n\r\n");
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(raw.data.starts_with("HTTP/1.1 200 OK\r\n")); // no 103 first
    CHECK(raw.data.ends_with("hinted"));
}

TEST_CASE("early hints: a link with a line break is refused")
{
    std::string error;
    auto app = [&](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        try {
            co_await send(http::response_early_hint{.links = {"</a>\r\nset-cookie: x=1"}});
        } catch (boost::system::system_error const& e) {
            error = e.what();
        }
        co_await send(http::response_start{.status = 204});
        co_await send(http::response_body{});
    };
    ct::read_result raw;
    auto r = ct::run_server(app, ct::test_config(), [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        co_await ct::write(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw = co_await ct::read_to_eof(s);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(error.find("invalid early hint link") != std::string::npos);
    CHECK(raw.data.starts_with("HTTP/1.1 204 No Content\r\n"));
}
