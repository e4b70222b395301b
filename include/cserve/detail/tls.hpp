// cserve/detail/tls.hpp -- TLS: the server's context, and the stream a TLS connection reads and writes
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_TLS_HPP
#define CSERVE_DETAIL_TLS_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/config.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

// OpenSSL does the TLS, through Asio's ssl::stream: the handshake, the records, the alerts.
// What is here is what a server adds around it: the context built from the config (files,
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
CSERVE_DECL void prepare_tls_context(net::ssl::context& ctx);

// The ASGI "tls" extension for a connection whose handshake is complete.
CSERVE_DECL tls_info make_tls_info(SSL* ssl);

// The protocol ALPN chose, "" when none.
CSERVE_DECL std::string_view alpn_protocol(SSL const* ssl) noexcept;

// A TLS connection's stream: Asio's ssl::stream over the server's socket type, and the
// connection's tls_source, whose tls_info is made on the first request that asks for it.
class tls_stream : public net::ssl::stream<socket_type>, public tls_source {
public:
    tls_stream(socket_type s, net::ssl::context& ctx)
        : net::ssl::stream<socket_type>(std::move(s), ctx)
    {
    }

    tls_info const&
    tls() const override
    {
        if (!info_)
            info_ = std::make_unique<tls_info>(make_tls_info(const_cast<tls_stream*>(this)->native_handle()));
        return *info_;
    }

private:
    mutable std::unique_ptr<tls_info> info_;
};

template <>
struct stream_ops<tls_stream> {
    using stream = tls_stream;

    // Records, not bytes: a write or read that does not wait cannot be made under OpenSSL.
    static constexpr bool try_io = false;
    static constexpr bool secure = true;

    static void
    open(stream& s) noexcept
    {
        stream_ops<socket_type>::open(s.next_layer());
    }

    // The handshake, before the first request; the connection's header deadline covers it.
    template <class Handler>
    static void
    async_handshake(stream& s, Handler&& h)
    {
        s.async_handshake(net::ssl::stream_base::server, std::forward<Handler>(h));
    }

    template <class ConstBuffers>
    static std::size_t
    try_write(stream&, ConstBuffers const&, boost::system::error_code& ec) noexcept
    {
        ec = {};
        return 0;
    }

    template <class MutableBuffers>
    static std::size_t
    try_read(stream&, MutableBuffers const&, boost::system::error_code& ec) noexcept
    {
        ec = net::error::would_block;
        return 0;
    }

    // On the socket: records waiting, or the end of the stream.
    static void
    peek(stream& s, boost::system::error_code& ec) noexcept
    {
        stream_ops<socket_type>::peek(s.next_layer(), ec);
    }

    // close_notify, then the socket's end of sending. The peer's close_notify is not waited
    // for (RFC 8446 §6.1 allows it): the socket is non-blocking, so the wait ends at once.
    static void
    shutdown_send(stream& s, boost::system::error_code& ec) noexcept
    {
        if (SSL_is_init_finished(s.native_handle()))
            s.shutdown(ec);
        stream_ops<socket_type>::shutdown_send(s.next_layer(), ec);
    }

    static tls_source const*
    tls(stream& s) noexcept
    {
        return &s;
    }
};

// A WebSocket over TLS closes with close_notify (Beast's teardown for ssl::stream).
template <class Handler>
void
async_teardown(boost::beast::role_type role, tls_stream& s, Handler&& handler)
{
    boost::beast::async_teardown(role, static_cast<net::ssl::stream<socket_type>&>(s), std::forward<Handler>(handler));
}

inline void
teardown(boost::beast::role_type role, tls_stream& s, boost::system::error_code& ec)
{
    boost::beast::teardown(role, static_cast<net::ssl::stream<socket_type>&>(s), ec);
}

} // namespace cserve::detail

#endif
