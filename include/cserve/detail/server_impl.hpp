// cserve/detail/server_impl.hpp -- the state behind cserve::server
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_SERVER_IMPL_HPP
#define CSERVE_DETAIL_SERVER_IMPL_HPP

#include <cserve/detail/config.hpp>
#include <cserve/detail/deadline_wheel.hpp>
#include <cserve/detail/metrics.hpp>
#include <cserve/app.hpp>
#include <cserve/config.hpp>
#include <cserve/log.hpp>
#include <cserve/proxy_headers.hpp>
#include <cserve/scope.hpp>
#include <cserve/task.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace boost::asio::ssl {
class context;
} // namespace boost::asio::ssl

namespace cserve::detail {

namespace net = boost::asio;

using socket_type = net::generic::stream_protocol::socket;
using acceptor_type = net::basic_socket_acceptor<net::generic::stream_protocol, net::any_io_executor>;
using list_hook = boost::intrusive::list_base_hook<>;

class lifespan_session;

// What a server keeps of each live connection, whatever its protocol and stream: a place
// in its registry and in its deadline_wheel, and the two things a shutdown asks of it.
class connection : public list_hook, public deadline_entry {
public:
    // Graceful shutdown: close now if idle, else after the response in flight.
    virtual void begin_drain() noexcept = 0;
    // Close now and cancel the application.
    virtual void force_close() noexcept = 0;
    // The connection, unless it is going away (its destructor waits for the registry).
    virtual std::shared_ptr<connection> lock() noexcept = 0;
    // Where begin_drain() and force_close() are called.
    virtual net::any_io_executor executor() noexcept = 0;

protected:
    connection() = default;
    ~connection() = default;
};

// The address of a socket endpoint: host and port for IP, the path for Unix sockets.
CSERVE_DECL std::optional<address>
to_address(net::generic::stream_protocol::endpoint const& ep);

// Listeners, the registry of live connections and the shutdown sequence. Everything but
// the registry runs on `executor_`; the registry is shared with connections that may run
// on other strands, hence its mutex (taken once per connection, never per request).
class server_impl {
public:
    CSERVE_DECL server_impl(net::io_context& ioc, app_function app, config cfg);

    /** Makes the checks of `cfg` the constructor makes (bar the TLS files, which
        load_tls_context reads): the default headers, the trusted-proxy list.
        @throws std::invalid_argument naming what is wrong. */
    CSERVE_DECL static void check(config const& cfg);
    CSERVE_DECL ~server_impl();

    CSERVE_DECL void listen(boost::system::error_code& ec);

    // A worker's listeners, handed down by its master: listen() adopts them instead of
    // binding, and says nothing of where it listens (the master did).
    void
    inherit_listeners(std::vector<int> fds) noexcept
    {
        inherited_fds_ = std::move(fds);
        announce_ = false;
    }
    CSERVE_DECL task<> serve();
    CSERVE_DECL void shutdown() noexcept;
    CSERVE_DECL void stop() noexcept;

    // Logs the exception that ended a connection's session (cancellation is not logged).
    CSERVE_DECL void log_session_failure(std::exception_ptr e) noexcept;

    // Called by a connection as it ends, on the connection's executor.
    CSERVE_DECL void on_connection_closed(connection& c) noexcept;

    // Counts a request against limit_max_requests; shuts down when it is reached, and
    // says whether this request is the last (its response then closes the connection).
    CSERVE_DECL bool count_request() noexcept;

    // Whether limit_concurrency is exceeded (requests are then answered 503).
    CSERVE_DECL bool over_capacity() const noexcept;

    // The lifespan state to copy into each connection scope, if the lifespan ran.
    CSERVE_DECL state_map const* lifespan_state() const noexcept;

    std::size_t
    connection_count() const noexcept
    {
        std::lock_guard lock(mutex_);
        return count_;
    }

    net::io_context& ioc_;
    bool multi_threaded_;
    net::any_io_executor executor_;
    app_function app_;
    config cfg_;
    logger log_;
    std::optional<trusted_hosts> trusted_; // with config::proxy_headers: see apply_proxy_headers
    std::optional<trusted_hosts> proxy_protocol_; // with config::proxy_protocol: who may send the header
    std::vector<acceptor_type> acceptors_;
    std::vector<address> local_addresses_;
    std::vector<std::string> listen_urls_; // for the "running on" line
    std::function<void()> on_ready_;
    bool created_uds_ = false; // the socket file is ours to remove
    std::vector<int> inherited_fds_; // listeners handed down by a supervisor, used first
    bool announce_ = true;           // log the "running on" lines
    std::shared_ptr<lifespan_session> lifespan_;
    std::shared_ptr<net::ssl::context> tls_; // with TLS: every connection's handshake uses it
    deadline_wheel deadlines_; // the connections' deadlines
    metrics_registry metrics_; // what server::metrics() adds up
    std::atomic<bool> draining_seen_{false}; // server::draining(), from any thread

private:
    CSERVE_DECL task<> run();
    CSERVE_DECL void adopt(int fd, boost::system::error_code& ec);
    CSERVE_DECL void add_listener(acceptor_type acceptor, boost::system::error_code& ec);
    CSERVE_DECL task<> accept_loop(acceptor_type& acceptor);
    CSERVE_DECL void start_connection(socket_type socket);
    CSERVE_DECL void log_start_failure(std::exception_ptr e) noexcept;
    CSERVE_DECL static void check_headers(config const& cfg);
    template <class Connection>
    void start_connection(std::shared_ptr<Connection> c);
    template <class F>
    void for_each_connection(F f);
    CSERVE_DECL void close_listeners() noexcept;
    CSERVE_DECL void wake() noexcept;

    mutable std::mutex mutex_;
    boost::intrusive::list<connection, boost::intrusive::base_hook<list_hook>> connections_;
    std::size_t count_ = 0;
    std::atomic<std::uint64_t> requests_{0};
    std::uint64_t request_limit_ = 0; // 0: none
    std::size_t pending_wakes_ = 0;


    // On executor_ only.
    net::steady_timer wake_timer_;
    bool shutdown_requested_ = false;
    bool stop_requested_ = false;
    bool draining_ = false;
    std::size_t accept_loops_ = 0;
};

} // namespace cserve::detail

#endif
