// cserve/impl/run.ipp -- command-line flags and the single-process runner
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_RUN_IPP
#define CSERVE_IMPL_RUN_IPP

#include <cserve/run.hpp>
#include <cserve/server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>

#include <unistd.h>

namespace cserve {

namespace detail {

// One command-line flag: how it is spelled, what it takes and what it sets.
struct flag_spec {
    std::string_view name;    // "--port"
    std::string_view metavar; // "INTEGER"; empty for a switch
    std::string_view help;
    void (*apply)(config&, std::string_view name, std::string_view value);
};

[[noreturn]] inline void
bad_value(std::string_view name, std::string_view value, std::string_view expected)
{
    throw usage_error("Invalid value for '" + std::string(name) + "': '" + std::string(value) + "' is not " +
                      std::string(expected) + ".");
}

template <class Int>
Int
parse_integer(std::string_view name, std::string_view value, Int min, Int max)
{
    long long v = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), v);
    if (r.ec != std::errc() || r.ptr != value.data() + value.size())
        bad_value(name, value, "a valid integer");
    if (v < static_cast<long long>(min) || v > static_cast<long long>(max))
        bad_value(name, value, "in the range " + std::to_string(min) + " to " + std::to_string(max));
    return static_cast<Int>(v);
}

inline std::chrono::milliseconds
parse_seconds(std::string_view name, std::string_view value)
{
    // strtod wants a terminated string; values are short.
    std::string text(value);
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || v < 0 || v > 1e9)
        bad_value(name, value, "a number of seconds");
    return std::chrono::milliseconds(static_cast<long long>(std::llround(v * 1000)));
}

inline bool
valid_header_name(std::string_view s) noexcept
{
    if (s.empty())
        return false;
    for (unsigned char c : s) {
        bool ok = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                  std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
        if (!ok)
            return false;
    }
    return true;
}

inline std::span<flag_spec const>
flag_table()
{
    static flag_spec const table[] = {
        {"--host", "TEXT", "Bind socket to this host.  [default: 127.0.0.1]",
         [](config& c, std::string_view, std::string_view v) { c.host = v; }},
        {"--port", "INTEGER", "Bind socket to this port. If 0, an available port will be picked.  [default: 8000]",
         [](config& c, std::string_view n, std::string_view v) { c.port = parse_integer<std::uint16_t>(n, v, 0, 65535); }},
        {"--backlog", "INTEGER", "Maximum number of connections to hold in backlog.  [default: 2048]",
         [](config& c, std::string_view n, std::string_view v) { c.backlog = parse_integer<int>(n, v, 1, 1 << 20); }},
        {"--log-level", "[critical|error|warning|info|debug|trace]", "Log level.  [default: info]",
         [](config& c, std::string_view n, std::string_view v) {
             auto l = parse_log_level(v);
             if (!l)
                 bad_value(n, v, "one of critical, error, warning, info, debug, trace");
             c.log_level = *l;
         }},
        {"--access-log", "", "Enable access log.  [default: on]",
         [](config& c, std::string_view, std::string_view) { c.access_log = true; }},
        {"--no-access-log", "", "Disable access log.",
         [](config& c, std::string_view, std::string_view) { c.access_log = false; }},
        {"--root-path", "TEXT", "Set the ASGI 'root_path' for applications submounted below a given URL path.",
         [](config& c, std::string_view, std::string_view v) { c.root_path = v; }},
        {"--timeout-keep-alive", "SECONDS", "Close Keep-Alive connections if no new data is received within this timeout.  [default: 5]",
         [](config& c, std::string_view n, std::string_view v) { c.timeout_keep_alive = parse_seconds(n, v); }},
        {"--timeout-graceful-shutdown", "SECONDS", "Maximum number of seconds to wait for graceful shutdown.  [default: none]",
         [](config& c, std::string_view n, std::string_view v) { c.timeout_graceful_shutdown = parse_seconds(n, v); }},
        {"--timeout-request-header", "SECONDS", "Cut off a request whose header has not arrived within this time.  [default: 30]",
         [](config& c, std::string_view n, std::string_view v) { c.timeout_request_header = parse_seconds(n, v); }},
        {"--max-header-bytes", "INTEGER", "Largest request line and header accepted; larger gets 431.  [default: 16384]",
         [](config& c, std::string_view n, std::string_view v) {
             c.max_header_bytes = parse_integer<std::size_t>(n, v, 256, std::size_t(64) << 20);
         }},
        {"--server-header", "", "Enable default Server header.  [default: on]",
         [](config& c, std::string_view, std::string_view) { c.server_header = true; }},
        {"--no-server-header", "", "Disable default Server header.",
         [](config& c, std::string_view, std::string_view) { c.server_header = false; }},
        {"--date-header", "", "Enable default Date header.  [default: on]",
         [](config& c, std::string_view, std::string_view) { c.date_header = true; }},
        {"--no-date-header", "", "Disable default Date header.",
         [](config& c, std::string_view, std::string_view) { c.date_header = false; }},
        {"--header", "NAME:VALUE", "Specify custom default HTTP response headers as a Name:Value pair (repeatable).",
         [](config& c, std::string_view n, std::string_view v) {
             auto colon = v.find(':');
             if (colon == std::string_view::npos)
                 bad_value(n, v, "in the form NAME:VALUE");
             auto name = v.substr(0, colon);
             auto value = v.substr(colon + 1);
             while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
                 value.remove_prefix(1);
             if (!valid_header_name(name) || value.find_first_of("\r\n") != std::string_view::npos)
                 bad_value(n, v, "a valid header");
             c.headers.emplace_back(std::string(name), std::string(value));
         }},
    };
    return table;
}

} // namespace detail

command_line
parse_command_line(int argc, char const* const* argv, config defaults)
{
    command_line out{std::move(defaults), false};
    auto table = detail::flag_table();
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            out.help = true;
            continue;
        }
        std::string_view name = arg;
        std::optional<std::string_view> value;
        if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        }
        auto it = std::find_if(table.begin(), table.end(), [&](auto const& f) { return f.name == name; });
        if (it == table.end())
            throw usage_error("No such option: " + std::string(name));
        if (it->metavar.empty()) {
            if (value)
                throw usage_error("Option '" + std::string(name) + "' does not take a value.");
        } else if (!value) {
            if (i + 1 >= argc)
                throw usage_error("Option '" + std::string(name) + "' requires an argument.");
            value = argv[++i];
        }
        it->apply(out.cfg, name, value.value_or(std::string_view{}));
    }
    return out;
}

std::string
usage(std::string_view program)
{
    std::string text = "Usage: ";
    text += program;
    text += " [OPTIONS]\n\nOptions:\n";
    for (auto const& f : detail::flag_table()) {
        std::string left = "  ";
        left += f.name;
        if (!f.metavar.empty()) {
            left += ' ';
            left += f.metavar;
        }
        text += left;
        if (left.size() < 34)
            text.append(34 - left.size(), ' ');
        else
            text += "\n" + std::string(34, ' ');
        text += f.help;
        text += '\n';
    }
    text += "  --help";
    text.append(34 - 8, ' ');
    text += "Show this message and exit.\n";
    return text;
}

int
run(app_function app, std::string_view host, std::uint16_t port)
{
    config cfg;
    cfg.host = host;
    cfg.port = port;
    return run(std::move(app), std::move(cfg));
}

int
run(app_function app, config cfg)
{
    namespace net = boost::asio;
    // Writes to a vanished peer must fail with EPIPE, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);

    net::io_context ioc(1);
    server srv(ioc, std::move(app), std::move(cfg));
    auto const& log = srv.get_logger();
    auto const pid = std::to_string(::getpid());
    log.log(log_level::info, "Started server process [" + pid + "]");

    boost::system::error_code ec;
    srv.listen(ec);
    if (ec) {
        auto const& c = srv.get_config();
        log.log(log_level::error, "[Errno " + std::to_string(ec.value()) + "] error while attempting to bind on address ('" +
                                      c.host + "', " + std::to_string(c.port) + "): " + ec.message());
        return 1;
    }

    // SIGINT or SIGTERM: graceful shutdown; the second one: stop now.
    net::signal_set signals(ioc, SIGINT, SIGTERM);
    std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code e, int) {
        if (e)
            return;
        srv.shutdown();
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);

    int status = 0;
    net::co_spawn(ioc, srv.serve(), [&](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (std::exception const& ex) {
                log.log(log_level::error, ex.what());
            } catch (...) {
            }
            status = 1;
        }
        boost::system::error_code ignored;
        signals.cancel(ignored);
    });
    ioc.run();
    log.log(log_level::info, "Finished server process [" + pid + "]");
    return status;
}

int
run(app_function app, int argc, char const* const* argv)
{
    std::string program = argc > 0 && argv[0] ? argv[0] : "cserve";
    command_line cl;
    try {
        cl = parse_command_line(argc, argv);
    } catch (usage_error const& e) {
        std::string msg = "Error: " + std::string(e.what()) + " Try '" + program + " --help' for help.\n";
        std::fputs(msg.c_str(), stderr);
        return 2;
    }
    if (cl.help) {
        std::fputs(usage(program).c_str(), stdout);
        return 0;
    }
    return run(std::move(app), std::move(cl.cfg));
}

} // namespace cserve

#endif
