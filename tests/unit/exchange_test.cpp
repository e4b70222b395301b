// tests/unit/exchange_test.cpp -- the ASGI rules of an HTTP exchange, without a socket
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/exchange.hpp>
#include <cserve/error.hpp>

#include "catch.hpp"

#include <boost/system/system_error.hpp>

#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using cserve::detail::exchange;
using step = cserve::detail::exchange::receive_step;
namespace http = cserve::http;

namespace {

// A logger that keeps its lines.
struct recorded_log {
    std::vector<std::pair<cserve::log_level, std::string>> lines;
    cserve::logger log{cserve::log_level::trace, [this](cserve::log_level l, std::string_view m) {
                           lines.emplace_back(l, std::string(m));
                       }};

    bool has(std::string_view text) const
    {
        for (auto const& [level, line] : lines)
            if (line.find(text) != std::string::npos)
                return true;
        return false;
    }
};

// The error code a call throws as system_error, or a default one when it throws nothing.
template <class F>
boost::system::error_code
thrown(F&& f)
{
    try {
        f();
    } catch (boost::system::system_error const& e) {
        return e.code();
    }
    return {};
}

http::response_start
start_with(int status, cserve::header_list headers = {}, bool trailers = false)
{
    return {.status = status, .headers = std::move(headers), .trailers = trailers};
}

} // namespace

TEST_CASE("exchange: a request without a body is one empty http.request, then the wait for the end",
          "[exchange][receive]")
{
    exchange x;
    x.begin(false, true, true, false);
    CHECK(x.next_receive() == step::empty_request);
    CHECK(x.next_receive() == step::wait_disconnect);
    CHECK(x.next_receive() == step::wait_disconnect);
}

TEST_CASE("exchange: a body is read until it is all received; an invalid one ends the connection",
          "[exchange][receive]")
{
    recorded_log rec;
    exchange x;
    x.begin(false, true, false, false);
    CHECK(x.next_receive() == step::read_body);
    CHECK(x.next_receive() == step::read_body);
    SECTION("complete")
    {
        x.body_received();
        CHECK(x.body_complete());
        CHECK(x.next_receive() == step::wait_disconnect); // no second empty http.request
        CHECK(x.keep_alive());
    }
    SECTION("invalid")
    {
        x.body_invalid(rec.log);
        CHECK(x.body_invalid());
        CHECK_FALSE(x.keep_alive());
        CHECK(x.next_receive() == step::wait_disconnect);
        CHECK(rec.has("Invalid HTTP request body received."));
        // The application returns without answering: the server answers 400 itself.
        auto end = x.finish(nullptr, rec.log);
        CHECK(end.status == 400);
    }
    SECTION("the client leaves")
    {
        x.client_gone();
        CHECK(x.disconnected());
        CHECK_FALSE(x.keep_alive());
        CHECK(x.next_receive() == step::wait_disconnect);
    }
}

TEST_CASE("exchange: 100 Continue goes out once, and not after a response head went out", "[exchange][receive]")
{
    exchange x;
    SECTION("expected, not yet answered")
    {
        x.begin(false, true, false, true);
        CHECK(x.continue_pending());
        CHECK(x.take_continue());
        CHECK_FALSE(x.take_continue());
        CHECK_FALSE(x.continue_pending());
    }
    SECTION("a response head committed first")
    {
        x.begin(false, true, false, true);
        x.start(start_with(413), false);
        CHECK_FALSE(x.keep_alive()); // the client holds the body back: it cannot be read past
        CHECK(x.commit());
        CHECK_FALSE(x.take_continue());
    }
    SECTION("a request whose body is all here needs none")
    {
        x.begin(false, true, true, true);
        CHECK_FALSE(x.continue_pending());
        CHECK_FALSE(x.take_continue());
    }
}

TEST_CASE("exchange: send() takes start, body..., trailers in that order only", "[exchange][send]")
{
    recorded_log rec;
    exchange x;
    x.begin(false, true, true, false);
    auto const unexpected = make_error_code(cserve::error::unexpected_event);
    http::response_body const body{"x", true};
    CHECK(thrown([&] { x.check_send(body); }) == unexpected);
    CHECK(thrown([&] { x.check_send(http::response_trailers{}); }) == unexpected);
    CHECK(thrown([&] { x.check_send(cserve::websocket::accept{}); }) == unexpected);
    CHECK(thrown([&] { x.check_send(start_with(200)); }) == boost::system::error_code{});

    x.start(start_with(200, {}, true), false);
    CHECK(x.started());
    CHECK(thrown([&] { x.check_send(start_with(200)); }) == unexpected);
    CHECK(thrown([&] { x.check_send(body); }) == boost::system::error_code{});
    CHECK(thrown([&] { x.check_send(http::response_trailers{}); }) == unexpected); // body not done
    x.body(1, true, rec.log);
    x.body(0, false, rec.log);
    CHECK(x.body_done());
    CHECK(thrown([&] { x.check_send(body); }) == unexpected);
    CHECK(thrown([&] { x.check_send(http::response_trailers{}); }) == boost::system::error_code{});
    x.complete();
    CHECK(x.completed());
    CHECK(thrown([&] { x.check_send(http::response_trailers{}); }) == unexpected);
}

TEST_CASE("exchange: the response start is checked: status, header syntax, content-length", "[exchange][send]")
{
    exchange x;
    x.begin(false, true, true, false);
    auto const status = make_error_code(cserve::error::invalid_status);
    auto const header = make_error_code(cserve::error::invalid_header);
    CHECK(thrown([&] { x.start(start_with(101), false); }) == status);
    CHECK(thrown([&] { x.start(start_with(199), false); }) == status);
    CHECK(thrown([&] { x.start(start_with(600), false); }) == status);
    CHECK(thrown([&] { x.start(start_with(200, {{"x-a", "1\r\nx-b: 2"}}), false); }) == header);
    CHECK(thrown([&] { x.start(start_with(200, {{"bad name", "1"}}), false); }) == header);
    CHECK(thrown([&] { x.start(start_with(200, {{"content-length", "12x"}}), false); }) == header);
    CHECK(thrown([&] { x.start(start_with(200, {{"content-length", "-1"}}), false); }) == header);
    CHECK(thrown([&] { x.start(start_with(200, {{"content-length", "1"}, {"Content-Length", "2"}}), false); }) ==
          header);
    CHECK_FALSE(x.started()); // nothing of a refused start was taken

    auto f = x.start(start_with(200, {{"Content-Length", "5"}, {"content-length", "5"}}), false);
    REQUIRE(f.length);
    CHECK(*f.length == 5);
    CHECK_FALSE(f.chunked);
    CHECK_FALSE(f.connection);
    CHECK_FALSE(f.bodiless);
    CHECK(x.status() == 200);
}

TEST_CASE("exchange: what a response start says about framing and the connection", "[exchange][send]")
{
    exchange x;
    SECTION("transfer-encoding: chunked and connection: close from the application")
    {
        x.begin(false, true, true, false);
        auto f = x.start(start_with(200, {{"Transfer-Encoding", "gzip, chunked"}, {"Connection", "Close"}}), false);
        CHECK(f.chunked);
        CHECK(f.connection);
        CHECK_FALSE(x.keep_alive());
    }
    SECTION("connection: keep-alive from the application keeps it")
    {
        x.begin(false, true, true, false);
        auto f = x.start(start_with(200, {{"connection", "keep-alive"}}), false);
        CHECK(f.connection);
        CHECK(x.keep_alive());
    }
    SECTION("a draining server ends the connection with the response")
    {
        x.begin(false, true, true, false);
        x.start(start_with(200), true);
        CHECK_FALSE(x.keep_alive());
    }
    SECTION("204 and 304 have no body; HEAD's body is dropped")
    {
        x.begin(false, true, true, false);
        CHECK(x.start(start_with(204), false).bodiless);
        CHECK(x.no_body());
        x.begin(false, true, true, false);
        CHECK(x.start(start_with(304), false).bodiless);
        x.begin(true, true, true, false);
        CHECK_FALSE(x.start(start_with(200, {{"content-length", "100"}}), false).bodiless);
        CHECK(x.no_body());
    }
}

TEST_CASE("exchange: body bytes are counted against content-length", "[exchange][send]")
{
    recorded_log rec;
    exchange x;
    x.begin(false, true, true, false);
    x.start(start_with(200, {{"content-length", "5"}}), false);
    SECTION("exact")
    {
        x.body(2, true, rec.log);
        x.body(3, false, rec.log);
        CHECK(x.body_done());
        CHECK(x.keep_alive());
        CHECK(rec.lines.empty());
    }
    SECTION("longer: refused, and nothing is counted")
    {
        x.body(2, true, rec.log);
        CHECK(thrown([&] { x.body(4, true, rec.log); }) == make_error_code(cserve::error::content_length_exceeded));
        x.body(3, false, rec.log);
        CHECK(x.keep_alive());
    }
    SECTION("shorter: logged, and the connection ends")
    {
        x.body(4, false, rec.log);
        CHECK(x.body_done());
        CHECK_FALSE(x.keep_alive());
        CHECK(rec.has("Response content shorter than Content-Length"));
    }
    SECTION("a HEAD response counts nothing")
    {
        x.begin(true, true, true, false);
        x.start(start_with(200, {{"content-length", "5"}}), false);
        x.body(100, false, rec.log);
        CHECK(x.keep_alive());
        CHECK(rec.lines.empty());
    }
    SECTION("a length known after all (one body event held all of it)")
    {
        x.begin(false, true, true, false);
        x.start(start_with(200), false);
        x.set_length(3);
        CHECK(thrown([&] { x.body(4, false, rec.log); }) == make_error_code(cserve::error::content_length_exceeded));
    }
}

TEST_CASE("exchange: the head is committed once", "[exchange][send]")
{
    exchange x;
    x.begin(false, true, true, false);
    x.start(start_with(200), false);
    CHECK_FALSE(x.head_committed());
    CHECK(x.commit());
    CHECK_FALSE(x.commit());
    CHECK(x.head_committed());
}

TEST_CASE("exchange: what the application's return or failure leaves to answer", "[exchange][finish]")
{
    recorded_log rec;
    exchange x;
    x.begin(false, true, true, false);
    auto fail = [](auto e) { return std::make_exception_ptr(std::move(e)); };

    SECTION("a complete response: nothing")
    {
        x.start(start_with(200), false);
        x.body(0, false, rec.log);
        x.complete();
        auto end = x.finish(nullptr, rec.log);
        CHECK(end.status == 0);
        CHECK(x.keep_alive());
        CHECK(rec.lines.empty());
    }
    SECTION("returned without starting: 500, logged")
    {
        auto end = x.finish(nullptr, rec.log);
        CHECK(end.status == 500);
        CHECK(end.body == "Internal Server Error");
        CHECK(rec.has("ASGI callable returned without starting response."));
    }
    SECTION("returned without completing: the connection ends, logged")
    {
        x.start(start_with(200), false);
        x.commit();
        auto end = x.finish(nullptr, rec.log);
        CHECK(end.status == 0);
        CHECK_FALSE(x.keep_alive());
        CHECK(rec.has("ASGI callable returned without completing response."));
    }
    SECTION("an exception before the head went out: 500 replaces the response, logged with its type")
    {
        x.start(start_with(200), false);
        auto end = x.finish(fail(std::runtime_error("boom")), rec.log);
        CHECK(end.status == 500);
        CHECK(rec.has("Exception in ASGI application\nstd::runtime_error: boom"));
    }
    SECTION("an exception after the head went out: only closing is left")
    {
        x.start(start_with(200), false);
        x.commit();
        auto end = x.finish(fail(std::runtime_error("boom")), rec.log);
        CHECK(end.status == 0);
        CHECK_FALSE(x.keep_alive());
        CHECK(rec.has("boom"));
    }
    SECTION("http_error answers with its status and message; outside 4xx/5xx it is a 500")
    {
        auto end = x.finish(fail(cserve::http_error(404, "no such thing")), rec.log);
        CHECK(end.status == 404);
        CHECK(end.body == "no such thing");
        CHECK(rec.lines.empty());
        x.begin(false, true, true, false);
        CHECK(x.finish(fail(cserve::http_error(302, "elsewhere")), rec.log).status == 500);
    }
    SECTION("the client left: nothing to answer, nothing to log")
    {
        auto end = x.finish(fail(cserve::client_disconnected()), rec.log);
        CHECK(end.status == 0);
        CHECK_FALSE(x.keep_alive());
        CHECK(rec.lines.empty());
        x.begin(false, true, true, false);
        x.client_gone();
        CHECK(x.finish(nullptr, rec.log).status == 0);
        CHECK(rec.lines.empty());
    }
}

TEST_CASE("exchange: the access-log line and the server's own responses", "[exchange][log]")
{
    cserve::scope s;
    s.method = "GET";
    s.raw_path = "/a%20b";
    s.query_string = "x=1";
    s.http_version = "1.1";
    std::string line;
    cserve::detail::append_access_line(line, "127.0.0.1:5000", s, 404);
    CHECK(line == "127.0.0.1:5000 - \"GET /a%20b?x=1 HTTP/1.1\" 404 Not Found");
    line.clear();
    s.query_string = {};
    cserve::detail::append_access_line(line, "-", s, 299);
    CHECK(line == "- - \"GET /a%20b HTTP/1.1\" 299");

    CHECK(cserve::detail::error_text(431) == "Request Header Fields Too Large");
    CHECK(cserve::detail::error_text(400) == "Invalid HTTP request received.");
    auto r = cserve::detail::simple_response(503, "Service Unavailable");
    CHECK(r.status == 503);
    CHECK(r.headers == cserve::header_list{{"content-type", "text/plain; charset=utf-8"}, {"content-length", "19"}});
}
