// cserve/detail/http1_connection.hpp -- one HTTP/1.1 connection mapped to the event model
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP1_CONNECTION_HPP
#define CSERVE_DETAIL_HTTP1_CONNECTION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/buffer_pool.hpp>
#include <cserve/detail/request_parser.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cserve::detail {

class websocket_session;

// A session: reads requests with Beast's parser, runs the application once per request
// and writes its responses. One coroutine (run) drives it; the application's receive()
// and send() calls come in through the channel interface on the same executor.
class http1_connection final : public std::enable_shared_from_this<http1_connection>,
                               public list_hook,
                               public channel {
public:
    CSERVE_DECL http1_connection(server_impl& srv, socket_type socket);
    CSERVE_DECL ~http1_connection();

    // The session; keeps the connection alive until it ends.
    CSERVE_DECL static task<> run(std::shared_ptr<http1_connection> self);

    // Graceful shutdown: close now if idle, else after the response in flight.
    CSERVE_DECL void begin_drain() noexcept;

    // Close the socket and cancel the application.
    CSERVE_DECL void force_close() noexcept;

    net::any_io_executor get_executor() noexcept { return socket_.get_executor(); }
    net::cancellation_signal& cancel_signal() noexcept { return cancel_; }

    CSERVE_DECL task<event> receive() override;
    CSERVE_DECL task<> send(event e) override;

private:
    friend class websocket_session;

    using clock = std::chrono::steady_clock;
    enum class phase : unsigned char { idle, header, busy, closing };

    CSERVE_DECL task<> serve();
    CSERVE_DECL task<int> read_header();
    CSERVE_DECL int build_scope();
    CSERVE_DECL bool is_websocket_upgrade() const noexcept;
    CSERVE_DECL task<> call_app();
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
    CSERVE_DECL void finish_write(boost::system::error_code ec);
    CSERVE_DECL void release_idle_memory() noexcept;
    CSERVE_DECL void start_response(http::response_start& s);
    CSERVE_DECL void complete_response() noexcept;
    CSERVE_DECL void reset_request() noexcept;
    CSERVE_DECL void access_log() const;
    CSERVE_DECL void set_deadline(clock::time_point when);
    CSERVE_DECL void on_timer(boost::system::error_code ec);
    CSERVE_DECL std::size_t parse_buffered(boost::system::error_code& ec);

    server_impl& srv_;
    socket_type socket_;
    net::steady_timer timer_;
    net::steady_timer write_done_;
    net::cancellation_signal cancel_;  // the session's: terminal on force_close
    net::cancellation_signal monitor_; // the disconnect watch inside receive()
    clock::time_point deadline_ = clock::time_point::max();
    clock::time_point keep_alive_until_{}; // while idle_stage_: the keep-alive deadline

    boost::beast::basic_flat_buffer<pooled_allocator<char>> in_; // empty between requests
    char small_[256];             // where a connection with nothing buffered reads into
    request_head head_info_;
    body_target body_;
    std::optional<request_parser> parser_;
    std::string head_; // the request header block; the scope's views point into it
    std::string out_;  // the response head and chunk framing waiting to be written
    cserve::scope scope_;
    std::string client_text_; // "host:port" for the access log
    std::weak_ptr<websocket_session> ws_; // while the connection is a WebSocket

    phase phase_ = phase::idle; // a new connection counts as idle until its first byte
    bool timer_armed_ = false;
    bool timed_out_ = false;
    bool idle_stage_ = false; // idle, the timer set for idle_release
    bool releasing_ = false;  // the read was cancelled to give the buffers back
    bool draining_ = false;
    bool closed_ = false;
    bool disconnected_ = false;
    bool monitoring_ = false;
    bool writing_ = false;
    bool quiet_ = false; // no access-log line: a WebSocket denial logs its own

    // Per request.
    bool keep_alive_ = true;
    bool head_request_ = false;
    bool request_sent_ = false;
    bool body_complete_ = false;
    bool continue_pending_ = false;
    bool bad_body_ = false;
    bool started_ = false;
    bool head_written_ = false;
    bool body_done_ = false;
    bool complete_ = false;
    bool chunked_ = false;
    bool no_body_ = false;
    bool trailers_ = false;
    bool trailer_open_ = false;
    bool framing_pending_ = false; // content-length or chunked: told by the first body event
    std::uint32_t framing_at_ = 0; // where in out_ that header goes
    int status_ = 0;
    std::optional<std::uint64_t> length_;
    std::uint64_t sent_ = 0;
};

} // namespace cserve::detail

#endif
