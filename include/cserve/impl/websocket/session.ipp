// cserve/impl/websocket/session.ipp -- the WebSocket session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_WEBSOCKET_SESSION_IPP
#define CSERVE_IMPL_WEBSOCKET_SESSION_IPP

#include <cserve/detail/websocket/session.hpp>
#include <cserve/detail/websocket/deflate.hpp>
#include <cserve/detail/websocket/frame.hpp>
#include <cserve/detail/stream.hpp>
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

template <class Stream>
websocket_session<Stream>::websocket_session(upgrade<Stream> up)
    : up_(std::move(up))
    , srv_(up_.srv)
    , ws_(up_.stream)
    , wake_(up_.stream.get_executor(), std::chrono::steady_clock::time_point::max())
    , ping_timer_(up_.stream.get_executor())
{
}

template <class Stream>
void
websocket_session<Stream>::log_handshake(std::string_view outcome) const
{
    if (!srv_.cfg_.access_log || !srv_.log_.enabled(log_level::info))
        return;
    std::string line = up_.client;
    line += " - \"WebSocket ";
    line += up_.scope.raw_path;
    if (!up_.scope.query_string.empty()) {
        line += '?';
        line += up_.scope.query_string;
    }
    line += "\" ";
    line += outcome;
    srv_.log_.log(log_level::info, line);
}

template <class Stream>
task<>
websocket_session<Stream>::run()
{
    auto& s = up_.scope;
    s.type = scope_type::websocket;
    bool secure = stream_ops<Stream>::secure;
    if constexpr (requires(Stream& st) { stream_ops<Stream>::is_secure(st); })
        secure = stream_ops<Stream>::is_secure(up_.stream); // a tunnel: its connection's
    if (secure) {
        s.scheme = "wss";
        s.extensions = {"websocket.http.response", "tls"};
    } else {
        s.scheme = "ws";
        s.extensions = {"websocket.http.response"};
    }
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
    if (up_.host.closed()) {
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
        log_handshake(failure ? "500" : "403");
        co_await up_.host.http_deny(failure ? 500 : 403, failure ? "Internal Server Error" : "");
        state_ = state::closed;
        break;
    case state::denying:
        if (failure && !up_.host.http_exchange().head_committed() && !up_.host.http_exchange().disconnected()) {
            // The denial's head is still held: nothing went out, a 500 can replace it.
            log_handshake("500");
            co_await up_.host.http_deny(500, "Internal Server Error");
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

template <class Stream>
void
websocket_session<Stream>::stop_tasks() noexcept
{
    ping_timer_.cancel();
    if (reading_ && state_ != state::open) {
        boost::system::error_code ec;
        up_.stream.lowest_layer().cancel(ec);
    }
    wake();
}

template <class Stream>
task<>
websocket_session<Stream>::wake_wait()
{
    // wake_ never expires: a wait ends when wake() cancels it.
    co_await wake_.async_wait(ws_detail::use_tuple);
}

template <class Stream>
void
websocket_session<Stream>::wake() noexcept
{
    wake_.cancel();
}

template <class Stream>
void
websocket_session<Stream>::spawn(task<> t)
{
    ++tasks_;
    net::co_spawn(up_.stream.get_executor(), std::move(t), [self = this->shared_from_this()](std::exception_ptr) {
        --self->tasks_;
        self->wake();
    });
}

template <class Stream>
void
websocket_session<Stream>::begin_drain() noexcept
{
    if (state_ != state::open)
        return;
    net::co_spawn(up_.stream.get_executor(), drain_close(this->shared_from_this()), [](std::exception_ptr) {});
}

template <class Stream>
task<>
websocket_session<Stream>::drain_close(std::shared_ptr<websocket_session> self)
{
    // The close frame waits for any message being written; a client that does not read
    // would hold it back forever. Give it close_timeout, then drop the connection.
    auto ex = self->up_.stream.get_executor();
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
        self->up_.stream.lowest_layer().close(ec);
        // The close operation ends with the socket; its handler cancels `deadline`, which
        // must outlive it.
        deadline.expires_at(std::chrono::steady_clock::time_point::max());
        while (!*finished)
            co_await deadline.async_wait(ws_detail::use_tuple);
    }
}

template <class Stream>
task<>
websocket_session<Stream>::accept(websocket::accept& a)
{
    namespace bws = boost::beast::websocket;
    namespace bhttp = boost::beast::http;
    auto const& cfg = srv_.cfg_;
    check_headers(a.headers);
    if (a.subprotocol && !http1::valid_field_value(*a.subprotocol))
        throw boost::system::system_error(make_error_code(error::invalid_header), "invalid subprotocol");
    if (up_.host.http_receiving())
        throw boost::system::system_error(make_error_code(error::unexpected_event),
                                          "'websocket.accept' sent while receive() is waiting");

    // Beast answers the handshake from a request message; rebuild it from the parsed head.
    bhttp::request<bhttp::empty_body> req;
    req.target(up_.target);
    if (up_.version == 20) {
        // An extended CONNECT (RFC 8441 §5) has no key and no Upgrade: Beast is given the
        // HTTP/1.1 form, with a key of the server's own. Its answer, written through the
        // tunnel, becomes a 200 without Sec-WebSocket-Accept.
        req.method(bhttp::verb::get);
        req.version(11);
        req.set(bhttp::field::upgrade, "websocket");
        req.set(bhttp::field::connection, "Upgrade");
        req.set(bhttp::field::sec_websocket_key, "AAAAAAAAAAAAAAAAAAAAAA==");
        for (auto const& [name, value] : up_.scope.headers)
            if (name != "sec-websocket-key" && name != "upgrade" && name != "connection")
                req.insert(name, value);
    } else {
        req.method_string(up_.scope.method);
        req.version(up_.version);
        for (auto const& [name, value] : up_.scope.headers)
            req.insert(name, value);
    }

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
    if (auto& in = up_.buffered; in.size() > 0) {
        auto early = in.size();
        layer.in.commit(net::buffer_copy(layer.in.prepare(early), in.data()));
        in.consume(early);
    }

    auto [ec] = co_await ws_.async_accept(req, ws_detail::use_tuple);
    if (ec) {
        state_ = state::closed;
        log_handshake("[failed]");
        throw client_disconnected();
    }
    state_ = state::open;
    open_gauge_.open(srv_.metrics_);
    log_handshake("[accepted]");

    net::post(up_.stream.get_executor(), [self = this->shared_from_this()] { self->read_messages(); });
    if (cfg.ws_ping_interval)
        spawn(pinger());
    if (up_.host.draining())
        begin_drain();
}

template <class Stream>
task<>
websocket_session<Stream>::close(std::uint16_t code, std::string reason)
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
        up_.stream.lowest_layer().cancel(ec);
        while (reading_)
            co_await wake_wait();
    }
    if (!write_failed_ && !up_.host.closed()) {
        // A peer that never answers is cut off by the stream's handshake timeout.
        co_await ws_.async_close(
            boost::beast::websocket::close_reason(static_cast<boost::beast::websocket::close_code>(code), reason),
            ws_detail::use_tuple);
    }
    deliver_disconnect(false);
}

template <class Stream>
task<>
websocket_session<Stream>::pinger()
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
        up_.stream.lowest_layer().close(ignored);
        co_return;
    }
}

template <class Stream>
task<event>
websocket_session<Stream>::receive()
{
    if (!connect_delivered_) {
        connect_delivered_ = true;
        co_return websocket::connect{};
    }
    if (state_ == state::connecting || state_ == state::denying) {
        // Nothing arrives before the handshake but the client leaving.
        co_await up_.host.http_wait();
        co_return websocket::disconnect{1006, {}};
    }
    if (disconnect_delivered_)
        co_return websocket::disconnect{close_code_, close_reason_};
    if (reader_blocked_ && state_ == state::open && queue_.size() <= srv_.cfg_.ws_max_queue / 2 + 1) {
        // The queue has room again: read on (after this receive has its message).
        reader_blocked_ = false;
        net::post(up_.stream.get_executor(), [self = this->shared_from_this()] { self->read_messages(); });
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

template <class Stream>
task<>
websocket_session<Stream>::send(event e)
{
    if (auto* a = std::get_if<websocket::accept>(&e)) {
        if (state_ != state::connecting)
            throw_unexpected(e, "after the handshake");
        if (up_.host.http_exchange().disconnected() || up_.host.closed())
            throw client_disconnected();
        co_await accept(*a);
    } else if (auto* m = std::get_if<websocket::send>(&e)) {
        if (state_ == state::connecting || state_ == state::denying)
            throw_unexpected(e, "before 'websocket.accept'");
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
        metrics_registry::add<std::uint64_t>(srv_.metrics_.local().websocket_messages_sent, 1);
        // Returns once the socket has taken the message: a client that does not read
        // holds the application back, and memory stays bounded.
        if (ws_.next_layer().pending())
            co_await wait_until_flushed();
    } else if (auto* c = std::get_if<websocket::close>(&e)) {
        if (state_ == state::connecting) {
            // Closing before the handshake refuses it (ASGI): HTTP 403.
            state_ = state::closed;
            log_handshake("403");
            co_await up_.host.http_deny(403, "");
        } else if (state_ == state::open) {
            // The close frame's body is the code and at most 123 bytes of UTF-8 (RFC 6455
            // §5.5, §5.5.1): refuse rather than send a code or reason the peer must reject.
            if (!ws_detail::valid_close_code(c->code) || c->reason.size() > 123 ||
                !valid_utf8(c->reason.data(), c->reason.size()))
                throw boost::system::system_error(make_error_code(error::invalid_close),
                                                  "'websocket.close' with code " + std::to_string(c->code));
            co_await close(static_cast<std::uint16_t>(c->code), c->reason);
        } else {
            throw_unexpected(e, "after the connection closed");
        }
    } else if (std::holds_alternative<http::response_start>(e) || std::holds_alternative<http::response_body>(e)) {
        // The "websocket.http.response" extension: a denial response of the app's own.
        if (state_ == state::connecting && std::holds_alternative<http::response_start>(e)) {
            // Checked before the denial begins: an invalid status leaves the handshake
            // unanswered, and the application's failure then becomes a 500.
            check_final_status(std::get<http::response_start>(e).status);
            state_ = state::denying;
            log_handshake(std::to_string(std::get<http::response_start>(e).status));
        } else if (state_ != state::denying) {
            throw_unexpected(e, "on an accepted WebSocket");
        }
        co_await up_.host.http_send(std::move(e));
        if (up_.host.http_exchange().completed())
            state_ = state::closed;
    } else {
        throw_unexpected(e, "on a WebSocket connection");
    }
}

} // namespace cserve::detail

#endif
