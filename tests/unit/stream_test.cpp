// tests/unit/stream_test.cpp -- a connection over a byte stream that is not a plain socket
// SPDX-License-Identifier: BSL-1.0
//
// http1_connection, websocket_session and http2_session are generic over their stream
// (detail/stream.hpp); a translation unit that uses another stream includes their impl/ files.
// This drives them over a stream that, like a TLS stream, offers only Asio's asynchronous
// reads and writes: no write or read that does not wait, so every response takes the
// asynchronous path, and the loop-yield of a send() that writes nothing only peeks.
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/impl/http1/connection.ipp>
#include <cserve/impl/http1/request.ipp>
#include <cserve/impl/http1/response.ipp>
#include <cserve/impl/websocket/io.ipp>
#include <cserve/impl/websocket/session.ipp>
#include <cserve/impl/http2/session.ipp>

#include "catch.hpp"
#include "test_server.hpp"

#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include <sys/socket.h>
#include <sys/time.h>

namespace net = boost::asio;
namespace ct = cserve_test;
using cserve::detail::socket_type;

namespace {

struct io_counts {
    std::atomic<int> reads{0};
    std::atomic<int> writes{0};
};

// Reads and writes only through the asynchronous operations of the socket under it, and
// counts them.
class async_only_stream {
public:
    using executor_type = socket_type::executor_type;
    using next_layer_type = socket_type;
    using lowest_layer_type = socket_type::lowest_layer_type;

    async_only_stream(socket_type s, std::shared_ptr<io_counts> counts)
        : s_(std::move(s))
        , counts_(std::move(counts))
    {
    }

    executor_type get_executor() noexcept { return s_.get_executor(); }
    lowest_layer_type& lowest_layer() noexcept { return s_.lowest_layer(); }
    socket_type& next_layer() noexcept { return s_; }
    socket_type& socket() noexcept { return s_; }

    template <class MutableBuffers, class Handler>
    auto
    async_read_some(MutableBuffers const& b, Handler&& h)
    {
        ++counts_->reads;
        return s_.async_read_some(b, std::forward<Handler>(h));
    }

    template <class ConstBuffers, class Handler>
    auto
    async_write_some(ConstBuffers const& b, Handler&& h)
    {
        ++counts_->writes;
        return s_.async_write_some(b, std::forward<Handler>(h));
    }

private:
    socket_type s_;
    std::shared_ptr<io_counts> counts_;
};

// Beast's WebSocket teardown, found by argument-dependent lookup as a TLS stream's is.
template <class Handler>
void
async_teardown(boost::beast::role_type role, async_only_stream& s, Handler&& h)
{
    boost::beast::websocket::async_teardown(role, s.socket(), std::forward<Handler>(h));
}

} // namespace

template <>
struct cserve::detail::stream_ops<async_only_stream> {
    static constexpr bool try_io = false;
    static constexpr bool secure = false;

    static cserve::tls_source const*
    tls(async_only_stream&) noexcept
    {
        return nullptr;
    }

    static void
    open(async_only_stream& s) noexcept
    {
        boost::system::error_code ec;
        s.socket().non_blocking(true, ec); // for peek() only
    }

    static void
    peek(async_only_stream& s, boost::system::error_code& ec) noexcept
    {
        char c;
        s.socket().receive(net::buffer(&c, 1), net::socket_base::message_peek, ec);
    }

    static void
    shutdown_send(async_only_stream& s, boost::system::error_code& ec) noexcept
    {
        s.socket().shutdown(net::socket_base::shutdown_send, ec);
    }
};

namespace {

using connection = cserve::detail::http1_connection<async_only_stream>;

// Serves one connection over an async_only_stream on a thread of its own, its client end on
// the caller's; the client's reads give up after 20 s rather than hang.
class one_connection {
public:
    explicit one_connection(cserve::app_function app)
        : srv_(ioc_, std::move(app), ct::test_config())
        , client(client_ioc_)
    {
        net::local::stream_protocol::socket server_end(ioc_);
        net::local::connect_pair(client, server_end);
        timeval tv{20, 0};
        ::setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        auto c = std::make_shared<connection>(srv_, async_only_stream(socket_type(std::move(server_end)), counts));
        connection::start(std::move(c));
        thread_ = std::thread([this] { ioc_.run(); });
    }

    // Closes the client end and waits for the connection to end.
    void
    finish()
    {
        boost::system::error_code ec;
        client.close(ec);
        if (thread_.joinable())
            thread_.join();
    }

    ~one_connection() { finish(); }

    std::shared_ptr<io_counts> counts = std::make_shared<io_counts>();

private:
    net::io_context ioc_{1};
    net::io_context client_ioc_{1};
    cserve::detail::server_impl srv_;
    std::thread thread_;

public:
    net::local::stream_protocol::socket client;
};

cserve::task<>
path_and_size(cserve::scope& s, cserve::receive receive, cserve::send send)
{
    co_await receive();
    std::string body = s.path == "/big" ? std::string(1 << 20, 'x') : s.path;
    co_await send(cserve::http::response_start{.status = 200});
    co_await send(cserve::http::response_body{std::move(body), false});
}

} // namespace

TEST_CASE("stream: HTTP/1.1 over a stream with asynchronous reads and writes only", "[stream][http1]")
{
    one_connection c(path_and_size);
    net::write(c.client, net::buffer(std::string_view("GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                                                       "GET /big HTTP/1.1\r\nHost: t\r\n\r\n")));
    boost::beast::flat_buffer buf;
    namespace bhttp = boost::beast::http;
    bhttp::response<bhttp::string_body> first, second, third;
    boost::system::error_code ec1, ec2, ec3;
    bhttp::read(c.client, buf, first, ec1);
    bhttp::read(c.client, buf, second, ec2);
    net::write(c.client, net::buffer(std::string_view("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")));
    bhttp::read(c.client, buf, third, ec3);
    c.finish();

    REQUIRE_FALSE(ec1);
    REQUIRE_FALSE(ec2);
    REQUIRE_FALSE(ec3);
    CHECK(first.result_int() == 200);
    CHECK(first.body() == "/a");
    CHECK(second.body() == std::string(1 << 20, 'x'));
    CHECK(third.body() == "/b");
    CHECK(third.keep_alive());
    // Every response went out through the stream's asynchronous writes.
    CHECK(c.counts->writes >= 3);
    CHECK(c.counts->reads >= 2);
}

TEST_CASE("stream: an endless HEAD body still yields, and a client that left is noticed by a peek",
          "[stream][http1][head]")
{
    std::atomic<bool> gone{false};
    std::atomic<int> sends{0};
    auto app = [&](cserve::scope&, cserve::receive, cserve::send send) -> cserve::task<> {
        co_await send(cserve::http::response_start{.status = 200});
        try {
            for (;;) {
                co_await send(cserve::http::response_body{"x", true});
                ++sends;
            }
        } catch (cserve::client_disconnected const&) {
            gone = true;
        }
    };
    one_connection c(app);
    net::write(c.client, net::buffer(std::string_view("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")));
    std::string head;
    boost::system::error_code ec;
    net::read_until(c.client, net::dynamic_buffer(head), "\r\n\r\n", ec);
    c.finish(); // returns only once the application has ended and the connection with it

    REQUIRE_FALSE(ec);
    CHECK(head.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(head.find("transfer-encoding: chunked") != std::string::npos);
    CHECK(gone);
    CHECK(sends > 0);
}

TEST_CASE("stream: a WebSocket over a stream with asynchronous reads and writes only", "[stream][websocket]")
{
    std::atomic<int> close_code{0};
    auto app = [&](cserve::scope& s, cserve::receive receive, cserve::send send) -> cserve::task<> {
        if (s.type != cserve::scope_type::websocket)
            co_return;
        co_await receive(); // websocket.connect
        co_await send(cserve::websocket::accept{});
        for (;;) {
            auto e = co_await receive();
            if (auto* m = std::get_if<cserve::websocket::receive>(&e)) {
                co_await send(cserve::websocket::send{.bytes = m->bytes, .text = m->text});
                continue;
            }
            if (auto* d = std::get_if<cserve::websocket::disconnect>(&e))
                close_code = d->code;
            co_return;
        }
    };
    one_connection c(app);
    boost::beast::websocket::stream<net::local::stream_protocol::socket&> ws(c.client);
    boost::system::error_code hec, wec, rec, cec;
    ws.handshake("t", "/ws", hec);
    std::string big(100000, 'y');
    boost::beast::flat_buffer reply1, reply2;
    if (!hec) {
        ws.write(net::buffer(std::string_view("hi")), wec);
        ws.read(reply1, rec);
        ws.write(net::buffer(big), wec);
        ws.read(reply2, rec);
        ws.close(boost::beast::websocket::close_code::normal, cec);
    }
    c.finish();

    REQUIRE_FALSE(hec);
    REQUIRE_FALSE(wec);
    REQUIRE_FALSE(rec);
    CHECK_FALSE(cec);
    CHECK(boost::beast::buffers_to_string(reply1.data()) == "hi");
    CHECK(boost::beast::buffers_to_string(reply2.data()) == big);
    CHECK(close_code == 1000);
    CHECK(c.counts->writes >= 3); // the 101 and the two messages, all asynchronous
}
