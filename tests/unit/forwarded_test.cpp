// tests/unit/forwarded_test.cpp -- the RFC 7239 Forwarded header, from trusted proxies only
// SPDX-License-Identifier: BSL-1.0
#include <cserve/proxy_headers.hpp>

#include "catch.hpp"
#include "test_server.hpp"

#include <optional>
#include <string>
#include <vector>

namespace {

namespace ct = cserve_test;
namespace http = cserve::http;
using cserve::task;

// A scope as the server builds it for a request from `peer` with these headers.
cserve::scope
request_from(std::string peer, std::vector<cserve::header_view> headers, bool websocket = false)
{
    cserve::scope s;
    s.type = websocket ? cserve::scope_type::websocket : cserve::scope_type::http;
    s.scheme = websocket ? "ws" : "http";
    s.client = cserve::address{std::move(peer), 50000};
    s.headers = std::move(headers);
    return s;
}

cserve::trusted_hosts const proxies("127.0.0.1,10.0.0.0/8,fd00::/8");

} // namespace

TEST_CASE("forwarded: parse_forwarded reads elements, pairs, tokens and quoted values", "[proxy_headers][forwarded]")
{
    using cserve::detail::parse_forwarded;
    auto e = parse_forwarded(R"(for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711" ;HOST=example.com)");
    REQUIRE(e);
    REQUIRE(e->size() == 2);
    CHECK((*e)[0].for_ == "192.0.2.60");
    CHECK((*e)[0].proto == "http");
    CHECK((*e)[0].host.empty());
    CHECK((*e)[1].for_ == "[2001:db8:cafe::17]:4711");
    CHECK((*e)[1].host == "example.com");
    // Empty elements and pairs are allowed (#rule, *( ";" [ pair ] )).
    auto sparse = parse_forwarded("for=a;;proto=https,,for=b");
    REQUIRE(sparse);
    CHECK(sparse->size() == 2);

    // What does not parse is refused as a whole.
    for (char const* bad : {"", "for", "for=", "for=\"unclosed", "=x", "for=a b", "for=a;for=b", "for=a;proto=\"x\"y",
                            "for=a\r\nx: y", "for=\x01",
                            "for=192.0.2.1:80" /* a port needs quotes: ':' is not a token character */})
        CHECK_FALSE(parse_forwarded(bad));
    // A quoted-pair: the value is there, but not taken.
    auto escaped = parse_forwarded(R"(for="\"x";proto=https)");
    REQUIRE(escaped);
    CHECK((*escaped)[0].for_ == " ");
}

TEST_CASE("forwarded: forwarded_node takes IPv4, bracketed IPv6 and numeric ports only", "[proxy_headers][forwarded]")
{
    using cserve::detail::forwarded_node;
    CHECK(forwarded_node("192.0.2.43") == cserve::address{"192.0.2.43", 0});
    CHECK(forwarded_node("192.0.2.43:47011") == cserve::address{"192.0.2.43", 47011});
    CHECK(forwarded_node("[2001:db8:cafe::17]") == cserve::address{"2001:db8:cafe::17", 0});
    CHECK(forwarded_node("[2001:db8:cafe::17]:4711") == cserve::address{"2001:db8:cafe::17", 4711});
    for (char const* no : {"unknown", "_hidden", "192.0.2.43:_port", "2001:db8::1", "[192.0.2.1]", "[::1", "[::1]x",
                           "192.0.2.43:70000", "example.com", ""})
        CHECK_FALSE(forwarded_node(no));
}

TEST_CASE("forwarded: a trusted proxy's Forwarded sets client, scheme and host", "[proxy_headers][forwarded]")
{
    auto s = request_from("127.0.0.1", {{"host", "internal:8000"},
                                        {"forwarded", "for=\"[2001:db8::7]:4711\";proto=https;host=example.com"}});
    CHECK(cserve::detail::apply_proxy_headers(s, proxies));
    CHECK(s.client == cserve::address{"2001:db8::7", 4711});
    CHECK(s.scheme == "https");
    CHECK(s.header("host") == "example.com");

    auto ws = request_from("10.1.2.3", {{"forwarded", "for=198.51.100.9;proto=https"}}, true);
    CHECK(cserve::detail::apply_proxy_headers(ws, proxies));
    CHECK(ws.scheme == "wss");
    CHECK(ws.client == cserve::address{"198.51.100.9", 0});
}

TEST_CASE("forwarded: the client is the rightmost element not from a trusted proxy", "[proxy_headers][forwarded]")
{
    // The client, then two of our proxies. Each element describes the connection its proxy
    // took: the client's proto is in the client's element.
    auto s = request_from("127.0.0.1",
                          {{"forwarded", "for=203.0.113.7;proto=https, for=10.0.0.2;proto=http, for=10.0.0.3;proto=http"}});
    CHECK(cserve::detail::apply_proxy_headers(s, proxies));
    CHECK(s.client == cserve::address{"203.0.113.7", 0});
    CHECK(s.scheme == "https");

    // A client claiming an address in front of it changes nothing: the rightmost untrusted wins.
    auto spoofed = request_from("127.0.0.1", {{"forwarded", "for=1.2.3.4, for=203.0.113.7;proto=https"}});
    cserve::detail::apply_proxy_headers(spoofed, proxies);
    CHECK(spoofed.client == cserve::address{"203.0.113.7", 0});

    // "unknown" is where the chain stops too: the client is not known, the peer stays.
    auto unknown = request_from("127.0.0.1", {{"forwarded", "for=1.2.3.4, for=unknown;proto=https"}});
    cserve::detail::apply_proxy_headers(unknown, proxies);
    CHECK(unknown.client == cserve::address{"127.0.0.1", 50000});
    CHECK(unknown.scheme == "https");

    // Every element trusted: the leftmost.
    auto all = request_from("127.0.0.1", {{"forwarded", "for=10.9.9.9, for=10.0.0.2"}});
    cserve::detail::apply_proxy_headers(all, proxies);
    CHECK(all.client == cserve::address{"10.9.9.9", 0});
}

TEST_CASE("forwarded: ignored from an untrusted peer, and when it does not parse", "[proxy_headers][forwarded]")
{
    auto untrusted = request_from("192.0.2.1", {{"forwarded", "for=1.2.3.4;proto=https"}, {"host", "h"}});
    CHECK_FALSE(cserve::detail::apply_proxy_headers(untrusted, proxies));
    CHECK(untrusted.client == cserve::address{"192.0.2.1", 50000});
    CHECK(untrusted.scheme == "http");

    // A malformed Forwarded is ignored as a whole; X-Forwarded-* still count.
    auto malformed = request_from("127.0.0.1", {{"forwarded", "for=1.2.3.4;proto"},
                                                {"x-forwarded-for", "198.51.100.1"},
                                                {"x-forwarded-proto", "https"}});
    CHECK(cserve::detail::apply_proxy_headers(malformed, proxies));
    CHECK(malformed.client == cserve::address{"198.51.100.1", 0});
    CHECK(malformed.scheme == "https");

    // A Forwarded that parses wins over X-Forwarded-*.
    auto both = request_from("127.0.0.1", {{"forwarded", "for=203.0.113.7"}, {"x-forwarded-for", "198.51.100.1"}});
    cserve::detail::apply_proxy_headers(both, proxies);
    CHECK(both.client == cserve::address{"203.0.113.7", 0});
}

TEST_CASE("forwarded: through the server, for that request only", "[proxy_headers][forwarded][server]")
{
    struct seen {
        std::string scheme, host;
        std::optional<cserve::address> client;
    };
    std::vector<seen> log;
    auto app = [&](cserve::scope& s, cserve::receive, cserve::send send) -> task<> {
        log.push_back({std::string(s.scheme), std::string(s.header("host").value_or("")), s.client});
        co_await send(http::response_start{.status = 200, .headers = {{"content-length", "2"}}});
        co_await send(http::response_body{.body = "ok"});
    };
    auto cfg = ct::test_config(); // forwarded_allow_ips: 127.0.0.1, the test client
    std::vector<int> statuses;
    auto r = ct::run_server(app, cfg, [&](unsigned short port) -> task<> {
        auto s = co_await ct::connect(port);
        boost::beast::flat_buffer buf;
        co_await ct::write(s, ct::get("/", "Forwarded: for=\"203.0.113.7:1234\";proto=https;host=example.com\r\n"));
        statuses.push_back((co_await ct::read_response(s, buf)).status());
        co_await ct::write(s, ct::get("/"));
        statuses.push_back((co_await ct::read_response(s, buf)).status());
    });
    CSERVE_REQUIRE_RUN(r);
    CHECK(statuses == std::vector<int>{200, 200});
    REQUIRE(log.size() == 2);
    CHECK(log[0].scheme == "https");
    CHECK(log[0].host == "example.com");
    CHECK(log[0].client == cserve::address{"203.0.113.7", 1234});
    CHECK(log[1].scheme == "http");
    CHECK(log[1].host == "test");
    REQUIRE(log[1].client);
    CHECK(log[1].client->host == "127.0.0.1");
}
