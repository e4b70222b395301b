// cserve/detail/websocket/frame.hpp -- RFC 6455 framing without I/O: what received bytes hold
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_WEBSOCKET_FRAME_HPP
#define CSERVE_DETAIL_WEBSOCKET_FRAME_HPP

#include <cserve/detail/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

// The session's reader classifies what arrived (a whole single-frame message it reads
// itself, a ping to answer, a compressed message to inflate, or what Beast reads) and
// unmasks payloads; kept apart from the session so that it can be tested on bytes.
namespace cserve::detail::ws_detail {

// What the received bytes hold, by RFC 6455 §5.2 framing.
struct unit {
    enum kind_type : unsigned char {
        partial,    // nothing to do until more arrives
        ping,       // a whole ping or pong at `offset`, before the end of the message being
        pong,       // received: the session answers it itself and cuts it out
        message,    // a whole message in one frame, as clients mostly send them: FIN, text or
                    // binary, no RSV bit (no permessage-deflate). The session reads it itself:
                    // its header is `head` bytes, its payload the rest of `size`
        compressed, // a whole permessage-deflate message (RSV1 on its first frame, RFC 7692
                    // §6) in the data frames of the first `size` bytes: the session inflates
                    // it itself, as Beast before 1.90 may inflate the end of one without end
        fail,       // a compressed message that must fail the connection with `code`
        beast       // from `offset` (past the fragments of a compressed message), up to
                    // `size`: what Beast can read without waiting: a whole message (with
                    // any control frames between its fragments), a close frame, or up to
                    // the header of a frame Beast refuses on its header alone
    };
    kind_type kind = partial;
    std::size_t offset = 0;
    std::size_t size = 0;
    std::size_t head = 0;        // of a ping or pong: its header size
    std::uint16_t code = 0;      // of a failure: the close code
};

// One frame header (RFC 6455 §5.2).
struct frame_head {
    bool fin = false;
    bool masked = false;
    bool canonical = true; // the shortest length form
    unsigned rsv = 0;      // the RSV bits, in place (0x70)
    unsigned opcode = 0;
    std::uint64_t len = 0;
    std::size_t size = 0;  // of the header, with the masking key
};

// Reads the frame header at `p`; false when the `n` bytes there do not hold all of it.
inline bool
read_head(unsigned char const* p, std::size_t n, frame_head& h) noexcept
{
    if (n < 2)
        return false;
    h.fin = (p[0] & 0x80) != 0;
    h.rsv = p[0] & 0x70;
    h.opcode = p[0] & 0x0f;
    h.masked = (p[1] & 0x80) != 0;
    h.len = p[1] & 0x7f;
    h.size = 2;
    h.canonical = true;
    if (h.len == 126) {
        h.size = 4;
        if (n < h.size)
            return false;
        h.len = (std::uint64_t(p[2]) << 8) | p[3];
        h.canonical = h.len >= 126;
    } else if (h.len == 127) {
        h.size = 10;
        if (n < h.size)
            return false;
        h.len = 0;
        for (std::size_t i = 0; i < 8; ++i)
            h.len = (h.len << 8) | p[2 + i];
        h.canonical = h.len >= 65536;
    }
    if (h.masked)
        h.size += 4;
    return n >= h.size;
}

// `deflate`: permessage-deflate was negotiated, so RSV1 may mark a compressed message.
inline unit
next_unit(unsigned char const* p, std::size_t n, std::uint64_t max_size, bool deflate = false) noexcept
{
    std::size_t pos = 0;
    std::uint64_t message = 0; // payload bytes of the message so far
    bool in_message = false;
    bool compressed = false; // the message so far is a compressed one
    for (;;) {
        frame_head h;
        if (!read_head(p + pos, n - pos, h))
            return {};
        bool const control = (h.opcode & 0x08) != 0;
        auto const head = h.size;
        auto const len = h.len;
        // What Beast refuses on the header (RFC 6455 §5.2, §5.4, §5.5) it gets at once.
        // Inside a compressed message the session fails the connection itself, as Beast
        // never sees those fragments.
        unit const refuse = compressed ? unit{unit::fail, 0, 0, 0, 1002} : unit{unit::beast, 0, pos + head};
        if (!h.masked || (h.rsv & 0x30) != 0 || !h.canonical)
            return refuse;
        if (control) {
            if (!h.fin || h.rsv != 0 || len > 125 || h.opcode > 0xa)
                return refuse;
        } else {
            if (h.opcode > 2 || (h.opcode == 0) != in_message || (h.opcode == 0 && h.rsv != 0))
                return refuse;
            if ((h.rsv & 0x40) != 0 && !deflate) // RSV1 means compressed, and nothing was agreed
                return refuse;
            if (!in_message && deflate && (h.rsv & 0x40) != 0)
                compressed = true;
            if (max_size != 0 && len > max_size - message)
                return compressed ? unit{unit::fail, 0, 0, 0, 1009} : refuse;
        }
        if (len > n - pos - head)
            return {};
        auto const end = pos + head + static_cast<std::size_t>(len);
        if (control) {
            if (h.opcode == 0x8)
                return {unit::beast, compressed ? pos : 0, end};
            return {h.opcode == 0x9 ? unit::ping : unit::pong, pos, end - pos, head};
        }
        if (h.fin && !in_message && h.rsv == 0)
            return {unit::message, 0, end, head};
        message += len;
        in_message = true;
        if (h.fin)
            return {compressed ? unit::compressed : unit::beast, 0, end};
        pos = end;
    }
}

// Whether an application may close with `code` (RFC 6455 §7.4.1, §7.4.2 and the IANA
// registry): 1004 is reserved, 1005, 1006 and 1015 never go on the wire, 1016-2999 are
// for the protocol and its extensions, and above 4999 nothing is defined.
inline constexpr bool
valid_close_code(int code) noexcept
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

// Unmasks a client's payload in place (RFC 6455 §5.3), eight bytes at a time.
inline void
unmask(char* p, std::size_t n, unsigned char const* key) noexcept
{
    std::uint32_t k4;
    std::memcpy(&k4, key, 4);
    std::uint64_t const k8 = (std::uint64_t(k4) << 32) | k4;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t v;
        std::memcpy(&v, p + i, 8);
        v ^= k8;
        std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i)
        p[i] = static_cast<char>(p[i] ^ key[i % 4]);
}

} // namespace cserve::detail::ws_detail

#endif
