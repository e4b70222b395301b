// cserve/impl/websocket/io.ipp -- the WebSocket session's reading and writing
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_WEBSOCKET_IO_IPP
#define CSERVE_IMPL_WEBSOCKET_IO_IPP

#include <cserve/detail/websocket/session.hpp>
#include <cserve/detail/websocket/deflate.hpp>
#include <cserve/detail/websocket/frame.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/error.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>

namespace cserve::detail {

//------------------------------------------------------------------------------
// Reading: one pending read with a plain handler; whole messages are read by Beast from
// the buffer without waiting.

template <class Stream>
void
websocket_session<Stream>::start_read()
{
    auto& layer = ws_.next_layer();
    if (state_ != state::open) {
        reading_ = false;
        wake();
        return;
    }
    reading_ = true;
    auto want = std::max(ws_detail::read_block, layer.in.size());
    up_.stream.async_read_some(layer.in.prepare(want),
                                  [self = this->shared_from_this()](boost::system::error_code ec, std::size_t n) {
                                      self->on_read(ec, n);
                                  });
}

template <class Stream>
void
websocket_session<Stream>::on_read(boost::system::error_code ec, std::size_t n)
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
        deliver_disconnect(true);
        wake();
        return;
    }
    read_messages();
}

template <class Stream>
void
websocket_session<Stream>::read_messages()
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
        net::post(up_.stream.get_executor(), [self = this->shared_from_this()] { self->start_read(); });
    }
}

template <class Stream>
bool
websocket_session<Stream>::read_compressed(std::size_t size)
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

template <class Stream>
void
websocket_session<Stream>::fail(std::uint16_t code)
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
    deliver_disconnect(true);
    spawn(finish());
}

template <class Stream>
void
websocket_session<Stream>::on_pong() noexcept
{
    // The pinger waits for this pong: its wait ends now, not at the timeout.
    if (!awaiting_pong_)
        return;
    awaiting_pong_ = false;
    ping_timer_.cancel();
}

template <class Stream>
void
websocket_session<Stream>::on_stream_error(boost::system::error_code ec)
{
    namespace bws = boost::beast::websocket;
    if (ec == bws::error::closed) {
        // A close frame without a code is reported as 1005 (RFC 6455 §7.1.5).
        auto code = ws_.reason().code;
        close_code_ = code == bws::close_code::none ? 1005 : static_cast<int>(code);
        close_reason_ = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
    } else if (close_code_ == 1006) {
        // The connection failed: say why, as the close frame Beast sent said (a violation
        // found in a frame header or a close frame is 1002, as cserve's own reader says).
        if (ec == bws::error::message_too_big)
            close_code_ = 1009;
        else if (ec == bws::error::bad_frame_payload)
            close_code_ = 1007;
        else if (ec == bws::condition::protocol_violation)
            close_code_ = 1002;
    }
    state_ = state::closed;
    deliver_disconnect(true);
    spawn(finish());
}

template <class Stream>
task<>
websocket_session<Stream>::finish()
{
    // What Beast's teardown does, after the close frame has gone out: shut down our side
    // and read until the peer closes, for at most the lingering close's time.
    auto& layer = ws_.next_layer();
    while (layer.pending() && !write_failed_)
        co_await wake_wait();
    if (write_failed_ || up_.host.closed() || !layer.torn_down)
        co_return;
    boost::system::error_code ec;
    stream_ops<Stream>::shutdown_send(up_.stream, ec);
    if (ec)
        co_return;
    up_.host.linger();
    for (std::size_t total = 0; total < linger_limit;) {
        layer.in.clear();
        auto [rec, n] = co_await up_.stream.async_read_some(layer.in.prepare(16 * 1024), ws_detail::use_tuple);
        if (rec)
            break;
        total += n;
    }
}

template <class Stream>
void
websocket_session<Stream>::deliver(event e, bool in_place)
{
    if (std::holds_alternative<websocket::receive>(e))
        metrics_registry::add<std::uint64_t>(srv_.metrics_.local().websocket_messages_received, 1);
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
    net::post(up_.stream.get_executor(), [h = std::move(h), e = std::move(e)]() mutable {
        h(boost::system::error_code{}, std::move(e));
    });
}

template <class Stream>
void
websocket_session<Stream>::cancel_receive() noexcept
{
    if (!waiter_)
        return;
    auto h = std::move(*waiter_);
    waiter_.reset();
    net::post(up_.stream.get_executor(), [h = std::move(h)]() mutable {
        h(boost::system::error_code(net::error::operation_aborted), event{});
    });
}

template <class Stream>
void
websocket_session<Stream>::deliver_disconnect(bool in_place)
{
    if (disconnect_queued_)
        return;
    disconnect_queued_ = true;
    deliver(websocket::disconnect{close_code_, close_reason_}, in_place);
}

//------------------------------------------------------------------------------
// Writing: Beast writes through the layer; what the socket did not take is flushed here.

template <class Stream>
void
websocket_session<Stream>::write_message(bool text, std::string const& payload, boost::system::error_code& ec)
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

template <class Stream>
void
websocket_session<Stream>::flush()
{
    auto& layer = ws_.next_layer();
    layer.flushing = true;
    net::async_write(up_.stream, net::buffer(layer.out),
                     [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                         self->on_flushed(ec);
                     });
}

template <class Stream>
void
websocket_session<Stream>::on_flushed(boost::system::error_code ec)
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

template <class Stream>
task<>
websocket_session<Stream>::wait_until_flushed()
{
    auto& layer = ws_.next_layer();
    if (!layer.out.empty() && !layer.flushing)
        flush();
    while (layer.pending() && !write_failed_)
        co_await wake_wait();
    if (write_failed_)
        throw client_disconnected();
}

} // namespace cserve::detail

#endif
