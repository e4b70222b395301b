// cserve/detail/websocket/upgrade.hpp -- the hand-off from an HTTP connection to a WebSocket session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_WEBSOCKET_UPGRADE_HPP
#define CSERVE_DETAIL_WEBSOCKET_UPGRADE_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/buffer_pool.hpp>
#include <cserve/detail/exchange.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>
#include <cserve/task.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace cserve::detail {

class server_impl;

// What a WebSocket session asks of the HTTP connection that received the upgrade request.
// Until the handshake is answered the exchange is still HTTP: a denial is an HTTP response,
// written by the connection with its own rules; after it, the session owns the stream and
// asks only about the connection's end.
class upgrade_host {
public:
    // The application's denial response ("websocket.http.response"): its http.response.*
    // events, taken as on an HTTP request, and the state of that response.
    virtual task<> http_send(event e) = 0;
    virtual exchange const& http_exchange() const noexcept = 0;
    // The server's own denial (403, 500), without an access-log line of its own.
    virtual task<> http_deny(int status, std::string_view body) = 0;
    // Waits until the client leaves (or the denial is complete): receive() before the handshake.
    virtual task<> http_wait() = 0;
    // Whether such a wait is under way.
    virtual bool http_receiving() const noexcept = 0;

    // force_close() ran: the stream is closed.
    virtual bool closed() const noexcept = 0;
    // The server is shutting down gracefully.
    virtual bool draining() const noexcept = 0;
    // The stream is closing: what the peer still sends is read for at most linger_time.
    virtual void linger() noexcept = 0;

protected:
    ~upgrade_host() = default;
};

// Everything a WebSocket session takes over: the stream, the bytes read past the upgrade
// request (frames a client sent right behind it), the request's scope and head, and the host.
template <class Stream>
struct upgrade {
    server_impl& srv;
    Stream& stream;
    request_buffer& buffered;
    cserve::scope& scope;
    std::string_view target; // the request-target, as received
    int version;             // 11; 20 for an extended CONNECT over HTTP/2 (RFC 8441)
    std::string client;      // "host:port" for the access log
    upgrade_host& host;
    std::shared_ptr<void> owner; // keeps the stream (and all of the above) alive
};

} // namespace cserve::detail

#endif
