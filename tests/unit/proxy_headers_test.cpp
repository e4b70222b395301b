// tests/unit/proxy_headers_test.cpp -- trusted_hosts, the proxy_headers middleware, and the
// server's limit_concurrency and limit_max_requests
// SPDX-License-Identifier: BSL-1.0
#include <cserve/proxy_headers.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
namespace net = boost::asio;
namespace beast = boost::beast;
using cserve::task;

// The message of the std::invalid_argument that trusted_hosts(list) throws ("" when none).
std::string
invalid_argument_of(std::string_view list)
{
    try {
        cserve::trusted_hosts t(list);
    } catch (std::invalid_argument const& e) {
        return e.what();
    }
    return {};
}

task<>
respond(cserve::send send, int status, std::string body)
{
    co_await send(http::response_start{
        .status = status,
        .headers = {{"content-length", std::to_string(body.size())}},
    });
    co_await send(http::response_body{.body = std::move(body)});
}

// What an application saw of one request's scope, copied out of it.
struct seen {
    std::string scheme;
    std::optional<cserve::address> client;
};

// An application that records what each request's scope says and answers 200 "ok".
struct recording_app {
    std::vector<seen>& log;

    task<>
    operator()(cserve::scope& scope, cserve::receive, cserve::send send) const
    {
        log.push_back({std::string(scope.scheme), scope.client});
        co_await respond(send, 200, "ok");
    }
};

// The config of these tests: test_config() without the lifespan protocol, so that the
// application sees HTTP scopes only.
cserve::config
http_config()
{
    auto cfg = ct::test_config();
    cfg.lifespan = cserve::lifespan_mode::off;
    return cfg;
}

constexpr char const* forwarded_headers = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n";

// Sends a request with forwarded headers and then one without on one keep-alive
// connection; records both responses.
struct two_requests {
    ct::response_result first, second;

    task<>
    operator()(unsigned short port)
    {
        auto s = co_await ct::connect(port);
        beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/forwarded", forwarded_headers));
        first = co_await ct::read_response(s, buf);
        co_await ct::write(s, ct::get("/plain"));
        second = co_await ct::read_response(s, buf);
    }
};

// A channel whose receive and send are never expected to be called.
class null_channel final : public cserve::detail::channel {
public:
    task<cserve::event>
    receive() override
    {
        throw std::logic_error("receive called");
    }

    task<>
    send(cserve::event) override
    {
        throw std::logic_error("send called");
    }
};

} // namespace

//------------------------------------------------------------------------------
// trusted_hosts

TEST_CASE("proxy_headers: trusted_hosts parses addresses, networks and '*'", "[proxy_headers][trusted_hosts][parse]")
{
    SECTION("single addresses, v4 and v6")
    {
        cserve::trusted_hosts t("127.0.0.1,::1");
        CHECK(t.contains("127.0.0.1"));
        CHECK(t.contains("::1"));
        CHECK_FALSE(t.contains("127.0.0.2"));
        CHECK_FALSE(t.contains("::2"));
    }
    SECTION("v4 CIDR networks")
    {
        cserve::trusted_hosts t("10.0.0.0/8, 192.168.1.0/24");
        CHECK(t.contains("10.0.0.0"));
        CHECK(t.contains("10.1.2.3"));
        CHECK(t.contains("10.255.255.255"));
        CHECK_FALSE(t.contains("11.0.0.1"));
        CHECK_FALSE(t.contains("9.255.255.255"));
        CHECK(t.contains("192.168.1.77"));
        CHECK_FALSE(t.contains("192.168.2.1"));
    }
    SECTION("a network written with host bits set is its canonical network")
    {
        cserve::trusted_hosts t("10.1.2.3/16");
        CHECK(t.contains("10.1.200.1"));
        CHECK_FALSE(t.contains("10.2.0.1"));
    }
    SECTION("/32 and /0")
    {
        CHECK(cserve::trusted_hosts("10.0.0.7/32").contains("10.0.0.7"));
        CHECK_FALSE(cserve::trusted_hosts("10.0.0.7/32").contains("10.0.0.8"));
        CHECK(cserve::trusted_hosts("0.0.0.0/0").contains("203.0.113.7"));
        CHECK_FALSE(cserve::trusted_hosts("0.0.0.0/0").contains("::1"));
    }
    SECTION("v6 CIDR networks")
    {
        cserve::trusted_hosts t("fd00::/8,2001:db8:1::/48");
        CHECK(t.contains("fd12:3456::1"));
        CHECK(t.contains("fdff::"));
        CHECK_FALSE(t.contains("fe80::1"));
        CHECK(t.contains("2001:db8:1:ffff::1"));
        CHECK_FALSE(t.contains("2001:db8:2::1"));
        CHECK_FALSE(t.contains("10.0.0.1"));
    }
    SECTION("'*' trusts every peer, even one that is not an address")
    {
        cserve::trusted_hosts t("*");
        CHECK(t.contains("203.0.113.7"));
        CHECK(t.contains("2001:db8::1"));
        CHECK(t.contains("not-an-address"));
        CHECK(t.contains(""));
        CHECK(cserve::trusted_hosts("10.0.0.1, *").contains("198.51.100.1"));
    }
    SECTION("spaces, tabs and empty items around entries are ignored")
    {
        cserve::trusted_hosts t("  127.0.0.1 ,\t10.0.0.0/8\t, ,, ::1  ");
        CHECK(t.contains("127.0.0.1"));
        CHECK(t.contains("10.9.8.7"));
        CHECK(t.contains("::1"));
        CHECK_FALSE(t.contains("192.0.2.1"));
    }
    SECTION("an empty list trusts nobody")
    {
        cserve::trusted_hosts t("");
        CHECK_FALSE(t.contains("127.0.0.1"));
        CHECK_FALSE(t.contains("::1"));
    }
    SECTION("a host that is not an address is not contained")
    {
        cserve::trusted_hosts t("127.0.0.1,10.0.0.0/8");
        CHECK_FALSE(t.contains("localhost"));
        CHECK_FALSE(t.contains(""));
        CHECK_FALSE(t.contains("127.0.0.1:80"));
        CHECK_FALSE(t.contains(" 127.0.0.1"));
    }
}

TEST_CASE("proxy_headers: trusted_hosts throws invalid_argument naming a bad entry", "[proxy_headers][trusted_hosts][errors]")
{
    CHECK_THROWS_AS(cserve::trusted_hosts("bogus"), std::invalid_argument);
    CHECK(invalid_argument_of("bogus").find("bogus") != std::string::npos);
    CHECK(invalid_argument_of("127.0.0.1, nonsense ,10.0.0.0/8").find("nonsense") != std::string::npos);
    CHECK(invalid_argument_of("10.0.0.0/33").find("10.0.0.0/33") != std::string::npos);
    CHECK(invalid_argument_of("fd00::/129").find("fd00::/129") != std::string::npos);
    CHECK(invalid_argument_of("10.0.0.0/x").find("10.0.0.0/x") != std::string::npos);
    CHECK(invalid_argument_of("256.0.0.1").find("256.0.0.1") != std::string::npos);
    CHECK(invalid_argument_of("**").find("**") != std::string::npos);
    CHECK(invalid_argument_of("localhost").find("localhost") != std::string::npos);
    // Valid lists throw nothing.
    CHECK(invalid_argument_of("127.0.0.1, 10.0.0.0/8, fd00::/8, ::1, *").empty());
    CHECK(invalid_argument_of("").empty());
}

TEST_CASE("proxy_headers: trusted_hosts matches a v4-mapped v6 peer against v4 entries",
          "[proxy_headers][trusted_hosts][v4-mapped]")
{
    // What a dual-stack socket bound to "::" reports for an IPv4 peer.
    cserve::trusted_hosts t("127.0.0.1,10.0.0.0/8");
    CHECK(t.contains("::ffff:127.0.0.1"));
    CHECK(t.contains("::ffff:10.20.30.40"));
    CHECK_FALSE(t.contains("::ffff:127.0.0.2"));
    CHECK_FALSE(t.contains("::ffff:11.0.0.1"));
}

TEST_CASE("proxy_headers: trusted_hosts trusts a v4-mapped v6 address listed as such",
          "[proxy_headers][trusted_hosts][v4-mapped-entry]")
{
    // The list names the peer exactly as the socket reports it.
    CHECK(cserve::trusted_hosts("::ffff:10.0.0.1").contains("::ffff:10.0.0.1"));
    CHECK(cserve::trusted_hosts("::ffff:0:0/96").contains("::ffff:10.0.0.1"));
}

TEST_CASE("proxy_headers: client_from picks the rightmost hop that is not a trusted proxy",
          "[proxy_headers][trusted_hosts][client_from]")
{
    cserve::trusted_hosts t("127.0.0.1, 10.0.0.0/8");
    SECTION("one hop")
    {
        CHECK(t.client_from("203.0.113.7") == "203.0.113.7");
        CHECK(t.client_from("  203.0.113.7  ") == "203.0.113.7");
    }
    SECTION("trusted proxies on the right are skipped")
    {
        CHECK(t.client_from("203.0.113.7, 10.0.0.2, 127.0.0.1") == "203.0.113.7");
        CHECK(t.client_from("203.0.113.7,10.0.0.2") == "203.0.113.7");
    }
    SECTION("a spoofed hop left of the real client is not believed")
    {
        CHECK(t.client_from("198.51.100.66, 203.0.113.7, 10.0.0.2") == "203.0.113.7");
    }
    SECTION("an untrusted proxy stops the walk")
    {
        CHECK(t.client_from("203.0.113.7, 192.0.2.1, 10.0.0.2") == "192.0.2.1");
    }
    SECTION("all hops trusted: the leftmost")
    {
        CHECK(t.client_from("10.0.0.5, 10.0.0.6, 127.0.0.1") == "10.0.0.5");
        CHECK(t.client_from("127.0.0.1") == "127.0.0.1");
    }
    SECTION("v6 hops")
    {
        CHECK(t.client_from("2001:db8::7, 10.0.0.1") == "2001:db8::7");
    }
    SECTION("empty: no client")
    {
        CHECK(t.client_from("").empty());
        CHECK(t.client_from(" , ,").empty());
    }
    SECTION("with '*' every hop is trusted: the leftmost")
    {
        cserve::trusted_hosts all("*");
        CHECK(all.client_from("203.0.113.7, 198.51.100.1, 10.0.0.1") == "203.0.113.7");
    }
}

//------------------------------------------------------------------------------
// The middleware, called directly

TEST_CASE("proxy_headers: the middleware restores the scope when the application throws",
          "[proxy_headers][middleware][restore]")
{
    null_channel ch;
    cserve::scope s;
    s.type = cserve::scope_type::http;
    s.scheme = "http";
    s.client = cserve::address{"127.0.0.1", 40000};
    s.headers = {{"x-forwarded-for", "203.0.113.7"}, {"x-forwarded-proto", "https"}};

    std::string inner_scheme;
    std::optional<cserve::address> inner_client;
    auto inner = [&](cserve::scope& sc, cserve::receive, cserve::send) -> task<> {
        inner_scheme = sc.scheme;
        inner_client = sc.client;
        throw std::runtime_error("application failed");
        co_return;
    };
    auto wrapped = cserve::proxy_headers(inner, cserve::trusted_hosts("127.0.0.1"));

    net::io_context ioc(1);
    std::string error;
    bool done = false;
    net::co_spawn(ioc, wrapped(s, cserve::receive(ch), cserve::send(ch)), [&](std::exception_ptr e) {
        done = true;
        error = ct::what(e);
    });
    ioc.run();

    REQUIRE(done);
    CHECK(error == "application failed");
    CHECK(inner_scheme == "https");
    REQUIRE(inner_client);
    CHECK(*inner_client == cserve::address{"203.0.113.7", 0});
    CHECK(s.scheme == "http");
    REQUIRE(s.client);
    CHECK(*s.client == cserve::address{"127.0.0.1", 40000});
}

TEST_CASE("proxy_headers: the middleware maps X-Forwarded-Proto for WebSocket and ignores unknown schemes",
          "[proxy_headers][middleware][proto]")
{
    null_channel ch;
    auto call = [&](cserve::scope_type type, std::string_view scheme, std::string_view proto) {
        cserve::scope s;
        s.type = type;
        s.scheme = scheme;
        s.client = cserve::address{"127.0.0.1", 40000};
        s.headers = {{"x-forwarded-proto", proto}};
        std::string seen_scheme;
        auto inner = [&](cserve::scope& sc, cserve::receive, cserve::send) -> task<> {
            seen_scheme = sc.scheme;
            co_return;
        };
        auto wrapped = cserve::proxy_headers(inner, cserve::trusted_hosts("127.0.0.1"));
        net::io_context ioc(1);
        net::co_spawn(ioc, wrapped(s, cserve::receive(ch), cserve::send(ch)), [](std::exception_ptr) {});
        ioc.run();
        return seen_scheme;
    };
    CHECK(call(cserve::scope_type::websocket, "ws", "https") == "wss");
    CHECK(call(cserve::scope_type::websocket, "ws", "wss") == "wss");
    CHECK(call(cserve::scope_type::websocket, "wss", "http") == "ws");
    CHECK(call(cserve::scope_type::http, "http", "wss") == "https");
    CHECK(call(cserve::scope_type::http, "https", "http") == "http");
    CHECK(call(cserve::scope_type::http, "http", " https ") == "https");
    CHECK(call(cserve::scope_type::http, "http", "gopher") == "http");
    CHECK(call(cserve::scope_type::http, "http", "") == "http");
}

//------------------------------------------------------------------------------
// The middleware in a server

TEST_CASE("proxy_headers: forwarded headers from a trusted peer set client and scheme, for that request only",
          "[proxy_headers][server][trusted]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.proxy_headers = true;
    cfg.forwarded_allow_ips = "127.0.0.1";
    two_requests client;
    auto r = ct::run_server(recording_app{log}, cfg, [&](unsigned short port) { return client(port); });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(client.first.status() == 200);
    REQUIRE(client.second.status() == 200);
    REQUIRE(log.size() == 2);

    CHECK(log[0].scheme == "https");
    REQUIRE(log[0].client);
    CHECK(log[0].client->host == "203.0.113.7");
    CHECK(log[0].client->port == 0);

    // The next request on the same connection sees the socket's peer again.
    CHECK(log[1].scheme == "http");
    REQUIRE(log[1].client);
    CHECK(log[1].client->host == "127.0.0.1");
    CHECK(log[1].client->port != 0);
}

TEST_CASE("proxy_headers: forwarded headers from a peer not in forwarded_allow_ips change nothing",
          "[proxy_headers][server][untrusted]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.proxy_headers = true;
    cfg.forwarded_allow_ips = "10.0.0.1";
    two_requests client;
    auto r = ct::run_server(recording_app{log}, cfg, [&](unsigned short port) { return client(port); });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(client.first.status() == 200);
    REQUIRE(log.size() == 2);
    for (auto const& l : log) {
        CHECK(l.scheme == "http");
        REQUIRE(l.client);
        CHECK(l.client->host == "127.0.0.1");
        CHECK(l.client->port != 0);
    }
}

TEST_CASE("proxy_headers: with proxy_headers off forwarded headers change nothing", "[proxy_headers][server][off]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.proxy_headers = false;
    cfg.forwarded_allow_ips = "127.0.0.1";
    two_requests client;
    auto r = ct::run_server(recording_app{log}, cfg, [&](unsigned short port) { return client(port); });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(client.first.status() == 200);
    REQUIRE(log.size() == 2);
    for (auto const& l : log) {
        CHECK(l.scheme == "http");
        REQUIRE(l.client);
        CHECK(l.client->host == "127.0.0.1");
        CHECK(l.client->port != 0);
    }
}

TEST_CASE("proxy_headers: the server rejects a bad forwarded_allow_ips when proxy_headers is on",
          "[proxy_headers][server][errors]")
{
    net::io_context ioc(1);
    auto ok = [](cserve::scope&, cserve::receive, cserve::send) -> task<> { co_return; };
    auto cfg = ct::test_config();
    cfg.forwarded_allow_ips = "not-an-ip";
    cfg.proxy_headers = true;
    CHECK_THROWS_AS(cserve::server(ioc, ok, cfg), std::invalid_argument);
}

//------------------------------------------------------------------------------
// limit_concurrency and limit_max_requests

TEST_CASE("proxy_headers: past limit_concurrency open connections a request gets 503 and connection: close",
          "[proxy_headers][server][limit_concurrency]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.limit_concurrency = 1;
    ct::response_result first, over;
    ct::read_result over_rest;
    auto r = ct::run_server(recording_app{log}, cfg, [&](unsigned short port) -> task<> {
        // The first connection stays open and idle after its response.
        auto a = co_await ct::connect(port);
        beast::flat_buffer abuf;
        co_await ct::write(a, ct::get("/a"));
        first = co_await ct::read_response(a, abuf);

        auto b = co_await ct::connect(port);
        beast::flat_buffer bbuf;
        co_await ct::write(b, ct::get("/b"));
        over = co_await ct::read_response(b, bbuf);
        over_rest = co_await ct::read_to_eof(b, bbuf);
    });
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(first.ok());
    CHECK(first.status() == 200);
    CHECK(first.header("connection") != "close");

    REQUIRE(over.ok());
    CHECK(over.status() == 503);
    CHECK(over.msg.body() == "Service Unavailable");
    CHECK(over.header("connection") == "close");
    CHECK(over_rest.eof);
    CHECK(over_rest.data.empty());

    // The application ran for the first request only.
    CHECK(log.size() == 1);
}

TEST_CASE("proxy_headers: within limit_concurrency requests on several connections are served",
          "[proxy_headers][server][limit_concurrency][within]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.limit_concurrency = 2;
    ct::response_result first, second;
    auto r = ct::run_server(recording_app{log}, cfg, [&](unsigned short port) -> task<> {
        auto a = co_await ct::connect(port);
        beast::flat_buffer abuf;
        co_await ct::write(a, ct::get("/a"));
        first = co_await ct::read_response(a, abuf);
        auto b = co_await ct::connect(port);
        beast::flat_buffer bbuf;
        co_await ct::write(b, ct::get("/b"));
        second = co_await ct::read_response(b, bbuf);
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(first.status() == 200);
    CHECK(second.status() == 200);
    CHECK(log.size() == 2);
}

TEST_CASE("proxy_headers: after limit_max_requests requests the server shuts down by itself",
          "[proxy_headers][server][limit_max_requests]")
{
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.limit_max_requests = 2;
    ct::response_result first, second;
    ct::read_result rest;
    auto r = ct::run_server(
        recording_app{log}, cfg,
        [&](unsigned short port) -> task<> {
            auto s = co_await ct::connect(port);
            beast::flat_buffer buf;
            co_await ct::write(s, ct::get("/1"));
            first = co_await ct::read_response(s, buf);
            co_await ct::write(s, ct::get("/2"));
            second = co_await ct::read_response(s, buf);
            rest = co_await ct::read_to_eof(s, buf);
        },
        {.shutdown_after_client = false});
    CSERVE_REQUIRE_RUN(r);
    CHECK(first.status() == 200);
    CHECK(first.header("connection") != "close");
    // The request that reached the limit is still answered, then the connection closes.
    CHECK(second.status() == 200);
    CHECK(second.msg.body() == "ok");
    CHECK(rest.eof);
    CHECK(rest.data.empty());
    CHECK(log.size() == 2);
    CHECK(r.connections_after_serve == 0);
    CHECK(r.logged("Maximum request limit of 2 exceeded"));
    CHECK(r.logged("Shutting down"));
}

TEST_CASE("proxy_headers: the response to the request that reaches limit_max_requests says connection: close",
          "[proxy_headers][server][limit_max_requests][connection-close]")
{
    // The server knows that it closes the connection after this response (RFC 9112
    // section 9.6: it should then say so), as shutdown() promises for requests in flight.
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.limit_max_requests = 1;
    ct::response_result only;
    auto r = ct::run_server(
        recording_app{log}, cfg,
        [&](unsigned short port) -> task<> {
            auto s = co_await ct::connect(port);
            beast::flat_buffer buf;
            co_await ct::write(s, ct::get("/1"));
            only = co_await ct::read_response(s, buf);
        },
        {.shutdown_after_client = false});
    CSERVE_REQUIRE_RUN(r);
    REQUIRE(only.ok());
    CHECK(only.status() == 200);
    CHECK(only.header("connection") == "close");
}

TEST_CASE("proxy_headers: limit_max_requests_jitter adds at most the jitter to the limit",
          "[proxy_headers][server][limit_max_requests][jitter]")
{
    // With a limit of 1 and a jitter of 2 the server stops after 1 to 3 requests: the
    // client sends requests on fresh connections until one is refused or 4 were served.
    std::vector<seen> log;
    auto cfg = http_config();
    cfg.limit_max_requests = 1;
    cfg.limit_max_requests_jitter = 2;
    int served = 0;
    auto r = ct::run_server(
        recording_app{log}, cfg,
        [&](unsigned short port) -> task<> {
            for (int i = 0; i < 4; ++i) {
                auto ex = co_await net::this_coro::executor;
                ct::tcp::socket s(ex);
                auto [ec] = co_await s.async_connect(ct::tcp::endpoint(net::ip::make_address("127.0.0.1"), port),
                                                     ct::use_tuple);
                if (ec)
                    break;
                beast::flat_buffer buf;
                if (co_await ct::try_write(s, ct::get("/")))
                    break;
                auto resp = co_await ct::read_response(s, buf);
                if (!resp.ok())
                    break;
                ++served;
            }
        },
        {.shutdown_after_client = false});
    CSERVE_REQUIRE_RUN(r);
    CHECK(served >= 1);
    CHECK(static_cast<int>(log.size()) == served);
    // The limit drawn is 1 to 3. (How many requests are served in all also depends on when
    // the shutdown it starts closes the listener: with connections on strands of their
    // own, one accepted meanwhile is still served.)
    int limit = 0;
    for (int n = 1; n <= 3; ++n)
        if (r.logged("Maximum request limit of " + std::to_string(n) + " exceeded"))
            limit = n;
    CHECK(limit >= 1);
    CHECK(served >= limit);
}

TEST_CASE("proxy_headers: a peer without an address is trusted only by '*'", "[proxy_headers][uds]")
{
    // An unnamed Unix-socket peer (nginx's upstream connection to --uds) has no scope.client.
    auto scope_from_socket = [] {
        cserve::scope s;
        s.type = cserve::scope_type::http;
        s.scheme = "http";
        s.headers = {{"x-forwarded-for", "203.0.113.5, 127.0.0.1"}, {"x-forwarded-proto", "https"}};
        return s;
    };
    auto s = scope_from_socket();
    CHECK_FALSE(cserve::detail::apply_proxy_headers(s, cserve::trusted_hosts("127.0.0.1")));
    CHECK_FALSE(s.client);
    CHECK(s.scheme == "http");

    s = scope_from_socket();
    CHECK(cserve::detail::apply_proxy_headers(s, cserve::trusted_hosts("*")));
    REQUIRE(s.client);
    CHECK(s.client->host == "203.0.113.5");
    CHECK(s.scheme == "https");

    // A named Unix-socket peer (its path as the host) likewise.
    s = scope_from_socket();
    s.client = cserve::address{"/run/nginx.sock", 0};
    CHECK_FALSE(cserve::detail::apply_proxy_headers(s, cserve::trusted_hosts("127.0.0.1,10.0.0.0/8")));
    CHECK(cserve::detail::apply_proxy_headers(s, cserve::trusted_hosts("*")));
    CHECK(s.client->host == "203.0.113.5");
}
