// cserve/impl/websocket_session.ipp -- the WebSocket session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_WEBSOCKET_SESSION_IPP
#define CSERVE_IMPL_WEBSOCKET_SESSION_IPP

#include <cserve/detail/websocket_session.hpp>
#include <cserve/detail/http1_connection.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/core/demangle.hpp>

#include <typeinfo>

namespace cserve::detail {

namespace ws_detail {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// How long a closing handshake may take before the socket is simply closed.
inline constexpr std::chrono::seconds close_timeout{5};

} // namespace ws_detail

websocket_session::websocket_session(http1_connection& conn)
    : conn_(conn)
    , keep_(conn.shared_from_this())
    , srv_(conn.srv_)
    , ws_(conn.socket_)
    , queue_(conn.socket_.get_executor(), conn.srv_.cfg_.ws_max_queue)
    , write_wait_(conn.socket_.get_executor())
    , ping_timer_(conn.socket_.get_executor())
    , done_(conn.socket_.get_executor())
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
        state_ = state::closed;
        break;
    case state::open:
        co_await close(failure ? 1011 : 1000, "");
        break;
    case state::closed:
        break;
    }
    stop_tasks();
    while (tasks_ > 0) {
        done_.expires_at(std::chrono::steady_clock::time_point::max());
        co_await done_.async_wait(ws_detail::use_tuple);
    }
}

void
websocket_session::stop_tasks() noexcept
{
    // close() alone completes waiting receives only; cancel() also releases a reader
    // blocked on a full queue.
    queue_.cancel();
    queue_.close();
    stopping_ = true;
    write_wait_.cancel();
    ping_timer_.cancel();
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
websocket_session::lock_writes()
{
    // Taken without waiting, the usual case, costs no suspension (see send()); this
    // waits only while a ping or close is being written.
    while (writes_locked_ && !stopping_) {
        ++write_waiters_;
        write_wait_.expires_at(std::chrono::steady_clock::time_point::max());
        co_await write_wait_.async_wait(ws_detail::use_tuple);
        --write_waiters_;
    }
    writes_locked_ = true;
}

void
websocket_session::unlock_writes() noexcept
{
    writes_locked_ = false;
    if (write_waiters_ > 0)
        write_wait_.cancel();
}

task<>
websocket_session::accept(websocket::accept& a)
{
    namespace bws = boost::beast::websocket;
    namespace bhttp = boost::beast::http;
    auto const& cfg = srv_.cfg_;
    for (auto const& [name, value] : a.headers)
        if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
            throw boost::system::system_error(make_error_code(error::invalid_header),
                                              "invalid response header '" + name + "'");
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
        [&cfg, sub = a.subprotocol, extra = a.headers](bws::response_type& res) {
            if (cfg.server_header)
                res.set(bhttp::field::server, "cserve");
            else
                res.erase(bhttp::field::server);
            if (cfg.date_header)
                res.set(bhttp::field::date, http_date());
            for (auto const& [name, value] : cfg.headers)
                res.insert(name, value);
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
            awaiting_pong_ = false;
    });

    auto [ec] = co_await ws_.async_accept(req, ws_detail::use_tuple);
    if (ec) {
        state_ = state::closed;
        conn_.disconnected_ = true;
        log_handshake("[failed]");
        throw client_disconnected();
    }
    state_ = state::open;
    log_handshake("[accepted]");

    auto self = shared_from_this();
    auto ex = conn_.socket_.get_executor();
    auto on_done = [self](std::exception_ptr) {
        --self->tasks_;
        self->done_.cancel();
    };
    ++tasks_;
    net::co_spawn(ex, reader(), on_done);
    if (cfg.ws_ping_interval) {
        ++tasks_;
        net::co_spawn(ex, pinger(), on_done);
    }
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
    co_await lock_writes();
    // A peer that never answers is cut off by the stream's handshake timeout.
    co_await ws_.async_close(
        boost::beast::websocket::close_reason(static_cast<boost::beast::websocket::close_code>(code), reason),
        ws_detail::use_tuple);
    unlock_writes();
}

task<>
websocket_session::reader()
{
    namespace bws = boost::beast::websocket;
    for (;;) {
        std::string payload; // read in place, then moved into the event
        auto in = net::dynamic_buffer(payload);
        auto [ec, n] = co_await ws_.async_read(in, ws_detail::use_tuple);
        if (ec) {
            if (ec == bws::error::closed && !we_closed_) {
                // A close frame without a code is reported as 1005 (RFC 6455 §7.1.5).
                auto code = ws_.reason().code;
                close_code_ = code == bws::close_code::none ? 1005 : static_cast<int>(code);
                close_reason_ = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
            } else if (!we_closed_ && close_code_ == 1006) {
                // The connection failed: say why, as the close frame Beast sent said.
                if (ec == bws::error::message_too_big)
                    close_code_ = 1009;
                else if (ec == bws::error::bad_frame_payload)
                    close_code_ = 1007;
            }
            state_ = state::closed;
            conn_.disconnected_ = true;
            co_await queue_.async_send(boost::system::error_code{}, websocket::disconnect{close_code_, close_reason_},
                                       ws_detail::use_tuple);
            co_return;
        }
        websocket::receive message;
        if (ws_.got_text())
            message.text = std::move(payload);
        else
            message.bytes = std::move(payload);
        reader_blocked_ = true;
        auto [sec] = co_await queue_.async_send(boost::system::error_code{}, std::move(message), ws_detail::use_tuple);
        reader_blocked_ = false;
        if (sec)
            co_return; // the application is done
    }
}

task<>
websocket_session::pinger()
{
    auto const& cfg = srv_.cfg_;
    while (state_ == state::open) {
        ping_timer_.expires_after(*cfg.ws_ping_interval);
        auto [ec] = co_await ping_timer_.async_wait(ws_detail::use_tuple);
        if (ec || state_ != state::open)
            co_return;
        co_await lock_writes();
        if (state_ != state::open) {
            unlock_writes();
            co_return;
        }
        awaiting_pong_ = true;
        auto [pec] = co_await ws_.async_ping({}, ws_detail::use_tuple);
        unlock_writes();
        if (pec || !cfg.ws_ping_timeout)
            continue;
        ping_timer_.expires_after(*cfg.ws_ping_timeout);
        auto [tec] = co_await ping_timer_.async_wait(ws_detail::use_tuple);
        if (tec || state_ != state::open)
            co_return;
        // A reader stopped by a full queue cannot see the pong: the client is not at fault.
        if (awaiting_pong_ && !reader_blocked_) {
            // The peer is gone or stuck: waiting for its side of a closing handshake would
            // keep the application waiting too. Drop the connection; the reader then
            // reports 1011 at once.
            srv_.log_.log(log_level::info, "WebSocket keepalive ping timeout: closing with 1011");
            state_ = state::closed;
            we_closed_ = true;
            close_code_ = 1011;
            close_reason_ = "keepalive ping timeout";
            boost::system::error_code ignored;
            conn_.socket_.close(ignored);
            co_return;
        }
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
    auto [ec, e] = co_await queue_.async_receive(ws_detail::use_tuple);
    if (ec || std::holds_alternative<websocket::disconnect>(e)) {
        disconnect_delivered_ = true;
        co_return websocket::disconnect{close_code_, close_reason_};
    }
    co_return std::move(e);
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
        if (state_ != state::open)
            throw client_disconnected();
        if (writes_locked_)
            co_await lock_writes();
        else
            writes_locked_ = true;
        if (state_ != state::open) {
            unlock_writes();
            throw client_disconnected();
        }
        ws_.text(m->text.has_value());
        auto const& payload = m->text ? *m->text : *m->bytes;
        auto [ec, n] = co_await ws_.async_write(net::buffer(payload), ws_detail::use_tuple);
        unlock_writes();
        if (ec) {
            state_ = state::closed;
            throw client_disconnected();
        }
    } else if (auto* c = std::get_if<websocket::close>(&e)) {
        if (state_ == state::connecting) {
            // Closing before the handshake refuses it (ASGI): HTTP 403.
            state_ = state::closed;
            conn_.keep_alive_ = false;
            conn_.quiet_ = true;
            log_handshake("403");
            co_await conn_.respond_simple(403, "");
        } else if (state_ == state::open) {
            co_await close(static_cast<std::uint16_t>(c->code), c->reason);
        } else {
            http1::throw_unexpected(e, "after the connection closed");
        }
    } else if (std::holds_alternative<http::response_start>(e) || std::holds_alternative<http::response_body>(e)) {
        // The "websocket.http.response" extension: a denial response of the app's own.
        if (state_ == state::connecting && std::holds_alternative<http::response_start>(e)) {
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
