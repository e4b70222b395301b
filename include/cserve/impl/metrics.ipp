// cserve/impl/metrics.ipp -- server_metrics and its Prometheus text
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_METRICS_IPP
#define CSERVE_IMPL_METRICS_IPP

#include <cserve/metrics.hpp>

#include <charconv>
#include <cstdio>

namespace cserve {

std::uint64_t
server_metrics::request_count() const noexcept
{
    std::uint64_t n = 0;
    for (auto const& by_status : requests)
        for (auto c : by_status)
            n += c;
    return n;
}

server_metrics&
server_metrics::operator+=(server_metrics const& o) noexcept
{
    for (std::size_t i = 0; i < requests.size(); ++i)
        for (std::size_t j = 0; j < requests[i].size(); ++j)
            requests[i][j] += o.requests[i][j];
    for (std::size_t i = 0; i < duration_buckets.size(); ++i)
        duration_buckets[i] += o.duration_buckets[i];
    duration_nanoseconds += o.duration_nanoseconds;
    request_body_bytes += o.request_body_bytes;
    response_body_bytes += o.response_body_bytes;
    active_requests += o.active_requests;
    connections += o.connections;
    active_connections += o.active_connections;
    accept_errors += o.accept_errors;
    tls_handshakes += o.tls_handshakes;
    tls_handshake_errors += o.tls_handshake_errors;
    http2_connections += o.http2_connections;
    http2_streams += o.http2_streams;
    websocket_connections += o.websocket_connections;
    active_websocket_connections += o.active_websocket_connections;
    websocket_messages_received += o.websocket_messages_received;
    websocket_messages_sent += o.websocket_messages_sent;
    workers += o.workers;
    restarts_crash += o.restarts_crash;
    restarts_watchdog += o.restarts_watchdog;
    restarts_max_requests += o.restarts_max_requests;
    restarts_hup += o.restarts_hup;
    watchdog_kills += o.watchdog_kills;
    return *this;
}

std::size_t
server_metrics::method_index(std::string_view method) noexcept
{
    for (std::size_t i = 0; i + 1 < methods.size(); ++i)
        if (methods[i] == method)
            return i;
    return methods.size() - 1;
}

namespace detail {

// One family: its HELP and TYPE lines, then its samples.
class prometheus_writer {
public:
    explicit prometheus_writer(std::string& out) : out_(out) {}

    void
    family(std::string_view name, std::string_view type, std::string_view help)
    {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    template <class Number>
    void
    sample(std::string_view name, std::string_view labels, Number v)
    {
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            out_ += labels;
            out_ += '}';
        }
        out_ += ' ';
        char buf[32];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out_.append(buf, r.ptr);
        out_ += '\n';
    }

    template <class Number>
    void
    single(std::string_view name, std::string_view type, std::string_view help, Number v)
    {
        family(name, type, help);
        sample(name, {}, v);
    }

private:
    std::string& out_;
};

// A bucket bound as Prometheus writes it: "0.005", "1", "10".
inline std::string
bound_text(double b)
{
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, b);
    return std::string(buf, r.ptr);
}

} // namespace detail

std::string
format_prometheus(server_metrics const& m, bool supervised)
{
    std::string out;
    out.reserve(8192);
    detail::prometheus_writer w(out);
    using sm = server_metrics;

    w.family("http_server_requests_total", "counter", "HTTP requests served, by method and status class.");
    for (std::size_t i = 0; i < sm::methods.size(); ++i)
        for (std::size_t j = 0; j < sm::status_classes.size(); ++j)
            if (m.requests[i][j] != 0 || (i == 0 && j == 2)) // GET 2xx always: the family is never empty
                w.sample("http_server_requests_total",
                         "method=\"" + std::string(sm::methods[i]) + "\",status=\"" + std::string(sm::status_classes[j]) + "\"",
                         m.requests[i][j]);

    w.family("http_server_request_duration_seconds", "histogram",
             "Time from the end of a request's head to the end of its response.");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < m.duration_buckets.size(); ++i) {
        cumulative += m.duration_buckets[i];
        auto le = i < sm::duration_bounds.size() ? detail::bound_text(sm::duration_bounds[i]) : std::string("+Inf");
        w.sample("http_server_request_duration_seconds_bucket", "le=\"" + le + "\"", cumulative);
    }
    w.sample("http_server_request_duration_seconds_sum", {}, static_cast<double>(m.duration_nanoseconds) / 1e9);
    w.sample("http_server_request_duration_seconds_count", {}, cumulative);

    w.single("http_server_active_requests", "gauge", "HTTP requests in progress.", m.active_requests);
    w.single("http_server_request_body_bytes_total", "counter", "Request body bytes received.", m.request_body_bytes);
    w.single("http_server_response_body_bytes_total", "counter", "Response body bytes sent (the server's own error responses too).",
             m.response_body_bytes);
    w.single("http_server_connections_total", "counter", "Connections accepted.", m.connections);
    w.single("http_server_active_connections", "gauge", "Connections open.", m.active_connections);
    w.single("cserve_accept_errors_total", "counter",
             "Failed accept(2) calls (EMFILE, ENFILE, ENOBUFS, ...) and accepted connections that could not be started.",
             m.accept_errors);
    w.family("cserve_tls_handshakes_total", "counter", "TLS handshakes, by result.");
    w.sample("cserve_tls_handshakes_total", "result=\"ok\"", m.tls_handshakes);
    w.sample("cserve_tls_handshakes_total", "result=\"error\"", m.tls_handshake_errors);
    w.single("cserve_http2_connections_total", "counter", "Connections that spoke HTTP/2.", m.http2_connections);
    w.single("cserve_http2_streams_total", "counter", "HTTP/2 streams that carried a request.", m.http2_streams);
    w.single("cserve_websocket_connections_total", "counter", "WebSocket handshakes accepted.", m.websocket_connections);
    w.single("cserve_websocket_active_connections", "gauge", "WebSockets open.", m.active_websocket_connections);
    w.family("cserve_websocket_messages_total", "counter", "WebSocket messages, by direction.");
    w.sample("cserve_websocket_messages_total", "direction=\"received\"", m.websocket_messages_received);
    w.sample("cserve_websocket_messages_total", "direction=\"sent\"", m.websocket_messages_sent);
    if (supervised) {
        w.single("cserve_workers", "gauge", "Worker processes alive.", m.workers);
        w.family("cserve_worker_restarts_total", "counter", "Workers replaced, by cause.");
        w.sample("cserve_worker_restarts_total", "cause=\"crash\"", m.restarts_crash);
        w.sample("cserve_worker_restarts_total", "cause=\"watchdog\"", m.restarts_watchdog);
        w.sample("cserve_worker_restarts_total", "cause=\"max_requests\"", m.restarts_max_requests);
        w.sample("cserve_worker_restarts_total", "cause=\"hup\"", m.restarts_hup);
        w.single("cserve_watchdog_kills_total", "counter", "Workers the watchdog aborted (SIGABRT).", m.watchdog_kills);
    }
    return out;
}

} // namespace cserve

#endif
