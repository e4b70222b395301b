// tests/unit/proxy_protocol_test.cpp -- the PROXY protocol header: what is taken, what parses
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/proxy_protocol.hpp>

#include "catch.hpp"

#include <string>
#include <string_view>

namespace pp = cserve::detail::proxy_protocol;
using namespace std::string_literals;

namespace {

// Takes `bytes` as a connection does, `step` bytes per read: the header, and what is left.
std::pair<std::string, std::string>
take(std::string_view bytes, std::size_t step)
{
    std::string head;
    while (!bytes.empty()) {
        auto offered = bytes.substr(0, step);
        auto n = pp::header_bytes(head, offered);
        if (!n)
            return {head, "refused"};
        head.append(offered.substr(0, *n));
        bytes.remove_prefix(*n);
        pp::header h;
        if (pp::parse(head, h) != pp::status::incomplete)
            break;
    }
    return {head, std::string(bytes)};
}

std::string const v2_sig("\r\n\r\n\0\r\nQUIT\n", 12);

} // namespace

TEST_CASE("proxy_protocol: v1 is taken up to its CRLF, whatever the reads", "[proxy_protocol]")
{
    std::string const line = "PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n";
    for (std::size_t step : {1u, 5u, 46u, 200u}) {
        auto [head, rest] = take(line + "GET / HTTP/1.1\r\n", step);
        CHECK(head == line);
        CHECK(rest == "GET / HTTP/1.1\r\n");
    }
    pp::header h;
    REQUIRE(pp::parse(line, h) == pp::status::done);
    CHECK_FALSE(h.local);
    CHECK(h.size == line.size());
    CHECK(*h.source == cserve::address{"203.0.113.7", 56324});
    CHECK(*h.destination == cserve::address{"192.0.2.10", 443});

    REQUIRE(pp::parse("PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n", h) == pp::status::done);
    CHECK(*h.source == cserve::address{"2001:db8::7", 1});
    REQUIRE(pp::parse("PROXY UNKNOWN\r\n", h) == pp::status::done);
    CHECK(h.local);
}

TEST_CASE("proxy_protocol: malformed v1 lines", "[proxy_protocol]")
{
    pp::header h;
    for (std::string line : {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                             "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                             "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                             "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                             "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"})
        CHECK(pp::parse(line, h) == pp::status::invalid);
    // Longer than 107 bytes, with or without its end: refused as it arrives.
    CHECK(take("PROXY TCP4 " + std::string(120, '1') + "\r\n", 16).second == "refused");
    CHECK(take("PROXY TCP4 " + std::string(120, '1'), 200).second == "refused");
    // Not a PROXY header at all.
    CHECK(take("GET / HTTP/1.1\r\n", 100).second == "refused");
    CHECK(take("PROXZ", 100).second == "refused");
    CHECK(pp::parse("PROX", h) == pp::status::incomplete);
}

TEST_CASE("proxy_protocol: v2 addresses, TLVs skipped, LOCAL", "[proxy_protocol]")
{
    // PROXY over TCP/IPv4 with one TLV (PP2_TYPE_AUTHORITY), then a request.
    std::string body = "\xcb\x00\x71\x07"s + "\xc0\x00\x02\x0a"s + "\x9c\x40\x00\x50"s + "\x02\x00\x03" "abc"s;
    std::string header = v2_sig + "\x21\x11"s + std::string{0, static_cast<char>(body.size())} + body;
    for (std::size_t step : {1u, 7u, 16u, 100u}) {
        auto [head, rest] = take(header + "GET", step);
        CHECK(head == header);
        CHECK(rest == "GET");
    }
    pp::header h;
    REQUIRE(pp::parse(header, h) == pp::status::done);
    CHECK(*h.source == cserve::address{"203.0.113.7", 40000});
    CHECK(*h.destination == cserve::address{"192.0.2.10", 80});

    std::string v6(36, '\0');
    v6[15] = 1;  // ::1
    v6[31] = 2;  // ::2
    v6[32] = 0x01;
    v6[33] = 0xbb; // 443
    REQUIRE(pp::parse(v2_sig + "\x21\x21\x00\x24"s + v6, h) == pp::status::done);
    CHECK(*h.source == cserve::address{"::1", 443});
    CHECK(*h.destination == cserve::address{"::2", 0});

    REQUIRE(pp::parse(v2_sig + "\x20\x00\x00\x00"s, h) == pp::status::done); // LOCAL
    CHECK(h.local);
    CHECK_FALSE(h.source);
}

TEST_CASE("proxy_protocol: malformed v2 headers", "[proxy_protocol]")
{
    pp::header h;
    std::string const addrs(12, '\x01');
    CHECK(pp::parse(v2_sig + "\x11\x11\x00\x0c"s + addrs, h) == pp::status::invalid); // version 1
    CHECK(pp::parse(v2_sig + "\x22\x11\x00\x0c"s + addrs, h) == pp::status::invalid); // command 2
    CHECK(pp::parse(v2_sig + "\x21\x12\x00\x0c"s + addrs, h) == pp::status::invalid); // UDP
    CHECK(pp::parse(v2_sig + "\x21\x31\x00\x0c"s + addrs, h) == pp::status::invalid); // Unix
    CHECK(pp::parse(v2_sig + "\x21\x11\x00\x04"s + addrs.substr(0, 4), h) == pp::status::invalid);
    CHECK(pp::parse(v2_sig + "\x21\x21\x00\x0c"s + addrs, h) == pp::status::invalid); // short IPv6
    CHECK(take(v2_sig + "\x21\x11\x20\x00"s + addrs, 100).second == "refused");       // 8 KiB
    CHECK(pp::parse(v2_sig.substr(0, 5), h) == pp::status::incomplete);
}
