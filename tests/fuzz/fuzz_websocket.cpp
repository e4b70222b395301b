// tests/fuzz/fuzz_websocket.cpp -- libFuzzer harness: cserve's WebSocket reader against Beast's
// SPDX-License-Identifier: BSL-1.0
//
// Differential. The same client bytes (a fixed upgrade request, then the input as frames) go
// to two servers, each on one end of a socket pair:
//   - cserve: a real http1_connection, upgraded to its websocket_session, whose application
//     receives until the end. Single-frame messages, pings, pongs and compressed messages
//     take cserve's own reader (detail/websocket/frame.hpp, io.ipp); the rest is Beast's.
//   - Beast alone: websocket::stream, accepting the same request and reading messages until
//     it fails or the client closes.
// They must agree on: the handshake (101, and the permessage-deflate agreed), every message
// (text or binary, and its bytes), the pongs sent (their payloads, in order), the close
// frame the server sent (its code, or none), and how the connection ended, as the
// application sees it: the client's close code (1005 for none), else the code of the close
// frame the server sent as it failed the connection (1009 for a message too big, 1007 for
// invalid UTF-8 or DEFLATE data, 1002 for any other protocol error), else 1006 (the client
// left). Beast reports that last set as error codes; map_beast_end() turns
// them into the close code cserve reports, by the rule of websocket_session::on_stream_error.
//
// Both are given the same limits (64 KiB messages), no pings of the server's own, and the
// same permessage-deflate offer. Where they differ by design, the harness says so in code:
//   - compressed data that does not inflate (RFC 7692 §8: the connection fails): cserve
//     inflates messages itself (Beast before 1.90 could inflate the end of one without its
//     end) and fails the connection as RFC 6455 §7.1.7 says it should, with a close frame,
//     1007, as for invalid UTF-8. Beast ends its read with zlib's error and sends no close
//     frame. Beast's ending is taken as that close frame and 1007 for the comparison.
//   - cserve looks at a message's data once the message is whole (and answers the control
//     frames between its fragments as it finds them); Beast looks at each fragment's data as
//     it arrives. So when a message's data is invalid (UTF-8 or DEFLATE: Beast fails with
//     1007) and the message is never finished (unfinished_message()), cserve never looks at
//     its data and ends as what follows says: a fragment with an invalid header (1002), the
//     client's close, or the client leaving (1006). Then only the messages before it and the
//     pongs are compared: cserve answers the pings between the fragments as it finds them,
//     Beast does not reach those after the invalid fragment, so Beast's pongs must be the
//     first of cserve's. The same holds for the pongs when a finished message's data is
//     invalid and both fail the connection with the same code.
//   - a compressed frame whose length on the wire passes the message limit: cserve fails the
//     connection at its header with 1009 (README, "WebSocket": a compressed message counts by
//     both its size on the wire and its inflated size); Beast counts only the inflated size.
//     With permessage-deflate on and cserve failing with 1009, its messages must be the
//     first of Beast's, and the rest of the comparison is skipped.
//   - a compressed message that does not end where a DEFLATE block ends: cserve refuses it
//     with 1007 (README, "WebSocket"; RFC 7692 §7.2.1 has the sender end every message
//     on a block boundary), Beast 1.81 inflates what there is and delivers it. With
//     permessage-deflate on and cserve failing with 1007, its messages must be the first of
//     Beast's, and the rest of the comparison is skipped.
//   - a compressed message whose DEFLATE data ends with a block marked final: RFC 7692
//     §7.2.3.3 allows it and cserve delivers the message; Beast 1.81 fails the connection
//     with zlib's end_of_stream. Then Beast's messages must be the first of cserve's, and
//     the rest of the comparison is skipped.
//
// Input: byte 0 says how the bytes arrive (0: one write, N: writes of N bytes with a turn of
// the event loop between), byte 1 bit 0 offers permessage-deflate; the rest is frames.
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/server.hpp>
#if defined(CSERVE_HEADER_ONLY)
#include <cserve/impl/http1/connection.ipp>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket.hpp>

#include "fuzz_client.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace net = boost::asio;
namespace bws = boost::beast::websocket;
namespace ws = cserve::websocket;
using local_socket = net::local::stream_protocol::socket;

namespace {

constexpr std::size_t max_message = 64 * 1024;

// What one server made of the bytes.
struct outcome {
    std::string handshake;             // the response's status line and extension header
    std::vector<std::string> messages; // "T:" or "B:" and the payload
    int end = 0;                       // the close code the application sees
    std::string error;                 // Beast's: the error its read ended with
    bool inflate_failed = false;       // Beast's: that error was zlib's
    bool final_block = false;          // Beast's: zlib's end_of_stream (a block marked final)
    std::string output;                // every byte the server wrote
};

//------------------------------------------------------------------------------
// cserve

cserve::config
fuzz_config(bool deflate)
{
    cserve::config cfg;
    cfg.lifespan = cserve::lifespan_mode::off;
    cfg.access_log = false;
    cfg.log_level = cserve::log_level::critical;
    cfg.log_sink = [](cserve::log_level, std::string_view) {};
    cfg.ws_max_size = max_message;
    cfg.ws_ping_interval = std::nullopt;
    cfg.ws_per_message_deflate = deflate;
    return cfg;
}

outcome
run_cserve(std::string_view input, std::size_t piece, bool deflate)
{
    outcome out;
    auto app = [&out](cserve::scope& s, cserve::receive receive, cserve::send send) -> cserve::task<> {
        if (s.type != cserve::scope_type::websocket)
            co_return;
        co_await receive(); // connect
        co_await send(ws::accept{});
        for (;;) {
            auto e = co_await receive();
            if (auto* m = std::get_if<ws::receive>(&e)) {
                out.messages.push_back(m->text ? "T:" + *m->text : "B:" + m->bytes.value_or(""));
                continue;
            }
            if (auto* d = std::get_if<ws::disconnect>(&e))
                out.end = d->code;
            co_return;
        }
    };
    net::io_context ioc{1};
    cserve::detail::server_impl srv(ioc, app, fuzz_config(deflate));
    local_socket client_end(ioc);
    local_socket server_end(ioc);
    net::local::connect_pair(client_end, server_end);
    using connection = cserve::detail::http1_connection<cserve::detail::socket_type>;
    connection::start(std::make_shared<connection>(srv, cserve::detail::socket_type(std::move(server_end))));
    net::co_spawn(ioc, cserve_fuzz::client(client_end, input, piece, &out.output), net::detached);
    ioc.run();
    return out;
}

//------------------------------------------------------------------------------
// Beast

int
map_beast_end(boost::system::error_code ec, bws::close_reason const& reason)
{
    if (ec == bws::error::closed)
        return reason.code == bws::close_code::none ? 1005 : static_cast<int>(reason.code);
    if (ec == bws::error::message_too_big)
        return 1009;
    if (ec == bws::error::bad_frame_payload)
        return 1007;
    if (ec == bws::condition::protocol_violation)
        return 1002; // the close frame Beast sent
    return 1006;
}

cserve::task<>
beast_server(local_socket s, outcome& out, bool deflate)
{
    bws::stream<local_socket> w(std::move(s));
    bws::permessage_deflate pmd;
    pmd.server_enable = deflate;
    w.set_option(pmd);
    w.read_message_max(max_message);
    auto [ec] = co_await w.async_accept(net::as_tuple(net::use_awaitable));
    if (ec)
        co_return;
    // read_some into a fixed buffer: async_read into a dynamic buffer makes Beast 1.81 size it
    // by a compressed frame's declared length, which a client chooses (up to 2^63 bytes).
    std::string message;
    for (;;) {
        char buf[16 * 1024];
        auto [rec, n] = co_await w.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
        if (rec) {
            out.end = map_beast_end(rec, w.reason());
            out.error = rec.message();
            out.inflate_failed = rec.category() == boost::beast::zlib::make_error_code(
                                                       boost::beast::zlib::error::invalid_block_type).category();
            out.final_block = rec == boost::beast::zlib::error::end_of_stream;
            if (out.inflate_failed)
                out.end = 1007; // see the top of this file
            if (rec == bws::error::closed) {
                // The client's close is answered (cserve's application returning does it).
                auto [cec] = co_await w.async_close(w.reason(), net::as_tuple(net::use_awaitable));
                (void)cec;
            }
            co_return;
        }
        message.append(buf, n);
        if (w.is_message_done()) {
            out.messages.push_back((w.got_text() ? "T:" : "B:") + message);
            message.clear();
        }
    }
}

outcome
run_beast(std::string_view input, std::size_t piece, bool deflate)
{
    outcome out;
    net::io_context ioc{1};
    local_socket client_end(ioc);
    local_socket server_end(ioc);
    net::local::connect_pair(client_end, server_end);
    net::co_spawn(ioc, beast_server(std::move(server_end), out, deflate), net::detached);
    net::co_spawn(ioc, cserve_fuzz::client(client_end, input, piece, &out.output), net::detached);
    ioc.run();
    return out;
}

//------------------------------------------------------------------------------
// What the servers wrote: the handshake, then unmasked frames.

// A frame header's payload length and its size (with the masking key, when masked); false
// when the `n` bytes at `p` do not hold the length. Written here, not taken from cserve: the
// harness judges cserve's reader.
bool
frame_length(unsigned char const* p, std::size_t n, std::uint64_t& len, std::size_t& size)
{
    if (n < 2)
        return false;
    len = p[1] & 0x7f;
    size = 2;
    if (len == 126) {
        if (n < 4)
            return false;
        len = (std::uint64_t(p[2]) << 8) | p[3];
        size = 4;
    } else if (len == 127) {
        if (n < 10)
            return false;
        len = 0;
        for (int i = 0; i < 8; ++i)
            len = (len << 8) | p[2 + i];
        size = 10;
    }
    if (p[1] & 0x80)
        size += 4;
    return true;
}

struct written {
    std::string handshake;
    std::vector<std::string> pongs;
    std::string close = "none"; // the first close frame's code ("empty" without one)
};

written
parse_output(std::string_view out)
{
    written w;
    auto end = out.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        w.handshake = "incomplete";
        return w;
    }
    auto head = out.substr(0, end + 2);
    w.handshake = std::string(head.substr(0, head.find("\r\n")));
    for (auto pos = head.find("\r\n"); pos != std::string_view::npos && pos + 2 < head.size();) {
        auto next = head.find("\r\n", pos + 2);
        auto line = head.substr(pos + 2, next - pos - 2);
        std::string lower(line);
        for (auto& c : lower)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower.starts_with("sec-websocket-extensions:"))
            w.handshake += " | " + lower;
        pos = next;
    }
    auto frames = out.substr(end + 4);
    auto const* p = reinterpret_cast<unsigned char const*>(frames.data());
    std::size_t n = frames.size();
    std::size_t pos = 0;
    while (n - pos >= 2) {
        unsigned op = p[pos] & 0x0f;
        std::uint64_t len = 0;
        std::size_t h = 0;
        if (!frame_length(p + pos, n - pos, len, h) || len > n - pos - h)
            break;
        std::string_view payload(frames.data() + pos + h, static_cast<std::size_t>(len));
        if (op == 0xa)
            w.pongs.emplace_back(payload);
        if (op == 0x8 && w.close == "none") {
            w.close = payload.size() >= 2 ? std::to_string((static_cast<unsigned char>(payload[0]) << 8) |
                                                           static_cast<unsigned char>(payload[1]))
                                          : "empty";
        }
        pos += h + static_cast<std::size_t>(len);
    }
    return w;
}

// Whether the client's frames leave a data message unfinished: one begun and not ended
// (a whole frame with FIN) before a close frame, a frame that breaks the rules, or the end
// of the bytes.
bool
unfinished_message(std::string_view in, bool deflate)
{
    auto const* p = reinterpret_cast<unsigned char const*>(in.data());
    std::size_t const n = in.size();
    std::size_t pos = 0;
    bool in_message = false;
    while (n - pos >= 2) {
        bool const fin = (p[pos] & 0x80) != 0;
        unsigned const op = p[pos] & 0x0f;
        std::uint64_t len = 0;
        std::size_t h = 0;
        if (!frame_length(p + pos, n - pos, len, h))
            return in_message || op <= 2; // the bytes end inside this frame's header
        unsigned const rsv = p[pos] & 0x70;
        bool const control = (op & 0x08) != 0;
        unsigned const raw = p[pos + 1] & 0x7f; // the 7-bit length: 126 and 127 say more follows
        bool const canonical = raw < 126 || (raw == 126 && len >= 126) || (raw == 127 && len >= 65536 && !(len >> 63));
        if (op == 0x8 || (op != 0 && op != 1 && op != 2 && op != 9 && op != 10))
            break; // a close frame, or an opcode that ends the connection
        // A header that breaks a rule (RFC 6455 §5.2, §5.5; RFC 7692 §6) ends it too.
        if (!(p[pos + 1] & 0x80) || !canonical || (rsv & 0x30) != 0 ||
            (control && (!fin || len > 125 || rsv != 0)) || (op == 0 && rsv != 0) || (rsv != 0 && !deflate))
            break;
        if (op <= 2 && (op == 0) != in_message)
            break; // a continuation without a message, or a message inside one
        if (h > n - pos || len > n - pos - h)
            return in_message || op <= 2; // the bytes end inside this frame
        if (op <= 2)
            in_message = !fin;
        pos += h + static_cast<std::size_t>(len);
    }
    return in_message;
}

[[noreturn]] void
disagree(char const* what, std::string const& a, std::string const& b)
{
    std::fprintf(stderr, "fuzz_websocket: cserve and Beast disagree on %s:\n  cserve: %s\n  beast:  %s\n", what,
                 a.c_str(), b.c_str());
    std::abort();
}

std::string
join(std::vector<std::string> const& v)
{
    std::string s;
    for (auto const& x : v) {
        s += '[';
        for (unsigned char c : x.substr(0, 64))
            s += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.';
        if (x.size() > 64)
            s += "...(" + std::to_string(x.size()) + " bytes)";
        s += ']';
    }
    return s;
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    if (size < 2)
        return 0;
    std::size_t const piece = data[0];
    bool const deflate = (data[1] & 1) != 0;
    std::string input = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    if (deflate)
        input += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    input += "\r\n";
    std::string_view const frames(reinterpret_cast<char const*>(data) + 2, size - 2);
    input.append(frames);

    auto const c = run_cserve(input, piece, deflate);
    auto b = run_beast(input, piece, deflate);
    auto const cw = parse_output(c.output);
    auto bw = parse_output(b.output);
    if (b.inflate_failed && bw.close == "none")
        bw.close = "1007"; // see the top of this file
    if (cw.handshake != bw.handshake)
        disagree("the handshake", cw.handshake, bw.handshake);
    if (deflate && ((c.end == 1007 && cw.close == "1007") || (c.end == 1009 && cw.close == "1009")) &&
        c.messages.size() <= b.messages.size() &&
        std::equal(c.messages.begin(), c.messages.end(), b.messages.begin()))
        return 0; // see the top of this file
    if (deflate && b.final_block && b.messages.size() <= c.messages.size() &&
        std::equal(b.messages.begin(), b.messages.end(), c.messages.begin()))
        return 0; // see the top of this file
    if (c.messages != b.messages)
        disagree("the messages", join(c.messages) + " then " + std::to_string(c.end),
                 join(b.messages) + " then " + std::to_string(b.end) + " (" + b.error + ")");
    if (b.end == 1007 && unfinished_message(frames, deflate)) {
        // See the top of this file: cserve never saw the message whole.
        if (bw.pongs.size() <= cw.pongs.size() && std::equal(bw.pongs.begin(), bw.pongs.end(), cw.pongs.begin()))
            return 0;
        disagree("the pongs", join(cw.pongs), join(bw.pongs));
    }
    if (c.end != b.end)
        disagree("how the connection ended", std::to_string(c.end) + " (close frame sent: " + cw.close + ")",
                 std::to_string(b.end) + " (close frame sent: " + bw.close + ", " + b.error + ")");
    if (cw.close != bw.close)
        disagree("the close frame sent", cw.close, bw.close);
    bool const both_failed = (c.end == 1002 || c.end == 1007 || c.end == 1009) && cw.close != "none";
    if (both_failed && bw.pongs.size() <= cw.pongs.size() &&
        std::equal(bw.pongs.begin(), bw.pongs.end(), cw.pongs.begin()))
        return 0; // see the top of this file
    if (cw.pongs != bw.pongs)
        disagree("the pongs", join(cw.pongs), join(bw.pongs));
    return 0;
}
