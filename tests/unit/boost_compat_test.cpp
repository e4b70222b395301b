// tests/unit/boost_compat_test.cpp -- what differs between Boost releases, on the Boost in use
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/request_parser.hpp>

#include "catch.hpp"

#include <boost/asio/io_context.hpp>

#include <string>
#include <string_view>

TEST_CASE("boost_compat: one_thread_hint tells an io_context made for one thread", "[boost_compat]")
{
    // A wrong answer would not fail loudly: connections would take strands and the deadline
    // lists a lock (multi-threaded), or worse, go without them on several threads.
    boost::asio::io_context one(1);
    boost::asio::io_context two(2);
    boost::asio::io_context unspecified;
    CHECK(cserve::detail::one_thread_hint(one));
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
