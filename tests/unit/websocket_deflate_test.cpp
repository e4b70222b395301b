// tests/unit/websocket_deflate_test.cpp -- permessage-deflate without I/O (detail/websocket_deflate.hpp)
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/websocket/deflate.hpp>

#include "catch.hpp"

#include <zlib.h>

#include <string>
#include <string_view>

namespace {

using cserve::detail::ws_deflate_params;
using cserve::detail::ws_deflater;
using cserve::detail::ws_inflater;
using result = ws_inflater::result;

// A payload as a client sends it (RFC 7692 §7.2.1), from zlib with the default settings.
struct client_compressor {
    z_stream z{};
    client_compressor() { ::deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY); }
    ~client_compressor() { ::deflateEnd(&z); }

    std::string operator()(std::string_view in, int flush = Z_SYNC_FLUSH)
    {
        std::string out(::deflateBound(&z, in.size()) + 64, '\0');
        z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
        z.avail_in = static_cast<uInt>(in.size());
        z.next_out = reinterpret_cast<Bytef*>(out.data());
        z.avail_out = static_cast<uInt>(out.size());
        ::deflate(&z, flush);
        out.resize(out.size() - z.avail_out);
        if (flush == Z_SYNC_FLUSH && out.ends_with(std::string_view("\x00\x00\xff\xff", 4)))
            out.resize(out.size() - 4);
        return out;
    }
};

std::string
lines(std::size_t n)
{
    std::string s;
    for (int i = 0; s.size() < n; ++i)
        s += "line " + std::to_string(i % 100) + " of a very compressible message\n";
    s.resize(n);
    return s;
}

} // namespace

TEST_CASE("websocket_deflate: messages inflate whole, in pieces, with the window kept between them",
          "[websocket][deflate][inflate]")
{
    ws_inflater inflater;
    client_compressor compress;
    for (auto const& message : {lines(100000), std::string(57 * 1024, 'x'), lines(100000), std::string()}) {
        auto const payload = compress(message);
        std::string out;
        // Fed in three pieces, as three fragments would be.
        auto const a = payload.size() / 3, b = 2 * payload.size() / 3;
        REQUIRE(inflater.write(std::string_view(payload).substr(0, a), false, out, 0) == result::ok);
        REQUIRE(inflater.write(std::string_view(payload).substr(a, b - a), false, out, 0) == result::ok);
        REQUIRE(inflater.write(std::string_view(payload).substr(b), true, out, 0) == result::ok);
        CHECK(out == message);
    }
}

TEST_CASE("websocket_deflate: the output stops one byte past the limit, however much the input holds",
          "[websocket][deflate][inflate]")
{
    ws_inflater inflater;
    client_compressor compress;
    auto const payload = compress(std::string(8 << 20, '\0'));
    std::string out;
    CHECK(inflater.write(payload, true, out, 1000) == result::too_big);
    CHECK(out.size() == 1001);
}

TEST_CASE("websocket_deflate: a message whose tail lands inside a block is bad data, not more output",
          "[websocket][deflate][inflate]")
{
    client_compressor compress;
    auto const good = compress(std::string(120, 'h'));
    // A stored block begun (RFC 1951 §3.2.4) whose bytes would be the appended tail.
    for (std::string_view extra : {std::string_view("\xff\xff\x00\x00", 4), std::string_view("\x05\x00\xfa\xff", 4),
                                   std::string_view("\x00\x00", 2)}) {
        ws_inflater inflater;
        std::string out;
        CHECK(inflater.write(good + std::string(extra), true, out, 0) == result::bad_data);
        CHECK(out.size() <= 124);
    }
    ws_inflater inflater;
    std::string out;
    CHECK(inflater.write(std::string_view("\xff\xff\xff\xff\xff", 5), true, out, 0) == result::bad_data);
}

TEST_CASE("websocket_deflate: a block marked final ends the message, and the next one may use its window",
          "[websocket][deflate][inflate]")
{
    ws_inflater inflater;
    std::string out;
    CHECK(inflater.write(std::string_view("\x03\x00", 2), true, out, 0) == result::ok); // empty, BFINAL
    CHECK(out.empty());
    client_compressor compress;
    auto const hello = compress("Hello, final", Z_FINISH);
    out.clear();
    CHECK(inflater.write(hello, true, out, 0) == result::ok);
    CHECK(out == "Hello, final");
    out.clear();
    CHECK(inflater.write(hello + std::string(1, '\0'), true, out, 0) == result::ok); // RFC 7692 §7.2.3.3
    CHECK(out == "Hello, final");
    // A sender that keeps its window refers back across the final block.
    client_compressor next;
    ::deflateSetDictionary(&next.z, reinterpret_cast<Bytef const*>("Hello, final"), 12);
    out.clear();
    CHECK(inflater.write(next("Hello, final"), true, out, 0) == result::ok);
    CHECK(out == "Hello, final");
}

TEST_CASE("websocket_deflate: with client_no_context_takeover every message starts with an empty window",
          "[websocket][deflate][inflate]")
{
    ws_inflater inflater(ws_deflate_params{.window_bits = 15, .no_context_takeover = true});
    for (int i = 0; i < 3; ++i) {
        client_compressor fresh; // as the client does: a new stream each message
        std::string out;
        CHECK(inflater.write(fresh(lines(5000)), true, out, 0) == result::ok);
        CHECK(out == lines(5000));
    }
}

TEST_CASE("websocket_deflate: the deflater's messages are one payload each, empty ones a single 00 byte",
          "[websocket][deflate][deflate_out]")
{
    ws_deflater deflater(ws_deflate_params{}, 8, 4);
    ws_inflater inflater;
    for (auto const& message : {lines(300000), std::string(), std::string("short"), std::string(), lines(10)}) {
        std::string payload;
        REQUIRE(deflater.write(message, payload));
        if (message.empty())
            CHECK(payload == std::string(1, '\0'));
        std::string out;
        REQUIRE(inflater.write(payload, true, out, 0) == result::ok);
        CHECK(out == message);
    }
}
