// cserve/scope.hpp -- what the server tells an application about a connection (ASGI scope)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_SCOPE_HPP
#define CSERVE_SCOPE_HPP

#include <cserve/detail/config.hpp>

#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cserve {

/// The kind of a scope.
enum class scope_type {
    http,      ///< one HTTP request and its response
    websocket, ///< one WebSocket connection
    lifespan,  ///< the application's startup and shutdown
};

/// One received header field: a lower-cased name and its value, both views.
using header_view = std::pair<std::string_view, std::string_view>;

/// A network address: host and port for TCP, the socket path (port 0) for Unix sockets.
struct address {
    std::string host;
    std::uint16_t port = 0;

    friend bool operator==(address const&, address const&) = default;
};

/** Lifespan state, shared between the lifespan scope and every connection.

    Each connection scope receives a shallow copy of the map as the lifespan startup left
    it: the map itself is copied, so keys a connection adds or removes stay its own, but
    each value is copied as a `std::any`. To share one object between connections (a pool,
    a cache), store a `std::shared_ptr` to it: every copy then points to the same object,
    which is what "shallow" means in Python's ASGI servers.
*/
using state_map = std::map<std::string, std::any, std::less<>>;

/** What a TLS connection tells the application: the ASGI "tls" extension.

    Every field of the extension, as OpenSSL reports it for the connection; see
    scope::tls().
*/
struct tls_info {
    /// The server's certificate, PEM-encoded.
    std::string server_cert;

    /// The client's certificate and the chain it sent, each PEM-encoded, leaf first; empty
    /// when the client sent none.
    std::vector<std::string> client_cert_chain;

    /// The client certificate's subject as an RFC 4514 distinguished name, when it sent one.
    std::optional<std::string> client_cert_name;

    /// Why the client's certificate failed verification (with `ssl_cert_reqs` optional the
    /// connection is accepted all the same); none when it was verified or not sent.
    std::optional<std::string> client_cert_error;

    /// The protocol version, as on the wire: 0x0303 for TLS 1.2, 0x0304 for TLS 1.3.
    std::uint16_t tls_version = 0;

    /// The cipher suite's 16-bit IANA value, such as 0x1301 (TLS_AES_128_GCM_SHA256).
    std::uint16_t cipher_suite = 0;
};

/// Where a scope finds its connection's tls_info: implemented by a TLS connection, which
/// computes it on the first call and keeps it.
class tls_source {
public:
    virtual tls_info const& tls() const = 0;

protected:
    ~tls_source() = default;
};

/** The ASGI connection scope.

    For an HTTP request the server fills in every field before the application is called.
    The scope is owned by the connection and reused from one request to the next.

    @par Lifetime
    The scope and every view in it (`method`, `headers`, `query_string`, ...) point into
    buffers the connection owns. They stay valid until the application coroutine that
    received the scope returns; copy what must live longer.

    @par Thread Safety
    Distinct objects: safe. Shared objects: unsafe; a scope belongs to one connection.
*/
struct scope {
    scope_type type = scope_type::http;

    /// "1.0" or "1.1".
    std::string_view http_version;

    /// The request method as received, such as "GET" (upper case by convention).
    std::string_view method;

    /// "http" or "https"; "ws" or "wss" for WebSocket.
    std::string_view scheme;

    /// The request path, percent-decoded, with `root_path` in front (as uvicorn does).
    std::string path;

    /// The request path as received (not decoded), with `root_path` in front; no query.
    std::string raw_path;

    /// The part of the target after '?', as received (not decoded); empty when none.
    std::string_view query_string;

    /// The mount point of the application (config::root_path).
    std::string_view root_path;

    /// The request header fields in received order, duplicates kept, names lower-cased.
    std::vector<header_view> headers;

    /// The peer, when known.
    std::optional<address> client;

    /// The local address that accepted the connection, when known.
    std::optional<address> server;

    /// WebSocket subprotocols offered by the client, in order.
    std::vector<std::string_view> subprotocols;

    /// Lifespan state: see state_map.
    state_map state;

    /// The ASGI extensions this server supports for the scope, such as
    /// "http.response.trailers" and "http.response.early_hint"; "tls" over TLS (see tls()).
    std::vector<std::string_view> extensions;

    /// Over TLS, the connection (see tls()); null over cleartext.
    tls_source const* tls_connection = nullptr;

    /** The ASGI "tls" extension: the connection's TLS facts, or null over cleartext.

        Computed when first asked for on a connection (a request that does not ask costs
        nothing) and kept until it closes. The same object for every request of the
        connection: renegotiation is off, so nothing in it changes.
    */
    tls_info const*
    tls() const
    {
        return tls_connection ? &tls_connection->tls() : nullptr;
    }

    /** The value of the first header field named `name`, if any.

        @param name A lower-case field name.
    */
    std::optional<std::string_view>
    header(std::string_view name) const noexcept
    {
        for (auto const& [n, v] : headers)
            if (n == name)
                return v;
        return std::nullopt;
    }

    /// Whether the server supports the ASGI extension `name`.
    bool
    has_extension(std::string_view name) const noexcept
    {
        for (auto e : extensions)
            if (e == name)
                return true;
        return false;
    }
};

} // namespace cserve

#endif
