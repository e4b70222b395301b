// cserve/detail/http2/session.hpp -- HTTP/2 over a connection's byte stream, on nghttp2
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_HTTP2_SESSION_HPP
#define CSERVE_DETAIL_HTTP2_SESSION_HPP

#include <cserve/detail/config.hpp>

#if CSERVE_HTTP2

#include <cserve/detail/exchange.hpp>
#include <cserve/detail/http2/tunnel.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/websocket/upgrade.hpp>
#include <cserve/detail/stream.hpp>
#include <cserve/app.hpp>
#include <cserve/event.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

struct nghttp2_session;

// HTTP/2 (RFC 9113) with nghttp2 doing the framing, HPACK, flow control and its flood
// mitigations. A session runs on the connection's executor with no thread of its own: a
// reader feeds what arrives to nghttp2, a writer sends what nghttp2 has to send (the frames of
// every stream that has something, gathered into one write), and each stream is an exchange
// (exchange.hpp) whose application runs as a coroutine of its own. The HTTP/1.1 connection
// that detected HTTP/2 (the preface, ALPN "h2", or an Upgrade: h2c) keeps the stream and its
// place in the server, and hands both to the session until it ends, as it does for a
// WebSocket.
namespace cserve::detail {

namespace http2 {

// The client connection preface (RFC 9113 §3.4).
inline constexpr std::string_view preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Whether `bytes`, the first of a connection, begin with the preface: yes (all 24 bytes are
// there), no, or maybe (a prefix of it: read on).
enum class preface_match : unsigned char { no, maybe, yes };

inline preface_match
match_preface(std::string_view bytes) noexcept
{
    auto n = bytes.size() < preface.size() ? bytes.size() : preface.size();
    if (bytes.substr(0, n) != preface.substr(0, n))
        return preface_match::no;
    return n == preface.size() ? preface_match::yes : preface_match::maybe;
}

// A request that asked to upgrade to h2c (RFC 7540 §3.2): it becomes stream 1.
struct upgrade_request {
    std::string settings; // the HTTP2-Settings payload, decoded
    std::string method;
    std::string target;
    std::vector<std::pair<std::string, std::string>> headers; // lower-case names, no hop-by-hop ones
    std::string body;
};

// Decodes base64url without padding (HTTP2-Settings, RFC 7540 §3.2.1); false if malformed.
inline bool
decode_base64url(std::string_view in, std::string& out)
{
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z')
            return c - 'A';
        if (c >= 'a' && c <= 'z')
            return c - 'a' + 26;
        if (c >= '0' && c <= '9')
            return c - '0' + 52;
        if (c == '-')
            return 62;
        if (c == '_')
            return 63;
        return -1;
    };
    while (!in.empty() && in.back() == '=')
        in.remove_suffix(1);
    if (in.size() % 4 == 1)
        return false;
    out.clear();
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        int v = value(c);
        if (v < 0)
            return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return true;
}

} // namespace http2

template <class Stream>
class http2_session;

template <class Stream>
class websocket_session;

// What a session takes over from the connection that detected HTTP/2.
template <class Stream>
struct http2_start {
    server_impl& srv;
    Stream& stream;
    std::string buffered; // bytes read past the detection (the preface and what follows)
    std::optional<address> client;
    std::optional<address> server;
    std::string client_text;              // "host:port" for the access log
    std::optional<http2::upgrade_request> upgrade;
    std::shared_ptr<void> owner;          // keeps the stream alive
};

// One stream: its request as it arrives, its scope, its exchange and what its response has
// left to send. Owned by the session's map while nghttp2 has it open, and by its
// application's coroutine while that runs. An extended CONNECT for a WebSocket (RFC 8441)
// becomes a WebSocket session over the stream: the stream is then its tunnel's backend and
// the host of its handshake, as an HTTP/1.1 connection is for an upgrade.
template <class Stream>
class http2_stream final : public channel, public upgrade_host, public http2_tunnel_backend {
public:
    http2_stream(http2_session<Stream>& s, std::int32_t id);
    ~http2_stream();

    task<event> receive() override;
    task<> send(event e) override;

    // upgrade_host: the WebSocket's handshake and its denial response.
    task<> http_send(event e) override;
    exchange const& http_exchange() const noexcept override { return x_; }
    task<> http_deny(int status, std::string_view body) override;
    task<> http_wait() override;
    bool http_receiving() const noexcept override { return http_receiving_; }
    bool closed() const noexcept override;
    bool draining() const noexcept override;
    void linger() noexcept override;

    // http2_tunnel_backend: the WebSocket's bytes.
    std::size_t tunnel_read(net::mutable_buffer b) override;
    bool tunnel_read_end() const noexcept override { return in_end_ && in_.empty(); }
    bool tunnel_gone() const noexcept override;
    void tunnel_write(std::string_view bytes) override;
    bool tunnel_writing() const noexcept override { return out_pos_ < out_.size(); }
    std::uint64_t tunnel_taken() const noexcept override { return taken_; }
    void tunnel_respond(int status, header_list headers) override;
    void tunnel_end() noexcept override;
    void tunnel_reset() noexcept override;
    void tunnel_stalled() noexcept override;

private:
    friend class http2_session<Stream>;

    struct span {
        std::uint32_t pos = 0;
        std::uint32_t len = 0;
        std::string_view in(std::string const& s) const noexcept { return {s.data() + pos, len}; }
    };

    bool add_header(std::string_view name, std::string_view value);
    int build_scope();
    task<> wait(); // until wake(); throws operation_aborted when the caller is cancelled
    void wake() noexcept
    {
        wake_.cancel();
        if (tunnel_)
            tunnel_->wake();
    }
    void submit_head(bool end_stream);
    void submit_simple(int status, std::string_view body);
    task<> after_app(std::exception_ptr failure);
    void access_log() const;
    void closed_by_peer(std::uint32_t error) noexcept;

    http2_session<Stream>& s_;
    std::int32_t id_;
    std::string block_;                      // the request's header names and values
    std::vector<std::pair<span, span>> fields_;
    span method_, path_, authority_, scheme_, protocol_;
    bool has_host_ = false;
    bool too_large_ = false;                 // the header list passed max_header_bytes
    std::size_t header_bytes_ = 0;           // the header list's size, as RFC 9113 §6.5.2 counts it
    bool started_ = false;                   // the application runs (or ran)
    bool app_done_ = false;                  // and has finished
    bool upgraded_ = false;                  // stream 1 of an h2c upgrade: its body came over HTTP/1.1
    bool closed_ = false;                    // nghttp2 closed the stream
    bool websocket_ = false;                 // an extended CONNECT with :protocol websocket
    bool http_receiving_ = false;            // its application waits in receive() before the handshake
    std::uint64_t declared_length_ = 0;      // content-length, if any
    bool has_length_ = false;
    cserve::scope scope_;
    exchange x_;
    request_meter meter_; // from run_stream's start to its end
    net::steady_timer wake_;
    net::cancellation_signal cancel_;

    // The request body: what has arrived and not been handed to the application.
    std::string in_;
    bool in_end_ = false;
    std::uint64_t received_ = 0;

    // The response: its head until the first body event, then what nghttp2 has not taken.
    std::optional<http::response_start> head_;
    std::string out_;
    std::size_t out_pos_ = 0;
    bool out_end_ = false;      // the body is all in out_
    bool data_deferred_ = false; // nghttp2 waits for resume_data
    std::uint64_t taken_ = 0;    // body bytes nghttp2 has taken: progress for timeout_write
    bool submitted_ = false;    // the HEADERS frame is submitted
    std::optional<header_list> trailers_;

    // A WebSocket over this stream.
    std::shared_ptr<http2_tunnel> tunnel_;
    std::shared_ptr<websocket_session<http2_tunnel>> ws_;
};

template <class Stream>
class http2_session final : public std::enable_shared_from_this<http2_session<Stream>> {
public:
    explicit http2_session(http2_start<Stream> start);
    ~http2_session();
    http2_session(http2_session const&) = delete;
    http2_session& operator=(http2_session const&) = delete;

    // Serves until the connection ends; throws on a setup failure only.
    task<> run();

    // Graceful shutdown: GOAWAY, the open streams finish, new ones are refused.
    void begin_drain() noexcept;
    // The connection is closed: every stream's application is cancelled.
    void force_close() noexcept;

private:
    friend class http2_stream<Stream>;
    using stream_type = http2_stream<Stream>;
    using ops = stream_ops<Stream>;
    using clock = std::chrono::steady_clock;

    struct callbacks;

    task<> read_loop();
    task<> write_loop(std::shared_ptr<http2_session> self);
    void arm_ping(std::optional<std::chrono::milliseconds> after = std::nullopt) noexcept; // default: the interval
    void on_ping_timer() noexcept;
    task<> run_stream(std::shared_ptr<stream_type> st);
    task<> run_websocket(std::shared_ptr<stream_type> st);
    void start_stream(std::shared_ptr<stream_type> const& st);
    void start_upgraded();
    void feed(char const* data, std::size_t n);
    void wake_writer() noexcept { write_wake_.cancel(); }
    void finish_stream() noexcept;
    void end_reading() noexcept;
    void arm_idle() noexcept;
    void go_away(std::uint32_t error) noexcept;
    void stalled() noexcept; // the peer took nothing for timeout_write: the connection is dropped
    void drop(std::string_view why) noexcept; // the peer is gone or stuck: the connection ends now
    stream_type* find(std::int32_t id) noexcept;

    server_impl& srv_;
    Stream& stream_;
    std::string buffered_;
    std::optional<address> client_;
    std::optional<address> server_;
    std::string client_text_;
    std::optional<http2::upgrade_request> upgrade_;
    std::shared_ptr<stream_type> upgraded_waiting_; // stream 1 of an h2c upgrade, until the preface
    std::shared_ptr<void> owner_;

    nghttp2_session* session_ = nullptr;
    std::unordered_map<std::int32_t, std::shared_ptr<stream_type>> streams_;
    std::string out_; // frames gathered for one write
    net::steady_timer write_wake_;
    net::steady_timer idle_;
    net::steady_timer done_;
    net::steady_timer write_timer_; // a write that waits: see stalled()
    net::steady_timer ping_timer_;  // PING for liveness while streams are open
    bool awaiting_ping_ = false;    // a PING is out, its ACK not yet back
    std::size_t running_ = 0;     // stream applications not yet finished
    std::uint64_t streams_total_ = 0;
    bool reading_ = true;
    bool writing_ = true;
    bool closed_ = false;
    bool draining_ = false;
    bool failed_ = false; // a read or write failed: the peer is gone
    bool stop_reading_ = false; // the writer ended the session: the reader's wait is cancelled
    bool drain_pending_ = false; // begin_drain() before run()
    clock::time_point reset_time_;  // the rapid-reset budget: when it was last updated
    double reset_tokens_ = 0;       // and what is left of it
};

} // namespace cserve::detail

#endif // CSERVE_HTTP2

#endif
