// cserve/impl/server.ipp -- listeners, accept loop, connection registry, shutdown
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_SERVER_IPP
#define CSERVE_IMPL_SERVER_IPP

#include <cserve/server.hpp>
#include <cserve/detail/http1_connection.hpp>
#include <cserve/detail/server_impl.hpp>
#include <cserve/impl/http1_connection.ipp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <cerrno>
#include <cstring>
#include <string>

#include <sys/socket.h>
#include <sys/un.h>

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
        std::string path;
        if (ep.size() > offset)
            path.assign(sun->sun_path, strnlen(sun->sun_path, ep.size() - offset));
        return address{std::move(path), 0};
    }
    return std::nullopt;
}

server_impl::server_impl(net::io_context& ioc, app_function app, config cfg)
    : ioc_(ioc)
    , multi_threaded_(net::use_service<net::detail::io_context_impl>(ioc).concurrency_hint() != 1)
    , executor_(multi_threaded_ ? net::any_io_executor(net::make_strand(ioc)) : net::any_io_executor(ioc.get_executor()))
    , app_(std::move(app))
    , cfg_(std::move(cfg))
    , log_(cfg_.log_level, cfg_.log_sink)
    , wake_timer_(executor_, std::chrono::steady_clock::time_point::max())
{
}

server_impl::~server_impl() = default;

void
server_impl::listen(boost::system::error_code& ec)
{
    ec = {};
    if (!acceptors_.empty())
        return;
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
    acceptor_type acceptor(executor_);
    acceptor.open(ep.protocol(), ec);
    if (!ec)
        acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec)
        acceptor.bind(ep, ec);
    if (!ec)
        acceptor.listen(cfg_.backlog, ec);
    if (ec)
        return;
    auto local = acceptor.local_endpoint(ec);
    if (ec)
        return;
    if (auto a = to_address(local))
        local_addresses_.push_back(*a);
    acceptors_.push_back(std::move(acceptor));
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
        if (auto p = c.weak_from_this().lock()) {
            auto ex = p->get_executor();
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
}

void
server_impl::on_connection_closed(http1_connection& c) noexcept
{
    bool last = false;
    {
        std::lock_guard lock(mutex_);
        if (c.is_linked()) {
            connections_.erase(connections_.iterator_to(c));
            --count_;
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
            wake();
        });
    }
}

void
server_impl::start_connection(socket_type socket)
{
    auto c = std::make_shared<http1_connection>(*this, std::move(socket));
    {
        std::lock_guard lock(mutex_);
        connections_.push_back(*c);
        ++count_;
    }
    auto ex = c->get_executor();
    auto& signal = c->cancel_signal();
    if (draining_)
        net::post(ex, [c] { c->begin_drain(); });
    net::co_spawn(ex, http1_connection::run(c),
                  net::bind_cancellation_slot(signal.slot(), [this](std::exception_ptr e) {
                      if (!e)
                          return;
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
                  }));
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

    for (auto const& a : local_addresses_) {
        bool v6 = a.host.find(':') != std::string::npos;
        log_.log(log_level::info, "cserve running on http://" + (v6 ? "[" + a.host + "]" : a.host) + ":" +
                                      std::to_string(a.port) + " (Press CTRL+C to quit)");
    }
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
    close_listeners();
    for_each_connection([](http1_connection& c) { c.begin_drain(); });

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
        for_each_connection([](http1_connection& c) { c.force_close(); });
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
            for_each_connection([](http1_connection& c) { c.force_close(); });
    }
    draining_ = false;
}

task<>
server_impl::serve()
{
    // The shutdown sequence runs on the server's own executor (a strand when the
    // io_context has several threads), whatever executor the caller awaits from.
    co_await net::co_spawn(executor_, run(), net::use_awaitable);
}

} // namespace detail

//------------------------------------------------------------------------------

server::server(boost::asio::io_context& ioc, app_function app, config cfg)
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

config const&
server::get_config() const noexcept
{
    return impl_->cfg_;
}

logger const&
server::get_logger() const noexcept
{
    return impl_->log_;
}

} // namespace cserve

#endif
