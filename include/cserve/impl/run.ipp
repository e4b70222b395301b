// cserve/impl/run.ipp -- command-line flags and the single-process runner
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_RUN_IPP
#define CSERVE_IMPL_RUN_IPP

#include <cserve/run.hpp>
#include <cserve/error.hpp>
#include <cserve/proxy_headers.hpp>
#include <cserve/server.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/detail/tls.hpp>

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

#include <cstddef>
#include <cstring>

#include <sys/socket.h>
#include <sys/un.h>
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
    throw usage_error("Invalid value for '" + http1::printable(name) + "': '" + http1::printable(value) + "' is not " +
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

// true/false, 1/0, yes/no, on/off, in any case.
inline std::optional<bool>
parse_bool(std::string_view v) noexcept
{
    std::string lower;
    for (char ch : v)
        lower += static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    if (lower == "true" || lower == "1" || lower == "yes" || lower == "on")
        return true;
    if (lower == "false" || lower == "0" || lower == "no" || lower == "off")
        return false;
    return std::nullopt;
}

inline std::span<flag_spec const>
flag_table()
{
    static flag_spec const table[] = {
        {"--host", "TEXT", "Bind socket to this host.  [default: 127.0.0.1]",
         [](config& c, std::string_view, std::string_view v) { c.host = v; }},
        {"--port", "INTEGER", "Bind socket to this port. If 0, an available port will be picked.  [default: 8000]",
         [](config& c, std::string_view n, std::string_view v) { c.port = parse_integer<std::uint16_t>(n, v, 0, 65535); }},
        {"--uds", "TEXT", "Bind to a UNIX domain socket.",
         [](config& c, std::string_view, std::string_view v) { c.uds = v; }},
        {"--uds-mode", "OCTAL", "Permission bits of the UNIX domain socket file.  [default: 666]",
         [](config& c, std::string_view n, std::string_view v) {
             unsigned mode = 0;
             auto r = std::from_chars(v.data(), v.data() + v.size(), mode, 8);
             if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size() || mode > 07777)
                 bad_value(n, v, "an octal file mode");
             c.uds_mode = mode;
         }},
        {"--fd", "INTEGER", "Bind to socket from this file descriptor.",
         [](config& c, std::string_view n, std::string_view v) { c.fd = parse_integer<int>(n, v, 0, 1 << 20); }},
        {"--backlog", "INTEGER", "Maximum number of connections to hold in backlog.  [default: 2048]",
         [](config& c, std::string_view n, std::string_view v) { c.backlog = parse_integer<int>(n, v, 1, 1 << 20); }},
        {"--metrics-port", "INTEGER", "Serve GET /metrics (Prometheus) and GET /healthz on this port.  [default: off]",
         [](config& c, std::string_view n, std::string_view v) { c.metrics_port = parse_integer<std::uint16_t>(n, v, 0, 65535); }},
        {"--metrics-host", "TEXT", "Bind the metrics listener to this host.  [default: 127.0.0.1]",
         [](config& c, std::string_view, std::string_view v) { c.metrics_host = v; }},
        {"--workers", "INTEGER", "Number of worker processes. Defaults to the $WEB_CONCURRENCY environment variable if available, or 1.",
         [](config& c, std::string_view n, std::string_view v) { c.workers = parse_integer<unsigned>(n, v, 1, 1024); }},
        {"--timeout-worker-healthcheck", "SECONDS", "Kill and replace a worker whose event loop has not answered for this long.  [default: 5]",
         [](config& c, std::string_view n, std::string_view v) {
             auto t = parse_seconds(n, v);
             if (t.count() < 100)
                 bad_value(n, v, "at least 0.1 seconds");
             c.timeout_worker_healthcheck = t;
         }},
        {"--log-file", "PATH", "Append log lines to this file instead of standard error; SIGUSR1 reopens it.",
         [](config& c, std::string_view, std::string_view v) { c.log_file = v; }},
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
        {"--proxy-headers", "", "Enable Forwarded, X-Forwarded-Proto, X-Forwarded-For to populate url scheme and remote address info.  [default: on]",
         [](config& c, std::string_view, std::string_view) { c.proxy_headers = true; }},
        {"--no-proxy-headers", "", "Disable Forwarded, X-Forwarded-Proto, X-Forwarded-For.",
         [](config& c, std::string_view, std::string_view) { c.proxy_headers = false; }},
        {"--proxy-protocol", "", "Expect a PROXY protocol header (v1 or v2) on every connection from --forwarded-allow-ips.  [default: off]",
         [](config& c, std::string_view, std::string_view) { c.proxy_protocol = true; }},
        {"--no-proxy-protocol", "", "Connections begin with HTTP or TLS, not a PROXY header.",
         [](config& c, std::string_view, std::string_view) { c.proxy_protocol = false; }},
        {"--forwarded-allow-ips", "TEXT", "Comma separated list of IP addresses, IP networks, or '*' to trust with proxy headers.  [default: $FORWARDED_ALLOW_IPS or 127.0.0.1]",
         [](config& c, std::string_view n, std::string_view v) {
             try {
                 trusted_hosts check(v);
             } catch (std::invalid_argument const&) {
                 bad_value(n, v, "a list of IP addresses, networks or '*'");
             }
             c.forwarded_allow_ips = v;
         }},
        {"--limit-concurrency", "INTEGER", "Maximum number of concurrent connections before issuing HTTP 503 responses.",
         [](config& c, std::string_view n, std::string_view v) {
             c.limit_concurrency = parse_integer<std::size_t>(n, v, 1, std::size_t(1) << 40);
         }},
        {"--limit-max-requests", "INTEGER", "Maximum number of requests to service before terminating the process.",
         [](config& c, std::string_view n, std::string_view v) {
             c.limit_max_requests = parse_integer<std::uint64_t>(n, v, 1, std::uint64_t(1) << 62);
         }},
        {"--limit-request-body", "INTEGER", "Maximum request body size in bytes; a larger body is answered 413.  [default: none]",
         [](config& c, std::string_view n, std::string_view v) {
             c.limit_request_body = parse_integer<std::uint64_t>(n, v, 0, std::uint64_t(1) << 62);
         }},
        {"--limit-max-requests-jitter", "INTEGER", "Maximum jitter to add to limit_max_requests.  [default: 0]",
         [](config& c, std::string_view n, std::string_view v) {
             c.limit_max_requests_jitter = parse_integer<std::uint64_t>(n, v, 0, std::uint64_t(1) << 62);
         }},
        {"--timeout-keep-alive", "SECONDS", "Close Keep-Alive connections if no new data is received within this timeout.  [default: 5]",
         [](config& c, std::string_view n, std::string_view v) { c.timeout_keep_alive = parse_seconds(n, v); }},
        {"--timeout-graceful-shutdown", "SECONDS", "Maximum number of seconds to wait for graceful shutdown.  [default: none]",
         [](config& c, std::string_view n, std::string_view v) { c.timeout_graceful_shutdown = parse_seconds(n, v); }},
        {"--timeout-write", "SECONDS", "Close a connection whose client has read nothing of a response for this long.  [default: 60]",
         [](config& c, std::string_view n, std::string_view v) {
             auto t = parse_seconds(n, v);
             if (t.count() <= 0)
                 bad_value(n, v, "more than 0 seconds");
             c.timeout_write = t;
         }},
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
        {"--lifespan", "[auto|on|off]", "Lifespan implementation.  [default: auto]",
         [](config& c, std::string_view n, std::string_view v) {
             if (v == "auto")
                 c.lifespan = lifespan_mode::automatic;
             else if (v == "on")
                 c.lifespan = lifespan_mode::on;
             else if (v == "off")
                 c.lifespan = lifespan_mode::off;
             else
                 bad_value(n, v, "one of auto, on, off");
         }},
        {"--http2", "", "Serve HTTP/2: ALPN h2 over TLS, h2c by prior knowledge or Upgrade.  [default: on]",
         [](config& c, std::string_view, std::string_view) { c.http2 = true; }},
        {"--no-http2", "", "Serve HTTP/1.1 only.",
         [](config& c, std::string_view, std::string_view) { c.http2 = false; }},
        {"--http2-max-concurrent-streams", "INTEGER", "Maximum open HTTP/2 streams per connection.  [default: 100]",
         [](config& c, std::string_view n, std::string_view v) {
             c.http2_max_concurrent_streams = parse_integer<std::uint32_t>(n, v, 1, 1u << 20);
         }},
        {"--http2-max-requests", "INTEGER", "Maximum HTTP/2 streams one connection serves before GOAWAY.  [default: 10000]",
         [](config& c, std::string_view n, std::string_view v) {
             c.http2_max_requests = parse_integer<std::uint64_t>(n, v, 1, std::uint64_t(1) << 62);
         }},
        {"--http2-max-reset-rate", "INTEGER",
         "HTTP/2 streams a client may reset per second (a burst of twice as many) before GOAWAY.  [default: 100]",
         [](config& c, std::string_view n, std::string_view v) {
             c.http2_max_reset_rate = parse_integer<std::uint32_t>(n, v, 1, 1u << 20);
         }},
        {"--ws", "[auto|none]", "WebSocket protocol implementation; none serves upgrades as plain HTTP.  [default: auto]",
         [](config& c, std::string_view n, std::string_view v) {
             if (v == "auto")
                 c.ws = true;
             else if (v == "none")
                 c.ws = false;
             else
                 bad_value(n, v, "one of auto, none");
         }},
        {"--ws-max-size", "INTEGER", "WebSocket max size message in bytes.  [default: 16777216]",
         [](config& c, std::string_view n, std::string_view v) {
             c.ws_max_size = parse_integer<std::size_t>(n, v, 1, std::size_t(1) << 40);
         }},
        {"--ws-max-queue", "INTEGER", "The maximum length of the WebSocket message queue.  [default: 32]",
         [](config& c, std::string_view n, std::string_view v) {
             c.ws_max_queue = parse_integer<std::size_t>(n, v, 1, 1 << 20);
         }},
        {"--ws-ping-interval", "FLOAT", "WebSocket ping interval in seconds; 0 sends no pings.  [default: 20.0]",
         [](config& c, std::string_view n, std::string_view v) {
             auto t = parse_seconds(n, v);
             c.ws_ping_interval = t.count() > 0 ? std::optional(t) : std::nullopt;
         }},
        {"--ws-ping-timeout", "FLOAT", "WebSocket ping timeout in seconds; 0 waits for pongs forever.  [default: 20.0]",
         [](config& c, std::string_view n, std::string_view v) {
             auto t = parse_seconds(n, v);
             c.ws_ping_timeout = t.count() > 0 ? std::optional(t) : std::nullopt;
         }},
        {"--ws-per-message-deflate", "BOOLEAN", "WebSocket per-message-deflate compression.  [default: True]",
         [](config& c, std::string_view n, std::string_view v) {
             auto on = parse_bool(v);
             if (!on)
                 bad_value(n, v, "a valid boolean");
             c.ws_per_message_deflate = *on;
         }},
        {"--ssl-keyfile", "PATH", "SSL key file (PEM); without it the key is read from --ssl-certfile.",
         [](config& c, std::string_view, std::string_view v) { c.ssl_keyfile = v; }},
        {"--ssl-certfile", "PATH", "SSL certificate file (PEM, the chain leaf first); serves https and wss.",
         [](config& c, std::string_view, std::string_view v) { c.ssl_certfile = v; }},
        {"--ssl-keyfile-password", "TEXT", "SSL keyfile password.",
         [](config& c, std::string_view, std::string_view v) { c.ssl_keyfile_password = v; }},
        {"--ssl-ca-certs", "PATH", "CA certificates file (PEM) that client certificates are verified against.",
         [](config& c, std::string_view, std::string_view v) { c.ssl_ca_certs = v; }},
        {"--ssl-cert-reqs", "[0|1|2]", "Whether client certificate is required: 0 none, 1 optional, 2 required (mutual TLS).  [default: 0]",
         [](config& c, std::string_view n, std::string_view v) {
             c.ssl_cert_reqs = static_cast<cert_reqs>(parse_integer<int>(n, v, 0, 2));
         }},
        {"--ssl-ciphers", "TEXT", "TLS 1.2 ciphers to use (OpenSSL cipher list); TLS 1.3 uses OpenSSL's suites.  [default: ECDHE+AESGCM:ECDHE+CHACHA20]",
         [](config& c, std::string_view, std::string_view v) { c.ssl_ciphers = v; }},
        {"--header", "NAME:VALUE", "Specify custom default HTTP response headers as a Name:Value pair (repeatable).",
         [](config& c, std::string_view n, std::string_view v) {
             auto colon = v.find(':');
             if (colon == std::string_view::npos)
                 bad_value(n, v, "in the form NAME:VALUE");
             auto name = v.substr(0, colon);
             auto value = v.substr(colon + 1);
             while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
                 value.remove_prefix(1);
             if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
                 bad_value(n, v, "a valid header");
             c.headers.emplace_back(std::string(name), std::string(value));
         }},
    };
    return table;
}

} // namespace detail

namespace detail {

// CSERVE_TIMEOUT_KEEP_ALIVE for --timeout-keep-alive.
inline std::string
env_name(std::string_view flag)
{
    std::string name = "CSERVE_";
    for (char c : flag.substr(2))
        name += c == '-' ? '_' : static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    return name;
}

// Settings from the environment, below the command line: CSERVE_<FLAG> for every flag
// that takes a value, CSERVE_<SWITCH>=true|false for each --x / --no-x pair, and
// FORWARDED_ALLOW_IPS as uvicorn reads it.
inline void
apply_environment(config& cfg, std::span<flag_spec const> table)
{
    // uvicorn's (and gunicorn's) own variables, below CSERVE_<FLAG>.
    static constexpr std::pair<char const*, std::string_view> plain[] = {
        {"FORWARDED_ALLOW_IPS", "--forwarded-allow-ips"},
        {"WEB_CONCURRENCY", "--workers"},
    };
    for (auto [var, flag] : plain)
        if (char const* v = std::getenv(var))
            for (auto const& f : table)
                if (f.name == flag)
                    f.apply(cfg, var, v);
    for (auto const& f : table) {
        if (f.name.starts_with("--no-"))
            continue;
        auto name = env_name(f.name);
        char const* v = std::getenv(name.c_str());
        if (!v)
            continue;
        if (!f.metavar.empty()) {
            f.apply(cfg, name, v);
            continue;
        }
        auto on = parse_bool(v);
        if (!on)
            bad_value(name, v, "true or false");
        std::string spelled = *on ? std::string(f.name) : "--no-" + std::string(f.name.substr(2));
        for (auto const& g : table)
            if (g.name == spelled)
                g.apply(cfg, name, {});
    }
}

// Tells systemd about the service's state when it started us with NOTIFY_SOCKET
// (sd_notify(3)); does nothing otherwise.
inline void
sd_notify(char const* state) noexcept
{
    char const* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::size_t len = std::strlen(path);
    if (len >= sizeof addr.sun_path)
        return;
    std::memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0'; // abstract namespace
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    (void)::sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), size);
    ::close(fd);
}

} // namespace detail

} // namespace cserve

#include <cserve/impl/process/supervisor.ipp>

namespace cserve {

command_line
parse_command_line(int argc, char const* const* argv, config defaults)
{
    command_line out{std::move(defaults), false};
    auto table = detail::flag_table();
    detail::apply_environment(out.cfg, table);
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
            throw usage_error("No such option: " + detail::http1::printable(name));
        if (it->metavar.empty()) {
            if (value)
                throw usage_error("Option '" + detail::http1::printable(name) + "' does not take a value.");
        } else if (!value) {
            if (i + 1 >= argc)
                throw usage_error("Option '" + detail::http1::printable(name) + "' requires an argument.");
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

namespace detail {

// What a run() wants: the app maker and the settings, with the worker count resolved.
inline int
run_with(factory const& make, config cfg)
{
    // Writes to a vanished peer must fail with EPIPE, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    if (!cfg.log_file.empty() && !reopen_log_file(cfg.log_file)) {
        std::string msg = "Error: cannot open log file '" + cfg.log_file + "': " + std::strerror(errno) + "\n";
        std::fputs(msg.c_str(), stderr);
        return 1;
    }
    // What the server's constructor refuses, refused here once, before any worker starts,
    // as a one-line error: a bad cfg.headers entry or forwarded_allow_ips list (the flags
    // check their own values; a config built in code may still hold one).
    try {
        server_impl::check(cfg);
    } catch (std::invalid_argument const& e) {
        std::string msg = "Error: " + std::string(e.what()) + "\n";
        std::fputs(msg.c_str(), stderr);
        return 2;
    }
    if (!cfg.workers) {
        if (char const* v = std::getenv("WEB_CONCURRENCY")) {
            try {
                config probe;
                for (auto const& f : flag_table())
                    if (f.name == "--workers")
                        f.apply(probe, "WEB_CONCURRENCY", v);
                cfg.workers = probe.workers;
            } catch (usage_error const& e) {
                std::string msg = "Error: " + std::string(e.what()) + "\n";
                std::fputs(msg.c_str(), stderr);
                return 2;
            }
        }
    }
    // TLS: the certificate and key are read now, once, so that a bad file stops the start
    // instead of every worker; the workers share this context (and its ticket key).
    std::optional<config> tls_origin;
    if (cfg.tls()) {
        try {
            auto ctx = load_tls_context(cfg, make_ticket_key());
            tls_origin = cfg;
            cfg.ssl_context_factory = [ctx] { return ctx; };
        } catch (tls_config_error const& e) {
            std::string msg = "Error: " + std::string(e.what()) + "\n";
            std::fputs(msg.c_str(), stderr);
            return 2;
        }
    } else if (!cfg.ssl_keyfile.empty() || !cfg.ssl_ca_certs.empty() || cfg.ssl_cert_reqs != cert_reqs::none) {
        std::fputs("Error: --ssl-keyfile, --ssl-ca-certs and --ssl-cert-reqs need --ssl-certfile\n", stderr);
        return 2;
    }
    if (cfg.workers.value_or(1) > 1)
        return supervisor(make, std::move(cfg), std::move(tls_origin)).run();

    app_function app;
    try {
        app = make();
    } catch (std::exception const& e) {
        logger(cfg.log_level, cfg.log_sink).log(log_level::critical, std::string("Error loading application: ") + e.what());
        return 1;
    }
    return serve_process(std::move(app), std::move(cfg), nullptr);
}

inline int
run_with_args(factory const& make, int argc, char const* const* argv)
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
    return run_with(make, std::move(cl.cfg));
}

inline factory
always(app_function app)
{
    return factory([app = std::move(app)] { return app; });
}

} // namespace detail

int
run(app_function app, std::string_view host, std::uint16_t port)
{
    return run(detail::always(std::move(app)), host, port);
}

int
run(app_function app, config cfg)
{
    return detail::run_with(detail::always(std::move(app)), std::move(cfg));
}

int
run(app_function app, int argc, char const* const* argv)
{
    return detail::run_with_args(detail::always(std::move(app)), argc, argv);
}

int
run(factory make, std::string_view host, std::uint16_t port)
{
    config cfg;
    cfg.host = host;
    cfg.port = port;
    return detail::run_with(make, std::move(cfg));
}

int
run(factory make, config cfg)
{
    return detail::run_with(make, std::move(cfg));
}

int
run(factory make, int argc, char const* const* argv)
{
    return detail::run_with_args(make, argc, argv);
}

} // namespace cserve

#endif
