// tests/unit/boost_compat_test.cpp -- what differs between Boost releases, on the Boost in use
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/http1/request_parser.hpp>

#include "catch.hpp"

#include <boost/asio/io_context.hpp>

#include <boost/beast/http/fields.hpp>

#include <string>
#include <string_view>
#include <vector>

TEST_CASE("boost_compat: one_thread_hint tells an io_context made for one thread", "[boost_compat]")
{
    // A wrong answer would not fail loudly: connections would take strands and the deadline
    // lists a lock (multi-threaded), or worse, go without them on several threads.
    boost::asio::io_context one(1);
    boost::asio::io_context two(2);
    boost::asio::io_context unspecified;
#if BOOST_ASIO_VERSION < 103300 && !CSERVE_DETAIL_BOOST_INTERNALS
    // Before Asio 1.33 only the internals know the hint: the fallback takes every
    // io_context as shared by threads.
    CHECK_FALSE(cserve::detail::one_thread_hint(one));
#else
    CHECK(cserve::detail::one_thread_hint(one));
#endif
    CHECK_FALSE(cserve::detail::one_thread_hint(two));
    CHECK_FALSE(cserve::detail::one_thread_hint(unspecified));
}

TEST_CASE("boost_compat: a chunked request's trailer fields are parsed and left out of the header",
          "[boost_compat][parser]")
{
    // Beast 359 and newer report trailer fields through on_trailer_field_impl, older ones
    // through on_field_impl: either way the request's fields are the header's alone.
    std::string const wire = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
    cserve::detail::request_head head;
    cserve::detail::body_target body;
    std::string sink;
    body.sink = &sink;
    body.room = 1024;
    cserve::detail::request_parser parser(head, body);
    parser.body_limit(boost::none);
    head.base = wire.data();
    head.size = wire.size();
    boost::beast::error_code ec;
    std::size_t used = 0;
    while (!parser.is_done() && !ec)
        used += parser.put(boost::asio::buffer(wire.data() + used, wire.size() - used), ec);
    REQUIRE_FALSE(ec);
    CHECK(parser.is_done());
    CHECK(used == wire.size());
    CHECK(sink == "abc");
    REQUIRE(head.fields.size() == 2);
    CHECK(head.fields[0].first.in(wire) == "Host");
    CHECK(head.fields[1].first.in(wire) == "Transfer-Encoding");
}

TEST_CASE("boost_compat: make_frame_header writes FIN, RSV1, the opcode and the shortest length form",
          "[boost_compat][websocket]")
{
    using cserve::detail::make_frame_header;
    using cserve::detail::ws_opcode;
    auto bytes = [](cserve::detail::ws_frame_header const& h) {
        return std::vector<unsigned>(h.bytes, h.bytes + h.size);
    };
    CHECK(bytes(make_frame_header(ws_opcode::text, false, 0)) == std::vector<unsigned>{0x81, 0x00});
    CHECK(bytes(make_frame_header(ws_opcode::binary, true, 125)) == std::vector<unsigned>{0xc2, 125});
    CHECK(bytes(make_frame_header(ws_opcode::close, false, 2)) == std::vector<unsigned>{0x88, 0x02});
    CHECK(bytes(make_frame_header(ws_opcode::text, false, 126)) == std::vector<unsigned>{0x81, 126, 0x00, 126});
    CHECK(bytes(make_frame_header(ws_opcode::text, false, 65535)) == std::vector<unsigned>{0x81, 126, 0xff, 0xff});
    CHECK(bytes(make_frame_header(ws_opcode::binary, false, 65536)) ==
          std::vector<unsigned>{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0});
    CHECK(bytes(make_frame_header(ws_opcode::binary, true, 0x0102030405060708ull)) ==
          std::vector<unsigned>{0xc2, 127, 1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("boost_compat: valid_utf8 takes UTF-8 and refuses overlong forms, surrogates and cut sequences",
          "[boost_compat][websocket]")
{
    using cserve::detail::valid_utf8;
    auto ok = [](std::string_view s) { return valid_utf8(s.data(), s.size()); };
    CHECK(ok(""));
    CHECK(ok("plain ASCII, longer than eight bytes"));
    CHECK(ok("\xc3\xa9t\xc3\xa9"));                // été
    CHECK(ok("\xe2\x82\xac and \xf0\x9f\x98\x80")); // € and 😀
    CHECK(ok("\xf4\x8f\xbf\xbf"));                  // U+10FFFF
    CHECK(ok("\xed\x9f\xbf"));                      // U+D7FF, just below the surrogates
    CHECK_FALSE(ok("\xc0\xaf"));                    // overlong '/'
    CHECK_FALSE(ok("\xe0\x80\xaf"));                // overlong, three bytes
    CHECK_FALSE(ok("\xf0\x80\x80\xaf"));            // overlong, four bytes
    CHECK_FALSE(ok("\xed\xa0\x80"));                // U+D800, a surrogate
    CHECK_FALSE(ok("\xf4\x90\x80\x80"));            // past U+10FFFF
    CHECK_FALSE(ok("\xf5\x80\x80\x80"));
    CHECK_FALSE(ok("abc\xc3"));                     // cut off at the end
    CHECK_FALSE(ok("\xe2\x82"));
    CHECK_FALSE(ok("12345678\x80"));                // a continuation byte alone, after a fast run
    CHECK_FALSE(ok("\xc3\x28"));                    // a lead byte without its continuation
    CHECK_FALSE(ok("\xff"));
}

TEST_CASE("boost_compat: agreed_deflate reads the permessage-deflate parameters of a 101 answer",
          "[boost_compat][websocket]")
{
    namespace bhttp = boost::beast::http;
    using cserve::detail::agreed_deflate;
    bhttp::fields none;
    CHECK_FALSE(agreed_deflate(none));

    bhttp::fields other;
    other.set(bhttp::field::sec_websocket_extensions, "x-webkit-deflate-frame");
    CHECK_FALSE(agreed_deflate(other));

    bhttp::fields plain;
    plain.set(bhttp::field::sec_websocket_extensions, "permessage-deflate");
    auto a = agreed_deflate(plain);
    REQUIRE(a);
    CHECK(a->client_max_window_bits == 15);
    CHECK(a->server_max_window_bits == 15);
    CHECK_FALSE(a->client_no_context_takeover);
    CHECK_FALSE(a->server_no_context_takeover);

    bhttp::fields all;
    all.set(bhttp::field::sec_websocket_extensions,
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12; "
            "client_no_context_takeover; server_no_context_takeover");
    a = agreed_deflate(all);
    REQUIRE(a);
    CHECK(a->client_max_window_bits == 10);
    CHECK(a->server_max_window_bits == 12);
    CHECK(a->client_no_context_takeover);
    CHECK(a->server_no_context_takeover);
}
