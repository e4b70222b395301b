// tests/fuzz/fuzz_proxy_headers.cpp -- libFuzzer harness: trusted-host lists and X-Forwarded-*
// SPDX-License-Identifier: BSL-1.0
//
// The input is lines: the --forwarded-allow-ips list, the peer's address, then header lines
// "name: value" (x-forwarded-for and x-forwarded-proto among them, any number of each). A list
// that does not parse must throw std::invalid_argument; one that does is applied to a scope
// as the server applies it. Afterwards the scope's scheme is one of http, https, ws, wss and
// its client is an address the headers or the peer named.
#include <cserve/proxy_headers.hpp>
#include <cserve/scope.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view in(reinterpret_cast<char const*>(data), size);
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
