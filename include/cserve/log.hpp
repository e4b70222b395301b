// cserve/log.hpp -- log levels, sinks and the logger every server writes through
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_LOG_HPP
#define CSERVE_LOG_HPP

#include <cserve/detail/config.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace cserve {

/// Severity of a log line, in uvicorn's order.
enum class log_level { trace, debug, info, warning, error, critical };

/// The level's name in lower case ("info"), as the --log-level flag spells it.
CSERVE_DECL std::string_view to_string(log_level level) noexcept;

/// Parses a level name ("trace" ... "critical", any case).
CSERVE_DECL std::optional<log_level> parse_log_level(std::string_view name) noexcept;

/** Where log lines go: called with the level and the message (no prefix, no newline).

    The default sink writes `LEVEL:    message` lines to standard error, each with one
    write(2) so that lines from several processes never interleave.

    @par Thread Safety
    A sink may be called from every thread that runs a server's io_context.
*/
using log_sink = std::function<void(log_level, std::string_view)>;

/// Writes one line to standard error, uvicorn style ("INFO:     message"), atomically.
CSERVE_DECL void stderr_sink(log_level level, std::string_view message) noexcept;

/** Filters by level and forwards to a sink.

    @par Thread Safety
    Distinct objects: safe. Shared objects: safe for `log` and `enabled`, as safe as the
    sink is.
*/
class logger {
public:
    /// A logger at `level` that writes to `sink` (stderr_sink when empty).
    CSERVE_DECL explicit logger(log_level level = log_level::info, log_sink sink = {});

    /// Whether a line at `level` would be written.
    bool enabled(log_level level) const noexcept { return level >= level_; }

    /// Writes `message` at `level` if enabled. Never throws.
    CSERVE_DECL void log(log_level level, std::string_view message) const noexcept;

    log_level level() const noexcept { return level_; }

private:
    log_level level_;
    log_sink sink_;
};

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/log.ipp>
#endif

#endif
