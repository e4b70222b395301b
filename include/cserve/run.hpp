// cserve/run.hpp -- serve an application from main(): flags, signals, graceful exit
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_RUN_HPP
#define CSERVE_RUN_HPP

#include <cserve/detail/config.hpp>
#include <cserve/app.hpp>
#include <cserve/config.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cserve {

/// A bad command-line flag or value; the message names it.
class usage_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

/// What the command line asks for.
struct command_line {
    config cfg;
    /// --help was given.
    bool help = false;
};

/** Parses uvicorn-style flags (`--port 8000`, `--port=8000`) into a config.

    Settings come from `defaults`, then the environment (`CSERVE_<FLAG>` for every flag
    that takes a value, such as `CSERVE_PORT=9000`; `CSERVE_<SWITCH>=true|false` for each
    `--x` / `--no-x` pair, such as `CSERVE_ACCESS_LOG=false`; `FORWARDED_ALLOW_IPS`), then
    the command line.

    @throws usage_error naming the flag for an unknown flag or a bad value.
*/
CSERVE_DECL command_line
parse_command_line(int argc, char const* const* argv, config defaults = {});

/// The --help text for `program`.
CSERVE_DECL std::string usage(std::string_view program);

/** Serves `app` on host:port until SIGINT or SIGTERM, then drains and returns 0.

    @return The process exit status: 0 after a clean shutdown, 1 when the server could not
    start.
*/
CSERVE_DECL int run(app_function app, std::string_view host, std::uint16_t port);

/// Serves `app` with `cfg` until SIGINT or SIGTERM; see the overload above.
CSERVE_DECL int run(app_function app, config cfg);

/** Serves `app` with settings from the command line.

    `--help` prints the flags and returns 0; a bad flag prints a one-line error and returns 2.

    @par Example
    @code
    int main(int argc, char** argv) { return cserve::run(app, argc, argv); }
    @endcode
*/
CSERVE_DECL int run(app_function app, int argc, char const* const* argv);

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/run.ipp>
#endif

#endif
