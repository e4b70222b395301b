// cserve/impl/proxy_headers.ipp -- the proxy headers middleware
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_PROXY_HEADERS_IPP
#define CSERVE_IMPL_PROXY_HEADERS_IPP

#include <cserve/proxy_headers.hpp>
#include <cserve/detail/text.hpp>

#include <boost/system/error_code.hpp>

#include <optional>
#include <stdexcept>

namespace cserve {

trusted_hosts::trusted_hosts(std::string_view list)
{
    namespace ip = boost::asio::ip;
    detail::for_each_item(list, [this](std::string_view item) {
        if (item == "*") {
            all_ = true;
            return;
        }
        std::string text(item);
        boost::system::error_code ec;
        if (text.find('/') != std::string::npos) {
            if (text.find(':') != std::string::npos) {
                auto net = ip::make_network_v6(text, ec);
                if (!ec) {
                    entries_.emplace_back(net.canonical());
                    return;
                }
            } else {
                auto net = ip::make_network_v4(text, ec);
                if (!ec) {
                    entries_.emplace_back(net.canonical());
                    return;
                }
            }
        } else {
            auto a = ip::make_address(text, ec);
            if (!ec) {
                if (a.is_v6() && a.to_v6().is_v4_mapped())
                    a = ip::make_address_v4(ip::v4_mapped, a.to_v6()); // compared as IPv4
                entries_.emplace_back(a);
                return;
            }
        }
        throw std::invalid_argument("not an IP address, network or '*': '" + text + "'");
    });
}

bool
trusted_hosts::contains(std::string_view host) const noexcept
{
    namespace ip = boost::asio::ip;
    if (all_)
        return true;
    boost::system::error_code ec;
    auto const peer = ip::make_address(std::string(host), ec);
    if (ec)
        return false;
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d: match it both ways.
    auto v4 = peer;
    if (peer.is_v6() && peer.to_v6().is_v4_mapped())
        v4 = ip::make_address_v4(ip::v4_mapped, peer.to_v6());
    for (auto const& e : entries_) {
        if (auto const* addr = std::get_if<ip::address>(&e)) {
            if (*addr == v4 || *addr == peer)
                return true;
        } else if (auto const* n4 = std::get_if<ip::network_v4>(&e)) {
            if (v4.is_v4()) {
                auto const bits = n4->prefix_length();
                auto const mask = bits == 0 ? 0u : ~0u << (32 - bits);
                if ((v4.to_v4().to_uint() & mask) == n4->network().to_uint())
                    return true;
            }
        } else if (auto const* n6 = std::get_if<ip::network_v6>(&e)) {
            if (peer.is_v6() && ip::network_v6(peer.to_v6(), n6->prefix_length()).canonical() == *n6)
                return true;
        }
    }
    return false;
}

std::string
trusted_hosts::client_from(std::string_view x_forwarded_for) const
{
    std::vector<std::string_view> hops;
    detail::for_each_item(x_forwarded_for, [&](std::string_view h) { hops.push_back(h); });
    if (hops.empty())
        return {};
    for (auto it = hops.rbegin(); it != hops.rend(); ++it)
        if (!contains(*it))
            return std::string(*it);
    return std::string(hops.front());
}

namespace detail {

bool
apply_proxy_headers(scope& s, trusted_hosts const& trusted)
{
    if (s.type == scope_type::lifespan || !s.client)
        return false;
    auto proto = s.header("x-forwarded-proto");
    auto xff = s.header("x-forwarded-for");
    // Most requests carry neither: then the peer's address is not even parsed.
    if ((!proto && !xff) || !trusted.contains(s.client->host))
        return false;
    if (proto) {
        auto p = trim_ows(*proto);
        bool const ws = s.type == scope_type::websocket;
        if (p == "https" || p == "wss")
            s.scheme = ws ? "wss" : "https";
        else if (p == "http" || p == "ws")
            s.scheme = ws ? "ws" : "http";
    }
    if (xff) {
        auto host = trusted.client_from(*xff);
        if (!host.empty())
            s.client = address{std::move(host), 0};
    }
    return true;
}

// Puts back what the middleware changed when the application returns, however it returns.
struct scope_restore {
    scope_restore(scope& s_) : s(s_), scheme(s_.scheme), client(s_.client) {}
    scope_restore(scope_restore const&) = delete;
    scope_restore& operator=(scope_restore const&) = delete;

    scope& s;
    std::string_view scheme;
    std::optional<address> client;
    ~scope_restore()
    {
        s.scheme = scheme;
        s.client = std::move(client);
    }
};

inline task<>
call_behind_proxy(app_function const& app, trusted_hosts const& trusted, scope& s, receive r, cserve::send snd)
{
    std::optional<scope_restore> restore;
    if (s.client && (s.header("x-forwarded-proto") || s.header("x-forwarded-for")))
        restore.emplace(s);
    apply_proxy_headers(s, trusted);
    co_await app(s, r, snd);
}

} // namespace detail

app_function
proxy_headers(app_function app, trusted_hosts trusted)
{
    return [app = std::move(app), trusted = std::move(trusted)](scope& s, receive r, cserve::send snd) {
        return detail::call_behind_proxy(app, trusted, s, r, snd);
    };
}

} // namespace cserve

#endif
