// cserve/metrics.hpp -- what a server has done: counters, gauges and a latency histogram
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_METRICS_HPP
#define CSERVE_METRICS_HPP

#include <cserve/detail/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cserve {

/** A server's figures since it started: `server::metrics()` returns one, and `run()` serves
    them in the Prometheus text format with `--metrics-port` (see `format_prometheus`).

    Counters (`_total`) only grow; gauges (`active_*`, `workers`) go up and down. With
    `--workers N` the master adds up its workers' figures; a worker's counters stay in the
    totals after it is replaced.

    The struct is trivially copyable: a worker sends it to its master as bytes.
*/
struct server_metrics {
    /// The method label: the methods of RFC 9110 and PATCH; any other is counted as "_OTHER"
    /// (OpenTelemetry's rule), so that a client cannot create series at will.
    static constexpr std::array<std::string_view, 10> methods = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"};

    /// The status label: a response's class, or "none" for a request that ended without one
    /// (the client left, the connection failed).
    static constexpr std::array<std::string_view, 6> status_classes = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

    /// The upper bounds of the request-duration buckets, in seconds (OpenTelemetry's HTTP
    /// server defaults); a last bucket, +Inf, holds the rest.
    static constexpr std::array<double, 14> duration_bounds = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                                               0.5,   0.75, 1,     2.5,   5,     7.5, 10};

    // HTTP requests (HTTP/1.1 and HTTP/2), counted as they end: the server's own error
    // responses included, WebSocket handshakes not (see websocket_*).
    std::array<std::array<std::uint64_t, status_classes.size()>, methods.size()> requests{};
    /// Requests by duration (from the end of the request head to the end of the response):
    /// counts per bucket, not cumulative; the last is +Inf.
    std::array<std::uint64_t, duration_bounds.size() + 1> duration_buckets{};
    std::uint64_t duration_nanoseconds = 0; ///< the sum of the durations
    std::uint64_t request_body_bytes = 0;   ///< request body bytes received
    std::uint64_t response_body_bytes = 0;  ///< response body bytes sent, error responses too
    std::int64_t active_requests = 0;       ///< requests in progress

    std::uint64_t connections = 0;       ///< connections accepted
    std::int64_t active_connections = 0; ///< connections open now
    std::uint64_t accept_errors = 0;     ///< accept(2) failures (EMFILE and the like); connections that could not be started
    std::uint64_t tls_handshakes = 0;    ///< TLS handshakes completed
    std::uint64_t tls_handshake_errors = 0; ///< TLS handshakes that failed
    std::uint64_t http2_connections = 0; ///< connections that spoke HTTP/2
    std::uint64_t http2_streams = 0;     ///< HTTP/2 streams that carried a request

    std::uint64_t websocket_connections = 0;       ///< WebSocket handshakes accepted
    std::int64_t active_websocket_connections = 0; ///< WebSockets open now
    std::uint64_t websocket_messages_received = 0;
    std::uint64_t websocket_messages_sent = 0;

    // The supervisor's (run() with --workers N): zero in a single process.
    std::int64_t workers = 0;               ///< worker processes alive
    std::uint64_t restarts_crash = 0;       ///< workers that died and were replaced
    std::uint64_t restarts_watchdog = 0;    ///< workers killed by the watchdog and replaced
    std::uint64_t restarts_max_requests = 0; ///< workers that served --limit-max-requests
    std::uint64_t restarts_hup = 0;         ///< workers replaced by SIGHUP's rolling restart
    std::uint64_t watchdog_kills = 0;       ///< workers the watchdog aborted (SIGABRT)

    /// The total of `requests`.
    CSERVE_DECL std::uint64_t request_count() const noexcept;

    /// Adds `o`'s figures to these (gauges too).
    CSERVE_DECL server_metrics& operator+=(server_metrics const& o) noexcept;

    /// The index of `method` in `methods` ("_OTHER" for any other).
    CSERVE_DECL static std::size_t method_index(std::string_view method) noexcept;

    /// The index of `status` (0: no response) in `status_classes`.
    static constexpr std::size_t
    status_index(int status) noexcept
    {
        return status >= 100 && status < 600 ? static_cast<std::size_t>(status / 100) : 0;
    }
};

/** Writes `m` in the Prometheus text exposition format (version 0.0.4), with names after
    the OpenTelemetry HTTP conventions: `http_server_requests_total`,
    `http_server_request_duration_seconds`, `http_server_active_requests`, ... The README's
    "Metrics" section lists them all. `supervised`: include the supervisor's series.
*/
CSERVE_DECL std::string format_prometheus(server_metrics const& m, bool supervised = false);

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/metrics.ipp>
#endif

#endif
