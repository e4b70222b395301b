// cserve/proxy_headers.hpp -- middleware: trust Forwarded and X-Forwarded-* from known proxies
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_PROXY_HEADERS_HPP
#define CSERVE_PROXY_HEADERS_HPP

#include <cserve/detail/config.hpp>
#include <cserve/app.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace cserve {

/** The set of proxies whose forwarding headers are believed.

    Built from uvicorn's `--forwarded-allow-ips` syntax: a comma-separated list of IP
    addresses, CIDR networks (`10.0.0.0/8`, `fd00::/8`), or `*` for every peer.

    @par Thread Safety
    Distinct objects: safe. Shared objects: safe for const member functions.
*/
class trusted_hosts {
public:
    /** Parses the list.

        @throws std::invalid_argument naming an entry that is neither an address, a
        network nor `*`.
    */
    CSERVE_DECL explicit trusted_hosts(std::string_view list);

    /// Whether `host` (an address as text) is a trusted proxy.
    CSERVE_DECL bool contains(std::string_view host) const noexcept;

    /** The client an `X-Forwarded-For` value names: the rightmost address that is not a
        trusted proxy, or the leftmost when every one is trusted.
    */
    CSERVE_DECL std::string client_from(std::string_view x_forwarded_for) const;

private:
    using entry = std::variant<boost::asio::ip::address, boost::asio::ip::network_v4, boost::asio::ip::network_v6>;
    bool all_ = false;
    std::vector<entry> entries_;
};

/** Wraps an application so that requests from trusted proxies carry the real client.

    When the peer is in `trusted`: `X-Forwarded-Proto` (http, https, ws, wss) sets
    `scope.scheme`, and `X-Forwarded-For` sets `scope.client` (port 0). An RFC 7239
    `Forwarded` header takes their place when there is one that parses: the client's element
    is the rightmost whose `for` is not a trusted proxy (the leftmost when all are); its
    `for` sets `scope.client` (with the port it names, "unknown" or an obfuscated node leave
    the peer), its `proto` the scheme, its `host` the `host` header. Requests from any
    other peer are passed on untouched. The scope is restored when the application
    returns, so a keep-alive connection starts every request from what the socket says.

    This is what `--proxy-headers` (on by default) with `--forwarded-allow-ips` does in
    `run()`.

    @par Example
    @code
    auto wrapped = cserve::proxy_headers(app, cserve::trusted_hosts("127.0.0.1,10.0.0.0/8"));
    @endcode
*/
CSERVE_DECL app_function proxy_headers(app_function app, trusted_hosts trusted);

namespace detail {

// What proxy_headers() does to a scope before the application sees it: rewrites scheme
// and client when the peer is trusted and sent Forwarded or X-Forwarded-*. Returns whether it did.
// The server calls it directly, without the middleware's coroutine frame.
CSERVE_DECL bool apply_proxy_headers(scope& s, trusted_hosts const& trusted);


// One element of an RFC 7239 Forwarded header: its for, proto and host parameters, views into
// the header (a quoted value without its quotes). A quoted value with a quoted-pair in it is
// " ": there, but not taken (none of these parameters needs one).
struct forwarded_element {
    std::string_view for_;
    std::string_view proto;
    std::string_view host;
};

// The elements of a Forwarded header, left to right; none when it does not parse.
CSERVE_DECL std::optional<std::vector<forwarded_element>> parse_forwarded(std::string_view value);

// The address a Forwarded `for` node names (with its port, if a number); none for "unknown",
// an obfuscated node or anything else.
CSERVE_DECL std::optional<address> forwarded_node(std::string_view node);

} // namespace detail

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/proxy_headers.ipp>
#endif

#endif
