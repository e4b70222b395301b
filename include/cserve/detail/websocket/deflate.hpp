// cserve/detail/websocket/deflate.hpp -- permessage-deflate (RFC 7692) without I/O
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_WEBSOCKET_DEFLATE_HPP
#define CSERVE_DETAIL_WEBSOCKET_DEFLATE_HPP

#include <cserve/detail/config.hpp>

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cserve::detail {

// What the opening handshake agreed for one direction of permessage-deflate (RFC 7692
// §7.1): the window the sender compresses with, and whether it starts every message
// afresh. For the client's messages these are client_max_window_bits and
// client_no_context_takeover, for the server's the server_ ones.
struct ws_deflate_params {
    int window_bits = 15; // 8..15
    bool no_context_takeover = false;
};

// Inflates the messages of one connection, one payload piece at a time, with zlib.
//
// It exists because Beast (before 1.90) feeds the `00 00 ff ff` tail of a message again on
// every turn whose output buffer fills, which makes some inputs inflate without end or
// grow by bytes never sent. Here the tail goes in once, and the output stops growing as
// soon as it passes the limit: a small frame cannot make the server inflate more than
// the limit. The window is kept between messages unless the client gave up context
// takeover.
class ws_inflater {
public:
    enum class result : unsigned char {
        ok,
        too_big,  // the message inflates to more than the limit: close with 1009
        bad_data, // not a DEFLATE stream that ends where a message must: close with 1007
    };

    explicit ws_inflater(ws_deflate_params p = {}) noexcept : params_(p) {}
    ws_inflater(ws_inflater const&) = delete;
    ws_inflater& operator=(ws_inflater const&) = delete;
    ~ws_inflater()
    {
        if (ready_)
            ::inflateEnd(&z_);
    }

    /** Inflates `in`, the next piece of a message's payload (unmasked), appending to `out`.

        `last` marks the message's final piece: the empty block the sender removed is
        appended (RFC 7692 §7.2.2), and the message must then end on a block boundary.
        Once `out` holds more than `max_size` bytes (0: no limit) the result is too_big;
        `out` then holds at most max_size + 1 bytes. After too_big or bad_data the
        inflater must not be used again.
    */
    result write(std::string_view in, bool last, std::string& out, std::size_t max_size)
    {
        if (!ready_) {
            // zlib refuses a raw window of 8 bits; a larger window inflates the same data.
            if (::inflateInit2(&z_, -std::max(params_.window_bits, 9)) != Z_OK)
                return result::bad_data;
            ready_ = true;
        }
        if (auto r = feed(in, false, out, max_size); r != result::ok)
            return r;
        started_ = started_ || !in.empty();
        if (!last)
            return result::ok;
        bool const empty = !started_;
        started_ = false;
        if (fresh_ || empty) {
            // The payload ended with a final block: nothing is left to flush. Or it is
            // empty, which some senders send for an empty message instead of RFC 7692
            // §7.2.3.6's single 00 byte: there is nothing to flush either.
            if (params_.no_context_takeover)
                reset(false);
            return result::ok;
        }
        static constexpr unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
        auto r = feed(std::string_view(reinterpret_cast<char const*>(tail), sizeof tail), true, out, max_size);
        if (r != result::ok)
            return r;
        // RFC 7692 §7.2.1: a message ends with a flushed block, so with its tail the data
        // ends where a block does. Anything else is data cut off (the tail would be read
        // as part of a block, and the next message would continue it).
        if (!at_boundary_)
            return result::bad_data;
        if (params_.no_context_takeover)
            reset(false);
        return result::ok;
    }

private:
    result feed(std::string_view in, bool is_tail, std::string& out, std::size_t max_size)
    {
        constexpr std::size_t step = 16 * 1024;
        z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
        z_.avail_in = static_cast<uInt>(in.size());
        bool full = false; // the last turn filled its output: zlib may hold more
        while (z_.avail_in > 0 || full) {
            // Offer only what the limit allows, and one byte more to see it passed.
            auto room = step;
            if (max_size != 0)
                room = std::min(room, max_size + 1 - std::min(out.size(), max_size + 1));
            if (room == 0)
                return result::too_big;
            auto const before = out.size();
            out.resize(before + room);
            z_.next_out = reinterpret_cast<Bytef*>(out.data() + before);
            z_.avail_out = static_cast<uInt>(room);
            int const rc = ::inflate(&z_, Z_SYNC_FLUSH);
            out.resize(before + room - z_.avail_out);
            if (max_size != 0 && out.size() > max_size)
                return result::too_big;
            full = z_.avail_out == 0;
            fresh_ = false;
            if (rc == Z_STREAM_END) {
                // A block marked final (BFINAL, RFC 7692 §7.2.3.3) ends the DEFLATE
                // stream; what follows in the message starts a new one, with the same
                // window unless context takeover is off. What is left of the appended
                // tail only flushes the stream that just ended.
                reset(!params_.no_context_takeover);
                if (is_tail)
                    return result::ok;
                full = false;
                continue;
            }
            if (rc == Z_BUF_ERROR)
                break; // no progress possible: all input taken, nothing more to write
            if (rc != Z_OK)
                return result::bad_data;
            at_boundary_ = (z_.data_type & 128) != 0;
        }
        return result::ok;
    }

    // Starts a new DEFLATE stream, keeping the window when the sender may refer to it.
    void reset(bool keep_window)
    {
        std::array<Bytef, 32768> window;
        uInt size = 0;
        if (keep_window)
            ::inflateGetDictionary(&z_, window.data(), &size);
        ::inflateReset(&z_);
        if (size != 0)
            ::inflateSetDictionary(&z_, window.data(), size);
        at_boundary_ = true;
        fresh_ = true;
    }

    ws_deflate_params params_;
    z_stream z_{};
    bool ready_ = false;
    bool at_boundary_ = true; // the data so far ends where a block ends
    bool fresh_ = false;      // a final block ended the stream, and nothing came after it
    bool started_ = false;    // the message being inflated has payload bytes
};

// Compresses the messages the server sends on one connection, each into the payload of a
// single frame (Beast's own writer cuts a compressed message into frames of its write
// buffer's size).
//
// zlib's raw deflate has no 256-byte window: the window bits must be 9 or more.
class ws_deflater {
public:
    ws_deflater(ws_deflate_params p, int level, int mem_level) noexcept
        : params_(p), level_(level), mem_level_(mem_level)
    {
    }
    ws_deflater(ws_deflater const&) = delete;
    ws_deflater& operator=(ws_deflater const&) = delete;
    ~ws_deflater()
    {
        if (ready_)
            ::deflateEnd(&z_);
    }

    /** Replaces `out` with `in` compressed as RFC 7692 §7.2.1 says: flushed, without the
        `00 00 ff ff` tail. Returns false if zlib fails (out of memory).
    */
    bool write(std::string_view in, std::string& out)
    {
        if (!ready_) {
            if (::deflateInit2(&z_, level_, Z_DEFLATED, -params_.window_bits, mem_level_, Z_DEFAULT_STRATEGY) != Z_OK)
                return false;
            ready_ = true;
        }
        // deflateBound covers a whole stream; the flush adds an empty stored block.
        out.resize(::deflateBound(&z_, static_cast<uLong>(in.size())) + 16);
        z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
        z_.avail_in = static_cast<uInt>(in.size());
        std::size_t used = 0;
        for (;;) {
            z_.next_out = reinterpret_cast<Bytef*>(out.data() + used);
            z_.avail_out = static_cast<uInt>(out.size() - used);
            int const rc = ::deflate(&z_, Z_SYNC_FLUSH);
            used = out.size() - z_.avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return false;
            if (z_.avail_out != 0 && z_.avail_in == 0)
                break;
            out.resize(out.size() * 2);
        }
        out.resize(used);
        // Nothing since the last flush gives no output at all: the message is then the
        // header of an empty stored block, which the tail completes (RFC 7692 §7.2.3.6).
        if (out.empty())
            out.push_back('\0');
        if (out.size() >= 4 && out.ends_with(std::string_view("\x00\x00\xff\xff", 4)))
            out.resize(out.size() - 4);
        if (params_.no_context_takeover)
            ::deflateReset(&z_);
        return true;
    }

private:
    ws_deflate_params params_;
    int level_;
    int mem_level_;
    z_stream z_{};
    bool ready_ = false;
};

} // namespace cserve::detail

#endif
