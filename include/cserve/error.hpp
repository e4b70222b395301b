// cserve/error.hpp -- cserve's error codes and the exceptions applications see
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_ERROR_HPP
#define CSERVE_ERROR_HPP

#include <cserve/detail/config.hpp>

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <stdexcept>
#include <string>
#include <type_traits>

namespace cserve {

/// Error codes in the "cserve" category.
enum class error {
    /// The client closed the connection or it broke; nothing more can be sent.
    client_disconnected = 1,

    /// The application sent an event that is not allowed in the connection's state,
    /// such as a second "http.response.start".
    unexpected_event,

    /// The application sent a header with an invalid name or value.
    invalid_header,

    /// The application sent an invalid status code.
    invalid_status,

    /// The application sent more body bytes than its Content-Length announced.
    content_length_exceeded,

    /// The application reported "lifespan.startup.failed", or failed the lifespan
    /// protocol with --lifespan on.
    startup_failed,

    /// The application closed a WebSocket with a code it may not send (RFC 6455 §7.4:
    /// only 1000-1003, 1007-1014 and 3000-4999) or a reason that does not fit in a close
    /// frame (more than 123 bytes, or not UTF-8).
    invalid_close,
};

/// The category of cserve::error; its name is "cserve".
CSERVE_DECL boost::system::error_category const& error_category() noexcept;

/// Makes an error_code from a cserve::error.
inline boost::system::error_code
make_error_code(error e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

/** Thrown by `send()` when the client is gone.

    An application that streams a long response can catch it to stop early; one that
    does not catch it simply ends, and the server closes the connection quietly.
*/
class client_disconnected : public boost::system::system_error {
public:
    client_disconnected() : boost::system::system_error(make_error_code(error::client_disconnected)) {}
};

/** Throw from an application to answer with an HTTP status.

    Before "http.response.start" the server answers `status` with `detail` as a plain text
    body; any other exception becomes a 500 whose message is logged, not sent.

    @par Example
    @code
    if (!authorised)
        throw cserve::http_error(401, "Unauthorized");
    @endcode
*/
class http_error : public std::runtime_error {
public:
    http_error(int status, std::string const& detail)
        : std::runtime_error(detail)
        , status_(status)
    {
    }

    /// The HTTP status to answer with.
    int status() const noexcept { return status_; }

private:
    int status_;
};

} // namespace cserve

template <>
struct boost::system::is_error_code_enum<cserve::error> : std::true_type {};

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/error.ipp>
#endif

#endif
