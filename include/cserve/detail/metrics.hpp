// cserve/detail/metrics.hpp -- a server's counters, one shard per thread, no locks to count
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_METRICS_HPP
#define CSERVE_DETAIL_METRICS_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/exchange.hpp>
#include <cserve/metrics.hpp>
#include <cserve/scope.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace cserve::detail {

static_assert(std::is_trivially_copyable_v<server_metrics>);
static_assert(sizeof(server_metrics) % sizeof(std::uint64_t) == 0, "server_metrics is made of 64-bit fields");

// The figures of one server. Each thread that counts gets a shard of its own (a
// server_metrics on its own cache lines) and is its only writer: a count is a relaxed load
// and store, no read-modify-write and no lock. metrics() reads every shard with relaxed
// loads and adds them up; a gauge raised on one thread and lowered on another sums right.
class metrics_registry {
public:
    metrics_registry() noexcept : id_(next_id()) {}
    metrics_registry(metrics_registry const&) = delete;
    metrics_registry& operator=(metrics_registry const&) = delete;

    // This thread's shard.
    server_metrics&
    local()
    {
        thread_local cache c;
        if (c.id == id_)
            return *c.shard;
        return attach(c);
    }

    template <class Int>
    static void
    add(Int& field, Int n) noexcept
    {
        std::atomic_ref<Int> r(field);
        r.store(r.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }

    // The sum of the shards.
    server_metrics
    snapshot() const
    {
        constexpr std::size_t words = sizeof(server_metrics) / sizeof(std::uint64_t);
        std::uint64_t sum[words] = {};
        std::lock_guard lock(mutex_);
        for (auto const& s : shards_) {
            // Every field is a 64-bit integer; signed gauges add up modulo 2^64 as unsigned.
            auto* w = reinterpret_cast<std::uint64_t*>(&s->m);
            for (std::size_t i = 0; i < words; ++i)
                sum[i] += std::atomic_ref<std::uint64_t>(w[i]).load(std::memory_order_relaxed);
        }
        server_metrics out;
        std::memcpy(&out, sum, sizeof out);
        return out;
    }

private:
    struct alignas(64) shard {
        std::thread::id owner;
        server_metrics m;
    };
    struct cache {
        std::uint64_t id = 0;
        server_metrics* shard = nullptr;
    };

    static std::uint64_t
    next_id() noexcept
    {
        static std::atomic<std::uint64_t> n{0};
        return ++n;
    }

    server_metrics&
    attach(cache& c)
    {
        std::lock_guard lock(mutex_);
        auto const self = std::this_thread::get_id();
        shard* mine = nullptr;
        for (auto& s : shards_)
            if (s->owner == self)
                mine = s.get();
        if (!mine) {
            shards_.push_back(std::make_unique<shard>());
            mine = shards_.back().get();
            mine->owner = self;
        }
        c.id = id_;
        c.shard = &mine->m;
        return mine->m;
    }

    std::uint64_t const id_; // never reused, unlike an address
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<shard>> shards_;
};

// One request, from the end of its head to the end of its response: counted when it ends
// (end(), or its destruction: a connection that failed), by method and status class.
class request_meter {
public:
    using clock = std::chrono::steady_clock;

    request_meter() = default;
    request_meter(request_meter const&) = delete;
    request_meter& operator=(request_meter const&) = delete;
    ~request_meter() { end(); }

    void
    begin(metrics_registry& r, scope const& s, exchange const& x)
    {
        end();
        r_ = &r;
        s_ = &s;
        x_ = &x;
        start_ = clock::now();
        metrics_registry::add<std::int64_t>(r.local().active_requests, 1);
    }

    // Not a request after all (a WebSocket handshake, an h2c upgrade whose stream counts it).
    void
    cancel() noexcept
    {
        if (r_)
            metrics_registry::add<std::int64_t>(r_->local().active_requests, -1);
        r_ = nullptr;
    }

    void
    end() noexcept
    {
        if (!r_)
            return;
        auto& m = r_->local();
        auto const ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - start_).count());
        std::size_t b = 0;
        while (b < server_metrics::duration_bounds.size() && ns > bound_ns(b))
            ++b;
        metrics_registry::add<std::uint64_t>(m.duration_buckets[b], 1);
        metrics_registry::add<std::uint64_t>(m.duration_nanoseconds, ns);
        int const status = x_->status();
        metrics_registry::add<std::uint64_t>(
            m.requests[server_metrics::method_index(s_->method)][server_metrics::status_index(status)], 1);
        metrics_registry::add<std::uint64_t>(m.request_body_bytes, x_->received());
        metrics_registry::add<std::uint64_t>(m.response_body_bytes, x_->sent());
        metrics_registry::add<std::int64_t>(m.active_requests, -1);
        r_ = nullptr;
    }

private:
    static constexpr std::uint64_t
    bound_ns(std::size_t i) noexcept
    {
        return static_cast<std::uint64_t>(server_metrics::duration_bounds[i] * 1e9);
    }

    metrics_registry* r_ = nullptr;
    scope const* s_ = nullptr;
    exchange const* x_ = nullptr;
    clock::time_point start_;
};

// A WebSocket counted as open from its handshake until this goes.
class websocket_gauge {
public:
    websocket_gauge() = default;
    websocket_gauge(websocket_gauge const&) = delete;
    websocket_gauge& operator=(websocket_gauge const&) = delete;
    ~websocket_gauge()
    {
        if (r_)
            metrics_registry::add<std::int64_t>(r_->local().active_websocket_connections, -1);
    }

    void
    open(metrics_registry& r)
    {
        if (r_)
            return;
        r_ = &r;
        auto& m = r.local();
        metrics_registry::add<std::uint64_t>(m.websocket_connections, 1);
        metrics_registry::add<std::int64_t>(m.active_websocket_connections, 1);
    }

private:
    metrics_registry* r_ = nullptr;
};

} // namespace cserve::detail

#endif
