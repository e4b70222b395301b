// tests/unit/server_test.cpp -- listeners, shutdown, stop, threads and the accept loop
// SPDX-License-Identifier: BSL-1.0
#include <cserve/server.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
namespace net = boost::asio;
namespace beast = boost::beast;
using cserve::task;
using ct::ms;
using clock_type = std::chrono::steady_clock;

task<>
respond(cserve::send send, int status, std::string body)
{
    co_await send(http::response_start{
        .status = status,
        .headers = {{"content-length", std::to_string(body.size())}},
    });
    co_await send(http::response_body{.body = std::move(body)});
}

task<>
ok_app(cserve::scope&, cserve::receive, cserve::send send)
{
    co_await respond(send, 200, "ok");
}

// Answers with the request path.
task<>
path_app(cserve::scope& scope, cserve::receive, cserve::send send)
{
    co_await respond(send, 200, std::string(scope.path));
}

// How long shutdown() and stop() may take to close a connection or end serve(): ample on a
// loaded machine, and far below the connection timeouts of long_timeouts_config(), which
// are then the only other way these connections could close.
constexpr ms shutdown_bound{10000};

cserve::config
long_timeouts_config()
{
    auto cfg = ct::test_config();
    cfg.timeout_keep_alive = std::chrono::seconds(60);
    cfg.timeout_request_header = std::chrono::seconds(60);
    return cfg;
}

// run_server()'s options for these tests: the client starts the shutdown itself, and the
// run's limit lies past shutdown_bound (and within ctest's 30 s per test).
constexpr ct::run_options shutdown_run{.limit = ms(20000), .shutdown_after_client = false};

// How long an application that should be cancelled would otherwise run.
constexpr std::chrono::seconds long_task{60};

} // namespace

//------------------------------------------------------------------------------
// Listening

TEST_CASE("server: port 0 binds a free port that port() and local_addresses() report", "[server][listen]")
{
    net::io_context ioc(1);
    auto cfg = ct::test_config();
    cserve::server srv(ioc, ok_app, cfg);
    CHECK(srv.port() == 0);
    CHECK(srv.local_addresses().empty());
    CHECK(srv.connection_count() == 0);
    CHECK(srv.config().host == "127.0.0.1");
    CHECK(srv.config().port == 0);

    srv.listen();
    auto port = srv.port();
    CHECK(port != 0);
    auto addrs = srv.local_addresses();
    REQUIRE(addrs.size() == 1);
    CHECK(addrs[0] == cserve::address{"127.0.0.1", port});

    // A second listen() does nothing.
    boost::system::error_code ec;
    srv.listen(ec);
    CHECK_FALSE(ec);
    CHECK(srv.port() == port);
    CHECK(srv.local_addresses().size() == 1);

    // The port really is listening.
    ct::tcp::socket probe(ioc);
    probe.connect(ct::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    CHECK_FALSE(ec);
}

TEST_CASE("server: binding a port that is taken fails: listen(ec) sets it, listen() and serve() throw",
          "[server][listen][errors]")
{
    net::io_context ioc(1);
    cserve::server first(ioc, ok_app, ct::test_config());
    first.listen();
    auto cfg = ct::test_config();
    cfg.port = first.port();

    cserve::server second(ioc, ok_app, cfg);
    boost::system::error_code ec;
    second.listen(ec);
    CHECK(ec);
    CHECK(ec == boost::system::errc::address_in_use);
    CHECK(second.port() == 0);
    CHECK(second.local_addresses().empty());
    CHECK_THROWS_AS(second.listen(), boost::system::system_error);

    // serve() binds first; it completes with the error.
    std::exception_ptr failure;
    bool done = false;
    net::co_spawn(ioc, second.serve(), [&](std::exception_ptr e) {
        done = true;
        failure = e;
    });
    ioc.run_for(std::chrono::seconds(2));
    CHECK(done);
    CHECK(failure);
    CHECK_THROWS_AS(std::rethrow_exception(failure), boost::system::system_error);
}

TEST_CASE("server: config.headers with an invalid name or value is refused at construction",
          "[server][config][headers]")
{
    // Written into every response head: a CR or LF would split each response.
    struct bad_header {
        char const* name;
        std::string header_name;
        std::string value;
    };
    auto const bad = GENERATE(bad_header{"LF in the value", "x-a", "b\nx-injected: 1"},
                              bad_header{"CRLF in the value", "x-a", "b\r\nx-injected: 1"},
                              bad_header{"NUL in the value", "x-a", std::string("b\0c", 3)},
                              bad_header{"space in the name", "x a", "b"},
                              bad_header{"colon in the name", "x-a:", "b"},
                              bad_header{"empty name", "", "b"});
    auto const& name = bad.header_name;
    INFO(bad.name);
    net::io_context ioc;
    auto cfg = ct::test_config();
    cfg.headers = {{"x-good", "fine"}, {name, bad.value}};
    std::string message;
    bool threw = false;
    try {
        cserve::server srv(ioc, ok_app, cfg);
    } catch (std::invalid_argument const& e) {
        threw = true;
        message = e.what();
    }
    CHECK(threw);
    CHECK(message.find("'" + name + "'") != std::string::npos);

    cfg.headers = {{"x-good", "fine"}, {"x-empty", ""}};
    CHECK_NOTHROW(cserve::server(ioc, ok_app, cfg));
}

TEST_CASE("server: an unresolvable host makes listen(ec) fail", "[server][listen][host]")
{
    net::io_context ioc(1);
    auto cfg = ct::test_config();
    cfg.host = "not an address";
    cserve::server srv(ioc, ok_app, cfg);
    boost::system::error_code ec;
    srv.listen(ec);
    CHECK(ec);
    CHECK(srv.port() == 0);
}

TEST_CASE("server: serves over IPv6 on ::1", "[server][listen][ipv6]")
{
    {
        net::io_context probe_ioc;
        ct::tcp::acceptor probe(probe_ioc);
        boost::system::error_code ec;
        probe.open(ct::tcp::v6(), ec);
        if (!ec)
            probe.bind(ct::tcp::endpoint(net::ip::make_address("::1"), 0), ec);
        if (ec) {
            WARN("skipped: cannot bind ::1 (" << ec.message() << ")");
            return;
        }
    }
    auto cfg = ct::test_config();
    cfg.host = "::1";
    std::optional<cserve::address> client, server;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        client = scope.client;
        server = scope.server;
        co_await respond(send, 200, "over v6");
    };
    ct::response_result res;
    auto r = ct::run_server(app, cfg, [&](cserve::server& srv, unsigned short port) -> task<> {
        (void)srv;
        auto s = co_await ct::connect(port, "::1");
        co_await ct::write(s, ct::get("/"));
        beast::flat_buffer buf;
        res = co_await ct::read_response(s, buf);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(res.ok());
    CHECK(res.msg.body() == "over v6");
    REQUIRE(client);
    CHECK(client->host == "::1");
    REQUIRE(server);
    CHECK(server->host == "::1");
    CHECK(server->port == r.port);
    CHECK(r.logged("http://[::1]:" + std::to_string(r.port)));
}

//------------------------------------------------------------------------------
// Graceful shutdown

TEST_CASE("server: shutdown() lets a request in flight finish with connection: close and closes idle ones at once",
          "[server][shutdown]")
{
    cserve::server* srvp = nullptr;
    ct::flag idle_closed;
    bool idle_closed_while_slow_ran = false;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.path == "/slow") {
            srvp->shutdown();
            // Runs until the client has seen the idle connection close, however long that
            // takes; a server that kept it open until this request ended is caught here.
            idle_closed_while_slow_ran = co_await idle_closed.wait(shutdown_bound);
        }
        co_await respond(send, 200, std::string(scope.path));
    };
    ct::response_result idle_first, slow;
    ct::read_result idle_rest, slow_rest;
    auto r = ct::run_server(
        app, long_timeouts_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            srvp = &srv;
            auto idle = co_await ct::connect(port);
            beast::flat_buffer idle_buf;
            co_await ct::write(idle, ct::get("/idle"));
            idle_first = co_await ct::read_response(idle, idle_buf);

            auto busy = co_await ct::connect(port);
            beast::flat_buffer busy_buf;
            co_await ct::write(busy, ct::get("/slow"));
            idle_rest = co_await ct::read_to_eof(idle, idle_buf, shutdown_bound);
            if (idle_rest.eof)
                idle_closed.set();
            slow = co_await ct::read_response(busy, busy_buf);
            slow_rest = co_await ct::read_to_eof(busy, busy_buf, shutdown_bound);
        },
        shutdown_run);
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(idle_first.ok());
    CHECK(idle_first.msg.body() == "/idle");

    // The idle connection was closed while the slow request was still running.
    CHECK(idle_rest.eof);
    CHECK(idle_rest.data.empty());
    CHECK(idle_closed_while_slow_ran);

    REQUIRE(slow.ok());
    CHECK(slow.status() == 200);
    CHECK(slow.msg.body() == "/slow");
    CHECK(slow.header("connection") == "close");
    CHECK(slow_rest.eof);
    CHECK(slow_rest.data.empty());

    CHECK(r.connections_after_serve == 0);
    CHECK(r.logged("Shutting down"));
    CHECK(r.elapsed < shutdown_bound);
}

TEST_CASE("server: shutdown() closes a connection that has not sent a request yet",
          "[server][shutdown][fresh]")
{
    cserve::server* srvp = nullptr;
    auto app = [&](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        srvp->shutdown();
        co_await respond(send, 200, "shutting down");
    };
    ct::response_result res;
    ct::read_result fresh_rest;
    auto r = ct::run_server(
        app, long_timeouts_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            srvp = &srv;
            // Accepted first (the backlog is FIFO), so it is registered before the request
            // on the second connection starts the shutdown.
            auto fresh = co_await ct::connect(port);
            auto other = co_await ct::connect(port);
            beast::flat_buffer buf;
            co_await ct::write(other, ct::get("/"));
            res = co_await ct::read_response(other, buf);
            fresh_rest = co_await ct::read_to_eof(fresh, shutdown_bound);
        },
        shutdown_run);
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(res.ok());
    CHECK(res.msg.body() == "shutting down");
    CHECK(fresh_rest.eof);
    CHECK_FALSE(fresh_rest.timed_out);
    CHECK(fresh_rest.data.empty());
    CHECK(r.connections_after_serve == 0);
}

TEST_CASE("server: timeout_graceful_shutdown cancels requests that run too long",
          "[server][shutdown][timeout]")
{
    auto cfg = long_timeouts_config();
    cfg.timeout_graceful_shutdown = ms(100);
    cserve::server* srvp = nullptr;
    bool app_cancelled = false;
    auto app = [&](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        srvp->shutdown();
        net::steady_timer t(co_await net::this_coro::executor, long_task);
        auto [ec] = co_await t.async_wait(ct::use_tuple);
        if (ec == net::error::operation_aborted)
            app_cancelled = true;
        co_await respond(send, 200, "too late");
    };
    ct::read_result rest;
    clock_type::duration waited{};
    auto r = ct::run_server(
        app, cfg,
        [&](cserve::server& srv, unsigned short port) -> task<> {
            srvp = &srv;
            auto s = co_await ct::connect(port);
            co_await ct::write(s, ct::get("/"));
            auto t0 = clock_type::now();
            rest = co_await ct::read_to_eof(s, shutdown_bound);
            waited = clock_type::now() - t0;
        },
        shutdown_run);
    CSERVE_REQUIRE_RUN(r);
    CHECK(app_cancelled);
    CHECK((rest.eof || rest.ec.failed())); // closed, not timed out
    CHECK_FALSE(rest.timed_out);
    CHECK(rest.data.empty());
    CHECK(waited >= ms(80));
    CHECK(waited < shutdown_bound); // well before the application's own minute is up
    CHECK(r.elapsed < shutdown_bound);
    CHECK(r.connections_after_serve == 0);
    CHECK(r.logged("timeout graceful shutdown exceeded"));
}

TEST_CASE("server: a second shutdown() while draining acts as stop()", "[server][shutdown][twice]")
{
    bool app_cancelled = false;
    ct::flag app_started;
    auto app = [&](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        app_started.set();
        net::steady_timer t(co_await net::this_coro::executor, long_task);
        auto [ec] = co_await t.async_wait(ct::use_tuple);
        if (ec == net::error::operation_aborted)
            app_cancelled = true;
        co_await respond(send, 200, "too late");
    };
    ct::read_result rest;
    auto r = ct::run_server(
        app, long_timeouts_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            auto s = co_await ct::connect(port);
            co_await ct::write(s, ct::get("/"));
            if (!co_await app_started.wait(shutdown_bound))
                throw std::runtime_error("the application was not called");
            srv.shutdown();
            co_await ct::wait_for(ms(50));
            srv.shutdown();
            rest = co_await ct::read_to_eof(s, shutdown_bound);
        },
        shutdown_run);
    CSERVE_REQUIRE_RUN(r);
    CHECK(app_cancelled);
    CHECK_FALSE(rest.timed_out);
    CHECK(rest.data.empty());
    CHECK(r.elapsed < shutdown_bound);
}

TEST_CASE("server: stop() closes every connection and cancels the applications", "[server][stop]")
{
    cserve::server* srvp = nullptr;
    bool app_cancelled = false;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        if (scope.path == "/slow") {
            srvp->stop();
            net::steady_timer t(co_await net::this_coro::executor, long_task);
            auto [ec] = co_await t.async_wait(ct::use_tuple);
            if (ec == net::error::operation_aborted)
                app_cancelled = true;
        }
        co_await respond(send, 200, std::string(scope.path));
    };
    ct::response_result idle_first;
    ct::read_result idle_rest, busy_rest;
    auto r = ct::run_server(
        app, long_timeouts_config(),
        [&](cserve::server& srv, unsigned short port) -> task<> {
            srvp = &srv;
            auto idle = co_await ct::connect(port);
            beast::flat_buffer buf;
            co_await ct::write(idle, ct::get("/idle"));
            idle_first = co_await ct::read_response(idle, buf);
            auto busy = co_await ct::connect(port);
            co_await ct::write(busy, ct::get("/slow"));
            busy_rest = co_await ct::read_to_eof(busy, shutdown_bound);
            idle_rest = co_await ct::read_to_eof(idle, buf, shutdown_bound);
        },
        shutdown_run);
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(idle_first.ok());
    CHECK(app_cancelled);
    CHECK_FALSE(busy_rest.timed_out);
    CHECK(busy_rest.data.empty());
    CHECK_FALSE(idle_rest.timed_out);
    CHECK(idle_rest.data.empty());
    CHECK(r.connections_after_serve == 0);
    CHECK(r.elapsed < shutdown_bound);
}

TEST_CASE("server: terminal cancellation of serve() acts as stop()", "[server][stop][cancellation]")
{
    net::io_context ioc(1);
    ct::log_capture logs;
    auto cfg = ct::test_config();
    cfg.log_sink = logs.sink();
    cserve::server srv(ioc, ok_app, cfg);
    srv.listen();
    auto port = srv.port();

    net::cancellation_signal cancel;
    bool serve_done = false;
    std::string serve_error;
    net::co_spawn(ioc, srv.serve(), net::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                      serve_done = true;
                      serve_error = ct::what(e);
                  }));
    ct::response_result res;
    std::string client_error;
    auto client = [&]() -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/"));
        res = co_await ct::read_response(s, buf);
        cancel.emit(net::cancellation_type::terminal);
    };
    net::co_spawn(ioc, client(), [&](std::exception_ptr e) { client_error = ct::what(e); });
    net::steady_timer deadline(ioc, std::chrono::seconds(5));
    bool timed_out = false;
    deadline.async_wait([&](boost::system::error_code ec) {
        if (!ec) {
            timed_out = true;
            srv.stop();
        }
    });
    // Run until serve() is done, then drop the deadline.
    while (!serve_done && !timed_out && ioc.run_one() > 0) {
    }
    deadline.cancel();
    ioc.run_for(std::chrono::seconds(2));

    CHECK(client_error.empty());
    REQUIRE(res.ok());
    CHECK(res.msg.body() == "ok");
    CHECK_FALSE(timed_out);
    CHECK(serve_done);
    CHECK(serve_error.empty());
    CHECK(srv.connection_count() == 0);
}

//------------------------------------------------------------------------------
// Threads and the accept loop

TEST_CASE("server: an io_context run on two threads serves concurrent connections correctly",
          "[server][threads]")
{
    constexpr int clients = 5;
    constexpr int requests = 10;
    net::io_context ioc; // default concurrency hint: the server uses strands
    ct::log_capture logs;
    auto cfg = ct::test_config();
    cfg.log_sink = logs.sink();
    std::atomic<int> app_calls{0};
    auto app = [&](cserve::scope& scope, cserve::receive receive, cserve::send send) -> task<> {
        ++app_calls;
        (void)co_await receive();
        co_await respond(send, 200, std::string(scope.path));
    };
    cserve::server srv(ioc, app, cfg);
    srv.listen();
    auto port = srv.port();

    std::array<std::vector<std::string>, clients> bodies;
    std::array<std::string, clients> errors;
    std::atomic<int> remaining{clients};
    auto client = [&](int i) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        for (int j = 0; j < requests; ++j) {
            co_await ct::write(s, ct::get("/c" + std::to_string(i) + "/r" + std::to_string(j)));
            auto res = co_await ct::read_response(s, buf);
            bodies[i].push_back(res.ok() ? res.msg.body() : "error: " + res.ec.message());
        }
    };

    std::atomic<bool> serve_done{false};
    std::string serve_error;
    auto control = net::make_strand(ioc);
    net::steady_timer deadline(control, std::chrono::seconds(5));
    net::steady_timer hard(control);
    std::atomic<bool> timed_out{false};
    std::atomic<bool> hard_stopped{false};
    net::co_spawn(ioc, srv.serve(), [&](std::exception_ptr e) {
        serve_error = ct::what(e);
        serve_done = true;
        net::post(control, [&] {
            deadline.cancel();
            hard.cancel();
        });
    });
    for (int i = 0; i < clients; ++i)
        net::co_spawn(net::make_strand(ioc), client(i), [&, i](std::exception_ptr e) {
            errors[i] = ct::what(e);
            if (--remaining == 0)
                srv.shutdown();
        });
    deadline.async_wait([&](boost::system::error_code ec) {
        if (ec)
            return;
        timed_out = true;
        srv.stop();
        hard.expires_after(std::chrono::seconds(1));
        hard.async_wait([&](boost::system::error_code e2) {
            if (!e2) {
                hard_stopped = true;
                ioc.stop();
            }
        });
    });

    std::thread t1([&] { ioc.run(); });
    std::thread t2([&] { ioc.run(); });
    t1.join();
    t2.join();
    REQUIRE_FALSE(hard_stopped); // otherwise what follows would touch abandoned coroutines

    INFO(ct::log_text(logs.lines()));
    CHECK_FALSE(timed_out);
    CHECK(serve_done);
    CHECK(serve_error.empty());
    CHECK(srv.connection_count() == 0);
    CHECK(app_calls == clients * requests);
    for (int i = 0; i < clients; ++i) {
        INFO("client " << i);
        CHECK(errors[i].empty());
        REQUIRE(bodies[i].size() == requests);
        for (int j = 0; j < requests; ++j)
            CHECK(bodies[i][j] == "/c" + std::to_string(i) + "/r" + std::to_string(j));
    }
}

TEST_CASE("server: on two threads, idle keep-alive connections still time out",
          "[server][threads][keep-alive][timeout]")
{
    // With several threads the server's deadline timer runs on its own strand and hands an
    // expired deadline to the connection's strand.
    constexpr int clients = 3;
    net::io_context ioc; // default concurrency hint: the server uses strands
    auto cfg = ct::test_config();
    cfg.timeout_keep_alive = ct::ms(100);
    auto app = [](cserve::scope&, cserve::receive, cserve::send send) -> task<> {
        co_await respond(send, 200, "ok");
    };
    cserve::server srv(ioc, app, cfg);
    srv.listen();
    auto port = srv.port();

    std::array<bool, clients> answered{};
    std::array<ct::read_result, clients> rest;
    std::array<std::string, clients> errors;
    std::atomic<int> remaining{clients};
    auto client = [&](int i) -> task<> {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/"));
        auto res = co_await ct::read_response(s, buf);
        answered[i] = res.ok() && res.status() == 200;
        rest[i] = co_await ct::read_to_eof(s, buf, ct::ms(3000));
    };
    std::string serve_error;
    std::atomic<bool> serve_done{false};
    net::co_spawn(ioc, srv.serve(), [&](std::exception_ptr e) {
        serve_error = ct::what(e);
        serve_done = true;
    });
    for (int i = 0; i < clients; ++i)
        net::co_spawn(net::make_strand(ioc), client(i), [&, i](std::exception_ptr e) {
            errors[i] = ct::what(e);
            if (--remaining == 0)
                srv.shutdown();
        });
    std::thread t1([&] { ioc.run(); });
    std::thread t2([&] { ioc.run(); });
    t1.join();
    t2.join();

    CHECK(serve_done);
    CHECK(serve_error.empty());
    CHECK(srv.connection_count() == 0);
    for (int i = 0; i < clients; ++i) {
        INFO("client " << i);
        CHECK(errors[i].empty());
        CHECK(answered[i]);
        CHECK(rest[i].eof); // closed by the server
        CHECK_FALSE(rest[i].timed_out);
    }
}

TEST_CASE("server: connections reset right after connecting do not stop the accept loop",
          "[server][accept]")
{
    ct::response_result res;
    auto r = ct::run_server(path_app, ct::test_config(), [&](unsigned short port) -> task<> {
        for (int i = 0; i < 5; ++i) {
            auto s = co_await ct::connect(port);
            s.set_option(net::socket_base::linger(true, 0));
            s.close(); // RST
        }
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/after-resets"));
        res = co_await ct::read_response(s, buf);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(res.ok());
    CHECK(res.status() == 200);
    CHECK(res.msg.body() == "/after-resets");
    CHECK_FALSE(r.logged("accept loop failed"));
}

TEST_CASE("server: many connections at once are all served and counted", "[server][accept][count]")
{
    constexpr int n = 20;
    std::size_t max_count = 0;
    cserve::server* srvp = nullptr;
    auto app = [&](cserve::scope& scope, cserve::receive, cserve::send send) -> task<> {
        max_count = std::max(max_count, srvp->connection_count());
        co_await respond(send, 200, std::string(scope.path));
    };
    std::vector<ct::response_result> res(n);
    auto r = ct::run_server(app, ct::test_config(), [&](cserve::server& srv, unsigned short port) -> task<> {
        srvp = &srv;
        std::vector<ct::tcp::socket> sockets;
        for (int i = 0; i < n; ++i) {
            sockets.push_back(co_await ct::connect(port));
            co_await ct::write(sockets.back(), ct::get("/" + std::to_string(i)));
        }
        for (int i = 0; i < n; ++i) {
            beast::flat_buffer buf;
            res[i] = co_await ct::read_response(sockets[i], buf);
        }
    });
    CSERVE_REQUIRE_RUN(r);
    for (int i = 0; i < n; ++i) {
        REQUIRE(res[i].ok());
        CHECK(res[i].msg.body() == "/" + std::to_string(i));
    }
    CHECK(max_count >= 2);
    CHECK(max_count <= static_cast<std::size_t>(n));
    CHECK(r.connections_after_serve == 0);
}
