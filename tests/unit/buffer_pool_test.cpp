// tests/unit/buffer_pool_test.cpp -- a thread's pool of read blocks and the allocator over it
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/buffer_pool.hpp>

#include "catch.hpp"

#include <algorithm>
#include <thread>
#include <vector>

using cserve::detail::buffer_pool;
using cserve::detail::pooled_allocator;
using cserve::detail::read_block;

TEST_CASE("buffer_pool: a block given back is the next one taken", "[buffer_pool]")
{
    void* a = buffer_pool::take();
    void* b = buffer_pool::take();
    buffer_pool::give(a);
    buffer_pool::give(b);
    CHECK(buffer_pool::take() == b); // LIFO: the warmest first
    CHECK(buffer_pool::take() == a);
    buffer_pool::give(a);
    buffer_pool::give(b);
}

TEST_CASE("buffer_pool: a thread keeps at most 32 blocks", "[buffer_pool]")
{
    std::vector<void*> blocks;
    for (int i = 0; i < 40; ++i)
        blocks.push_back(buffer_pool::take());
    for (void* b : blocks)
        buffer_pool::give(b); // the last 8 are freed: the pool is full
    std::vector<void*> again;
    for (int i = 0; i < 33; ++i)
        again.push_back(buffer_pool::take());
    // The pool serves the 32 it kept, last given first; the 33rd take is a fresh allocation
    // (possibly at the address of one of the 8 freed blocks, but never one of the 32 kept).
    for (int i = 0; i < 32; ++i)
        CHECK(again[i] == blocks[31 - i]);
    CHECK(std::find(blocks.begin(), blocks.begin() + 32, again[32]) == blocks.begin() + 32);
    for (void* b : again)
        buffer_pool::give(b);
}

TEST_CASE("buffer_pool: each thread has its own pool", "[buffer_pool]")
{
    void* mine = buffer_pool::take();
    buffer_pool::give(mine);
    void* theirs = nullptr;
    std::thread([&] {
        theirs = buffer_pool::take();
        buffer_pool::give(theirs);
    }).join();
    CHECK(theirs != mine);
    CHECK(buffer_pool::take() == mine);
    buffer_pool::give(mine);
}

TEST_CASE("buffer_pool: pooled_allocator pools read-sized blocks and allocates bigger ones", "[buffer_pool]")
{
    pooled_allocator<char> alloc;
    char* small = alloc.allocate(read_block);
    alloc.deallocate(small, read_block);
    CHECK(buffer_pool::take() == small); // it went back to the pool
    buffer_pool::give(small);

    char* big = alloc.allocate(read_block + 1);
    alloc.deallocate(big, read_block + 1);
    void* next = buffer_pool::take();
    CHECK(next == small); // the big block did not enter the pool
    buffer_pool::give(next);
}
