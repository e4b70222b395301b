// tests/support/test_server.hpp -- a cserve::server and raw HTTP clients on one io_context
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_TESTS_SUPPORT_TEST_SERVER_HPP
#define CSERVE_TESTS_SUPPORT_TEST_SERVER_HPP

// How the tests use it:
//
//   auto r = cserve_test::run_server(app, cserve_test::test_config(),
//       [&](unsigned short port) -> cserve::task<> { ...client exchange... });
//   CSERVE_REQUIRE_RUN(r);
//   CHECK(...);            // on the test thread, after run() returned
//
// run_server() owns a single-threaded io_context (concurrency hint 1), binds the server on
// 127.0.0.1 port 0, spawns serve() and the client coroutine, and calls shutdown() once the
// client is done. A hard deadline (5 s by default) stops the server and records a timeout,
// so that a hung exchange fails the test instead of hanging it. Catch2 assertions are never
// made inside coroutines: clients and applications store what they see in locals of the
// test, which the test checks after run_server() returns.

#include "catch.hpp"

#include <cserve/cserve.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace cserve_test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using ms = std::chrono::milliseconds;

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

/// The message of an exception_ptr ("" when null).
inline std::string
what(std::exception_ptr e)
{
    if (!e)
        return {};
    try {
        std::rethrow_exception(e);
    } catch (std::exception const& ex) {
        return ex.what()[0] ? ex.what() : "exception with an empty message";
    } catch (...) {
        return "unknown exception";
    }
}

//------------------------------------------------------------------------------
// Log capture

struct log_line {
    cserve::log_level level;
    std::string message;
};

/// A log sink that keeps every line; safe to call from several threads.
class log_capture {
public:
    cserve::log_sink
    sink() const
    {
        return [s = state_](cserve::log_level level, std::string_view message) {
            std::lock_guard lock(s->mutex);
            s->lines.push_back({level, std::string(message)});
        };
    }

    std::vector<log_line>
    lines() const
    {
        std::lock_guard lock(state_->mutex);
        return state_->lines;
    }

private:
    struct state {
        std::mutex mutex;
        std::vector<log_line> lines;
    };
    std::shared_ptr<state> state_ = std::make_shared<state>();
};

/// Whether any line contains `needle`.
inline bool
logged(std::vector<log_line> const& lines, std::string_view needle)
{
    for (auto const& l : lines)
        if (l.message.find(needle) != std::string::npos)
            return true;
    return false;
}

/// Every line, one per line, for INFO().
inline std::string
log_text(std::vector<log_line> const& lines)
{
    std::string out;
    for (auto const& l : lines) {
        out += cserve::to_string(l.level);
        out += ": ";
        out += l.message;
        out += '\n';
    }
    return out;
}

/// The config every test starts from: 127.0.0.1, any free port, no access log.
inline cserve::config
test_config()
{
    cserve::config cfg;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.access_log = false;
    cfg.log_level = cserve::log_level::debug;
    // Protocol tests call their app for HTTP scopes only; lifespan tests turn it back on.
    cfg.lifespan = cserve::lifespan_mode::off;
    return cfg;
}

//------------------------------------------------------------------------------
// Running a server and a client

struct run_options {
    /// After this long the server is stopped and the run counts as timed out.
    ms limit{5000};
    /// Call srv.shutdown() when the client coroutine completes.
    bool shutdown_after_client = true;
};

struct run_result {
    bool listened = false;
    std::string listen_error;
    bool timed_out = false;   // the hard deadline fired
    bool hard_stopped = false; // even stop() did not end the run: io_context stopped
    bool serve_completed = false;
    std::string serve_error;
    bool client_completed = false;
    std::string client_error;
    std::size_t connections_after_serve = static_cast<std::size_t>(-1);
    unsigned short port = 0;
    std::chrono::steady_clock::duration elapsed{};
    std::vector<log_line> log;

    bool
    ok() const
    {
        return listened && !timed_out && serve_completed && serve_error.empty() && client_completed &&
               client_error.empty();
    }

    bool
    logged(std::string_view needle) const
    {
        return cserve_test::logged(log, needle);
    }

    std::string
    describe() const
    {
        std::string d;
        d += "listened=" + std::string(listened ? "yes" : "no (" + listen_error + ")");
        d += " timed_out=" + std::string(timed_out ? "YES" : "no");
        d += " serve_completed=" + std::string(serve_completed ? "yes" : "NO");
        d += " serve_error='" + serve_error + "'";
        d += " client_completed=" + std::string(client_completed ? "yes" : "NO");
        d += " client_error='" + client_error + "'";
        d += "\nlog:\n" + log_text(log);
        return d;
    }
};

/// Fails the test (with the whole run described) unless the run ended cleanly.
#define CSERVE_REQUIRE_RUN(r)                                                                               \
    do {                                                                                                    \
        INFO((r).describe());                                                                               \
        REQUIRE((r).ok());                                                                                  \
    } while (false)

/** Serves `app` with `cfg` (its log_sink replaced by a capture) and runs `client` against it.

    `client` is called as `client(port)` or `client(server&, port)` and returns a
    cserve::task<>. It and everything it captures must outlive the call (they do when it is
    a lambda in the test body).
*/
template <class Client>
run_result
run_server(cserve::app_function app, cserve::config cfg, Client&& client, run_options opt = {})
{
    run_result r;
    log_capture logs;
    cfg.log_sink = logs.sink();
    auto const start = std::chrono::steady_clock::now();

    // Heap-allocated so that a run that had to be abandoned can be leaked rather than
    // destroyed under coroutines that still refer to the test's locals.
    auto ioc = std::make_unique<net::io_context>(1);
    auto srv = std::make_unique<cserve::server>(*ioc, std::move(app), std::move(cfg));
    boost::system::error_code ec;
    srv->listen(ec);
    if (ec) {
        r.listen_error = ec.message();
        r.log = logs.lines();
        return r;
    }
    r.listened = true;
    r.port = srv->port();

    net::steady_timer deadline(*ioc);
    net::steady_timer hard(*ioc);
    int pending = 2;
    auto finished = [&] {
        if (--pending == 0) {
            deadline.cancel();
            hard.cancel();
        }
    };

    net::co_spawn(*ioc, srv->serve(), [&](std::exception_ptr e) {
        r.serve_completed = true;
        r.serve_error = what(e);
        r.connections_after_serve = srv->connection_count();
        finished();
    });

    auto make_client = [&]() -> cserve::task<> {
        if constexpr (std::is_invocable_v<Client&, cserve::server&, unsigned short>)
            return client(*srv, r.port);
        else
            return client(r.port);
    };
    net::co_spawn(*ioc, make_client(), [&](std::exception_ptr e) {
        r.client_completed = true;
        r.client_error = what(e);
        if (opt.shutdown_after_client)
            srv->shutdown();
        finished();
    });

    deadline.expires_after(opt.limit);
    deadline.async_wait([&](boost::system::error_code e) {
        if (e)
            return;
        r.timed_out = true;
        srv->stop();
        hard.expires_after(ms(1000));
        hard.async_wait([&](boost::system::error_code e2) {
            if (e2)
                return;
            r.hard_stopped = true;
            ioc->stop();
        });
    });

    ioc->run();
    r.elapsed = std::chrono::steady_clock::now() - start;
    r.log = logs.lines();
    if (r.hard_stopped) {
        // Coroutines are still suspended inside: never destroy them.
        (void)srv.release();
        (void)ioc.release();
    }
    return r;
}

//------------------------------------------------------------------------------
// Raw clients

/// Cancels the socket's operations when `limit` passes; the socket must outlive it.
class socket_deadline {
public:
    socket_deadline(tcp::socket& s, ms limit)
        : timer_(s.get_executor())
    {
        timer_.expires_after(limit);
        timer_.async_wait([st = state_, &s](boost::system::error_code ec) {
            if (ec || !st->active)
                return;
            st->fired = true;
            boost::system::error_code ignored;
            s.cancel(ignored);
        });
    }

    ~socket_deadline()
    {
        state_->active = false;
        timer_.cancel();
    }

    socket_deadline(socket_deadline const&) = delete;
    socket_deadline& operator=(socket_deadline const&) = delete;

    bool fired() const noexcept { return state_->fired; }

private:
    struct state {
        bool active = true;
        bool fired = false;
    };
    std::shared_ptr<state> state_ = std::make_shared<state>();
    net::steady_timer timer_;
};

/// A request line and Host header, then `extra` header lines (each ending in CRLF), then
/// the blank line.
inline std::string
get(std::string_view target, std::string_view extra = {}, std::string_view method = "GET")
{
    std::string s(method);
    s += ' ';
    s += target;
    s += " HTTP/1.1\r\nHost: test\r\n";
    s += extra;
    s += "\r\n";
    return s;
}

/// Connects to host:port (throws on failure).
inline cserve::task<tcp::socket>
connect(unsigned short port, std::string host = "127.0.0.1")
{
    auto ex = co_await net::this_coro::executor;
    tcp::socket s(ex);
    co_await s.async_connect(tcp::endpoint(net::ip::make_address(host), port), net::use_awaitable);
    co_return s;
}

/// Writes all of `data` (throws on failure).
inline cserve::task<>
write(tcp::socket& s, std::string data)
{
    co_await net::async_write(s, net::buffer(data), net::use_awaitable);
}

/// Writes all of `data`; returns the error instead of throwing.
inline cserve::task<boost::system::error_code>
try_write(tcp::socket& s, std::string data)
{
    auto [ec, n] = co_await net::async_write(s, net::buffer(data), use_tuple);
    co_return ec;
}

/// Waits `d` on the current executor.
inline cserve::task<>
wait_for(ms d)
{
    net::steady_timer t(co_await net::this_coro::executor, d);
    co_await t.async_wait(use_tuple);
}

/** A one-shot event that coroutines on one io_context can await with a limit.

    `set()` wakes every waiter; `wait(limit)` completes at once when the flag is already
    set, else when it is set or `limit` passes, and says whether it was set. Use it from
    the io_context's thread only (no locking).
*/
class flag {
public:
    void
    set() noexcept
    {
        set_ = true;
        for (auto* t : waiters_)
            t->cancel();
    }

    bool is_set() const noexcept { return set_; }

    cserve::task<bool>
    wait(ms limit)
    {
        if (set_)
            co_return true;
        net::steady_timer t(co_await net::this_coro::executor, limit);
        waiters_.push_back(&t);
        co_await t.async_wait(use_tuple);
        std::erase(waiters_, &t);
        co_return set_;
    }

private:
    std::vector<net::steady_timer*> waiters_;
    bool set_ = false;
};

struct read_result {
    std::string data;
    bool eof = false;       // the peer closed its side cleanly
    bool timed_out = false; // the limit passed first
    boost::system::error_code ec; // any other error (such as a reset)
};

/// Reads until the peer closes, an error, or `limit`; `buffered` bytes come first.
inline cserve::task<read_result>
read_to_eof(tcp::socket& s, beast::flat_buffer& buffered, ms limit = ms(2000))
{
    read_result r;
    r.data = beast::buffers_to_string(buffered.data());
    buffered.consume(buffered.size());
    socket_deadline d(s, limit);
    char chunk[16 * 1024];
    for (;;) {
        auto [ec, n] = co_await s.async_read_some(net::buffer(chunk), use_tuple);
        r.data.append(chunk, n);
        if (ec == net::error::eof) {
            r.eof = true;
            break;
        }
        if (ec) {
            if (d.fired())
                r.timed_out = true;
            else
                r.ec = ec;
            break;
        }
    }
    co_return r;
}

inline cserve::task<read_result>
read_to_eof(tcp::socket& s, ms limit = ms(2000))
{
    beast::flat_buffer none;
    co_return co_await read_to_eof(s, none, limit);
}

struct response_result {
    bhttp::response<bhttp::string_body> msg;
    boost::system::error_code ec;
    bool timed_out = false;

    bool ok() const noexcept { return !ec; }
    int status() const noexcept { return ok() ? static_cast<int>(msg.result_int()) : -1; }

    /// The value of the field (empty when absent).
    std::string
    header(std::string_view name) const
    {
        auto it = msg.find(beast::string_view(name.data(), name.size()));
        if (it == msg.end())
            return {};
        return std::string(it->value());
    }

    bool
    has(std::string_view name) const
    {
        return msg.count(beast::string_view(name.data(), name.size())) > 0;
    }
};

/** Reads one response with Beast's client parser.

    `buf` keeps bytes that arrived after the response, so pipelined responses are read one
    after another with the same buffer. Set `head` for the response to a HEAD request.
*/
inline cserve::task<response_result>
read_response(tcp::socket& s, beast::flat_buffer& buf, bool head = false, ms limit = ms(2000))
{
    response_result r;
    bhttp::response_parser<bhttp::string_body> p;
    p.body_limit(boost::none);
    p.header_limit(64 * 1024);
    if (head)
        p.skip(true);
    socket_deadline d(s, limit);
    auto [ec, n] = co_await bhttp::async_read(s, buf, p, use_tuple);
    r.timed_out = d.fired();
    r.ec = ec;
    if (!ec)
        r.msg = p.release();
    co_return r;
}

/// Parses responses out of `raw` (what a client read up to EOF). `head[i]` marks the
/// response to a HEAD request.
struct parsed_responses {
    std::vector<bhttp::response<bhttp::string_body>> responses;
    std::string error; // why parsing stopped before the end of `raw`, or a partial message
    std::string rest;  // unparsed bytes
};

inline parsed_responses
parse_responses(std::string_view raw, std::vector<bool> head = {})
{
    parsed_responses out;
    std::size_t pos = 0;
    while (pos < raw.size()) {
        auto const begin = pos;
        bhttp::response_parser<bhttp::string_body> p;
        p.eager(true);
        p.body_limit(boost::none);
        p.header_limit(64 * 1024);
        if (out.responses.size() < head.size() && head[out.responses.size()])
            p.skip(true);
        while (!p.is_done()) {
            beast::error_code ec;
            if (pos < raw.size()) {
                auto n = p.put(net::buffer(raw.data() + pos, raw.size() - pos), ec);
                pos += n;
                if (!ec && n > 0)
                    continue;
                if (ec && ec != bhttp::error::need_more) {
                    out.error = ec.message();
                    out.rest = std::string(raw.substr(begin));
                    return out;
                }
                if (pos < raw.size() && n > 0)
                    continue;
            }
            // Nothing more to parse: the end of the stream.
            p.put_eof(ec);
            if (ec) {
                out.error = ec.message();
                out.rest = std::string(raw.substr(begin));
                return out;
            }
            break;
        }
        out.responses.push_back(p.release());
    }
    return out;
}

/// The value of a field of a parsed response ("" when absent).
inline std::string
field(bhttp::response<bhttp::string_body> const& m, std::string_view name)
{
    auto it = m.find(beast::string_view(name.data(), name.size()));
    return it == m.end() ? std::string() : std::string(it->value());
}

} // namespace cserve_test

#endif
