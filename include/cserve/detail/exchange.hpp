// cserve/detail/exchange.hpp -- one HTTP request and its response, as the application sees them
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_EXCHANGE_HPP
#define CSERVE_DETAIL_EXCHANGE_HPP

#include <cserve/detail/config.hpp>
#include <cserve/event.hpp>
#include <cserve/log.hpp>
#include <cserve/scope.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

// The ASGI rules of an HTTP exchange, with no socket and no framing: which events send()
// and receive() take in which order, content-length accounting, HEAD/204/304, what is left
// to answer when the application fails or returns early, and the access-log line. A
// protocol (HTTP/1.1 today) reads and writes the bytes and asks this object what to do.
namespace cserve::detail {

// What the application said about framing in its response_start.
struct response_framing {
    std::optional<std::uint64_t> length; // its content-length
    bool chunked = false;                // it asked for transfer-encoding: chunked itself
    bool connection = false;             // it set a connection header
    bool bodiless = false;               // 204 or 304: no body, no framing header
};

// What is left to write once the application has returned (or failed): an error response
// (status != 0) or nothing.
struct exchange_ending {
    int status = 0;
    std::string body;
};

class exchange {
public:
    // What receive() does next.
    enum class receive_step : unsigned char {
        read_body,       // read (more of) the request body
        empty_request,   // a bodiless request: one http.request with no body
        wait_disconnect, // the request is all received: wait for the end of the response or of the client
    };

    // A new request: what its protocol parsed. The rest starts over.
    CSERVE_DECL void begin(bool head_request, bool keep_alive, bool body_complete, bool expect_continue) noexcept;

    //--------------------------------------------------------------------------
    // The request.

    CSERVE_DECL receive_step next_receive() noexcept;

    // Whether a 100 Continue goes out before the body is read: once, and only while no
    // response head has gone out (a response the application started can follow it).
    CSERVE_DECL bool take_continue() noexcept;

    // `n` request body bytes went to the application (counted for the metrics).
    void received(std::size_t n) noexcept { received_ += n; }

    // The whole request body was read (for the application or to skip it).
    void body_received() noexcept { body_ = body_state::complete; }

    // The request body broke the framing rules: logged; the connection cannot be reused.
    CSERVE_DECL void body_invalid(logger const& log) noexcept;

    // The body grew past --limit-request-body: as body_invalid(), answered 413.
    CSERVE_DECL void body_too_large(logger const& log) noexcept;

    // The client is gone: receive() gives http.disconnect, send() throws client_disconnected.
    void client_gone() noexcept
    {
        disconnected_ = true;
        keep_alive_ = false;
    }

    //--------------------------------------------------------------------------
    // The response.

    // Throws system_error(unexpected_event) unless `e` may be sent now.
    CSERVE_DECL void check_send(event const& e) const;

    // A response starts (the application's, or an error response replacing one whose head
    // did not go out): checks the status and headers (throws system_error) and notes the
    // framing they ask for. `draining`: the connection ends with this response.
    CSERVE_DECL response_framing start(http::response_start const& s, bool draining);

    // The response's body length is known after all (one event held all of it).
    void set_length(std::uint64_t n) noexcept { length_ = n; }

    // Accounts for a body event of `size` bytes: throws system_error(content_length_exceeded)
    // past content-length; a body ending short of it is logged and ends the connection.
    CSERVE_DECL void body(std::size_t size, bool more, logger const& log);

    // The response is all sent, trailers too.
    void complete() noexcept { response_ = response_state::complete; }

    // The response head is written now: true the first time, when it is also committed (from
    // here on part of it may be on the wire, and it cannot be replaced).
    bool commit() noexcept { return !head_committed_ && (head_committed_ = true); }

    // What the application's return (or `failure`) leaves to answer; logs what the
    // application did wrong.
    CSERVE_DECL exchange_ending finish(std::exception_ptr failure, logger const& log);

    // The connection ends after this exchange (HTTP/1.1 says connection: close).
    void end_connection() noexcept { keep_alive_ = false; }

    // The server's own error response (a 400 for a malformed request, say) was sent in its
    // place: what the metrics count for it.
    void refused(int status, std::uint64_t body) noexcept
    {
        status_ = status;
        body_bytes_ = body;
    }

    //--------------------------------------------------------------------------

    bool keep_alive() const noexcept { return keep_alive_; }
    bool head_request() const noexcept { return head_request_; }
    bool body_complete() const noexcept { return body_ == body_state::complete; }
    bool body_invalid() const noexcept { return body_ == body_state::invalid; }
    bool continue_pending() const noexcept { return continue_pending_; }
    bool disconnected() const noexcept { return disconnected_; }
    bool started() const noexcept { return response_ != response_state::none; }
    bool body_done() const noexcept { return response_ >= response_state::body_done; }
    bool completed() const noexcept { return response_ == response_state::complete; }
    bool head_committed() const noexcept { return head_committed_; }
    bool no_body() const noexcept { return no_body_; }
    bool trailers() const noexcept { return trailers_; }
    std::optional<std::uint64_t> const& length() const noexcept { return length_; }
    int status() const noexcept { return status_; }
    // Request body bytes the application received, response body bytes it sent.
    std::uint64_t received() const noexcept { return received_; }
    std::uint64_t sent() const noexcept { return body_bytes_; }

private:
    enum class body_state : unsigned char { unread, complete, invalid };
    enum class response_state : unsigned char { none, started, body_done, complete };

    std::optional<std::uint64_t> length_; // the response's content-length
    std::uint64_t sent_ = 0;              // body bytes counted against it
    std::uint64_t body_bytes_ = 0;        // response body bytes, all of them
    std::uint64_t received_ = 0;          // request body bytes
    int status_ = 0;
    int body_error_ = 400; // the answer to an invalid body: 400, or 413 for one too large
    body_state body_ = body_state::unread;
    response_state response_ = response_state::none;
    bool keep_alive_ = true;
    bool head_request_ = false;
    bool request_sent_ = false; // the application got an http.request
    bool continue_pending_ = false;
    bool disconnected_ = false;
    bool head_committed_ = false;
    bool no_body_ = false;  // HEAD, 204, 304: body events are taken and dropped
    bool trailers_ = false; // the application announced trailers
};

// Throws system_error(unexpected_event): `e` may not be sent `when` ("after ...").
[[noreturn]] CSERVE_DECL void throw_unexpected(event const& e, char const* when);

// Throws system_error(invalid_status) unless `status` is one an application may send as its
// response: a final status, 2xx to 5xx (RFC 9110 §15). 1xx are interim responses that the
// server sends itself (100 Continue, 101 for an upgrade it performs).
CSERVE_DECL void check_final_status(int status);

// The body of the server's own error response for a request it could not take.
CSERVE_DECL std::string_view error_text(int status) noexcept;

// A text/plain response with `body` (the server's own: errors, 503).
CSERVE_DECL http::response_start simple_response(int status, std::string_view body);

// Appends the access-log line of a response: client - "METHOD path?query HTTP/v" status reason.
CSERVE_DECL void append_access_line(std::string& line, std::string_view client, scope const& s, int status);

} // namespace cserve::detail

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/exchange.ipp>
#endif

#endif
