// cserve/impl/exchange.ipp -- the ASGI rules of an HTTP exchange
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_EXCHANGE_IPP
#define CSERVE_IMPL_EXCHANGE_IPP

#include <cserve/detail/exchange.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/error.hpp>

#include <boost/beast/core/string.hpp>
#include <boost/core/demangle.hpp>
#include <boost/system/system_error.hpp>

#include <charconv>
#include <typeinfo>
#include <utility>

namespace cserve::detail {

namespace exchange_detail {

inline bool
parse_content_length(std::string_view s, std::uint64_t& v) noexcept
{
    if (s.empty())
        return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

} // namespace exchange_detail

void
exchange::begin(bool head_request, bool keep_alive, bool body_complete, bool expect_continue) noexcept
{
    *this = exchange();
    head_request_ = head_request;
    keep_alive_ = keep_alive;
    body_ = body_complete ? body_state::complete : body_state::unread;
    continue_pending_ = expect_continue && !body_complete;
}

exchange::receive_step
exchange::next_receive() noexcept
{
    if (body_ == body_state::unread && !disconnected_) {
        request_sent_ = true;
        return receive_step::read_body;
    }
    if (!request_sent_ && body_ == body_state::complete) {
        request_sent_ = true;
        return receive_step::empty_request;
    }
    return receive_step::wait_disconnect;
}

bool
exchange::take_continue() noexcept
{
    if (!continue_pending_)
        return false;
    continue_pending_ = false;
    // A started response whose head is still held can follow the 100 (RFC 9110 §10.1.1):
    // without it the client would hold the body back and the head wait for it.
    return !head_committed_;
}

void
exchange::body_invalid(logger const& log) noexcept
{
    log.log(log_level::warning, "Invalid HTTP request body received.");
    body_ = body_state::invalid;
    keep_alive_ = false;
}

void
exchange::body_too_large(logger const& log) noexcept
{
    log.log(log_level::warning, "Request body larger than --limit-request-body.");
    body_ = body_state::invalid;
    body_error_ = 413;
    keep_alive_ = false;
}

void
exchange::check_send(event const& e) const
{
    if (std::holds_alternative<http::response_start>(e)) {
        if (started())
            throw_unexpected(e, "after response already started");
    } else if (std::holds_alternative<http::response_body>(e)) {
        if (!started())
            throw_unexpected(e, "before 'http.response.start'");
        if (body_done())
            throw_unexpected(e, "after response already completed");
    } else if (std::holds_alternative<http::response_early_hint>(e)) {
        if (started())
            throw_unexpected(e, "after response already started");
        for (auto const& link : std::get<http::response_early_hint>(e).links)
            if (!http1::valid_field_value(link))
                throw boost::system::system_error(make_error_code(error::invalid_header), "invalid early hint link");
    } else if (std::holds_alternative<http::response_trailers>(e)) {
        if (!trailers_ || !body_done() || completed())
            throw_unexpected(e, "when no trailers are expected");
    } else {
        throw_unexpected(e, "on an HTTP connection");
    }
}

response_framing
exchange::start(http::response_start const& s, bool draining)
{
    check_final_status(s.status);
    check_headers(s.headers);
    response_framing f;
    bool close = false;
    for (auto const& [name, value] : s.headers) {
        if (boost::beast::iequals(name, "content-length")) {
            std::uint64_t v = 0;
            if (!exchange_detail::parse_content_length(value, v) || (f.length && *f.length != v))
                throw boost::system::system_error(make_error_code(error::invalid_header),
                                                  "invalid content-length '" + value + "'");
            f.length = v;
        } else if (boost::beast::iequals(name, "transfer-encoding")) {
            f.chunked = list_has(value, "chunked");
        } else if (boost::beast::iequals(name, "connection")) {
            f.connection = true;
            close = close || list_has(value, "close");
        }
    }
    f.bodiless = s.status == 204 || s.status == 304;

    response_ = response_state::started;
    status_ = s.status;
    length_ = f.length;
    sent_ = 0;
    no_body_ = f.bodiless || head_request_;
    trailers_ = s.trailers;
    if (close || draining || body_ == body_state::invalid)
        keep_alive_ = false;
    if (continue_pending_ && body_ != body_state::complete)
        keep_alive_ = false; // the client still holds the body back: it cannot be read past
    return f;
}

void
exchange::body(std::size_t size, bool more, logger const& log)
{
    if (!no_body_)
        body_bytes_ += size;
    if (!no_body_ && length_) {
        if (size > *length_ - sent_)
            throw boost::system::system_error(make_error_code(error::content_length_exceeded),
                                              "Response content longer than Content-Length");
        sent_ += size;
        if (!more && sent_ < *length_) {
            log.log(log_level::error, "Response content shorter than Content-Length");
            keep_alive_ = false;
        }
    }
    if (!more)
        response_ = response_state::body_done;
}

exchange_ending
exchange::finish(std::exception_ptr failure, logger const& log)
{
    if (failure) {
        exchange_ending e{500, "Internal Server Error"};
        try {
            std::rethrow_exception(failure);
        } catch (http_error const& x) {
            if (x.status() >= 400 && x.status() <= 599) {
                e.status = x.status();
                e.body = x.what();
            }
        } catch (client_disconnected const&) {
            keep_alive_ = false;
            return {};
        } catch (std::exception const& x) {
            std::string msg = "Exception in ASGI application\n";
            msg += boost::core::demangle(typeid(x).name());
            msg += ": ";
            msg += x.what();
            log.log(log_level::error, msg);
        } catch (...) {
            log.log(log_level::error, "Exception in ASGI application\nunknown exception");
        }
        if (head_committed_ || disconnected_) {
            keep_alive_ = false; // the response is broken: closing is all that is left
            return {};
        }
        // Nothing of a started response has gone out (its head waits for the first body
        // bytes): it is replaced as if it had never been started.
        return e;
    }
    if (disconnected_) {
        keep_alive_ = false; // nobody is left to answer: nothing to report either
    } else if (body_ == body_state::invalid && !head_committed_) {
        return {body_error_, std::string(error_text(body_error_))};
    } else if (!started()) {
        log.log(log_level::error, "ASGI callable returned without starting response.");
        return {500, "Internal Server Error"};
    } else if (!completed()) {
        log.log(log_level::error, "ASGI callable returned without completing response.");
        keep_alive_ = false;
    }
    return {};
}

void
throw_unexpected(event const& e, char const* when)
{
    std::string msg = "Unexpected ASGI message '";
    msg += event_name(e);
    msg += "' sent, ";
    msg += when;
    msg += '.';
    throw boost::system::system_error(make_error_code(error::unexpected_event), msg);
}

void
check_final_status(int status)
{
    if (status < 200 || status > 599)
        throw boost::system::system_error(make_error_code(error::invalid_status),
                                          "invalid status code " + std::to_string(status));
}

std::string_view
error_text(int status) noexcept
{
    switch (status) {
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Invalid HTTP request received.";
    }
}

http::response_start
simple_response(int status, std::string_view body)
{
    std::string length;
    append_decimal(length, body.size());
    return {
        .status = status,
        .headers = {{"content-type", "text/plain; charset=utf-8"}, {"content-length", std::move(length)}},
    };
}

void
append_access_line(std::string& line, std::string_view client, scope const& s, int status)
{
    line.reserve(line.size() + 96 + s.raw_path.size() + s.query_string.size());
    line += client;
    line += " - \"";
    line += s.method;
    line += ' ';
    line += s.raw_path;
    if (!s.query_string.empty()) {
        line += '?';
        line += s.query_string;
    }
    line += " HTTP/";
    line += s.http_version;
    line += "\" ";
    append_decimal(line, static_cast<std::uint64_t>(status));
    auto reason = reason_phrase(status);
    if (!reason.empty()) {
        line += ' ';
        line += reason;
    }
}

} // namespace cserve::detail

#endif
