// tests/unit/event_test.cpp -- the model: events, header lists, scope, errors and the logger
// SPDX-License-Identifier: BSL-1.0
#include <cserve/event.hpp>
#include <cserve/error.hpp>
#include <cserve/log.hpp>
#include <cserve/scope.hpp>

#include "catch.hpp"

#include <algorithm>
#include <any>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace http = cserve::http;
namespace ws = cserve::websocket;
namespace lifespan = cserve::lifespan;

//------------------------------------------------------------------------------
// Events

TEST_CASE("event: event_name gives the ASGI type of every alternative", "[event][name]")
{
    CHECK(cserve::event_name(http::request{}) == "http.request");
    CHECK(cserve::event_name(http::disconnect{}) == "http.disconnect");
    CHECK(cserve::event_name(http::response_start{}) == "http.response.start");
    CHECK(cserve::event_name(http::response_body{}) == "http.response.body");
    CHECK(cserve::event_name(http::response_trailers{}) == "http.response.trailers");
    CHECK(cserve::event_name(ws::connect{}) == "websocket.connect");
    CHECK(cserve::event_name(ws::accept{}) == "websocket.accept");
    CHECK(cserve::event_name(ws::receive{}) == "websocket.receive");
    CHECK(cserve::event_name(ws::send{}) == "websocket.send");
    CHECK(cserve::event_name(ws::disconnect{}) == "websocket.disconnect");
    CHECK(cserve::event_name(ws::close{}) == "websocket.close");
    CHECK(cserve::event_name(lifespan::startup{}) == "lifespan.startup");
    CHECK(cserve::event_name(lifespan::startup_complete{}) == "lifespan.startup.complete");
    CHECK(cserve::event_name(lifespan::startup_failed{}) == "lifespan.startup.failed");
    CHECK(cserve::event_name(lifespan::shutdown{}) == "lifespan.shutdown");
    CHECK(cserve::event_name(lifespan::shutdown_complete{}) == "lifespan.shutdown.complete");
    CHECK(cserve::event_name(lifespan::shutdown_failed{}) == "lifespan.shutdown.failed");
    CHECK(cserve::event_name(http::response_early_hint{}) == "http.response.early_hint");
    CHECK(std::variant_size_v<cserve::event> == 18);
}

TEST_CASE("event: events have the ASGI defaults", "[event][defaults]")
{
    http::request req;
    CHECK(req.body.empty());
    CHECK_FALSE(req.more_body);
    http::response_start start;
    CHECK(start.status == 200);
    CHECK(start.headers.empty());
    CHECK_FALSE(start.trailers);
    http::response_body body;
    CHECK(body.body.empty());
    CHECK_FALSE(body.more_body);
    http::response_trailers trailers;
    CHECK_FALSE(trailers.more_trailers);
    CHECK(ws::disconnect{}.code == 1005);
    CHECK(ws::close{}.code == 1000);
    CHECK_FALSE(ws::accept{}.subprotocol);
}

TEST_CASE("event: header_list is built from braced lists, keeping order and duplicates", "[event][header_list]")
{
    SECTION("two headers")
    {
        cserve::header_list h{{"content-type", "text/plain"}, {"x-a", "b"}};
        REQUIRE(h.size() == 2);
        CHECK(h[0] == cserve::header{"content-type", "text/plain"});
        CHECK(h[1] == cserve::header{"x-a", "b"});
    }
    SECTION("one header, and duplicates")
    {
        cserve::header_list one{{"x", "1"}};
        REQUIRE(one.size() == 1);
        cserve::header_list dup{{"set-cookie", "a=1"}, {"set-cookie", "b=2"}, {"x", "y"}};
        REQUIRE(dup.size() == 3);
        CHECK(dup[0].second == "a=1");
        CHECK(dup[1].second == "b=2");
    }
    SECTION("twenty headers in a braced list")
    {
        cserve::header_list h{{"h0", "0"},   {"h1", "1"},   {"h2", "2"},   {"h3", "3"},   {"h4", "4"},
                              {"h5", "5"},   {"h6", "6"},   {"h7", "7"},   {"h8", "8"},   {"h9", "9"},
                              {"h10", "10"}, {"h11", "11"}, {"h12", "12"}, {"h13", "13"}, {"h14", "14"},
                              {"h15", "15"}, {"h16", "16"}, {"h17", "17"}, {"h18", "18"}, {"h19", "19"}};
        REQUIRE(h.size() == 20);
        for (std::size_t i = 0; i < h.size(); ++i) {
            CHECK(h[i].first == "h" + std::to_string(i));
            CHECK(h[i].second == std::to_string(i));
        }
    }
    SECTION("from a vector")
    {
        std::vector<cserve::header> v;
        for (int i = 0; i < 20; ++i)
            v.emplace_back("x-" + std::to_string(i), std::to_string(i));
        cserve::header_list h(std::move(v));
        REQUIRE(h.size() == 20);
        CHECK(h[19].first == "x-19");
    }
    SECTION("inside an event")
    {
        http::response_start s{.status = 201, .headers = {{"a", "1"}, {"b", "2"}}};
        CHECK(s.status == 201);
        REQUIRE(s.headers.size() == 2);
        CHECK(s.headers[1].first == "b");
        cserve::event e = std::move(s);
        CHECK(std::holds_alternative<http::response_start>(e));
    }
}

//------------------------------------------------------------------------------
// Scope

TEST_CASE("scope: header() finds the first field of a name; has_extension() checks extensions",
          "[scope][header]")
{
    cserve::scope s;
    CHECK(s.type == cserve::scope_type::http);
    CHECK_FALSE(s.header("host"));
    s.headers = {{"host", "example"}, {"x-dup", "one"}, {"x-dup", "two"}};
    REQUIRE(s.header("host"));
    CHECK(*s.header("host") == "example");
    CHECK(*s.header("x-dup") == "one");
    CHECK_FALSE(s.header("missing"));
    CHECK_FALSE(s.has_extension("http.response.trailers"));
    s.extensions = {"http.response.trailers"};
    CHECK(s.has_extension("http.response.trailers"));
    CHECK_FALSE(s.has_extension("websocket.http.response"));
}

TEST_CASE("scope: a state_map copy is shallow for shared_ptr values", "[scope][state]")
{
    cserve::state_map state;
    auto counter = std::make_shared<int>(1);
    state["counter"] = counter;
    state["plain"] = 5;
    cserve::state_map copy = state;
    copy["added"] = 1;
    *std::any_cast<std::shared_ptr<int>>(copy["counter"]) += 1;
    std::any_cast<int&>(copy["plain"]) = 6;
    CHECK(*counter == 2);
    CHECK(std::any_cast<int>(state["plain"]) == 5);
    CHECK(state.count("added") == 0);
    CHECK(state.find(std::string_view("counter")) != state.end()); // heterogeneous lookup
}

TEST_CASE("scope: addresses compare by host and port", "[scope][address]")
{
    CHECK(cserve::address{"127.0.0.1", 80} == cserve::address{"127.0.0.1", 80});
    CHECK_FALSE(cserve::address{"127.0.0.1", 80} == cserve::address{"127.0.0.1", 81});
    CHECK_FALSE(cserve::address{"::1", 80} == cserve::address{"127.0.0.1", 80});
}

//------------------------------------------------------------------------------
// Errors

TEST_CASE("error: the category is named cserve and every code has its own message", "[error][category]")
{
    CHECK(std::string(cserve::error_category().name()) == "cserve");
    std::vector<cserve::error> const all{
        cserve::error::client_disconnected,     cserve::error::unexpected_event, cserve::error::invalid_header,
        cserve::error::invalid_status,          cserve::error::content_length_exceeded,
        cserve::error::startup_failed,          cserve::error::invalid_close};
    std::vector<std::string> messages;
    for (auto e : all) {
        boost::system::error_code ec = e; // is_error_code_enum
        CHECK(ec);
        CHECK(&ec.category() == &cserve::error_category());
        CHECK(ec == cserve::make_error_code(e));
        CHECK(ec == e);
        auto m = ec.message();
        CHECK_FALSE(m.empty());
        CHECK(std::find(messages.begin(), messages.end(), m) == messages.end());
        messages.push_back(m);
    }
    CHECK(cserve::make_error_code(cserve::error::client_disconnected).message() == "client disconnected");
    CHECK(cserve::make_error_code(cserve::error::content_length_exceeded).message() ==
          "response body longer than its Content-Length");
    CHECK(static_cast<int>(cserve::error::client_disconnected) == 1);
    CHECK_FALSE(cserve::error_category().message(999).empty());
}

TEST_CASE("error: client_disconnected and http_error carry what applications need", "[error][exceptions]")
{
    cserve::client_disconnected cd;
    CHECK(cd.code() == cserve::error::client_disconnected);
    CHECK_THROWS_AS(throw cserve::client_disconnected(), boost::system::system_error);

    cserve::http_error he(404, "not here");
    CHECK(he.status() == 404);
    CHECK(std::string(he.what()) == "not here");
    CHECK_THROWS_AS(throw cserve::http_error(500, "x"), std::runtime_error);
}

//------------------------------------------------------------------------------
// Logging

TEST_CASE("log: level names round-trip and parse in any case", "[log][level]")
{
    using L = cserve::log_level;
    for (auto l : {L::trace, L::debug, L::info, L::warning, L::error, L::critical}) {
        auto name = cserve::to_string(l);
        CHECK(cserve::parse_log_level(name) == l);
    }
    CHECK(cserve::to_string(L::warning) == "warning");
    CHECK(cserve::parse_log_level("DEBUG") == L::debug);
    CHECK(cserve::parse_log_level("Critical") == L::critical);
    CHECK_FALSE(cserve::parse_log_level("loud"));
    CHECK_FALSE(cserve::parse_log_level(""));
}

TEST_CASE("log: the logger filters by level and forwards level and message to the sink", "[log][logger]")
{
    std::vector<std::pair<cserve::log_level, std::string>> lines;
    cserve::logger log(cserve::log_level::warning, [&](cserve::log_level l, std::string_view m) {
        lines.emplace_back(l, std::string(m));
    });
    CHECK(log.level() == cserve::log_level::warning);
    CHECK_FALSE(log.enabled(cserve::log_level::info));
    CHECK(log.enabled(cserve::log_level::warning));
    CHECK(log.enabled(cserve::log_level::critical));

    log.log(cserve::log_level::debug, "dropped");
    log.log(cserve::log_level::info, "dropped too");
    log.log(cserve::log_level::warning, "kept");
    log.log(cserve::log_level::error, "kept too");
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == std::pair{cserve::log_level::warning, std::string("kept")});
    CHECK(lines[1] == std::pair{cserve::log_level::error, std::string("kept too")});
}

TEST_CASE("log: a throwing sink does not make log() throw", "[log][logger][noexcept]")
{
    cserve::logger log(cserve::log_level::trace,
                       [](cserve::log_level, std::string_view) { throw std::runtime_error("sink failed"); });
    CHECK_NOTHROW(log.log(cserve::log_level::error, "x"));
    STATIC_REQUIRE(noexcept(log.log(cserve::log_level::error, "x")));
}

TEST_CASE("log: the default logger is at info level", "[log][logger][default]")
{
    cserve::logger log;
    CHECK(log.level() == cserve::log_level::info);
    CHECK_FALSE(log.enabled(cserve::log_level::debug));
    CHECK(log.enabled(cserve::log_level::info));
}
