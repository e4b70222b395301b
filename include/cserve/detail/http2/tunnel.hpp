// cserve/detail/http2/tunnel.hpp -- an HTTP/2 stream as the byte stream of a WebSocket (RFC 8441)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP2_TUNNEL_HPP
#define CSERVE_DETAIL_HTTP2_TUNNEL_HPP

#include <cserve/detail/config.hpp>

#if CSERVE_HTTP2

#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/empty_body.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

// A WebSocket over HTTP/2 (RFC 8441) is the same RFC 6455 framing carried in the DATA frames of
// one stream, opened by an extended CONNECT and answered with a 200. The WebSocket session
// (websocket/session.hpp) runs unchanged over an http2_tunnel: an Asio byte stream whose reads
// take the stream's DATA (opening its window as they do) and whose writes become DATA. Beast's
// handshake is answered from a request rebuilt in HTTP/1.1 form; its 101 response, written
// through the tunnel, becomes the stream's HEADERS (200, with the extension and subprotocol
// Beast agreed to).
namespace cserve::detail {

namespace net = boost::asio;

// What the tunnel asks of its HTTP/2 stream (http2_stream implements it). Calls are made on
// the connection's executor, never from inside nghttp2.
class http2_tunnel_backend {
public:
    // Copies what has arrived into `b` and opens the window by as much; 0 when nothing has.
    virtual std::size_t tunnel_read(net::mutable_buffer b) = 0;
    // The client ended its side of the stream and everything it sent has been read.
    virtual bool tunnel_read_end() const noexcept = 0;
    // The stream was reset, or the connection is gone.
    virtual bool tunnel_gone() const noexcept = 0;
    // Queues bytes as DATA.
    virtual void tunnel_write(std::string_view bytes) = 0;
    // Whether nghttp2 still holds queued bytes (the peer's window is shut), and how many
    // bytes it has taken so far (progress, for timeout_write).
    virtual bool tunnel_writing() const noexcept = 0;
    virtual std::uint64_t tunnel_taken() const noexcept = 0;
    // The response's HEADERS: 200 opens the tunnel; any other status ends the stream.
    virtual void tunnel_respond(int status, header_list headers) = 0;
    // END_STREAM after what was written (the WebSocket's closing handshake is done).
    virtual void tunnel_end() noexcept = 0;
    // RST_STREAM(CANCEL): the WebSocket is dropped; the connection goes on.
    virtual void tunnel_reset() noexcept = 0;
    // The peer took nothing of what was written for timeout_write.
    virtual void tunnel_stalled() noexcept = 0;

protected:
    ~http2_tunnel_backend() = default;
};

// An HTTP/2 stream seen as an AsyncReadStream and AsyncWriteStream. One read and one write
// may be pending at a time, as on a socket.
class http2_tunnel : public std::enable_shared_from_this<http2_tunnel> {
public:
    using executor_type = net::any_io_executor;
    using lowest_layer_type = http2_tunnel;

    http2_tunnel(http2_tunnel_backend& b, executor_type ex, bool secure, tls_source const* tls,
                 std::chrono::steady_clock::duration timeout_write)
        : b_(&b)
        , ex_(std::move(ex))
        , stall_(ex_)
        , linger_(ex_)
        , timeout_write_(timeout_write)
        , secure_(secure)
        , tls_(tls)
    {
    }

    executor_type get_executor() const noexcept { return ex_; }
    http2_tunnel& lowest_layer() noexcept { return *this; }
    bool secure() const noexcept { return secure_; }
    tls_source const* tls() const noexcept { return tls_; }
    bool open() const noexcept { return open_; }

    // Cancels the pending read (a socket's cancel(): the WebSocket session stops its reader).
    void
    cancel(boost::system::error_code& ec) noexcept
    {
        ec = {};
        if (reader_)
            complete_read(net::error::operation_aborted, 0);
        if (writer_)
            complete_write(net::error::operation_aborted);
    }

    // Drops the WebSocket: the stream is reset and pending operations fail.
    void
    close(boost::system::error_code& ec) noexcept
    {
        ec = {};
        if (closed_)
            return;
        closed_ = true;
        stall_.cancel();
        linger_.cancel();
        if (b_)
            b_->tunnel_reset();
        cancel(ec);
    }

    // Our side is done: END_STREAM after what was written.
    void
    shutdown_send() noexcept
    {
        if (!closed_ && !ended_ && b_) {
            ended_ = true;
            b_->tunnel_end();
        }
    }

    // What the peer still sends after our END_STREAM is read for at most `d`.
    void
    linger(std::chrono::steady_clock::duration d)
    {
        linger_.expires_after(d);
        linger_.async_wait([w = weak_from_this()](boost::system::error_code ec) {
            if (ec)
                return;
            if (auto t = w.lock(); t && t->reader_)
                t->complete_read(net::error::timed_out, 0);
        });
    }

    // The stream has news: data, its end, a reset, or nghttp2 took what was written. Called
    // from nghttp2's callbacks too: the pending operations look at it after they return.
    void
    wake() noexcept
    {
        if (wake_posted_ || (!reader_ && !writer_))
            return;
        wake_posted_ = true;
        net::post(ex_, [w = weak_from_this()] {
            if (auto t = w.lock()) {
                t->wake_posted_ = false;
                t->poll();
            }
        });
    }

private:
    void
    poll() noexcept
    {
        if (reader_)
            try_read();
        if (writer_ && (!b_ || b_->tunnel_gone() || !b_->tunnel_writing())) {
            bool const gone = !b_ || b_->tunnel_gone();
            complete_write(gone ? boost::system::error_code(net::error::connection_reset) : boost::system::error_code{});
        }
    }

public:
    // The stream is gone: nothing is asked of it any more.
    void
    detach() noexcept
    {
        b_ = nullptr;
        closed_ = true;
        stall_.cancel();
        linger_.cancel();
        boost::system::error_code ec;
        cancel(ec);
    }

    template <class MutableBuffers, class Handler>
    auto
    async_read_some(MutableBuffers const& buffers, Handler&& handler)
    {
        return net::async_initiate<Handler, void(boost::system::error_code, std::size_t)>(
            [this](auto h, MutableBuffers const& buffers) {
                net::mutable_buffer first;
                for (auto it = net::buffer_sequence_begin(buffers); it != net::buffer_sequence_end(buffers); ++it)
                    if (net::mutable_buffer b(*it); b.size() != 0) {
                        first = b;
                        break;
                    }
                if (reader_) {
                    post(std::move(h), net::error::in_progress, 0);
                    return;
                }
                reader_.emplace(std::move(h));
                read_into_ = first;
                try_read();
            },
            handler, buffers);
    }

    template <class ConstBuffers, class Handler>
    auto
    async_write_some(ConstBuffers const& buffers, Handler&& handler)
    {
        return net::async_initiate<Handler, void(boost::system::error_code, std::size_t)>(
            [this](auto h, ConstBuffers const& buffers) {
                auto const total = net::buffer_size(buffers);
                if (writer_) {
                    post(std::move(h), net::error::in_progress, 0);
                    return;
                }
                if (closed_ || !b_ || b_->tunnel_gone() || ended_) {
                    post(std::move(h), net::error::connection_reset, 0);
                    return;
                }
                for (auto it = net::buffer_sequence_begin(buffers); it != net::buffer_sequence_end(buffers); ++it) {
                    net::const_buffer piece(*it);
                    std::string_view bytes(static_cast<char const*>(piece.data()), piece.size());
                    if (!open_)
                        handshake(bytes);
                    else if (!bytes.empty())
                        b_->tunnel_write(bytes);
                }
                if (!open_ || !b_->tunnel_writing()) {
                    post(std::move(h), {}, total);
                    return;
                }
                // The peer's window is shut: the write completes when nghttp2 takes the bytes,
                // or the connection is dropped after timeout_write without progress.
                writer_.emplace(std::move(h));
                write_size_ = total;
                mark_ = b_->tunnel_taken();
                arm_stall();
            },
            handler, buffers);
    }

private:
    using handler_type = net::any_completion_handler<void(boost::system::error_code, std::size_t)>;

    void
    post(handler_type h, boost::system::error_code ec, std::size_t n)
    {
        net::post(ex_, boost::beast::bind_front_handler(std::move(h), ec, n));
    }

    void
    try_read()
    {
        if (closed_ || !b_)
            return complete_read(net::error::operation_aborted, 0);
        if (read_into_.size() == 0)
            return complete_read({}, 0);
        if (auto n = b_->tunnel_read(read_into_); n != 0)
            return complete_read({}, n);
        if (b_->tunnel_read_end())
            return complete_read(net::error::eof, 0);
        if (b_->tunnel_gone())
            return complete_read(net::error::connection_reset, 0);
    }

    void
    complete_read(boost::system::error_code ec, std::size_t n)
    {
        auto h = std::move(*reader_);
        reader_.reset();
        post(std::move(h), ec, n);
    }

    void
    complete_write(boost::system::error_code ec)
    {
        stall_.cancel();
        auto h = std::move(*writer_);
        writer_.reset();
        post(std::move(h), ec, ec ? 0 : write_size_);
    }

    void
    arm_stall()
    {
        stall_.expires_after(timeout_write_);
        stall_.async_wait([w = weak_from_this()](boost::system::error_code ec) {
            if (ec)
                return;
            auto t = w.lock();
            if (!t || !t->writer_ || !t->b_)
                return;
            if (auto taken = t->b_->tunnel_taken(); taken != t->mark_) {
                t->mark_ = taken; // progress: another timeout_write
                t->arm_stall();
                return;
            }
            t->b_->tunnel_stalled();
            t->poll();
        });
    }

    // Beast writes its handshake response as HTTP/1.1; it becomes the stream's HEADERS.
    void
    handshake(std::string_view bytes)
    {
        namespace bhttp = boost::beast::http;
        if (answered_)
            return; // the body of a refusal: its status said enough
        head_ += bytes;
        auto end = head_.find("\r\n\r\n");
        if (end == std::string::npos)
            return;
        answered_ = true;
        bhttp::response_parser<bhttp::empty_body> parser;
        parser.skip(true); // the head alone
        boost::system::error_code ec;
        parser.put(net::buffer(head_.data(), end + 4), ec);
        if (!ec && !parser.is_header_done())
            ec = bhttp::error::partial_message;
        auto const& res = parser.get();
        int const status = ec ? 500 : (res.result_int() == 101 ? 200 : static_cast<int>(res.result_int()));
        header_list headers;
        for (auto const& f : res) {
            auto name = f.name_string();
            using boost::beast::iequals;
            if (iequals(name, "upgrade") || iequals(name, "connection") || iequals(name, "sec-websocket-accept") ||
                iequals(name, "content-length") || iequals(name, "transfer-encoding"))
                continue;
            headers.emplace_back(std::string(name), std::string(f.value()));
        }
        std::string().swap(head_);
        if (status == 200)
            open_ = true;
        else
            ended_ = true;
        b_->tunnel_respond(status, std::move(headers));
    }

    http2_tunnel_backend* b_;
    executor_type ex_;
    net::steady_timer stall_;
    net::steady_timer linger_;
    std::chrono::steady_clock::duration timeout_write_;
    std::optional<handler_type> reader_;
    net::mutable_buffer read_into_;
    std::optional<handler_type> writer_;
    std::size_t write_size_ = 0;
    std::uint64_t mark_ = 0;
    std::string head_; // the handshake's response, as Beast writes it
    bool secure_;
    tls_source const* tls_;
    bool open_ = false;     // the 200 is submitted: writes are DATA
    bool answered_ = false; // the handshake's response is submitted
    bool ended_ = false;    // END_STREAM is submitted
    bool closed_ = false;
    bool wake_posted_ = false;
};

// Beast closes the "socket" when a closing handshake times out: the stream is reset.
inline void
beast_close_socket(http2_tunnel& t) noexcept
{
    boost::system::error_code ec;
    t.close(ec);
}

// Beast's teardown after the closing handshake: END_STREAM; the client ends its side.
template <class Handler>
void
async_teardown(boost::beast::role_type, http2_tunnel& t, Handler&& handler)
{
    t.shutdown_send();
    net::post(t.get_executor(), boost::beast::bind_front_handler(std::forward<Handler>(handler), boost::system::error_code{}));
}

inline void
teardown(boost::beast::role_type, http2_tunnel& t, boost::system::error_code& ec)
{
    t.shutdown_send();
    ec = {};
}

template <>
struct stream_ops<http2_tunnel> {
    static constexpr bool try_io = false; // writes are queued in nghttp2; a read waits for DATA
    static constexpr bool secure = false; // per tunnel: is_secure()

    static bool is_secure(http2_tunnel& s) noexcept { return s.secure(); }

    static void
    shutdown_send(http2_tunnel& s, boost::system::error_code& ec) noexcept
    {
        ec = {};
        s.shutdown_send();
    }

    static tls_source const*
    tls(http2_tunnel& s) noexcept
    {
        return s.tls();
    }
};

} // namespace cserve::detail

#endif // CSERVE_HTTP2

#endif
