// cserve/detail/boost_compat.hpp -- every use of Asio's and Beast's internals, and what differs
// between the Boost releases cserve supports
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_BOOST_COMPAT_HPP
#define CSERVE_DETAIL_BOOST_COMPAT_HPP

#include <cserve/detail/config.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/version.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/version.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

#if BOOST_ASIO_VERSION >= 103300
#include <boost/asio/config.hpp>
#endif

// cserve reaches into Asio's and Beast's `detail` namespaces only here, only where a
// benchmark showed why, and only on releases where that was tested. Each use has a
// public-API fallback; CSERVE_BOOST_PUBLIC_API_ONLY (CMake option of the same name) takes
// every fallback, so that a release that changes an internal breaks nothing.
#if defined(CSERVE_BOOST_PUBLIC_API_ONLY)
#define CSERVE_DETAIL_BOOST_INTERNALS 0
#else
#define CSERVE_DETAIL_BOOST_INTERNALS 1
#endif

// A request on an idle connection starts its coroutine the way co_spawn does but without
// co_spawn's extra frame, dispatch and post, through the Asio internals co_spawn itself
// uses: only on the Asio release this was written and tested against (Boost 1.81).
#if !defined(CSERVE_DETAIL_DIRECT_LAUNCH)
#if CSERVE_DETAIL_BOOST_INTERNALS && BOOST_ASIO_VERSION == 102600
#define CSERVE_DETAIL_DIRECT_LAUNCH 1
#else
#define CSERVE_DETAIL_DIRECT_LAUNCH 0
#endif
#endif

#if CSERVE_DETAIL_DIRECT_LAUNCH
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>
#endif

#if CSERVE_DETAIL_BOOST_INTERNALS
#include <boost/beast/websocket/detail/frame.hpp>
#include <boost/beast/websocket/detail/pmd_extension.hpp>
#include <boost/beast/websocket/detail/utf8_checker.hpp>
#endif

// Beast 359 (Boost 1.90) reports a chunked body's trailer fields through a pure virtual
// basic_parser::on_trailer_field_impl instead of on_field_impl.
#if BOOST_BEAST_VERSION >= 359
#define CSERVE_DETAIL_BEAST_TRAILER_FIELD_IMPL 1
#else
#define CSERVE_DETAIL_BEAST_TRAILER_FIELD_IMPL 0
#endif

namespace cserve::detail {

// Whether `ioc` was made for one thread (concurrency hint 1), so that its connections need
// no strand and the server's deadline lists no lock.
inline bool
one_thread_hint(boost::asio::io_context& ioc)
{
#if BOOST_ASIO_VERSION >= 103300
    // Asio 1.33 (Boost 1.87) keeps the hint in the execution context's public configuration
    // and removed the scheduler's accessor.
    return boost::asio::config(ioc).get("scheduler", "concurrency_hint", 0) == 1;
#elif CSERVE_DETAIL_BOOST_INTERNALS
    return boost::asio::use_service<boost::asio::detail::io_context_impl>(ioc).concurrency_hint() == 1;
#else
    // Not knowable through the public API before 1.33: take the io_context as shared by
    // threads (strands and a lock: correct either way).
    (void)ioc;
    return false;
#endif
}

//------------------------------------------------------------------------------
// Coroutines

#if CSERVE_DETAIL_DIRECT_LAUNCH
// The coroutine type of a thread of execution started by launch_direct().
using direct_task = boost::asio::awaitable<boost::asio::detail::awaitable_thread_entry_point, boost::asio::any_io_executor>;

// Runs `t` now as a thread of execution of its own on `ex`, cancelled through `slot`, as
// co_spawn does after its dispatch. Nothing may escape `t`.
inline void
launch_direct(direct_task t, boost::asio::any_io_executor const& ex, boost::asio::cancellation_slot slot)
{
    boost::asio::detail::awaitable_thread<boost::asio::any_io_executor>(std::move(t), ex, slot,
                                                                        boost::asio::cancellation_state(slot))
        .launch();
}
#endif

// The completion handler of an `async_initiate(..., use_awaitable)` with signature
// void(Args...): the concrete type where it may be named, else type-erased.
#if CSERVE_DETAIL_BOOST_INTERNALS
template <class... Args>
using awaitable_completion = boost::asio::detail::awaitable_handler<boost::asio::any_io_executor, Args...>;
#else
template <class... Args>
using awaitable_completion = boost::asio::any_completion_handler<void(Args...)>;
#endif

//------------------------------------------------------------------------------
// WebSocket

// The opcodes of the frames the session writes itself (RFC 6455 §5.2).
enum class ws_opcode : unsigned char { text = 0x1, binary = 0x2, close = 0x8 };

// The header of a final, unmasked (server) frame: two to ten bytes.
struct ws_frame_header {
    unsigned char bytes[14];
    std::size_t size = 0;

    boost::asio::const_buffer data() const noexcept { return {bytes, size}; }
};

inline ws_frame_header
make_frame_header(ws_opcode op, bool rsv1, std::uint64_t len) noexcept
{
    ws_frame_header h;
#if CSERVE_DETAIL_BOOST_INTERNALS
    namespace bwd = boost::beast::websocket::detail;
    bwd::frame_header fh{};
    fh.op = static_cast<bwd::opcode>(op);
    fh.fin = true;
    fh.rsv1 = rsv1;
    fh.len = len;
    bwd::fh_buffer b;
    bwd::write(b, fh);
    h.size = b.size();
    std::memcpy(h.bytes, b.data().data(), h.size);
#else
    // RFC 6455 §5.2: FIN, RSV1, the opcode; then the length in the shortest form.
    h.bytes[0] = static_cast<unsigned char>(0x80 | (rsv1 ? 0x40 : 0) | static_cast<unsigned>(op));
    if (len < 126) {
        h.bytes[1] = static_cast<unsigned char>(len);
        h.size = 2;
    } else if (len < 65536) {
        h.bytes[1] = 126;
        h.bytes[2] = static_cast<unsigned char>(len >> 8);
        h.bytes[3] = static_cast<unsigned char>(len);
        h.size = 4;
    } else {
        h.bytes[1] = 127;
        for (int i = 0; i < 8; ++i)
            h.bytes[2 + i] = static_cast<unsigned char>(len >> (56 - 8 * i));
        h.size = 10;
    }
#endif
    return h;
}

// Whether `n` bytes at `p` are UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// past U+10FFFF), as a text message and a close reason must be (RFC 6455 §8.1).
inline bool
valid_utf8(char const* p, std::size_t n) noexcept
{
#if CSERVE_DETAIL_BOOST_INTERNALS
    return boost::beast::websocket::detail::check_utf8(p, n);
#else
    auto const* s = reinterpret_cast<unsigned char const*>(p);
    std::size_t i = 0;
    while (i < n) {
        // Eight ASCII bytes at a time while they last.
        if (i + 8 <= n) {
            std::uint64_t v;
            std::memcpy(&v, s + i, 8);
            if ((v & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char const c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        unsigned char lo = 0x80, hi = 0xbf; // the range of the second byte
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0; // overlong
            else if (c == 0xed)
                hi = 0x9f; // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90; // overlong
            else if (c == 0xf4)
                hi = 0x8f; // past U+10FFFF
        } else {
            return false;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (std::size_t k = 2; k < len; ++k)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
#endif
}

// What a server's handshake answer agreed for permessage-deflate (RFC 7692 §7.1).
struct ws_deflate_agreement {
    int client_max_window_bits = 15;
    int server_max_window_bits = 15;
    bool client_no_context_takeover = false;
    bool server_no_context_takeover = false;
};

// The permessage-deflate parameters of a 101 answer, or none when it agreed no compression.
inline std::optional<ws_deflate_agreement>
agreed_deflate(boost::beast::http::fields const& response)
{
    auto const value = response[boost::beast::http::field::sec_websocket_extensions];
    if (value.empty())
        return std::nullopt;
    ws_deflate_agreement a;
#if CSERVE_DETAIL_BOOST_INTERNALS
    namespace bwd = boost::beast::websocket::detail;
    bwd::pmd_offer offer;
    bwd::pmd_read(offer, response);
    if (!offer.accept)
        return std::nullopt;
    auto bits = [](int b) { return b > 0 ? b : 15; }; // 0 or -1: not limited
    a.client_max_window_bits = bits(offer.client_max_window_bits);
    a.server_max_window_bits = bits(offer.server_max_window_bits);
    a.client_no_context_takeover = offer.client_no_context_takeover;
    a.server_no_context_takeover = offer.server_no_context_takeover;
#else
    bool found = false;
    for (auto const& [name, params] : boost::beast::http::ext_list(value)) {
        if (!boost::beast::iequals(name, "permessage-deflate"))
            continue;
        found = true;
        for (auto const& kv : params) {
            auto const& key = kv.first;
            auto bits = [&value = kv.second](int& out) {
                int b = 0;
                for (char c : value)
                    b = c >= '0' && c <= '9' && b < 100 ? b * 10 + (c - '0') : 100;
                if (b >= 8 && b <= 15)
                    out = b;
            };
            if (boost::beast::iequals(key, "client_max_window_bits"))
                bits(a.client_max_window_bits);
            else if (boost::beast::iequals(key, "server_max_window_bits"))
                bits(a.server_max_window_bits);
            else if (boost::beast::iequals(key, "client_no_context_takeover"))
                a.client_no_context_takeover = true;
            else if (boost::beast::iequals(key, "server_no_context_takeover"))
                a.server_no_context_takeover = true;
        }
        break;
    }
    if (!found)
        return std::nullopt;
#endif
    return a;
}

} // namespace cserve::detail

#endif
