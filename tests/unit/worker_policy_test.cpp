// tests/unit/worker_policy_test.cpp -- the master's decisions about its workers, on a fake clock
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/process/worker_policy.hpp>

#include "catch.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <string>
#include <utility>
#include <vector>

#include <sys/wait.h>

using cserve::detail::worker_policy;
using namespace std::chrono_literals;

namespace {

// Records what the policy asks for; spawn() hands out pids 100, 101, ... unless told to fail.
struct fake_host final : cserve::detail::worker_host {
    pid_t next_pid = 100;
    bool fail_spawn = false;
    std::vector<pid_t> spawned;
    std::vector<std::pair<pid_t, int>> signals;
    std::vector<std::string> notes;
    int stopped_listening = 0;

    pid_t
    spawn() override
    {
        if (fail_spawn)
            return 0;
        spawned.push_back(next_pid);
        return next_pid++;
    }
    void signal(pid_t pid, int signo) override { signals.emplace_back(pid, signo); }
    void notify(char const* state) override { notes.emplace_back(state); }
    void stop_listening() override { ++stopped_listening; }

    // The signals sent since the last call.
    std::vector<std::pair<pid_t, int>>
    take_signals()
    {
        return std::exchange(signals, {});
    }
};

int
exited_with(int code)
{
    return (code & 0xff) << 8; // what waitpid reports for exit(code)
}

int
killed_by(int signo)
{
    return signo & 0x7f;
}

std::vector<pid_t>
pids(worker_policy const& p)
{
    std::vector<pid_t> out;
    for (auto const& w : p.workers())
        out.push_back(w.pid);
    return out;
}

struct fixture {
    fake_host host;
    cserve::logger log{cserve::log_level::critical, [](cserve::log_level, std::string_view) {}};
    worker_policy::clock::time_point now{std::chrono::hours(1)};

    worker_policy
    make(std::size_t workers, std::optional<std::chrono::milliseconds> graceful = std::nullopt)
    {
        return worker_policy(host, log, {workers, 5s, graceful});
    }

    // Every worker reports that it serves.
    void
    all_ready(worker_policy& p)
    {
        for (auto pid : pids(p))
            p.beat(pid, true, now);
    }
};

} // namespace

TEST_CASE("worker_policy: the workers are started and READY=1 is sent once all serve", "[worker_policy]")
{
    fixture f;
    auto p = f.make(3);
    p.manage(f.now);
    CHECK(f.host.spawned == std::vector<pid_t>{100, 101, 102});
    p.manage(f.now);
    CHECK(f.host.spawned.size() == 3); // nothing more to start
    p.beat(100, true, f.now);
    p.beat(101, true, f.now);
    p.manage(f.now);
    CHECK(f.host.notes.empty());
    p.beat(102, true, f.now);
    p.manage(f.now);
    p.manage(f.now);
    CHECK(f.host.notes == std::vector<std::string>{"READY=1"});
}

TEST_CASE("worker_policy: a crashed worker is replaced, with a growing back-off while they die young",
          "[worker_policy]")
{
    fixture f;
    auto p = f.make(1);
    p.manage(f.now);
    REQUIRE(pids(p) == std::vector<pid_t>{100});

    // A worker that served ten seconds or more crashing is replaced at once.
    f.now += 20s;
    p.exited(100, killed_by(SIGSEGV), f.now);
    p.manage(f.now);
    CHECK(pids(p) == std::vector<pid_t>{101});

    // Dying young again and again: 100 ms, 200 ms, 400 ms ... before the next start.
    std::chrono::milliseconds expected[] = {100ms, 200ms, 400ms, 800ms, 1600ms, 3200ms, 6400ms, 10s, 10s};
    pid_t current = 101;
    for (auto delay : expected) {
        f.now += 1s;
        p.exited(current, killed_by(SIGSEGV), f.now);
        CHECK(p.next_spawn() == f.now + delay);
        p.manage(f.now + delay - 1ms);
        CHECK(p.workers().empty()); // not yet
        f.now += delay;
        p.manage(f.now);
        REQUIRE(p.workers().size() == 1);
        current = p.workers().front().pid;
    }

    // One that lived long enough starts the count again.
    f.now += 11s;
    p.exited(current, killed_by(SIGSEGV), f.now);
    p.manage(f.now);
    CHECK(p.workers().size() == 1);
    CHECK(p.restarts().crash == 11); // for the metrics
    CHECK(p.restarts().max_requests + p.restarts().hup + p.restarts().watchdog == 0);
}

TEST_CASE("worker_policy: a worker that exits cleanly (max requests) is replaced at once", "[worker_policy]")
{
    fixture f;
    auto p = f.make(2);
    p.manage(f.now);
    f.now += 1s;
    p.exited(100, exited_with(0), f.now);
    p.manage(f.now);
    CHECK(pids(p) == std::vector<pid_t>{101, 102});
    CHECK_FALSE(p.stopping());
    CHECK(p.restarts().max_requests == 1);
    CHECK(p.restarts().crash == 0);
}

TEST_CASE("worker_policy: a worker that fails to boot stops the master with its status", "[worker_policy]")
{
    auto [code, status] = GENERATE(std::pair{cserve::detail::exit_startup_failed, cserve::detail::exit_startup_failed},
                                   std::pair{cserve::detail::exit_load_failed, 1});
    fixture f;
    auto p = f.make(2);
    p.manage(f.now);
    p.exited(100, exited_with(code), f.now);
    CHECK(p.stopping());
    CHECK(p.status() == status);
    CHECK(f.host.stopped_listening == 1);
    CHECK(f.host.notes == std::vector<std::string>{"STOPPING=1"});
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{101, SIGTERM}});
    p.manage(f.now);
    CHECK(f.host.spawned.size() == 2); // no replacement while stopping
    p.exited(101, exited_with(0), f.now);
    CHECK(p.done());
}

TEST_CASE("worker_policy: SIGHUP replaces the workers one at a time, each old one after its successor serves",
          "[worker_policy]")
{
    fixture f;
    auto p = f.make(2);
    p.manage(f.now);
    f.all_ready(p);
    p.restart_all();

    p.manage(f.now);
    CHECK(f.host.spawned == std::vector<pid_t>{100, 101, 102}); // one replacement
    p.manage(f.now);
    CHECK(f.host.spawned.size() == 3);
    CHECK(f.host.take_signals().empty()); // the old one serves until the new one does

    p.beat(102, true, f.now);
    p.manage(f.now);
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGTERM}});
    CHECK(f.host.spawned == std::vector<pid_t>{100, 101, 102, 103}); // the next one
    p.exited(100, exited_with(0), f.now);

    p.beat(103, true, f.now);
    p.manage(f.now);
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{101, SIGTERM}});
    p.exited(101, exited_with(0), f.now);
    p.manage(f.now);
    CHECK(pids(p) == std::vector<pid_t>{102, 103});
    CHECK(f.host.spawned.size() == 4);
    CHECK(p.restarts().hup == 2);
    CHECK(p.restarts().max_requests == 0);
}

TEST_CASE("worker_policy: a replacement that dies is started again before the old worker goes", "[worker_policy]")
{
    fixture f;
    auto p = f.make(1);
    p.manage(f.now);
    f.all_ready(p);
    p.restart_all();
    p.manage(f.now);
    REQUIRE(f.host.spawned == std::vector<pid_t>{100, 101});
    f.now += 20s;
    p.exited(101, killed_by(SIGKILL), f.now);
    p.manage(f.now);
    CHECK(f.host.spawned == std::vector<pid_t>{100, 101, 102});
    CHECK(f.host.take_signals().empty());
}

TEST_CASE("worker_policy: SIGTTIN adds a worker, SIGTTOU retires the oldest and never the last", "[worker_policy]")
{
    fixture f;
    auto p = f.make(2);
    p.manage(f.now);
    f.now += 1s;
    p.scale(+1);
    p.manage(f.now);
    CHECK(p.target() == 3);
    CHECK(pids(p) == std::vector<pid_t>{100, 101, 102});

    p.scale(-1);
    p.scale(-1);
    p.manage(f.now);
    CHECK(p.target() == 1);
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGTERM}, {101, SIGTERM}});
    p.scale(-1);
    CHECK(p.target() == 1);
    p.exited(100, exited_with(0), f.now);
    p.exited(101, exited_with(0), f.now);
    p.manage(f.now);
    CHECK(pids(p) == std::vector<pid_t>{102});
    CHECK(p.restarts().hup + p.restarts().max_requests + p.restarts().crash == 0); // retired, not replaced
}

TEST_CASE("worker_policy: the watchdog aborts a worker that stopped beating, then kills it", "[worker_policy]")
{
    fixture f;
    auto p = f.make(1);
    p.manage(f.now);

    // Before its first beat a worker has 30 s to build its application.
    f.now += 29s;
    p.watch(f.now);
    CHECK(f.host.take_signals().empty());
    p.beat(100, true, f.now);

    f.now += 5s;
    p.watch(f.now);
    CHECK(f.host.take_signals().empty()); // not over the healthcheck timeout yet
    f.now += 1ms;
    p.watch(f.now);
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGABRT}});
    f.now += 1s;
    p.watch(f.now);
    CHECK(f.host.take_signals().empty());
    f.now += 1s;
    p.watch(f.now);
    CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGKILL}});
    f.now += 10s;
    p.watch(f.now);
    CHECK(f.host.take_signals().empty()); // killed once
    CHECK(p.restarts().watchdog_kills == 1);
    p.exited(100, killed_by(SIGKILL), f.now);
    CHECK(p.restarts().watchdog == 1);
    CHECK(p.restarts().crash == 0);
}

TEST_CASE("worker_policy: each stop signal is harder than the last, and a slow drain is killed at the deadline",
          "[worker_policy]")
{
    fixture f;
    SECTION("SIGTERM, SIGTERM, SIGTERM")
    {
        auto p = f.make(2, 1s);
        p.manage(f.now);
        p.terminate(f.now);
        CHECK(p.stop_state() == worker_policy::stop_mode::graceful);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGTERM}, {101, SIGTERM}});
        p.terminate(f.now);
        CHECK(p.stop_state() == worker_policy::stop_mode::immediate);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGQUIT}, {101, SIGQUIT}});
        p.terminate(f.now);
        p.terminate(f.now);
        CHECK(p.stop_state() == worker_policy::stop_mode::kill);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGKILL}, {101, SIGKILL}});
        CHECK(f.host.stopped_listening == 1);
        CHECK(f.host.notes == std::vector<std::string>{"STOPPING=1"});
    }
    SECTION("SIGQUIT, SIGQUIT")
    {
        auto p = f.make(1);
        p.manage(f.now);
        p.quit(f.now);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGQUIT}});
        p.quit(f.now);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{100, SIGKILL}});
    }
    SECTION("the graceful timeout and two seconds to close")
    {
        auto p = f.make(2, 1s);
        p.manage(f.now);
        auto const start = f.now;
        p.terminate(f.now);
        f.host.take_signals();
        p.exited(100, exited_with(0), f.now);
        p.watch(start + 3s - 1ms);
        CHECK(f.host.take_signals().empty());
        p.watch(start + 3s);
        CHECK(f.host.take_signals() == std::vector<std::pair<pid_t, int>>{{101, SIGKILL}});
        CHECK_FALSE(p.done());
        p.exited(101, killed_by(SIGKILL), f.now);
        CHECK(p.done());
    }
    SECTION("no graceful timeout: the drain may take as long as it takes")
    {
        auto p = f.make(1);
        p.manage(f.now);
        p.terminate(f.now);
        f.host.take_signals();
        p.beat(100, true, f.now + 1h);
        p.watch(f.now + 1h);
        CHECK(f.host.take_signals().empty());
    }
}

TEST_CASE("worker_policy: scaling and SIGHUP are ignored while stopping", "[worker_policy]")
{
    fixture f;
    auto p = f.make(1);
    p.manage(f.now);
    p.terminate(f.now);
    p.scale(+1);
    p.restart_all();
    p.manage(f.now);
    CHECK(p.target() == 1);
    CHECK(f.host.spawned.size() == 1);
}

TEST_CASE("worker_policy: a failed fork is tried again a second later", "[worker_policy]")
{
    fixture f;
    auto p = f.make(1);
    f.host.fail_spawn = true;
    p.manage(f.now);
    CHECK(p.workers().empty());
    f.host.fail_spawn = false;
    p.manage(f.now + 999ms);
    CHECK(p.workers().empty());
    p.manage(f.now + 1s);
    CHECK(pids(p) == std::vector<pid_t>{100});
}

TEST_CASE("worker_policy: describe_wait_status names the exit status or the signal", "[worker_policy]")
{
    CHECK(cserve::detail::describe_wait_status(exited_with(3)) == "exited with status 3");
    CHECK(cserve::detail::describe_wait_status(killed_by(SIGKILL)).starts_with("was killed by signal 9 ("));
}
