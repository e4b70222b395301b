// cserve/detail/response_head.hpp -- every response head cserve writes, without I/O
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_RESPONSE_HEAD_HPP
#define CSERVE_DETAIL_RESPONSE_HEAD_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/config.hpp>
#include <cserve/error.hpp>
#include <cserve/event.hpp>

#include <boost/beast/http/status.hpp>
#include <boost/system/system_error.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

// The application's responses, the server's own error responses and the WebSocket 101 all
// carry the server's headers (server, date, --header) and are checked the same way: this is
// the one place that says how.
namespace cserve::detail {

// The headers the server adds to every response head (config: server_header, date_header,
// headers).
struct head_policy {
    bool server_header = true;
    bool date_header = true;
    header_list const* extra = nullptr; // config.headers, checked when the server was made

    static head_policy
    of(config const& cfg) noexcept
    {
        return {cfg.server_header, cfg.date_header, &cfg.headers};
    }
};

// Calls f(name, value) for each header `p` adds, in the order they are written; `date` is the
// Date value (http_date()).
template <class F>
void
for_each_policy_header(head_policy const& p, std::string_view date, F&& f)
{
    if (p.server_header)
        f(std::string_view("server"), std::string_view("cserve"));
    if (p.date_header)
        f(std::string_view("date"), date);
    if (p.extra)
        for (auto const& [name, value] : *p.extra)
            f(std::string_view(name), std::string_view(value));
}

// The reason phrase of `status`, empty for a code without one.
inline std::string_view
reason_phrase(int status) noexcept
{
    auto r = boost::beast::http::obsolete_reason(boost::beast::http::int_to_status(static_cast<unsigned>(status)));
    if (r == "<unknown-status>")
        return {};
    return {r.data(), r.size()};
}

inline void
append_decimal(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// Throws system_error(invalid_header) unless every header of `headers` has a valid name and
// value (RFC 9110 §5.1, §5.5): one with a CR, LF or NUL would split the response.
inline void
check_headers(header_list const& headers, char const* what = "response header")
{
    for (auto const& [name, value] : headers)
        if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
            throw boost::system::system_error(make_error_code(error::invalid_header),
                                              std::string("invalid ") + what + " '" + name + "'");
}

// Appends an HTTP/1.1 head without its final CRLF: the status line, the policy's headers, then
// `headers` (already checked), each "name: value\r\n". The caller adds its framing and
// connection headers, and the CRLF.
inline void
encode_head(std::string& out, int status, header_list const& headers, head_policy const& p, std::string_view date)
{
    out += "HTTP/1.1 ";
    append_decimal(out, static_cast<std::uint64_t>(status));
    out += ' ';
    out += reason_phrase(status);
    out += "\r\n";
    auto line = [&out](std::string_view name, std::string_view value) {
        out += name;
        out += ": ";
        out += value;
        out += "\r\n";
    };
    for_each_policy_header(p, date, line);
    for (auto const& [name, value] : headers)
        line(name, value);
}

} // namespace cserve::detail

#endif
