// cserve/detail/deadline_wheel.hpp -- the deadlines of a server's connections, on one timer
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_DEADLINE_WHEEL_HPP
#define CSERVE_DETAIL_DEADLINE_WHEEL_HPP

#include <cserve/detail/config.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace cserve::detail {

// The kinds of connection deadline. Each has one duration per server, so each list is in
// deadline order by construction.
enum class deadline_kind : unsigned char {
    request_header, ///< config::timeout_request_header: a new connection, a partial header
    keep_alive,     ///< config::timeout_keep_alive: idle between requests, skipping a body
    drain,          ///< drain_grace: an idle connection of a draining server
    linger,         ///< linger_time: a closing connection reading what the peer still sends
    write,          ///< config::timeout_write: a response write that makes no progress
    none,
};

// How long an idle keep-alive connection stays open once the server drains, for a request
// the client sent before it could see the close.
inline constexpr std::chrono::milliseconds drain_grace{100};

// How long a closing connection reads so that its last response is not destroyed by a
// reset (RFC 9112 §9.6).
inline constexpr std::chrono::milliseconds linger_time{2000};

// How much a closing connection reads (for at most linger_time) so that its last response
// is not destroyed by a reset (RFC 9112 §9.6).
inline constexpr std::size_t linger_limit = 4 * 1024 * 1024; // nginx: time-bound only

struct deadline_tag;

// What a connection is to its server's deadline_wheel: its place in one of the lists, and
// the deadline it has there. The wheel owns these fields; the connection reads its epoch.
class deadline_entry
    : public boost::intrusive::list_base_hook<boost::intrusive::tag<deadline_tag>,
                                              boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
public:
    // Changes whenever the deadline is set, cleared or passes: a deadline_passed() for an
    // older epoch (posted before the connection moved on) is stale.
    std::uint32_t deadline_epoch() const noexcept { return epoch_; }

    // The deadline set with `epoch` passed. Called with the wheel's lock held, from the
    // wheel's timer: with `one_thread` the entry is on that thread and may act at once (only
    // on itself: flag and cancel its I/O); otherwise it posts to its own executor.
    virtual void deadline_passed(std::uint32_t epoch, bool one_thread) noexcept = 0;

protected:
    deadline_entry() = default;
    ~deadline_entry() = default;

private:
    friend class deadline_wheel;
    std::chrono::steady_clock::time_point when_ = std::chrono::steady_clock::time_point::max();
    std::uint32_t epoch_ = 0;
    deadline_kind kind_ = deadline_kind::none;
};

// Connection deadlines without a timer per connection: one timer, and a list per deadline
// kind kept in deadline order (every entry of a list has the same duration), as nginx keeps
// its timers. An entry is in at most one list. set/shorten/clear are called on the entry's
// executor; the lists take the mutex only when the io_context has several threads.
class deadline_wheel {
public:
    using clock = std::chrono::steady_clock;

    CSERVE_DECL deadline_wheel(boost::asio::any_io_executor ex, bool multi_threaded) noexcept;

    // The duration of each kind (before any deadline is set).
    CSERVE_DECL void durations(clock::duration request_header, clock::duration keep_alive,
                               clock::duration write = std::chrono::seconds(60)) noexcept;

    // `e`'s deadline is now + the duration of `k`, in place of any it had.
    CSERVE_DECL void set(deadline_entry& e, deadline_kind k) noexcept;
    // As set(), only if that is earlier than the deadline `e` has.
    CSERVE_DECL void shorten(deadline_entry& e, deadline_kind k) noexcept;
    CSERVE_DECL void clear(deadline_entry& e) noexcept;
    // Takes `e` out of the lists for good (it is going away), from any thread.
    CSERVE_DECL void remove(deadline_entry& e) noexcept;

    // Cancels the timer when no deadline is left (the server is done with its connections).
    CSERVE_DECL void stop_if_idle() noexcept;

private:
    // Takes the mutex only when connections run on several threads.
    struct lock {
        std::mutex& m;
        bool locked;
        lock(std::mutex& mutex, bool multi_threaded) noexcept : m(mutex), locked(multi_threaded)
        {
            if (locked)
                m.lock();
        }
        ~lock()
        {
            if (locked)
                m.unlock();
        }
        lock(lock const&) = delete;
        lock& operator=(lock const&) = delete;
    };

    CSERVE_DECL void link(deadline_entry& e, deadline_kind k, clock::time_point when) noexcept;
    CSERVE_DECL void arm(clock::time_point when) noexcept;
    CSERVE_DECL void on_timer(boost::system::error_code ec) noexcept;

    using list = boost::intrusive::list<deadline_entry, boost::intrusive::base_hook<boost::intrusive::list_base_hook<
                                                            boost::intrusive::tag<deadline_tag>,
                                                            boost::intrusive::link_mode<boost::intrusive::auto_unlink>>>,
                                        boost::intrusive::constant_time_size<false>>;

    bool multi_threaded_;
    std::mutex mutex_;
    std::array<list, 5> lists_;
    std::array<clock::duration, 5> durations_{clock::duration::zero(), clock::duration::zero(), drain_grace,
                                              linger_time, std::chrono::seconds(60)};
    boost::asio::steady_timer timer_;
    clock::time_point armed_ = clock::time_point::max();
};

} // namespace cserve::detail

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/deadline_wheel.ipp>
#endif

#endif
