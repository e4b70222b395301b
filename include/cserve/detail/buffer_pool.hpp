// cserve/detail/buffer_pool.hpp -- read buffers shared by a thread's connections
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_BUFFER_POOL_HPP
#define CSERVE_DETAIL_BUFFER_POOL_HPP

#include <cserve/detail/config.hpp>

#include <boost/beast/core/flat_buffer.hpp>

#include <cstddef>
#include <new>

namespace cserve::detail {

// The size of a pooled read buffer: a request header up to the default max_header_bytes.
inline constexpr std::size_t read_block = 16 * 1024;

// A connection holds a read buffer only while it has a request to parse; between requests
// the block goes back to its thread's pool, where the next connection with bytes to read
// takes it. So thousands of idle keep-alive connections need no buffers, and a busy one
// reuses a warm block instead of calling malloc.
class buffer_pool {
public:
    static void*
    take()
    {
        auto& p = local();
        if (p.count > 0)
            return p.blocks[--p.count];
        return ::operator new(read_block);
    }

    static void
    give(void* block) noexcept
    {
        auto& p = local();
        if (p.count < capacity)
            p.blocks[p.count++] = block;
        else
            ::operator delete(block);
    }

private:
    static constexpr std::size_t capacity = 32; // at most 512 KiB kept per thread

    struct blocks_t {
        void* blocks[capacity];
        std::size_t count = 0;
        ~blocks_t()
        {
            while (count > 0)
                ::operator delete(blocks[--count]);
        }
    };

    static blocks_t&
    local() noexcept
    {
        static thread_local blocks_t p;
        return p;
    }
};

// The allocator of a connection's read buffer: requests up to read_block get a pooled
// block; bigger ones (request bodies read in larger pieces) come from the heap.
template <class T>
struct pooled_allocator {
    using value_type = T;

    pooled_allocator() = default;
    template <class U>
    pooled_allocator(pooled_allocator<U> const&) noexcept
    {
    }

    T*
    allocate(std::size_t n)
    {
        if (n * sizeof(T) <= read_block)
            return static_cast<T*>(buffer_pool::take());
        return static_cast<T*>(::operator new(n * sizeof(T)));
    }

    void
    deallocate(T* p, std::size_t n) noexcept
    {
        if (n * sizeof(T) <= read_block)
            buffer_pool::give(p);
        else
            ::operator delete(p);
    }

    friend bool
    operator==(pooled_allocator, pooled_allocator) noexcept
    {
        return true;
    }
};

// A connection's read buffer.
using request_buffer = boost::beast::basic_flat_buffer<pooled_allocator<char>>;

} // namespace cserve::detail

#endif
