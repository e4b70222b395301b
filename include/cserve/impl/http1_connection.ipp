// cserve/impl/http1_connection.ipp -- the HTTP/1.1 session
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_CONNECTION_IPP
#define CSERVE_IMPL_HTTP1_CONNECTION_IPP

#include <cserve/detail/http1_connection.hpp>
#include <cserve/detail/http_date.hpp>
#include <cserve/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/ip/tcp.hpp>
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

#include <sys/socket.h>

namespace cserve::detail {

namespace http1 {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// The most request body handed to the application in one event, and so about the most
// body the connection buffers.
inline constexpr std::size_t body_chunk = 64 * 1024;

// How much of an unread request body is read and dropped to keep a connection alive.
inline constexpr std::uint64_t discard_limit = 1024 * 1024;

// How long, and how much, a closing connection reads so that its last response is not
// destroyed by a reset (RFC 9112 §9.6).
inline constexpr std::chrono::seconds linger_time{2};
inline constexpr std::size_t linger_limit = 4 * 1024 * 1024; // nginx: time-bound only

// How long an idle keep-alive connection stays open once the server drains, for a request
// the client sent before it could see the close.
inline constexpr std::chrono::milliseconds drain_grace{100};

// After this long without a request a keep-alive connection frees its buffers (and then
// costs little more than its socket) until the client sends again.
inline constexpr std::chrono::milliseconds idle_release{250};

inline bool
is_tchar(unsigned char c) noexcept
{
    // RFC 9110 §5.6.2 token characters.
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

inline bool
valid_field_name(std::string_view s) noexcept
{
    if (s.empty())
        return false;
    for (unsigned char c : s)
        if (!is_tchar(c))
            return false;
    return true;
}

inline bool
valid_field_value(std::string_view s) noexcept
{
    // No CR, LF or NUL: anything else a peer can parse (RFC 9110 §5.5).
    for (unsigned char c : s)
        if (c == '\r' || c == '\n' || c == '\0')
            return false;
    return true;
}

inline std::string_view
reason_phrase(int status) noexcept
{
    auto r = boost::beast::http::obsolete_reason(boost::beast::http::int_to_status(
        static_cast<unsigned>(status)));
    if (r == "<unknown-status>")
        return {};
    return {r.data(), r.size()};
}

inline void
append_decimal(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

inline void
append_hex(std::string& out, std::uint64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
    out.append(buf, r.ptr);
}

inline int
hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
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

// Whether the request line in `block` ends in a well-formed HTTP-version ("HTTP/" DIGIT "."
// DIGIT), so that an unsupported version (505) can be told from a malformed one (400).
inline bool
well_formed_version(std::string_view block) noexcept
{
    auto line = block.substr(0, block.find("\r\n"));
    auto space = line.rfind(' ');
    if (space == std::string_view::npos)
        return false;
    auto v = line.substr(space + 1);
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

http1_connection::http1_connection(server_impl& srv, socket_type socket)
    : srv_(srv)
    , socket_(std::move(socket))
    , timer_(socket_.get_executor())
    , write_done_(socket_.get_executor())
{
    scope_.type = scope_type::http;
    scope_.scheme = "http";
    scope_.root_path = srv_.cfg_.root_path;
    scope_.extensions = {"http.response.trailers"};
}

http1_connection::~http1_connection()
{
    srv_.on_connection_closed(*this);
}

task<>
http1_connection::run(std::shared_ptr<http1_connection> self)
{
    co_await self->serve();
}

void
http1_connection::begin_drain() noexcept
{
    draining_ = true;
    idle_stage_ = false;
    if (auto ws = ws_.lock())
        ws->begin_drain();
    if (phase_ == phase::idle && in_.size() == 0) {
        // The client may have sent its next request already, not yet knowing that we
        // are closing (the keep-alive race of RFC 9112 §9.3.1). Give it a moment to
        // arrive and answer it with connection: close; a connection still idle then is
        // closed. A busy client thus loses no request to a shutdown or a restart.
        set_deadline(std::min(deadline_, clock::now() + http1::drain_grace));
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
    timer_.cancel();
    write_done_.cancel();
    monitor_.emit(net::cancellation_type::terminal);
    cancel_.emit(net::cancellation_type::terminal);
}

//------------------------------------------------------------------------------
// Timeouts: one timer per connection, re-armed lazily. Most requests only move
// `deadline_`; the timer fires about once per keep-alive period and then re-arms for the
// current deadline, so a busy connection does not touch the timer queue per request.

void
http1_connection::set_deadline(clock::time_point when)
{
    deadline_ = when;
    if (closed_ || when == clock::time_point::max())
        return;
    if (timer_armed_ && timer_.expiry() <= when)
        return;
    timer_armed_ = true;
    timer_.expires_at(when);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        self->on_timer(ec);
    });
}

void
http1_connection::on_timer(boost::system::error_code ec)
{
    if (ec == net::error::operation_aborted)
        return; // re-armed or closing: another wait, if any, is pending
    timer_armed_ = false;
    if (closed_ || deadline_ == clock::time_point::max())
        return;
    if (clock::now() < deadline_) {
        set_deadline(deadline_);
        return;
    }
    if (idle_stage_ && phase_ == phase::idle) {
        // Idle for a while: read_header lets go of the buffers and waits for the socket
        // to become readable without one; the keep-alive deadline still stands.
        idle_stage_ = false;
        releasing_ = true;
        set_deadline(keep_alive_until_);
        socket_.cancel(ec);
        return;
    }
    deadline_ = clock::time_point::max();
    timed_out_ = true;
    socket_.cancel(ec);
}

//------------------------------------------------------------------------------

task<>
http1_connection::serve()
{
    boost::system::error_code ec;
    auto remote = socket_.remote_endpoint(ec);
    if (!ec)
        scope_.client = to_address(remote);
    auto local = socket_.local_endpoint(ec);
    if (!ec) {
        scope_.server = to_address(local);
        auto family = local.protocol().family();
        if (family == AF_INET || family == AF_INET6)
            socket_.set_option(net::ip::tcp::no_delay(true), ec);
    }
    socket_.non_blocking(true, ec); // write_now() sends without waiting
    if (scope_.client) {
        client_text_ = scope_.client->host;
        if (scope_.client->port != 0) {
            client_text_ += ':';
            http1::append_decimal(client_text_, scope_.client->port);
        }
    } else {
        client_text_ = "-";
    }

    set_deadline(clock::now() + srv_.cfg_.timeout_request_header);
    bool linger = false; // whether unread input may follow: see close_gracefully
    for (;;) {
        int status = co_await read_header();
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
        deadline_ = clock::time_point::max();
        if (srv_.count_request())
            draining_ = true; // the last request this server takes: say connection: close
        if (srv_.over_capacity()) {
            keep_alive_ = false;
            co_await respond_simple(503, "Service Unavailable");
            linger = !body_complete_ || in_.size() > 0;
            break;
        }
        if (srv_.cfg_.ws && is_websocket_upgrade()) {
            // The connection becomes a WebSocket (or gets its denial response) and ends.
            auto ws = std::make_shared<websocket_session>(*this);
            ws_ = ws;
            co_await ws->run();
            if (closed_)
                co_return;
            linger = false;
            break;
        }
        co_await call_app();
        if (closed_)
            co_return;
        linger = !body_complete_ || in_.size() > 0;
        if (!keep_alive_ || draining_)
            break;
        if (!body_complete_ && !co_await discard_body())
            break;
        linger = false;
        reset_request();
    }
    if (!closed_)
        co_await close_gracefully(linger);
    timer_.cancel();
}

void
http1_connection::reset_request() noexcept
{
    keep_alive_ = true;
    head_request_ = request_sent_ = body_complete_ = continue_pending_ = bad_body_ = false;
    started_ = head_written_ = body_done_ = complete_ = chunked_ = no_body_ = false;
    trailers_ = trailer_open_ = false;
    status_ = 0;
    length_.reset();
    sent_ = 0;
    out_.clear();
    if (in_.size() > 0) {
        phase_ = phase::header; // a pipelined request is already here
        set_deadline(clock::now() + srv_.cfg_.timeout_request_header);
    } else {
        phase_ = phase::idle;
        in_.shrink_to_fit(); // the read buffer goes back to the pool until the next request
        // First a short deadline after which an idle connection gives its buffers back
        // (on_timer), then the keep-alive timeout proper.
        auto const now = clock::now();
        keep_alive_until_ = now + srv_.cfg_.timeout_keep_alive;
        idle_stage_ = srv_.cfg_.timeout_keep_alive > http1::idle_release;
        set_deadline(idle_stage_ ? now + http1::idle_release : keep_alive_until_);
    }
}

void
http1_connection::release_idle_memory() noexcept
{
    // Nothing of these is in use between requests; a busy connection never gets here.
    std::string().swap(out_);
    scope_.headers.clear();
    scope_.headers.shrink_to_fit();
    head_info_.clear();
    head_info_.fields.shrink_to_fit();
    std::string().swap(head_);
    parser_.reset();
}

task<int>
http1_connection::read_header()
{
    auto const& cfg = srv_.cfg_;
    auto const limit = std::min<std::size_t>(cfg.max_header_bytes, std::numeric_limits<std::uint32_t>::max());
    head_info_.clear();
    parser_.emplace(head_info_, body_);
    parser_->header_limit(static_cast<std::uint32_t>(limit));
    parser_->body_limit(boost::none);
    std::size_t parsed = 0; // bytes of the header the parser has consumed
    for (;;) {
        if (in_.size() > 0 && parsed == 0) {
            if (phase_ == phase::idle) {
                phase_ = phase::header;
                set_deadline(clock::now() + cfg.timeout_request_header);
            }
            // RFC 9112 §2.2: empty lines before the request line are ignored.
            auto const* p = static_cast<char const*>(in_.data().data());
            std::size_t skip = 0;
            while (skip + 1 < in_.size() && p[skip] == '\r' && p[skip + 1] == '\n')
                skip += 2;
            in_.consume(skip);
        }
        if (in_.size() > parsed) {
            // Beast consumes the request line and each complete field as it goes (its
            // return value, even with need_more). The header stays in in_ until it is
            // complete, so `parsed` marks what the parser has taken, and every span is an
            // offset from the start of the header.
            auto buf = in_.data();
            head_info_.base = static_cast<char const*>(buf.data());
            head_info_.size = buf.size();
            boost::system::error_code ec;
            parsed += parser_->put(buf + parsed, ec);
            if (!ec) {
                head_.assign(head_info_.base, parsed);
                in_.consume(parsed);
                co_return 0;
            }
            if (ec != boost::beast::http::error::need_more) {
                if (head_info_.reject_status)
                    co_return head_info_.reject_status;
                if (ec == boost::beast::http::error::header_limit)
                    co_return 431;
                if (ec == boost::beast::http::error::bad_version &&
                    http1::well_formed_version(std::string_view(head_info_.base, head_info_.size)))
                    co_return 505; // HTTP/2.0 and friends: understood, not supported
                co_return 400;
            }
            if (in_.size() >= limit)
                co_return 431;
        }
        timed_out_ = false;
        if (in_.size() == 0) {
            // Nothing buffered: wait in the small inline buffer, holding no read buffer
            // until there is something to parse.
            in_.shrink_to_fit();
            auto [ec, n] = co_await socket_.async_read_some(net::buffer(small_), http1::use_tuple);
            if (ec && releasing_ && !closed_) {
                releasing_ = false;
                release_idle_memory();
                parser_.emplace(head_info_, body_);
                parser_->header_limit(static_cast<std::uint32_t>(limit));
                parser_->body_limit(boost::none);
                continue;
            }
            releasing_ = false;
            if (ec)
                co_return -1;
            auto b = in_.prepare(read_block);
            std::memcpy(b.data(), small_, n);
            in_.commit(n);
            continue;
        }
        auto want = in_.size() < read_block / 2 ? read_block - in_.size() : read_block;
        auto [ec, n] = co_await socket_.async_read_some(in_.prepare(want), http1::use_tuple);
        releasing_ = false;
        if (ec) {
            if (timed_out_ && in_.size() > 0)
                co_return 408;
            co_return -1;
        }
        in_.commit(n);
    }
}

int
http1_connection::build_scope()
{
    auto& s = scope_;
    auto const& cfg = srv_.cfg_;
    std::string_view block = head_;
    s.http_version = head_info_.version == 10 ? "1.0" : "1.1";
    s.method = head_info_.method.in(block);
    auto target = head_info_.target.in(block);

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
    for (auto const& [name, value] : head_info_.fields) {
        char* p = head_.data() + name.pos;
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
    keep_alive_ = parser_->keep_alive();
    body_complete_ = parser_->is_done();
    continue_pending_ = head_info_.expect_continue && !body_complete_ && head_info_.version == 11;
    return 0;
}

bool
http1_connection::is_websocket_upgrade() const noexcept
{
    // RFC 6455 §4.2.1: a GET over HTTP/1.1 with "Upgrade: websocket" and "Connection: upgrade".
    if (scope_.method != "GET" || head_info_.version != 11)
        return false;
    bool upgrade = false;
    bool connection = false;
    for (auto const& [name, value] : scope_.headers) {
        if (name == "upgrade")
            upgrade = upgrade || http1::list_has(value, "websocket");
        else if (name == "connection")
            connection = connection || http1::list_has(value, "upgrade");
    }
    return upgrade && connection;
}

task<>
http1_connection::call_app()
{
    bool const proxied = srv_.trusted_ && apply_proxy_headers(scope_, *srv_.trusted_);
    std::exception_ptr failure;
    try {
        co_await srv_.app_(scope_, cserve::receive{*this}, cserve::send{*this});
    } catch (...) {
        failure = std::current_exception();
    }
    if (proxied) {
        // The next request on this connection starts from the peer again.
        scope_.scheme = "http";
        boost::system::error_code ec;
        auto remote = socket_.remote_endpoint(ec);
        scope_.client = ec ? std::nullopt : to_address(remote);
    }
    if (closed_)
        co_return;
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
        if (started_ || disconnected_) {
            keep_alive_ = false; // the response is broken: closing is all that is left
            co_return;
        }
        co_await respond_simple(status, body);
        co_return;
    }
    if (disconnected_) {
        keep_alive_ = false; // nobody is left to answer: nothing to report either
    } else if (bad_body_ && !started_) {
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
    http1::append_decimal(length, body.size());
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
    out_.clear();
    out_ += "HTTP/1.1 ";
    http1::append_decimal(out_, static_cast<std::uint64_t>(status));
    out_ += ' ';
    out_ += http1::reason_phrase(status);
    out_ += "\r\n";
    if (srv_.cfg_.server_header)
        out_ += "server: cserve\r\n";
    if (srv_.cfg_.date_header) {
        out_ += "date: ";
        out_ += http_date();
        out_ += "\r\n";
    }
    out_ += "content-type: text/plain; charset=utf-8\r\ncontent-length: ";
    http1::append_decimal(out_, body.size());
    out_ += "\r\nconnection: close\r\n\r\n";
    out_ += body;
    keep_alive_ = false;
    auto [ec, n] = co_await net::async_write(socket_, net::buffer(out_), http1::use_tuple);
    if (ec)
        disconnected_ = true;
    out_.clear();
}

std::size_t
http1_connection::parse_buffered(boost::system::error_code& ec)
{
    std::size_t total = 0;
    while (in_.size() > 0 && !parser_->is_done() && (!body_.sink || body_.room > 0)) {
        auto n = parser_->put(in_.data(), ec);
        in_.consume(n);
        total += n;
        if (ec == boost::beast::http::error::need_more) {
            ec = {};
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
    http1::body_scope guard{body_};
    body_ = {}; // no sink: the parser drops what it parses
    std::uint64_t dropped = 0;
    set_deadline(clock::now() + srv_.cfg_.timeout_keep_alive);
    timed_out_ = false;
    for (;;) {
        boost::system::error_code ec;
        dropped += parse_buffered(ec);
        if (ec)
            co_return false;
        if (parser_->is_done()) {
            body_complete_ = true;
            co_return true;
        }
        if (dropped > http1::discard_limit)
            co_return false;
        auto [rec, n] = co_await socket_.async_read_some(in_.prepare(http1::body_chunk), http1::use_tuple);
        if (rec)
            co_return false;
        in_.commit(n);
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
        set_deadline(clock::now() + http1::linger_time);
        std::size_t total = 0;
        while (total < http1::linger_limit) {
            in_.clear();
            auto [rec, n] = co_await socket_.async_read_some(in_.prepare(16 * 1024), http1::use_tuple);
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
        if (!started_)
            co_await write_continue();
    }
    std::string body;
    http1::body_scope guard{body_};
    for (;;) {
        body_.sink = &body;
        body_.room = http1::body_chunk - body.size();
        boost::system::error_code ec;
        parse_buffered(ec);
        if (ec) {
            srv_.log_.log(log_level::warning, "Invalid HTTP request body received.");
            bad_body_ = true;
            keep_alive_ = false;
            co_return http::disconnect{};
        }
        if (parser_->is_done()) {
            body_complete_ = true;
            co_return http::request{std::move(body), false};
        }
        if (!body.empty())
            co_return http::request{std::move(body), true};
        if (closed_ || disconnected_)
            co_return http::disconnect{};
        auto [rec, n] = co_await socket_.async_read_some(in_.prepare(http1::body_chunk), http1::use_tuple);
        if (rec) {
            disconnected_ = true;
            keep_alive_ = false;
            co_return http::disconnect{};
        }
        in_.commit(n);
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
        if (in_.size() >= http1::body_chunk) {
            // The next request fills the buffer; the client is evidently there.
            net::steady_timer wait(socket_.get_executor(), clock::time_point::max());
            co_await wait.async_wait(net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
            continue;
        }
        auto [ec, n] = co_await socket_.async_read_some(
            in_.prepare(4096), net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
        if (ec == net::error::operation_aborted)
            continue;
        if (ec) {
            disconnected_ = true;
            keep_alive_ = false;
            break;
        }
        in_.commit(n);
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
    write_done_.cancel();
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
        write_done_.expires_at(clock::time_point::max());
        co_await write_done_.async_wait(http1::use_tuple);
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
    if (s.status < 100 || s.status > 999)
        throw boost::system::system_error(make_error_code(error::invalid_status),
                                          "invalid status code " + std::to_string(s.status));
    std::optional<std::uint64_t> length;
    bool app_chunked = false;
    bool app_connection = false;
    bool app_close = false;
    for (auto const& [name, value] : s.headers) {
        if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
            throw boost::system::system_error(make_error_code(error::invalid_header),
                                              "invalid response header '" + name + "'");
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
    status_ = s.status;
    length_ = length;
    bool const http10 = head_info_.version == 10;
    bool const interim = s.status < 200;
    bool const bodiless_status = interim || s.status == 204 || s.status == 304;
    no_body_ = bodiless_status || head_request_;
    if (interim || app_close || draining_ || bad_body_)
        keep_alive_ = false;
    if (continue_pending_ && !body_complete_)
        keep_alive_ = false; // the client still holds the body back: it cannot be read past
    if (!body_complete_) {
        // An unread body bigger than what is drained afterwards: say now that this
        // connection ends with the response.
        auto remaining = parser_->content_length_remaining();
        if (remaining && *remaining > http1::discard_limit)
            keep_alive_ = false;
    }
    chunked_ = false;
    bool add_chunked = false;
    if (bodiless_status || length_) {
        // RFC 9110 §8.6: no Content-Length or Transfer-Encoding is added to 1xx and 204.
    } else if (!http10) {
        chunked_ = true;
        add_chunked = !app_chunked;
    } else if (!head_request_) {
        keep_alive_ = false; // HTTP/1.0 without a length: the body ends with the connection
    }
    // Trailers travel only in a chunked body; otherwise they are accepted and dropped.
    trailers_ = s.trailers;

    out_.clear();
    out_ += "HTTP/1.1 ";
    http1::append_decimal(out_, static_cast<std::uint64_t>(s.status));
    out_ += ' ';
    out_ += http1::reason_phrase(s.status);
    out_ += "\r\n";
    if (cfg.server_header)
        out_ += "server: cserve\r\n";
    if (cfg.date_header) {
        out_ += "date: ";
        out_ += http_date();
        out_ += "\r\n";
    }
    for (auto const& [name, value] : cfg.headers) {
        out_ += name;
        out_ += ": ";
        out_ += value;
        out_ += "\r\n";
    }
    for (auto const& [name, value] : s.headers) {
        out_ += name;
        out_ += ": ";
        out_ += value;
        out_ += "\r\n";
    }
    framing_pending_ = false;
    if (add_chunked && !no_body_) {
        // Decided by the first body event: a complete body gets a content-length.
        framing_pending_ = true;
        framing_at_ = static_cast<std::uint32_t>(out_.size());
    } else if (add_chunked) {
        out_ += "transfer-encoding: chunked\r\n";
    }
    if (!app_connection) {
        if (!keep_alive_)
            out_ += "connection: close\r\n";
        else if (http10)
            out_ += "connection: keep-alive\r\n";
    }
    out_ += "\r\n";
    access_log();
}

bool
http1_connection::prepare_body(std::string const& body, bool more, std::string_view& tail)
{
    if (framing_pending_) {
        // The whole body in one event: it gets a content-length instead of chunks.
        framing_pending_ = false;
        std::string line;
        if (!more && !trailers_) {
            chunked_ = false;
            length_ = body.size();
            line = "content-length: ";
            http1::append_decimal(line, body.size());
            line += "\r\n";
        } else {
            line = "transfer-encoding: chunked\r\n";
        }
        out_.insert(framing_at_, line);
    }
    if (no_body_) {
        if (!more) {
            body_done_ = true;
            return true; // the head alone
        }
        return false;
    }
    if (length_) {
        if (body.size() > *length_ - sent_)
            throw boost::system::system_error(make_error_code(error::content_length_exceeded),
                                              "Response content longer than Content-Length");
        sent_ += body.size();
        if (!more) {
            body_done_ = true;
            if (sent_ < *length_) {
                srv_.log_.log(log_level::error, "Response content shorter than Content-Length");
                keep_alive_ = false;
            }
        }
        return !(body.empty() && more); // nothing to write yet: the head goes out with the first bytes
    }
    if (chunked_) {
        if (!body.empty()) {
            http1::append_hex(out_, body.size());
            out_ += "\r\n";
            tail = "\r\n";
        }
        if (!more) {
            body_done_ = true;
            if (!trailers_)
                tail = body.empty() ? std::string_view("0\r\n\r\n") : std::string_view("\r\n0\r\n\r\n");
        }
        return !(out_.empty() && tail.empty());
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
    std::array<net::const_buffer, 3> buffers{net::buffer(out_), body, net::buffer(tail)};
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
    std::array<net::const_buffer, 3> buffers{net::buffer(out_), body, net::buffer(tail)};
    boost::beast::buffers_suffix<std::array<net::const_buffer, 3>> rest(buffers);
    rest.consume(done);
    auto [ec, n] = co_await net::async_write(socket_, rest, http1::use_tuple);
    finish_write(ec);
}

void
http1_connection::finish_write(boost::system::error_code ec)
{
    out_.clear();
    head_written_ = true;
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
    for (auto const& [name, value] : t.headers)
        if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
            throw boost::system::system_error(make_error_code(error::invalid_header),
                                              "invalid trailer '" + name + "'");
    if (write) {
        if (!trailer_open_) {
            out_ += "0\r\n";
            trailer_open_ = true;
        }
        for (auto const& [name, value] : t.headers) {
            out_ += name;
            out_ += ": ";
            out_ += value;
            out_ += "\r\n";
        }
    }
    if (t.more_trailers)
        co_return;
    if (write) {
        out_ += "\r\n";
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
    line.reserve(96 + scope_.raw_path.size() + scope_.query_string.size());
    line += client_text_;
    line += " - \"";
    line += scope_.method;
    line += ' ';
    line += scope_.raw_path;
    if (!scope_.query_string.empty()) {
        line += '?';
        line += scope_.query_string;
    }
    line += " HTTP/";
    line += scope_.http_version;
    line += "\" ";
    http1::append_decimal(line, static_cast<std::uint64_t>(status_));
    auto reason = http1::reason_phrase(status_);
    if (!reason.empty()) {
        line += ' ';
        line += reason;
    }
    srv_.log_.log(log_level::info, line);
}

} // namespace cserve::detail

#endif
