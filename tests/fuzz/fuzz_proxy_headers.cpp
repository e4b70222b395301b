// tests/fuzz/fuzz_proxy_headers.cpp -- libFuzzer harness: trusted-host lists, X-Forwarded-*,
// and the PROXY protocol header
// SPDX-License-Identifier: BSL-1.0
//
// An input that begins as a PROXY header would ("PROXY " or v2's "\r\n\r\n") is the first
// bytes of a connection under --proxy-protocol: they are taken the way the connection takes
// them (header_bytes(), in reads whose sizes the input's own bytes decide), then parsed. A
// header must never be taken past its end, the parse of the bytes taken must not depend on how
// they arrived, and a parsed client must be an address that parses again.
//
// Otherwise:
// The input is lines: the --forwarded-allow-ips list, the peer's address, then header lines
// "name: value" (x-forwarded-for and x-forwarded-proto among them, any number of each). A list
// that does not parse must throw std::invalid_argument; one that does is applied to a scope
// as the server applies it. Afterwards the scope's scheme is one of http, https, ws, wss and
// its client is an address the headers or the peer named.
#include <cserve/detail/proxy_protocol.hpp>
#include <cserve/proxy_headers.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/ip/address.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

void
check_address(cserve::address const& a)
{
    boost::system::error_code ec;
    auto parsed = boost::asio::ip::make_address(a.host, ec);
    if (ec || parsed.to_string() != a.host)
        std::abort();
}

// Takes `in` as a connection does, in reads of 1 to 64 bytes whose sizes the input's own bytes
// decide (`whole`: in one read): the status, and the bytes taken.
std::pair<cserve::detail::proxy_protocol::status, std::string>
take(std::string_view in, bool whole, cserve::detail::proxy_protocol::header& h)
{
    namespace pp = cserve::detail::proxy_protocol;
    std::string head;
    std::size_t pos = 0;
    auto st = pp::status::incomplete;
    while (pos < in.size() && st == pp::status::incomplete) {
        std::size_t n = whole ? in.size() - pos
                              : std::min<std::size_t>(in.size() - pos, 1 + static_cast<unsigned char>(in[pos]) % 64);
        auto offered = in.substr(pos, n);
        auto taken = pp::header_bytes(head, offered);
        if (!taken)
            return {pp::status::invalid, head}; // refused: the connection is closed
        if (*taken > offered.size() || *taken == 0)
            std::abort();
        head.append(offered.substr(0, *taken));
        pos += *taken;
        st = pp::parse(head, h);
        if (st == pp::status::incomplete && *taken < offered.size())
            std::abort(); // it stopped taking bytes, so the header must be whole
    }
    return {st, head};
}

int
proxy_protocol(std::string_view in)
{
    namespace pp = cserve::detail::proxy_protocol;
    pp::header h, once;
    auto [st, head] = take(in, false, h);
    // How the bytes arrive changes nothing: in one read, the same header (or the same refusal).
    auto [st_once, head_once] = take(in, true, once);
    if (st != st_once || (st == pp::status::done && head != head_once))
        std::abort();
    if (st != pp::status::done)
        return 0;
    if (h.size != head.size())
        std::abort();
    if (once.local != h.local || once.source != h.source || once.destination != h.destination)
        std::abort();
    if (!h.local) {
        if (!h.source || !h.destination)
            std::abort();
        check_address(*h.source);
        check_address(*h.destination);
    }
    return 0;
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view in(reinterpret_cast<char const*>(data), size);
    if (in.starts_with("PROXY ") || in.starts_with("\r\n\r\n"))
        return proxy_protocol(in);
    std::vector<std::string_view> lines;
    while (!in.empty()) {
        auto end = in.find('\n');
        lines.push_back(in.substr(0, end));
        in.remove_prefix(end == std::string_view::npos ? in.size() : end + 1);
    }
    if (lines.size() < 2)
        return 0;
    std::optional<cserve::trusted_hosts> trusted;
    try {
        trusted.emplace(lines[0]);
    } catch (std::invalid_argument const&) {
        return 0;
    }
    std::vector<std::string> names;
    names.reserve(lines.size());
    cserve::scope s;
    bool ws = !lines[1].empty() && lines[1].front() == 'w';
    s.type = ws ? cserve::scope_type::websocket : cserve::scope_type::http;
    s.scheme = ws ? "ws" : "http";
    s.client = cserve::address{std::string(lines[1]), 40000};
    for (std::size_t i = 2; i < lines.size(); ++i) {
        auto colon = lines[i].find(':');
        if (colon == std::string_view::npos)
            continue;
        std::string name(lines[i].substr(0, colon));
        for (auto& c : name)
            c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        names.push_back(std::move(name));
        auto value = lines[i].substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
            value.remove_prefix(1);
        s.headers.emplace_back(names.back(), value);
    }
    (void)trusted->contains(lines[1]);
    for (auto const& [n, v] : s.headers)
        if (n == "x-forwarded-for")
            (void)trusted->client_from(v);
    cserve::detail::apply_proxy_headers(s, *trusted);
    auto scheme = s.scheme;
    if (scheme != "http" && scheme != "https" && scheme != "ws" && scheme != "wss")
        std::abort();
    if ((scheme == "ws" || scheme == "wss") != ws)
        std::abort(); // a WebSocket stays a WebSocket, an HTTP request HTTP
    if (!s.client)
        std::abort();
    return 0;
}
