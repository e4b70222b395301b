// cserve/server.hpp -- the embeddable server: listeners, connections, graceful shutdown
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_SERVER_HPP
#define CSERVE_SERVER_HPP

#include <cserve/detail/config.hpp>
#include <cserve/app.hpp>
#include <cserve/config.hpp>
#include <cserve/log.hpp>
#include <cserve/metrics.hpp>
#include <cserve/task.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace cserve {

namespace detail {
class server_impl;
struct server_access;
} // namespace detail

/** Serves an application on an io_context the caller owns.

    The server binds the listeners that its config names, accepts connections and runs
    the application for each request. `serve()` completes once the server has shut down
    and every connection has ended; everything `run()` does in a worker, an embedding
    program can do with this class.

    @par Example
    @code
    boost::asio::io_context ioc;
    cserve::config cfg;
    cfg.port = 0;
    cserve::server srv(ioc, app, cfg);
    srv.listen();
    std::cout << "port " << srv.port() << "\n";
    boost::asio::co_spawn(ioc, srv.serve(), [](std::exception_ptr) {});
    ioc.run();
    @endcode

    @par Thread Safety
    `shutdown()` and `stop()` may be called from any thread. Everything else: from the
    thread that created the server, or the io_context's threads. When the io_context runs
    on several threads each connection runs on its own strand; with a concurrency hint of
    1 (what `run()` uses) connections run directly on the io_context's executor.

    @note The server must outlive the completion of `serve()`.
*/
class server {
public:
    /** Creates a server; nothing is bound until `listen()` or `serve()`.

        @param ioc The io_context that runs the listeners, connections and the application.
        @param app The application, called once per request.
        @param cfg The settings. With `cfg.proxy_headers` the application is wrapped in
    proxy_headers() trusting `cfg.forwarded_allow_ips`.

    @throws std::invalid_argument when `cfg.forwarded_allow_ips` is not a valid list, or a
    header of `cfg.headers` has an invalid name or value (RFC 9110 §5.1, §5.5: a CR, LF or NUL).

    @throws std::runtime_error with TLS (`cfg.ssl_certfile` or `cfg.ssl_context_factory`) when
    the context cannot be made: a file missing or unreadable, a key that does not match the
    certificate, a wrong password, an invalid cipher list, a factory that threw. The message
    is one line naming the file or setting and the reason.
    */
    CSERVE_DECL server(boost::asio::io_context& ioc, app_function app, cserve::config cfg = {});

    CSERVE_DECL ~server();

    server(server const&) = delete;
    server& operator=(server const&) = delete;

    /** Binds and listens on the configured address.

        Called again after it succeeded, it does nothing.

        @throws boost::system::system_error when the address cannot be bound.
    */
    CSERVE_DECL void listen();

    /// Binds and listens; on failure sets `ec` and leaves the server unbound.
    CSERVE_DECL void listen(boost::system::error_code& ec);

    /** Accepts and serves connections until shut down.

        Binds first if `listen()` was not called. Completes once `shutdown()` or `stop()`
        was called and every connection has ended.

        @par Per-Operation Cancellation
        Terminal cancellation of the awaiting coroutine acts as `stop()`.
    */
    [[nodiscard]] CSERVE_DECL task<> serve();

    /** Starts a graceful shutdown.

        Listeners close, idle keep-alive connections close within 100 ms (a request that
        arrives meanwhile is answered with `connection: close`), requests in flight
        finish (their responses say `connection: close`). Those still running after
        `config::timeout_graceful_shutdown` are cancelled. A second call while draining
        acts as `stop()`.
    */
    CSERVE_DECL void shutdown() noexcept;

    /// Closes the listeners and every connection now, cancelling applications.
    CSERVE_DECL void stop() noexcept;

    /** Sets a function called once the server accepts connections: after its listeners
        are bound and the lifespan startup is complete. `run()` uses it to tell systemd.

        It runs on the server's executor; call this before `serve()`.
    */
    CSERVE_DECL void on_ready(std::function<void()> f);

    /// The port of the first listener (the chosen one when config::port is 0); 0 when unbound.
    CSERVE_DECL std::uint16_t port() const noexcept;

    /// The local addresses of all listeners.
    CSERVE_DECL std::vector<address> local_addresses() const;

    /// The number of open connections.
    CSERVE_DECL std::size_t connection_count() const noexcept;

    /** What the server has done so far: requests by method and status class, their
        durations, bytes, connections, WebSockets, TLS handshakes, HTTP/2 streams.

        Counting takes no lock: each thread counts in a shard of its own, and this adds the
        shards up (any thread may call it).
    */
    CSERVE_DECL server_metrics metrics() const;

    /// Whether a shutdown has begun (a health check then answers 503). Any thread.
    CSERVE_DECL bool draining() const noexcept;

    /// The settings the server was made with.
    CSERVE_DECL cserve::config const& config() const noexcept;

    /// The logger the server writes through.
    CSERVE_DECL cserve::logger const& logger() const noexcept;

private:
    friend struct detail::server_access;
    std::unique_ptr<detail::server_impl> impl_;
};

} // namespace cserve

#ifdef CSERVE_HEADER_ONLY
#include <cserve/impl/server.ipp>
#endif

#endif
