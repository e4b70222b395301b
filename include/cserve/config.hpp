// cserve/config.hpp -- the runtime settings of a server (uvicorn's flags)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_CONFIG_HPP
#define CSERVE_CONFIG_HPP

#include <cserve/detail/config.hpp>
#include <cserve/event.hpp>
#include <cserve/log.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace boost::asio::ssl {
class context;
} // namespace boost::asio::ssl

namespace cserve {

/// Whether a TLS server asks clients for a certificate (--ssl-cert-reqs, Python's ssl.CERT_*).
enum class cert_reqs {
    /// Not asked for (0).
    none = 0,
    /// Asked for; a client without one is served, and one whose certificate fails
    /// verification too, with the reason in tls_info::client_cert_error (1).
    optional = 1,
    /// Required and verified against `ssl_ca_certs`: mutual TLS (2).
    required = 2,
};

/// How the lifespan protocol is used (--lifespan).
enum class lifespan_mode {
    /// Run it; an application that throws on the lifespan scope is taken not to support it.
    automatic,
    /// Run it; an application that fails it stops the server from starting.
    on,
    /// Do not run it.
    off,
};

/** The settings of a server, with uvicorn's names and defaults.

    Every field has a command-line flag of the same name (underscores become dashes) when
    the server is started with `run(app, argc, argv)`. The fields marked "run() only" are
    read by run() and its supervisor (the process model); a `server` an embedding program
    constructs itself ignores them. Every other field is the server's.

    @par Example
    @code
    cserve::config cfg;
    cfg.port = 0;                       // any free port
    cfg.timeout_keep_alive = std::chrono::seconds(10);
    cfg.headers.push_back({"x-served-by", "cserve"});
    @endcode
*/
struct config {
    /// Address to bind; "0.0.0.0" or "::" for all interfaces. (--host)
    std::string host = "127.0.0.1";

    /// Port to bind; 0 picks a free one (see server::port()). (--port)
    std::uint16_t port = 8000;

    /// Bind to this Unix domain socket instead of host and port; a stale socket file is
    /// replaced. (--uds)
    std::string uds;

    /// The permission bits of the Unix socket file. (--uds-mode, octal)
    unsigned uds_mode = 0666;

    /// Serve on this already open listening socket (inherited from the parent) instead of
    /// binding. (--fd)
    int fd = -1;

    /// The listen(2) backlog. (--backlog)
    int backlog = 2048;

    /// run() only: worker processes. More than one starts a supervisor: a master process
    /// binds the listeners, forks this many workers, each with its own io_context, and
    /// replaces those that die. Unset: $WEB_CONCURRENCY, else 1 (one process, no master).
    /// (--workers)
    std::optional<unsigned> workers;

    /// run() only, with workers: a worker whose event loop has not reported to the master for this
    /// long is killed (SIGABRT, then SIGKILL) and replaced. (--timeout-worker-healthcheck,
    /// seconds)
    std::chrono::milliseconds timeout_worker_healthcheck = std::chrono::seconds(5);

    /// run() only: serve `GET /metrics` (the Prometheus text format, see server_metrics) and
    /// `GET /healthz` (200 while serving, 503 while starting or draining) on this port, a
    /// listener of their own; with workers the master serves them, with every worker's figures
    /// added up. Unset: off. (--metrics-port)
    std::optional<std::uint16_t> metrics_port;

    /// The address of the metrics listener. (--metrics-host)
    std::string metrics_host = "127.0.0.1";

    /// Lines below this level are not logged. (--log-level)
    cserve::log_level log_level = cserve::log_level::info;

    /// One line per response at info level. (--access-log / --no-access-log)
    bool access_log = true;

    /// Where log lines go; empty means standard error.
    cserve::log_sink log_sink;

    /// run() only: standard error (and so every log line of the default sink) is appended
    /// to this file; SIGUSR1 reopens it, for log rotation. (--log-file)
    std::string log_file;

    /// The mount point of the application, put in front of every scope's path. (--root-path)
    std::string root_path;

    /// Believe Forwarded (RFC 7239), X-Forwarded-For and X-Forwarded-Proto from `forwarded_allow_ips` (see
    /// proxy_headers()). (--proxy-headers / --no-proxy-headers)
    bool proxy_headers = true;

    /// Expect the PROXY protocol header (v1 or v2: HAProxy's send-proxy and send-proxy-v2,
    /// nginx's proxy_protocol, cloud TCP load balancers) in front of every connection, before
    /// TLS and HTTP, from the peers in `forwarded_allow_ips` (a Unix-socket peer is local);
    /// the scope's client and server are the addresses it names. A connection without a valid
    /// header, or from another peer, is closed. (--proxy-protocol / --no-proxy-protocol)
    bool proxy_protocol = false;

    /// The proxies trusted for `proxy_headers` and `proxy_protocol`: addresses, CIDR networks or "*".
    /// (--forwarded-allow-ips; the FORWARDED_ALLOW_IPS environment variable sets the default)
    std::string forwarded_allow_ips = "127.0.0.1";

    /// Past this many open connections requests are answered 503. (--limit-concurrency)
    std::optional<std::size_t> limit_concurrency;

    /// After this many requests the server shuts down gracefully (a supervisor then
    /// starts a fresh worker). (--limit-max-requests)
    std::optional<std::uint64_t> limit_max_requests;

    /// A request body larger than this many bytes is refused with 413: before the
    /// application runs when its Content-Length says so, else (a chunked body that grows past
    /// it) as the application's receive() yields http::disconnect; a response already under
    /// way then ends the connection instead. (--limit-request-body)
    std::optional<std::uint64_t> limit_request_body;

    /// A random 0..jitter is added to limit_max_requests, so that workers started
    /// together do not all restart together. (--limit-max-requests-jitter)
    std::uint64_t limit_max_requests_jitter = 0;

    /// Close a keep-alive connection idle this long. (--timeout-keep-alive, seconds)
    std::chrono::milliseconds timeout_keep_alive = std::chrono::seconds(5);

    /// On shutdown, in-flight requests get this long before they are cancelled; none
    /// waits for them as long as they take. (--timeout-graceful-shutdown, seconds)
    std::optional<std::chrono::milliseconds> timeout_graceful_shutdown;

    /// A request whose header has not all arrived this long after its first byte (or
    /// after the connection opened) is cut off with 408. (--timeout-request-header)
    std::chrono::milliseconds timeout_request_header = std::chrono::seconds(30);

    /// Close a connection whose client has taken none of a response's bytes for this long:
    /// a write that cannot go on (the client does not read, or an HTTP/2 peer keeps its
    /// flow-control window shut). As nginx's send_timeout, it bounds each stall, not the
    /// whole response. The same bounds each wait for an HTTP/1.1 request body's next bytes
    /// (nginx's client_body_timeout): the application sees http.disconnect. (--timeout-write)
    std::chrono::milliseconds timeout_write = std::chrono::seconds(60);

    /// The largest request line plus header accepted; larger is a 431. (--max-header-bytes)
    std::size_t max_header_bytes = 16 * 1024;

    /// Send `server: cserve`. (--server-header / --no-server-header)
    bool server_header = true;

    /// Send a `date` header. (--date-header / --no-date-header)
    bool date_header = true;

    /// Extra headers added to every response. (--header NAME:VALUE, repeatable)
    header_list headers;

    /// The lifespan protocol. (--lifespan auto|on|off)
    lifespan_mode lifespan = lifespan_mode::automatic;

    /// Serve HTTP/2 where the client asks for it: ALPN "h2" over TLS, and on cleartext the
    /// connection preface (prior knowledge) or `Upgrade: h2c`. Needs a build with
    /// CSERVE_HTTP2 (CMake's default); without it this is ignored. (--http2 / --no-http2)
    bool http2 = true;

    /// The most HTTP/2 streams a client may have open on one connection; advertised in
    /// SETTINGS, further ones are refused. (--http2-max-concurrent-streams)
    std::uint32_t http2_max_concurrent_streams = 100;

    /// The most HTTP/2 streams (requests) one connection serves; after it a GOAWAY sends the
    /// client to a new connection, as HTTP/1.1 keep-alive limits do. (--http2-max-requests)
    std::uint64_t http2_max_requests = 10000;

    /// HTTP/2 streams a client may reset before their responses complete, per second, after a
    /// burst of twice as many; past it the connection ends with GOAWAY ENHANCE_YOUR_CALM (the
    /// "rapid reset" attack, CVE-2023-44487). (--http2-max-reset-rate)
    std::uint32_t http2_max_reset_rate = 100;

    /// Serve WebSocket upgrades; false answers them as plain HTTP. (--ws auto|none)
    bool ws = true;

    /// The largest WebSocket message accepted; bigger closes with 1009. (--ws-max-size)
    std::size_t ws_max_size = 16 * 1024 * 1024;

    /// How many received WebSocket messages wait for the application before the server
    /// stops reading from the client. (--ws-max-queue)
    std::size_t ws_max_queue = 32;

    /// Ping an open WebSocket this often; none sends no pings. (--ws-ping-interval)
    std::optional<std::chrono::milliseconds> ws_ping_interval = std::chrono::seconds(20);

    /// Close with 1011 when a ping has had no pong for this long. (--ws-ping-timeout)
    std::optional<std::chrono::milliseconds> ws_ping_timeout = std::chrono::seconds(20);

    /// Offer permessage-deflate compression. (--ws-per-message-deflate BOOL)
    bool ws_per_message_deflate = true;

    /// Serve TLS (https, wss) with this PEM certificate chain, leaf first. Read when the
    /// server is made (by run(): before the workers are forked, and again on SIGHUP).
    /// (--ssl-certfile)
    std::string ssl_certfile;

    /// The PEM private key of `ssl_certfile`; empty: the key is in `ssl_certfile`.
    /// (--ssl-keyfile)
    std::string ssl_keyfile;

    /// The password of an encrypted `ssl_keyfile`. (--ssl-keyfile-password)
    std::string ssl_keyfile_password;

    /// The PEM certificates of the CAs that client certificates are verified against.
    /// (--ssl-ca-certs)
    std::string ssl_ca_certs;

    /// Whether clients are asked for a certificate. (--ssl-cert-reqs 0|1|2)
    cserve::cert_reqs ssl_cert_reqs = cert_reqs::none;

    /// The TLS 1.2 cipher suites, in OpenSSL's cipher-list syntax; TLS 1.3 uses OpenSSL's
    /// default suites. The default allows only forward-secret AEAD suites. (--ssl-ciphers)
    std::string ssl_ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20";

    /** Builds the TLS context instead of the `ssl_*` fields (uvicorn's ssl_context_factory).

        Called once when the server is made (by run(): before the workers are forked, and
        again on SIGHUP). cserve adds to the context what its connections rely on: ALPN,
        released buffers on idle connections, no renegotiation. Everything else (versions,
        certificates, verification, tickets) is the factory's.
    */
    std::function<std::shared_ptr<boost::asio::ssl::context>()> ssl_context_factory;

    /// Whether the server speaks TLS: a certificate or a context factory is set.
    bool
    tls() const noexcept
    {
        return !ssl_certfile.empty() || static_cast<bool>(ssl_context_factory);
    }
};

} // namespace cserve

#endif
