// cserve/impl/websocket_session.ipp -- the WebSocket session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_WEBSOCKET_SESSION_IPP
#define CSERVE_IMPL_WEBSOCKET_SESSION_IPP

#include <cserve/detail/websocket_session.hpp>
#include <cserve/detail/websocket_deflate.hpp>
#include <cserve/detail/websocket_frame.hpp>
#include <cserve/detail/http1_connection.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/core/demangle.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <typeinfo>

namespace cserve::detail {

namespace ws_detail {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// How long a closing handshake may take before the socket is simply closed.
inline constexpr std::chrono::seconds close_timeout{5};

// The least a read asks the socket for: a 4 KiB message and its header in one read.
inline constexpr std::size_t read_block = 8 * 1024;

// How much a peer may send beyond the message size limit before a message is whole
// (control frames between the fragments of a message).
inline constexpr std::size_t control_slack = 64 * 1024;

} // namespace ws_detail

websocket_session::websocket_session(http1_connection& conn)
    : conn_(conn)
    , keep_(conn.shared_from_this())
    , srv_(conn.srv_)
    , ws_(conn.socket_)
    , wake_(conn.socket_.get_executor(), std::chrono::steady_clock::time_point::max())
    , ping_timer_(conn.socket_.get_executor())
{
}

void
websocket_session::log_handshake(std::string_view outcome) const
{
    if (!srv_.cfg_.access_log || !srv_.log_.enabled(log_level::info))
        return;
    std::string line = conn_.client_text();
    line += " - \"WebSocket ";
    line += conn_.scope().raw_path;
    if (!conn_.scope().query_string.empty()) {
        line += '?';
        line += conn_.scope().query_string;
    }
    line += "\" ";
    line += outcome;
    srv_.log_.log(log_level::info, line);
}

task<>
websocket_session::run()
{
    auto& s = conn_.scope();
    s.type = scope_type::websocket;
    s.scheme = "ws";
    s.extensions = {"websocket.http.response"};
    s.subprotocols.clear();
    for (auto const& [name, value] : s.headers) {
        if (name != "sec-websocket-protocol")
            continue;
        for_each_item(value, [&](std::string_view item) { s.subprotocols.push_back(item); });
    }

    if (srv_.trusted_)
        apply_proxy_headers(s, *srv_.trusted_);

    std::exception_ptr failure;
    try {
        co_await srv_.app_(s, cserve::receive{*this}, cserve::send{*this});
    } catch (...) {
        failure = std::current_exception();
    }
    if (conn_.closed_) {
        stop_tasks(); // nothing can be awaited any more: just let the reader and pinger go
        co_return;
    }
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (client_disconnected const&) {
            failure = nullptr; // the peer left: nothing to report
        } catch (std::exception const& e) {
            srv_.log_.log(log_level::error, "Exception in ASGI application\n" +
                                                boost::core::demangle(typeid(e).name()) + ": " + e.what());
        } catch (...) {
            srv_.log_.log(log_level::error, "Exception in ASGI application\nunknown exception");
        }
    }
    switch (state_) {
    case state::connecting:
        // Never accepted: 500 when the application failed, 403 when it simply returned.
        conn_.keep_alive_ = false;
        conn_.quiet_ = true;
        log_handshake(failure ? "500" : "403");
        co_await conn_.respond_simple(failure ? 500 : 403, failure ? "Internal Server Error" : "");
        state_ = state::closed;
        break;
    case state::denying:
        conn_.keep_alive_ = false;
        if (failure && !conn_.head_written_ && !conn_.disconnected_) {
            // The denial's head is still held: nothing went out, a 500 can replace it.
            log_handshake("500");
            co_await conn_.respond_simple(500, "Internal Server Error");
        }
        state_ = state::closed;
        break;
    case state::open:
        co_await close(failure ? 1011 : 1000, "");
        break;
    case state::closed:
        break;
    }
    stop_tasks();
    while (tasks_ > 0 || reading_)
        co_await wake_wait();
}

void
websocket_session::stop_tasks() noexcept
{
    ping_timer_.cancel();
    if (reading_ && state_ != state::open) {
        boost::system::error_code ec;
        conn_.socket_.cancel(ec);
    }
    wake();
}

task<>
websocket_session::wake_wait()
{
    // wake_ never expires: a wait ends when wake() cancels it.
    co_await wake_.async_wait(ws_detail::use_tuple);
}

void
websocket_session::wake() noexcept
{
    wake_.cancel();
}

void
websocket_session::spawn(task<> t)
{
    ++tasks_;
    net::co_spawn(conn_.socket_.get_executor(), std::move(t), [self = shared_from_this()](std::exception_ptr) {
        --self->tasks_;
        self->wake();
    });
}

void
websocket_session::begin_drain() noexcept
{
    if (state_ != state::open)
        return;
    net::co_spawn(conn_.socket_.get_executor(), drain_close(shared_from_this()), [](std::exception_ptr) {});
}

task<>
websocket_session::drain_close(std::shared_ptr<websocket_session> self)
{
    // The close frame waits for any message being written; a client that does not read
    // would hold it back forever. Give it close_timeout, then drop the connection.
    auto ex = self->conn_.socket_.get_executor();
    auto finished = std::make_shared<bool>(false);
    net::steady_timer deadline(ex, ws_detail::close_timeout);
    auto close_op = [](std::shared_ptr<websocket_session> s) -> task<> { co_await s->close(1012, ""); };
    net::co_spawn(ex, close_op(self), [finished, &deadline](std::exception_ptr) {
        *finished = true;
        deadline.cancel();
    });
    co_await deadline.async_wait(ws_detail::use_tuple);
    if (!*finished) {
        boost::system::error_code ec;
        self->conn_.socket_.close(ec);
        // The close operation ends with the socket; its handler cancels `deadline`, which
        // must outlive it.
        deadline.expires_at(std::chrono::steady_clock::time_point::max());
        while (!*finished)
            co_await deadline.async_wait(ws_detail::use_tuple);
    }
}

task<>
websocket_session::accept(websocket::accept& a)
{
    namespace bws = boost::beast::websocket;
    namespace bhttp = boost::beast::http;
    auto const& cfg = srv_.cfg_;
    check_headers(a.headers);
    if (a.subprotocol && !http1::valid_field_value(*a.subprotocol))
        throw boost::system::system_error(make_error_code(error::invalid_header), "invalid subprotocol");
    if (conn_.monitoring_)
        throw boost::system::system_error(make_error_code(error::unexpected_event),
                                          "'websocket.accept' sent while receive() is waiting");

    // Beast answers the handshake from a request message; rebuild it from the parsed head.
    bhttp::request<bhttp::empty_body> req;
    req.method_string(conn_.scope().method);
    req.target(conn_.head_info().target.in(conn_.head()));
    req.version(conn_.head_info().version);
    for (auto const& [name, value] : conn_.scope().headers)
        req.insert(name, value);

    ws_.set_option(bws::stream_base::decorator(
        [this, &cfg, sub = a.subprotocol, extra = a.headers](bws::response_type& res) {
            // Beast has answered the offer by now: an extension in the answer is the
            // compression both sides use.
            if (auto agreed = agreed_deflate(res)) {
                inflater_ = std::make_unique<ws_inflater>(
                    ws_deflate_params{agreed->client_max_window_bits, agreed->client_no_context_takeover});
                // zlib's raw deflate has no 256-byte window: when the client asked for
                // one, the server's messages go uncompressed, as RFC 7692 §6 allows.
                ws_deflate_params const sent{agreed->server_max_window_bits, agreed->server_no_context_takeover};
                bws::permessage_deflate const level; // Beast's compression level and memory
                if (sent.window_bits >= 9)
                    deflater_ = std::make_unique<ws_deflater>(sent, level.compLevel, level.memLevel);
            }
            res.erase(bhttp::field::server); // Beast's own
            auto const policy = head_policy::of(cfg);
            for_each_policy_header(policy, policy.date_header ? http_date() : std::string_view(),
                                   [&res](std::string_view name, std::string_view value) { res.insert(name, value); });
            if (sub)
                res.set(bhttp::field::sec_websocket_protocol, *sub);
            for (auto const& [name, value] : extra)
                res.insert(name, value);
        }));
    ws_.read_message_max(cfg.ws_max_size);
    bws::permessage_deflate deflate;
    deflate.server_enable = cfg.ws_per_message_deflate;
    ws_.set_option(deflate);
    bws::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = ws_detail::close_timeout;
    timeouts.idle_timeout = bws::stream_base::none();
    timeouts.keep_alive_pings = false;
    ws_.set_option(timeouts);
    ws_.control_callback([this](bws::frame_type kind, boost::beast::string_view) {
        if (kind == bws::frame_type::pong)
            on_pong();
    });

    // Frames the client sent right behind its handshake are in the connection's buffer.
    auto& layer = ws_.next_layer();
    if (auto& in = conn_.req_->in; in.size() > 0) {
        auto early = in.size();
        layer.in.commit(net::buffer_copy(layer.in.prepare(early), in.data()));
        in.consume(early);
    }

    auto [ec] = co_await ws_.async_accept(req, ws_detail::use_tuple);
    if (ec) {
        state_ = state::closed;
        conn_.disconnected_ = true;
        log_handshake("[failed]");
        throw client_disconnected();
    }
    state_ = state::open;
    log_handshake("[accepted]");

    net::post(conn_.socket_.get_executor(), [self = shared_from_this()] { self->read_messages(); });
    if (cfg.ws_ping_interval)
        spawn(pinger());
    if (conn_.draining_)
        begin_drain();
}

task<>
websocket_session::close(std::uint16_t code, std::string reason)
{
    if (state_ != state::open)
        co_return;
    state_ = state::closed;
    // The application hears the code it (or the server) closed with, as in uvicorn.
    we_closed_ = true;
    close_code_ = code;
    close_reason_ = reason;
    // The close frame goes after what is being sent; Beast's closing handshake then does
    // the reading, so the session's own read stands down first.
    while (ws_.next_layer().pending() && !write_failed_)
        co_await wake_wait();
    if (reading_) {
        boost::system::error_code ec;
        conn_.socket_.cancel(ec);
        while (reading_)
            co_await wake_wait();
    }
    if (!write_failed_ && !conn_.closed_) {
        // A peer that never answers is cut off by the stream's handshake timeout.
        co_await ws_.async_close(
            boost::beast::websocket::close_reason(static_cast<boost::beast::websocket::close_code>(code), reason),
            ws_detail::use_tuple);
    }
    conn_.disconnected_ = true;
    deliver_disconnect(false);
}

//------------------------------------------------------------------------------
// Reading: one pending read with a plain handler; whole messages are read by Beast from
// the buffer without waiting.

void
websocket_session::start_read()
{
    auto& layer = ws_.next_layer();
    if (state_ != state::open) {
        reading_ = false;
        wake();
        return;
    }
    reading_ = true;
    auto want = std::max(ws_detail::read_block, layer.in.size());
    conn_.socket_.async_read_some(layer.in.prepare(want),
                                  [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                                      self->on_read(ec, n);
                                  });
}

void
websocket_session::on_read(boost::system::error_code ec, std::size_t n)
{
    reading_ = false;
    ws_.next_layer().in.commit(n); // even when closing: Beast's closing handshake reads it
    if (state_ != state::open) {
        wake(); // close() is waiting for the read to stand down
        return;
    }
    if (ec) {
        // The peer went away without a closing handshake (or the ping timeout cut it off).
        state_ = state::closed;
        conn_.disconnected_ = true;
        deliver_disconnect(true);
        wake();
        return;
    }
    read_messages();
}

void
websocket_session::read_messages()
{
    auto& layer = ws_.next_layer();
    auto const& cfg = srv_.cfg_;
    while (state_ == state::open) {
        if (!waiter_ && queue_.size() >= cfg.ws_max_queue) {
            reader_blocked_ = true; // receive() starts reading again
            return;
        }
        auto data = layer.in.data();
        auto const* bytes = static_cast<unsigned char const*>(data.data());
        auto next = ws_detail::next_unit(bytes, data.size(), cfg.ws_max_size, inflater_ != nullptr);
        if (next.kind == ws_detail::unit::partial) {
            if (cfg.ws_max_size != 0 && data.size() > cfg.ws_max_size + ws_detail::control_slack) {
                // Control frames without end between the fragments of a message.
                spawn(close(1009, ""));
                return;
            }
            break;
        }
        if (next.kind == ws_detail::unit::message) {
            // Beast is between messages and stays there: the frame is taken off the stream
            // and unmasked here, without its buffer growing and copying in steps.
            bool const text = (bytes[0] & 0x0f) == 0x1;
            std::string payload(reinterpret_cast<char const*>(bytes) + next.head, next.size - next.head);
            ws_detail::unmask(payload.data(), payload.size(), bytes + next.head - 4);
            // Text that is not UTF-8 goes to Beast, which fails the connection with 1007.
            if (!text || valid_utf8(payload.data(), payload.size())) {
                layer.in.consume(next.size);
                websocket::receive message;
                if (text)
                    message.text = std::move(payload);
                else
                    message.bytes = std::move(payload);
                deliver(std::move(message), true);
                continue;
            }
        }
        if (next.kind == ws_detail::unit::ping || next.kind == ws_detail::unit::pong) {
            // A ping or pong, between messages or between the fragments of one: answered
            // now, then cut out of the stream (what precedes it moves up over it).
            auto* frame = const_cast<unsigned char*>(bytes) + next.offset;
            if (next.kind == ws_detail::unit::pong) {
                on_pong();
            } else {
                std::array<char, 125> payload;
                auto const len = next.size - next.head;
                std::memcpy(payload.data(), frame + next.head, len);
                ws_detail::unmask(payload.data(), len, frame + next.head - 4);
                boost::system::error_code ec;
                ws_.pong(boost::beast::websocket::ping_data(payload.data(), len), ec);
            }
            std::memmove(const_cast<unsigned char*>(bytes) + next.size, bytes, next.offset);
            layer.in.consume(next.size);
            if (!layer.out.empty() && !layer.flushing)
                flush();
            continue;
        }
        if (next.kind == ws_detail::unit::compressed) {
            if (!read_compressed(next.size))
                return;
            continue;
        }
        if (next.kind == ws_detail::unit::fail) {
            fail(next.code);
            return;
        }
        layer.in.consume(next.offset); // the fragments of a compressed message a close cuts off
        layer.avail = next.size - next.offset;
        std::string payload; // read in place, then moved into the event
        auto buffer = net::dynamic_buffer(payload);
        boost::system::error_code ec;
        ws_.read(buffer, ec);
        layer.avail = 0;
        if (!layer.out.empty() && !layer.flushing)
            flush(); // a pong, or the close frame of a failed connection
        if (ec) {
            on_stream_error(ec);
            return;
        }
        websocket::receive message;
        if (ws_.got_text())
            message.text = std::move(payload);
        else
            message.bytes = std::move(payload);
        deliver(std::move(message), true);
    }
    if (state_ == state::open && !reading_) {
        // Asio tries a read at once, which fails when the peer is still busy with our
        // answer; reading after the handlers already queued gives it that time instead.
        reading_ = true;
        net::post(conn_.socket_.get_executor(), [self = shared_from_this()] { self->start_read(); });
    }
}

bool
websocket_session::read_compressed(std::size_t size)
{
    // The frames are whole and checked (next_unit): unmask each payload in place and
    // inflate it, stopping as soon as the message passes the size limit.
    auto& layer = ws_.next_layer();
    auto* bytes = static_cast<unsigned char*>(layer.in.data().data());
    bool const text = (bytes[0] & 0x0f) == 0x1;
    std::string payload;
    auto result = ws_inflater::result::ok;
    for (std::size_t pos = 0; pos < size && result == ws_inflater::result::ok;) {
        ws_detail::frame_head h;
        ws_detail::read_head(bytes + pos, size - pos, h);
        auto* data = reinterpret_cast<char*>(bytes + pos + h.size);
        auto const len = static_cast<std::size_t>(h.len);
        ws_detail::unmask(data, len, bytes + pos + h.size - 4);
        result = inflater_->write(std::string_view(data, len), h.fin, payload, srv_.cfg_.ws_max_size);
        pos += h.size + len;
    }
    layer.in.consume(size);
    if (result == ws_inflater::result::too_big) {
        fail(1009); // RFC 6455 §7.4.1: a message too big to process
        return false;
    }
    // Data that is not DEFLATE, or text that is not UTF-8 (RFC 6455 §8.1): 1007.
    if (result != ws_inflater::result::ok ||
        (text && !valid_utf8(payload.data(), payload.size()))) {
        fail(1007);
        return false;
    }
    websocket::receive message;
    if (text)
        message.text = std::move(payload);
    else
        message.bytes = std::move(payload);
    deliver(std::move(message), true);
    return true;
}

void
websocket_session::fail(std::uint16_t code)
{
    // _Fail the WebSocket Connection_ (RFC 6455 §7.1.7) as Beast does: a close frame with
    // the code, then the TCP close once it is out (finish()), without waiting for the
    // peer's close frame.
    auto const head = make_frame_header(ws_opcode::close, false, 2);
    std::array<char, 2> const body{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
    std::array<net::const_buffer, 2> const frame{head.data(), net::buffer(body)};
    auto& layer = ws_.next_layer();
    boost::system::error_code ec;
    layer.write_some(frame, ec);
    if (!layer.out.empty() && !layer.flushing)
        flush();
    layer.torn_down = true;
    we_closed_ = true;
    close_code_ = code;
    close_reason_.clear();
    state_ = state::closed;
    conn_.disconnected_ = true;
    deliver_disconnect(true);
    spawn(finish());
}

void
websocket_session::on_pong() noexcept
{
    // The pinger waits for this pong: its wait ends now, not at the timeout.
    if (!awaiting_pong_)
        return;
    awaiting_pong_ = false;
    ping_timer_.cancel();
}

void
websocket_session::on_stream_error(boost::system::error_code ec)
{
    namespace bws = boost::beast::websocket;
    if (ec == bws::error::closed) {
        // A close frame without a code is reported as 1005 (RFC 6455 §7.1.5).
        auto code = ws_.reason().code;
        close_code_ = code == bws::close_code::none ? 1005 : static_cast<int>(code);
        close_reason_ = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
    } else if (close_code_ == 1006) {
        // The connection failed: say why, as the close frame Beast sent said.
        if (ec == bws::error::message_too_big)
            close_code_ = 1009;
        else if (ec == bws::error::bad_frame_payload)
            close_code_ = 1007;
    }
    state_ = state::closed;
    conn_.disconnected_ = true;
    deliver_disconnect(true);
    spawn(finish());
}

task<>
websocket_session::finish()
{
    // What Beast's teardown does, after the close frame has gone out: shut down our side
    // and read until the peer closes, for at most the lingering close's time.
    auto& layer = ws_.next_layer();
    while (layer.pending() && !write_failed_)
        co_await wake_wait();
    if (write_failed_ || conn_.closed_ || !layer.torn_down)
        co_return;
    boost::system::error_code ec;
    conn_.socket_.shutdown(net::socket_base::shutdown_send, ec);
    if (ec)
        co_return;
    srv_.deadlines_.set(conn_, deadline_kind::linger);
    for (std::size_t total = 0; total < http1::linger_limit;) {
        layer.in.clear();
        auto [rec, n] = co_await conn_.socket_.async_read_some(layer.in.prepare(16 * 1024), ws_detail::use_tuple);
        if (rec)
            break;
        total += n;
    }
}

void
websocket_session::deliver(event e, bool in_place)
{
    if (!waiter_) {
        queue_.push_back(std::move(e));
        return;
    }
    auto h = std::move(*waiter_);
    waiter_.reset();
    if (in_place) {
        h(boost::system::error_code{}, std::move(e)); // the application runs until it waits again
        return;
    }
    net::post(conn_.socket_.get_executor(), [h = std::move(h), e = std::move(e)]() mutable {
        h(boost::system::error_code{}, std::move(e));
    });
}

void
websocket_session::cancel_receive() noexcept
{
    if (!waiter_)
        return;
    auto h = std::move(*waiter_);
    waiter_.reset();
    net::post(conn_.socket_.get_executor(), [h = std::move(h)]() mutable {
        h(boost::system::error_code(net::error::operation_aborted), event{});
    });
}

void
websocket_session::deliver_disconnect(bool in_place)
{
    if (disconnect_queued_)
        return;
    disconnect_queued_ = true;
    deliver(websocket::disconnect{close_code_, close_reason_}, in_place);
}

//------------------------------------------------------------------------------
// Writing: Beast writes through the layer; what the socket did not take is flushed here.

void
websocket_session::write_message(bool text, std::string const& payload, boost::system::error_code& ec)
{
    // A message is one unmasked frame with Beast's header, written in order with Beast's
    // control frames through the same layer; compressed, its payload is the whole message
    // deflated, with RSV1 set (RFC 7692 §6.1).
    std::string compressed;
    if (deflater_ && !deflater_->write(payload, compressed)) {
        ec = make_error_code(boost::system::errc::not_enough_memory);
        return;
    }
    auto const& body = deflater_ ? compressed : payload;
    auto const head = make_frame_header(text ? ws_opcode::text : ws_opcode::binary, deflater_ != nullptr, body.size());
    std::array<net::const_buffer, 2> const frame{head.data(), net::buffer(body)};
    ws_.next_layer().write_some(frame, ec);
}

void
websocket_session::flush()
{
    auto& layer = ws_.next_layer();
    layer.flushing = true;
    net::async_write(conn_.socket_, net::buffer(layer.out),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         self->on_flushed(ec);
                     });
}

void
websocket_session::on_flushed(boost::system::error_code ec)
{
    auto& layer = ws_.next_layer();
    layer.out.clear();
    if (ec) {
        write_failed_ = true;
        layer.more.clear();
        layer.flushing = false;
        wake();
        return;
    }
    layer.out.swap(layer.more);
    if (!layer.out.empty()) {
        flush();
        return;
    }
    layer.flushing = false;
    wake();
}

task<>
websocket_session::wait_until_flushed()
{
    auto& layer = ws_.next_layer();
    if (!layer.out.empty() && !layer.flushing)
        flush();
    while (layer.pending() && !write_failed_)
        co_await wake_wait();
    if (write_failed_)
        throw client_disconnected();
}

task<>
websocket_session::pinger()
{
    // A ping every interval, measured from ping to ping; the timeout runs from each ping,
    // and its pong ends the wait (as Python websockets' keepalive does), so answering
    // pings never stretches the interval.
    auto const& cfg = srv_.cfg_;
    auto next = std::chrono::steady_clock::now() + *cfg.ws_ping_interval;
    while (state_ == state::open) {
        ping_timer_.expires_at(next);
        auto [ec] = co_await ping_timer_.async_wait(ws_detail::use_tuple);
        if (ec || state_ != state::open)
            co_return;
        auto const sent = std::chrono::steady_clock::now();
        next = sent + *cfg.ws_ping_interval;
        boost::system::error_code pec;
        ws_.ping({}, pec);
        if (!pec && !ws_.next_layer().out.empty() && !ws_.next_layer().flushing)
            flush();
        if (pec || !cfg.ws_ping_timeout)
            continue;
        awaiting_pong_ = true; // on_pong() cancels only this wait
        ping_timer_.expires_at(sent + *cfg.ws_ping_timeout);
        auto [tec] = co_await ping_timer_.async_wait(ws_detail::use_tuple);
        if (state_ != state::open)
            co_return;
        if (!awaiting_pong_)
            continue; // the pong came (on_pong() cancelled the wait)
        if (tec)
            co_return; // stopped
        // A reader stopped by a full queue cannot see the pong: the client is not at fault.
        if (reader_blocked_) {
            awaiting_pong_ = false;
            continue;
        }
        // The peer is gone or stuck: waiting for its side of a closing handshake would
        // keep the application waiting too. Drop the connection; the failed read then
        // reports 1011 at once.
        srv_.log_.log(log_level::info, "WebSocket keepalive ping timeout: closing with 1011");
        we_closed_ = true;
        close_code_ = 1011;
        close_reason_ = "keepalive ping timeout";
        boost::system::error_code ignored;
        conn_.socket_.close(ignored);
        co_return;
    }
}

task<event>
websocket_session::receive()
{
    if (!connect_delivered_) {
        connect_delivered_ = true;
        co_return websocket::connect{};
    }
    if (state_ == state::connecting || state_ == state::denying) {
        // Nothing arrives before the handshake but the client leaving.
        co_await conn_.wait_disconnect();
        co_return websocket::disconnect{1006, {}};
    }
    if (disconnect_delivered_)
        co_return websocket::disconnect{close_code_, close_reason_};
    if (reader_blocked_ && state_ == state::open && queue_.size() <= srv_.cfg_.ws_max_queue / 2 + 1) {
        // The queue has room again: read on (after this receive has its message).
        reader_blocked_ = false;
        net::post(conn_.socket_.get_executor(), [self = shared_from_this()] { self->read_messages(); });
    }
    event e;
    if (!queue_.empty()) {
        e = std::move(queue_.front());
        queue_.pop_front();
    } else {
        if (waiter_)
            throw boost::system::system_error(make_error_code(error::unexpected_event),
                                              "receive() called while another receive() is waiting");
        try {
            e = co_await net::async_initiate<decltype(net::use_awaitable), void(boost::system::error_code, event)>(
                [this](receive_handler h) {
                    auto slot = net::get_associated_cancellation_slot(h);
                    waiter_.emplace(std::move(h));
                    if (slot.is_connected())
                        slot.assign([this](net::cancellation_type) { cancel_receive(); });
                },
                net::use_awaitable);
        } catch (boost::system::system_error const&) {
            // Cancelled (app.hpp): the application is going away or gave up waiting;
            // nothing was taken from the connection, and the next receive() gets it.
            throw;
        }
    }
    if (std::holds_alternative<websocket::disconnect>(e)) {
        disconnect_delivered_ = true;
        co_return websocket::disconnect{close_code_, close_reason_};
    }
    co_return e;
}

task<>
websocket_session::send(event e)
{
    if (auto* a = std::get_if<websocket::accept>(&e)) {
        if (state_ != state::connecting)
            http1::throw_unexpected(e, "after the handshake");
        if (conn_.disconnected_ || conn_.closed_)
            throw client_disconnected();
        co_await accept(*a);
    } else if (auto* m = std::get_if<websocket::send>(&e)) {
        if (state_ == state::connecting || state_ == state::denying)
            http1::throw_unexpected(e, "before 'websocket.accept'");
        if (m->text.has_value() == m->bytes.has_value())
            throw boost::system::system_error(make_error_code(error::unexpected_event),
                                              "'websocket.send' needs exactly one of bytes and text");
        if (state_ != state::open || write_failed_)
            throw client_disconnected();
        auto const& payload = m->text ? *m->text : *m->bytes;
        boost::system::error_code ec;
        write_message(m->text.has_value(), payload, ec);
        if (ec) {
            write_failed_ = true;
            throw client_disconnected();
        }
        // Returns once the socket has taken the message: a client that does not read
        // holds the application back, and memory stays bounded.
        if (ws_.next_layer().pending())
            co_await wait_until_flushed();
    } else if (auto* c = std::get_if<websocket::close>(&e)) {
        if (state_ == state::connecting) {
            // Closing before the handshake refuses it (ASGI): HTTP 403.
            state_ = state::closed;
            conn_.keep_alive_ = false;
            conn_.quiet_ = true;
            log_handshake("403");
            co_await conn_.respond_simple(403, "");
        } else if (state_ == state::open) {
            // The close frame's body is the code and at most 123 bytes of UTF-8 (RFC 6455
            // §5.5, §5.5.1): refuse rather than send a code or reason the peer must reject.
            if (!ws_detail::valid_close_code(c->code) || c->reason.size() > 123 ||
                !valid_utf8(c->reason.data(), c->reason.size()))
                throw boost::system::system_error(make_error_code(error::invalid_close),
                                                  "'websocket.close' with code " + std::to_string(c->code));
            co_await close(static_cast<std::uint16_t>(c->code), c->reason);
        } else {
            http1::throw_unexpected(e, "after the connection closed");
        }
    } else if (std::holds_alternative<http::response_start>(e) || std::holds_alternative<http::response_body>(e)) {
        // The "websocket.http.response" extension: a denial response of the app's own.
        if (state_ == state::connecting && std::holds_alternative<http::response_start>(e)) {
            // Checked before the denial begins: an invalid status leaves the handshake
            // unanswered, and the application's failure then becomes a 500.
            http1::check_final_status(std::get<http::response_start>(e).status);
            state_ = state::denying;
            conn_.keep_alive_ = false;
            conn_.quiet_ = true;
            log_handshake(std::to_string(std::get<http::response_start>(e).status));
        } else if (state_ != state::denying) {
            http1::throw_unexpected(e, "on an accepted WebSocket");
        }
        co_await conn_.send(std::move(e));
        if (conn_.complete_)
            state_ = state::closed;
    } else {
        http1::throw_unexpected(e, "on a WebSocket connection");
    }
}

} // namespace cserve::detail

#endif
