// cserve/impl/supervisor.ipp -- one serving process, and the master that forks and minds them
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_SUPERVISOR_IPP
#define CSERVE_IMPL_SUPERVISOR_IPP

// Included by impl/run.ipp only.

#include <cserve/run.hpp>
#include <cserve/error.hpp>
#include <cserve/server.hpp>
#include <cserve/detail/server_impl.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
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

// How a worker talks to its master: a pipe it writes one byte to per heartbeat ('h') and
// once when it serves ('r'), and the listeners the master bound.
struct worker_link {
    int beat_fd = -1;
    pid_t master = 0;
    std::vector<int> listeners;
    std::chrono::milliseconds interval{1000};
};

// Exit statuses of a worker that the master acts on.
inline constexpr int exit_startup_failed = 3; // the lifespan startup failed (as uvicorn)
inline constexpr int exit_load_failed = 4;    // the factory threw

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
    auto const& log = srv.get_logger();
    auto const pid = std::to_string(::getpid());
    log.log(log_level::info, "Started server process [" + pid + "]");

    if (link) {
        auto& impl = server_access::impl(srv);
        impl.inherited_fds_ = link->listeners;
        impl.announce_ = false; // the master said where it listens
        for (int s : {SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2, SIGWINCH})
            std::signal(s, SIG_IGN);
    }
    boost::system::error_code ec;
    srv.listen(ec);
    if (ec) {
        log_bind_error(log, srv.get_config(), ec);
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
        char const h = 'h';
        bool gone = ::getppid() != link->master;
        if (!gone && ::write(link->beat_fd, &h, 1) < 0 && errno == EPIPE)
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

    srv.on_ready([&] {
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
    });
    ioc.run();
    log.log(log_level::info, "Finished server process [" + pid + "]");
    return status;
}

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
class supervisor {
public:
    supervisor(factory make, config cfg) : make_(std::move(make)), cfg_(std::move(cfg)), log_(cfg_.log_level, cfg_.log_sink)
    {
        target_ = cfg_.workers.value_or(1);
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

        while (!(stopping_ != stop_mode::none && workers_.empty())) {
            if (stopping_ == stop_mode::none)
                manage_workers();
            wait(std::chrono::milliseconds(stopping_ != stop_mode::none ? 50 : 100));
            handle_signals();
            read_beats();
            reap();
            watch();
        }

        // Until the handlers are put back, a late signal is a no-op, not a kill.
        master_signal_fd = -1;
        close_listeners();
        log_.log(log_level::info, "Stopping parent process [" + std::to_string(master_) + "]");
        for (std::size_t i = 0; i < std::size(master_signals); ++i)
            ::sigaction(master_signals[i], &saved[i], nullptr);
        ::close(signal_pipe_[0]);
        ::close(signal_pipe_[1]);
        return status_;
    }

private:
    using clock = std::chrono::steady_clock;
    enum class stop_mode { none, graceful, immediate, kill };

    struct worker {
        pid_t pid = 0;
        int beat = -1; // the read end of its heartbeat pipe
        clock::time_point started;
        clock::time_point last_beat;
        bool beating = false; // a first heartbeat arrived
        bool ready = false;
        bool retiring = false; // sent SIGTERM by us: its exit is expected
        std::optional<clock::time_point> aborted;
        bool killed = false;
    };

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

    // ---- workers

    std::size_t
    active() const noexcept
    {
        return static_cast<std::size_t>(
            std::count_if(workers_.begin(), workers_.end(), [](worker const& w) { return !w.retiring; }));
    }

    worker*
    find(pid_t pid) noexcept
    {
        auto it = std::find_if(workers_.begin(), workers_.end(), [pid](worker const& w) { return w.pid == pid; });
        return it == workers_.end() ? nullptr : &*it;
    }

    void
    retire(worker& w) noexcept
    {
        if (w.retiring)
            return;
        w.retiring = true;
        ::kill(w.pid, SIGTERM);
    }

    // Brings the workers to the target count, one rolling replacement at a time.
    void
    manage_workers()
    {
        auto now = clock::now();
        if (replacement_) {
            worker* n = find(replacement_);
            if (!n) {
                replacement_ = 0; // it died; a new one is started below
            } else if (n->ready) {
                if (worker* old = find(replaced_))
                    retire(*old);
                replacement_ = 0;
            }
        }
        if (!replacement_ && now >= next_spawn_) {
            while (!rolling_.empty()) {
                pid_t pid = rolling_.front();
                worker* old = find(pid);
                if (!old || old->retiring) {
                    rolling_.erase(rolling_.begin());
                    continue;
                }
                if (pid_t n = spawn()) {
                    rolling_.erase(rolling_.begin());
                    replaced_ = pid;
                    replacement_ = n;
                }
                break;
            }
        }
        std::size_t effective = active() - (replacement_ ? 1 : 0);
        while (effective < target_ && clock::now() >= next_spawn_) {
            if (!spawn())
                break;
            ++effective;
        }
        if (effective > target_ && !replacement_) {
            // Scale down: the oldest go first, as gunicorn does.
            std::vector<worker*> order;
            for (auto& w : workers_)
                if (!w.retiring)
                    order.push_back(&w);
            std::sort(order.begin(), order.end(), [](worker* a, worker* b) { return a->started < b->started; });
            for (std::size_t i = 0; i < effective - target_; ++i) {
                log_.log(log_level::info, "Stopping worker [" + std::to_string(order[i]->pid) + "]");
                retire(*order[i]);
            }
        }
        if (!announced_ready_ && static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(), [](worker const& w) {
                                     return w.ready;
                                 })) >= target_) {
            announced_ready_ = true;
            sd_notify("READY=1");
        }
    }

    // Forks one worker; returns its pid, or 0 when fork failed (retried later).
    pid_t
    spawn()
    {
        int p[2];
        if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
            log_.log(log_level::error, std::string("cannot start a worker: ") + std::strerror(errno));
            next_spawn_ = clock::now() + std::chrono::seconds(1);
            return 0;
        }
        pid_t pid = fork_quietly();
        if (pid < 0) {
            log_.log(log_level::error, std::string("cannot start a worker: ") + std::strerror(errno));
            ::close(p[0]);
            ::close(p[1]);
            next_spawn_ = clock::now() + std::chrono::seconds(1);
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
        auto now = clock::now();
        worker w;
        w.pid = pid;
        w.beat = p[0];
        w.started = w.last_beat = now;
        workers_.push_back(w);
        return pid;
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
        for (auto const& w : workers_)
            ::close(w.beat);
        try {
            app_function app;
            try {
                app = make_();
            } catch (std::exception const& e) {
                log_.log(log_level::critical, std::string("Error loading application: ") + e.what());
                return exit_load_failed;
            }
            worker_link link{beat_fd, master_, listeners_, interval_};
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
        for (auto const& w : workers_)
            if (w.beat >= 0)
                fds.push_back({w.beat, POLLIN, 0});
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
        switch (signo) {
        case SIGINT:
        case SIGTERM:
            if (stopping_ == stop_mode::none)
                begin_stop(stop_mode::graceful);
            else
                begin_stop(stop_mode(static_cast<int>(stopping_) + 1)); // once more: harder
            break;
        case SIGQUIT:
            begin_stop(stopping_ >= stop_mode::immediate ? stop_mode::kill : stop_mode::immediate);
            break;
        case SIGHUP:
            if (stopping_ != stop_mode::none)
                break;
            log_.log(log_level::info, "Handling signal: hup; restarting " + std::to_string(active()) + " workers");
            rolling_.clear();
            for (auto const& w : workers_)
                if (!w.retiring && w.pid != replacement_)
                    rolling_.push_back(w.pid);
            break;
        case SIGTTIN:
            if (stopping_ != stop_mode::none)
                break;
            ++target_;
            log_.log(log_level::info, "Handling signal: ttin; workers: " + std::to_string(target_));
            break;
        case SIGTTOU:
            if (stopping_ != stop_mode::none)
                break;
            if (target_ > 1)
                --target_;
            log_.log(log_level::info, "Handling signal: ttou; workers: " + std::to_string(target_));
            break;
        case SIGUSR1:
            if (!cfg_.log_file.empty()) {
                if (reopen_log_file(cfg_.log_file))
                    log_.log(log_level::info, "Reopened log file " + cfg_.log_file);
                else
                    log_.log(log_level::error, "Cannot reopen log file " + cfg_.log_file + ": " + std::strerror(errno));
            }
            for (auto const& w : workers_)
                ::kill(w.pid, SIGUSR1);
            break;
        case SIGUSR2:
            if (stopping_ == stop_mode::none)
                upgrade();
            break;
        default: // SIGCHLD: reap() runs after every wake-up
            break;
        }
    }

    void
    begin_stop(stop_mode mode)
    {
        if (mode > stop_mode::kill)
            mode = stop_mode::kill;
        if (stopping_ == stop_mode::none) {
            sd_notify("STOPPING=1");
            // New connections are refused from now on: nobody else holds the listeners
            // once the workers close theirs.
            close_listeners();
        }
        stopping_ = mode;
        auto now = clock::now();
        switch (mode) {
        case stop_mode::graceful:
            log_.log(log_level::info, "Shutting down: draining " + std::to_string(workers_.size()) + " workers");
            // The workers cancel what still runs at the graceful timeout; after that
            // and a moment to close, they are killed.
            deadline_ = cfg_.timeout_graceful_shutdown ? now + *cfg_.timeout_graceful_shutdown + std::chrono::seconds(2)
                                                       : clock::time_point::max();
            for (auto& w : workers_) {
                w.retiring = true;
                ::kill(w.pid, SIGTERM);
            }
            break;
        case stop_mode::immediate:
            log_.log(log_level::info, "Shutting down now");
            deadline_ = now + std::chrono::seconds(2);
            for (auto& w : workers_) {
                w.retiring = true;
                ::kill(w.pid, SIGQUIT);
            }
            break;
        case stop_mode::kill:
        case stop_mode::none:
            kill_all();
            break;
        }
    }

    void
    kill_all() noexcept
    {
        for (auto& w : workers_) {
            if (!w.killed)
                ::kill(w.pid, SIGKILL);
            w.killed = true;
            w.retiring = true;
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
        for (auto& w : workers_) {
            if (w.beat < 0)
                continue;
            char buf[64];
            for (;;) {
                auto n = ::read(w.beat, buf, sizeof buf);
                if (n > 0) {
                    w.last_beat = now;
                    w.beating = true;
                    if (std::memchr(buf, 'r', static_cast<std::size_t>(n)) && !w.ready) {
                        w.ready = true;
                        log_.log(log_level::debug, "Worker [" + std::to_string(w.pid) + "] is serving");
                    }
                    continue;
                }
                if (n == 0) { // the worker is exiting; reap() will see it
                    ::close(w.beat);
                    w.beat = -1;
                }
                break;
            }
        }
    }

    void
    reap()
    {
        for (auto it = workers_.begin(); it != workers_.end();) {
            int st = 0;
            if (::waitpid(it->pid, &st, WNOHANG) != it->pid) {
                ++it;
                continue;
            }
            worker w = *it;
            it = workers_.erase(it);
            if (w.beat >= 0)
                ::close(w.beat);
            on_exit(w, st);
        }
        if (upgrade_ > 0) {
            int st = 0;
            if (::waitpid(upgrade_, &st, WNOHANG) == upgrade_) {
                log_.log(log_level::warning, "New master [" + std::to_string(upgrade_) + "] " + describe(st) +
                                                 "; this master goes on serving");
                upgrade_ = 0;
            }
        }
    }

    static std::string
    describe(int st)
    {
        if (WIFSIGNALED(st)) {
            char const* name = ::strsignal(WTERMSIG(st));
            return std::string("was killed by signal ") + std::to_string(WTERMSIG(st)) + " (" + (name ? name : "?") + ")";
        }
        return "exited with status " + std::to_string(WEXITSTATUS(st));
    }

    void
    on_exit(worker const& w, int st)
    {
        auto const who = "Worker [" + std::to_string(w.pid) + "] ";
        bool const clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (stopping_ != stop_mode::none || w.retiring) {
            log_.log(clean ? log_level::info : log_level::warning, who + describe(st));
            return;
        }
        if (WIFEXITED(st) && (WEXITSTATUS(st) == exit_startup_failed || WEXITSTATUS(st) == exit_load_failed)) {
            log_.log(log_level::critical, who + "failed to boot; stopping");
            status_ = WEXITSTATUS(st) == exit_startup_failed ? exit_startup_failed : 1;
            begin_stop(stop_mode::graceful);
            return;
        }
        if (clean) {
            // It served its --limit-max-requests, or its master was thought gone: replace it.
            log_.log(log_level::info, who + "exited; starting a new one");
            return;
        }
        // A crash: start a new one, backing off while they keep dying young so that a
        // crash loop does not become a fork bomb.
        auto lived = clock::now() - w.started;
        crashes_ = lived >= std::chrono::seconds(10) ? 1 : crashes_ + 1;
        auto delay = crashes_ <= 1 ? std::chrono::milliseconds(0)
                                   : std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100 << std::min(crashes_ - 2, 7)),
                                                                         std::chrono::seconds(10));
        next_spawn_ = std::max(next_spawn_, clock::now() + delay);
        log_.log(log_level::error, who + describe(st) + (delay.count() ? "; starting a new one in " + std::to_string(delay.count()) + " ms"
                                                                      : "; starting a new one"));
    }

    // The watchdog: a worker whose loop has not beaten for the healthcheck timeout is
    // aborted, and killed if that does not end it. Also the stop deadline.
    void
    watch()
    {
        auto now = clock::now();
        auto const timeout = cfg_.timeout_worker_healthcheck;
        // Before its loop first runs a worker builds its app; give that longer.
        auto const boot = std::max<std::chrono::milliseconds>(timeout, std::chrono::seconds(30));
        for (auto& w : workers_) {
            if (w.killed)
                continue;
            if (w.aborted) {
                if (now - *w.aborted >= std::chrono::seconds(2)) {
                    ::kill(w.pid, SIGKILL);
                    w.killed = true;
                }
                continue;
            }
            if (now - w.last_beat > (w.beating ? timeout : boot)) {
                log_.log(log_level::critical, "WORKER TIMEOUT (pid:" + std::to_string(w.pid) + "): its event loop has been blocked for over " +
                                                  std::to_string(timeout.count()) + " ms; aborting it");
                ::kill(w.pid, SIGABRT);
                w.aborted = now;
            }
        }
        if (stopping_ != stop_mode::none && now >= deadline_ && !workers_.empty() &&
            std::any_of(workers_.begin(), workers_.end(), [](worker const& w) { return !w.killed; })) {
            log_.log(log_level::warning, "Killing " + std::to_string(workers_.size()) + " workers that did not stop in time");
            kill_all();
        }
    }

    factory make_;
    config cfg_;
    logger log_;
    pid_t master_ = 0;
    std::size_t target_ = 1;
    std::chrono::milliseconds interval_;
    std::vector<int> listeners_;
    std::vector<std::string> urls_;
    bool owns_uds_ = false;
    std::string exe_;
    std::vector<std::string> argv_;
    int signal_pipe_[2] = {-1, -1};
    std::vector<worker> workers_;
    std::vector<pid_t> rolling_; // SIGHUP: old workers still to replace
    pid_t replaced_ = 0;         // the one being replaced now
    pid_t replacement_ = 0;      // and its replacement, until it serves
    pid_t upgrade_ = 0;          // the new master of a SIGUSR2 upgrade
    clock::time_point next_spawn_{};
    int crashes_ = 0;
    stop_mode stopping_ = stop_mode::none;
    clock::time_point deadline_ = clock::time_point::max();
    bool announced_ready_ = false;
    int status_ = 0;
};

} // namespace detail

} // namespace cserve

#endif
