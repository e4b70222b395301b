// Benchmark: the server a user would write with Boost.Beast alone, to compare cserve with
//
//   beast_server --port N [--host 127.0.0.1]
//
// One thread, one io_context, one coroutine per connection. GET on any path answers
// 200 "Hello, world!" (keep-alive as the request asks; pipelined requests wait in the
// read buffer); a WebSocket upgrade on any path becomes an echo without permessage-deflate.
// Timeouts as in Beast's own examples. Prints "listening on PORT" once bound; SIGINT or
// SIGTERM exits.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

net::awaitable<void>
echo(beast::tcp_stream stream, http::request<http::string_body> req)
{
    websocket::stream<beast::tcp_stream> ws(std::move(stream));
    beast::get_lowest_layer(ws).expires_never(); // the websocket stream keeps its own
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "beast"); }));
    co_await ws.async_accept(req, net::use_awaitable);
    beast::flat_buffer buffer;
    for (;;) {
        auto [ec, n] = co_await ws.async_read(buffer, use_tuple);
        if (ec)
            co_return; // closed, or gone
        ws.text(ws.got_text());
        auto [wec, wn] = co_await ws.async_write(buffer.data(), use_tuple);
        if (wec)
            co_return;
        buffer.consume(buffer.size());
    }
}

net::awaitable<void>
session(beast::tcp_stream stream)
{
    beast::flat_buffer buffer;
    for (;;) {
        http::request<http::string_body> req;
        stream.expires_after(std::chrono::seconds(30));
        auto [ec, n] = co_await http::async_read(stream, buffer, req, use_tuple);
        if (ec)
            co_return; // end_of_stream, timeout, bad request: the connection ends
        if (websocket::is_upgrade(req)) {
            co_await echo(std::move(stream), std::move(req));
            co_return;
        }
        http::response<http::string_body> res;
        res.version(req.version());
        res.set(http::field::server, "beast");
        if (req.method() == http::verb::get) {
            res.result(http::status::ok);
            res.set(http::field::content_type, "text/plain");
            res.body() = "Hello, world!";
        } else {
            res.result(http::status::method_not_allowed);
        }
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
        if (wec)
            co_return;
        if (!res.keep_alive())
            break;
    }
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

net::awaitable<void>
listen(tcp::acceptor& acceptor)
{
    net::steady_timer backoff(acceptor.get_executor());
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
        if (ec == net::error::operation_aborted || !acceptor.is_open())
            co_return;
        if (ec) {
            // Out of descriptors: the connection stays queued, so wait instead of spinning.
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        socket.set_option(tcp::no_delay(true), ec);
        net::co_spawn(acceptor.get_executor(), session(beast::tcp_stream(std::move(socket))),
                      [](std::exception_ptr e) {
                          // One connection's failure ends that connection only.
                          try {
                              if (e)
                                  std::rethrow_exception(e);
                          } catch (std::exception const& ex) {
                              std::fprintf(stderr, "session: %s\n", ex.what());
                          }
                      });
    }
}

int
usage(char const* program)
{
    std::fprintf(stderr, "usage: %s --port N [--host 127.0.0.1]\n", program);
    return 2;
}

} // namespace

int
main(int argc, char** argv)
{
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    bool have_port = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (i + 1 >= argc)
            return usage(argv[0]);
        std::string_view value = argv[++i];
        if (arg == "--host") {
            host = value;
        } else if (arg == "--port") {
            auto r = std::from_chars(value.data(), value.data() + value.size(), port);
            if (r.ec != std::errc() || r.ptr != value.data() + value.size())
                return usage(argv[0]);
            have_port = true;
        } else {
            return usage(argv[0]);
        }
    }
    if (!have_port)
        return usage(argv[0]);

    try {
        net::io_context ioc(1);
        tcp::endpoint endpoint(net::ip::make_address(host), port);
        tcp::acceptor acceptor(ioc, endpoint); // open, SO_REUSEADDR, bind, listen
        net::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](beast::error_code, int) { ioc.stop(); });
        std::printf("listening on %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
        std::fflush(stdout);
        net::co_spawn(ioc, listen(acceptor), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
        ioc.run();
    } catch (std::exception const& e) {
        std::fprintf(stderr, "beast_server: %s\n", e.what());
        return 1;
    }
    return 0;
}
