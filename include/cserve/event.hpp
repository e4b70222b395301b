// cserve/event.hpp -- the messages an application receives and sends (ASGI events)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_EVENT_HPP
#define CSERVE_EVENT_HPP

#include <cserve/detail/config.hpp>

#include <concepts>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace cserve {

/// One header field as an application sends it: name and value, owned.
using header = std::pair<std::string, std::string>;

/** The header fields of a response, in the order they are written: a `std::vector` of
    name/value pairs, built from a braced list: `{{"content-type", "text/plain"}, {"x-a", "b"}}`.
*/
class header_list : public std::vector<header> {
public:
    header_list() = default;
    header_list(std::initializer_list<header> list) : std::vector<header>(list) {}
    /// Takes an existing vector (a template, so that braced lists never pick it).
    template <class V>
        requires std::same_as<std::remove_cvref_t<V>, std::vector<header>>
    explicit header_list(V&& v) : std::vector<header>(std::forward<V>(v))
    {
    }
};

/** HTTP messages (ASGI "http" scope).

    The server sends `request` and `disconnect`; the application sends `response_start`,
    then one or more `response_body` and, when `response_start::trailers` is set,
    `response_trailers`.
*/
namespace http {

/// A piece of the request body ("http.request"). The first one arrives even when the
/// body is empty; `more_body` is false on the last.
struct request {
    std::string body;
    bool more_body = false;
};

/// The client has gone, or the response is complete ("http.disconnect").
struct disconnect {};

/// Starts the response ("http.response.start"). Nothing is written until the first
/// `response_body`, so status and headers travel with the first body bytes.
struct response_start {
    int status = 200;
    header_list headers;
    /// The application will send `response_trailers` after the body.
    bool trailers = false;
};

/// A piece of the response body ("http.response.body"); `more_body` false ends it.
struct response_body {
    std::string body;
    bool more_body = false;
};

/// A 103 Early Hints interim response (RFC 8297; ASGI's "http.response.early_hint"
/// extension): each of `links` becomes a Link header, so that a browser can start fetching
/// or preconnecting while the application prepares its response. Only before
/// `response_start`, and as often as needed; an HTTP/1.0 client gets none (1xx responses are
/// not for it). A link with a CR, LF or NUL makes send() throw.
struct response_early_hint {
    std::vector<std::string> links;
};

/// Trailer fields after the body ("http.response.trailers"); chunked responses only.
struct response_trailers {
    header_list headers;
    bool more_trailers = false;
};

} // namespace http

/// WebSocket messages (ASGI "websocket" scope).
namespace websocket {

/// A client asks to connect ("websocket.connect"): the first event received.
struct connect {};

/// Accepts the connection ("websocket.accept"): the 101 response.
struct accept {
    std::optional<std::string> subprotocol;
    header_list headers;
};

/// A message from the client ("websocket.receive"): exactly one of the two is set.
struct receive {
    std::optional<std::string> bytes;
    std::optional<std::string> text;
};

/// A message to the client ("websocket.send"): set exactly one of the two.
struct send {
    std::optional<std::string> bytes;
    std::optional<std::string> text;
};

/// The connection is closed ("websocket.disconnect"); 1005 when the peer gave no code.
struct disconnect {
    int code = 1005;
    std::string reason;
};

/// Closes the connection ("websocket.close"); before `accept` this is a 403.
struct close {
    int code = 1000;
    std::string reason;
};

} // namespace websocket

/// Lifespan messages (ASGI "lifespan" scope).
namespace lifespan {

struct startup {};           ///< "lifespan.startup"
struct startup_complete {};  ///< "lifespan.startup.complete"
struct shutdown {};          ///< "lifespan.shutdown"
struct shutdown_complete {}; ///< "lifespan.shutdown.complete"

/// "lifespan.startup.failed": the server logs `message` and exits.
struct startup_failed {
    std::string message;
};

/// "lifespan.shutdown.failed"
struct shutdown_failed {
    std::string message;
};

} // namespace lifespan

/** One ASGI message, in either direction.

    @par Example
    @code
    auto e = co_await receive();
    if (auto* r = std::get_if<cserve::http::request>(&e))
        body += r->body;
    @endcode
*/
using event = std::variant<
    http::request,
    http::disconnect,
    http::response_start,
    http::response_body,
    http::response_trailers,
    websocket::connect,
    websocket::accept,
    websocket::receive,
    websocket::send,
    websocket::disconnect,
    websocket::close,
    lifespan::startup,
    lifespan::startup_complete,
    lifespan::startup_failed,
    lifespan::shutdown,
    lifespan::shutdown_complete,
    lifespan::shutdown_failed,
    http::response_early_hint>;

/// The ASGI name of an event's type, such as "http.response.start".
CSERVE_DECL std::string_view event_name(event const& e) noexcept;

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/event.ipp>
#endif

#endif
