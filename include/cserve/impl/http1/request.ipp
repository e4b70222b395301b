// cserve/impl/http1/request.ipp -- the HTTP/1.1 request: its header, its scope, its body
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_REQUEST_IPP
#define CSERVE_IMPL_HTTP1_REQUEST_IPP

#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/text.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <limits>

namespace cserve::detail {

namespace http1 {

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
// The header and the scope.

template <class Stream>
void
http1_connection<Stream>::start_request()
{
    auto& r = *req_;
    auto const limit = std::min<std::size_t>(srv_.cfg_.max_header_bytes, std::numeric_limits<std::uint32_t>::max());
    r.x = exchange(); // nothing of the last request (or of another connection's) is left
    r.head_info.clear();
    r.parser.emplace(r.head_info, r.body);
    r.parser->header_limit(static_cast<std::uint32_t>(limit));
    if (auto const& body = srv_.cfg_.limit_request_body)
        r.parser->body_limit(*body); // Beast refuses a Content-Length past it, and a chunked body as it passes it
    else
        r.parser->body_limit(boost::none);
}

template <class Stream>
int
http1_connection<Stream>::parse_header(std::size_t& parsed)
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
        if (ec == boost::beast::http::error::body_limit)
            return 413; // its Content-Length is past --limit-request-body
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

template <class Stream>
task<int>
http1_connection<Stream>::read_header(std::size_t parsed)
{
    // An incomplete header: from now on it has timeout_request_header to arrive.
    srv_.deadlines_.set(*this, deadline_kind::request_header);
    timed_out_ = false;
    for (;;) {
        auto& in = req_->in;
        auto want = in.size() < read_block / 2 ? read_block - in.size() : read_block;
        auto [ec, n] = co_await stream_.async_read_some(in.prepare(want), http1::use_tuple);
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

template <class Stream>
int
http1_connection<Stream>::build_scope()
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
    } else if (starts_with_icase(target, "http://") || starts_with_icase(target, "https://")) {
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
    req_->x.begin(s.method == "HEAD", req_->parser->keep_alive(), req_->parser->is_done(),
             req_->head_info.expect_continue && req_->head_info.version == 11);
    return 0;
}

template <class Stream>
bool
http1_connection<Stream>::is_websocket_upgrade() const noexcept
{
    // RFC 6455 §4.2.1: a GET over HTTP/1.1 with "Upgrade: websocket" and "Connection: upgrade".
    if (req_->scope.method != "GET" || req_->head_info.version != 11)
        return false;
    bool upgrade = false;
    bool connection = false;
    for (auto const& [name, value] : req_->scope.headers) {
        if (name == "upgrade")
            upgrade = upgrade || list_has(value, "websocket");
        else if (name == "connection")
            connection = connection || list_has(value, "upgrade");
    }
    return upgrade && connection;
}

//------------------------------------------------------------------------------
// The body.

template <class Stream>
std::size_t
http1_connection<Stream>::parse_buffered(boost::system::error_code& ec)
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

template <class Stream>
task<bool>
http1_connection<Stream>::discard_body()
{
    if (req_->x.body_invalid() || req_->x.disconnected() || req_->x.continue_pending())
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
            req_->x.body_received();
            co_return true;
        }
        if (dropped > http1::discard_limit)
            co_return false;
        auto [rec, n] = co_await stream_.async_read_some(req_->in.prepare(http1::body_chunk), http1::use_tuple);
        if (rec)
            co_return false;
        req_->in.commit(n);
    }
}

//------------------------------------------------------------------------------
// The application's receive().

template <class Stream>
task<event>
http1_connection<Stream>::receive()
{
    if (closed_)
        co_return http::disconnect{};
    switch (req_->x.next_receive()) {
    case exchange::receive_step::read_body: co_return co_await read_body();
    case exchange::receive_step::empty_request: co_return http::request{};
    case exchange::receive_step::wait_disconnect: break;
    }
    co_return co_await wait_disconnect();
}

template <class Stream>
task<event>
http1_connection<Stream>::read_body()
{
    if (req_->x.take_continue())
        co_await write_continue();
    std::string body;
    http1::body_scope guard{req_->body};
    for (;;) {
        req_->body.sink = &body;
        req_->body.room = http1::body_chunk - body.size();
        boost::system::error_code ec;
        parse_buffered(ec);
        if (ec) {
            if (ec == boost::beast::http::error::body_limit)
                req_->x.body_too_large(srv_.log_);
            else
                req_->x.body_invalid(srv_.log_);
            co_return http::disconnect{};
        }
        req_->x.received(body.size());
        if (req_->parser->is_done()) {
            req_->x.body_received();
            co_return http::request{std::move(body), false};
        }
        if (!body.empty())
            co_return http::request{std::move(body), true};
        if (closed_ || req_->x.disconnected())
            co_return http::disconnect{};
        // A body that stops arriving has timeout_write to go on, as a response that stops
        // being read does (nginx's client_body_timeout): each stall, not the whole body.
        srv_.deadlines_.set(*this, deadline_kind::write);
        auto [rec, n] = co_await stream_.async_read_some(req_->in.prepare(http1::body_chunk), http1::use_tuple);
        srv_.deadlines_.clear(*this);
        if (rec && timed_out_ && !closed_)
            srv_.log_.log(log_level::warning,
                          "Client " + client_text() + " sent nothing of its request body for --timeout-write: closing");
        if (rec == net::error::operation_aborted && !closed_ && !timed_out_) {
            // The application cancelled this receive() (app.hpp): nothing was taken, the
            // connection goes on, and the next receive() reads on.
            throw boost::system::system_error(rec);
        }
        if (rec) {
            req_->x.client_gone();
            co_return http::disconnect{};
        }
        req_->in.commit(n);
    }
}

template <class Stream>
task<event>
http1_connection<Stream>::wait_disconnect()
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
    while (!req_->x.completed() && !req_->x.disconnected() && !closed_) {
        if (cs.cancelled() != net::cancellation_type::none)
            break;
        if (req_->in.size() >= http1::body_chunk) {
            // The next request fills the buffer; the client is evidently there.
            net::steady_timer wait(stream_.get_executor(), clock::time_point::max());
            co_await wait.async_wait(net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
            continue;
        }
        auto [ec, n] = co_await stream_.async_read_some(
            req_->in.prepare(4096), net::bind_cancellation_slot(monitor_.slot(), http1::use_tuple));
        if (ec == net::error::operation_aborted)
            continue;
        if (ec) {
            req_->x.client_gone();
            break;
        }
        req_->in.commit(n);
    }
    monitoring_ = false;
    if (outer.is_connected())
        outer.clear();
    if (cs.cancelled() != net::cancellation_type::none && !req_->x.completed() && !req_->x.disconnected() && !closed_)
        throw boost::system::system_error(net::error::operation_aborted);
    co_return http::disconnect{};
}

template <class Stream>
task<>
http1_connection<Stream>::write_continue()
{
    static constexpr std::string_view msg = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true;
    auto [ec, n] = co_await net::async_write(stream_, net::buffer(msg), http1::use_tuple);
    writing_ = false;
    if (write_waiter_)
        write_waiter_->cancel();
    if (ec)
        req_->x.client_gone();
}

} // namespace cserve::detail

#endif
