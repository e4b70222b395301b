// cserve/impl/http1_connection.ipp -- the HTTP/1.1 session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_CONNECTION_IPP
#define CSERVE_IMPL_HTTP1_CONNECTION_IPP

#include <cserve/detail/http1_connection.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/detail/response_head.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/core/demangle.hpp>

#include <array>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <typeinfo>
#include <utility>

#include <sys/socket.h>

namespace cserve::detail {

namespace http1 {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// parse_header(): the header is not complete yet.
inline constexpr int need_more = -2;

// The most request body handed to the application in one event, and so about the most
// body the connection buffers.
inline constexpr std::size_t body_chunk = 64 * 1024;

// How much of an unread request body is read and dropped to keep a connection alive.
inline constexpr std::uint64_t discard_limit = 1024 * 1024;

// How much a closing connection reads (for at most linger_time) so that its last response
// is not destroyed by a reset (RFC 9112 §9.6).
inline constexpr std::size_t linger_limit = 4 * 1024 * 1024; // nginx: time-bound only

// How many send() calls in a row may write nothing before one yields to the loop and looks at
// the socket (see pause_unwritten): a post and a system call cost several times such a call.
inline constexpr unsigned unwritten_send_run = 16;

// How many request_states a thread keeps for its connections' next requests.
inline constexpr std::size_t state_cache_size = 16;

// What a cached request_state may keep of the capacity a big request gave it.
inline constexpr std::size_t state_keep_bytes = 4096;
inline constexpr std::size_t state_keep_items = 64;

// A thread's cache of request_states (LIFO: the warmest first).
struct state_cache {
    request_state* items[state_cache_size];
    std::size_t count = 0;

    ~state_cache()
    {
        while (count > 0)
            delete items[--count];
    }
};

inline state_cache&
local_states() noexcept
{
    static thread_local state_cache c;
    return c;
}

inline void
append_hex(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
    out.append(buf, r.ptr);
}

// Appends the percent-decoding of `s`; a '%' not followed by two hex digits stays as it
// is, as Python's urllib.parse.unquote leaves it.
inline void
append_percent_decoded(std::string& out, std::string_view s)
{
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            int hi = hex_value(s[i + 1]);
            int lo = hex_value(s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out += s[i];
    }
}

inline bool
parse_content_length(std::string_view s, std::uint64_t& v) noexcept
{
    if (s.empty())
        return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// Whether the comma-separated list `s` holds `token` (case-insensitive).
inline bool
list_has(std::string_view s, std::string_view token) noexcept
{
    while (!s.empty()) {
        auto comma = s.find(',');
        auto item = s.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t'))
            item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
            item.remove_suffix(1);
        if (boost::beast::iequals(item, token))
            return true;
        if (comma == std::string_view::npos)
            break;
        s.remove_prefix(comma + 1);
    }
    return false;
}

inline bool
starts_with_icase(std::string_view s, std::string_view prefix) noexcept
{
    return s.size() >= prefix.size() && boost::beast::iequals(s.substr(0, prefix.size()), prefix);
}

// Throws unless `status` is one an application may send as its response: a final status,
// 2xx to 5xx (RFC 9110 §15). 1xx are interim responses that the server sends itself (100
// Continue, 101 for an upgrade it performs); as a final response a client would wait on.
inline void
check_final_status(int status)
{
    if (status < 200 || status > 599)
        throw boost::system::system_error(make_error_code(error::invalid_status),
                                          "invalid status code " + std::to_string(status));
}

[[noreturn]] inline void
throw_unexpected(event const& e, char const* when)
{
    std::string msg = "Unexpected ASGI message '";
    msg += event_name(e);
    msg += "' sent, ";
    msg += when;
    msg += '.';
    throw boost::system::system_error(make_error_code(error::unexpected_event), msg);
}

inline std::string_view
error_body(int status) noexcept
{
    switch (status) {
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Invalid HTTP request received.";
    }
}

// Whether the request line in `block` is method SP request-target SP HTTP-version, the
// version well-formed ("HTTP/" DIGIT "." DIGIT), so that an unsupported version (505) can be
// told from a malformed line (400, RFC 9112 §3): the version is what follows the second space,
// not the last one ("GET /a b HTTP/1.1" is malformed, not a version).
inline bool
well_formed_version(std::string_view block) noexcept
{
    auto line = block.substr(0, block.find("\r\n"));
    auto first = line.find(' ');
    if (first == std::string_view::npos)
        return false;
    auto second = line.find(' ', first + 1);
    if (second == std::string_view::npos)
        return false;
    auto v = line.substr(second + 1);
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    return v.size() == 8 && v.substr(0, 5) == "HTTP/" && digit(v[5]) && v[6] == '.' && digit(v[7]);
}

// Clears the body target when a body read ends, however it ends.
struct body_scope {
    body_target& target;
    ~body_scope() { target = {}; }
};

} // namespace http1

//------------------------------------------------------------------------------

request_state::ptr
request_state::take()
{
    auto& c = http1::local_states();
    if (c.count > 0)
        return ptr(c.items[--c.count]);
    return ptr(new request_state);
}

void
request_state::recycle::operator()(request_state* r) const noexcept
{
    // What the next user does not reset itself; big capacities do not stay in the cache.
    r->in.clear();
    r->in.shrink_to_fit(); // the read block goes back to buffer_pool
    r->parser.reset();
    r->body = {};
    r->out.clear();
    r->length.reset();
    r->sent = 0;
    r->status = 0;
    r->scope.state.clear();
    if (r->head.capacity() > http1::state_keep_bytes)
        std::string().swap(r->head);
    if (r->out.capacity() > http1::state_keep_bytes)
        std::string().swap(r->out);
    if (r->scope.path.capacity() > http1::state_keep_bytes)
        std::string().swap(r->scope.path);
    if (r->scope.raw_path.capacity() > http1::state_keep_bytes)
        std::string().swap(r->scope.raw_path);
    if (r->scope.headers.capacity() > http1::state_keep_items)
        decltype(r->scope.headers)().swap(r->scope.headers);
    if (r->head_info.fields.capacity() > http1::state_keep_items)
        decltype(r->head_info.fields)().swap(r->head_info.fields);
    auto& c = http1::local_states();
    if (c.count < http1::state_cache_size)
        c.items[c.count++] = r;
    else
        delete r;
}

//------------------------------------------------------------------------------

http1_connection::http1_connection(server_impl& srv, socket_type socket)
    : srv_(srv)
    , socket_(std::move(socket))
{
}

http1_connection::~http1_connection()
{
    srv_.on_connection_closed(*this);
}

void
http1_connection::start(std::shared_ptr<http1_connection> self)
{
    auto& c = *self;
    boost::system::error_code ec;
    auto remote = c.socket_.remote_endpoint(ec);
    if (!ec)
        c.client_ = to_address(remote);
    auto local = c.socket_.local_endpoint(ec);
    if (!ec) {
        c.server_ = to_address(local);
        auto family = local.protocol().family();
        if (family == AF_INET || family == AF_INET6)
            c.socket_.set_option(net::ip::tcp::no_delay(true), ec);
    }
    c.socket_.non_blocking(true, ec); // write_now() sends without waiting
    c.srv_.deadlines_.set(c, deadline_kind::request_header);
    c.wait_idle();
}

std::string
http1_connection::client_text() const
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

void
http1_connection::begin_drain() noexcept
{
    draining_ = true;
    if (auto ws = ws_.lock())
        ws->begin_drain();
    if (phase_ == phase::idle) {
        // The client may have sent its next request already, not yet knowing that we
        // are closing (the keep-alive race of RFC 9112 §9.3.1). Give it a moment to
        // arrive and answer it with connection: close; a connection still idle then is
        // closed. A busy client thus loses no request to a shutdown or a restart.
        srv_.deadlines_.shorten(*this, deadline_kind::drain);
    }
}

void
http1_connection::force_close() noexcept
{
    if (closed_)
        return;
    closed_ = true;
    boost::system::error_code ec;
    socket_.close(ec);
    if (write_waiter_)
        write_waiter_->cancel();
    monitor_.emit(net::cancellation_type::terminal);
    cancel_.emit(net::cancellation_type::terminal);
}

void
http1_connection::deadline_passed(std::uint32_t epoch, bool one_thread) noexcept
{
    if (one_thread) {
        on_deadline(epoch);
        return;
    }
    if (auto self = weak_from_this().lock()) {
        auto ex = get_executor();
        net::post(ex, [self = std::move(self), epoch] { self->on_deadline(epoch); });
    }
}

void
http1_connection::on_deadline(std::uint32_t epoch) noexcept
{
    // From the server's deadline_wheel. A stale one (several threads: the connection moved
    // on before this ran) is dropped.
    if (epoch != deadline_epoch() || closed_)
        return;
    timed_out_ = true;
    boost::system::error_code ec;
    socket_.cancel(ec); // the idle wait ends the connection; a read in serve() sees timed_out_
}

//------------------------------------------------------------------------------
// Idle: no coroutine, no request_state, a read into small_ with a plain handler.

// The handler of the two operations an idle connection has, one after the other: the post
// that starts its read (called with nothing) and the read (called with its result). Both
// are allocated in the connection's op_slot. It has an allocator of its own but no
// executor: with bind_allocator, Asio would track the executor twice and the operation
// would grow by 64 bytes.
struct http1_connection::slot_handler {
    std::shared_ptr<http1_connection> self;

    using allocator_type = op_slot::allocator<void>;
    allocator_type get_allocator() const noexcept { return {self->op_slot_}; }

    void operator()() { self->wait_idle(); }
    void operator()(boost::system::error_code ec, std::size_t n) { self->on_idle_read(ec, n); }
};

void
http1_connection::wait_idle()
{
    if (closed_)
        return;
    if (timed_out_) {
        // The deadline passed while serve() was finishing: nothing was pending to cancel.
        close_idle();
        return;
    }
    socket_.async_read_some(net::buffer(small_), slot_handler{shared_from_this()});
}

void
http1_connection::close_idle() noexcept
{
    phase_ = phase::closing;
    srv_.deadlines_.clear(*this);
    boost::system::error_code ec;
    socket_.shutdown(net::socket_base::shutdown_send, ec);
    socket_.close(ec);
}

void
http1_connection::on_idle_read(boost::system::error_code ec, std::size_t n)
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
    s.scheme = "http";
    s.root_path = srv_.cfg_.root_path;
    if (s.extensions.size() != 1 || s.extensions.front() != "http.response.trailers")
        s.extensions = {"http.response.trailers"};
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
    launch_direct(serve(shared_from_this()), socket_.get_executor(), cancel_.slot());
#else
    net::co_spawn(socket_.get_executor(), serve(shared_from_this()),
                  net::bind_cancellation_slot(cancel_.slot(), [self = shared_from_this()](std::exception_ptr e) {
                      self->after_serve(e);
                  }));
#endif
}

void
http1_connection::after_serve(std::exception_ptr e) noexcept
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
        auto const& ex = socket_.get_executor();
        if (auto const* io = ex.target<net::io_context::executor_type>())
            net::post(*io, slot_handler{shared_from_this()});
        else
            net::post(ex, slot_handler{shared_from_this()});
    }
}

//------------------------------------------------------------------------------

http1_connection::serve_task
http1_connection::serve(std::shared_ptr<http1_connection>)
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
            std::size_t parsed = 0;
            int status = parse_header(parsed);
            if (status == http1::need_more)
                status = co_await read_header(parsed);
            if (status < 0)
                break;
            if (status == 0)
                status = build_scope();
            if (status > 0) {
                co_await write_error(status);
                linger = true;
                break;
            }
            phase_ = phase::busy;
            srv_.deadlines_.clear(*this);
            if (srv_.count_request())
                draining_ = true; // the last request this server takes: say connection: close
            if (srv_.over_capacity()) {
                keep_alive_ = false;
                co_await respond_simple(503, "Service Unavailable");
                linger = !body_complete_ || req_->in.size() > 0;
                break;
            }
            if (srv_.cfg_.ws && is_websocket_upgrade()) {
                // The connection becomes a WebSocket (or gets its denial response) and ends.
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
                    req_->scope.scheme = "http";
                    req_->scope.client = client_;
                }
                if (closed_)
                    co_return;
                if (failure || !complete_ || disconnected_)
                    co_await after_app(std::move(failure));
            }
            if (closed_)
                co_return;
            linger = !body_complete_ || req_->in.size() > 0;
            if (!keep_alive_ || draining_)
                break;
            if (!body_complete_ && !co_await discard_body())
                break;
            linger = false;
            reset_request();
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

task<>
http1_connection::run_websocket()
{
    // Its own frame: serve()'s stays small for the keep-alive requests it mostly runs.
    auto ws = std::make_shared<websocket_session>(*this);
    ws_ = ws;
    co_await ws->run();
}

void
http1_connection::reset_request() noexcept
{
    keep_alive_ = true;
    head_request_ = request_sent_ = body_complete_ = continue_pending_ = bad_body_ = false;
    started_ = head_written_ = body_done_ = complete_ = chunked_ = no_body_ = false;
    trailers_ = trailer_open_ = false;
    req_->status = 0;
    req_->length.reset();
    req_->sent = 0;
    req_->out.clear();
}

void
http1_connection::start_request()
{
    auto& r = *req_;
    auto const limit = std::min<std::size_t>(srv_.cfg_.max_header_bytes, std::numeric_limits<std::uint32_t>::max());
    r.head_info.clear();
    r.parser.emplace(r.head_info, r.body);
    r.parser->header_limit(static_cast<std::uint32_t>(limit));
    r.parser->body_limit(boost::none);
}

int
http1_connection::parse_header(std::size_t& parsed)
{
    auto& r = *req_;
    auto& in = r.in;
    if (in.size() > 0 && parsed == 0) {
        // RFC 9112 §2.2: empty lines before the request line are ignored.
        auto const* p = static_cast<char const*>(in.data().data());
        std::size_t skip = 0;
        while (skip + 1 < in.size() && p[skip] == '\r' && p[skip + 1] == '\n')
            skip += 2;
        in.consume(skip);
    }
    if (in.size() <= parsed)
        return http1::need_more;
    // Beast consumes the request line and each complete field as it goes (its return
    // value, even with need_more). The header stays in `in` until it is complete, so
    // `parsed` marks what the parser has taken, and every span is an offset from the start
    // of the header.
    auto buf = in.data();
    r.head_info.base = static_cast<char const*>(buf.data());
    r.head_info.size = buf.size();
    boost::system::error_code ec;
    parsed += r.parser->put(buf + parsed, ec);
    if (!ec) {
        r.head.assign(r.head_info.base, parsed);
        in.consume(parsed);
        return 0;
    }
    if (ec != boost::beast::http::error::need_more) {
        if (r.head_info.reject_status)
            return r.head_info.reject_status;
        if (ec == boost::beast::http::error::header_limit)
            return 431;
        if (ec == boost::beast::http::error::bad_version &&
            http1::well_formed_version(std::string_view(r.head_info.base, r.head_info.size)))
            return 505; // HTTP/2.0 and friends: understood, not supported
        return 400;
    }
    auto const limit = std::min<std::size_t>(srv_.cfg_.max_header_bytes, std::numeric_limits<std::uint32_t>::max());
    if (in.size() >= limit)
        return 431;
    return http1::need_more;
}

task<int>
http1_connection::read_header(std::size_t parsed)
{
    // An incomplete header: from now on it has timeout_request_header to arrive.
    srv_.deadlines_.set(*this, deadline_kind::request_header);
    timed_out_ = false;
    for (;;) {
        auto& in = req_->in;
        auto want = in.size() < read_block / 2 ? read_block - in.size() : read_block;
        auto [ec, n] = co_await socket_.async_read_some(in.prepare(want), http1::use_tuple);
        if (ec) {
            if (timed_out_ && in.size() > 0)
                co_return 408;
            co_return -1;
        }
        in.commit(n);
        int status = parse_header(parsed);
        if (status != http1::need_more)
            co_return status;
    }
}

int
http1_connection::build_scope()
{
    auto& s = req_->scope;
    auto const& cfg = srv_.cfg_;
    std::string_view block = req_->head;
    s.http_version = req_->head_info.version == 10 ? "1.0" : "1.1";
    s.method = req_->head_info.method.in(block);
    auto target = req_->head_info.target.in(block);

    // RFC 9112 §3.2: origin-form, absolute-form (its authority replaces Host), and
    // asterisk-form for OPTIONS. authority-form is CONNECT's, which this server does not
    // proxy.
    std::string_view path;
    if (!target.empty() && target.front() == '/') {
        path = target;
    } else if (http1::starts_with_icase(target, "http://") || http1::starts_with_icase(target, "https://")) {
        auto rest = target.substr(target.find("//") + 2);
        auto end = rest.find_first_of("/?");
        path = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
    } else if (target == "*" && s.method == "OPTIONS") {
        path = target;
    } else {
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
    for (auto const& [name, value] : req_->head_info.fields) {
        char* p = req_->head.data() + name.pos;
        for (std::uint32_t i = 0; i < name.len; ++i)
            if (p[i] >= 'A' && p[i] <= 'Z')
                p[i] = static_cast<char>(p[i] - 'A' + 'a');
        s.headers.emplace_back(name.in(block), value.in(block));
    }

    if (auto const* state = srv_.lifespan_state())
        s.state = *state; // the shallow copy ASGI asks for
    else if (!s.state.empty())
        s.state.clear();
    head_request_ = s.method == "HEAD";
    keep_alive_ = req_->parser->keep_alive();
    body_complete_ = req_->parser->is_done();
    continue_pending_ = req_->head_info.expect_continue && !body_complete_ && req_->head_info.version == 11;
    return 0;
}

bool
http1_connection::is_websocket_upgrade() const noexcept
{
    // RFC 6455 §4.2.1: a GET over HTTP/1.1 with "Upgrade: websocket" and "Connection: upgrade".
    if (req_->scope.method != "GET" || req_->head_info.version != 11)
        return false;
    bool upgrade = false;
    bool connection = false;
    for (auto const& [name, value] : req_->scope.headers) {
        if (name == "upgrade")
            upgrade = upgrade || http1::list_has(value, "websocket");
        else if (name == "connection")
            connection = connection || http1::list_has(value, "upgrade");
    }
    return upgrade && connection;
}

task<>
http1_connection::after_app(std::exception_ptr failure)
{
    // What is left when the application failed, or returned without a complete response.
    if (failure) {
        int status = 500;
        std::string body = "Internal Server Error";
        try {
            std::rethrow_exception(failure);
        } catch (http_error const& e) {
            if (e.status() >= 400 && e.status() <= 599) {
                status = e.status();
                body = e.what();
            }
        } catch (client_disconnected const&) {
            keep_alive_ = false;
            co_return;
        } catch (std::exception const& e) {
            std::string msg = "Exception in ASGI application\n";
            msg += boost::core::demangle(typeid(e).name());
            msg += ": ";
            msg += e.what();
            srv_.log_.log(log_level::error, msg);
        } catch (...) {
            srv_.log_.log(log_level::error, "Exception in ASGI application\nunknown exception");
        }
        if (head_written_ || disconnected_) {
            keep_alive_ = false; // the response is broken: closing is all that is left
            co_return;
        }
        // Nothing of a started response has gone out (its head waits for the first body
        // bytes): it is replaced as if it had never been started.
        co_await respond_simple(status, body);
        co_return;
    }
    if (disconnected_) {
        keep_alive_ = false; // nobody is left to answer: nothing to report either
    } else if (bad_body_ && !head_written_) {
        co_await respond_simple(400, http1::error_body(400));
    } else if (!started_) {
        srv_.log_.log(log_level::error, "ASGI callable returned without starting response.");
        co_await respond_simple(500, "Internal Server Error");
    } else if (!complete_) {
        srv_.log_.log(log_level::error, "ASGI callable returned without completing response.");
        keep_alive_ = false;
    }
}

task<>
http1_connection::respond_simple(int status, std::string_view body)
{
    if (disconnected_) {
        keep_alive_ = false;
        co_return;
    }
    std::string length;
    append_decimal(length, body.size());
    http::response_start start{
        .status = status,
        .headers = {{"content-type", "text/plain; charset=utf-8"}, {"content-length", std::move(length)}},
    };
    if (bad_body_)
        keep_alive_ = false;
    start_response(start);
    try {
        co_await write_body(std::string(body), false);
    } catch (std::exception const&) {
        keep_alive_ = false;
    }
}

task<>
http1_connection::write_error(int status)
{
    if (status == 400 || status == 501 || status == 505)
        srv_.log_.log(log_level::warning, "Invalid HTTP request received.");
    auto body = http1::error_body(status);
    req_->out.clear();
    auto const policy = head_policy::of(srv_.cfg_);
    encode_head(req_->out, status, {}, policy, policy.date_header ? http_date() : std::string_view());
    req_->out += "content-type: text/plain; charset=utf-8\r\ncontent-length: ";
    append_decimal(req_->out, body.size());
    req_->out += "\r\nconnection: close\r\n\r\n";
    req_->out += body;
    keep_alive_ = false;
    auto [ec, n] = co_await net::async_write(socket_, net::buffer(req_->out), http1::use_tuple);
    if (ec)
        disconnected_ = true;
    req_->out.clear();
}

std::size_t
http1_connection::parse_buffered(boost::system::error_code& ec)
{
    std::size_t total = 0;
    while (req_->in.size() > 0 && !req_->parser->is_done() && (!req_->body.sink || req_->body.room > 0)) {
        auto n = req_->parser->put(req_->in.data(), ec);
        req_->in.consume(n);
        total += n;
        if (ec == boost::beast::http::error::need_more) {
            ec = {};
            auto rest = req_->in.data();
            req_->parser->check_stalled(std::string_view(static_cast<char const*>(rest.data()), rest.size()),
                                        srv_.cfg_.max_header_bytes, ec);
            break;
        }
        if (ec || n == 0)
            break;
    }
    return total;
}

task<bool>
http1_connection::discard_body()
{
    if (bad_body_ || disconnected_ || continue_pending_)
        co_return false;
    http1::body_scope guard{req_->body};
    req_->body = {}; // no sink: the parser drops what it parses
    std::uint64_t dropped = 0;
    srv_.deadlines_.set(*this, deadline_kind::keep_alive);
    timed_out_ = false;
    for (;;) {
        boost::system::error_code ec;
        dropped += parse_buffered(ec);
        if (ec)
            co_return false;
        if (req_->parser->is_done()) {
            body_complete_ = true;
            co_return true;
        }
        if (dropped > http1::discard_limit)
            co_return false;
        auto [rec, n] = co_await socket_.async_read_some(req_->in.prepare(http1::body_chunk), http1::use_tuple);
        if (rec)
            co_return false;
        req_->in.commit(n);
    }
}

task<>
http1_connection::close_gracefully(bool linger)
{
    phase_ = phase::closing;
    boost::system::error_code ec;
    socket_.shutdown(net::socket_base::shutdown_send, ec);
    if (!ec && linger && !disconnected_) {
        // Lingering close: a peer that is still sending would otherwise get a reset that
        // can destroy the response it has not read yet.
        srv_.deadlines_.set(*this, deadline_kind::linger);
        std::size_t total = 0;
        while (total < http1::linger_limit) {
            req_->in.clear();
            auto [rec, n] = co_await socket_.async_read_some(req_->in.prepare(16 * 1024), http1::use_tuple);
            if (rec)
                break;
            total += n;
        }
    }
    socket_.close(ec);
}

//------------------------------------------------------------------------------
// The application's side: receive() and send().

task<event>
http1_connection::receive()
{
    if (closed_)
        co_return http::disconnect{};
    if (!body_complete_ && !bad_body_ && !disconnected_) {
        request_sent_ = true;
        co_return co_await read_body();
    }
    if (!request_sent_ && body_complete_) {
        request_sent_ = true;
        co_return http::request{};
    }
    co_return co_await wait_disconnect();
}

task<event>
http1_connection::read_body()
{
    if (continue_pending_) {
        continue_pending_ = false;
        // A started response whose head is still held can follow the 100 (RFC 9110 §10.1.1):
        // without it the client would hold the body back and the head wait for it.
        if (!head_written_)
            co_await write_continue();
    }
    std::string body;
    http1::body_scope guard{req_->body};
    for (;;) {
        req_->body.sink = &body;
        req_->body.room = http1::body_chunk - body.size();
        boost::system::error_code ec;
        parse_buffered(ec);
        if (ec) {
            srv_.log_.log(log_level::warning, "Invalid HTTP request body received.");
            bad_body_ = true;
            keep_alive_ = false;
            co_return http::disconnect{};
        }
        if (req_->parser->is_done()) {
            body_complete_ = true;
            co_return http::request{std::move(body), false};
        }
        if (!body.empty())
            co_return http::request{std::move(body), true};
        if (closed_ || disconnected_)
            co_return http::disconnect{};
        auto [rec, n] = co_await socket_.async_read_some(req_->in.prepare(http1::body_chunk), http1::use_tuple);
        if (rec == net::error::operation_aborted && !closed_ && !timed_out_) {
            // The application cancelled this receive() (app.hpp): nothing was taken, the
            // connection goes on, and the next receive() reads on.
            throw boost::system::system_error(rec);
        }
        if (rec) {
            disconnected_ = true;
            keep_alive_ = false;
            co_return http::disconnect{};
        }
        req_->in.commit(n);
    }
}

task<event>
http1_connection::wait_disconnect()
{
    // Reading on while the application waits is how a vanished client is noticed at
    // once. Bytes that arrive are kept: they are the next pipelined request. The read is
    // bound to monitor_, which the end of the response (or the application's own
    // cancellation of this receive) triggers.
    auto cs = co_await net::this_coro::cancellation_state;
    auto outer = cs.slot();
    if (outer.is_connected())
        outer.assign([this](net::cancellation_type t) { monitor_.emit(t); });
    monitoring_ = true;
    while (!complete_ && !disconnected_ && !closed_) {
        if (cs.cancelled() != net::cancellation_type::none)
            break;
        if (req_->in.size() >= http1::body_chunk) {
            // The next request fills the buffer; the client is evidently there.
            net::steady_timer wait(socket_.get_executor(), clock::time_point::max());
            co_await wait.async_wait(net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
            continue;
        }
        auto [ec, n] = co_await socket_.async_read_some(
            req_->in.prepare(4096), net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
        if (ec == net::error::operation_aborted)
            continue;
        if (ec) {
            disconnected_ = true;
            keep_alive_ = false;
            break;
        }
        req_->in.commit(n);
    }
    monitoring_ = false;
    if (outer.is_connected())
        outer.clear();
    if (cs.cancelled() != net::cancellation_type::none && !complete_ && !disconnected_ && !closed_)
        throw boost::system::system_error(net::error::operation_aborted);
    co_return http::disconnect{};
}

task<>
http1_connection::write_continue()
{
    static constexpr std::string_view msg = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true;
    auto [ec, n] = co_await net::async_write(socket_, net::buffer(msg), http1::use_tuple);
    writing_ = false;
    if (write_waiter_)
        write_waiter_->cancel();
    if (ec) {
        disconnected_ = true;
        keep_alive_ = false;
    }
}

task<>
http1_connection::send(event e)
{
    if (closed_ || disconnected_)
        throw client_disconnected();
    while (writing_) {
        // Only a 100 Continue can be in flight here, when the application receives and
        // sends from two coroutines at once.
        net::steady_timer wait(socket_.get_executor(), clock::time_point::max());
        struct restore {
            net::steady_timer*& waiter;
            net::steady_timer* outer;
            ~restore() { waiter = outer; }
        } guard{write_waiter_, std::exchange(write_waiter_, &wait)};
        co_await wait.async_wait(http1::use_tuple);
    }
    if (auto* start = std::get_if<http::response_start>(&e)) {
        if (started_)
            http1::throw_unexpected(e, "after response already started");
        start_response(*start);
    } else if (auto* body = std::get_if<http::response_body>(&e)) {
        if (!started_)
            http1::throw_unexpected(e, "before 'http.response.start'");
        if (body_done_)
            http1::throw_unexpected(e, "after response already completed");
        // write_body inlined: one coroutine frame fewer on every response.
        std::string_view tail;
        if (prepare_body(body->body, body->more_body, tail)) {
            auto const bytes = no_body_ ? net::const_buffer() : net::buffer(body->body);
            std::size_t done = 0;
            if (!write_now(bytes, tail, done))
                co_await write_rest(bytes, tail, done);
        } else if (++unwritten_sends_ % http1::unwritten_send_run == 0) {
            co_await pause_unwritten();
        }
        if (body_done_ && !trailers_)
            complete_response();
    } else if (auto* trailers = std::get_if<http::response_trailers>(&e)) {
        if (!trailers_ || !body_done_ || complete_)
            http1::throw_unexpected(e, "when no trailers are expected");
        co_await write_trailers(*trailers);
    } else {
        http1::throw_unexpected(e, "on an HTTP connection");
    }
}

void
http1_connection::start_response(http::response_start& s)
{
    auto const& cfg = srv_.cfg_;
    http1::check_final_status(s.status);
    std::optional<std::uint64_t> length;
    bool app_chunked = false;
    bool app_connection = false;
    bool app_close = false;
    check_headers(s.headers);
    for (auto const& [name, value] : s.headers) {
        if (boost::beast::iequals(name, "content-length")) {
            std::uint64_t v = 0;
            if (!http1::parse_content_length(value, v) || (length && *length != v))
                throw boost::system::system_error(make_error_code(error::invalid_header),
                                                  "invalid content-length '" + value + "'");
            length = v;
        } else if (boost::beast::iequals(name, "transfer-encoding")) {
            app_chunked = http1::list_has(value, "chunked");
        } else if (boost::beast::iequals(name, "connection")) {
            app_connection = true;
            app_close = app_close || http1::list_has(value, "close");
        }
    }

    started_ = true;
    req_->status = s.status;
    req_->length = length;
    bool const http10 = req_->head_info.version == 10;
    bool const bodiless_status = s.status == 204 || s.status == 304;
    no_body_ = bodiless_status || head_request_;
    if (app_close || draining_ || bad_body_)
        keep_alive_ = false;
    if (continue_pending_ && !body_complete_)
        keep_alive_ = false; // the client still holds the body back: it cannot be read past
    if (!body_complete_) {
        // An unread body bigger than what is drained afterwards: say now that this
        // connection ends with the response.
        auto remaining = req_->parser->content_length_remaining();
        if (remaining && *remaining > http1::discard_limit)
            keep_alive_ = false;
    }
    chunked_ = false;
    bool add_chunked = false;
    if (bodiless_status || req_->length) {
        // RFC 9110 §8.6: no Content-Length or Transfer-Encoding is added to 204.
    } else if (!http10) {
        chunked_ = true;
        add_chunked = !app_chunked;
    } else if (!head_request_) {
        keep_alive_ = false; // HTTP/1.0 without a length: the body ends with the connection
    }
    // Trailers travel only in a chunked body; otherwise they are accepted and dropped.
    trailers_ = s.trailers;

    req_->out.clear();
    encode_head(req_->out, s.status, s.headers, head_policy::of(cfg), cfg.date_header ? http_date() : std::string_view());
    std::string_view end = "\r\n";
    if (!app_connection) {
        if (!keep_alive_)
            end = "connection: close\r\n\r\n";
        else if (http10)
            end = "connection: keep-alive\r\n\r\n";
    }
    framing_pending_ = false;
    if (add_chunked && !no_body_) {
        // Decided by the first body event: a complete body gets a content-length. The
        // framing header and what follows it are appended then.
        framing_pending_ = true;
        req_->head_end = end;
    } else {
        if (add_chunked)
            req_->out += "transfer-encoding: chunked\r\n";
        req_->out += end;
    }
}

bool
http1_connection::prepare_body(std::string const& body, bool more, std::string_view& tail)
{
    if (framing_pending_) {
        // The whole body in one event: it gets a content-length instead of chunks.
        framing_pending_ = false;
        if (!more && !trailers_) {
            chunked_ = false;
            req_->length = body.size();
            req_->out += "content-length: ";
            append_decimal(req_->out, body.size());
            req_->out += "\r\n";
        } else {
            req_->out += "transfer-encoding: chunked\r\n";
        }
        req_->out += req_->head_end;
    }
    if (no_body_) {
        // The head alone, with the first body event: no body bytes would ever bring it.
        if (!more)
            body_done_ = true;
        return !more || !head_written_;
    }
    if (req_->length) {
        if (body.size() > *req_->length - req_->sent)
            throw boost::system::system_error(make_error_code(error::content_length_exceeded),
                                              "Response content longer than Content-Length");
        req_->sent += body.size();
        if (!more) {
            body_done_ = true;
            if (req_->sent < *req_->length) {
                srv_.log_.log(log_level::error, "Response content shorter than Content-Length");
                keep_alive_ = false;
            }
        }
        return !(body.empty() && more); // nothing to write yet: the head goes out with the first bytes
    }
    if (chunked_) {
        if (!body.empty()) {
            http1::append_hex(req_->out, body.size());
            req_->out += "\r\n";
            tail = "\r\n";
        }
        if (!more) {
            body_done_ = true;
            if (!trailers_)
                tail = body.empty() ? std::string_view("0\r\n\r\n") : std::string_view("\r\n0\r\n\r\n");
        }
        return !(req_->out.empty() && tail.empty());
    }
    if (!more)
        body_done_ = true;
    return !(body.empty() && more);
}

task<>
http1_connection::write_body(std::string const& body, bool more)
{
    std::string_view tail;
    if (prepare_body(body, more, tail)) {
        auto const bytes = no_body_ ? net::const_buffer() : net::buffer(body);
        std::size_t done = 0;
        if (!write_now(bytes, tail, done))
            co_await write_rest(bytes, tail, done);
    }
    if (body_done_ && !trailers_)
        complete_response();
}

bool
http1_connection::write_now(net::const_buffer body, std::string_view tail, std::size_t& done)
{
    // Most responses fit in the socket's send buffer: one non-blocking send, no
    // suspension. Only what does not fit waits for the socket (write_rest).
    std::array<net::const_buffer, 3> buffers{net::buffer(req_->out), body, net::buffer(tail)};
    if (!head_written_) {
        // The response is committed: logged now, once (a started response replaced by an
        // error response before this point is logged as the error response).
        head_written_ = true; // from here on, part of it may be on the wire
        access_log();
    }
    boost::system::error_code ec;
    done = socket_.write_some(buffers, ec);
    if (ec == net::error::would_block || ec == net::error::try_again) {
        ec = {};
        done = 0;
    }
    if (ec || done == net::buffer_size(buffers)) {
        finish_write(ec);
        return true;
    }
    return false;
}

task<>
http1_connection::write_rest(net::const_buffer body, std::string_view tail, std::size_t done)
{
    std::array<net::const_buffer, 3> buffers{net::buffer(req_->out), body, net::buffer(tail)};
    boost::beast::buffers_suffix<std::array<net::const_buffer, 3>> rest(buffers);
    rest.consume(done);
    auto [ec, n] = co_await net::async_write(socket_, rest, http1::use_tuple);
    finish_write(ec);
}

task<>
http1_connection::pause_unwritten()
{
    // send() calls that write nothing do not suspend: without this an application streaming
    // a body that is discarded (HEAD, 204, 304) or empty pieces would hold the loop for ever,
    // and every other connection, timer and signal with it. Its own frame: send()'s stays
    // small for the writes it mostly does.
    co_await net::post(socket_.get_executor(), net::use_awaitable);
    if (closed_ || disconnected_)
        throw client_disconnected();
    // Nor is a client that left noticed by a write: look at the socket.
    boost::system::error_code ec;
    if (body_complete_ && !monitoring_ && req_->in.size() < http1::body_chunk) {
        // Nobody else reads now: what arrives is the next pipelined request, kept as
        // wait_disconnect() keeps it.
        auto n = socket_.read_some(req_->in.prepare(4096), ec);
        if (!ec)
            req_->in.commit(n);
    } else {
        // The body is still unread (the application may be reading it) or the buffer is full:
        // a peek only.
        char c;
        socket_.receive(net::buffer(&c, 1), net::socket_base::message_peek, ec);
    }
    if (!ec || ec == net::error::would_block || ec == net::error::try_again)
        co_return;
    disconnected_ = true;
    keep_alive_ = false;
    if (monitoring_)
        monitor_.emit(net::cancellation_type::total);
    throw client_disconnected();
}

void
http1_connection::finish_write(boost::system::error_code ec)
{
    req_->out.clear();
    if (ec) {
        disconnected_ = true;
        keep_alive_ = false;
        if (monitoring_)
            monitor_.emit(net::cancellation_type::total);
        throw client_disconnected();
    }
}

task<>
http1_connection::write_trailers(http::response_trailers const& t)
{
    bool const write = chunked_ && !no_body_;
    check_headers(t.headers, "trailer");
    if (write) {
        if (!trailer_open_) {
            req_->out += "0\r\n";
            trailer_open_ = true;
        }
        for (auto const& [name, value] : t.headers) {
            req_->out += name;
            req_->out += ": ";
            req_->out += value;
            req_->out += "\r\n";
        }
    }
    if (t.more_trailers) {
        if (++unwritten_sends_ % http1::unwritten_send_run == 0)
            co_await pause_unwritten();
        co_return;
    }
    if (write) {
        req_->out += "\r\n";
        co_await write_out({}, {});
    }
    complete_response();
}

task<>
http1_connection::write_out(net::const_buffer body, std::string_view tail)
{
    std::size_t done = 0;
    if (!write_now(body, tail, done))
        co_await write_rest(body, tail, done);
}

void
http1_connection::complete_response() noexcept
{
    complete_ = true;
    if (monitoring_)
        monitor_.emit(net::cancellation_type::total);
}

void
http1_connection::access_log() const
{
    if (quiet_ || !srv_.cfg_.access_log || !srv_.log_.enabled(log_level::info))
        return;
    std::string line;
    line.reserve(96 + req_->scope.raw_path.size() + req_->scope.query_string.size());
    line += client_text();
    line += " - \"";
    line += req_->scope.method;
    line += ' ';
    line += req_->scope.raw_path;
    if (!req_->scope.query_string.empty()) {
        line += '?';
        line += req_->scope.query_string;
    }
    line += " HTTP/";
    line += req_->scope.http_version;
    line += "\" ";
    append_decimal(line, static_cast<std::uint64_t>(req_->status));
    auto reason = reason_phrase(req_->status);
    if (!reason.empty()) {
        line += ' ';
        line += reason;
    }
    srv_.log_.log(log_level::info, line);
}

} // namespace cserve::detail

#endif
