// cserve/impl/server.ipp -- listeners, accept loop, connection registry, shutdown
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_SERVER_IPP
#define CSERVE_IMPL_SERVER_IPP

#include <cserve/server.hpp>
#include <cserve/proxy_headers.hpp>
#include <cserve/detail/boost_compat.hpp>
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/lifespan_session.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/detail/text.hpp>
#include <cserve/detail/tls.hpp>
#include <cserve/detail/websocket/session.hpp>
#include <cserve/impl/exchange.ipp>
#include <cserve/impl/http1/connection.ipp>
#include <cserve/impl/http1/request.ipp>
#include <cserve/impl/http1/request_state.ipp>
#include <cserve/impl/http1/response.ipp>
#include <cserve/impl/lifespan_session.ipp>
#include <cserve/impl/tls.ipp>
#include <cserve/impl/websocket/io.ipp>
#include <cserve/impl/websocket/session.ipp>
#include <cserve/impl/http2/session.ipp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace cserve {

namespace detail {

std::optional<address>
to_address(net::generic::stream_protocol::endpoint const& ep)
{
    auto family = ep.protocol().family();
    if (family == AF_INET || family == AF_INET6) {
        net::ip::tcp::endpoint tcp;
        if (ep.size() > tcp.capacity())
            return std::nullopt;
        std::memcpy(tcp.data(), ep.data(), ep.size());
        tcp.resize(ep.size());
        return address{tcp.address().to_string(), tcp.port()};
    }
    if (family == AF_UNIX) {
        auto const* sun = reinterpret_cast<sockaddr_un const*>(ep.data());
        auto offset = offsetof(sockaddr_un, sun_path);
        if (ep.size() <= offset)
            return std::nullopt; // an unnamed peer
        std::string path;
        if (sun->sun_path[0] == '\0') // abstract namespace, shown with '@' as ss(8) does
            path = "@" + std::string(sun->sun_path + 1, ep.size() - offset - 1);
        else
            path.assign(sun->sun_path, strnlen(sun->sun_path, ep.size() - offset));
        return address{std::move(path), 0};
    }
    return std::nullopt;
}

void
server_impl::check_headers(config const& cfg)
{
    // Written into every response head as they are: a CR or LF would split each response.
    // The checks of --header and of the application's own headers.
    for (auto const& [name, value] : cfg.headers)
        if (!http1::valid_field_name(name) || !http1::valid_field_value(value))
            throw std::invalid_argument("invalid header in config.headers: '" + name + "'");
}

void
server_impl::check(config const& cfg)
{
    check_headers(cfg);
    if (cfg.proxy_headers || cfg.proxy_protocol)
        (void)trusted_hosts(cfg.forwarded_allow_ips);
}

server_impl::server_impl(net::io_context& ioc, app_function app, config cfg)
    : ioc_(ioc)
    , multi_threaded_(!one_thread_hint(ioc))
    , executor_(multi_threaded_ ? net::any_io_executor(net::make_strand(ioc)) : net::any_io_executor(ioc.get_executor()))
    , app_(std::move(app))
    , cfg_(std::move(cfg))
    , log_(cfg_.log_level, cfg_.log_sink)
    , trusted_(cfg_.proxy_headers ? std::optional<trusted_hosts>(std::in_place, cfg_.forwarded_allow_ips) : std::nullopt)
    , proxy_protocol_(cfg_.proxy_protocol ? std::optional<trusted_hosts>(std::in_place, cfg_.forwarded_allow_ips)
                                          : std::nullopt)
    , deadlines_(executor_, multi_threaded_)
    , wake_timer_(executor_, std::chrono::steady_clock::time_point::max())
{
    check_headers(cfg_);
    deadlines_.durations(cfg_.timeout_request_header, cfg_.timeout_keep_alive, cfg_.timeout_write);
    if (cfg_.tls())
        tls_ = load_tls_context(cfg_, make_ticket_key());
    if (cfg_.limit_max_requests) {
        request_limit_ = *cfg_.limit_max_requests;
        if (cfg_.limit_max_requests_jitter > 0) {
            std::random_device rd;
            request_limit_ += std::uniform_int_distribution<std::uint64_t>(0, cfg_.limit_max_requests_jitter)(rd);
        }
        if (request_limit_ == 0)
            request_limit_ = 1;
    }
}

bool
server_impl::count_request() noexcept
{
    if (request_limit_ == 0)
        return false;
    auto n = requests_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n == request_limit_) {
        log_.log(log_level::warning,
                 "Maximum request limit of " + std::to_string(request_limit_) + " exceeded. Terminating process.");
        shutdown();
    }
    return n >= request_limit_;
}

bool
server_impl::over_capacity() const noexcept
{
    return cfg_.limit_concurrency && connection_count() > *cfg_.limit_concurrency;
}

server_impl::~server_impl() = default;

void
server_impl::add_listener(acceptor_type acceptor, boost::system::error_code& ec)
{
    auto local = acceptor.local_endpoint(ec);
    if (ec)
        return;
    auto a = to_address(local);
    if (local.protocol().family() == AF_UNIX)
        listen_urls_.push_back("unix socket " + (a ? a->host : std::string("(unnamed)")));
    else if (a)
        listen_urls_.push_back((tls_ ? "https://" : "http://") + (a->host.find(':') != std::string::npos ? "[" + a->host + "]" : a->host) +
                               ":" + std::to_string(a->port));
    if (a)
        local_addresses_.push_back(*a);
    acceptors_.push_back(std::move(acceptor));
}

void
server_impl::adopt(int fd, boost::system::error_code& ec)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return;
    }
    int const family = ss.ss_family;
    int const protocol = family == AF_UNIX ? 0 : IPPROTO_TCP;
    acceptor_type acceptor(executor_);
    acceptor.assign(net::generic::stream_protocol(family, protocol), fd, ec);
    if (!ec)
        acceptor.listen(cfg_.backlog, ec); // harmless on a socket that already listens
    if (!ec)
        add_listener(std::move(acceptor), ec);
}

void
server_impl::listen(boost::system::error_code& ec)
{
    ec = {};
    if (!acceptors_.empty())
        return;

    if (!inherited_fds_.empty()) {
        for (int fd : inherited_fds_)
            if (!ec)
                adopt(fd, ec);
        return;
    }

    // systemd socket activation (sd_listen_fds(3)): descriptors from 3 on, for this process.
    char const* listen_pid = std::getenv("LISTEN_PID");
    char const* listen_fds = std::getenv("LISTEN_FDS");
    if (listen_pid && listen_fds && std::to_string(::getpid()) == listen_pid) {
        int n = std::atoi(listen_fds);
        for (int i = 0; i < n && !ec; ++i)
            adopt(3 + i, ec);
        ::unsetenv("LISTEN_PID");
        ::unsetenv("LISTEN_FDS");
        ::unsetenv("LISTEN_FDNAMES");
        if (ec || n > 0)
            return;
    }

    if (cfg_.fd >= 0) {
        adopt(cfg_.fd, ec);
        return;
    }

    acceptor_type acceptor(executor_);
    if (!cfg_.uds.empty()) {
        // A socket file left by an earlier run is replaced; any other file is an error.
        struct stat st {};
        if (::lstat(cfg_.uds.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                ec = boost::system::errc::make_error_code(boost::system::errc::file_exists);
                return;
            }
            ::unlink(cfg_.uds.c_str());
        }
        if (cfg_.uds.size() >= sizeof(sockaddr_un::sun_path)) {
            ec = boost::system::errc::make_error_code(boost::system::errc::filename_too_long);
            return;
        }
        net::generic::stream_protocol::endpoint ep{net::local::stream_protocol::endpoint(cfg_.uds)};
        acceptor.open(ep.protocol(), ec);
        if (!ec)
            acceptor.bind(ep, ec);
        created_uds_ = !ec;
        if (!ec && ::chmod(cfg_.uds.c_str(), cfg_.uds_mode) != 0)
            ec = boost::system::error_code(errno, boost::system::system_category());
    } else {
        net::ip::tcp::resolver resolver(ioc_);
        auto results = resolver.resolve(cfg_.host, std::to_string(cfg_.port),
                                        net::ip::tcp::resolver::passive | net::ip::tcp::resolver::numeric_service, ec);
        if (ec)
            return;
        if (results.empty()) {
            ec = net::error::host_not_found;
            return;
        }
        net::generic::stream_protocol::endpoint ep(results.begin()->endpoint());
        acceptor.open(ep.protocol(), ec);
        if (!ec)
            acceptor.set_option(net::socket_base::reuse_address(true), ec);
        if (!ec)
            acceptor.bind(ep, ec);
    }
    if (!ec)
        acceptor.listen(cfg_.backlog, ec);
    if (!ec)
        add_listener(std::move(acceptor), ec);
}

state_map const*
server_impl::lifespan_state() const noexcept
{
    return lifespan_ ? &lifespan_->state() : nullptr;
}

void
server_impl::wake() noexcept
{
    wake_timer_.cancel();
}

void
server_impl::shutdown() noexcept
{
    net::post(executor_, [this] {
        if (shutdown_requested_)
            stop_requested_ = true; // a second request: uvicorn's second Ctrl+C
        shutdown_requested_ = true;
        wake();
    });
}

void
server_impl::stop() noexcept
{
    net::post(executor_, [this] {
        shutdown_requested_ = stop_requested_ = true;
        wake();
    });
}

template <class F>
void
server_impl::for_each_connection(F f)
{
    std::lock_guard lock(mutex_);
    for (auto& c : connections_) {
        // A connection whose destructor is waiting for the lock is already gone.
        if (auto p = c.lock()) {
            auto ex = p->executor();
            net::post(ex, [p = std::move(p), f] { f(*p); });
        }
    }
}

void
server_impl::close_listeners() noexcept
{
    for (auto& a : acceptors_) {
        boost::system::error_code ec;
        a.close(ec);
    }
    // The socket file this server created goes with it (an inherited one stays).
    if (created_uds_) {
        ::unlink(cfg_.uds.c_str());
        created_uds_ = false;
    }
}

void
server_impl::on_connection_closed(connection& c) noexcept
{
    bool last = false;
    deadlines_.remove(c);
    {
        std::lock_guard lock(mutex_);
        if (c.list_hook::is_linked()) {
            connections_.erase(connections_.iterator_to(c));
            --count_;
            metrics_registry::add<std::int64_t>(metrics_.local().active_connections, -1);
        }
        last = count_ == 0;
    }
    if (last) {
        {
            std::lock_guard lock(mutex_);
            ++pending_wakes_;
        }
        net::post(executor_, [this] {
            {
                std::lock_guard lock(mutex_);
                --pending_wakes_;
            }
            deadlines_.stop_if_idle(); // unless a new connection came meanwhile
            wake();
        });
    }
}

void
server_impl::start_connection(socket_type socket)
{
    // A connection that cannot be made (out of memory; SSL_new failing) is closed and
    // logged; the accept loop and every other connection go on.
    try {
        if (tls_)
            start_connection(std::make_shared<http1_connection<tls_stream>>(*this, std::move(socket), *tls_));
        else
            start_connection(std::make_shared<http1_connection<socket_type>>(*this, std::move(socket)));
    } catch (...) {
        log_start_failure(std::current_exception());
    }
}

void
server_impl::log_start_failure(std::exception_ptr e) noexcept
{
    metrics_registry::add<std::uint64_t>(metrics_.local().accept_errors, 1);
    try {
        std::rethrow_exception(e);
    } catch (std::exception const& ex) {
        log_.log(log_level::error, std::string("cannot start a connection: ") + ex.what());
    } catch (...) {
        log_.log(log_level::error, "cannot start a connection");
    }
}

template <class Connection>
void
server_impl::start_connection(std::shared_ptr<Connection> c)
{
    {
        std::lock_guard lock(mutex_);
        connections_.push_back(*c);
        ++count_;
    }
    auto& m = metrics_.local();
    metrics_registry::add<std::uint64_t>(m.connections, 1);
    metrics_registry::add<std::int64_t>(m.active_connections, 1);
    auto ex = c->get_executor();
    auto drain = draining_ ? c : nullptr;
    // Run inline by the accept loop, or on the connection's strand: either way a failure
    // to start (a coroutine frame not allocated) ends this connection alone.
    net::dispatch(ex, [this, c = std::move(c)]() mutable {
        try {
            Connection::start(std::move(c));
        } catch (...) {
            log_start_failure(std::current_exception());
        }
    });
    if (drain)
        net::post(ex, [c = std::move(drain)] { c->begin_drain(); }); // after start()
}

void
server_impl::log_session_failure(std::exception_ptr e) noexcept
{
    try {
        std::rethrow_exception(e);
    } catch (boost::system::system_error const& se) {
        if (se.code() != net::error::operation_aborted)
            log_.log(log_level::error, std::string("connection failed: ") + se.what());
    } catch (std::exception const& ex) {
        log_.log(log_level::error, std::string("connection failed: ") + ex.what());
    } catch (...) {
        log_.log(log_level::error, "connection failed");
    }
}

task<>
server_impl::accept_loop(acceptor_type& acceptor)
{
    auto const use_tuple = net::as_tuple(net::use_awaitable);
    net::steady_timer backoff(executor_);
    for (;;) {
        auto ex = multi_threaded_ ? net::any_io_executor(net::make_strand(ioc_))
                                  : net::any_io_executor(ioc_.get_executor());
        auto [ec, socket] = co_await acceptor.async_accept(ex, use_tuple);
        if (!ec)
            start_connection(std::move(socket)); // even when closing: it is drained like the rest
        if (!acceptor.is_open() || ec == net::error::operation_aborted)
            co_return;
        if (ec) {
            metrics_registry::add<std::uint64_t>(metrics_.local().accept_errors, 1);
            // Out of descriptors or memory: the pending connection stays queued, so
            // retrying at once would spin. Back off and try again; never give up.
            if (ec == boost::system::errc::too_many_files_open ||
                ec == boost::system::errc::too_many_files_open_in_system ||
                ec == boost::system::errc::no_buffer_space || ec == boost::system::errc::not_enough_memory) {
                log_.log(log_level::error, "accept failed: " + ec.message() + "; retrying in 100 ms");
                backoff.expires_after(std::chrono::milliseconds(100));
                co_await backoff.async_wait(use_tuple);
            }
        }
    }
}

task<>
server_impl::run()
{
    auto const use_tuple = net::as_tuple(net::use_awaitable);
    boost::system::error_code ec;
    listen(ec);
    if (ec)
        throw boost::system::system_error(ec, "cannot listen on " + cfg_.host + ":" + std::to_string(cfg_.port));

    if (cfg_.lifespan != lifespan_mode::off) {
        lifespan_ = std::make_shared<lifespan_session>(executor_, cfg_.lifespan);
        if (!co_await lifespan_->startup(app_, log_)) {
            close_listeners();
            throw boost::system::system_error(make_error_code(error::startup_failed), lifespan_->failure());
        }
    }

    for (auto const& url : announce_ ? listen_urls_ : std::vector<std::string>{})
        log_.log(log_level::info, "cserve running on " + url + " (Press CTRL+C to quit)");
    if (on_ready_)
        on_ready_();
    for (auto& a : acceptors_) {
        ++accept_loops_;
        net::co_spawn(executor_, accept_loop(a), [this](std::exception_ptr e) {
            --accept_loops_;
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (std::exception const& ex) {
                    log_.log(log_level::error, std::string("accept loop failed: ") + ex.what());
                } catch (...) {
                }
            }
            wake();
        });
    }

    // Serve until asked to stop. Terminal cancellation of serve() counts as stop().
    {
        auto cs = co_await net::this_coro::cancellation_state;
        while (!shutdown_requested_) {
            wake_timer_.expires_at(std::chrono::steady_clock::time_point::max());
            co_await wake_timer_.async_wait(use_tuple);
            if (cs.cancelled() != net::cancellation_type::none) {
                shutdown_requested_ = stop_requested_ = true;
                co_await net::this_coro::reset_cancellation_state();
            }
        }
    }

    log_.log(log_level::info, "Shutting down");
    draining_ = true;
    draining_seen_.store(true, std::memory_order_relaxed);
    close_listeners();
    for_each_connection([](connection& c) { c.begin_drain(); });

    auto deadline = std::chrono::steady_clock::time_point::max();
    if (cfg_.timeout_graceful_shutdown)
        deadline = std::chrono::steady_clock::now() + *cfg_.timeout_graceful_shutdown;
    while (connection_count() > 0 && !stop_requested_ && std::chrono::steady_clock::now() < deadline) {
        wake_timer_.expires_at(deadline);
        co_await wake_timer_.async_wait(use_tuple);
    }
    if (connection_count() > 0) {
        if (!stop_requested_)
            log_.log(log_level::warning, "Cancel " + std::to_string(connection_count()) +
                                             " running task(s), timeout graceful shutdown exceeded");
        for_each_connection([](connection& c) { c.force_close(); });
    }
    // Also wait for the wake-ups connections posted as they ended: they refer to this object.
    auto busy = [this] {
        std::lock_guard lock(mutex_);
        return count_ > 0 || pending_wakes_ > 0 || accept_loops_ > 0;
    };
    while (busy()) {
        wake_timer_.expires_at(std::chrono::steady_clock::time_point::max());
        co_await wake_timer_.async_wait(use_tuple);
        if (stop_requested_)
            for_each_connection([](connection& c) { c.force_close(); });
    }
    deadlines_.stop_if_idle();
    draining_ = false;
    if (lifespan_)
        co_await lifespan_->shutdown(log_);
}

task<>
server_impl::serve()
{
    // The shutdown sequence runs on the server's own executor (a strand when the
    // io_context has several threads), whatever executor the caller awaits from.
    co_await net::co_spawn(executor_, run(), net::use_awaitable);
}

#if !defined(CSERVE_HEADER_ONLY)
// The connections of a plain socket and of TLS, compiled here once (stream.hpp, tls.hpp).
template class http1_connection<socket_type>;
template class websocket_session<socket_type>;
template class http1_connection<tls_stream>;
template class websocket_session<tls_stream>;
#if CSERVE_HTTP2
template class websocket_session<http2_tunnel>; // a WebSocket over an HTTP/2 stream
#endif
// Their constructors are templates (the stream is made in place), which the class's explicit
// instantiation does not cover: the two the server and the tests call.
template http1_connection<socket_type>::http1_connection(server_impl&, socket_type&&);
template http1_connection<tls_stream>::http1_connection(server_impl&, socket_type&&, net::ssl::context&);
#endif

} // namespace detail

//------------------------------------------------------------------------------

server::server(boost::asio::io_context& ioc, app_function app, cserve::config cfg)
    : impl_(std::make_unique<detail::server_impl>(ioc, std::move(app), std::move(cfg)))
{
}

server::~server() = default;

void
server::listen()
{
    boost::system::error_code ec;
    listen(ec);
    if (ec)
        throw boost::system::system_error(ec, "cannot listen on " + impl_->cfg_.host + ":" +
                                                  std::to_string(impl_->cfg_.port));
}

void
server::listen(boost::system::error_code& ec)
{
    impl_->listen(ec);
}

task<>
server::serve()
{
    return impl_->serve();
}

void
server::shutdown() noexcept
{
    impl_->shutdown();
}

void
server::stop() noexcept
{
    impl_->stop();
}

void
server::on_ready(std::function<void()> f)
{
    impl_->on_ready_ = std::move(f);
}

std::uint16_t
server::port() const noexcept
{
    if (impl_->local_addresses_.empty())
        return 0;
    return impl_->local_addresses_.front().port;
}

std::vector<address>
server::local_addresses() const
{
    return impl_->local_addresses_;
}

std::size_t
server::connection_count() const noexcept
{
    return impl_->connection_count();
}

server_metrics
server::metrics() const
{
    return impl_->metrics_.snapshot();
}

bool
server::draining() const noexcept
{
    return impl_->draining_seen_.load(std::memory_order_relaxed);
}

cserve::config const&
server::config() const noexcept
{
    return impl_->cfg_;
}

cserve::logger const&
server::logger() const noexcept
{
    return impl_->log_;
}

} // namespace cserve

#endif
