// cserve/detail/proxy_protocol.hpp -- the PROXY protocol header (HAProxy's, v1 and v2)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_PROXY_PROTOCOL_HPP
#define CSERVE_DETAIL_PROXY_PROTOCOL_HPP

#include <cserve/detail/config.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

// A TCP load balancer (HAProxy's send-proxy and send-proxy-v2, nginx's proxy_protocol, cloud
// network load balancers) tells the server who the client is with a header in front of the
// connection's first bytes, before TLS and HTTP:
//
//   v1: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n" (text, at most 107 bytes)
//   v2: a 12-byte signature, a version and command byte, a family byte, a 16-bit length, the
//       addresses, then TLVs (binary, at most 16 + 65535 bytes; cserve takes 16 + 4096)
//
// The spec is haproxy's doc/proxy-protocol.txt. The header is read byte for byte off the
// socket (header_bytes() says how many of the bytes that arrived belong to it), so that what
// follows, a TLS ClientHello or a request, is left for the connection.
namespace cserve::detail::proxy_protocol {

inline constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};
inline constexpr std::string_view v1_prefix = "PROXY ";
inline constexpr std::size_t v1_max = 107;
inline constexpr std::size_t v2_max = 16 + 4096;

enum class status : unsigned char {
    incomplete, // a prefix of a valid header: read on
    done,       // a whole header
    invalid,    // not a PROXY header, or a malformed one: the connection is closed
};

struct header {
    std::size_t size = 0;          // its length in bytes
    bool local = false;            // LOCAL or UNKNOWN: the connection is the balancer's own
    std::optional<address> source; // the client, as the balancer saw it
    std::optional<address> destination;
};

// How many of `more`, the bytes that arrived after `have` (the header so far), belong to the
// header; nullopt when `have + more` cannot begin a header.
inline std::optional<std::size_t>
header_bytes(std::string_view have, std::string_view more) noexcept
{
    auto const n = have.size();
    auto prefix_of = [&](std::string_view sig) {
        auto k = std::min(sig.size(), n + more.size());
        for (std::size_t i = 0; i < k; ++i)
            if ((i < n ? have[i] : more[i - n]) != sig[i])
                return false;
        return true;
    };
    if (prefix_of(v2_signature)) {
        if (n + more.size() < 16)
            return more.size();
        auto byte = [&](std::size_t i) { return static_cast<unsigned char>(i < n ? have[i] : more[i - n]); };
        std::size_t const total = 16 + (std::size_t(byte(14)) << 8 | byte(15));
        if (total > v2_max)
            return std::nullopt;
        return std::min(more.size(), total - n);
    }
    if (prefix_of(v1_prefix)) {
        for (std::size_t i = 0; i < more.size(); ++i)
            if (more[i] == '\n')
                return n + i + 1 <= v1_max ? std::optional<std::size_t>(i + 1) : std::nullopt;
        if (n + more.size() >= v1_max)
            return std::nullopt;
        return more.size();
    }
    return std::nullopt;
}

namespace parse_detail {

inline bool
port(std::string_view s, std::uint16_t& out) noexcept
{
    unsigned v = 0;
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0'))
        return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v > 65535)
        return false;
    out = static_cast<std::uint16_t>(v);
    return true;
}

inline bool
ip(std::string_view s, bool v6, std::string& out)
{
    boost::system::error_code ec;
    std::string text(s);
    if (v6) {
        auto a = boost::asio::ip::make_address_v6(text, ec);
        if (ec || a.scope_id() != 0)
            return false;
        out = a.to_string();
    } else {
        auto a = boost::asio::ip::make_address_v4(text, ec);
        if (ec)
            return false;
        out = a.to_string();
        if (out != text)
            return false; // "1.2.3.04" and the like: the spec's form only
    }
    return true;
}

inline status
parse_v1(std::string_view line, header& h)
{
    // "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF, or "PROXY UNKNOWN" ... CRLF
    if (line.size() < 2 || line.substr(line.size() - 2) != "\r\n")
        return status::invalid;
    line.remove_suffix(2);
    line.remove_prefix(v1_prefix.size());
    if (line.starts_with("UNKNOWN")) {
        h.local = true;
        return status::done;
    }
    std::array<std::string_view, 5> f;
    for (std::size_t i = 0; i < f.size(); ++i) {
        auto sp = line.find(' ');
        if ((sp == std::string_view::npos) != (i == f.size() - 1))
            return status::invalid;
        f[i] = line.substr(0, sp);
        line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    }
    bool v6 = f[0] == "TCP6";
    if (!v6 && f[0] != "TCP4")
        return status::invalid;
    address src, dst;
    if (!ip(f[1], v6, src.host) || !ip(f[2], v6, dst.host) || !port(f[3], src.port) || !port(f[4], dst.port))
        return status::invalid;
    h.source = std::move(src);
    h.destination = std::move(dst);
    return status::done;
}

inline status
parse_v2(std::string_view b, header& h)
{
    auto const ver_cmd = static_cast<unsigned char>(b[12]);
    auto const family = static_cast<unsigned char>(b[13]);
    if ((ver_cmd >> 4) != 2)
        return status::invalid;
    auto const body = b.substr(16);
    auto const* p = reinterpret_cast<unsigned char const*>(body.data());
    switch (ver_cmd & 0x0f) {
    case 0x0: // LOCAL: a health check of the balancer's own; the family is ignored
        h.local = true;
        return status::done;
    case 0x1: // PROXY
        break;
    default:
        return status::invalid;
    }
    auto be16 = [](unsigned char const* q) { return static_cast<std::uint16_t>(q[0] << 8 | q[1]); };
    switch (family) {
    case 0x11: { // TCP over IPv4
        if (body.size() < 12)
            return status::invalid;
        std::array<unsigned char, 4> s, d;
        std::memcpy(s.data(), p, 4);
        std::memcpy(d.data(), p + 4, 4);
        h.source = address{boost::asio::ip::address_v4(s).to_string(), be16(p + 8)};
        h.destination = address{boost::asio::ip::address_v4(d).to_string(), be16(p + 10)};
        return status::done;
    }
    case 0x21: { // TCP over IPv6
        if (body.size() < 36)
            return status::invalid;
        std::array<unsigned char, 16> s, d;
        std::memcpy(s.data(), p, 16);
        std::memcpy(d.data(), p + 16, 16);
        h.source = address{boost::asio::ip::address_v6(s).to_string(), be16(p + 32)};
        h.destination = address{boost::asio::ip::address_v6(d).to_string(), be16(p + 34)};
        return status::done;
    }
    case 0x00: // UNSPEC: addresses unknown; the connection's own are kept
        h.local = true;
        return status::done;
    default:
        // UDP and Unix sockets do not carry HTTP over a TCP balancer: refused.
        return status::invalid;
    }
}

} // namespace parse_detail

// Parses a whole header, as header_bytes() collected it.
inline status
parse(std::string_view bytes, header& h)
{
    h = header{};
    h.size = bytes.size();
    if (bytes.size() >= 16 && bytes.substr(0, 12) == v2_signature) {
        std::size_t const total = 16 + (std::size_t(static_cast<unsigned char>(bytes[14])) << 8 |
                                        static_cast<unsigned char>(bytes[15]));
        if (bytes.size() < total)
            return status::incomplete;
        if (bytes.size() > total)
            return status::invalid;
        return parse_detail::parse_v2(bytes, h);
    }
    if (bytes.starts_with(v1_prefix)) {
        if (bytes.back() != '\n')
            return bytes.size() < v1_max ? status::incomplete : status::invalid;
        return parse_detail::parse_v1(bytes, h);
    }
    auto const sig = bytes.substr(0, v2_signature.size());
    if (v2_signature.starts_with(sig) && bytes.size() < 16)
        return status::incomplete; // the signature, and not yet the length
    return v1_prefix.starts_with(bytes) ? status::incomplete : status::invalid;
}

} // namespace cserve::detail::proxy_protocol

#endif
