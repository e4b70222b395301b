// cserve/detail/tls.hpp -- TLS: the server's context, and the stream a TLS connection reads and writes
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_TLS_HPP
#define CSERVE_DETAIL_TLS_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/config.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <openssl/ssl.h>

#include <array>
#include <cstddef>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

// OpenSSL does the TLS: the handshake, the records, the alerts. What is here is what a server
// adds around it: the context built from the config (files,
// versions, suites, client certificates, ALPN, tickets), and the stream type the connections
// are instantiated for, which also answers the ASGI "tls" extension.
namespace cserve::detail {

// A certificate, key or setting the context cannot be built from; what() is one line naming
// the file or flag and the reason.
class tls_config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The session ticket key every worker shares (the master makes it before forking, and a new
// one on SIGHUP), so that a client resumes its session whichever worker accepts it.
struct ticket_key {
    unsigned char bytes[80]; // OpenSSL's layout: 16 bytes of name, 32 of HMAC key, 32 of AES key
};

// A fresh random ticket key.
CSERVE_DECL ticket_key make_ticket_key();

// The context the config describes: its files read and checked now. Throws tls_config_error.
CSERVE_DECL std::shared_ptr<net::ssl::context> make_tls_context(config const& cfg, ticket_key const& key);

// The context to serve with: cfg.ssl_context_factory's (made fit for serving: see
// prepare_tls_context) or make_tls_context's. Throws tls_config_error.
CSERVE_DECL std::shared_ptr<net::ssl::context> load_tls_context(config const& cfg, ticket_key const& key);

// What every serving context gets, a factory's too: ALPN, released buffers, no renegotiation.
CSERVE_DECL void prepare_tls_context(net::ssl::context& ctx, bool http2);

// The ASGI "tls" extension for a connection whose handshake is complete.
CSERVE_DECL tls_info make_tls_info(SSL* ssl);

// The protocol ALPN chose, "" when none.
CSERVE_DECL std::string_view alpn_protocol(SSL const* ssl) noexcept;

// A TLS connection's stream: OpenSSL's SSL object reading and writing the connection's socket
// directly (a BIO of ours: recv and send with MSG_NOSIGNAL), each operation that cannot go on
// waiting for the socket with Asio's async_wait, as nginx drives OpenSSL. OpenSSL does all of
// the TLS; nothing here reads or writes a record.
//
// Why not Asio's ssl::stream: it stages every byte through two 17 KiB buffers of its own and
// a BIO pair (two more), which an idle keep-alive connection keeps (71 KiB of RSS per idle
// connection against nginx's 15, measured with benchmarks/tls.py), and it copies every byte
// twice more. Here an idle connection holds the SSL object only (OpenSSL releases its record
// buffers), and a response that fits the socket is encrypted and sent by one call that does not
// wait, as over plain TCP (stream_ops::try_io).
//
// It is also the connection's tls_source: the ASGI "tls" extension, made when first asked for.
class tls_stream final : public tls_source {
public:
    using executor_type = socket_type::executor_type;
    using next_layer_type = socket_type;
    using lowest_layer_type = socket_type::lowest_layer_type;

    CSERVE_DECL tls_stream(socket_type s, net::ssl::context& ctx);
    CSERVE_DECL ~tls_stream();
    tls_stream(tls_stream const&) = delete;
    tls_stream& operator=(tls_stream const&) = delete;

    executor_type get_executor() noexcept { return socket_.get_executor(); }
    socket_type& next_layer() noexcept { return socket_; }
    lowest_layer_type& lowest_layer() noexcept { return socket_.lowest_layer(); }
    SSL* native_handle() noexcept { return ssl_; }

    tls_info const&
    tls() const override
    {
        if (!info_)
            info_ = std::make_unique<tls_info>(make_tls_info(ssl_));
        return *info_;
    }

    // Without waiting: what OpenSSL decrypts or encrypts now. would_block (and 0) when it
    // must wait for the socket; a write that must wait has taken its record and is completed by
    // the next write of the same bytes.
    template <class MutableBuffers>
    std::size_t
    read_now(MutableBuffers const& b, boost::system::error_code& ec)
    {
        std::size_t n = 0;
        if (read_step(first_buffer(b), n, ec) != 0)
            ec = net::error::would_block;
        return n;
    }

    template <class ConstBuffers>
    std::size_t
    write_now(ConstBuffers const& b, boost::system::error_code& ec)
    {
        std::size_t n = 0;
        if (write_step(b, n, ec) != 0)
            ec = net::error::would_block;
        return n;
    }

    // Sends close_notify if the handshake is done and the socket takes it; never waits.
    CSERVE_DECL void close_notify() noexcept;

    template <class Handler>
    auto
    async_handshake(Handler&& handler)
    {
        return async_run_unsized(
            [this](std::size_t& n, boost::system::error_code& ec) { return handshake_step(n, ec); },
            std::forward<Handler>(handler));
    }

    template <class MutableBuffers, class Handler>
    auto
    async_read_some(MutableBuffers const& b, Handler&& handler)
    {
        return async_run([this, b](std::size_t& n, boost::system::error_code& ec) {
            return read_step(first_buffer(b), n, ec);
        }, std::forward<Handler>(handler));
    }

    template <class ConstBuffers, class Handler>
    auto
    async_write_some(ConstBuffers const& b, Handler&& handler)
    {
        return async_run([this, b](std::size_t& n, boost::system::error_code& ec) { return write_step(b, n, ec); },
                         std::forward<Handler>(handler));
    }

private:
    // One attempt of an operation: 0 when it is done (n and ec set), else SSL_ERROR_WANT_READ
    // or SSL_ERROR_WANT_WRITE: the socket it waits for.
    CSERVE_DECL int handshake_step(std::size_t& n, boost::system::error_code& ec);
    CSERVE_DECL int read_step(net::mutable_buffer b, std::size_t& n, boost::system::error_code& ec);
    CSERVE_DECL int write_piece(net::const_buffer b, std::size_t& n, boost::system::error_code& ec);

    // Writes what the socket takes now, a record at a time. Small pieces (a response head and
    // its body) go out as one record: gathered into a scratch buffer of the thread, up to one
    // record. OpenSSL is told the buffer may move (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER): a
    // record that waits for the socket is completed by the next write, which starts with the
    // same bytes (gathered again).
    template <class ConstBuffers>
    int
    write_step(ConstBuffers const& b, std::size_t& n, boost::system::error_code& ec)
    {
        n = 0;
        ec = {};
        boost::beast::buffers_suffix<ConstBuffers> rest(b);
        while (net::buffer_size(rest) != 0 && n < write_burst) {
            auto it = net::buffer_sequence_begin(rest);
            while (net::const_buffer(*it).size() == 0)
                ++it;
            net::const_buffer piece(*it);
            if (piece.size() < gather_limit && std::next(it) != net::buffer_sequence_end(rest)) {
                auto& scratch = gather_buffer();
                std::size_t size = net::buffer_copy(net::buffer(scratch), rest);
                piece = net::buffer(scratch.data(), size);
            }
            std::size_t written = 0;
            boost::system::error_code wec;
            int want = write_piece(piece, written, wec);
            if (want != 0 || wec) {
                if (n != 0)
                    return 0; // what was written is the result; the rest waits for the next call
                ec = wec;
                return want;
            }
            n += written;
            rest.consume(written);
        }
        return 0;
    }
    template <class MutableBuffers>
    static net::mutable_buffer
    first_buffer(MutableBuffers const& b)
    {
        for (auto it = net::buffer_sequence_begin(b); it != net::buffer_sequence_end(b); ++it)
            if (net::mutable_buffer(*it).size() != 0)
                return *it;
        return {};
    }

    static constexpr std::size_t gather_limit = 16 * 1024; // one TLS record's plaintext
    static constexpr std::size_t write_burst = 256 * 1024;  // the most one write takes
    static std::array<char, gather_limit>&
    gather_buffer()
    {
        thread_local std::array<char, gather_limit> buffer;
        return buffer;
    }

    // Runs `step` until it is done, waiting for the socket as it asks; completes through the
    // handler's executor, never inside the initiating call.
    template <class Step, bool Sized>
    struct op {
        tls_stream& s;
        Step step;
        bool waited = false;
        bool done = false;
        boost::system::error_code result;
        std::size_t n = 0;

        template <class Self>
        void
        finish(Self& self, boost::system::error_code ec, std::size_t size)
        {
            if constexpr (Sized)
                self.complete(ec, size);
            else
                self.complete(ec);
        }

        template <class Self>
        void
        operator()(Self& self, boost::system::error_code ec = {})
        {
            if (done)
                return finish(self, result, n);
            if (ec)
                return finish(self, ec, 0); // the wait failed: cancelled, or the socket closed
            int want = step(n, result);
            if (want == SSL_ERROR_WANT_READ || want == SSL_ERROR_WANT_WRITE) {
                waited = true;
                s.socket_.async_wait(want == SSL_ERROR_WANT_READ ? net::socket_base::wait_read
                                                                 : net::socket_base::wait_write,
                                     std::move(self));
                return;
            }
            if (waited)
                return finish(self, result, n);
            done = true;
            net::post(s.socket_.get_executor(), std::move(self));
        }
    };

    template <class Step, class Handler>
    auto
    async_run(Step step, Handler&& handler)
    {
        return net::async_compose<Handler, void(boost::system::error_code, std::size_t)>(
            op<Step, true>{*this, std::move(step), false, false, {}, 0}, handler, socket_);
    }

    template <class Step, class Handler>
    auto
    async_run_unsized(Step step, Handler&& handler)
    {
        return net::async_compose<Handler, void(boost::system::error_code)>(
            op<Step, false>{*this, std::move(step), false, false, {}, 0}, handler, socket_);
    }

    socket_type socket_;
    SSL* ssl_ = nullptr;
    mutable std::unique_ptr<tls_info> info_;
};

template <>
struct stream_ops<tls_stream> {
    using stream = tls_stream;

    static constexpr bool try_io = true;
    static constexpr bool secure = true;
    // An idle connection waits for the socket, then reads (http1_connection::wait_idle).
    static constexpr bool wait_then_read = true;

    static void
    open(stream& s) noexcept
    {
        stream_ops<socket_type>::open(s.next_layer()); // no Nagle delay, non-blocking
    }

    // The handshake, before the first request; the connection's header deadline covers it.
    template <class Handler>
    static void
    async_handshake(stream& s, Handler&& h)
    {
        s.async_handshake(std::forward<Handler>(h));
    }

    template <class ConstBuffers>
    static std::size_t
    try_write(stream& s, ConstBuffers const& b, boost::system::error_code& ec) noexcept
    {
        auto n = s.write_now(b, ec);
        if (ec == net::error::would_block)
            ec = {};
        return n;
    }

    template <class MutableBuffers>
    static std::size_t
    try_read(stream& s, MutableBuffers const& b, boost::system::error_code& ec) noexcept
    {
        return s.read_now(b, ec);
    }

    // On the socket: records waiting, or the end of the stream.
    static void
    peek(stream& s, boost::system::error_code& ec) noexcept
    {
        stream_ops<socket_type>::peek(s.next_layer(), ec);
    }

    // close_notify (RFC 8446 §6.1), then the socket's end of sending. The peer's close_notify
    // is not waited for.
    static void
    shutdown_send(stream& s, boost::system::error_code& ec) noexcept
    {
        s.close_notify();
        stream_ops<socket_type>::shutdown_send(s.next_layer(), ec);
    }

    static tls_source const*
    tls(stream& s) noexcept
    {
        return &s;
    }

    // The protocol ALPN chose ("h2" hands the connection to HTTP/2).
    static std::string_view
    alpn(stream& s) noexcept
    {
        return alpn_protocol(s.native_handle());
    }
};

// A WebSocket over TLS closes with close_notify, then as a TCP socket does (Beast's teardown:
// the end of sending, reading to the end, closing).
template <class Handler>
void
async_teardown(boost::beast::role_type role, tls_stream& s, Handler&& handler)
{
    s.close_notify();
    boost::beast::websocket::async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
}

inline void
teardown(boost::beast::role_type role, tls_stream& s, boost::system::error_code& ec)
{
    s.close_notify();
    boost::beast::websocket::teardown(role, s.next_layer(), ec);
}

} // namespace cserve::detail

#endif
