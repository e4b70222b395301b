// cserve/impl/process/supervisor.ipp -- the master process that forks the workers and minds them
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_PROCESS_SUPERVISOR_IPP
#define CSERVE_IMPL_PROCESS_SUPERVISOR_IPP

// Included by impl/run.ipp only. The decisions are worker_policy's; this file does the
// system calls: bind, fork, kill, waitpid, poll, the self-pipe of the signal handlers.

#include <cserve/impl/process/serve_process.ipp>
#include <cserve/detail/process/worker_policy.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cserve {

namespace detail {

// The signals the master handles; each is written to a self-pipe by the handler and
// dealt with by the master's loop.
inline constexpr int master_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGTTIN,
                                         SIGTTOU, SIGUSR1, SIGUSR2, SIGCHLD};

inline volatile std::sig_atomic_t master_signal_fd = -1;

inline void
on_master_signal(int signo) noexcept
{
    int saved = errno;
    unsigned char c = static_cast<unsigned char>(signo);
    (void)!::write(master_signal_fd, &c, 1);
    errno = saved;
}

// The master process of `run()` with several workers, in the manner of gunicorn's
// arbiter: it binds the listeners once, forks the workers, and from then on only
// supervises them from a poll loop. See the README, "Workers and signals".
class supervisor final : private worker_host {
public:
    // `tls_origin`: with TLS, the config as given (cfg's context factory returns the context
    // made from it); SIGHUP makes the context anew from it.
    supervisor(factory make, config cfg, std::optional<config> tls_origin = std::nullopt)
        : make_(std::move(make))
        , cfg_(std::move(cfg))
        , tls_origin_(std::move(tls_origin))
        , log_(cfg_.log_level, cfg_.log_sink)
        , policy_(*this, log_, {cfg_.workers.value_or(1), cfg_.timeout_worker_healthcheck, cfg_.timeout_graceful_shutdown})
    {
        auto t = cfg_.timeout_worker_healthcheck;
        interval_ = std::clamp(t / 5, std::chrono::milliseconds(20), std::chrono::milliseconds(1000));
    }

    supervisor(supervisor const&) = delete;
    supervisor& operator=(supervisor const&) = delete;

    int
    run()
    {
        master_ = ::getpid();
        if (!bind())
            return 1;
        if (cfg_.metrics_port) {
            auto err = metrics_.bind(cfg_.metrics_host, *cfg_.metrics_port, 128);
            if (!err.empty()) {
                log_.log(log_level::critical, "cannot serve metrics on ('" + cfg_.metrics_host + "', " +
                                                  std::to_string(*cfg_.metrics_port) + "): " + err);
                close_listeners();
                return 1;
            }
        }
        remember_command();
        if (::pipe2(signal_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
            log_.log(log_level::critical, std::string("cannot create a pipe: ") + std::strerror(errno));
            close_listeners();
            return 1;
        }
        master_signal_fd = signal_pipe_[1];
        struct sigaction sa {};
        sa.sa_handler = &on_master_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        struct sigaction saved[std::size(master_signals)];
        for (std::size_t i = 0; i < std::size(master_signals); ++i)
            ::sigaction(master_signals[i], &sa, &saved[i]);

        log_.log(log_level::info, "Started parent process [" + std::to_string(master_) + "]");
        for (auto const& url : urls_)
            log_.log(log_level::info, "cserve running on " + url + " (Press CTRL+C to quit)");
        if (metrics_.open())
            log_.log(log_level::info, "Metrics on " + metrics_.url() + "/metrics and /healthz");

        while (!policy_.done()) {
            policy_.manage(clock::now());
            wait(std::chrono::milliseconds(policy_.stopping() ? 50 : 100));
            handle_signals();
            read_beats();
            reap();
            policy_.watch(clock::now());
            metrics_.step([this] { return figures(); }, [this] { return health(); }, clock::now());
        }
        metrics_.close_all();

        // Until the handlers are put back, a late signal is a no-op, not a kill.
        master_signal_fd = -1;
        close_listeners();
        log_.log(log_level::info, "Stopping parent process [" + std::to_string(master_) + "]");
        for (std::size_t i = 0; i < std::size(master_signals); ++i)
            ::sigaction(master_signals[i], &saved[i], nullptr);
        ::close(signal_pipe_[0]);
        ::close(signal_pipe_[1]);
        return policy_.status();
    }

private:
    using clock = std::chrono::steady_clock;

    // The read end of a worker's heartbeat pipe, and what the worker last reported.
    struct beat_pipe {
        pid_t pid = 0;
        int fd = -1;
        std::string in; // a report not yet whole
        server_metrics last{};
    };

    // The figures of every worker, those gone included, and the master's own.
    std::string
    figures() const
    {
        server_metrics m = retired_;
        for (auto const& b : beats_)
            m += b.last;
        m.workers = static_cast<std::int64_t>(policy_.workers().size());
        auto const& r = policy_.restarts();
        m.restarts_crash = r.crash;
        m.restarts_watchdog = r.watchdog;
        m.restarts_max_requests = r.max_requests;
        m.restarts_hup = r.hup;
        m.watchdog_kills = r.watchdog_kills;
        return format_prometheus(m, true);
    }

    // /healthz: serving once a worker serves, until the master stops.
    std::string_view
    health() const
    {
        if (policy_.stopping())
            return "draining";
        auto const& w = policy_.workers();
        return std::any_of(w.begin(), w.end(), [](auto const& x) { return x.ready && !x.retiring; }) ? "" : "starting";
    }

    // Binds what the config names, exactly as a single server would (TCP, --uds, --fd,
    // systemd's or an upgrading master's LISTEN_FDS), then keeps the bare descriptors.
    bool
    bind()
    {
        namespace net = boost::asio;
        net::io_context ioc(1);
        server_impl probe(ioc, app_function{}, cfg_);
        boost::system::error_code ec;
        probe.listen(ec);
        if (ec) {
            log_bind_error(log_, cfg_, ec);
            return false;
        }
        for (auto& a : probe.acceptors_) {
            int fd = a.release(ec);
            if (ec) {
                log_.log(log_level::critical, "cannot take over a listener: " + ec.message());
                return false;
            }
            ::fcntl(fd, F_SETFD, FD_CLOEXEC); // an upgrade passes dup()s, not these
            listeners_.push_back(fd);
        }
        urls_ = probe.listen_urls_;
        owns_uds_ = probe.created_uds_;
        probe.created_uds_ = false;
        return true;
    }

    // What an upgrade re-executes: this binary's path (a new file put there runs) and
    // the command line this process was started with.
    void
    remember_command()
    {
        char buf[4096];
        auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (n > 0)
            exe_.assign(buf, static_cast<std::size_t>(n));
        std::ifstream in("/proc/self/cmdline", std::ios::binary);
        std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        for (std::size_t i = 0; i < all.size();) {
            auto end = all.find('\0', i);
            if (end == std::string::npos)
                end = all.size();
            argv_.push_back(all.substr(i, end - i));
            i = end + 1;
        }
    }

    void
    close_listeners() noexcept
    {
        for (int fd : listeners_)
            ::close(fd);
        listeners_.clear();
        // A new master that took the socket over keeps using the file.
        if (owns_uds_ && !(upgrade_ > 0 && ::kill(upgrade_, 0) == 0))
            ::unlink(cfg_.uds.c_str());
        owns_uds_ = false;
    }

    // fork() with the master's signals blocked, so that none reaches the child while it
    // still has the master's handlers (they would write to the master's pipe). The child
    // restores them with default_signals().
    pid_t
    fork_quietly() noexcept
    {
        std::fflush(nullptr);
        sigset_t all, old;
        sigfillset(&all);
        ::sigprocmask(SIG_BLOCK, &all, &old);
        pid_t pid = ::fork();
        if (pid != 0)
            ::sigprocmask(SIG_SETMASK, &old, nullptr);
        return pid;
    }

    static void
    default_signals() noexcept
    {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int s : master_signals)
            ::sigaction(s, &dfl, nullptr);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
    }

    // ---- worker_host

    // Forks one worker with its heartbeat pipe.
    pid_t
    spawn() override
    {
        int p[2];
        if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
            log_.log(log_level::error, std::string("cannot start a worker: ") + std::strerror(errno));
            return 0;
        }
        pid_t pid = fork_quietly();
        if (pid < 0) {
            log_.log(log_level::error, std::string("cannot start a worker: ") + std::strerror(errno));
            ::close(p[0]);
            ::close(p[1]);
            return 0;
        }
        if (pid == 0) {
            ::close(p[0]);
            int status = worker_main(p[1]);
            // Done: a signal from here on must not turn a clean exit into a kill.
            sigset_t all;
            sigfillset(&all);
            ::sigprocmask(SIG_BLOCK, &all, nullptr);
            std::fflush(nullptr);
            ::_exit(status);
        }
        ::close(p[1]);
        beats_.push_back({pid, p[0], {}, {}});
        return pid;
    }

    void
    signal(pid_t pid, int signo) override
    {
        ::kill(pid, signo);
    }

    void
    notify(char const* state) override
    {
        sd_notify(state);
    }

    void
    stop_listening() override
    {
        close_listeners();
    }

    // SIGHUP: the certificate and key are read again, with a new ticket key, for the workers
    // the rolling restart forks; those still serving keep theirs until they are replaced.
    // A file that no longer loads leaves the current context in place.
    void
    reload_tls()
    {
        if (!tls_origin_)
            return;
        try {
            auto ctx = load_tls_context(*tls_origin_, make_ticket_key());
            cfg_.ssl_context_factory = [ctx] { return ctx; };
            log_.log(log_level::info, "Reloaded the TLS certificate and key");
        } catch (tls_config_error const& e) {
            log_.log(log_level::error, std::string("Keeping the current TLS certificate: ") + e.what());
        }
    }

    // In the child after fork: undo the master's signal handling, drop its descriptors,
    // build the application and serve.
    int
    worker_main(int beat_fd) noexcept
    {
        default_signals();
        ::close(signal_pipe_[0]);
        ::close(signal_pipe_[1]);
        master_signal_fd = -1;
        for (auto const& b : beats_)
            if (b.fd >= 0)
                ::close(b.fd);
        bool const report = metrics_.open();
        metrics_.abandon();
        try {
            app_function app;
            try {
                app = make_();
            } catch (std::exception const& e) {
                log_.log(log_level::critical, std::string("Error loading application: ") + e.what());
                return exit_load_failed;
            }
            worker_link link{beat_fd, master_, listeners_, interval_, report};
            return serve_process(std::move(app), cfg_, &link);
        } catch (std::exception const& e) {
            log_.log(log_level::critical, std::string("worker failed: ") + e.what());
        } catch (...) {
        }
        return 1;
    }

    // ---- the loop

    void
    wait(std::chrono::milliseconds timeout)
    {
        std::vector<pollfd> fds;
        fds.push_back({signal_pipe_[0], POLLIN, 0});
        for (auto const& b : beats_)
            if (b.fd >= 0)
                fds.push_back({b.fd, POLLIN, 0});
        metrics_.add_pollfds(fds);
        ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    }

    void
    handle_signals()
    {
        unsigned char buf[64];
        for (;;) {
            auto n = ::read(signal_pipe_[0], buf, sizeof buf);
            if (n <= 0)
                return;
            for (ssize_t i = 0; i < n; ++i)
                on_signal(buf[i]);
        }
    }

    void
    on_signal(int signo)
    {
        auto const now = clock::now();
        switch (signo) {
        case SIGINT:
        case SIGTERM:
            leave_metrics_to_successor();
            policy_.terminate(now);
            break;
        case SIGQUIT:
            leave_metrics_to_successor();
            policy_.quit(now);
            break;
        case SIGHUP:
            reload_tls();
            policy_.restart_all();
            break;
        case SIGTTIN: policy_.scale(+1); break;
        case SIGTTOU: policy_.scale(-1); break;
        case SIGUSR1:
            if (!cfg_.log_file.empty()) {
                if (reopen_log_file(cfg_.log_file))
                    log_.log(log_level::info, "Reopened log file " + cfg_.log_file);
                else
                    log_.log(log_level::error, "Cannot reopen log file " + cfg_.log_file + ": " + std::strerror(errno));
            }
            for (auto const& w : policy_.workers())
                ::kill(w.pid, SIGUSR1);
            break;
        case SIGUSR2:
            if (!policy_.stopping())
                upgrade();
            break;
        default: // SIGCHLD: reap() runs after every wake-up
            break;
        }
    }

    // A master told to stop after a SIGUSR2 upgrade whose new master runs: the instance goes
    // on in the new master, so its /healthz (200) and /metrics are the only ones answered;
    // this one draining would otherwise answer 503 for half the health checks.
    void
    leave_metrics_to_successor() noexcept
    {
        if (metrics_.open() && upgrade_ > 0 && ::kill(upgrade_, 0) == 0) {
            metrics_.close_all();
            log_.log(log_level::info, "Metrics listener left to the new master [" + std::to_string(upgrade_) + "]");
        }
    }

    // SIGUSR2: start a new master from the binary on disk, handing it the listeners the
    // way systemd does (LISTEN_FDS, descriptors from 3 on). Both serve until this one is
    // told to stop.
    void
    upgrade()
    {
        if (upgrade_ > 0) {
            log_.log(log_level::warning, "Handling signal: usr2; an upgrade (pid " + std::to_string(upgrade_) +
                                             ") is already running");
            return;
        }
        if (exe_.empty() || argv_.empty()) {
            log_.log(log_level::error, "Handling signal: usr2; cannot find this program's path to re-execute");
            return;
        }
        pid_t pid = fork_quietly();
        if (pid < 0) {
            log_.log(log_level::error, std::string("cannot fork for the upgrade: ") + std::strerror(errno));
            return;
        }
        if (pid == 0) {
            default_signals();
            int const n = static_cast<int>(listeners_.size());
            std::vector<int> moved;
            for (int fd : listeners_)
                moved.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3 + n));
            for (int i = 0; i < n; ++i) {
                if (moved[static_cast<std::size_t>(i)] < 0 || ::dup2(moved[static_cast<std::size_t>(i)], 3 + i) < 0)
                    ::_exit(127);
                ::close(moved[static_cast<std::size_t>(i)]);
            }
            ::setenv("LISTEN_FDS", std::to_string(n).c_str(), 1);
            ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
            ::unsetenv("LISTEN_FDNAMES");
            std::vector<char*> args;
            for (auto& a : argv_)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(exe_.c_str(), args.data());
            std::string msg = "cserve: cannot execute " + exe_ + ": " + std::strerror(errno) + "\n";
            (void)!::write(2, msg.data(), msg.size());
            ::_exit(127);
        }
        upgrade_ = pid;
        log_.log(log_level::info, "Handling signal: usr2; started new master [" + std::to_string(pid) + "] from " + exe_);
    }

    void
    read_beats()
    {
        auto now = clock::now();
        for (auto& b : beats_)
            read_beat(b, now);
    }

    // Takes what a worker wrote: 'h', 'r', or 'm' and a report.
    void
    read_beat(beat_pipe& b, clock::time_point now)
    {
        if (b.fd < 0)
            return;
        char buf[8192];
        for (;;) {
            auto n = ::read(b.fd, buf, sizeof buf);
            if (n > 0) {
                b.in.append(buf, static_cast<std::size_t>(n));
                bool ready = false;
                std::size_t i = 0;
                while (i < b.in.size()) {
                    char const kind = b.in[i];
                    if (kind == 'm') {
                        if (b.in.size() - i < metrics_message_size)
                            break; // the rest comes with the next read
                        std::memcpy(&b.last, b.in.data() + i + 1, sizeof b.last);
                        i += metrics_message_size;
                    } else {
                        ready = ready || kind == 'r';
                        ++i;
                    }
                }
                b.in.erase(0, i);
                policy_.beat(b.pid, ready, now);
                continue;
            }
            if (n == 0) { // the worker is exiting; reap() will see it
                ::close(b.fd);
                b.fd = -1;
            }
            break;
        }
    }

    void
    reap()
    {
        for (auto it = beats_.begin(); it != beats_.end();) {
            int st = 0;
            if (::waitpid(it->pid, &st, WNOHANG) != it->pid) {
                ++it;
                continue;
            }
            pid_t const pid = it->pid;
            read_beat(*it, clock::now()); // its last report
            if (it->fd >= 0)
                ::close(it->fd);
            // Its counters stay in the totals; its gauges (open connections) are gone with it.
            auto last = it->last;
            last.active_requests = last.active_connections = last.active_websocket_connections = 0;
            retired_ += last;
            it = beats_.erase(it);
            policy_.exited(pid, st, clock::now());
        }
        if (upgrade_ > 0) {
            int st = 0;
            if (::waitpid(upgrade_, &st, WNOHANG) == upgrade_) {
                log_.log(log_level::warning, "New master [" + std::to_string(upgrade_) + "] " +
                                                 describe_wait_status(st) + "; this master goes on serving");
                upgrade_ = 0;
            }
        }
    }

    factory make_;
    config cfg_;
    std::optional<config> tls_origin_;
    logger log_;
    worker_policy policy_;
    pid_t master_ = 0;
    std::chrono::milliseconds interval_;
    std::vector<int> listeners_;
    std::vector<std::string> urls_;
    bool owns_uds_ = false;
    std::string exe_;
    std::vector<std::string> argv_;
    int signal_pipe_[2] = {-1, -1};
    std::vector<beat_pipe> beats_; // one per worker the policy knows, until it is reaped
    server_metrics retired_{};     // the last reports of the workers reaped
    metrics_listener metrics_;     // --metrics-port
    pid_t upgrade_ = 0;            // the new master of a SIGUSR2 upgrade
};

} // namespace detail

} // namespace cserve

#endif
