// tests/unit/response_head_test.cpp -- the response head encoder and the server's header policy
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/response_head.hpp>

#include "catch.hpp"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

using cserve::detail::encode_head;
using cserve::detail::head_policy;

TEST_CASE("response_head: encode_head writes the status line, the policy's headers, then the app's",
          "[response_head]")
{
    cserve::header_list extra{{"x-served-by", "cserve"}, {"x-two", "2"}};
    std::string out;
    SECTION("everything on")
    {
        encode_head(out, 200, {{"content-type", "text/plain"}}, {true, true, &extra},
                    "Sun, 06 Nov 1994 08:49:37 GMT");
        CHECK(out == "HTTP/1.1 200 OK\r\n"
                     "server: cserve\r\n"
                     "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                     "x-served-by: cserve\r\n"
                     "x-two: 2\r\n"
                     "content-type: text/plain\r\n");
    }
    SECTION("no server, no date, no extra headers")
    {
        encode_head(out, 404, {}, {false, false, nullptr}, "ignored");
        CHECK(out == "HTTP/1.1 404 Not Found\r\n");
    }
    SECTION("a status without a reason phrase keeps the space (RFC 9112 §4)")
    {
        encode_head(out, 299, {}, {false, false, nullptr}, {});
        CHECK(out == "HTTP/1.1 299 \r\n");
    }
    SECTION("appends to what is there")
    {
        out = "before|";
        encode_head(out, 204, {}, {false, false, nullptr}, {});
        CHECK(out == "before|HTTP/1.1 204 No Content\r\n");
    }
}

TEST_CASE("response_head: head_policy::of takes the config's settings, and for_each_policy_header their order",
          "[response_head]")
{
    cserve::config cfg;
    cfg.server_header = false;
    cfg.headers = {{"a", "1"}, {"b", "2"}};
    auto p = head_policy::of(cfg);
    CHECK_FALSE(p.server_header);
    CHECK(p.date_header);
    REQUIRE(p.extra == &cfg.headers);
    std::vector<std::pair<std::string, std::string>> seen;
    cserve::detail::for_each_policy_header(p, "D", [&](std::string_view n, std::string_view v) {
        seen.emplace_back(n, v);
    });
    CHECK(seen == std::vector<std::pair<std::string, std::string>>{{"date", "D"}, {"a", "1"}, {"b", "2"}});
}

TEST_CASE("response_head: check_headers refuses names and values that would split the head", "[response_head]")
{
    using cserve::detail::check_headers;
    CHECK_NOTHROW(check_headers({{"content-type", "text/plain; charset=utf-8"}, {"x-empty", ""}}));
    for (auto const& bad : std::vector<cserve::header>{{"x-a", "1\r\nx-injected: 2"},
                                                       {"x-a", "1\nx"},
                                                       {"x-a", std::string("1\0x", 3)},
                                                       {"x a", "1"},
                                                       {"x:a", "1"},
                                                       {"", "1"}}) {
        INFO(bad.first);
        try {
            check_headers({bad}, "trailer");
            FAIL("accepted");
        } catch (boost::system::system_error const& e) {
            CHECK(e.code() == cserve::error::invalid_header);
            CHECK(std::string(e.what()).find("invalid trailer") != std::string::npos);
        }
    }
}
