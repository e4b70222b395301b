// cserve/impl/process/worker_policy.ipp -- the master's decisions about its workers
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_PROCESS_WORKER_POLICY_IPP
#define CSERVE_IMPL_PROCESS_WORKER_POLICY_IPP

#include <cserve/detail/process/worker_policy.hpp>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <string>

#include <sys/wait.h>

namespace cserve::detail {

std::string
describe_wait_status(int st)
{
    if (WIFSIGNALED(st)) {
        char const* name = ::strsignal(WTERMSIG(st));
        return std::string("was killed by signal ") + std::to_string(WTERMSIG(st)) + " (" + (name ? name : "?") + ")";
    }
    return "exited with status " + std::to_string(WEXITSTATUS(st));
}

worker_policy::worker_policy(worker_host& host, logger const& log, settings s)
    : host_(host)
    , log_(log)
    , settings_(s)
    , target_(std::max<std::size_t>(s.workers, 1))
{
}

std::size_t
worker_policy::active() const noexcept
{
    return static_cast<std::size_t>(
        std::count_if(workers_.begin(), workers_.end(), [](worker const& w) { return !w.retiring; }));
}

worker_policy::worker*
worker_policy::find(pid_t pid) noexcept
{
    auto it = std::find_if(workers_.begin(), workers_.end(), [pid](worker const& w) { return w.pid == pid; });
    return it == workers_.end() ? nullptr : &*it;
}

void
worker_policy::retire(worker& w)
{
    if (w.retiring)
        return;
    w.retiring = true;
    host_.signal(w.pid, SIGTERM);
}

pid_t
worker_policy::spawn(clock::time_point now)
{
    pid_t pid = host_.spawn();
    if (pid <= 0) {
        next_spawn_ = now + std::chrono::seconds(1);
        return 0;
    }
    worker w;
    w.pid = pid;
    w.started = w.last_beat = now;
    workers_.push_back(w);
    return pid;
}

void
worker_policy::manage(clock::time_point now)
{
    if (stopping())
        return;
    if (replacement_) {
        worker* n = find(replacement_);
        if (!n) {
            // It died before it served: the old worker is still to be replaced.
            rolling_.insert(rolling_.begin(), replaced_);
            replacement_ = 0;
        } else if (n->ready) {
            if (worker* old = find(replaced_)) {
                old->replaced = !old->retiring;
                retire(*old);
            }
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
            if (pid_t n = spawn(now)) {
                rolling_.erase(rolling_.begin());
                replaced_ = pid;
                replacement_ = n;
            }
            break;
        }
    }
    std::size_t effective = active() - (replacement_ ? 1 : 0);
    while (effective < target_ && now >= next_spawn_) {
        if (!spawn(now))
            break;
        ++effective;
    }
    if (effective > target_ && !replacement_) {
        // Scale down: the oldest go first, as gunicorn does.
        std::vector<worker*> order;
        for (auto& w : workers_)
            if (!w.retiring)
                order.push_back(&w);
        std::stable_sort(order.begin(), order.end(), [](worker* a, worker* b) { return a->started < b->started; });
        for (std::size_t i = 0; i < effective - target_; ++i) {
            log_.log(log_level::info, "Stopping worker [" + std::to_string(order[i]->pid) + "]");
            retire(*order[i]);
        }
    }
    if (!announced_ready_ &&
        static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(), [](worker const& w) { return w.ready; })) >=
            target_) {
        announced_ready_ = true;
        host_.notify("READY=1");
    }
}

void
worker_policy::beat(pid_t pid, bool ready, clock::time_point now)
{
    worker* w = find(pid);
    if (!w)
        return;
    w->last_beat = now;
    w->beating = true;
    if (ready && !w->ready) {
        w->ready = true;
        log_.log(log_level::debug, "Worker [" + std::to_string(pid) + "] is serving");
    }
}

void
worker_policy::exited(pid_t pid, int st, clock::time_point now)
{
    auto it = std::find_if(workers_.begin(), workers_.end(), [pid](worker const& w) { return w.pid == pid; });
    if (it == workers_.end())
        return;
    worker const w = *it;
    workers_.erase(it);

    auto const who = "Worker [" + std::to_string(w.pid) + "] ";
    bool const clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (stopping() || w.retiring) {
        log_.log(clean ? log_level::info : log_level::warning, who + describe_wait_status(st));
        if (!stopping() && w.replaced)
            ++restarts_.hup;
        return;
    }
    if (w.aborted)
        ++restarts_.watchdog;
    if (WIFEXITED(st) && (WEXITSTATUS(st) == exit_startup_failed || WEXITSTATUS(st) == exit_load_failed)) {
        log_.log(log_level::critical, who + "failed to boot; stopping");
        status_ = WEXITSTATUS(st) == exit_startup_failed ? exit_startup_failed : 1;
        begin_stop(stop_mode::graceful, now);
        return;
    }
    if (clean) {
        // It served its --limit-max-requests, or its master was thought gone: replace it.
        log_.log(log_level::info, who + "exited; starting a new one");
        ++restarts_.max_requests;
        return;
    }
    if (!w.aborted)
        ++restarts_.crash;
    // A crash: start a new one, backing off while they keep dying young so that a crash
    // loop does not become a fork bomb.
    auto lived = now - w.started;
    crashes_ = lived >= std::chrono::seconds(10) ? 1 : crashes_ + 1;
    auto delay = crashes_ <= 1 ? std::chrono::milliseconds(0)
                               : std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100 << std::min(crashes_ - 2, 7)),
                                                                     std::chrono::seconds(10));
    next_spawn_ = std::max(next_spawn_, now + delay);
    log_.log(log_level::error, who + describe_wait_status(st) +
                                   (delay.count() ? "; starting a new one in " + std::to_string(delay.count()) + " ms"
                                                  : "; starting a new one"));
}

void
worker_policy::watch(clock::time_point now)
{
    auto const timeout = settings_.healthcheck;
    // Before its loop first runs a worker builds its app; give that longer.
    auto const boot = std::max<std::chrono::milliseconds>(timeout, std::chrono::seconds(30));
    for (auto& w : workers_) {
        if (w.killed)
            continue;
        if (w.aborted) {
            if (now - *w.aborted >= std::chrono::seconds(2)) {
                host_.signal(w.pid, SIGKILL);
                w.killed = true;
            }
            continue;
        }
        if (now - w.last_beat > (w.beating ? timeout : boot)) {
            log_.log(log_level::critical, "WORKER TIMEOUT (pid:" + std::to_string(w.pid) +
                                              "): its event loop has been blocked for over " +
                                              std::to_string(timeout.count()) + " ms; aborting it");
            host_.signal(w.pid, SIGABRT);
            w.aborted = now;
            ++restarts_.watchdog_kills;
        }
    }
    if (stopping() && now >= deadline_ &&
        std::any_of(workers_.begin(), workers_.end(), [](worker const& w) { return !w.killed; })) {
        log_.log(log_level::warning, "Killing " + std::to_string(workers_.size()) + " workers that did not stop in time");
        kill_all();
    }
}

void
worker_policy::terminate(clock::time_point now)
{
    begin_stop(stopping() ? stop_mode(static_cast<int>(stopping_) + 1) : stop_mode::graceful, now);
}

void
worker_policy::quit(clock::time_point now)
{
    begin_stop(stopping_ >= stop_mode::immediate ? stop_mode::kill : stop_mode::immediate, now);
}

void
worker_policy::restart_all()
{
    if (stopping())
        return;
    log_.log(log_level::info, "Handling signal: hup; restarting " + std::to_string(active()) + " workers");
    rolling_.clear();
    for (auto const& w : workers_)
        if (!w.retiring && w.pid != replacement_)
            rolling_.push_back(w.pid);
}

void
worker_policy::scale(int delta)
{
    if (stopping())
        return;
    if (delta > 0) {
        ++target_;
        log_.log(log_level::info, "Handling signal: ttin; workers: " + std::to_string(target_));
    } else {
        if (target_ > 1)
            --target_;
        log_.log(log_level::info, "Handling signal: ttou; workers: " + std::to_string(target_));
    }
}

void
worker_policy::begin_stop(stop_mode mode, clock::time_point now)
{
    if (mode > stop_mode::kill)
        mode = stop_mode::kill;
    if (!stopping()) {
        host_.notify("STOPPING=1");
        // New connections are refused from now on: nobody else holds the listeners once
        // the workers close theirs.
        host_.stop_listening();
    }
    stopping_ = mode;
    switch (mode) {
    case stop_mode::graceful:
        log_.log(log_level::info, "Shutting down: draining " + std::to_string(workers_.size()) + " workers");
        // The workers cancel what still runs at the graceful timeout; after that and a
        // moment to close, they are killed.
        deadline_ = settings_.graceful_timeout ? now + *settings_.graceful_timeout + std::chrono::seconds(2)
                                               : clock::time_point::max();
        for (auto& w : workers_) {
            w.retiring = true;
            host_.signal(w.pid, SIGTERM);
        }
        break;
    case stop_mode::immediate:
        log_.log(log_level::info, "Shutting down now");
        deadline_ = now + std::chrono::seconds(2);
        for (auto& w : workers_) {
            w.retiring = true;
            host_.signal(w.pid, SIGQUIT);
        }
        break;
    case stop_mode::kill:
    case stop_mode::none:
        kill_all();
        break;
    }
}

void
worker_policy::kill_all()
{
    for (auto& w : workers_) {
        if (!w.killed)
            host_.signal(w.pid, SIGKILL);
        w.killed = true;
        w.retiring = true;
    }
}

} // namespace cserve::detail

#endif
