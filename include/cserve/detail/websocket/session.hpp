// cserve/detail/websocket/session.hpp -- a WebSocket connection mapped to the event model
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_WEBSOCKET_SESSION_HPP
#define CSERVE_DETAIL_WEBSOCKET_SESSION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/detail/websocket/deflate.hpp>
#include <cserve/detail/websocket/upgrade.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

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

// What Beast's websocket::stream reads from and writes to: the connection's socket, with
// the bytes received but not yet handed to Beast, and the bytes Beast wrote that the
// socket did not take at once.
//
// The session uses Beast's synchronous read and write over it, without ever blocking:
// read_some hands out only the `avail` bytes the session found to hold whole frames, and
// write_some sends what the (non-blocking) socket takes and keeps the rest for the
// session to flush. Beast's asynchronous operations (the handshake, a closing handshake
// the server starts) pass through to the socket, reading what is buffered first.
template <class Stream>
class ws_layer {
public:
    using executor_type = typename Stream::executor_type;
    using next_layer_type = Stream;

    explicit ws_layer(Stream& s) noexcept : sock_(&s) {}

    executor_type get_executor() noexcept { return sock_->get_executor(); }
    Stream& next_layer() noexcept { return *sock_; }

    template <class MutableBuffers>
    std::size_t read_some(MutableBuffers const& b, boost::system::error_code& ec)
    {
        ec = {};
        auto n = net::buffer_copy(b, in.data(), avail);
        if (n == 0 && net::buffer_size(b) != 0) {
            ec = net::error::would_block; // cannot happen: avail covers what Beast reads
            return 0;
        }
        in.consume(n);
        avail -= n;
        return n;
    }

    template <class MutableBuffers>
    std::size_t read_some(MutableBuffers const& b)
    {
        boost::system::error_code ec;
        auto n = read_some(b, ec);
        if (ec)
            throw boost::system::system_error(ec);
        return n;
    }

    template <class ConstBuffers>
    std::size_t write_some(ConstBuffers const& b, boost::system::error_code& ec)
    {
        ec = {};
        auto const total = net::buffer_size(b);
        std::size_t n = 0;
        if constexpr (stream_ops<Stream>::try_io) {
            if (!flushing && out.empty()) {
                n = stream_ops<Stream>::try_write(*sock_, b, ec);
                if (ec)
                    return 0;
            }
        }
        if (n < total) {
            auto& to = flushing ? more : out;
            for (auto it = net::buffer_sequence_begin(b); it != net::buffer_sequence_end(b); ++it) {
                net::const_buffer piece(*it);
                if (n >= piece.size()) {
                    n -= piece.size();
                    continue;
                }
                to.append(static_cast<char const*>(piece.data()) + n, piece.size() - n);
                n = 0;
            }
        }
        return total;
    }

    template <class ConstBuffers>
    std::size_t write_some(ConstBuffers const& b)
    {
        boost::system::error_code ec;
        auto n = write_some(b, ec);
        if (ec)
            throw boost::system::system_error(ec);
        return n;
    }

    template <class MutableBuffers, class Handler>
    auto async_read_some(MutableBuffers const& b, Handler&& handler)
    {
        return net::async_initiate<Handler, void(boost::system::error_code, std::size_t)>(
            [this](auto h, MutableBuffers const& b) {
                if (in.size() == 0)
                    return sock_->async_read_some(b, std::move(h));
                auto n = net::buffer_copy(b, in.data());
                in.consume(n);
                avail = 0;
                net::post(sock_->get_executor(),
                          boost::beast::bind_front_handler(std::move(h), boost::system::error_code{}, n));
            },
            handler, b);
    }

    template <class ConstBuffers, class Handler>
    auto async_write_some(ConstBuffers const& b, Handler&& handler)
    {
        // Only Beast's handshakes write this way, with nothing of ours pending.
        return sock_->async_write_some(b, std::forward<Handler>(handler));
    }

    bool pending() const noexcept { return flushing || !out.empty(); }

    boost::beast::flat_buffer in; // received, not yet read by Beast
    std::size_t avail = 0;        // how much of `in` Beast may read now
    std::string out;              // written by Beast, not yet taken by the socket
    std::string more;             // written while `out` is being flushed
    bool flushing = false;
    bool torn_down = false; // Beast asked for the teardown: the session does it after flushing

private:
    Stream* sock_;
};

// Beast calls these when it closes the connection. The synchronous one only takes note:
// the close frame may still be waiting in `out`, so the session flushes and shuts down.
template <class Stream>
void
teardown(boost::beast::role_type, ws_layer<Stream>& s, boost::system::error_code& ec)
{
    s.torn_down = true;
    ec = {};
}

template <class Stream, class Handler>
void
async_teardown(boost::beast::role_type role, ws_layer<Stream>& s, Handler&& handler)
{
    s.torn_down = true;
    // Found by argument-dependent lookup too: the stream's own teardown (a TLS stream's).
    using boost::beast::websocket::async_teardown;
    async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
}

// Runs the application on a WebSocket scope once an HTTP connection has handed an upgrade
// request over (upgrade.hpp). Before "websocket.accept" the HTTP connection answers (403, or the
// application's denial response); after it, Beast's websocket stream does the framing.
//
// Once open, the session keeps one read pending (so pings are answered and a closing
// peer is noticed) with a plain handler, not a coroutine. When what arrived holds a
// whole message, the session (or, for fragmented uncompressed messages and close frames,
// Beast) reads it synchronously from the buffer and the message goes straight to an
// application waiting in receive() (resumed in place), or to a queue of at most
// ws_max_queue messages; a full queue stops the reading. Compressed messages are inflated
// and deflated here with zlib, not by Beast. send() writes a message as one frame
// synchronously too, and waits only when the socket did not take everything.
template <class Stream>
class websocket_session final : public std::enable_shared_from_this<websocket_session<Stream>>, public channel {
public:
    explicit websocket_session(upgrade<Stream> up);

    // Runs the application to its end and closes the WebSocket.
    task<> run();

    // Graceful shutdown: close an open WebSocket with 1012 (service restart).
    void begin_drain() noexcept;

    task<event> receive() override;
    task<> send(event e) override;

private:
    enum class state : unsigned char { connecting, denying, open, closed };
    using receive_handler = awaitable_completion<boost::system::error_code, event>;

    static task<> drain_close(std::shared_ptr<websocket_session> self);
    void stop_tasks() noexcept;
    task<> accept(websocket::accept& a);
    task<> close(std::uint16_t code, std::string reason);
    task<> pinger();
    task<> finish();
    void start_read();
    void on_read(boost::system::error_code ec, std::size_t n);
    void read_messages();
    bool read_compressed(std::size_t size);
    void fail(std::uint16_t code);
    void on_pong() noexcept;
    void on_stream_error(boost::system::error_code ec);
    void deliver(event e, bool in_place);
    void deliver_disconnect(bool in_place);
    void cancel_receive() noexcept;
    void write_message(bool text, std::string const& payload, boost::system::error_code& ec);
    void flush();
    void on_flushed(boost::system::error_code ec);
    task<> wait_until_flushed();
    task<> wake_wait();
    void wake() noexcept;
    void spawn(task<> t);
    void log_handshake(std::string_view outcome) const;

    upgrade<Stream> up_; // the stream and the request, from the HTTP connection
    server_impl& srv_;
    boost::beast::websocket::stream<ws_layer<Stream>> ws_;
    std::deque<event> queue_;               // messages the application has not received yet
    std::optional<receive_handler> waiter_; // the application, waiting in receive()
    net::steady_timer wake_;     // coroutines waiting for a flush, the reader or the tasks
    net::steady_timer ping_timer_;
    state state_ = state::connecting;
    bool connect_delivered_ = false;
    bool disconnect_queued_ = false;
    bool disconnect_delivered_ = false;
    bool awaiting_pong_ = false;
    bool reading_ = false;        // a read is pending on the socket
    bool reader_blocked_ = false; // the queue is full: reading waits for receive()
    bool write_failed_ = false;
    bool we_closed_ = false; // the server sent the close: its code is the one reported
    std::unique_ptr<ws_inflater> inflater_; // permessage-deflate was negotiated: the client's
    std::unique_ptr<ws_deflater> deflater_; // messages, and the server's (when compressed)
    int tasks_ = 0;          // pinger and finish() still running
    int close_code_ = 1006;
    std::string close_reason_;
    websocket_gauge open_gauge_; // counted as open from the handshake to the session's end
};

#if !defined(CSERVE_HEADER_ONLY)
extern template class websocket_session<socket_type>;
#endif

} // namespace cserve::detail

#endif
