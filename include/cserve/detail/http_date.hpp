// cserve/detail/http_date.hpp -- the Date header value, formatted once a second
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP_DATE_HPP
#define CSERVE_DETAIL_HTTP_DATE_HPP

#include <cserve/detail/config.hpp>

#include <ctime>
#include <string_view>

namespace cserve::detail {

// IMF-fixdate (RFC 9110 §5.6.7) of `t`, written into out[0..29).
inline void
format_http_date(std::time_t t, char (&out)[29]) noexcept
{
    static constexpr char days[] = "SunMonTueWedThuFriSat";
    static constexpr char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    auto two = [](char* p, int v) {
        p[0] = static_cast<char>('0' + v / 10);
        p[1] = static_cast<char>('0' + v % 10);
    };
    char* p = out;
    p[0] = days[tm.tm_wday * 3];
    p[1] = days[tm.tm_wday * 3 + 1];
    p[2] = days[tm.tm_wday * 3 + 2];
    p[3] = ',';
    p[4] = ' ';
    two(p + 5, tm.tm_mday);
    p[7] = ' ';
    p[8] = months[tm.tm_mon * 3];
    p[9] = months[tm.tm_mon * 3 + 1];
    p[10] = months[tm.tm_mon * 3 + 2];
    p[11] = ' ';
    int year = tm.tm_year + 1900;
    two(p + 12, year / 100);
    two(p + 14, year % 100);
    p[16] = ' ';
    two(p + 17, tm.tm_hour);
    p[19] = ':';
    two(p + 20, tm.tm_min);
    p[22] = ':';
    two(p + 23, tm.tm_sec);
    p[25] = ' ';
    p[26] = 'G';
    p[27] = 'M';
    p[28] = 'T';
}

// The current Date value. Formatting happens once a second per thread, not per response.
inline std::string_view
http_date() noexcept
{
    struct cache {
        std::time_t second = -1;
        char text[29];
    };
    thread_local cache c;
    std::time_t now = std::time(nullptr);
    if (now != c.second) {
        format_http_date(now, c.text);
        c.second = now;
    }
    return {c.text, sizeof c.text};
}

} // namespace cserve::detail

#endif
