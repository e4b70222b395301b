// cserve/impl/log.ipp -- the logger and the stderr sink
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_LOG_IPP
#define CSERVE_IMPL_LOG_IPP

#include <cserve/log.hpp>

#include <array>
#include <cerrno>
#include <unistd.h>

namespace cserve {

std::string_view
to_string(log_level level) noexcept
{
    switch (level) {
    case log_level::trace: return "trace";
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warning: return "warning";
    case log_level::error: return "error";
    case log_level::critical: return "critical";
    }
    return "info";
}

std::optional<log_level>
parse_log_level(std::string_view name) noexcept
{
    std::string lower;
    for (char c : name)
        lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    for (auto l : {log_level::trace, log_level::debug, log_level::info, log_level::warning,
                   log_level::error, log_level::critical})
        if (to_string(l) == lower)
            return l;
    return std::nullopt;
}

void
stderr_sink(log_level level, std::string_view message) noexcept
{
    // uvicorn pads "LEVEL:" to ten columns.
    static constexpr std::array<std::string_view, 6> prefix{
        "TRACE:    ", "DEBUG:    ", "INFO:     ", "WARNING:  ", "ERROR:    ", "CRITICAL: "};
    try {
        std::string line;
        line.reserve(prefix[0].size() + message.size() + 1);
        line += prefix[static_cast<std::size_t>(level)];
        line += message;
        line += '\n';
        // One write per line: O_APPEND or a pipe keeps lines from several workers whole.
        char const* p = line.data();
        std::size_t n = line.size();
        while (n > 0) {
            auto w = ::write(2, p, n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return;
            }
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    } catch (...) {
    }
}

logger::logger(log_level level, log_sink sink)
    : level_(level)
    , sink_(sink ? std::move(sink) : log_sink(&stderr_sink))
{
}

void
logger::log(log_level level, std::string_view message) const noexcept
{
    if (!enabled(level))
        return;
    try {
        sink_(level, message);
    } catch (...) {
    }
}

} // namespace cserve

#endif
