// cserve/impl/http1/response.ipp -- the HTTP/1.1 response: send(), framing, writing, errors
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_RESPONSE_IPP
#define CSERVE_IMPL_HTTP1_RESPONSE_IPP

#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/error.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>

#include <array>
#include <charconv>
#include <utility>

namespace cserve::detail {

namespace http1 {

inline void
append_hex(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
    out.append(buf, r.ptr);
}

} // namespace http1

//------------------------------------------------------------------------------
// The application's send().

template <class Stream>
task<>
http1_connection<Stream>::send(event e)
{
    if (closed_ || req_->x.disconnected())
        throw client_disconnected();
    while (writing_) {
        // Only a 100 Continue can be in flight here, when the application receives and
        // sends from two coroutines at once.
        net::steady_timer wait(stream_.get_executor(), clock::time_point::max());
        struct restore {
            net::steady_timer*& waiter;
            net::steady_timer* outer;
            ~restore() { waiter = outer; }
        } guard{write_waiter_, std::exchange(write_waiter_, &wait)};
        co_await wait.async_wait(http1::use_tuple);
    }
    req_->x.check_send(e);
    if (auto* start = std::get_if<http::response_start>(&e)) {
        start_response(*start);
    } else if (auto* body = std::get_if<http::response_body>(&e)) {
        // write_body inlined: one coroutine frame fewer on every response.
        std::string_view tail;
        if (prepare_body(body->body, body->more_body, tail)) {
            auto const bytes = req_->x.no_body() ? net::const_buffer() : net::buffer(body->body);
            std::size_t done = 0;
            if (!write_now(bytes, tail, done))
                co_await write_rest(bytes, tail, done);
        } else if (++unwritten_sends_ % http1::unwritten_send_run == 0) {
            co_await pause_unwritten();
        }
        if (req_->x.body_done() && !req_->x.trailers())
            complete_response();
    } else if (auto* hint = std::get_if<http::response_early_hint>(&e)) {
        co_await write_early_hint(*hint);
    } else {
        co_await write_trailers(std::get<http::response_trailers>(e));
    }
}

template <class Stream>
task<>
http1_connection<Stream>::write_early_hint(http::response_early_hint const& hint)
{
    // RFC 8297: a 103 before the final response, never to an HTTP/1.0 client (RFC 9110 §15.2).
    if (req_->head_info.version == 10 || hint.links.empty())
        co_return;
    std::string msg = "HTTP/1.1 103 Early Hints\r\n";
    for (auto const& link : hint.links) {
        msg += "link: ";
        msg += link;
        msg += "\r\n";
    }
    msg += "\r\n";
    writing_ = true;
    auto [ec, n] = co_await net::async_write(stream_, net::buffer(msg), http1::use_tuple);
    writing_ = false;
    if (write_waiter_)
        write_waiter_->cancel();
    if (ec) {
        req_->x.client_gone();
        throw client_disconnected();
    }
}

template <class Stream>
void
http1_connection<Stream>::start_response(http::response_start& s)
{
    auto const& cfg = srv_.cfg_;
    auto const f = req_->x.start(s, draining_);
    bool const http10 = req_->head_info.version == 10;
    if (!req_->x.body_complete()) {
        // An unread body bigger than what is drained afterwards: say now that this
        // connection ends with the response.
        auto remaining = req_->parser->content_length_remaining();
        if (remaining && *remaining > http1::discard_limit)
            req_->x.end_connection();
    }
    chunked_ = false;
    trailer_open_ = false;
    bool add_chunked = false;
    if (f.bodiless || f.length) {
        // RFC 9110 §8.6: no Content-Length or Transfer-Encoding is added to 204.
    } else if (!http10) {
        chunked_ = true;
        add_chunked = !f.chunked;
    } else if (!req_->x.head_request()) {
        req_->x.end_connection(); // HTTP/1.0 without a length: the body ends with the connection
    }
    // Trailers travel only in a chunked body; otherwise they are accepted and dropped.

    req_->out.clear();
    encode_head(req_->out, s.status, s.headers, head_policy::of(cfg), cfg.date_header ? http_date() : std::string_view());
    std::string_view end = "\r\n";
    if (!f.connection) {
        if (!req_->x.keep_alive())
            end = "connection: close\r\n\r\n";
        else if (http10)
            end = "connection: keep-alive\r\n\r\n";
    }
    framing_pending_ = false;
    if (add_chunked && !req_->x.no_body()) {
        // Decided by the first body event: a complete body gets a content-length. The
        // framing header and what follows it are appended then.
        framing_pending_ = true;
        req_->head_end = end;
    } else {
        if (add_chunked)
            req_->out += "transfer-encoding: chunked\r\n";
        req_->out += end;
    }
}

template <class Stream>
bool
http1_connection<Stream>::prepare_body(std::string const& body, bool more, std::string_view& tail)
{
    if (framing_pending_) {
        // The whole body in one event: it gets a content-length instead of chunks.
        framing_pending_ = false;
        if (!more && !req_->x.trailers()) {
            chunked_ = false;
            req_->x.set_length(body.size());
            req_->out += "content-length: ";
            append_decimal(req_->out, body.size());
            req_->out += "\r\n";
        } else {
            req_->out += "transfer-encoding: chunked\r\n";
        }
        req_->out += req_->head_end;
    }
    bool const committed = req_->x.head_committed();
    req_->x.body(body.size(), more, srv_.log_);
    if (req_->x.no_body()) {
        // The head alone, with the first body event: no body bytes would ever bring it.
        return !more || !committed;
    }
    if (chunked_) {
        if (!body.empty()) {
            http1::append_hex(req_->out, body.size());
            req_->out += "\r\n";
            tail = "\r\n";
        }
        if (!more && !req_->x.trailers())
            tail = body.empty() ? std::string_view("0\r\n\r\n") : std::string_view("\r\n0\r\n\r\n");
        return !(req_->out.empty() && tail.empty());
    }
    return !(body.empty() && more); // nothing to write yet: the head goes out with the first bytes
}

template <class Stream>
task<>
http1_connection<Stream>::write_body(std::string const& body, bool more)
{
    std::string_view tail;
    if (prepare_body(body, more, tail)) {
        auto const bytes = req_->x.no_body() ? net::const_buffer() : net::buffer(body);
        std::size_t done = 0;
        if (!write_now(bytes, tail, done))
            co_await write_rest(bytes, tail, done);
    }
    if (req_->x.body_done() && !req_->x.trailers())
        complete_response();
}

template <class Stream>
bool
http1_connection<Stream>::write_now(net::const_buffer body, std::string_view tail, std::size_t& done)
{
    // Most responses fit in the socket's send buffer: one write that does not wait, no
    // suspension. Only what does not fit waits for the stream (write_rest).
    std::array<net::const_buffer, 3> buffers{net::buffer(req_->out), body, net::buffer(tail)};
    if (req_->x.commit()) {
        // The response is committed: logged now, once (a started response replaced by an
        // error response before this point is logged as the error response).
        access_log();
    }
    done = 0;
    if constexpr (ops::try_io) {
        boost::system::error_code ec;
        done = ops::try_write(stream_, buffers, ec);
        if (ec || done == net::buffer_size(buffers)) {
            finish_write(ec);
            return true;
        }
    }
    return false;
}

template <class Stream>
task<>
http1_connection<Stream>::write_rest(net::const_buffer body, std::string_view tail, std::size_t done)
{
    std::array<net::const_buffer, 3> buffers{net::buffer(req_->out), body, net::buffer(tail)};
    boost::beast::buffers_suffix<std::array<net::const_buffer, 3>> rest(buffers);
    rest.consume(done);
    // The client takes what it reads: each write that waits has timeout_write to make progress.
    boost::system::error_code ec;
    while (net::buffer_size(rest) > 0) {
        srv_.deadlines_.set(*this, deadline_kind::write);
        auto [wec, n] = co_await stream_.async_write_some(rest, http1::use_tuple);
        if (wec) {
            ec = wec;
            break;
        }
        rest.consume(n);
    }
    srv_.deadlines_.clear(*this);
    if (ec && timed_out_)
        srv_.log_.log(log_level::warning, "Client " + client_text() + " read nothing of its response for --timeout-write: closing");
    finish_write(ec);
}

template <class Stream>
task<>
http1_connection<Stream>::pause_unwritten()
{
    // send() calls that write nothing do not suspend: without this an application streaming
    // a body that is discarded (HEAD, 204, 304) or empty pieces would hold the loop for ever,
    // and every other connection, timer and signal with it. Its own frame: send()'s stays
    // small for the writes it mostly does.
    co_await net::post(stream_.get_executor(), net::use_awaitable);
    if (closed_ || req_->x.disconnected())
        throw client_disconnected();
    // Nor is a client that left noticed by a write: look at the socket.
    boost::system::error_code ec;
    bool read = false;
    if constexpr (ops::try_io) {
        if (req_->x.body_complete() && !monitoring_ && req_->in.size() < http1::body_chunk) {
            // Nobody else reads now: what arrives is the next pipelined request, kept as
            // wait_disconnect() keeps it.
            auto n = ops::try_read(stream_, req_->in.prepare(4096), ec);
            if (!ec)
                req_->in.commit(n);
            read = true;
        }
    }
    if (!read) {
        // The body is still unread (the application may be reading it), the buffer is full,
        // or the stream cannot be read without waiting: a peek only.
        ops::peek(stream_, ec);
    }
    if (!ec || ec == net::error::would_block || ec == net::error::try_again)
        co_return;
    req_->x.client_gone();
    if (monitoring_)
        monitor_.emit(net::cancellation_type::total);
    throw client_disconnected();
}

template <class Stream>
void
http1_connection<Stream>::finish_write(boost::system::error_code ec)
{
    req_->out.clear();
    if (ec) {
        req_->x.client_gone();
        if (monitoring_)
            monitor_.emit(net::cancellation_type::total);
        throw client_disconnected();
    }
}

template <class Stream>
task<>
http1_connection<Stream>::write_trailers(http::response_trailers const& t)
{
    bool const write = chunked_ && !req_->x.no_body();
    check_headers(t.headers, "trailer");
    if (write) {
        if (!trailer_open_) {
            req_->out += "0\r\n";
            trailer_open_ = true;
        }
        for (auto const& [name, value] : t.headers) {
            req_->out += name;
            req_->out += ": ";
            req_->out += value;
            req_->out += "\r\n";
        }
    }
    if (t.more_trailers) {
        if (++unwritten_sends_ % http1::unwritten_send_run == 0)
            co_await pause_unwritten();
        co_return;
    }
    if (write) {
        req_->out += "\r\n";
        co_await write_out({}, {});
    }
    complete_response();
}

template <class Stream>
task<>
http1_connection<Stream>::write_out(net::const_buffer body, std::string_view tail)
{
    std::size_t done = 0;
    if (!write_now(body, tail, done))
        co_await write_rest(body, tail, done);
}

template <class Stream>
void
http1_connection<Stream>::complete_response() noexcept
{
    req_->x.complete();
    if (monitoring_)
        monitor_.emit(net::cancellation_type::total);
}

template <class Stream>
void
http1_connection<Stream>::access_log() const
{
    if (quiet_ || !srv_.cfg_.access_log || !srv_.log_.enabled(log_level::info))
        return;
    std::string line;
    append_access_line(line, client_text(), req_->scope, req_->x.status());
    srv_.log_.log(log_level::info, line);
}

//------------------------------------------------------------------------------
// What the server answers itself.

template <class Stream>
task<>
http1_connection<Stream>::after_app(std::exception_ptr failure)
{
    // What is left when the application failed, or returned without a complete response.
    auto ending = req_->x.finish(std::move(failure), srv_.log_);
    if (ending.status != 0)
        co_await respond_simple(ending.status, ending.body);
}

template <class Stream>
task<>
http1_connection<Stream>::respond_simple(int status, std::string_view body)
{
    if (req_->x.disconnected()) {
        req_->x.end_connection();
        co_return;
    }
    auto start = simple_response(status, body);
    if (req_->x.body_invalid())
        req_->x.end_connection();
    start_response(start);
    try {
        co_await write_body(std::string(body), false);
    } catch (std::exception const&) {
        req_->x.end_connection();
    }
}

template <class Stream>
task<>
http1_connection<Stream>::write_error(int status)
{
    if (status == 400 || status == 501 || status == 505)
        srv_.log_.log(log_level::warning, "Invalid HTTP request received.");
    auto body = error_text(status);
    req_->out.clear();
    auto const policy = head_policy::of(srv_.cfg_);
    encode_head(req_->out, status, {}, policy, policy.date_header ? http_date() : std::string_view());
    req_->out += "content-type: text/plain; charset=utf-8\r\ncontent-length: ";
    append_decimal(req_->out, body.size());
    req_->out += "\r\nconnection: close\r\n\r\n";
    req_->out += body;
    req_->x.end_connection();
    auto [ec, n] = co_await net::async_write(stream_, net::buffer(req_->out), http1::use_tuple);
    if (ec)
        req_->x.client_gone();
    else
        req_->x.refused(status, body.size());
    req_->out.clear();
}

} // namespace cserve::detail

#endif
