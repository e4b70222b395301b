// tests/fuzz/fuzz_http1.cpp -- libFuzzer harness: bytes from a client into a real connection
// SPDX-License-Identifier: BSL-1.0
//
// Built twice: fuzz_http1, and fuzz_http2 (CSERVE_FUZZ_HTTP2), where the connection preface
// and an empty SETTINGS frame go first, so that the input is HTTP/2 frames for the
// connection's http2_session (nghttp2 underneath, cserve's streams and exchanges on top).
//
// The connection is the server's own (http1_connection over a plain socket, started as
// server_impl starts one), on one end of a socket pair; the input goes in at the other end.
// Its first byte says how the rest arrives: 0 in one write, N in writes of N bytes, each
// followed by a turn of the event loop, so that the parser sees every split. The client then
// ends its side and reads the responses to the end, so the run ends when the connection does:
// a connection that never ends is a hang libFuzzer reports (-timeout).
//
// The application behind it reaches the paths the bytes can take: by path it reads the body
// and echoes its size, streams a chunked response, answers HEAD and 204, throws before or
// after its response started, sends trailers, or (as a WebSocket) accepts and echoes.
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

#include "fuzz_app.hpp"
#include "fuzz_client.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace net = boost::asio;

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    if (size == 0)
        return 0;
    std::size_t const piece = data[0];
    std::string_view input(reinterpret_cast<char const*>(data) + 1, size - 1);
#if defined(CSERVE_FUZZ_HTTP2)
    // The preface and an empty SETTINGS frame, then the frames of the input.
    std::string framed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 33);
    framed.append(input);
    input = framed;
#endif

    net::io_context ioc{1};
    cserve::detail::server_impl srv(ioc, cserve_fuzz::app, cserve_fuzz::config());
    net::local::stream_protocol::socket client_end(ioc);
    net::local::stream_protocol::socket server_end(ioc);
    net::local::connect_pair(client_end, server_end);
    using connection = cserve::detail::http1_connection<cserve::detail::socket_type>;
    connection::start(std::make_shared<connection>(srv, cserve::detail::socket_type(std::move(server_end))));
    net::co_spawn(ioc, cserve_fuzz::client(client_end, input, piece), net::detached);
    ioc.run();
    return 0;
}
