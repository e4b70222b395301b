// cserve/detail/http1/connection.hpp -- one HTTP/1.1 connection over a byte stream
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP1_CONNECTION_HPP
#define CSERVE_DETAIL_HTTP1_CONNECTION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/buffer_pool.hpp>
#include <cserve/detail/exchange.hpp>
#include <cserve/detail/http1/request_parser.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/detail/websocket/upgrade.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/version.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>

namespace cserve::detail {

template <class Stream>
class websocket_session;
template <class Stream>
class http2_session;
namespace http2 {
struct upgrade_request;
}

// The inline buffer an idle connection reads into. Most requests of benchmarks and API
// clients fit; a longer one costs one more recv.
inline constexpr std::size_t idle_read_size = 128;

// Room inside a connection for the one operation it has between requests: the idle read,
// or the post that starts it. An idle connection thus costs no allocation of its own, and
// a keep-alive request no malloc for either. What does not fit (another platform's
// operation) is allocated as usual.
struct op_slot {
    alignas(std::max_align_t) unsigned char bytes[192];
    bool used = false;

    template <class T>
    struct allocator {
        using value_type = T;

        op_slot* slot;

        allocator(op_slot& s) noexcept : slot(&s) {}
        template <class U>
        allocator(allocator<U> const& other) noexcept : slot(other.slot)
        {
        }

        T*
        allocate(std::size_t n)
        {
            if (!slot->used && n * sizeof(T) <= sizeof(slot->bytes) && alignof(T) <= alignof(std::max_align_t)) {
                slot->used = true;
                return reinterpret_cast<T*>(slot->bytes);
            }
            return static_cast<T*>(::operator new(n * sizeof(T)));
        }

        void
        deallocate(T* p, std::size_t) noexcept
        {
            if (static_cast<void*>(p) == slot->bytes)
                slot->used = false;
            else
                ::operator delete(p);
        }

        template <class U>
        friend bool
        operator==(allocator const& a, allocator<U> const& b) noexcept
        {
            return a.slot == b.slot;
        }
    };
};

// What a connection needs only while it has a request to read or answer: the read buffer,
// the parser, the header block, the scope and the response head. An idle keep-alive
// connection holds none of it. Taken from and given back to a small per-thread cache, so
// that the strings and vectors keep their capacity from one request to the next and the
// hot path does not allocate; the peak is about (connections busy at once) x this.
struct request_state {
    struct recycle {
        CSERVE_DECL void operator()(request_state* r) const noexcept;
    };
    using ptr = std::unique_ptr<request_state, recycle>;

    CSERVE_DECL static ptr take();

    request_buffer in;
    request_head head_info;
    body_target body;
    std::optional<request_parser> parser;
    std::string head; // the request header block; the scope's views point into it
    std::string out;  // the response head and chunk framing waiting to be written
    cserve::scope scope;
    exchange x;                // the ASGI side of the request and its response
    std::string_view head_end; // what follows the framing header a body event decides
};

namespace http1 {

inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// parse_header(): the header is not complete yet.
inline constexpr int need_more = -2;

// The most request body handed to the application in one event, and so about the most
// body the connection buffers.
inline constexpr std::size_t body_chunk = 64 * 1024;

// How much of an unread request body is read and dropped to keep a connection alive.
inline constexpr std::uint64_t discard_limit = 1024 * 1024;

// How many send() calls in a row may write nothing before one yields to the loop and looks at
// the socket (see pause_unwritten): a post and a system call cost several times such a call.
inline constexpr unsigned unwritten_send_run = 16;

} // namespace http1

// One HTTP/1.1 connection over a byte stream (stream.hpp): reads requests with Beast's
// parser, runs the application once per request and writes its responses; the ASGI rules of
// each request and response are the exchange in its request_state (exchange.hpp). Between
// requests the connection waits for bytes with a plain completion handler and holds no
// coroutine frame and no request_state: just this object and the pending read. When bytes arrive, serve() is
// started and runs until the connection is idle again (or ends). The application's receive()
// and send() calls come in through the channel interface on the same executor. A WebSocket
// upgrade hands the stream over to a websocket_session (upgrade.hpp).
//
// The members are defined in impl/http1/: connection.ipp (the connection's life: idle,
// the request loop, deadlines, closing), request.ipp (the header, the scope, the body,
// receive()) and response.ipp (send(), the response's framing and writing, error responses).
// Those hold templates only: with separate compilation the library has them for socket_type,
// and a translation unit that includes them (and impl/websocket/) can use another stream.
template <class Stream>
class http1_connection final : public std::enable_shared_from_this<http1_connection<Stream>>,
                               public connection,
                               public channel,
                               private upgrade_host {
public:
    // The stream is made in place from `args` (a plain socket; a socket and a TLS context).
    template <class... Args>
    explicit http1_connection(server_impl& srv, Args&&... args);
    ~http1_connection();

    // Starts the session, on the connection's executor; `self` keeps it alive until it
    // ends.
    static void start(std::shared_ptr<http1_connection> self);

    // Graceful shutdown: close now if idle, else after the response in flight.
    void begin_drain() noexcept override;

    // Close the stream and cancel the application.
    void force_close() noexcept override;

    std::shared_ptr<connection> lock() noexcept override { return this->weak_from_this().lock(); }
    net::any_io_executor executor() noexcept override { return stream_.get_executor(); }

    typename Stream::executor_type get_executor() noexcept { return stream_.get_executor(); }

    // Whether a request_state is held (it is not while idle); for tests.
    bool holds_request_state() const noexcept { return req_ != nullptr; }
    // Whether the pending idle read sits in the connection's op_slot, not on the heap.
    bool idle_read_inline() const noexcept { return op_slot_.used; }

    task<event> receive() override;
    task<> send(event e) override;

    void deadline_passed(std::uint32_t epoch, bool one_thread) noexcept override;

private:
    using clock = std::chrono::steady_clock;
    using ops = stream_ops<Stream>;
    enum class phase : unsigned char { idle, header, busy, closing };

    std::string client_text() const; // "host:port" for the access log

    // connection.ipp
    struct slot_handler;
    struct handshake_handler;
    void wait_idle();
    void on_readable(boost::system::error_code ec);
    void on_handshake(boost::system::error_code ec);
    void on_idle_read(boost::system::error_code ec, std::size_t n);
    void close_idle() noexcept;
    void on_deadline(std::uint32_t epoch) noexcept;
    static void begin(std::shared_ptr<http1_connection> self);
    task<bool> read_proxy_header();
#if CSERVE_DETAIL_DIRECT_LAUNCH
    using serve_task = direct_task;
#else
    using serve_task = task<>;
#endif
    serve_task serve(std::shared_ptr<http1_connection> self);
    void after_serve(std::exception_ptr e) noexcept;
    task<> run_websocket();
    bool may_be_http2() noexcept;
    task<int> detect_http2();
    bool is_h2c_upgrade() const noexcept;
    task<int> upgrade_h2c();
    task<> run_http2(std::optional<http2::upgrade_request> up);
    task<> close_gracefully(bool linger);

    // request.ipp
    void start_request();
    int parse_header(std::size_t& parsed);
    task<int> read_header(std::size_t parsed);
    int build_scope();
    bool is_websocket_upgrade() const noexcept;
    std::size_t parse_buffered(boost::system::error_code& ec);
    task<bool> discard_body();
    task<event> read_body();
    task<event> wait_disconnect();
    task<> write_continue();

    // response.ipp
    task<> after_app(std::exception_ptr failure);
    task<> respond_simple(int status, std::string_view body);
    task<> write_error(int status);
    task<> write_body(std::string const& body, bool more);
    task<> write_trailers(http::response_trailers const& t);
    task<> write_early_hint(http::response_early_hint const& hint);
    task<> write_out(net::const_buffer body, std::string_view tail);
    bool prepare_body(std::string const& body, bool more, std::string_view& tail);
    bool write_now(net::const_buffer body, std::string_view tail, std::size_t& done);
    task<> write_rest(net::const_buffer body, std::string_view tail, std::size_t done);
    task<> pause_unwritten();
    void finish_write(boost::system::error_code ec);
    void start_response(http::response_start& s);
    void complete_response() noexcept;
    void access_log() const;

    // upgrade_host: what a WebSocket session asks of the connection it came from.
    task<> http_send(event e) override;
    task<> http_deny(int status, std::string_view body) override;
    task<> http_wait() override;
    exchange const& http_exchange() const noexcept override { return req_->x; }
    bool http_receiving() const noexcept override { return monitoring_; }
    bool closed() const noexcept override { return closed_; }
    bool draining() const noexcept override { return draining_; }
    void linger() noexcept override;

    server_impl& srv_;
    Stream stream_;
    request_state::ptr req_;     // while there is a request to read or answer
    net::cancellation_signal cancel_;  // serve()'s: terminal on force_close
    net::cancellation_signal monitor_; // the disconnect watch inside receive()
    net::steady_timer* write_waiter_ = nullptr; // send() waiting for a 100 Continue write
    std::weak_ptr<websocket_session<Stream>> ws_; // while the connection is a WebSocket
    std::weak_ptr<http2_session<Stream>> h2_;     // while the connection speaks HTTP/2
    std::optional<address> client_;
    std::optional<address> server_;

    phase phase_ = phase::idle; // a new connection counts as idle until its first byte
    bool timed_out_ = false;
    bool draining_ = false;
    bool closed_ = false;
    bool monitoring_ = false;
    bool writing_ = false;
    bool quiet_ = false; // no access-log line: a WebSocket denial logs its own
    bool fresh_ = true;  // no request yet: the first bytes may be HTTP/2's preface
    unsigned char unwritten_sends_ = 0; // send() calls that wrote nothing: see pause_unwritten

    // HTTP/1.1 framing of the response being written.
    bool chunked_ = false;
    bool trailer_open_ = false;
    bool framing_pending_ = false; // content-length or chunked: told by the first body event

    // Where an idle connection reads: a request that fits costs one recv, as it would
    // into a read buffer; a longer one is read on into request_state::in.
    char small_[idle_read_size];
    op_slot op_slot_;
};

#if !defined(CSERVE_HEADER_ONLY)
extern template class http1_connection<socket_type>;
#endif

// What the scope says of the stream: the scheme, and the ASGI extensions of an HTTP request.
template <class Stream>
inline constexpr std::string_view http_scheme = stream_ops<Stream>::secure ? "https" : "http";

} // namespace cserve::detail

#endif
