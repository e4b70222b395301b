// cserve/detail/http1/request_parser.hpp -- Beast's parser without allocation, with RFC 9112 checks
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP1_REQUEST_PARSER_HPP
#define CSERVE_DETAIL_HTTP1_REQUEST_PARSER_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/text.hpp>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cserve::detail {

// A position in the header block, so that views survive copying the block out of the
// read buffer.
struct span {
    std::uint32_t pos = 0;
    std::uint32_t len = 0;

    std::string_view
    in(std::string_view block) const noexcept
    {
        return block.substr(pos, len);
    }
};

// What the parser learns from one request header, kept by the connection so that its
// vector's capacity is reused from request to request.
struct request_head {
    char const* base = nullptr; // the buffer handed to put() for the header
    std::size_t size = 0;
    span method;
    span target;
    int version = 11;
    std::vector<std::pair<span, span>> fields;
    unsigned host_count = 0;
    bool has_content_length = false;
    bool has_transfer_encoding = false;
    bool expect_continue = false;
    bool websocket_upgrade = false;
    int reject_status = 0; // set when a check below rejects the request

    void
    clear() noexcept
    {
        base = nullptr;
        size = 0;
        method = target = {};
        version = 11;
        fields.clear();
        host_count = 0;
        has_content_length = has_transfer_encoding = expect_continue = websocket_upgrade = false;
        reject_status = 0;
    }
};

// The longest chunk-size line accepted, extensions included (RFC 9112 §7.1 sets none; h11
// and nginx bound it too). Beast does not: a line that never ends would grow the buffer.
inline constexpr std::size_t chunk_line_limit = 4096;

// Where body bytes go: appended to `sink` (or dropped when it is null) until `room` is
// used up, so that the read buffer is consumed only as fast as the application receives.
struct body_target {
    std::string* sink = nullptr;
    std::size_t room = 0;
};

// Beast's basic_parser fed from the connection's own buffer. Beast validates the grammar
// (method, target, version, field syntax, Content-Length, chunk framing); this adds the
// checks RFC 9112 asks of a server that Beast leaves to the caller: Host, Transfer-Encoding
// with Content-Length in either order, Transfer-Encoding on HTTP/1.0, unsupported codings,
// obs-fold, the chunk-ext grammar and the length of a chunk line.
class request_parser final : public boost::beast::http::basic_parser<true> {
public:
    request_parser(request_head& head, body_target& body) noexcept
        : head_(head)
        , body_(body)
    {
    }

    /** Called when put() asked for more with `rest` still unparsed: rejects a chunked body
        that more bytes cannot complete.

        Between chunks, Beast waits for a whole chunk-size line (after the CRLF that ends the
        previous chunk's data) or for the last chunk's whole trailer section, with no limit
        on either. And it scans a quoted chunk-ext value up to its closing quote wherever
        that is, past the end of the line: a quote not closed on its line has Beast ask for
        more for ever, rescanning all that arrived. So: a line longer than chunk_line_limit,
        a complete chunk line that Beast still cannot parse, and a trailer section longer than
        `trailer_limit` (or complete but not parsed) are errors.
    */
    void
    check_stalled(std::string_view rest, std::size_t trailer_limit, boost::beast::error_code& ec) const noexcept
    {
        if (!is_header_done() || !chunked())
            return;
        auto line = rest;
        if (line.starts_with("\r\n"))
            line.remove_prefix(2);
        auto const eol = line.find("\r\n");
        if (eol == std::string_view::npos) {
            if (line.size() > chunk_line_limit)
                ec = boost::beast::http::error::bad_chunk;
            return;
        }
        // 1*"0": the last chunk, complete with its trailer section at the first empty line.
        auto const digits = line.find_first_not_of('0'); // not npos: the line has its CRLF
        bool const last_chunk = digits > 0 && http1::hex_value(line[digits]) < 0;
        if (!last_chunk || line.find("\r\n\r\n") != std::string_view::npos || line.size() > trailer_limit)
            ec = boost::beast::http::error::bad_chunk_extension;
    }

private:
    using error_code = boost::beast::error_code;
    using field = boost::beast::http::field;
    using verb = boost::beast::http::verb;
    using string_view = boost::beast::string_view;

    span
    span_of(string_view s) const noexcept
    {
        return {static_cast<std::uint32_t>(s.data() - head_.base),
                static_cast<std::uint32_t>(s.size())};
    }

    bool
    in_buffer(string_view s) const noexcept
    {
        return s.data() >= head_.base && s.data() + s.size() <= head_.base + head_.size;
    }

    void
    reject(int status, error_code& ec) noexcept
    {
        head_.reject_status = status;
        ec = boost::beast::http::error::bad_value;
    }

    void
    on_request_impl(verb, string_view method, string_view target, int version,
                    error_code& ec) override
    {
        head_.method = span_of(method);
        head_.target = span_of(target);
        head_.version = version;
        if (version != 10 && version != 11)
            reject(505, ec);
    }

    void
    on_response_impl(int, string_view, int, error_code& ec) override
    {
        ec = boost::beast::http::error::bad_method;
    }


    void
    on_field_impl(field f, string_view name, string_view value, error_code& ec) override
    {
        if (is_header_done())
            return; // a chunked body's trailer fields: ASGI has no request trailers
        // Beast joins obs-fold lines in a buffer of its own; RFC 9112 §5.2 lets a server
        // reject them instead, which keeps every value a view into the request. A fold after
        // an empty first line is not joined: the value is the next line's, in the buffer,
        // with the line break between it and the name.
        if (!in_buffer(value))
            return reject(400, ec);
        auto const gap = std::string_view(name.data() + name.size(),
                                          static_cast<std::size_t>(value.data() - (name.data() + name.size())));
        if (gap.find_first_of("\r\n") != std::string_view::npos)
            return reject(400, ec);
        head_.fields.emplace_back(span_of(name), span_of(value));
        switch (f) {
        case field::host: ++head_.host_count; break;
        case field::content_length: head_.has_content_length = true; break;
        case field::transfer_encoding: {
            head_.has_transfer_encoding = true;
            // Only "chunked" is implemented; chunked must be the final coding (RFC 9112 §6.3),
            // anything else in front of it is a coding this server cannot decode (§6.1: 501).
            std::string_view v = value;
            auto last = v.rfind(',');
            auto final_coding = trim_ows(last == std::string_view::npos ? v : v.substr(last + 1));
            if (!boost::beast::iequals(final_coding, "chunked"))
                return reject(400, ec);
            if (last != std::string_view::npos) {
                // chunked applied twice is malformed (§7: "MUST NOT apply chunked more than
                // once"); any other coding before it is one this server cannot decode.
                auto before = v.substr(0, last);
                for (auto comma = before.find(','); ; comma = before.find(',')) {
                    if (boost::beast::iequals(trim_ows(before.substr(0, comma)), "chunked"))
                        return reject(400, ec);
                    if (comma == std::string_view::npos)
                        break;
                    before.remove_prefix(comma + 1);
                }
                return reject(501, ec);
            }
            break;
        }
        case field::expect:
            if (boost::beast::iequals(trim_ows(value), "100-continue"))
                head_.expect_continue = true;
            break;
        default: break;
        }
    }

#if CSERVE_DETAIL_BEAST_TRAILER_FIELD_IMPL
    void
    on_trailer_field_impl(field, string_view, string_view, error_code&) override
    {
        // A chunked body's trailer fields: ASGI has no request trailers.
    }
#endif

    void
    on_header_impl(error_code& ec) override
    {
        if (head_.has_transfer_encoding && head_.has_content_length)
            return reject(400, ec);
        if (head_.has_transfer_encoding && head_.version == 10)
            return reject(400, ec);
        if (head_.host_count > 1 || (head_.version == 11 && head_.host_count == 0))
            return reject(400, ec);
    }

    void
    on_body_init_impl(boost::optional<std::uint64_t> const&, error_code&) override
    {
    }

    std::size_t
    take(string_view s) noexcept
    {
        if (!body_.sink)
            return s.size(); // discarding
        auto n = s.size() < body_.room ? s.size() : body_.room;
        body_.sink->append(s.data(), n);
        body_.room -= n;
        return n;
    }

    std::size_t
    on_body_impl(string_view body, error_code&) override
    {
        return take(body);
    }

    void
    on_chunk_header_impl(std::uint64_t, string_view ext, error_code& ec) override
    {
        // Beast checks the shape of chunk-ext, not its characters: a quoted value may hold
        // any CTL. RFC 9112 §7.1.1 and RFC 9110 §5.6.4 allow none but HTAB.
        if (ext.size() > chunk_line_limit || !http1::valid_chunk_ext(ext))
            ec = boost::beast::http::error::bad_chunk_extension;
    }

    std::size_t
    on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override
    {
        return take(body);
    }

    void
    on_finish_impl(error_code&) override
    {
    }

    request_head& head_;
    body_target& body_;
};

} // namespace cserve::detail

#endif
