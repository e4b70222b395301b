// cserve/detail/http1_connection.hpp -- one HTTP/1.1 connection mapped to the event model
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP1_CONNECTION_HPP
#define CSERVE_DETAIL_HTTP1_CONNECTION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/buffer_pool.hpp>
#include <cserve/detail/request_parser.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/version.hpp>
#include <boost/asio/steady_timer.hpp>
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

class websocket_session;

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

    boost::beast::basic_flat_buffer<pooled_allocator<char>> in;
    request_head head_info;
    body_target body;
    std::optional<request_parser> parser;
    std::string head; // the request header block; the scope's views point into it
    std::string out;  // the response head and chunk framing waiting to be written
    cserve::scope scope;
    std::optional<std::uint64_t> length;
    std::uint64_t sent = 0;
    int status = 0;
    std::string_view head_end; // what follows the framing header a body event decides
};

// A session: reads requests with Beast's parser, runs the application once per request
// and writes its responses. Between requests the connection waits for bytes with a plain
// completion handler and holds no coroutine frame and no request_state: just this object
// and the pending read. When bytes arrive, serve() is started and runs until the
// connection is idle again (or ends). The application's receive() and send() calls come in
// through the channel interface on the same executor.
class http1_connection final : public std::enable_shared_from_this<http1_connection>,
                               public list_hook,
                               public deadline_entry,
                               public channel {
public:
    CSERVE_DECL http1_connection(server_impl& srv, socket_type socket);
    CSERVE_DECL ~http1_connection();

    // Starts the session, on the connection's executor; `self` keeps it alive until it
    // ends.
    CSERVE_DECL static void start(std::shared_ptr<http1_connection> self);

    // Graceful shutdown: close now if idle, else after the response in flight.
    CSERVE_DECL void begin_drain() noexcept;

    // Close the socket and cancel the application.
    CSERVE_DECL void force_close() noexcept;

    net::any_io_executor get_executor() noexcept { return socket_.get_executor(); }

    // Whether a request_state is held (it is not while idle); for tests.
    bool holds_request_state() const noexcept { return req_ != nullptr; }
    // Whether the pending idle read sits in the connection's op_slot, not on the heap.
    bool idle_read_inline() const noexcept { return op_slot_.used; }

    CSERVE_DECL task<event> receive() override;
    CSERVE_DECL task<> send(event e) override;

    CSERVE_DECL void deadline_passed(std::uint32_t epoch, bool one_thread) noexcept override;

private:
    friend class websocket_session;

    using clock = std::chrono::steady_clock;
    enum class phase : unsigned char { idle, header, busy, closing };

    // For websocket_session: the request that asked for the upgrade.
    cserve::scope& scope() noexcept { return req_->scope; }
    request_head const& head_info() const noexcept { return req_->head_info; }
    std::string const& head() const noexcept { return req_->head; }
    CSERVE_DECL std::string client_text() const; // "host:port" for the access log

    struct slot_handler;
    CSERVE_DECL void wait_idle();
    CSERVE_DECL void on_idle_read(boost::system::error_code ec, std::size_t n);
    CSERVE_DECL void close_idle() noexcept;
    CSERVE_DECL void on_deadline(std::uint32_t epoch) noexcept;
#if CSERVE_DETAIL_DIRECT_LAUNCH
    using serve_task = direct_task;
#else
    using serve_task = task<>;
#endif
    CSERVE_DECL serve_task serve(std::shared_ptr<http1_connection> self);
    CSERVE_DECL void after_serve(std::exception_ptr e) noexcept;
    CSERVE_DECL void start_request();
    CSERVE_DECL int parse_header(std::size_t& parsed);
    CSERVE_DECL task<int> read_header(std::size_t parsed);
    CSERVE_DECL int build_scope();
    CSERVE_DECL bool is_websocket_upgrade() const noexcept;
    CSERVE_DECL task<> after_app(std::exception_ptr failure);
    CSERVE_DECL task<> run_websocket();
    CSERVE_DECL task<> respond_simple(int status, std::string_view body);
    CSERVE_DECL task<> write_error(int status);
    CSERVE_DECL task<bool> discard_body();
    CSERVE_DECL task<> close_gracefully(bool linger);
    CSERVE_DECL task<event> read_body();
    CSERVE_DECL task<event> wait_disconnect();
    CSERVE_DECL task<> write_continue();
    CSERVE_DECL task<> write_body(std::string const& body, bool more);
    CSERVE_DECL task<> write_trailers(http::response_trailers const& t);
    CSERVE_DECL task<> write_out(net::const_buffer body, std::string_view tail);
    CSERVE_DECL bool prepare_body(std::string const& body, bool more, std::string_view& tail);
    CSERVE_DECL bool write_now(net::const_buffer body, std::string_view tail, std::size_t& done);
    CSERVE_DECL task<> write_rest(net::const_buffer body, std::string_view tail, std::size_t done);
    CSERVE_DECL task<> pause_unwritten();
    CSERVE_DECL void finish_write(boost::system::error_code ec);
    CSERVE_DECL void start_response(http::response_start& s);
    CSERVE_DECL void complete_response() noexcept;
    CSERVE_DECL void reset_request() noexcept;
    CSERVE_DECL void access_log() const;
    CSERVE_DECL std::size_t parse_buffered(boost::system::error_code& ec);

    server_impl& srv_;
    socket_type socket_;
    request_state::ptr req_;     // while there is a request to read or answer
    net::cancellation_signal cancel_;  // serve()'s: terminal on force_close
    net::cancellation_signal monitor_; // the disconnect watch inside receive()
    net::steady_timer* write_waiter_ = nullptr; // send() waiting for a 100 Continue write
    std::weak_ptr<websocket_session> ws_; // while the connection is a WebSocket
    std::optional<address> client_;
    std::optional<address> server_;


    phase phase_ = phase::idle; // a new connection counts as idle until its first byte
    bool timed_out_ = false;
    bool draining_ = false;
    bool closed_ = false;
    bool disconnected_ = false;
    bool monitoring_ = false;
    bool writing_ = false;
    bool quiet_ = false; // no access-log line: a WebSocket denial logs its own
    unsigned char unwritten_sends_ = 0; // send() calls that wrote nothing: see pause_unwritten

    // Per request.
    bool keep_alive_ = true;
    bool head_request_ = false;
    bool request_sent_ = false;
    bool body_complete_ = false;
    bool continue_pending_ = false;
    bool bad_body_ = false;
    bool started_ = false;
    bool head_written_ = false; // some of the response may be on the wire: it cannot be replaced
    bool body_done_ = false;
    bool complete_ = false;
    bool chunked_ = false;
    bool no_body_ = false;
    bool trailers_ = false;
    bool trailer_open_ = false;
    bool framing_pending_ = false; // content-length or chunked: told by the first body event

    // Where an idle connection reads: a request that fits costs one recv, as it would
    // into a read buffer; a longer one is read on into request_state::in.
    char small_[idle_read_size];
    op_slot op_slot_;
};

} // namespace cserve::detail

#endif
