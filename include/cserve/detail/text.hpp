// cserve/detail/text.hpp -- small helpers for HTTP field names and values
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_TEXT_HPP
#define CSERVE_DETAIL_TEXT_HPP

#include <cserve/detail/config.hpp>

#include <string_view>

namespace cserve::detail {

// `s` without the optional white space (space, tab) of RFC 9110 §5.6.3 around it.
inline std::string_view
trim_ows(std::string_view s) noexcept
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// Calls f on each trimmed, non-empty item of a comma-separated list, left to right.
template <class F>
void
for_each_item(std::string_view list, F f)
{
    while (!list.empty()) {
        auto comma = list.find(',');
        auto item = trim_ows(list.substr(0, comma));
        if (!item.empty())
            f(item);
        if (comma == std::string_view::npos)
            break;
        list.remove_prefix(comma + 1);
    }
}

namespace http1 {

inline bool
is_tchar(unsigned char c) noexcept
{
    // RFC 9110 §5.6.2 token characters.
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

inline bool
valid_field_name(std::string_view s) noexcept
{
    if (s.empty())
        return false;
    for (unsigned char c : s)
        if (!is_tchar(c))
            return false;
    return true;
}

inline bool
valid_field_value(std::string_view s) noexcept
{
    // No CR, LF or NUL: anything else a peer can parse (RFC 9110 §5.5).
    for (unsigned char c : s)
        if (c == '\r' || c == '\n' || c == '\0')
            return false;
    return true;
}

} // namespace http1

} // namespace cserve::detail

#endif
