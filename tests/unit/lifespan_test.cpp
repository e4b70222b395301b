// tests/unit/lifespan_test.cpp -- the lifespan protocol: startup, state, shutdown, failures
// SPDX-License-Identifier: BSL-1.0
#include <cserve/cserve.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <any>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

// ct::test_config() turns the lifespan off for protocol tests; here it is the subject.
inline cserve::config
lifespan_config()
{
    auto cfg = cserve_test::test_config();
    cfg.lifespan = cserve::lifespan_mode::automatic;
    return cfg;
}

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
namespace lifespan = cserve::lifespan;
namespace net = boost::asio;
namespace beast = boost::beast;
using cserve::task;
using ct::ms;

//------------------------------------------------------------------------------
// A run of a server whose serve() outcome matters: like ct::run_server, but it keeps
// serve()'s exception (to check its error code) and can mark serve()'s completion in a
// log of events that the applications write too.

struct lifespan_run {
    bool listened = false;
    bool serve_completed = false;
    std::exception_ptr serve_exception;
    bool client_completed = false;
    std::string client_error;
    bool timed_out = false;
    unsigned short port = 0;
    std::vector<ct::log_line> log;

    bool logged(std::string_view needle) const { return ct::logged(log, needle); }

    // The error code of the system_error serve() threw (none when it completed normally).
    boost::system::error_code
    serve_code() const
    {
        if (!serve_exception)
            return {};
        try {
            std::rethrow_exception(serve_exception);
        } catch (boost::system::system_error const& e) {
            return e.code();
        } catch (...) {
            return make_error_code(boost::system::errc::invalid_argument); // not a system_error
        }
    }

    std::string
    describe() const
    {
        std::string d = "listened=" + std::string(listened ? "yes" : "NO");
        d += " timed_out=" + std::string(timed_out ? "YES" : "no");
        d += " serve_completed=" + std::string(serve_completed ? "yes" : "NO");
        d += " serve_error='" + ct::what(serve_exception) + "'";
        d += " client_completed=" + std::string(client_completed ? "yes" : "NO");
        d += " client_error='" + client_error + "'";
        d += "\nlog:\n" + ct::log_text(log);
        return d;
    }
};

struct lifespan_run_options {
    ms limit{5000};
    bool shutdown_after_client = true;
    std::function<void()> on_serve_done; // called as serve() completes, on the io thread
};

template <class Client>
lifespan_run
run_lifespan(cserve::app_function app, cserve::config cfg, Client&& client, lifespan_run_options opt = {})
{
    lifespan_run r;
    ct::log_capture logs;
    cfg.log_sink = logs.sink();
    // Heap-allocated so that an abandoned run leaks instead of destroying live coroutines.
    auto ioc = std::make_unique<net::io_context>(1);
    auto srv = std::make_unique<cserve::server>(*ioc, std::move(app), std::move(cfg));
    boost::system::error_code ec;
    srv->listen(ec);
    if (ec) {
        r.log = logs.lines();
        return r;
    }
    r.listened = true;
    r.port = srv->port();

    net::steady_timer deadline(*ioc);
    int pending = 2;
    auto finished = [&] {
        if (--pending == 0)
            deadline.cancel();
    };
    net::co_spawn(*ioc, srv->serve(), [&](std::exception_ptr e) {
        r.serve_completed = true;
        r.serve_exception = e;
        if (opt.on_serve_done)
            opt.on_serve_done();
        finished();
    });
    net::co_spawn(*ioc, client(*srv, r.port), [&](std::exception_ptr e) {
        r.client_completed = true;
        r.client_error = ct::what(e);
        if (opt.shutdown_after_client)
            srv->shutdown();
        finished();
    });
    deadline.expires_after(opt.limit);
    deadline.async_wait([&](boost::system::error_code e) {
        if (!e) {
            r.timed_out = true;
            srv->stop();
        }
    });
    // stop() ends everything but an application that never returns; give up a second later.
    ioc->run_for(opt.limit + std::chrono::seconds(1));
    r.log = logs.lines();
    if (!ioc->stopped()) {
        r.timed_out = true;
        (void)srv.release();
        (void)ioc.release();
    }
    return r;
}

#define LIFESPAN_REQUIRE_RUN(r)                                                                             \
    do {                                                                                                    \
        INFO((r).describe());                                                                               \
        REQUIRE((r).listened);                                                                              \
        REQUIRE_FALSE((r).timed_out);                                                                       \
        REQUIRE((r).serve_completed);                                                                       \
        REQUIRE((r).client_completed);                                                                      \
        REQUIRE((r).client_error.empty());                                                                  \
    } while (false)

task<>
respond(cserve::send send, int status, std::string body)
{
    co_await send(http::response_start{
        .status = status,
        .headers = {{"content-length", std::to_string(body.size())}},
    });
    co_await send(http::response_body{.body = std::move(body)});
}

// One GET on an open connection; the response, or status -1.
task<ct::response_result>
get(ct::tcp::socket& s, beast::flat_buffer& buf, std::string target)
{
    auto ec = co_await ct::try_write(s, ct::get(target));
    if (ec) {
        ct::response_result r;
        r.ec = ec;
        co_return r;
    }
    co_return co_await ct::read_response(s, buf);
}

} // namespace

//------------------------------------------------------------------------------
// The protocol when the application takes part

TEST_CASE("lifespan: startup completes before any request is served, each request gets a shallow copy of the state, "
          "and shutdown comes after the last response",
          "[lifespan][state][shutdown]")
{
    using shared_list = std::vector<std::string>;
    std::vector<std::string> order;
    cserve::server* srvp = nullptr;

    // What each request saw of the state.
    struct seen_state {
        std::string path;
        std::optional<int> n;
        bool had_added_key = false;
        shared_list const* shared = nullptr;
    };
    std::vector<seen_state> seen;
    std::shared_ptr<shared_list> shared_from_startup; // outlives the server
    std::optional<int> n_at_shutdown;
    bool added_at_shutdown = true;

    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            for (;;) {
                auto e = co_await receive();
                if (std::holds_alternative<lifespan::startup>(e)) {
                    order.push_back("startup");
                    co_await ct::wait_for(ms(200)); // a slow startup: requests must wait for it
                    auto list = std::make_shared<shared_list>();
                    shared_from_startup = list;
                    scope.state["n"] = 1;
                    scope.state["shared"] = list;
                    order.push_back("startup complete");
                    co_await send(lifespan::startup_complete{});
                } else if (std::holds_alternative<lifespan::shutdown>(e)) {
                    order.push_back("shutdown");
                    if (auto it = scope.state.find("n"); it != scope.state.end())
                        if (auto const* v = std::any_cast<int>(&it->second))
                            n_at_shutdown = *v;
                    added_at_shutdown = scope.state.contains("added");
                    co_await ct::wait_for(ms(100)); // serve() must wait for the answer
                    order.push_back("shutdown complete");
                    co_await send(lifespan::shutdown_complete{});
                    co_return;
                } else {
                    order.push_back(std::string("unexpected ") + std::string(cserve::event_name(e)));
                    co_return;
                }
            }
        }
        std::string path = scope.path;
        order.push_back("request " + path);
        seen_state s{.path = path};
        if (auto it = scope.state.find("n"); it != scope.state.end())
            if (auto const* v = std::any_cast<int>(&it->second))
                s.n = *v;
        s.had_added_key = scope.state.contains("added");
        if (auto it = scope.state.find("shared"); it != scope.state.end()) {
            if (auto const* p = std::any_cast<std::shared_ptr<shared_list>>(&it->second)) {
                s.shared = p->get();
                (*p)->push_back(path); // visible to every connection: the object is shared
            }
        }
        seen.push_back(s);
        // Changes to the map stay this request's own.
        scope.state["n"] = 99;
        scope.state["added"] = true;
        scope.state.erase("shared");
        if (path == "/slow") {
            srvp->shutdown();
            co_await ct::wait_for(ms(300));
            order.push_back("response /slow");
        }
        co_await respond(send, 200, path);
    };

    std::vector<ct::response_result> responses;
    auto r = run_lifespan(
        app, lifespan_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            srvp = &srv;
            // Connected while the startup is still running: it waits in the backlog.
            auto first = co_await ct::connect(port);
            beast::flat_buffer buf;
            responses.push_back(co_await get(first, buf, "/a"));
            responses.push_back(co_await get(first, buf, "/b")); // same connection, same scope object
            {
                auto second = co_await ct::connect(port);
                beast::flat_buffer buf2;
                responses.push_back(co_await get(second, buf2, "/c"));
            }
            auto third = co_await ct::connect(port);
            beast::flat_buffer buf3;
            responses.push_back(co_await get(third, buf3, "/slow"));
        },
        {.shutdown_after_client = false, .on_serve_done = [&] { order.push_back("serve done"); }});
    LIFESPAN_REQUIRE_RUN(r);
    INFO(r.describe());
    CHECK_FALSE(r.serve_exception);

    std::vector<std::string> const expected_order{
        "startup",        "startup complete", "request /a",        "request /b", "request /c",
        "request /slow",  "response /slow",   "shutdown",          "shutdown complete", "serve done",
    };
    CHECK(order == expected_order);

    REQUIRE(responses.size() == 4);
    for (auto const& res : responses)
        CHECK(res.status() == 200);
    CHECK(responses[3].header("connection") == "close");

    REQUIRE(seen.size() == 4);
    REQUIRE(shared_from_startup != nullptr);
    for (auto const& s : seen) {
        INFO("request " << s.path);
        CHECK(s.n == std::optional<int>(1));
        CHECK_FALSE(s.had_added_key);
        CHECK(s.shared == shared_from_startup.get());
    }
    CHECK(*shared_from_startup == shared_list{"/a", "/b", "/c", "/slow"});
    // The lifespan scope's own map is untouched by what requests did to their copies.
    CHECK(n_at_shutdown == std::optional<int>(1));
    CHECK_FALSE(added_at_shutdown);

    CHECK(r.logged("Waiting for application startup."));
    CHECK(r.logged("Application startup complete."));
    CHECK(r.logged("Waiting for application shutdown."));
    CHECK(r.logged("Application shutdown complete."));
}

TEST_CASE("lifespan: shutdown_failed is logged and serve() still completes", "[lifespan][shutdown]")
{
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            co_await receive();
            co_await send(lifespan::startup_complete{});
            co_await receive();
            co_await send(lifespan::shutdown_failed{.message = "cleanup went wrong"});
            co_return;
        }
        co_await respond(send, 200, "ok");
    };
    ct::response_result res;
    auto r = run_lifespan(app, lifespan_config(), [&](cserve::server&, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        res = co_await get(s, buf, "/");
    });
    LIFESPAN_REQUIRE_RUN(r);
    CHECK_FALSE(r.serve_exception);
    CHECK(res.status() == 200);
    CHECK(r.logged("cleanup went wrong"));
    CHECK_FALSE(r.logged("Application shutdown complete."));
}

TEST_CASE("lifespan: a receive() cancelled by a timer throws operation_aborted and the next one gets shutdown",
          "[lifespan][cancel]")
{
    using namespace net::experimental::awaitable_operators;
    int timeouts = 0;
    bool got_shutdown = false;
    std::string failure;
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            co_await receive();
            co_await send(lifespan::startup_complete{});
            try {
                // Waits for the shutdown with a deadline: the timer wins until the server
                // shuts down, and each lost receive() is cancelled.
                for (;;) {
                    net::steady_timer t(co_await net::this_coro::executor, ms(10));
                    auto e = co_await (receive() || t.async_wait(net::use_awaitable));
                    if (std::holds_alternative<std::monostate>(e)) {
                        ++timeouts;
                        continue;
                    }
                    got_shutdown = std::holds_alternative<lifespan::shutdown>(e);
                    break;
                }
            } catch (std::exception const& e) {
                failure = e.what();
            }
            co_await send(lifespan::shutdown_complete{});
            co_return;
        }
        co_await respond(send, 200, "ok");
    };
    ct::response_result res;
    auto r = run_lifespan(app, lifespan_config(), [&](cserve::server&, unsigned short port) -> task<> {
        // A few timeouts before the shutdown.
        auto const until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (timeouts < 2 && std::chrono::steady_clock::now() < until)
            co_await ct::wait_for(ms(5));
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        res = co_await get(s, buf, "/");
    });
    LIFESPAN_REQUIRE_RUN(r);
    CHECK_FALSE(r.serve_exception);
    CHECK(failure.empty());
    CHECK(res.status() == 200);
    CHECK(timeouts >= 2);
    CHECK(got_shutdown);
    CHECK(r.logged("Application shutdown complete."));
}

TEST_CASE("lifespan: a cancelled receive() throws operation_aborted", "[lifespan][cancel]")
{
    std::optional<boost::system::error_code> thrown;
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            co_await receive();
            co_await send(lifespan::startup_complete{});
            net::cancellation_signal cancel;
            net::steady_timer t(co_await net::this_coro::executor, ms(20));
            t.async_wait([&](boost::system::error_code) { cancel.emit(net::cancellation_type::terminal); });
            try {
                co_await net::co_spawn(co_await net::this_coro::executor, receive(),
                                       net::bind_cancellation_slot(cancel.slot(), net::use_awaitable));
            } catch (boost::system::system_error const& e) {
                thrown = e.code();
            }
            co_await receive(); // the shutdown is still there
            co_await send(lifespan::shutdown_complete{});
            co_return;
        }
        co_await respond(send, 200, "ok");
    };
    auto r = run_lifespan(app, lifespan_config(), [&](cserve::server&, unsigned short) -> task<> {
        // The shutdown only once the cancelled receive() has thrown.
        auto const until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (!thrown && std::chrono::steady_clock::now() < until)
            co_await ct::wait_for(ms(5));
    });
    LIFESPAN_REQUIRE_RUN(r);
    REQUIRE(thrown);
    CHECK(*thrown == net::error::operation_aborted);
    CHECK(r.logged("Application shutdown complete."));
}

//------------------------------------------------------------------------------
// Applications that do not support it, or fail it

TEST_CASE("lifespan: in auto mode an app that throws on the lifespan scope is taken not to support it",
          "[lifespan][auto]")
{
    int lifespan_calls = 0;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            ++lifespan_calls;
            throw std::runtime_error("no lifespan here");
        }
        co_await respond(send, 200, "served");
    };
    ct::response_result res;
    auto r = run_lifespan(app, lifespan_config(), [&](cserve::server&, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        res = co_await get(s, buf, "/");
    });
    LIFESPAN_REQUIRE_RUN(r);
    CHECK_FALSE(r.serve_exception);
    CHECK(lifespan_calls == 1);
    CHECK(res.status() == 200);
    CHECK(res.msg.body() == "served");
    CHECK(r.logged("ASGI 'lifespan' protocol appears unsupported."));
    CHECK_FALSE(r.logged("Application startup failed"));
    CHECK_FALSE(r.logged("Waiting for application shutdown."));
}

TEST_CASE("lifespan: in auto mode an app that returns at once on the lifespan scope is served normally",
          "[lifespan][auto]")
{
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.type != cserve::scope_type::http)
            co_return; // hello.cpp's style
        co_await respond(send, 200, "served");
    };
    ct::response_result res;
    auto r = run_lifespan(app, lifespan_config(), [&](cserve::server&, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        res = co_await get(s, buf, "/");
    });
    LIFESPAN_REQUIRE_RUN(r);
    CHECK_FALSE(r.serve_exception);
    CHECK(res.status() == 200);
}

namespace {

// A client for a server that must not start: tries one request, records what came back.
struct refused_client {
    bool connected = false;
    std::string received;
    bool timed_out = false;

    task<>
    operator()(cserve::server&, unsigned short port)
    {
        auto ex = co_await net::this_coro::executor;
        ct::tcp::socket s(ex);
        auto [ec] = co_await s.async_connect(ct::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ct::use_tuple);
        if (ec)
            co_return; // refused: the listener is already closed
        connected = true;
        co_await ct::try_write(s, ct::get("/"));
        auto res = co_await ct::read_to_eof(s, ms(1500));
        received = res.data;
        timed_out = res.timed_out;
    }
};

// Whether a fresh connection to 127.0.0.1:port is refused.
bool
connection_refused(unsigned short port)
{
    net::io_context ioc;
    ct::tcp::socket s(ioc);
    boost::system::error_code ec;
    s.connect(ct::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    return ec == boost::asio::error::connection_refused;
}

} // namespace

TEST_CASE("lifespan: in on mode an app that throws on the lifespan scope makes serve() fail with startup_failed",
          "[lifespan][on][errors]")
{
    auto cfg = lifespan_config();
    cfg.lifespan = cserve::lifespan_mode::on;
    int http_calls = 0;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan)
            throw std::runtime_error("lifespan exploded");
        ++http_calls;
        co_await respond(send, 200, "should not be served");
    };
    refused_client client;
    auto r = run_lifespan(app, cfg, std::ref(client));
    LIFESPAN_REQUIRE_RUN(r);
    INFO(r.describe());
    CHECK(r.serve_exception);
    CHECK(r.serve_code() == cserve::error::startup_failed);
    CHECK(r.serve_code().category().name() == std::string("cserve"));
    CHECK(http_calls == 0);
    CHECK(client.received.empty());
    CHECK_FALSE(client.timed_out); // a pending connection is reset, not left hanging
    CHECK(r.logged("lifespan exploded"));
    CHECK(r.logged("Application startup failed. Exiting."));
    CHECK_FALSE(r.logged("cserve running on"));
    CHECK(connection_refused(r.port));
}

TEST_CASE("lifespan: startup_failed makes serve() fail with startup_failed and logs the message",
          "[lifespan][errors]")
{
    int http_calls = 0;
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            co_await receive();
            co_await send(lifespan::startup_failed{.message = "db down"});
            co_return;
        }
        ++http_calls;
        co_await respond(send, 200, "should not be served");
    };
    refused_client client;
    auto r = run_lifespan(app, lifespan_config(), std::ref(client)); // auto mode
    LIFESPAN_REQUIRE_RUN(r);
    INFO(r.describe());
    CHECK(r.serve_code() == cserve::error::startup_failed);
    CHECK(ct::what(r.serve_exception).find("db down") != std::string::npos);
    CHECK(http_calls == 0);
    CHECK(client.received.empty());
    CHECK(r.logged("db down"));
    CHECK(r.logged("Application startup failed. Exiting."));
    CHECK(connection_refused(r.port));
}

TEST_CASE("lifespan: with lifespan off the app is never called with a lifespan scope", "[lifespan][off]")
{
    auto cfg = lifespan_config();
    cfg.lifespan = cserve::lifespan_mode::off;
    int lifespan_calls = 0;
    bool state_empty = false;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.type == cserve::scope_type::lifespan) {
            ++lifespan_calls;
            co_return;
        }
        state_empty = scope.state.empty();
        co_await respond(send, 200, "served");
    };
    ct::response_result res;
    auto r = run_lifespan(app, cfg, [&](cserve::server&, unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        res = co_await get(s, buf, "/");
    });
    LIFESPAN_REQUIRE_RUN(r);
    CHECK_FALSE(r.serve_exception);
    CHECK(lifespan_calls == 0);
    CHECK(res.status() == 200);
    CHECK(state_empty);
    CHECK_FALSE(r.logged("Waiting for application startup."));
    CHECK_FALSE(r.logged("lifespan"));
}
