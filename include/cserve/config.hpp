// cserve/config.hpp -- the runtime settings of a server (uvicorn's flags)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_CONFIG_HPP
#define CSERVE_CONFIG_HPP

#include <cserve/detail/config.hpp>
#include <cserve/event.hpp>
#include <cserve/log.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace cserve {

/** The settings of a server, with uvicorn's names and defaults.

    Every field has a command-line flag of the same name (underscores become dashes) when
    the server is started with `run(app, argc, argv)`.

    @par Example
    @code
    cserve::config cfg;
    cfg.port = 0;                       // any free port
    cfg.timeout_keep_alive = std::chrono::seconds(10);
    cfg.headers.push_back({"x-served-by", "cserve"});
    @endcode
*/
struct config {
    /// Address to bind; "0.0.0.0" or "::" for all interfaces. (--host)
    std::string host = "127.0.0.1";

    /// Port to bind; 0 picks a free one (see server::port()). (--port)
    std::uint16_t port = 8000;

    /// The listen(2) backlog. (--backlog)
    int backlog = 2048;

    /// Lines below this level are not logged. (--log-level)
    cserve::log_level log_level = cserve::log_level::info;

    /// One line per response at info level. (--access-log / --no-access-log)
    bool access_log = true;

    /// Where log lines go; empty means standard error.
    cserve::log_sink log_sink;

    /// The mount point of the application, put in front of every scope's path. (--root-path)
    std::string root_path;

    /// Close a keep-alive connection idle this long. (--timeout-keep-alive, seconds)
    std::chrono::milliseconds timeout_keep_alive = std::chrono::seconds(5);

    /// On shutdown, in-flight requests get this long before they are cancelled; none
    /// waits for them as long as they take. (--timeout-graceful-shutdown, seconds)
    std::optional<std::chrono::milliseconds> timeout_graceful_shutdown;

    /// A request whose header has not all arrived this long after its first byte (or
    /// after the connection opened) is cut off with 408. (--timeout-request-header)
    std::chrono::milliseconds timeout_request_header = std::chrono::seconds(30);

    /// The largest request line plus header accepted; larger is a 431. (--max-header-bytes)
    std::size_t max_header_bytes = 16 * 1024;

    /// Send `server: cserve`. (--server-header / --no-server-header)
    bool server_header = true;

    /// Send a `date` header. (--date-header / --no-date-header)
    bool date_header = true;

    /// Extra headers added to every response. (--header NAME:VALUE, repeatable)
    header_list headers;
};

} // namespace cserve

#endif
