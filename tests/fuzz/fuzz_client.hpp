// tests/fuzz/fuzz_client.hpp -- the client side of the connection harnesses
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_TESTS_FUZZ_CLIENT_HPP
#define CSERVE_TESTS_FUZZ_CLIENT_HPP

#include <cserve/task.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace cserve_fuzz {

// Writes `input` to `s` (the socket, or a TLS stream over it) in writes of `piece` bytes
// (0: one write), with two turns of the event loop after each, so that the server sees every
// split. Stops early when the server has closed.
template <class Stream>
cserve::task<>
write_in_pieces(Stream& s, std::string_view input, std::size_t piece)
{
    namespace net = boost::asio;
    auto ex = co_await net::this_coro::executor;
    while (!input.empty()) {
        auto n = piece == 0 ? input.size() : std::min(piece, input.size());
        auto [ec, written] = co_await net::async_write(s, net::buffer(input.data(), n), net::as_tuple(net::use_awaitable));
        if (ec)
            break; // the server closed: what it has not read is not its to read
        input.remove_prefix(n);
        co_await net::post(ex, net::use_awaitable);
        co_await net::post(ex, net::use_awaitable);
    }
}

// Ends the client's side (a TCP half-close) and reads until the server closes, keeping what
// it read in `output` (if given). The run ends when the connection does: one that never
// ends is a hang libFuzzer reports (-timeout).
inline cserve::task<>
end_and_drain(boost::asio::local::stream_protocol::socket& s, std::string* output = nullptr)
{
    namespace net = boost::asio;
    boost::system::error_code ec;
    s.shutdown(net::socket_base::shutdown_send, ec);
    char buf[16 * 1024];
    for (;;) {
        auto [rec, n] = co_await s.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
        if (rec)
            break;
        if (output)
            output->append(buf, n);
    }
    s.close(ec);
}

// The plain client: `input` in pieces, then end_and_drain.
inline cserve::task<>
client(boost::asio::local::stream_protocol::socket& s, std::string_view input, std::size_t piece,
       std::string* output = nullptr)
{
    co_await write_in_pieces(s, input, piece);
    co_await end_and_drain(s, output);
}

} // namespace cserve_fuzz

#endif
