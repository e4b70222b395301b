// tests/unit/deadline_wheel_test.cpp -- connection deadlines on one timer
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/deadline_wheel.hpp>

#include "catch.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <string>
#include <vector>

using cserve::detail::deadline_kind;
using cserve::detail::deadline_wheel;
using namespace std::chrono_literals;

namespace {

struct passed {
    std::string name;
    std::uint32_t epoch;
    bool current; // the epoch was the entry's own when it passed
    std::chrono::steady_clock::time_point at;
};

struct entry final : cserve::detail::deadline_entry {
    std::string name;
    std::vector<passed>* log;

    entry(std::string n, std::vector<passed>& l) : name(std::move(n)), log(&l) {}

    void
    deadline_passed(std::uint32_t epoch, bool one_thread) noexcept override
    {
        CHECK(one_thread);
        log->push_back({name, epoch, epoch == deadline_epoch(), std::chrono::steady_clock::now()});
    }
};

} // namespace

TEST_CASE("deadline_wheel: each deadline passes once, after its kind's duration; cleared ones never",
          "[deadline_wheel]")
{
    boost::asio::io_context ioc(1);
    deadline_wheel wheel(ioc.get_executor(), false);
    wheel.durations(30ms, 60ms); // request_header, keep_alive; drain is 100 ms, linger 2 s
    std::vector<passed> log;
    entry header("header", log), keep("keep-alive", log), cleared("cleared", log), kept_longer("kept", log),
        shortened("shortened", log), moved("moved", log);

    auto const start = std::chrono::steady_clock::now();
    wheel.set(header, deadline_kind::request_header);
    wheel.set(keep, deadline_kind::keep_alive);
    wheel.set(cleared, deadline_kind::request_header);
    wheel.clear(cleared);
    // shorten() only ever brings a deadline forward.
    wheel.set(kept_longer, deadline_kind::keep_alive);
    wheel.shorten(kept_longer, deadline_kind::drain);
    wheel.set(shortened, deadline_kind::linger);
    wheel.shorten(shortened, deadline_kind::drain);
    // set() replaces the deadline an entry had: the old one does not pass.
    wheel.set(moved, deadline_kind::request_header);
    auto const first_epoch = moved.deadline_epoch();
    wheel.set(moved, deadline_kind::keep_alive);
    CHECK(moved.deadline_epoch() != first_epoch);

    ioc.run(); // returns once no deadline is left: the timer is not armed again

    std::vector<std::string> order;
    for (auto const& p : log) {
        order.push_back(p.name);
        CHECK(p.current);
    }
    // request_header (30 ms), then keep_alive (60 ms) in the order they were set, then drain.
    CHECK(order == std::vector<std::string>{"header", "keep-alive", "kept", "moved", "shortened"});
    auto after = [&](std::string const& name) {
        for (auto const& p : log)
            if (p.name == name)
                return p.at - start;
        return std::chrono::steady_clock::duration::max();
    };
    CHECK(after("header") >= 30ms);
    CHECK(after("keep-alive") >= 60ms);
    CHECK(after("kept") >= 60ms);
    CHECK(after("shortened") >= 100ms);
    CHECK(after("shortened") < 2s); // drain's 100 ms, not linger's 2 s
}

TEST_CASE("deadline_wheel: stop_if_idle cancels the timer once no deadline is left", "[deadline_wheel]")
{
    boost::asio::io_context ioc(1);
    deadline_wheel wheel(ioc.get_executor(), false);
    std::vector<passed> log;
    entry e("linger", log);
    wheel.set(e, deadline_kind::linger); // 2 s
    wheel.stop_if_idle();                 // one is left: the timer stays
    CHECK(ioc.poll() == 0);
    wheel.remove(e);
    wheel.stop_if_idle();
    CHECK(ioc.poll() == 1); // the cancelled wait completed at once, 2 s early
    CHECK(ioc.stopped());   // and nothing is left to wait for
    CHECK(log.empty());
}
