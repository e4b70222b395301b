// cserve/impl/http1/request_state.ipp -- the per-thread cache of request_states
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_HTTP1_REQUEST_STATE_IPP
#define CSERVE_IMPL_HTTP1_REQUEST_STATE_IPP

#include <cserve/detail/http1/connection.hpp>

#include <string>

namespace cserve::detail {

namespace http1 {

// How many request_states a thread keeps for its connections' next requests.
inline constexpr std::size_t state_cache_size = 16;

// What a cached request_state may keep of the capacity a big request gave it.
inline constexpr std::size_t state_keep_bytes = 4096;
inline constexpr std::size_t state_keep_items = 64;

// A thread's cache of request_states (LIFO: the warmest first).
struct state_cache {
    request_state* items[state_cache_size];
    std::size_t count = 0;

    ~state_cache()
    {
        while (count > 0)
            delete items[--count];
    }
};

inline state_cache&
local_states() noexcept
{
    static thread_local state_cache c;
    return c;
}

} // namespace http1

//------------------------------------------------------------------------------

request_state::ptr
request_state::take()
{
    auto& c = http1::local_states();
    if (c.count > 0)
        return ptr(c.items[--c.count]);
    return ptr(new request_state);
}

void
request_state::recycle::operator()(request_state* r) const noexcept
{
    // What the next user does not reset itself; big capacities do not stay in the cache.
    r->in.clear();
    r->in.shrink_to_fit(); // the read block goes back to buffer_pool
    r->parser.reset();
    r->body = {};
    r->out.clear();
    r->scope.state.clear();
    if (r->head.capacity() > http1::state_keep_bytes)
        std::string().swap(r->head);
    if (r->out.capacity() > http1::state_keep_bytes)
        std::string().swap(r->out);
    if (r->scope.path.capacity() > http1::state_keep_bytes)
        std::string().swap(r->scope.path);
    if (r->scope.raw_path.capacity() > http1::state_keep_bytes)
        std::string().swap(r->scope.raw_path);
    if (r->scope.headers.capacity() > http1::state_keep_items)
        decltype(r->scope.headers)().swap(r->scope.headers);
    if (r->head_info.fields.capacity() > http1::state_keep_items)
        decltype(r->head_info.fields)().swap(r->head_info.fields);
    auto& c = http1::local_states();
    if (c.count < http1::state_cache_size)
        c.items[c.count++] = r;
    else
        delete r;
}

} // namespace cserve::detail

#endif
