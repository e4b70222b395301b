// cserve/detail/stream.hpp -- what a connection needs of its byte stream beyond Asio's
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_STREAM_HPP
#define CSERVE_DETAIL_STREAM_HPP

#include <cserve/detail/config.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>

#include <sys/socket.h>

// A connection is generic over its byte stream: an Asio AsyncReadStream and AsyncWriteStream
// with a lowest_layer() socket (addresses, cancel, close). stream_ops<Stream> adds what Asio
// does not name: the start of a connection, and a write or read that does not wait, which
// answers most requests without suspending. A stream under which such calls cannot be made
// (a TLS stream's records) says so with `try_io = false`, and the connection then always
// takes the asynchronous path.
namespace cserve::detail {

template <class Stream>
struct stream_ops; // a stream type the connections can use has a specialization

// A plain socket: TCP or a Unix socket.
template <class Protocol, class Executor>
struct stream_ops<boost::asio::basic_stream_socket<Protocol, Executor>> {
    using stream = boost::asio::basic_stream_socket<Protocol, Executor>;

    static constexpr bool try_io = true;
    static constexpr bool secure = false; // scheme http, ws

    // The connection begins: no Nagle delay on TCP, and writes and reads that do not wait.
    static void
    open(stream& s) noexcept
    {
        boost::system::error_code ec;
        auto local = s.local_endpoint(ec);
        if (!ec) {
            auto family = local.protocol().family();
            if (family == AF_INET || family == AF_INET6)
                s.set_option(boost::asio::ip::tcp::no_delay(true), ec);
        }
        s.non_blocking(true, ec);
    }

    // Writes what the socket takes now; 0 (and no error) when it takes nothing.
    template <class ConstBuffers>
    static std::size_t
    try_write(stream& s, ConstBuffers const& b, boost::system::error_code& ec) noexcept
    {
        auto n = s.write_some(b, ec);
        if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
            ec = {};
            n = 0;
        }
        return n;
    }

    // Reads what has arrived; would_block when nothing has.
    template <class MutableBuffers>
    static std::size_t
    try_read(stream& s, MutableBuffers const& b, boost::system::error_code& ec) noexcept
    {
        return s.read_some(b, ec);
    }

    // Looks at the socket without taking anything: an error when the peer is gone,
    // would_block when it is there and silent.
    static void
    peek(stream& s, boost::system::error_code& ec) noexcept
    {
        char c;
        s.receive(boost::asio::buffer(&c, 1), boost::asio::socket_base::message_peek, ec);
    }

    // Our side is done sending (the peer reads the end of the stream).
    static void
    shutdown_send(stream& s, boost::system::error_code& ec) noexcept
    {
        s.shutdown(boost::asio::socket_base::shutdown_send, ec);
    }

    // No TLS: nothing for scope::tls().
    static tls_source const*
    tls(stream&) noexcept
    {
        return nullptr;
    }
};

} // namespace cserve::detail

#endif
