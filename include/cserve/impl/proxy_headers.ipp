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

std::optional<std::vector<forwarded_element>>
parse_forwarded(std::string_view v)
{
    // Forwarded = 1#forwarded-element; forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
    // forwarded-pair = token "=" value; value = token / quoted-string (RFC 7239 §4).
    std::vector<forwarded_element> out;
    forwarded_element e;
    bool any = false;
    std::size_t i = 0;
    auto const n = v.size();
    auto ows = [&] {
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            ++i;
    };
    for (;;) {
        ows();
        if (i < n && v[i] != ',' && v[i] != ';') {
            auto const name_begin = i;
            while (i < n && http1::is_tchar(static_cast<unsigned char>(v[i])))
                ++i;
            auto name = v.substr(name_begin, i - name_begin);
            if (name.empty() || i >= n || v[i] != '=')
                return std::nullopt;
            ++i;
            std::string_view value;
            bool usable = true; // a quoted value with a quoted-pair is not taken: see forwarded_element
            if (i < n && v[i] == '"') {
                auto const open = i;
                if (!http1::skip_quoted_string(v, i))
                    return std::nullopt;
                value = v.substr(open + 1, i - open - 2);
                usable = value.find('\\') == std::string_view::npos;
            } else {
                auto const value_begin = i;
                while (i < n && http1::is_tchar(static_cast<unsigned char>(v[i])))
                    ++i;
                value = v.substr(value_begin, i - value_begin);
                if (value.empty())
                    return std::nullopt;
            }
            std::string_view* field = starts_with_icase(name, "for") && name.size() == 3     ? &e.for_
                                      : starts_with_icase(name, "proto") && name.size() == 5 ? &e.proto
                                      : starts_with_icase(name, "host") && name.size() == 4  ? &e.host
                                                                                             : nullptr;
            if (field) {
                if (!field->empty())
                    return std::nullopt; // a parameter twice in one element (§4)
                *field = usable ? value : std::string_view(" "); // " ": present, not usable
            }
            any = true;
            ows();
        }
        if (i >= n || v[i] == ',') {
            if (any)
                out.push_back(e);
            e = {};
            any = false;
            if (i >= n)
                break;
            ++i;
            continue;
        }
        if (v[i] != ';')
            return std::nullopt;
        ++i;
    }
    if (out.empty())
        return std::nullopt;
    return out;
}

std::optional<address>
forwarded_node(std::string_view node)
{
    // node = nodename [ ":" node-port ]; nodename = IPv4address / "[" IPv6address "]" /
    // "unknown" / obfnode (RFC 7239 §6). Only an address makes a client.
    std::string_view name = node;
    std::string_view port;
    if (node.starts_with('[')) {
        auto close = node.find(']');
        if (close == std::string_view::npos)
            return std::nullopt;
        name = node.substr(1, close - 1);
        auto rest = node.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':')
                return std::nullopt;
            port = rest.substr(1);
        }
    } else if (auto colon = node.find(':'); colon != std::string_view::npos) {
        name = node.substr(0, colon);
        port = node.substr(colon + 1);
    }
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address(std::string(name), ec);
    if (ec || (node.starts_with('[') != a.is_v6()))
        return std::nullopt;
    std::uint16_t p = 0;
    if (!port.empty()) {
        unsigned value = 0;
        for (char c : port) {
            if (c < '0' || c > '9' || value > 65535)
                return std::nullopt; // an obfuscated port ("_abc") names no port
            value = value * 10 + static_cast<unsigned>(c - '0');
        }
        if (value > 65535)
            return std::nullopt;
        p = static_cast<std::uint16_t>(value);
    }
    return address{a.to_string(), p};
}

inline void
apply_proto(scope& s, std::string_view p)
{
    bool const ws = s.type == scope_type::websocket;
    if (p == "https" || p == "wss")
        s.scheme = ws ? "wss" : "https";
    else if (p == "http" || p == "ws")
        s.scheme = ws ? "ws" : "http";
}

bool
apply_proxy_headers(scope& s, trusted_hosts const& trusted)
{
    if (s.type == scope_type::lifespan)
        return false;
    // One pass over the headers for the three this reads (it runs for every request).
    std::optional<std::string_view> forwarded, proto, xff;
    for (auto const& [name, value] : s.headers) {
        if (name.size() < 9 || (name[0] != 'f' && name[0] != 'x'))
            continue;
        if (name == "forwarded")
            forwarded = forwarded.value_or(value);
        else if (name == "x-forwarded-proto")
            proto = proto.value_or(value);
        else if (name == "x-forwarded-for")
            xff = xff.value_or(value);
    }
    // Most requests carry none: then the peer's address is not even parsed.
    // A peer without an address (an unnamed Unix-socket peer, such as a proxy's) is trusted
    // only by "*", as in uvicorn.
    if ((!forwarded && !proto && !xff) || !trusted.contains(s.client ? std::string_view(s.client->host) : ""))
        return false;
    if (forwarded) {
        // RFC 7239 first. Every proxy appends an element describing the connection it took:
        // the client's is the rightmost whose `for` is not a trusted proxy (or the leftmost
        // when all are). A header that does not parse is ignored as a whole.
        if (auto elements = parse_forwarded(*forwarded)) {
            auto chosen = elements->begin();
            for (auto it = elements->rbegin(); it != elements->rend(); ++it) {
                auto node = forwarded_node(it->for_);
                if (!node || !trusted.contains(node->host)) {
                    chosen = std::prev(it.base());
                    break;
                }
            }
            if (auto node = forwarded_node(chosen->for_))
                s.client = std::move(*node);
            if (!chosen->proto.empty())
                apply_proto(s, chosen->proto);
            if (!chosen->host.empty() && chosen->host != " ") {
                for (auto& [name, value] : s.headers) {
                    if (name == "host") {
                        value = chosen->host;
                        break;
                    }
                }
            }
            return true;
        }
    }
    if (proto)
        apply_proto(s, trim_ows(*proto));
    if (xff) {
        auto host = trusted.client_from(*xff);
        if (!host.empty())
            s.client = address{std::move(host), 0};
    }
    return true;
}

// Puts back what the middleware changed when the application returns, however it returns.
struct scope_restore {
    scope_restore(scope& s_) : s(s_), scheme(s_.scheme), client(s_.client)
    {
        for (std::size_t i = 0; i < s.headers.size(); ++i)
            if (s.headers[i].first == "host")
                host = {i, s.headers[i].second};
    }
    scope_restore(scope_restore const&) = delete;
    scope_restore& operator=(scope_restore const&) = delete;

    scope& s;
    std::string_view scheme;
    std::optional<address> client;
    std::optional<std::pair<std::size_t, std::string_view>> host; // Forwarded's host= rewrites it
    ~scope_restore()
    {
        s.scheme = scheme;
        s.client = std::move(client);
        if (host && host->first < s.headers.size())
            s.headers[host->first].second = host->second;
    }
};

inline task<>
call_behind_proxy(app_function const& app, trusted_hosts const& trusted, scope& s, receive r, cserve::send snd)
{
    std::optional<scope_restore> restore;
    if (s.header("forwarded") || s.header("x-forwarded-proto") || s.header("x-forwarded-for"))
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
