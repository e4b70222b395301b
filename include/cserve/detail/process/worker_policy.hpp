// cserve/detail/process/worker_policy.hpp -- the master's decisions about its workers, without system calls
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_PROCESS_WORKER_POLICY_HPP
#define CSERVE_DETAIL_PROCESS_WORKER_POLICY_HPP

#include <cserve/detail/config.hpp>
#include <cserve/log.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace cserve::detail {

// Exit statuses of a worker that the master acts on.
inline constexpr int exit_startup_failed = 3; // the lifespan startup failed (as uvicorn)
inline constexpr int exit_load_failed = 4;    // the factory threw

// "exited with status 1", "was killed by signal 9 (Killed)": a waitpid(2) status for the log.
CSERVE_DECL std::string describe_wait_status(int status);

// What worker_policy asks of the process it runs in: the supervisor forks, signals and
// notifies for real; a test records the calls.
class worker_host {
public:
    // Starts one worker; returns its pid, or 0 when that failed (the policy retries later).
    virtual pid_t spawn() = 0;
    // Sends `signo` to a worker.
    virtual void signal(pid_t pid, int signo) = 0;
    // Tells a service manager the master's state ("READY=1", "STOPPING=1").
    virtual void notify(char const* state) = 0;
    // The master stops: no new connections from now on.
    virtual void stop_listening() = 0;

protected:
    ~worker_host() = default;
};

// The policy of gunicorn's arbiter as a state machine: how many workers run, when one is
// started, replaced (SIGHUP, one at a time), retired (scaling down, the oldest first),
// aborted (the watchdog) or killed (a stop that takes too long), and how a crash loop
// backs off. Time is an argument of every step, so every decision can be tested without
// processes or clocks; the supervisor feeds it what its poll loop sees.
class worker_policy {
public:
    using clock = std::chrono::steady_clock;
    enum class stop_mode { none, graceful, immediate, kill };

    struct worker {
        pid_t pid = 0;
        clock::time_point started;
        clock::time_point last_beat;
        bool beating = false; // a first heartbeat arrived
        bool ready = false;   // it serves
        bool retiring = false; // sent SIGTERM by the master: its exit is expected
        std::optional<clock::time_point> aborted; // the watchdog sent SIGABRT then
        bool killed = false;
        bool replaced = false; // retired by SIGHUP's rolling restart
    };

    // Workers replaced, by cause, and the watchdog's kills (for the metrics).
    struct restart_counts {
        std::uint64_t crash = 0;
        std::uint64_t watchdog = 0;
        std::uint64_t max_requests = 0;
        std::uint64_t hup = 0;
        std::uint64_t watchdog_kills = 0;
    };

    struct settings {
        std::size_t workers = 1;
        // A worker whose loop has not beaten for this long is aborted.
        std::chrono::milliseconds healthcheck{std::chrono::seconds(5)};
        // How long a graceful stop may take; none: as long as the workers need.
        std::optional<std::chrono::milliseconds> graceful_timeout;
    };

    CSERVE_DECL worker_policy(worker_host& host, logger const& log, settings s);

    /// Brings the workers to the target count, one rolling replacement at a time.
    CSERVE_DECL void manage(clock::time_point now);

    /// A worker's heartbeat arrived (`ready`: it announced that it serves).
    CSERVE_DECL void beat(pid_t pid, bool ready, clock::time_point now);

    /// A worker ended with waitpid(2) status `status`.
    CSERVE_DECL void exited(pid_t pid, int status, clock::time_point now);

    /// The watchdog and the stop deadline.
    CSERVE_DECL void watch(clock::time_point now);

    //--- signals

    /// SIGINT, SIGTERM: drain; again: harder.
    CSERVE_DECL void terminate(clock::time_point now);
    /// SIGQUIT: stop now; again: kill.
    CSERVE_DECL void quit(clock::time_point now);
    /// SIGHUP: replace every worker, one at a time.
    CSERVE_DECL void restart_all();
    /// SIGTTIN (+1), SIGTTOU (-1, never below one).
    CSERVE_DECL void scale(int delta);

    //--- observers

    bool stopping() const noexcept { return stopping_ != stop_mode::none; }
    stop_mode stop_state() const noexcept { return stopping_; }
    bool done() const noexcept { return stopping() && workers_.empty(); }
    int status() const noexcept { return status_; }
    std::size_t target() const noexcept { return target_; }
    std::vector<worker> const& workers() const noexcept { return workers_; }
    // The workers not on their way out.
    CSERVE_DECL std::size_t active() const noexcept;
    restart_counts const& restarts() const noexcept { return restarts_; }
    // When the next worker may be started (a crash loop backs off).
    clock::time_point next_spawn() const noexcept { return next_spawn_; }

private:
    CSERVE_DECL worker* find(pid_t pid) noexcept;
    CSERVE_DECL void retire(worker& w);
    CSERVE_DECL pid_t spawn(clock::time_point now);
    CSERVE_DECL void begin_stop(stop_mode mode, clock::time_point now);
    CSERVE_DECL void kill_all();

    worker_host& host_;
    logger const& log_;
    settings settings_;
    std::size_t target_;
    std::vector<worker> workers_;
    std::vector<pid_t> rolling_; // SIGHUP: old workers still to replace
    pid_t replaced_ = 0;         // the one being replaced now
    pid_t replacement_ = 0;      // and its replacement, until it serves
    clock::time_point next_spawn_{};
    int crashes_ = 0;
    stop_mode stopping_ = stop_mode::none;
    clock::time_point deadline_ = clock::time_point::max();
    bool announced_ready_ = false;
    int status_ = 0;
    restart_counts restarts_;
};

} // namespace cserve::detail

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/process/worker_policy.ipp>
#endif

#endif
