// cserve/app.hpp -- receive, send and the signature of an application
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_APP_HPP
#define CSERVE_APP_HPP

#include <cserve/detail/config.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>
#include <cserve/task.hpp>

#include <functional>
#include <utility>

namespace cserve {

namespace detail {

// What receive and send talk to: a protocol connection (HTTP/1.1, WebSocket, lifespan).
class channel {
public:
    virtual task<event> receive() = 0;
    virtual task<> send(event e) = 0;

protected:
    ~channel() = default;
};

} // namespace detail

/** Awaits the next event from the server: `co_await receive()`.

    A cheap handle that may be copied and stored; it refers to the connection and is valid
    until the application coroutine it was passed to returns.

    @par Thread Safety
    Call it from the connection's executor (the one the application runs on); at most one
    `receive()` may be pending at a time.

    @par Per-Operation Cancellation
    The same in every scope (http, websocket, lifespan): a `receive()` cancelled while it
    waits, for instance by losing a race against a timer with Asio's awaitable operators
    (`co_await (receive() || timer.async_wait(use_awaitable))`), throws
    `boost::system::system_error` with `boost::asio::error::operation_aborted` and takes
    nothing from the connection: the next `receive()` gets the event it would have got. The
    connection is not affected.
*/
class receive {
public:
    explicit receive(detail::channel& c) noexcept : channel_(&c) {}

    /// The next event; see each scope type for which events arrive and when.
    [[nodiscard]] task<event>
    operator()() const
    {
        return channel_->receive();
    }

private:
    detail::channel* channel_;
};

/** Sends one event to the server: `co_await send(e)`.

    The operation completes once the event's bytes are handed to the operating system, so
    a slow client slows the application down instead of growing a buffer.

    @throws client_disconnected when the client is gone.
    @throws boost::system::system_error (cserve::error) when the event is not allowed in
    the connection's state.

    @par Thread Safety
    Call it from the connection's executor; at most one `send()` may be pending at a time.
*/
class send {
public:
    explicit send(detail::channel& c) noexcept : channel_(&c) {}

    [[nodiscard]] task<>
    operator()(event e) const
    {
        return channel_->send(std::move(e));
    }

private:
    detail::channel* channel_;
};

/// An application: one coroutine per connection scope.
using app_function = std::function<task<>(scope&, receive, send)>;

} // namespace cserve

#endif
