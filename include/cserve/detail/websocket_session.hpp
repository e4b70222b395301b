// cserve/detail/websocket_session.hpp -- a WebSocket connection mapped to the event model
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_WEBSOCKET_SESSION_HPP
#define CSERVE_DETAIL_WEBSOCKET_SESSION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>

#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <memory>
#include <string>

namespace cserve::detail {

class http1_connection;

// Runs the application on a WebSocket scope once http1_connection has seen an upgrade
// request. Before "websocket.accept" the HTTP connection answers (403, or the
// application's denial response); after it, Beast's websocket stream does the framing.
//
// Three coroutines share the stream on the connection's executor: the application's
// receive()/send() calls, a reader that keeps one read pending (so pings are answered and
// a closing peer is noticed) and fills a queue of at most ws_max_queue messages, and a
// pinger. Writes (messages, pings, close) take turns through writes_locked_.
class websocket_session final : public std::enable_shared_from_this<websocket_session>, public channel {
public:
    CSERVE_DECL explicit websocket_session(http1_connection& conn);

    // Runs the application to its end and closes the WebSocket.
    CSERVE_DECL task<> run();

    // Graceful shutdown: close an open WebSocket with 1012 (service restart).
    CSERVE_DECL void begin_drain() noexcept;

    CSERVE_DECL task<event> receive() override;
    CSERVE_DECL task<> send(event e) override;

private:
    enum class state : unsigned char { connecting, denying, open, closed };

    CSERVE_DECL static task<> drain_close(std::shared_ptr<websocket_session> self);
    CSERVE_DECL void stop_tasks() noexcept;
    CSERVE_DECL task<> accept(websocket::accept& a);
    CSERVE_DECL task<> close(std::uint16_t code, std::string reason);
    CSERVE_DECL task<> reader();
    CSERVE_DECL task<> pinger();
    CSERVE_DECL task<> lock_writes();
    CSERVE_DECL void unlock_writes() noexcept;
    CSERVE_DECL void log_handshake(std::string_view outcome) const;

    http1_connection& conn_;
    std::shared_ptr<http1_connection> keep_; // the socket lives in the connection
    server_impl& srv_;
    boost::beast::websocket::stream<socket_type&> ws_;
    net::experimental::channel<void(boost::system::error_code, event)> queue_;
    net::steady_timer write_wait_; // writers waiting for writes_locked_ to clear
    net::steady_timer ping_timer_;
    net::steady_timer done_;
    state state_ = state::connecting;
    bool connect_delivered_ = false;
    bool disconnect_delivered_ = false;
    bool awaiting_pong_ = false;
    bool reader_blocked_ = false;
    bool we_closed_ = false; // the server sent the close: its code is the one reported
    bool writes_locked_ = false; // a message, ping or close is being written
    bool stopping_ = false;      // stop_tasks(): waiting writers give up
    int write_waiters_ = 0;
    int tasks_ = 0; // reader and pinger still running
    int close_code_ = 1006;
    std::string close_reason_;
};

} // namespace cserve::detail

#endif
