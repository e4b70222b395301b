// cserve/impl/http2/session.ipp -- HTTP/2 sessions and streams, on nghttp2
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP2_SESSION_IPP
#define CSERVE_IMPL_HTTP2_SESSION_IPP

#include <cserve/detail/http2/session.hpp>

#if CSERVE_HTTP2

#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/http2/tunnel.hpp>
#include <cserve/detail/websocket/session.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/error.hpp>
#include <cserve/proxy_headers.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/system/system_error.hpp>

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

namespace cserve::detail {

namespace http2 {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// What one read takes at most.
inline constexpr std::size_t read_size = 16 * 1024;

// What one write gathers at most: the frames of many streams go out together.
inline constexpr std::size_t write_gather = 64 * 1024;

// The connection's receive window: each stream's stays at the default 64 KiB, opened as its
// application consumes the body, so a connection buffers at most (streams x 64 KiB) of bodies.
inline constexpr std::int32_t connection_window = 16 * 1024 * 1024;

// Connection-specific headers (RFC 9113 §8.2.2): an application's are dropped.
inline bool
hop_by_hop(std::string_view name) noexcept
{
    using boost::beast::iequals;
    return iequals(name, "connection") || iequals(name, "keep-alive") || iequals(name, "proxy-connection") ||
           iequals(name, "transfer-encoding") || iequals(name, "upgrade");
}

inline nghttp2_nv
make_nv(std::string_view name, std::string_view value) noexcept
{
    return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

// Header names an application gives in any case: HTTP/2 sends them in lower case.
inline std::string
lower(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

} // namespace http2

//------------------------------------------------------------------------------
// nghttp2's callbacks: they find the session in user_data and the stream by its id.

template <class Stream>
struct http2_session<Stream>::callbacks {
    static http2_session&
    self(void* p) noexcept
    {
        return *static_cast<http2_session*>(p);
    }

    static int
    on_begin_headers(nghttp2_session*, nghttp2_frame const* frame, void* user) noexcept
    {
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0;
        auto& s = self(user);
        try {
            auto st = std::make_shared<stream_type>(s, frame->hd.stream_id);
            nghttp2_session_set_stream_user_data(s.session_, frame->hd.stream_id, st.get());
            s.streams_.emplace(frame->hd.stream_id, std::move(st));
            s.idle_.cancel();
        } catch (...) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; // out of memory: this stream is reset
        }
        return 0;
    }

    static int
    on_header(nghttp2_session*, nghttp2_frame const* frame, std::uint8_t const* name, std::size_t namelen,
              std::uint8_t const* value, std::size_t valuelen, std::uint8_t, void* user) noexcept
    {
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0; // trailers: nothing in ASGI takes them
        auto* st = self(user).find(frame->hd.stream_id);
        if (!st)
            return 0;
        try {
            st->add_header({reinterpret_cast<char const*>(name), namelen},
                           {reinterpret_cast<char const*>(value), valuelen});
        } catch (...) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return 0;
    }

    static int
    on_frame_recv(nghttp2_session*, nghttp2_frame const* frame, void* user) noexcept
    {
        auto& s = self(user);
        switch (frame->hd.type) {
        case NGHTTP2_HEADERS: {
            auto* st = s.find(frame->hd.stream_id);
            if (!st)
                return 0;
            if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
                st->in_end_ = true;
                st->wake();
            }
            if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && !st->started_) {
                auto it = s.streams_.find(frame->hd.stream_id);
                if (it != s.streams_.end())
                    s.start_stream(it->second);
            }
            return 0;
        }
        case NGHTTP2_DATA:
            if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
                if (auto* st = s.find(frame->hd.stream_id)) {
                    st->in_end_ = true;
                    st->wake();
                }
            }
            return 0;
        case NGHTTP2_SETTINGS:
            if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && s.upgraded_waiting_) {
                auto st = std::move(s.upgraded_waiting_);
                s.upgraded_waiting_.reset();
                s.idle_.cancel();
                if (!st->closed_)
                    s.start_stream(st);
            }
            return 0;
        case NGHTTP2_PING:
            if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && s.awaiting_ping_) {
                s.awaiting_ping_ = false;
                s.arm_ping(); // the next one an interval from now
            }
            return 0;
        case NGHTTP2_RST_STREAM: {
            // A stream reset before its response completed counts against the rapid-reset
            // budget.
            auto* st = s.find(frame->hd.stream_id);
            if (st && !st->x_.completed()) {
                auto now = clock::now();
                std::chrono::duration<double> dt = now - s.reset_time_;
                s.reset_time_ = now;
                // Streams a client may reset before their responses complete: a burst of twice
                // --http2-max-reset-rate, then that many a second (the "rapid reset" attack,
                // CVE-2023-44487). nghttp2 has a looser limit of its own (1000, then 33/s).
                double const rate = s.srv_.cfg_.http2_max_reset_rate;
                s.reset_tokens_ = std::min(2 * rate, s.reset_tokens_ + dt.count() * rate);
                s.reset_tokens_ -= 1;
                if (s.reset_tokens_ < 0) {
                    s.srv_.log_.log(log_level::warning,
                                    "HTTP/2 client " + s.client_text_ + " resets streams too fast: closing");
                    s.go_away(NGHTTP2_ENHANCE_YOUR_CALM);
                }
            }
            return 0;
        }
        default:
            return 0;
        }
    }

    static int
    on_data_chunk_recv(nghttp2_session* session, std::uint8_t, std::int32_t id, std::uint8_t const* data,
                       std::size_t len, void* user) noexcept
    {
        auto& s = self(user);
        auto* st = s.find(id);
        if (!st || st->app_done_ || st->x_.body_invalid() || st->x_.disconnected()) {
            // Nobody will read it: the window opens again at once.
            nghttp2_session_consume(session, id, len);
            return 0;
        }
        st->received_ += len;
        if (auto const& limit = s.srv_.cfg_.limit_request_body; limit && st->received_ > *limit && !st->websocket_) {
            st->x_.body_too_large(s.srv_.log_);
            nghttp2_session_consume(session, id, len + st->in_.size());
            st->in_.clear();
            st->wake();
            return 0;
        }
        try {
            st->in_.append(reinterpret_cast<char const*>(data), len);
        } catch (...) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        st->wake();
        return 0;
    }

    static int
    on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t error_code, void* user) noexcept
    {
        auto& s = self(user);
        auto it = s.streams_.find(id);
        if (it == s.streams_.end())
            return 0;
        auto& st = *it->second;
        st.closed_by_peer(error_code);
        if (!st.started_ || st.app_done_)
            s.streams_.erase(it);
        if (s.streams_.empty())
            s.arm_idle();
        return 0;
    }

    static ssize_t
    read_data(nghttp2_session* session, std::int32_t id, std::uint8_t* buf, std::size_t length,
              std::uint32_t* flags, nghttp2_data_source* source, void*) noexcept
    {
        auto& st = *static_cast<stream_type*>(source->ptr);
        auto avail = st.out_.size() - st.out_pos_;
        if (avail == 0 && !st.out_end_) {
            st.data_deferred_ = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        auto n = std::min(avail, length);
        std::memcpy(buf, st.out_.data() + st.out_pos_, n);
        st.out_pos_ += n;
        st.taken_ += n;
        if (st.out_pos_ == st.out_.size()) {
            st.out_.clear();
            st.out_pos_ = 0;
            st.wake(); // a send() waiting for nghttp2 to take its bytes
            if (st.out_end_) {
                if (st.x_.trailers()) {
                    if (!st.trailers_) {
                        if (n == 0) {
                            st.data_deferred_ = true;
                            return NGHTTP2_ERR_DEFERRED;
                        }
                        return static_cast<ssize_t>(n); // the trailers come later
                    }
                    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                    std::vector<nghttp2_nv> nv;
                    nv.reserve(st.trailers_->size());
                    for (auto const& [name, value] : *st.trailers_)
                        nv.push_back(http2::make_nv(name, value));
                    if (nghttp2_submit_trailer(session, id, nv.data(), nv.size()) != 0)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                } else {
                    *flags |= NGHTTP2_DATA_FLAG_EOF;
                }
            }
        }
        return static_cast<ssize_t>(n);
    }

    static int
    on_frame_send(nghttp2_session* session, nghttp2_frame const* frame, void* user) noexcept
    {
        // A WebSocket's stream is done once our side has ended (the closing handshake, or a
        // denial): a client that keeps its side open is told to stop, without error
        // (RFC 9113 §8.1), and the stream is freed.
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
            (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
            return 0;
        auto* st = self(user).find(frame->hd.stream_id);
        if (st && st->websocket_ && !st->in_end_ && !st->closed_)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }

    static int
    on_error(nghttp2_session*, int, char const* msg, std::size_t len, void* user) noexcept
    {
        auto& s = self(user);
        if (s.srv_.log_.enabled(log_level::debug))
            s.srv_.log_.log(log_level::debug, "HTTP/2 client " + s.client_text_ + ": " + std::string(msg, len));
        return 0;
    }

    static nghttp2_session_callbacks*
    make()
    {
        nghttp2_session_callbacks* cb = nullptr;
        if (nghttp2_session_callbacks_new(&cb) != 0)
            throw std::bad_alloc();
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
        nghttp2_session_callbacks_set_error_callback2(cb, on_error);
        return cb;
    }
};

//------------------------------------------------------------------------------
// The session.

template <class Stream>
http2_session<Stream>::http2_session(http2_start<Stream> start)
    : srv_(start.srv)
    , stream_(start.stream)
    , buffered_(std::move(start.buffered))
    , client_(std::move(start.client))
    , server_(std::move(start.server))
    , client_text_(std::move(start.client_text))
    , upgrade_(std::move(start.upgrade))
    , owner_(std::move(start.owner))
    , write_wake_(stream_.get_executor(), clock::time_point::max())
    , idle_(stream_.get_executor())
    , done_(stream_.get_executor(), clock::time_point::max())
    , write_timer_(stream_.get_executor())
    , ping_timer_(stream_.get_executor())
    , reset_time_(clock::now())
    , reset_tokens_(2.0 * srv_.cfg_.http2_max_reset_rate)
{
}

template <class Stream>
http2_session<Stream>::~http2_session()
{
    if (session_)
        nghttp2_session_del(session_);
}

template <class Stream>
typename http2_session<Stream>::stream_type*
http2_session<Stream>::find(std::int32_t id) noexcept
{
    return static_cast<stream_type*>(nghttp2_session_get_stream_user_data(session_, id));
}

template <class Stream>
task<>
http2_session<Stream>::run()
{
    auto const& cfg = srv_.cfg_;
    metrics_registry::add<std::uint64_t>(srv_.metrics_.local().http2_connections, 1);
    {
        struct cb_guard {
            nghttp2_session_callbacks* p;
            ~cb_guard() { nghttp2_session_callbacks_del(p); }
        } cb{callbacks::make()};
        nghttp2_option* opt = nullptr;
        if (nghttp2_option_new(&opt) != 0)
            throw std::bad_alloc();
        struct opt_guard {
            nghttp2_option* p;
            ~opt_guard() { nghttp2_option_del(p); }
        } og{opt};
        // The application's reads open the stream's window (receive()), not the arrival of
        // the bytes: a client sends a body only as fast as it is consumed.
        nghttp2_option_set_no_auto_window_update(opt, 1);
        if (nghttp2_session_server_new2(&session_, cb.p, this, opt) != 0)
            throw std::bad_alloc();
    }
    auto const header_limit = std::min<std::size_t>(cfg.max_header_bytes, std::numeric_limits<std::uint32_t>::max());
    // With WebSockets on, extended CONNECT (RFC 8441) is advertised: a WebSocket can share
    // the connection.
    std::array<nghttp2_settings_entry, 3> settings{{
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, static_cast<std::uint32_t>(cfg.http2_max_concurrent_streams)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(header_limit)},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    }};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), cfg.ws ? 3 : 2);
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, http2::connection_window);

    if (upgrade_)
        start_upgraded();
    if (!buffered_.empty())
        feed(buffered_.data(), buffered_.size());
    std::string().swap(buffered_);
    if (streams_.empty())
        arm_idle();
    if (drain_pending_)
        begin_drain();

    auto self = this->shared_from_this();
    net::co_spawn(stream_.get_executor(), write_loop(self), [self](std::exception_ptr e) {
        if (e)
            self->srv_.log_session_failure(e);
    });
    arm_ping();
    co_await read_loop();
    reading_ = false;
    ping_timer_.cancel();
    // Whatever ended the reading, the writer says its last (a GOAWAY) or stops, and the
    // streams' applications finish: they see the client gone unless the session ended
    // cleanly with their responses complete.
    for (;;) {
        // Nothing more will arrive, not even a reset: a stream whose response is not complete
        // has lost its client (a connection error, the peer gone, or a forced close).
        for (auto& [id, st] : streams_)
            if (!st->x_.completed() && !st->x_.disconnected()) {
                st->x_.client_gone();
                st->wake();
            }
        wake_writer();
        if (running_ == 0 && !writing_)
            break;
        co_await done_.async_wait(http2::use_tuple);
    }
    idle_.cancel();
    streams_.clear();
}

template <class Stream>
void
http2_session<Stream>::feed(char const* data, std::size_t n)
{
    auto rv = nghttp2_session_mem_recv(session_, reinterpret_cast<std::uint8_t const*>(data), n);
    if (rv < 0) {
        // A fatal error: a bad preface, a flood nghttp2 caught, or no memory. It has queued its
        // GOAWAY where the protocol asks for one; nothing more is read.
        if (srv_.log_.enabled(log_level::debug))
            srv_.log_.log(log_level::debug,
                          "HTTP/2 client " + client_text_ + ": " + nghttp2_strerror(static_cast<int>(rv)));
        if (rv == NGHTTP2_ERR_FLOODED) {
            // The peer does not read what it asks for (PING or SETTINGS acknowledgements): a
            // GOAWAY would wait behind them. The connection ends now.
            srv_.log_.log(log_level::warning, "HTTP/2 client " + client_text_ + " floods the connection: closing");
            failed_ = true;
            boost::system::error_code ec;
            stream_.lowest_layer().cancel(ec);
            done_.cancel();
        } else {
            go_away(NGHTTP2_PROTOCOL_ERROR);
        }
    }
    wake_writer();
}

template <class Stream>
task<>
http2_session<Stream>::read_loop()
{
    if constexpr (ops::try_io) {
        // Waits for the socket, then reads what it has into a buffer of the thread's: an idle
        // connection holds no read buffer. nghttp2 takes the bytes before anything else runs.
        static thread_local std::unique_ptr<char[]> buf(new char[http2::read_size]);
        while (!closed_ && !failed_ && !stop_reading_) {
            boost::system::error_code ec;
            auto n = ops::try_read(stream_, net::buffer(buf.get(), http2::read_size), ec);
            if (ec == net::error::would_block || ec == net::error::try_again) {
                auto [wec] = co_await stream_.lowest_layer().async_wait(net::socket_base::wait_read, http2::use_tuple);
                if (wec) {
                    if (!stop_reading_)
                        failed_ = true; // the connection was closed
                    break;
                }
                continue;
            }
            if (ec) {
                failed_ = true; // the peer left
                break;
            }
            feed(buf.get(), n);
            if (!nghttp2_session_want_read(session_))
                break; // a GOAWAY is on its way, and no stream is open
        }
    } else {
        std::unique_ptr<char[]> buf(new char[http2::read_size]);
        while (!closed_ && !failed_ && !stop_reading_) {
            auto [ec, n] = co_await stream_.async_read_some(net::buffer(buf.get(), http2::read_size), http2::use_tuple);
            if (ec) {
                if (!stop_reading_)
                    failed_ = true; // the peer left (or the connection was closed)
                break;
            }
            feed(buf.get(), n);
            if (!nghttp2_session_want_read(session_))
                break;
        }
    }
}

template <class Stream>
task<>
http2_session<Stream>::write_loop(std::shared_ptr<http2_session>)
{
    for (;;) {
        if (failed_ || closed_)
            break;
        out_.clear();
        for (;;) {
            std::uint8_t const* data = nullptr;
            auto n = nghttp2_session_mem_send(session_, &data);
            if (n < 0) {
                failed_ = true;
                break;
            }
            if (n == 0)
                break;
            out_.append(reinterpret_cast<char const*>(data), static_cast<std::size_t>(n));
            if (out_.size() >= http2::write_gather)
                break;
        }
        if (failed_)
            break;
        if (!out_.empty()) {
            std::size_t done = 0;
            boost::system::error_code ec;
            if constexpr (ops::try_io)
                done = ops::try_write(stream_, net::buffer(out_), ec);
            while (!ec && done < out_.size()) {
                // The peer reads what it is sent: each write that waits has timeout_write to
                // make progress, else the connection is dropped.
                write_timer_.expires_after(srv_.cfg_.timeout_write);
                write_timer_.async_wait([w = this->weak_from_this()](boost::system::error_code tec) {
                    if (tec)
                        return;
                    if (auto s = w.lock())
                        s->stalled();
                });
                auto [wec, n] = co_await stream_.async_write_some(net::buffer(out_) + done, http2::use_tuple);
                write_timer_.cancel();
                ec = wec;
                done += n;
            }
            if (ec) {
                failed_ = true;
                break;
            }
            if (out_.capacity() > http2::write_gather * 2)
                std::string().swap(out_); // a burst is over: an idle connection keeps little
            continue;
        }
        if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_))
            break; // a GOAWAY went out and no stream is open: the session is over
        co_await write_wake_.async_wait(http2::use_tuple);
    }
    writing_ = false;
    if (reading_) {
        // The reader waits for bytes that no longer matter.
        stop_reading_ = true;
        boost::system::error_code ec;
        stream_.lowest_layer().cancel(ec);
    }
    done_.cancel();
}

template <class Stream>
void
http2_session<Stream>::arm_ping(std::optional<std::chrono::milliseconds> after) noexcept
{
    // While streams are open (a WebSocket, a long response), a PING every --ws-ping-interval;
    // a peer that does not acknowledge it within --ws-ping-timeout is gone, and the connection
    // with it. An idle connection has --timeout-keep-alive instead. A timer with a plain
    // handler: an idle connection holds one pending wait, no coroutine.
    if (!after)
        after = srv_.cfg_.ws_ping_interval;
    if (!after || !reading_ || closed_ || failed_)
        return;
    ping_timer_.expires_after(*after);
    ping_timer_.async_wait([w = this->weak_from_this()](boost::system::error_code ec) {
        if (auto s = w.lock(); s && !ec)
            s->on_ping_timer();
    });
}

template <class Stream>
void
http2_session<Stream>::on_ping_timer() noexcept
{
    auto const& cfg = srv_.cfg_;
    if (!reading_ || closed_ || failed_)
        return;
    if (awaiting_ping_) {
        awaiting_ping_ = false;
        drop("did not answer a keepalive PING within --ws-ping-timeout");
        return;
    }
    if (streams_.empty() || draining_) {
        arm_ping();
        return;
    }
    if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) != 0)
        return;
    wake_writer();
    if (!cfg.ws_ping_timeout) {
        arm_ping();
        return;
    }
    awaiting_ping_ = true; // the ACK re-arms the timer; this wait ends the connection
    arm_ping(*cfg.ws_ping_timeout);
}

template <class Stream>
void
http2_session<Stream>::start_stream(std::shared_ptr<stream_type> const& st)
{
    st->started_ = true;
    ++running_;
    ++streams_total_;
    if (streams_total_ >= srv_.cfg_.http2_max_requests)
        begin_drain(); // this connection has served its share: the client opens another
    // The stream outlives its coroutine: co_spawn's machinery still uses the slot after the
    // coroutine's frame (and its reference) is gone.
    net::co_spawn(stream_.get_executor(), run_stream(st),
                  net::bind_cancellation_slot(st->cancel_.slot(), [self = this->shared_from_this(), st](std::exception_ptr e) {
                      st->cancel_.slot().clear();
                      if (e)
                          self->srv_.log_session_failure(e);
                  }));
}

template <class Stream>
void
http2_session<Stream>::start_upgraded()
{
    // RFC 7540 §3.2: the request that asked for the upgrade is stream 1, half-closed.
    auto& up = *upgrade_;
    auto st = std::make_shared<stream_type>(*this, 1);
    auto rv = nghttp2_session_upgrade2(session_, reinterpret_cast<std::uint8_t const*>(up.settings.data()),
                                       up.settings.size(), up.method == "HEAD", st.get());
    if (rv != 0)
        throw boost::system::system_error(make_error_code(error::invalid_header),
                                          std::string("HTTP2-Settings: ") + nghttp2_strerror(rv));
    st->add_header(":method", up.method);
    st->add_header(":path", up.target);
    st->add_header(":scheme", http_scheme<Stream>);
    for (auto const& [name, value] : up.headers)
        st->add_header(name, value);
    st->in_ = std::move(up.body);
    st->received_ = st->in_.size();
    st->in_end_ = true;
    st->upgraded_ = true; // the body arrived over HTTP/1.1: no window to open for it
    streams_.emplace(1, st);
    upgrade_.reset();
    // Its application starts when the client's preface (its SETTINGS) arrives: a response
    // sent right behind the 101 would reach a client still reading HTTP/1.1, and curl keeps
    // only 32 KiB of what follows the 101. A client that never sends the preface has
    // --timeout-keep-alive.
    upgraded_waiting_ = st;
    arm_idle();
}

template <class Stream>
task<>
http2_session<Stream>::run_stream(std::shared_ptr<stream_type> st)
{
    auto self = this->shared_from_this();
    struct finish {
        http2_session& s;
        stream_type& st;
        ~finish()
        {
            st.meter_.end();
            st.app_done_ = true;
            if (!st.in_.empty() && !s.closed_ && !st.upgraded_) {
                nghttp2_session_consume(s.session_, st.id_, st.in_.size()); // never to be read
                st.in_.clear();
            }
            if (st.closed_)
                s.streams_.erase(st.id_);
            if (s.streams_.empty())
                s.arm_idle();
            --s.running_;
            s.wake_writer();
            s.done_.cancel();
        }
    } done{*this, *st};

    st->meter_.begin(srv_.metrics_, st->scope_, st->x_);
    metrics_registry::add<std::uint64_t>(srv_.metrics_.local().http2_streams, 1);
    int status = st->build_scope();
    if (status == 0 && st->has_length_ && srv_.cfg_.limit_request_body && st->declared_length_ > *srv_.cfg_.limit_request_body)
        status = 413;
    // An h2c upgrade's request was counted (and, if the last, drained) over HTTP/1.1.
    if (status == 0 && !st->upgraded_ && srv_.count_request())
        begin_drain(); // the last request this server takes
    if (status == 0 && srv_.over_capacity())
        status = 503;
    if (status != 0) {
        st->submit_simple(status, error_text(status));
        co_return;
    }
    if (st->websocket_) {
        st->meter_.cancel(); // counted as a WebSocket
        co_await run_websocket(st);
        co_return;
    }
    // The scope is this stream's alone: nothing to restore afterwards, as HTTP/1.1 must.
    if (srv_.trusted_)
        apply_proxy_headers(st->scope_, *srv_.trusted_);
    std::exception_ptr failure;
    try {
        co_await srv_.app_(st->scope_, cserve::receive{*st}, cserve::send{*st});
    } catch (...) {
        failure = std::current_exception();
    }
    if (closed_ || failed_)
        co_return;
    co_await st->after_app(std::move(failure));
}

template <class Stream>
task<>
http2_session<Stream>::run_websocket(std::shared_ptr<stream_type> st)
{
    // The stream carries a WebSocket: the session reads and writes it through a tunnel, and
    // the stream answers its handshake (200, or the application's denial).
    st->tunnel_ = std::make_shared<http2_tunnel>(*st, stream_.get_executor(), ops::secure, ops::tls(stream_),
                                                 srv_.cfg_.timeout_write);
    request_buffer none; // a WebSocket's first frames arrive as the stream's DATA, read in turn
    auto ws = std::make_shared<websocket_session<http2_tunnel>>(upgrade<http2_tunnel>{
        .srv = srv_,
        .stream = *st->tunnel_,
        .buffered = none,
        .scope = st->scope_,
        .target = st->path_.in(st->block_),
        .version = 20,
        .client = client_text_,
        .host = *st,
        .owner = st,
    });
    st->ws_ = ws;
    if (srv_.log_.enabled(log_level::debug))
        srv_.log_.log(log_level::debug, "HTTP/2 client " + client_text_ + ": a WebSocket on stream " +
                                            std::to_string(st->id_) + " (RFC 8441)");
    co_await ws->run();
    st->ws_.reset();
    if (!closed_ && !failed_ && !st->closed_) {
        // The WebSocket is over, and our side of the stream ends: with END_STREAM after a
        // client that ended its own, else with RST_STREAM(CANCEL). An ended side (the
        // closing handshake's, a denial's) is taken care of by on_frame_send.
        if (!st->submitted_)
            st->submit_simple(500, error_text(500));
        else if (st->tunnel_->open() && !st->out_end_) {
            if (st->in_end_)
                st->tunnel_end();
            else
                nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, st->id_, NGHTTP2_CANCEL);
        }
        wake_writer();
    }
    st->tunnel_->detach();
}

template <class Stream>
void
http2_session<Stream>::arm_idle() noexcept
{
    if (closed_ || failed_ || !reading_)
        return;
    // No stream open: the connection has timeout_keep_alive to start one.
    idle_.expires_after(srv_.cfg_.timeout_keep_alive);
    idle_.async_wait([w = this->weak_from_this()](boost::system::error_code ec) {
        if (ec)
            return;
        if (auto s = w.lock(); s && (s->streams_.empty() || s->upgraded_waiting_))
            s->go_away(NGHTTP2_NO_ERROR);
    });
}

template <class Stream>
void
http2_session<Stream>::go_away(std::uint32_t error) noexcept
{
    if (!session_ || closed_)
        return;
    if (error == NGHTTP2_NO_ERROR)
        nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                              NGHTTP2_NO_ERROR, nullptr, 0);
    else
        nghttp2_session_terminate_session(session_, error);
    wake_writer();
}

template <class Stream>
void
http2_session<Stream>::stalled() noexcept
{
    if (closed_ || failed_)
        return;
    drop("read nothing of its responses for --timeout-write");
}

template <class Stream>
void
http2_session<Stream>::drop(std::string_view why) noexcept
{
    if (closed_ || failed_)
        return;
    srv_.log_.log(log_level::warning, "HTTP/2 client " + client_text_ + " " + std::string(why) + ": closing");
    failed_ = true;
    // Closed now, not when the streams' applications finish: the peer sees the end at once.
    boost::system::error_code ec;
    stream_.lowest_layer().close(ec);
    for (auto& [id, st] : streams_) {
        st->x_.client_gone();
        st->wake();
    }
    wake_writer();
    done_.cancel();
}

template <class Stream>
void
http2_session<Stream>::begin_drain() noexcept
{
    if (!session_) {
        drain_pending_ = true; // run() has not begun: it drains at once
        return;
    }
    if (draining_)
        return;
    draining_ = true;
    // GOAWAY with the last stream taken: those finish, later ones are refused, and the session
    // ends when the last one closes (nghttp2 then wants neither to read nor to write). Open
    // WebSockets close with 1012, as over HTTP/1.1.
    go_away(NGHTTP2_NO_ERROR);
    for (auto& [id, st] : streams_)
        if (st->ws_)
            st->ws_->begin_drain();
}

template <class Stream>
void
http2_session<Stream>::force_close() noexcept
{
    if (closed_)
        return;
    closed_ = true;
    for (auto& [id, st] : streams_) {
        st->x_.client_gone();
        st->wake();
        st->cancel_.emit(net::cancellation_type::terminal);
    }
    wake_writer();
    done_.cancel();
}

//------------------------------------------------------------------------------
// A stream.

template <class Stream>
http2_stream<Stream>::http2_stream(http2_session<Stream>& s, std::int32_t id)
    : s_(s)
    , id_(id)
    , wake_(s.stream_.get_executor(), std::chrono::steady_clock::time_point::max())
{
}

template <class Stream>
bool
http2_stream<Stream>::add_header(std::string_view name, std::string_view value)
{
    if (too_large_)
        return false;
    // RFC 9113 §6.5.2: each field counts its name, its value and 32.
    header_bytes_ += name.size() + value.size() + 32;
    if (header_bytes_ > s_.srv_.cfg_.max_header_bytes) {
        too_large_ = true;
        block_.clear();
        block_.shrink_to_fit();
        fields_.clear();
        return false;
    }
    auto add = [this](std::string_view v) {
        span sp{static_cast<std::uint32_t>(block_.size()), static_cast<std::uint32_t>(v.size())};
        block_ += v;
        return sp;
    };
    if (!name.empty() && name.front() == ':') {
        if (name == ":method")
            method_ = add(value);
        else if (name == ":path")
            path_ = add(value);
        else if (name == ":authority")
            authority_ = add(value);
        else if (name == ":protocol")
            protocol_ = add(value); // nghttp2 takes it only once extended CONNECT is advertised
        return true; // :scheme is the connection's; nghttp2 refuses the rest
    }
    if (name == "host")
        has_host_ = true;
    else if (name == "content-length") {
        std::uint64_t v = 0;
        auto r = std::from_chars(value.data(), value.data() + value.size(), v);
        if (r.ec == std::errc() && r.ptr == value.data() + value.size()) {
            declared_length_ = v;
            has_length_ = true;
        }
    }
    auto n = add(name);
    auto v = add(value);
    fields_.emplace_back(n, v);
    return true;
}

template <class Stream>
int
http2_stream<Stream>::build_scope()
{
    auto& s = scope_;
    auto const& cfg = s_.srv_.cfg_;
    s.type = scope_type::http;
    s.http_version = "2";
    s.scheme = http_scheme<Stream>;
    s.root_path = cfg.root_path;
    if constexpr (stream_ops<Stream>::secure)
        s.extensions = {"http.response.trailers", "http.response.early_hint", "tls"};
    else
        s.extensions = {"http.response.trailers", "http.response.early_hint"};
    s.tls_connection = stream_ops<Stream>::tls(s_.stream_);
    s.client = s_.client_;
    s.server = s_.server_;
    if (auto const* state = s_.srv_.lifespan_state())
        s.state = *state;
    if (too_large_) {
        // The header block was dropped as it grew: nothing of it is left to show.
        s.method = "GET";
        s.raw_path = "/";
        s.path = "/";
        x_.begin(false, true, in_end_ && in_.empty(), false);
        return 431;
    }
    s.method = method_.in(block_);
    // The body is complete only once it is all read: it may have arrived (an h2c upgrade's,
    // DATA that came before the application started) and wait in in_.
    x_.begin(s.method == "HEAD", true, in_end_ && in_.empty(), false);
    if (s.method == "CONNECT") {
        // Only an extended CONNECT for a WebSocket (RFC 8441 §4) is served; nothing is proxied.
        if (!cfg.ws || !boost::beast::iequals(protocol_.in(block_), "websocket"))
            return 501;
        websocket_ = true;
    }
    std::string_view path = path_.in(block_);
    if (path.empty() || (path.front() != '/' && !(path == "*" && s.method == "OPTIONS"))) {
        s.raw_path = "/";
        s.path = "/";
        return 400;
    }
    if (auto hash = path.find('#'); hash != std::string_view::npos)
        path = path.substr(0, hash);
    std::string_view query;
    if (auto q = path.find('?'); q != std::string_view::npos) {
        query = path.substr(q + 1);
        path = path.substr(0, q);
    }
    if (path.empty())
        path = "/";
    s.raw_path.assign(cfg.root_path);
    s.raw_path += path;
    s.path.assign(cfg.root_path);
    http1::append_percent_decoded(s.path, path);
    s.query_string = query;
    s.headers.clear();
    s.headers.reserve(fields_.size() + 1);
    // :authority stands in for Host (RFC 9113 §8.3.1) for applications that read headers.
    if (!has_host_ && authority_.len)
        s.headers.emplace_back("host", authority_.in(block_));
    for (auto const& [name, value] : fields_)
        s.headers.emplace_back(name.in(block_), value.in(block_));
    return 0;
}

template <class Stream>
task<>
http2_stream<Stream>::wait()
{
    auto [ec] = co_await wake_.async_wait(http2::use_tuple);
    (void)ec;
    auto cs = co_await net::this_coro::cancellation_state;
    if (cs.cancelled() != net::cancellation_type::none)
        throw boost::system::system_error(net::error::operation_aborted);
}

template <class Stream>
void
http2_stream<Stream>::closed_by_peer(std::uint32_t) noexcept
{
    closed_ = true;
    if (!x_.completed())
        x_.client_gone(); // reset by the client, or the connection is going
    wake();
}

template <class Stream>
task<event>
http2_stream<Stream>::receive()
{
    if (s_.closed_ || s_.failed_)
        x_.client_gone();
    switch (x_.next_receive()) {
    case exchange::receive_step::read_body: {
        for (;;) {
            if (x_.disconnected() || x_.body_invalid())
                co_return http::disconnect{};
            if (!in_.empty() || in_end_)
                break;
            co_await wait();
        }
        http::request r;
        if (in_.size() <= http1::body_chunk) {
            r.body = std::move(in_);
            in_.clear();
        } else {
            r.body.assign(in_, 0, http1::body_chunk);
            in_.erase(0, http1::body_chunk);
        }
        if (!r.body.empty() && !upgraded_) {
            // The window opens (the connection's even when the stream is gone).
            nghttp2_session_consume(s_.session_, id_, r.body.size());
            s_.wake_writer(); // the WINDOW_UPDATE
        }
        x_.received(r.body.size());
        r.more_body = !(in_end_ && in_.empty());
        if (!r.more_body)
            x_.body_received();
        co_return r;
    }
    case exchange::receive_step::empty_request:
        co_return http::request{};
    case exchange::receive_step::wait_disconnect:
        break;
    }
    while (!x_.disconnected() && !x_.completed())
        co_await wait();
    co_return http::disconnect{};
}

template <class Stream>
task<>
http2_stream<Stream>::send(event e)
{
    if (s_.closed_ || s_.failed_ || x_.disconnected())
        throw client_disconnected();
    x_.check_send(e);
    if (auto* start = std::get_if<http::response_start>(&e)) {
        x_.start(*start, false);
        head_ = std::move(*start);
        co_return; // the head goes out with the first body event, or is replaced by an error
    }
    if (auto* body = std::get_if<http::response_body>(&e)) {
        bool const whole = x_.keep_alive();
        x_.body(body->body.size(), body->more_body, s_.srv_.log_);
        bool const short_body = whole && !x_.keep_alive(); // ended short of its content-length
        bool const more = body->more_body;
        if (x_.no_body()) {
            if (!submitted_)
                submit_head(true);
        } else if (!submitted_) {
            if (!more && body->body.empty() && !x_.trailers()) {
                submit_head(true);
            } else {
                out_ = std::move(body->body);
                out_end_ = !more;
                submit_head(false);
            }
        } else {
            if (out_.empty())
                out_ = std::move(body->body);
            else
                out_ += body->body;
            out_end_ = !more;
            if (data_deferred_) {
                data_deferred_ = false;
                nghttp2_session_resume_data(s_.session_, id_);
            }
        }
        if (short_body)
            nghttp2_submit_rst_stream(s_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
        if (x_.body_done() && !x_.trailers())
            x_.complete();
        s_.wake_writer();
        // Backpressure: a body that is not the last waits until nghttp2 has taken it, which
        // it does only as fast as the peer's window opens.
        if (more && !out_.empty()) {
            // ... or drops the connection when the peer keeps its window shut for timeout_write.
            auto const timeout = s_.srv_.cfg_.timeout_write;
            auto mark = taken_;
            auto deadline = std::chrono::steady_clock::now() + timeout;
            while (!out_.empty() && !x_.disconnected() && !s_.closed_ && !s_.failed_) {
                wake_.expires_at(deadline);
                co_await wait();
                if (taken_ != mark) {
                    mark = taken_;
                    deadline = std::chrono::steady_clock::now() + timeout;
                } else if (std::chrono::steady_clock::now() >= deadline) {
                    s_.stalled();
                }
            }
            wake_.expires_at(std::chrono::steady_clock::time_point::max());
        }
        if (x_.disconnected() || s_.closed_ || s_.failed_)
            if (more)
                throw client_disconnected();
        co_return;
    }
    if (auto* hint = std::get_if<http::response_early_hint>(&e)) {
        // A non-final HEADERS frame (RFC 8297 over RFC 9113 §8.1).
        if (hint->links.empty())
            co_return;
        std::vector<nghttp2_nv> nv;
        nv.reserve(hint->links.size() + 1);
        nv.push_back(http2::make_nv(":status", "103"));
        for (auto const& link : hint->links)
            nv.push_back(http2::make_nv("link", link));
        nghttp2_submit_headers(s_.session_, NGHTTP2_FLAG_NONE, id_, nullptr, nv.data(), nv.size(), nullptr);
        s_.wake_writer();
        co_return;
    }
    auto& t = std::get<http::response_trailers>(e);
    check_headers(t.headers, "response trailer");
    header_list list;
    for (auto const& [name, value] : t.headers)
        if (!http2::hop_by_hop(name))
            list.emplace_back(http2::lower(name), value);
    trailers_ = std::move(list);
    x_.complete();
    if (data_deferred_) {
        data_deferred_ = false;
        nghttp2_session_resume_data(s_.session_, id_);
    }
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::submit_head(bool end_stream)
{
    auto& start = *head_;
    auto status = std::to_string(start.status);
    std::vector<nghttp2_nv> nv;
    std::vector<std::string> names; // the application's names, lower-cased
    // Every name is kept in `names`, which must not reallocate: nv points into its strings.
    auto const count = start.headers.size() + 2 + s_.srv_.cfg_.headers.size();
    nv.reserve(count + 1);
    names.reserve(count);
    nv.push_back(http2::make_nv(":status", status));
    auto const date = http_date();
    for_each_policy_header(head_policy::of(s_.srv_.cfg_), date, [&nv, &names](std::string_view name, std::string_view value) {
        if (http2::hop_by_hop(name))
            return;
        names.push_back(http2::lower(name));
        nv.push_back(http2::make_nv(names.back(), value));
    });
    for (auto const& [name, value] : start.headers) {
        if (http2::hop_by_hop(name))
            continue;
        names.push_back(http2::lower(name));
        nv.push_back(http2::make_nv(names.back(), value));
    }
    nghttp2_data_provider provider{};
    provider.source.ptr = this;
    provider.read_callback = http2_session<Stream>::callbacks::read_data;
    int rv = nghttp2_submit_response(s_.session_, id_, nv.data(), nv.size(), end_stream ? nullptr : &provider);
    submitted_ = true;
    if (x_.commit())
        access_log();
    if (rv != 0)
        throw boost::system::system_error(make_error_code(error::invalid_header),
                                          std::string("HTTP/2 response: ") + nghttp2_strerror(rv));
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::submit_simple(int status, std::string_view body)
{
    if (closed_ || submitted_)
        return;
    try {
        x_ = exchange();
        x_.begin(false, true, true, false);
        head_ = simple_response(status, body);
        x_.start(*head_, false);
        out_.assign(body);
        out_end_ = true;
        x_.body(body.size(), false, s_.srv_.log_);
        x_.complete();
        submit_head(false);
    } catch (...) {
        nghttp2_submit_rst_stream(s_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
        s_.wake_writer();
    }
}

template <class Stream>
task<>
http2_stream<Stream>::after_app(std::exception_ptr failure)
{
    if (x_.completed() && !failure && !x_.disconnected())
        co_return;
    auto ending = x_.finish(std::move(failure), s_.srv_.log_);
    if (closed_)
        co_return;
    if (ending.status != 0 && !submitted_) {
        submit_simple(ending.status, ending.body);
        co_return;
    }
    if (!x_.completed()) {
        // A response that cannot be completed: the stream is reset, the connection goes on.
        nghttp2_submit_rst_stream(s_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
        s_.wake_writer();
    }
}

template <class Stream>
http2_stream<Stream>::~http2_stream()
{
    if (tunnel_)
        tunnel_->detach();
}

template <class Stream>
task<>
http2_stream<Stream>::http_send(event e)
{
    co_await send(std::move(e));
}

template <class Stream>
task<>
http2_stream<Stream>::http_deny(int status, std::string_view body)
{
    submit_simple(status, body);
    co_return;
}

template <class Stream>
task<>
http2_stream<Stream>::http_wait()
{
    http_receiving_ = true;
    while (!x_.disconnected() && !x_.completed() && !closed_ && !s_.closed_ && !s_.failed_)
        co_await wait();
    http_receiving_ = false;
}

template <class Stream>
bool
http2_stream<Stream>::closed() const noexcept
{
    return s_.closed_;
}

template <class Stream>
bool
http2_stream<Stream>::draining() const noexcept
{
    return s_.draining_;
}

template <class Stream>
void
http2_stream<Stream>::linger() noexcept
{
    if (tunnel_)
        tunnel_->linger(linger_time);
}

template <class Stream>
std::size_t
http2_stream<Stream>::tunnel_read(net::mutable_buffer b)
{
    auto n = std::min(b.size(), in_.size());
    if (n == 0)
        return 0;
    std::memcpy(b.data(), in_.data(), n);
    in_.erase(0, n);
    if (!s_.closed_ && !s_.failed_) {
        nghttp2_session_consume(s_.session_, id_, n); // the window opens as the WebSocket reads
        s_.wake_writer();
    }
    return n;
}

template <class Stream>
bool
http2_stream<Stream>::tunnel_gone() const noexcept
{
    return closed_ || x_.disconnected() || s_.closed_ || s_.failed_;
}

template <class Stream>
void
http2_stream<Stream>::tunnel_write(std::string_view bytes)
{
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    }
    out_ += bytes;
    if (data_deferred_) {
        data_deferred_ = false;
        nghttp2_session_resume_data(s_.session_, id_);
    }
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::tunnel_respond(int status, header_list headers)
{
    if (closed_ || submitted_ || s_.closed_ || s_.failed_)
        return;
    // Beast's response, its 101 made a 200: the agreed extension and subprotocol, the
    // application's headers and the server's own.
    auto const code = std::to_string(status);
    std::vector<nghttp2_nv> nv;
    nv.reserve(headers.size() + 1);
    nv.push_back(http2::make_nv(":status", code));
    for (auto& [name, value] : headers) {
        if (http2::hop_by_hop(name))
            continue;
        name = http2::lower(name);
        nv.push_back(http2::make_nv(name, value));
    }
    nghttp2_data_provider provider{};
    provider.source.ptr = this;
    provider.read_callback = http2_session<Stream>::callbacks::read_data;
    submitted_ = true;
    if (nghttp2_submit_response(s_.session_, id_, nv.data(), nv.size(), status == 200 ? &provider : nullptr) != 0)
        nghttp2_submit_rst_stream(s_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::tunnel_end() noexcept
{
    if (closed_ || out_end_ || s_.closed_ || s_.failed_)
        return;
    out_end_ = true;
    if (data_deferred_) {
        data_deferred_ = false;
        nghttp2_session_resume_data(s_.session_, id_);
    }
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::tunnel_reset() noexcept
{
    if (closed_ || s_.closed_ || s_.failed_)
        return;
    nghttp2_submit_rst_stream(s_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
    s_.wake_writer();
}

template <class Stream>
void
http2_stream<Stream>::tunnel_stalled() noexcept
{
    s_.stalled();
}

template <class Stream>
void
http2_stream<Stream>::access_log() const
{
    auto const& srv = s_.srv_;
    if (!srv.cfg_.access_log || !srv.log_.enabled(log_level::info) || websocket_)
        return; // a WebSocket's handshake has a line of its own
    std::string line;
    append_access_line(line, s_.client_text_, scope_, x_.status());
    srv.log_.log(log_level::info, line);
}

} // namespace cserve::detail

#endif // CSERVE_HTTP2

#endif
