// cserve/run.hpp -- serve an application from main(): flags, signals, graceful exit
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_RUN_HPP
#define CSERVE_RUN_HPP

#include <cserve/detail/config.hpp>
#include <cserve/app.hpp>
#include <cserve/config.hpp>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

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

/** Builds the application inside each worker process, after fork.

    With `run(cserve::factory(create_app), ...)` every worker calls `create_app()` once
    before it serves, so each has its own state (connections, caches, threads) and nothing
    made in the master is shared by accident. In single-process mode it is called once.
    An exception from it stops the server: the process (or, under a supervisor, the
    whole server) exits with status 1.

    @par Example
    @code
    cserve::app_function create_app()
    {
        auto db = std::make_shared<pool>(); // one per worker
        return [db](cserve::scope& s, cserve::receive r, cserve::send snd) -> cserve::task<> {
            co_await handle(*db, s, r, snd);
        };
    }
    int main(int argc, char** argv) { return cserve::run(cserve::factory(create_app), argc, argv); }
    @endcode
*/
class factory {
public:
    template <class F>
        requires std::is_invocable_r_v<app_function, F&>
    explicit factory(F f) : make_(std::move(f))
    {
    }

    /// Builds one application.
    app_function
    operator()() const
    {
        return make_();
    }

private:
    std::function<app_function()> make_;
};

/** Serves `app` on host:port until SIGINT or SIGTERM, then drains and returns 0.

    @return The process exit status: 0 after a clean shutdown, 1 when the server could not
    start, 2 for a bad setting (printed as one line: a certificate file, a `headers` entry, a
    `forwarded_allow_ips` list), 3 when the application failed its lifespan startup.
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

/// As run(app, host, port), with the application built by `make` (in each worker).
CSERVE_DECL int run(factory make, std::string_view host, std::uint16_t port);

/** As run(app, cfg), with the application built by `make` in each worker.

    With `cfg.workers` (or $WEB_CONCURRENCY) above 1 the process becomes a supervisor: it
    binds the listeners, forks the workers and manages them with signals (see the README,
    "Workers and signals"). It returns the exit status once every worker has ended.
*/
CSERVE_DECL int run(factory make, config cfg);

/// As run(app, argc, argv), with the application built by `make` in each worker.
CSERVE_DECL int run(factory make, int argc, char const* const* argv);

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/run.ipp>
#endif

#endif
