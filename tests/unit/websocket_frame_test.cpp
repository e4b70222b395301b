// tests/unit/websocket_frame_test.cpp -- the frame classifier and unmasking, on frames Beast wrote
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/websocket/frame.hpp>

#include "catch.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace net = boost::asio;
namespace bws = boost::beast::websocket;
using tcp = net::ip::tcp;
namespace wd = cserve::detail::ws_detail;

namespace {

// What a Beast client puts on the wire: `write` runs on a client stream after the opening
// handshake; the bytes that follow the handshake come back, masked as a client masks them.
template <class Write>
std::string
client_bytes(Write write)
{
    net::io_context ioc(1);
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto const port = acceptor.local_endpoint().port();
    std::exception_ptr client_failure;
    std::thread client([&] {
        try {
            net::io_context cioc(1);
            bws::stream<tcp::socket> ws(cioc);
            ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
            ws.handshake("127.0.0.1", "/");
            write(ws);
            ws.next_layer().shutdown(tcp::socket::shutdown_send);
            // Wait for the server to have read everything.
            char c;
            boost::system::error_code ec;
            ws.next_layer().read_some(net::buffer(&c, 1), ec);
        } catch (...) {
            client_failure = std::current_exception();
        }
    });
    bws::stream<tcp::socket> server(ioc);
    acceptor.accept(server.next_layer());
    server.accept(); // Beast's handshake; the frames are then read as bytes
    std::string wire;
    boost::system::error_code ec;
    net::read(server.next_layer(), net::dynamic_buffer(wire), ec);
    server.next_layer().close();
    client.join();
    if (client_failure)
        std::rethrow_exception(client_failure);
    return wire;
}

// The payload of the frame whose header is `head` bytes at `frame`, unmasked.
std::string
payload_of(std::string_view frame, std::size_t head)
{
    std::string p(frame.substr(head));
    wd::unmask(p.data(), p.size(), reinterpret_cast<unsigned char const*>(frame.data()) + head - 4);
    return p;
}

std::string
pattern(std::size_t n)
{
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i)
        s[i] = static_cast<char>('a' + i % 26);
    return s;
}

} // namespace

TEST_CASE("websocket_frame: single-frame messages Beast writes are whole messages the session reads itself",
          "[websocket_frame]")
{
    // Every length form: 7-bit, 16-bit and 64-bit (RFC 6455 §5.2).
    std::vector<std::string> const messages{"", "hello", pattern(125), pattern(126), pattern(65535), pattern(70000)};
    auto wire = client_bytes([&](bws::stream<tcp::socket>& ws) {
        ws.auto_fragment(false); // Beast's default cuts at its 4 KiB write buffer
        for (std::size_t i = 0; i < messages.size(); ++i) {
            ws.text(i % 2 == 0);
            ws.write(net::buffer(messages[i]));
        }
    });
    std::string_view rest = wire;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        auto const* p = reinterpret_cast<unsigned char const*>(rest.data());
        auto u = wd::next_unit(p, rest.size(), 0);
        REQUIRE(u.kind == wd::unit::message);
        CHECK(u.offset == 0);
        CHECK((p[0] & 0x0f) == (i % 2 == 0 ? 0x1 : 0x2));
        CHECK(payload_of(rest.substr(0, u.size), u.head) == messages[i]);
        // One byte short of the frame, it is not whole yet.
        CHECK(wd::next_unit(p, u.size - 1, 0).kind == wd::unit::partial);
        rest.remove_prefix(u.size);
    }
    CHECK(rest.empty());
}

TEST_CASE("websocket_frame: a fragmented message is handed to Beast whole, its fragments unmask to the message",
          "[websocket_frame]")
{
    auto const message = pattern(100);
    auto wire = client_bytes([&](bws::stream<tcp::socket>& ws) {
        ws.auto_fragment(true);
        ws.write_buffer_bytes(8);
        ws.binary(true);
        ws.write(net::buffer(message));
    });
    auto const* p = reinterpret_cast<unsigned char const*>(wire.data());
    auto u = wd::next_unit(p, wire.size(), 0);
    REQUIRE(u.kind == wd::unit::beast);
    CHECK(u.size == wire.size());
    // Beast cut it into several frames; their payloads, unmasked, are the message.
    std::string joined;
    int frames = 0;
    for (std::size_t pos = 0; pos < wire.size(); ++frames) {
        wd::frame_head h;
        REQUIRE(wd::read_head(p + pos, wire.size() - pos, h));
        CHECK(h.opcode == (frames == 0 ? 0x2u : 0x0u));
        CHECK(h.fin == (pos + h.size + h.len == wire.size()));
        joined += payload_of(std::string_view(wire).substr(pos, h.size + h.len), h.size);
        pos += h.size + h.len;
    }
    CHECK(frames > 1);
    CHECK(joined == message);
    // Short of its last byte the message is not whole: nothing to do yet.
    CHECK(wd::next_unit(p, wire.size() - 1, 0).kind == wd::unit::partial);
}

TEST_CASE("websocket_frame: pings and pongs are found, and the close frame goes to Beast", "[websocket_frame]")
{
    auto wire = client_bytes([&](bws::stream<tcp::socket>& ws) {
        ws.ping(bws::ping_data("are you there"));
        ws.pong(bws::ping_data(""));
        // A close frame, written as Beast writes it; the answer it would wait for never comes.
        ws.async_close(bws::close_reason(bws::close_code::going_away, "bye"), [](boost::system::error_code) {});
        static_cast<net::io_context&>(ws.get_executor().context()).run_for(std::chrono::milliseconds(50));
    });
    std::string_view rest = wire;
    auto const* p = reinterpret_cast<unsigned char const*>(rest.data());
    auto u = wd::next_unit(p, rest.size(), 0);
    REQUIRE(u.kind == wd::unit::ping);
    CHECK(payload_of(rest.substr(u.offset, u.size), u.head) == "are you there");
    rest.remove_prefix(u.size);
    p = reinterpret_cast<unsigned char const*>(rest.data());
    u = wd::next_unit(p, rest.size(), 0);
    REQUIRE(u.kind == wd::unit::pong);
    CHECK(u.size == 6); // two header bytes and the masking key
    rest.remove_prefix(u.size);
    p = reinterpret_cast<unsigned char const*>(rest.data());
    u = wd::next_unit(p, rest.size(), 0);
    REQUIRE(u.kind == wd::unit::beast);
    CHECK(u.size == rest.size());
    auto body = payload_of(rest, u.size - 5); // code (2) and "bye" (3) after the header
    CHECK(body == std::string("\x03\xe9" "bye", 5)); // 1001
}

TEST_CASE("websocket_frame: a message over the size limit goes to Beast at its header, to be refused",
          "[websocket_frame]")
{
    auto wire = client_bytes([&](bws::stream<tcp::socket>& ws) { ws.write(net::buffer(pattern(1000))); });
    auto const* p = reinterpret_cast<unsigned char const*>(wire.data());
    auto u = wd::next_unit(p, wire.size(), 999);
    REQUIRE(u.kind == wd::unit::beast);
    CHECK(u.size == 8); // the header alone: 2 bytes, a 16-bit length, no more than the key
    CHECK(wd::next_unit(p, wire.size(), 1000).kind == wd::unit::message);
}

TEST_CASE("websocket_frame: RSV1 without permessage-deflate goes to Beast at its header, to be refused",
          "[websocket_frame]")
{
    // Found by tests/fuzz/fuzz_websocket.cpp: the first fragment of a text message with RSV1
    // set waited for the rest of the message, where Beast fails the connection (1002) on the
    // header alone.
    unsigned char const frame[] = {0x41, 0x85, 1, 2, 3, 2, 0, 0x81, 0x85, 1, 2};
    auto u = wd::next_unit(frame, sizeof frame, 65536, false);
    CHECK(u.kind == wd::unit::beast);
    CHECK(u.size == 6);
    CHECK(wd::next_unit(frame, 6, 65536, false).kind == wd::unit::beast); // the payload not needed
    // With permessage-deflate agreed it is the first frame of a compressed message.
    CHECK(wd::next_unit(frame, sizeof frame, 65536, true).kind == wd::unit::partial);
}

TEST_CASE("websocket_frame: unmask agrees with RFC 6455 §5.3 byte by byte at every length and alignment",
          "[websocket_frame]")
{
    std::mt19937 rng(12345);
    std::vector<char> storage(64 + 8);
    for (std::size_t n = 0; n <= 64; ++n) {
        for (std::size_t align = 0; align < 8; ++align) {
            unsigned char key[4];
            for (auto& k : key)
                k = static_cast<unsigned char>(rng());
            std::string original(n, '\0');
            for (auto& c : original)
                c = static_cast<char>(rng());
            char* p = storage.data() + align;
            std::copy(original.begin(), original.end(), p);
            wd::unmask(p, n, key);
            bool same = true;
            for (std::size_t i = 0; i < n; ++i)
                same = same && p[i] == static_cast<char>(original[i] ^ key[i % 4]);
            CHECK(same);
        }
    }
}
