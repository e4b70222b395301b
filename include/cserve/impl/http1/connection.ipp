// cserve/impl/http1/connection.ipp -- the HTTP/1.1 connection's life: idle, the request loop, its end
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_CONNECTION_IPP
#define CSERVE_IMPL_HTTP1_CONNECTION_IPP

#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/detail/proxy_protocol.hpp>
#include <cserve/detail/websocket/session.hpp>
#include <cserve/detail/http2/session.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <cstring>
#include <exception>
#include <utility>

namespace cserve::detail {

template <class Stream>
template <class... Args>
http1_connection<Stream>::http1_connection(server_impl& srv, Args&&... args)
    : srv_(srv)
    , stream_(std::forward<Args>(args)...)
{
}

template <class Stream>
http1_connection<Stream>::~http1_connection()
{
    srv_.on_connection_closed(*this);
}

template <class Stream>
void
http1_connection<Stream>::start(std::shared_ptr<http1_connection> self)
{
    auto& c = *self;
    boost::system::error_code ec;
    auto& socket = c.stream_.lowest_layer();
    auto remote = socket.remote_endpoint(ec);
    if (!ec)
        c.client_ = to_address(remote);
    auto local = socket.local_endpoint(ec);
    if (!ec)
        c.server_ = to_address(local);
    ops::open(c.stream_);
    // The header deadline runs from here: a PROXY header and a TLS handshake count against
    // it, and a client that connects and sends nothing is dropped when it passes.
    c.srv_.deadlines_.set(c, deadline_kind::request_header);
    if (c.srv_.proxy_protocol_) {
        auto ex = c.get_executor();
        net::co_spawn(ex, c.read_proxy_header(), [self = std::move(self)](std::exception_ptr e, bool ok) mutable {
            if (e)
                self->srv_.log_session_failure(e);
            if (e || !ok) {
                self->close_idle();
                return;
            }
            begin(std::move(self));
        });
        return;
    }
    begin(std::move(self));
}

template <class Stream>
void
http1_connection<Stream>::begin(std::shared_ptr<http1_connection> self)
{
    auto& c = *self;
    if (c.closed_)
        return;
    if constexpr (requires { ops::async_handshake(c.stream_, handshake_handler{self}); })
        ops::async_handshake(c.stream_, handshake_handler{std::move(self)});
    else
        c.wait_idle();
}

template <class Stream>
task<bool>
http1_connection<Stream>::read_proxy_header()
{
    // --proxy-protocol: the balancer's header comes first, before TLS and HTTP. It is taken
    // off the socket byte for byte (peeked, then read as far as it goes), so that what follows
    // is left for the TLS handshake or the request.
    namespace pp = proxy_protocol;
    auto& socket = stream_.lowest_layer();
    auto const peer = client_text();
    auto refuse = [&](std::string_view why) {
        if (srv_.log_.enabled(log_level::info))
            srv_.log_.log(log_level::info, "PROXY protocol: " + peer + " " + std::string(why) + ": closing");
        return false;
    };
    // A Unix-socket peer is local; a TCP one must be a trusted balancer (--forwarded-allow-ips).
    bool const tcp = client_ && !client_->host.empty() && client_->host.front() != '/' && client_->host.front() != '@';
    if (tcp && !srv_.proxy_protocol_->contains(client_->host))
        co_return refuse("is not in --forwarded-allow-ips");
    std::string head;
    std::array<char, 536> buf; // HAProxy's advice: one read of 536 bytes holds any v1 header
    for (;;) {
        auto n = ::recv(socket.native_handle(), buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            auto [wec] = co_await socket.async_wait(net::socket_base::wait_read, net::as_tuple(net::use_awaitable));
            if (wec)
                co_return refuse(timed_out_ ? "sent no PROXY header in time" : "left");
            continue;
        }
        if (n <= 0)
            co_return refuse("left before its PROXY header was whole");
        auto take = pp::header_bytes(head, {buf.data(), static_cast<std::size_t>(n)});
        if (!take)
            co_return refuse("sent no valid PROXY header");
        auto got = ::recv(socket.native_handle(), buf.data(), *take, MSG_DONTWAIT);
        if (got < 0 || static_cast<std::size_t>(got) != *take)
            co_return refuse("left before its PROXY header was whole");
        head.append(buf.data(), *take);
        pp::header h;
        auto st = pp::parse(head, h);
        if (st == pp::status::invalid)
            co_return refuse("sent a malformed PROXY header");
        if (st == pp::status::done) {
            if (!h.local) {
                client_ = std::move(h.source);
                server_ = std::move(h.destination);
            }
            co_return true;
        }
    }
}

template <class Stream>
std::string
http1_connection<Stream>::client_text() const
{
    if (!client_)
        return "-";
    std::string text = client_->host;
    if (client_->port != 0) {
        text += ':';
        append_decimal(text, client_->port);
    }
    return text;
}

template <class Stream>
void
http1_connection<Stream>::begin_drain() noexcept
{
    draining_ = true;
    if (auto ws = ws_.lock())
        ws->begin_drain();
#if CSERVE_HTTP2
    if (auto h2 = h2_.lock())
        h2->begin_drain();
#endif
    if (phase_ == phase::idle) {
        // The client may have sent its next request already, not yet knowing that we
        // are closing (the keep-alive race of RFC 9112 §9.3.1). Give it a moment to
        // arrive and answer it with connection: close; a connection still idle then is
        // closed. A busy client thus loses no request to a shutdown or a restart.
        srv_.deadlines_.shorten(*this, deadline_kind::drain);
    }
}

template <class Stream>
void
http1_connection<Stream>::force_close() noexcept
{
    if (closed_)
        return;
    closed_ = true;
    boost::system::error_code ec;
    stream_.lowest_layer().close(ec);
    if (write_waiter_)
        write_waiter_->cancel();
    monitor_.emit(net::cancellation_type::terminal);
    cancel_.emit(net::cancellation_type::terminal);
#if CSERVE_HTTP2
    if (auto h2 = h2_.lock())
        h2->force_close();
#endif
}

template <class Stream>
void
http1_connection<Stream>::deadline_passed(std::uint32_t epoch, bool one_thread) noexcept
{
    if (one_thread) {
        on_deadline(epoch);
        return;
    }
    if (auto self = this->weak_from_this().lock()) {
        auto ex = get_executor();
        net::post(ex, [self = std::move(self), epoch] { self->on_deadline(epoch); });
    }
}

template <class Stream>
void
http1_connection<Stream>::on_deadline(std::uint32_t epoch) noexcept
{
    // From the server's deadline_wheel. A stale one (several threads: the connection moved
    // on before this ran) is dropped.
    if (epoch != deadline_epoch() || closed_)
        return;
    timed_out_ = true;
    boost::system::error_code ec;
    stream_.lowest_layer().cancel(ec); // the idle wait ends the connection; a read in serve() sees timed_out_
}

template <class Stream>
void
http1_connection<Stream>::linger() noexcept
{
    srv_.deadlines_.set(*this, deadline_kind::linger);
}

//------------------------------------------------------------------------------
// Idle: no coroutine, no request_state, a read into small_ with a plain handler.

// The handler of the two operations an idle connection has, one after the other: the post
// that starts its read (called with nothing) and the read (called with its result). Both
// are allocated in the connection's op_slot. It has an allocator of its own but no
// executor: with bind_allocator, Asio would track the executor twice and the operation
// would grow by 64 bytes.
template <class Stream>
struct http1_connection<Stream>::slot_handler {
    std::shared_ptr<http1_connection> self;

    using allocator_type = op_slot::allocator<void>;
    allocator_type get_allocator() const noexcept { return {self->op_slot_}; }

    void operator()() { self->wait_idle(); }
    void operator()(boost::system::error_code ec) { self->on_readable(ec); }
    void operator()(boost::system::error_code ec, std::size_t n) { self->on_idle_read(ec, n); }
};

// The TLS handshake's, once per connection (not in the op_slot: it is larger).
template <class Stream>
struct http1_connection<Stream>::handshake_handler {
    std::shared_ptr<http1_connection> self;

    void operator()(boost::system::error_code ec) { self->on_handshake(ec); }
};

template <class Stream>
void
http1_connection<Stream>::wait_idle()
{
    if (closed_)
        return;
    if (timed_out_) {
        // The deadline passed while serve() was finishing: nothing was pending to cancel.
        close_idle();
        return;
    }
    if constexpr (requires { requires ops::wait_then_read; }) {
        // A TLS stream: what OpenSSL has decrypted already (a pipelined request) first, else a
        // wait for the socket, which fits the op_slot where the stream's own read would not.
        boost::system::error_code ec;
        auto n = ops::try_read(stream_, net::buffer(small_), ec);
        if (ec != net::error::would_block) {
            on_idle_read(ec, n);
            return;
        }
        stream_.lowest_layer().async_wait(net::socket_base::wait_read, slot_handler{this->shared_from_this()});
    } else {
        stream_.async_read_some(net::buffer(small_), slot_handler{this->shared_from_this()});
    }
}

template <class Stream>
void
http1_connection<Stream>::on_readable(boost::system::error_code ec)
{
    if (closed_)
        return;
    if (ec) {
        close_idle(); // the keep-alive or header timeout, or a drain
        return;
    }
    wait_idle(); // bytes arrived: a whole record, or part of one (then it waits again)
}

template <class Stream>
void
http1_connection<Stream>::on_handshake(boost::system::error_code ec)
{
    if (closed_)
        return;
    auto& m = srv_.metrics_.local();
    metrics_registry::add<std::uint64_t>(ec ? m.tls_handshake_errors : m.tls_handshakes, 1);
    if (ec) {
        // A scanner, a client that does not trust the certificate, plain HTTP sent to the TLS
        // port, or the header deadline: common and harmless, so one line at debug level.
        if (srv_.log_.enabled(log_level::debug))
            srv_.log_.log(log_level::debug, "TLS handshake with " + client_text() + " failed: " +
                                                (timed_out_ ? std::string("timed out") : ec.message()));
        phase_ = phase::closing;
        srv_.deadlines_.clear(*this);
        boost::system::error_code ignored;
        stream_.lowest_layer().close(ignored);
        return;
    }
    wait_idle();
}

template <class Stream>
void
http1_connection<Stream>::close_idle() noexcept
{
    phase_ = phase::closing;
    srv_.deadlines_.clear(*this);
    boost::system::error_code ec;
    ops::shutdown_send(stream_, ec);
    stream_.lowest_layer().close(ec);
}

template <class Stream>
void
http1_connection<Stream>::on_idle_read(boost::system::error_code ec, std::size_t n)
{
    if (closed_)
        return;
    if (ec) {
        close_idle(); // the peer left, the keep-alive or header timeout, or a drain
        return;
    }
    // A request begins: it gets a request_state and a coroutine until the connection is
    // idle again. Its deadline is set only if the header turns out to be incomplete.
    srv_.deadlines_.clear(*this);
    req_ = request_state::take();
    auto& s = req_->scope;
    s.type = scope_type::http;
    s.scheme = http_scheme<Stream>;
    s.root_path = srv_.cfg_.root_path;
    if constexpr (stream_ops<Stream>::secure) {
        if (s.extensions.size() != 3 || s.extensions.front() != "http.response.trailers")
            s.extensions = {"http.response.trailers", "http.response.early_hint", "tls"};
    } else if (s.extensions.size() != 2 || s.extensions.front() != "http.response.trailers") {
        s.extensions = {"http.response.trailers", "http.response.early_hint"};
    }
    s.tls_connection = ops::tls(stream_);
    s.subprotocols.clear();
    s.client = client_;
    s.server = server_;
    auto b = req_->in.prepare(read_block);
    std::memcpy(b.data(), small_, n);
    req_->in.commit(n);
    phase_ = phase::header;
#if CSERVE_DETAIL_DIRECT_LAUNCH
    // What co_spawn does, without its entry frame, its dispatch and the post it makes when
    // the coroutine never suspended (the usual keep-alive request): serve() runs now, as a
    // thread of execution of its own, cancelled through cancel_.
    launch_direct(serve(this->shared_from_this()), stream_.get_executor(), cancel_.slot());
#else
    net::co_spawn(stream_.get_executor(), serve(this->shared_from_this()),
                  net::bind_cancellation_slot(cancel_.slot(), [self = this->shared_from_this()](std::exception_ptr e) {
                      self->after_serve(e);
                  }));
#endif
}

template <class Stream>
void
http1_connection<Stream>::after_serve(std::exception_ptr e) noexcept
{
    // serve()'s coroutines are done (nothing awaits after this): drop what cancelled them.
    cancel_.slot().clear();
    if (e)
        srv_.log_session_failure(e);
    else if (phase_ == phase::idle) {
        // The idle read starts behind the handlers already queued: by then the client has
        // often sent its next request, and the read takes it at once instead of failing
        // with EAGAIN and waiting for epoll.
        // Through the io_context's own executor type when that is what runs the connection:
        // only it allocates the posted operation with the handler's allocator.
        auto const& ex = stream_.get_executor();
        if (auto const* io = ex.template target<net::io_context::executor_type>())
            net::post(*io, slot_handler{this->shared_from_this()});
        else
            net::post(ex, slot_handler{this->shared_from_this()});
    }
}

//------------------------------------------------------------------------------
// Busy: one request after the other, until the connection is idle or ends.

template <class Stream>
typename http1_connection<Stream>::serve_task
http1_connection<Stream>::serve(std::shared_ptr<http1_connection>)
{
#if CSERVE_DETAIL_DIRECT_LAUNCH
    // The bottom of a thread of execution of its own: nothing may escape it, and what
    // follows the session (the idle wait, or the end) happens as its locals go.
    struct finish {
        http1_connection& c;
        std::exception_ptr failure;
        ~finish() { c.after_serve(failure); }
    } done{*this, nullptr};
    try {
#endif
        bool linger = false; // whether unread input may follow: see close_gracefully
        for (;;) {
            start_request();
#if CSERVE_HTTP2
            if (fresh_) {
                fresh_ = false;
                if (srv_.cfg_.http2 && may_be_http2()) {
                    int h2 = co_await detect_http2();
                    if (h2 < 0)
                        break;
                    if (h2 > 0) {
                        co_await run_http2(std::nullopt);
                        if (closed_)
                            co_return;
                        linger = false;
                        break;
                    }
                }
            }
#endif
            std::size_t parsed = 0;
            int status = parse_header(parsed);
            if (status == http1::need_more)
                status = co_await read_header(parsed);
            if (status < 0)
                break;
            bool const head_read = status == 0;
            if (status == 0)
                status = build_scope();
            if (status > 0) {
                // Counted as a request, timed from the refusal: with the method of its
                // request line when that was read (a head without Host), else as _OTHER.
                if (!head_read) {
                    // The scope is not this request's yet (it may be the last one's).
                    auto const& h = req_->head_info;
                    req_->scope.method = h.base && h.method.len ? h.method.in({h.base, h.size}) : std::string_view();
                }
                request_meter meter;
                meter.begin(srv_.metrics_, req_->scope, req_->x);
                co_await write_error(status);
                linger = true;
                break;
            }
            request_meter meter; // counted when it goes: the end of this request, or of the connection
            meter.begin(srv_.metrics_, req_->scope, req_->x);
            phase_ = phase::busy;
            srv_.deadlines_.clear(*this);
            if (srv_.count_request())
                draining_ = true; // the last request this server takes: say connection: close
            if (srv_.over_capacity()) {
                req_->x.end_connection();
                co_await respond_simple(503, error_text(503));
                linger = !req_->x.body_complete() || req_->in.size() > 0;
                break;
            }
#if CSERVE_HTTP2
            if (srv_.cfg_.http2 && is_h2c_upgrade()) {
                meter.cancel(); // if taken, the request is stream 1's, counted there
                int up = co_await upgrade_h2c();
                if (closed_)
                    co_return;
                if (up < 0) {
                    linger = false; // taken: the HTTP/2 session served the connection to its end
                    break;
                }
                meter.begin(srv_.metrics_, req_->scope, req_->x); // an HTTP/1.1 request after all
                if (up > 0) {
                    linger = true;
                    co_await write_error(up);
                    break;
                }
                // Not taken (a body too large to read first): served as HTTP/1.1.
            }
#endif
            if (srv_.cfg_.ws && is_websocket_upgrade()) {
                // The connection becomes a WebSocket (or gets its denial response) and ends.
                meter.cancel(); // counted as a WebSocket
                co_await run_websocket();
                if (closed_)
                    co_return;
                linger = false;
                break;
            }
            {
                // The application is awaited from this frame, not from one of its own: a
                // keep-alive request holds three coroutine frames (this, the application's,
                // send's). Asio's per-thread cache keeps two freed frames; while this one is
                // no bigger than send's, it reuses send's block and only one frame a
                // request comes from the heap.
                bool const proxied = srv_.trusted_ && apply_proxy_headers(req_->scope, *srv_.trusted_);
                std::exception_ptr failure;
                try {
                    co_await srv_.app_(req_->scope, cserve::receive{*this}, cserve::send{*this});
                } catch (...) {
                    failure = std::current_exception();
                }
                if (proxied) {
                    // The next request on this connection starts from the peer again.
                    req_->scope.scheme = http_scheme<Stream>;
                    req_->scope.client = client_;
                }
                if (closed_)
                    co_return;
                if (failure || !req_->x.completed() || req_->x.disconnected())
                    co_await after_app(std::move(failure));
            }
            if (closed_)
                co_return;
            meter.end();
            linger = !req_->x.body_complete() || req_->in.size() > 0;
            if (!req_->x.keep_alive() || draining_)
                break;
            if (!req_->x.body_complete() && !co_await discard_body())
                break;
            linger = false;
            req_->out.clear();
            if (req_->in.size() == 0) {
                // Idle: give back the request_state now and wait (once this coroutine is gone:
                // see on_idle_read) with nothing but the connection and its read.
                req_.reset();
                monitor_.slot().clear(); // a finished disconnect watch's handler
                phase_ = phase::idle;
                timed_out_ = false;
                srv_.deadlines_.set(*this, draining_ ? deadline_kind::drain : deadline_kind::keep_alive);
                co_return;
            }
            phase_ = phase::header; // a pipelined request is already here
        }
        if (!closed_)
            co_await close_gracefully(linger);
        srv_.deadlines_.clear(*this);
#if CSERVE_DETAIL_DIRECT_LAUNCH
    } catch (...) {
        done.failure = std::current_exception();
    }
#endif
}

template <class Stream>
task<>
http1_connection<Stream>::run_websocket()
{
    // Its own frame: serve()'s stays small for the keep-alive requests it mostly runs.
    auto ws = std::make_shared<websocket_session<Stream>>(upgrade<Stream>{
        .srv = srv_,
        .stream = stream_,
        .buffered = req_->in,
        .scope = req_->scope,
        .target = req_->head_info.target.in(req_->head),
        .version = req_->head_info.version,
        .client = client_text(),
        .host = *this,
        .owner = this->shared_from_this(),
    });
    ws_ = ws;
    co_await ws->run();
}

template <class Stream>
task<>
http1_connection<Stream>::close_gracefully(bool linger)
{
    phase_ = phase::closing;
    boost::system::error_code ec;
    ops::shutdown_send(stream_, ec);
    if (!ec && linger && !req_->x.disconnected()) {
        // Lingering close: a peer that is still sending would otherwise get a reset that
        // can destroy the response it has not read yet.
        srv_.deadlines_.set(*this, deadline_kind::linger);
        std::size_t total = 0;
        while (total < linger_limit) {
            req_->in.clear();
            auto [rec, n] = co_await stream_.async_read_some(req_->in.prepare(16 * 1024), http1::use_tuple);
            if (rec)
                break;
            total += n;
        }
    }
    stream_.lowest_layer().close(ec);
}

#if CSERVE_HTTP2

//------------------------------------------------------------------------------
// HTTP/2: the connection hands its stream to an http2_session.

template <class Stream>
bool
http1_connection<Stream>::may_be_http2() noexcept
{
    if constexpr (requires { ops::alpn(stream_); }) {
        if (ops::alpn(stream_) == "h2")
            return true;
    }
    auto& in = req_->in;
    return http2::match_preface({static_cast<char const*>(in.data().data()), in.size()}) != http2::preface_match::no;
}

template <class Stream>
task<int>
http1_connection<Stream>::detect_http2()
{
    // ALPN said h2: whatever follows is HTTP/2's (nghttp2 judges the preface).
    if constexpr (requires { ops::alpn(stream_); }) {
        if (ops::alpn(stream_) == "h2")
            co_return 1;
    }
    // Prior knowledge: the first bytes are the preface. Part of it may still be on its way.
    for (;;) {
        auto& in = req_->in;
        auto m = http2::match_preface({static_cast<char const*>(in.data().data()), in.size()});
        if (m != http2::preface_match::maybe)
            co_return m == http2::preface_match::yes ? 1 : 0;
        srv_.deadlines_.set(*this, deadline_kind::request_header);
        auto [ec, n] = co_await stream_.async_read_some(in.prepare(read_block), http1::use_tuple);
        if (ec)
            co_return -1;
        in.commit(n);
    }
}

template <class Stream>
bool
http1_connection<Stream>::is_h2c_upgrade() const noexcept
{
    // RFC 7540 §3.2: "Upgrade: h2c", one HTTP2-Settings, both named in Connection; not over TLS.
    if constexpr (stream_ops<Stream>::secure)
        return false;
    if (req_->head_info.version != 11)
        return false;
    bool upgrade = false;
    bool connection = false;
    int settings = 0;
    for (auto const& [name, value] : req_->scope.headers) {
        if (name == "upgrade")
            upgrade = upgrade || list_has(value, "h2c");
        else if (name == "connection")
            connection = connection || (list_has(value, "upgrade") && list_has(value, "http2-settings"));
        else if (name == "http2-settings")
            ++settings;
    }
    return upgrade && connection && settings == 1;
}

template <class Stream>
task<int>
http1_connection<Stream>::upgrade_h2c()
{
    // 0: not taken (served as HTTP/1.1); -1: served over HTTP/2 and done; else an error status.
    http2::upgrade_request up;
    up.method = req_->scope.method;
    up.target = req_->head_info.target.in(req_->head);
    for (auto const& [name, value] : req_->scope.headers) {
        if (name == "http2-settings") {
            if (!http2::decode_base64url(value, up.settings) || up.settings.size() % 6 != 0)
                co_return 400;
        } else if (name != "connection" && name != "upgrade" && name != "keep-alive" && name != "te" &&
                   name != "transfer-encoding" && name != "proxy-connection") {
            up.headers.emplace_back(std::string(name), std::string(value));
        }
    }
    // The whole body comes first over HTTP/1.1 (RFC 7540 §3.2); a large one is not worth
    // holding back the switch for: such a request is served over HTTP/1.1.
    if (!req_->x.body_complete()) {
        auto len = req_->parser->content_length();
        if (!len || *len > http1::body_chunk)
            co_return 0;
        while (!req_->x.body_complete()) {
            auto e = co_await read_body();
            auto* r = std::get_if<http::request>(&e);
            if (!r || req_->x.body_invalid())
                co_return req_->x.body_invalid() ? 400 : -1;
            up.body += r->body;
            if (!r->more_body)
                break;
        }
        req_->x.body_received();
    }
    static constexpr std::string_view switching =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    auto [ec, n] = co_await net::async_write(stream_, net::buffer(switching), http1::use_tuple);
    if (ec)
        co_return -1;
    co_await run_http2(std::move(up));
    co_return -1;
}

template <class Stream>
task<>
http1_connection<Stream>::run_http2(std::optional<http2::upgrade_request> up)
{
    phase_ = phase::busy;
    srv_.deadlines_.clear(*this);
    // The session keeps what was read past the detection; the request_state (its 16 KiB read
    // buffer above all) goes back to the cache for the connection's whole HTTP/2 life.
    auto& in = req_->in;
    std::string buffered(static_cast<char const*>(in.data().data()), in.size());
    req_.reset();
    auto h2 = std::make_shared<http2_session<Stream>>(http2_start<Stream>{
        .srv = srv_,
        .stream = stream_,
        .buffered = std::move(buffered),
        .client = client_,
        .server = server_,
        .client_text = client_text(),
        .upgrade = std::move(up),
        .owner = this->shared_from_this(),
    });
    h2_ = h2;
    if (draining_)
        h2->begin_drain();
    co_await h2->run();
}

#endif // CSERVE_HTTP2

//------------------------------------------------------------------------------
// upgrade_host: the WebSocket session's view of the connection before its handshake.

template <class Stream>
task<>
http1_connection<Stream>::http_send(event e)
{
    co_await send(std::move(e));
}

template <class Stream>
task<>
http1_connection<Stream>::http_deny(int status, std::string_view body)
{
    req_->x.end_connection();
    quiet_ = true;
    co_await respond_simple(status, body);
}

template <class Stream>
task<>
http1_connection<Stream>::http_wait()
{
    co_await wait_disconnect();
}

} // namespace cserve::detail

#endif
