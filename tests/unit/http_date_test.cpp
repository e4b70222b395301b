// tests/unit/http_date_test.cpp -- the Date header value against known instants
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/http_date.hpp>

#include "catch.hpp"

#include <ctime>
#include <string_view>

TEST_CASE("http_date: format_http_date writes the IMF-fixdate of known instants", "[http_date]")
{
    // RFC 9110 §5.6.7's own example, the epoch, a leap day, and years past 2038 and 2099.
    struct known {
        std::time_t t;
        std::string_view text;
    };
    auto const [t, text] = GENERATE(values<known>({
        {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
        {784111777, "Sun, 06 Nov 1994 08:49:37 GMT"},
        {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},
        {1798761599, "Thu, 31 Dec 2026 23:59:59 GMT"},
        {4102444799, "Thu, 31 Dec 2099 23:59:59 GMT"},
        {253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"},
    }));
    char out[29];
    cserve::detail::format_http_date(t, out);
    CHECK(std::string_view(out, sizeof out) == text);
}

TEST_CASE("http_date: http_date is the current second's value", "[http_date]")
{
    char expect[29];
    for (int attempt = 0; attempt < 3; ++attempt) {
        // Formatted on either side of the call: equal unless a second boundary fell between.
        std::time_t before = std::time(nullptr);
        auto value = cserve::detail::http_date();
        std::time_t after = std::time(nullptr);
        if (before != after)
            continue;
        cserve::detail::format_http_date(before, expect);
        CHECK(value == std::string_view(expect, sizeof expect));
        return;
    }
    FAIL("the clock moved on during three attempts");
}
