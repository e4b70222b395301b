// cserve/impl/process/serve_process.ipp -- one serving process: run()'s single process, or a worker
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_PROCESS_SERVE_PROCESS_IPP
#define CSERVE_IMPL_PROCESS_SERVE_PROCESS_IPP

// Included by impl/run.ipp only, after sd_notify().

#include <cserve/run.hpp>
#include <cserve/error.hpp>
#include <cserve/server.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/process/metrics_endpoint.hpp>
#include <cserve/detail/process/worker_policy.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <limits.h>
#include <sys/types.h>
#include <unistd.h>

namespace cserve {

namespace detail {

// The friend of server that lets a worker hand it inherited listeners.
struct server_access {
    static server_impl&
    impl(server& s) noexcept
    {
        return *s.impl_;
    }
};

// Points standard error at `path` (appending), so that every line written to it goes
// there; called at start and again on SIGUSR1 after the file was rotated away.
inline bool
reopen_log_file(std::string const& path) noexcept
{
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    if (fd != 2) {
        int r = ::dup2(fd, 2); // atomic: a concurrent write lands in the old file or the new
        int saved = errno;
        ::close(fd);
        if (r < 0) {
            errno = saved;
            return false;
        }
    }
    return true;
}

inline void
log_bind_error(logger const& log, config const& c, boost::system::error_code ec)
{
    std::string where = !c.uds.empty() ? "'" + c.uds + "'"
                        : c.fd >= 0    ? "fd " + std::to_string(c.fd)
                                       : "('" + c.host + "', " + std::to_string(c.port) + ")";
    log.log(log_level::error, "[Errno " + std::to_string(ec.value()) + "] error while attempting to bind on address " +
                                  where + ": " + ec.message());
}

// How a worker talks to its master: a pipe it writes to on every heartbeat and once when it
// serves ('r'), and the listeners the master bound. A heartbeat is one byte, 'h', or with
// `metrics` 'm' and the worker's server_metrics (one write of less than PIPE_BUF bytes,
// so it arrives whole); the last report goes out as the worker ends.
struct worker_link {
    int beat_fd = -1;
    pid_t master = 0;
    std::vector<int> listeners;
    std::chrono::milliseconds interval{1000};
    bool metrics = false;
};

inline constexpr std::size_t metrics_message_size = 1 + sizeof(server_metrics);
static_assert(metrics_message_size <= PIPE_BUF, "a report must be one atomic pipe write");

// Writes a heartbeat; false when the master is gone (EPIPE).
inline bool
send_beat(worker_link const& link, server const& srv)
{
    if (!link.metrics) {
        char const h = 'h';
        return !(::write(link.beat_fd, &h, 1) < 0 && errno == EPIPE);
    }
    char msg[metrics_message_size];
    msg[0] = 'm';
    auto const m = srv.metrics();
    std::memcpy(msg + 1, &m, sizeof m);
    return !(::write(link.beat_fd, msg, sizeof msg) < 0 && errno == EPIPE);
}

// run()'s metrics listener in a single process: a second server on the same io_context.
inline std::unique_ptr<server>
start_metrics_server(boost::asio::io_context& ioc, server const& srv, bool const& ready)
{
    auto const& cfg = srv.config();
    config m;
    m.host = cfg.metrics_host;
    m.port = *cfg.metrics_port;
    m.log_level = cfg.log_level;
    m.log_sink = cfg.log_sink;
    m.access_log = false;
    m.lifespan = lifespan_mode::off;
    m.ws = false;
    m.http2 = false;
    m.proxy_headers = false;
    m.limit_concurrency = 64;
    m.timeout_graceful_shutdown = std::chrono::seconds(1);
    auto figures = [&srv] { return format_prometheus(srv.metrics()); };
    auto health = [&srv, &ready]() -> std::string_view {
        if (srv.draining())
            return "draining";
        return ready ? "" : "starting";
    };
    auto ms = std::make_unique<server>(ioc, metrics_app(figures, health), std::move(m));
    server_access::impl(*ms).announce_ = false; // the "Metrics on" line says where
    boost::system::error_code ec;
    ms->listen(ec);
    if (ec) {
        srv.logger().log(log_level::error, "cannot serve metrics on port " + std::to_string(*cfg.metrics_port) + ": " +
                                               ec.message());
        return nullptr;
    }
    auto const addresses = ms->local_addresses();
    auto const& a = addresses.front();
    srv.logger().log(log_level::info, "Metrics on http://" + (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) +
                                          ":" + std::to_string(a.port) + "/metrics and /healthz");
    return ms;
}

// One serving process: the single process of `run()`, or a worker under a supervisor
// (`link` set). Returns the process exit status.
//
// Signals: SIGTERM (and SIGINT when alone) drain gracefully, a second one stops at once;
// SIGQUIT stops at once; SIGUSR1 reopens the log file. A worker ignores SIGINT, which a
// terminal sends to the whole process group: its master relays it as SIGTERM.
inline int
serve_process(app_function app, config cfg, worker_link const* link)
{
    namespace net = boost::asio;
    net::io_context ioc(1);
    std::string const log_file = cfg.log_file;
    server srv(ioc, std::move(app), std::move(cfg));
    auto const& log = srv.logger();
    auto const pid = std::to_string(::getpid());
    log.log(log_level::info, "Started server process [" + pid + "]");

    if (link) {
        server_access::impl(srv).inherit_listeners(link->listeners);
        for (int s : {SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2, SIGWINCH})
            std::signal(s, SIG_IGN);
    }
    boost::system::error_code ec;
    srv.listen(ec);
    if (ec) {
        log_bind_error(log, srv.config(), ec);
        return 1;
    }

    net::signal_set signals(ioc, SIGTERM, SIGQUIT, SIGUSR1);
    if (!link)
        signals.add(SIGINT);
    bool served = false;
    bool draining = false;
    auto drain = [&] {
        if (!draining && !link)
            sd_notify("STOPPING=1");
        draining = true;
        srv.shutdown(); // the second call stops
    };
    std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code e, int signo) {
        // A signal that lands just as serve() completes must not re-arm the wait: that
        // would leave the io_context with work forever.
        if (e || served)
            return;
        if (signo == SIGQUIT) {
            srv.stop();
        } else if (signo == SIGUSR1) {
            if (!log_file.empty()) {
                if (reopen_log_file(log_file))
                    log.log(log_level::info, "Reopened log file " + log_file);
                else
                    log.log(log_level::error, "Cannot reopen log file " + log_file + ": " + std::strerror(errno));
            }
        } else {
            drain();
        }
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);

    // The heartbeat: written from the event loop, so a loop blocked by a synchronous call
    // stops it and the master's watchdog sees. A vanished master drains the worker.
    net::steady_timer beat(ioc);
    bool orphaned = false;
    std::function<void(boost::system::error_code)> tick = [&](boost::system::error_code e) {
        if (e || served)
            return;
        bool gone = ::getppid() != link->master;
        if (!gone && !send_beat(*link, srv))
            gone = true;
        if (gone && !orphaned) {
            orphaned = true;
            log.log(log_level::warning, "Master process gone; shutting down");
            if (!draining)
                drain();
        }
        beat.expires_after(link->interval);
        beat.async_wait(tick);
    };
    if (link)
        net::post(ioc, [&] { tick({}); });

    bool ready = false;
    std::unique_ptr<server> metrics;
    if (!link && srv.config().metrics_port) {
        metrics = start_metrics_server(ioc, srv, ready);
        if (!metrics)
            return 1;
        net::co_spawn(ioc, metrics->serve(), [](std::exception_ptr) {});
    }
    srv.on_ready([&] {
        ready = true;
        if (link) {
            char const r = 'r';
            (void)!::write(link->beat_fd, &r, 1);
        } else {
            sd_notify("READY=1");
        }
    });
    int status = 0;
    net::co_spawn(ioc, srv.serve(), [&](std::exception_ptr e) {
        served = true;
        if (e) {
            status = 1;
            try {
                std::rethrow_exception(e);
            } catch (boost::system::system_error const& ex) {
                if (ex.code() == error::startup_failed)
                    status = exit_startup_failed; // already logged
                else
                    log.log(log_level::error, ex.what());
            } catch (std::exception const& ex) {
                log.log(log_level::error, ex.what());
            } catch (...) {
            }
        }
        boost::system::error_code ignored;
        signals.cancel(ignored);
        beat.cancel();
        if (metrics)
            metrics->stop();
    });
    ioc.run();
    if (link && link->metrics) {
        // The last report, waited for: the master adds it to the totals of the workers gone.
        int flags = ::fcntl(link->beat_fd, F_GETFL);
        if (flags >= 0)
            ::fcntl(link->beat_fd, F_SETFL, flags & ~O_NONBLOCK);
        send_beat(*link, srv);
    }
    log.log(log_level::info, "Finished server process [" + pid + "]");
    return status;
}

} // namespace detail

} // namespace cserve

#endif
