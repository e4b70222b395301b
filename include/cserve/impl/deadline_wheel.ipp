// cserve/impl/deadline_wheel.ipp -- the deadlines of a server's connections
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_DEADLINE_WHEEL_IPP
#define CSERVE_IMPL_DEADLINE_WHEEL_IPP

#include <cserve/detail/deadline_wheel.hpp>

#include <algorithm>
#include <utility>

namespace cserve::detail {

deadline_wheel::deadline_wheel(boost::asio::any_io_executor ex, bool multi_threaded) noexcept
    : multi_threaded_(multi_threaded)
    , timer_(std::move(ex))
{
}

void
deadline_wheel::durations(clock::duration request_header, clock::duration keep_alive, clock::duration write) noexcept
{
    durations_[static_cast<std::size_t>(deadline_kind::write)] = write;
    durations_[static_cast<std::size_t>(deadline_kind::request_header)] = request_header;
    durations_[static_cast<std::size_t>(deadline_kind::keep_alive)] = keep_alive;
}

void
deadline_wheel::link(deadline_entry& e, deadline_kind k, clock::time_point when) noexcept
{
    e.unlink();
    lists_[static_cast<std::size_t>(k)].push_back(e);
    e.when_ = when;
    e.kind_ = k;
    ++e.epoch_;
    // Lazily: a timer armed earlier fires, finds this deadline still ahead and re-arms.
    if (when < armed_)
        arm(when);
}

void
deadline_wheel::set(deadline_entry& e, deadline_kind k) noexcept
{
    auto const when = clock::now() + durations_[static_cast<std::size_t>(k)];
    lock l(mutex_, multi_threaded_);
    link(e, k, when);
}

void
deadline_wheel::shorten(deadline_entry& e, deadline_kind k) noexcept
{
    auto const when = clock::now() + durations_[static_cast<std::size_t>(k)];
    lock l(mutex_, multi_threaded_);
    if (e.kind_ == deadline_kind::none || when < e.when_)
        link(e, k, when);
}

void
deadline_wheel::clear(deadline_entry& e) noexcept
{
    if (e.kind_ == deadline_kind::none)
        return; // only ever set and cleared on the entry's own executor
    lock l(mutex_, multi_threaded_);
    e.unlink();
    e.kind_ = deadline_kind::none;
    e.when_ = clock::time_point::max();
    ++e.epoch_;
}

void
deadline_wheel::remove(deadline_entry& e) noexcept
{
    lock l(mutex_, multi_threaded_);
    e.unlink();
}

void
deadline_wheel::arm(clock::time_point when) noexcept
{
    armed_ = when;
    timer_.expires_at(when);
    timer_.async_wait([this](boost::system::error_code ec) { on_timer(ec); });
}

void
deadline_wheel::stop_if_idle() noexcept
{
    lock l(mutex_, multi_threaded_);
    bool const empty = std::all_of(lists_.begin(), lists_.end(), [](list const& x) { return x.empty(); });
    if (empty && armed_ != clock::time_point::max()) {
        armed_ = clock::time_point::max();
        timer_.cancel();
    }
}

void
deadline_wheel::on_timer(boost::system::error_code ec) noexcept
{
    if (ec == boost::asio::error::operation_aborted)
        return; // re-armed or stopped; `this` may be gone
    lock l(mutex_, multi_threaded_);
    armed_ = clock::time_point::max();
    auto const now = clock::now();
    auto next = clock::time_point::max();
    for (auto& x : lists_) {
        while (!x.empty() && x.front().when_ <= now) {
            auto& e = x.front();
            x.pop_front();
            e.kind_ = deadline_kind::none;
            e.when_ = clock::time_point::max();
            // One thread: the entry only flags itself and cancels its I/O (completions are
            // posted), so the lists are not touched meanwhile.
            e.deadline_passed(e.epoch_, !multi_threaded_);
        }
        if (!x.empty())
            next = std::min(next, x.front().when_);
    }
    if (next != clock::time_point::max())
        arm(next);
}

} // namespace cserve::detail

#endif
