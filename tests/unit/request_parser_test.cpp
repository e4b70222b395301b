// tests/unit/request_parser_test.cpp -- the request parser's RFC 9112 checks, without a socket
// SPDX-License-Identifier: BSL-1.0
#include <cserve/detail/http1/request_parser.hpp>

#include "catch.hpp"

#include <boost/beast/http/error.hpp>

#include <string>
#include <string_view>

using cserve::detail::body_target;
using cserve::detail::request_head;
using cserve::detail::request_parser;
namespace bhttp = boost::beast::http;

namespace {

// Feeds `bytes` at once as the connection does: the header from the start of the buffer,
// then what follows it into `body`.
struct parsed {
    request_head head;
    body_target target;
    std::string body;
    boost::beast::error_code ec;
    bool done = false;
    std::string_view block;

    explicit parsed(std::string_view bytes)
    {
        request_parser p(head, target);
        p.body_limit(boost::none);
        head.base = bytes.data();
        head.size = bytes.size();
        auto n = p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
        block = bytes.substr(0, n);
        if (ec)
            return;
        target.sink = &body;
        target.room = 1 << 20;
        auto rest = bytes.substr(n);
        while (!rest.empty() && !p.is_done()) {
            auto m = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
            rest.remove_prefix(m);
            if (ec == bhttp::error::need_more) {
                p.check_stalled(rest, 8192, ec);
                break;
            }
            if (ec || m == 0)
                break;
        }
        done = p.is_done();
    }
};

// Whether the connection answers the request 400: the parser refused it, by a check of
// cserve's or of Beast's own (which one depends on the Boost version).
bool
answered_400(parsed const& r)
{
    if (!r.ec || r.ec == bhttp::error::need_more)
        return false;
    if (r.head.reject_status != 0)
        return r.head.reject_status == 400;
    return r.ec != bhttp::error::header_limit && r.ec != bhttp::error::bad_version;
}

} // namespace

TEST_CASE("request_parser: a request's method, target, version and fields are views into the header",
          "[request_parser]")
{
    parsed r("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc");
    REQUIRE_FALSE(r.ec);
    CHECK(r.done);
    std::string_view const block = r.block;
    CHECK(r.head.method.in(block) == "POST");
    CHECK(r.head.target.in(block) == "/a?b=1");
    CHECK(r.head.version == 11);
    REQUIRE(r.head.fields.size() == 3);
    CHECK(r.head.fields[0].first.in(block) == "Host");
    CHECK(r.head.fields[0].second.in(block) == "x");
    CHECK(r.head.expect_continue);
    CHECK(r.body == "abc");
}

TEST_CASE("request_parser: Host is required once on HTTP/1.1 (RFC 9112 §3.2)", "[request_parser]")
{
    CHECK(parsed("GET / HTTP/1.1\r\n\r\n").head.reject_status == 400);
    CHECK(parsed("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").head.reject_status == 400);
    CHECK(parsed("GET / HTTP/1.0\r\n\r\n").head.reject_status == 0);
    CHECK_FALSE(parsed("GET / HTTP/1.0\r\n\r\n").ec);
}

TEST_CASE("request_parser: Transfer-Encoding and Content-Length together are refused in either order (§6.1)",
          "[request_parser]")
{
    // Beast refuses some orders itself; either way the header is an error, and no body is read.
    for (auto req : {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"}) {
        parsed r(req);
        CHECK(answered_400(r));
        CHECK_FALSE(r.done);
    }
    // Transfer-Encoding on HTTP/1.0 (§6.1: the server must treat the framing as faulty).
    CHECK(answered_400(parsed("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")));
}

TEST_CASE("request_parser: only chunked is decoded, as the final coding, once (§6.3, §7)", "[request_parser]")
{
    auto status = [](std::string_view te) {
        std::string req = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ";
        req += te;
        req += "\r\n\r\n0\r\n\r\n";
        return parsed(req).head.reject_status;
    };
    CHECK(status("chunked") == 0);
    CHECK(status("Chunked") == 0);
    CHECK(status("gzip") == 400);              // not chunked last: the length is unknown
    CHECK(status("chunked, gzip") == 400);
    CHECK(status("gzip, chunked") == 501);     // a coding this server cannot decode
    CHECK(status("chunked, chunked") == 400);  // chunked twice
}

TEST_CASE("request_parser: obs-fold is refused, never joined (§5.2)", "[request_parser]")
{
    CHECK(parsed("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n").head.reject_status == 400);
    CHECK(parsed("GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n\tsmuggled\r\n\r\n").head.reject_status == 400);
}

TEST_CASE("request_parser: a version other than 1.0 and 1.1 is refused", "[request_parser]")
{
    // Beast's own check; the connection tells a well-formed version (505) from garbage (400).
    CHECK(parsed("GET / HTTP/1.2\r\nHost: x\r\n\r\n").ec == bhttp::error::bad_version);
    CHECK(parsed("GET / HTTP/2.0\r\nHost: x\r\n\r\n").ec == bhttp::error::bad_version);
    CHECK(parsed("GET / HTTP/1.1\r\nHost: x\r\n\r\n").head.reject_status == 0);
}

TEST_CASE("request_parser: chunk extensions and chunk lines are checked", "[request_parser]")
{
    auto chunked = [](std::string_view body) {
        std::string req = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        req += body;
        return parsed(req);
    };
    auto ok = chunked("3;name=\"v\"\r\nabc\r\n0\r\n\r\n");
    CHECK_FALSE(ok.ec);
    CHECK(ok.done);
    CHECK(ok.body == "abc");
    // A control character inside a quoted extension value (RFC 9110 §5.6.4).
    CHECK(chunked(std::string("3;n=\"a\x01\"\r\nabc\r\n0\r\n\r\n")).ec == bhttp::error::bad_chunk_extension);
    // A quote not closed on its line: Beast would wait for more for ever.
    CHECK(chunked("3;n=\"abc\r\nabc\r\n").ec == bhttp::error::bad_chunk_extension);
    // A chunk line longer than the limit with no end in sight.
    CHECK(chunked("3;" + std::string(5000, 'a')).ec == bhttp::error::bad_chunk);
    // Trailer fields of a chunked body are read and dropped.
    auto trailers = chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
    CHECK_FALSE(trailers.ec);
    CHECK(trailers.done);
    CHECK(trailers.head.fields.size() == 2);
}
