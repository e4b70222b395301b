// cserve/detail/text.hpp -- small helpers for HTTP field names and values
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_TEXT_HPP
#define CSERVE_DETAIL_TEXT_HPP

#include <cserve/detail/config.hpp>

#include <boost/beast/core/string.hpp>

#include <cstddef>
#include <string>
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

// Whether the comma-separated list `s` holds `token` (case-insensitive).
inline bool
list_has(std::string_view s, std::string_view token) noexcept
{
    bool found = false;
    for_each_item(s, [&](std::string_view item) { found = found || boost::beast::iequals(item, token); });
    return found;
}

inline bool
starts_with_icase(std::string_view s, std::string_view prefix) noexcept
{
    return s.size() >= prefix.size() && boost::beast::iequals(s.substr(0, prefix.size()), prefix);
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

// The value of the hex digit `c`, or -1.
inline int
hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// `s` for a one-line message: control characters (a CR or LF that would split the line, an
// escape sequence for the terminal) shown as \n, \r, \t or \xNN.
inline std::string
printable(std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c != 0x7f) {
            out += ch;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
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

// Whether `s` from s[i] (a DQUOTE) on starts with a quoted-string (RFC 9110 §5.6.4); if it
// does, `i` is moved past its closing DQUOTE. No CTL other than HTAB may appear in it.
inline bool
skip_quoted_string(std::string_view s, std::size_t& i) noexcept
{
    for (++i; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '"') {
            ++i;
            return true;
        }
        if (c == '\\') {
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            if (++i == s.size())
                return false;
            c = static_cast<unsigned char>(s[i]);
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
            continue;
        }
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
        if (c != '\t' && (c < 0x20 || c == 0x7f))
            return false;
    }
    return false;
}

// Whether `s` is a chunk-ext (RFC 9112 §7.1.1):
//   *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
// with chunk-ext-name = token and chunk-ext-val = token / quoted-string.
inline bool
valid_chunk_ext(std::string_view s) noexcept
{
    std::size_t i = 0;
    auto const n = s.size();
    auto bws = [&] {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            ++i;
    };
    auto token = [&] {
        auto const start = i;
        while (i < n && is_tchar(static_cast<unsigned char>(s[i])))
            ++i;
        return i > start;
    };
    while (i < n) {
        bws();
        if (i == n || s[i] != ';')
            return false;
        ++i;
        bws();
        if (!token())
            return false;
        auto const name_end = i;
        bws();
        if (i < n && s[i] == '=') {
            ++i;
            bws();
            if (i < n && s[i] == '"') {
                if (!skip_quoted_string(s, i))
                    return false;
            } else if (!token()) {
                return false;
            }
        } else {
            i = name_end; // white space only before a further ";"
        }
    }
    return true;
}

} // namespace http1

} // namespace cserve::detail

#endif
