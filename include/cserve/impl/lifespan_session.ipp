// cserve/impl/lifespan_session.ipp -- the ASGI lifespan protocol
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_LIFESPAN_SESSION_IPP
#define CSERVE_IMPL_LIFESPAN_SESSION_IPP

#include <cserve/detail/lifespan_session.hpp>
#include <cserve/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/core/demangle.hpp>

#include <typeinfo>

namespace cserve::detail {

lifespan_session::lifespan_session(net::any_io_executor ex, lifespan_mode mode)
    : mode_(mode)
    , app_wait_(ex, std::chrono::steady_clock::time_point::max())
    , server_wait_(ex, std::chrono::steady_clock::time_point::max())
{
    scope_.type = scope_type::lifespan;
}

void
lifespan_session::wake() noexcept
{
    server_wait_.cancel();
}

task<>
lifespan_session::wait()
{
    server_wait_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await server_wait_.async_wait(net::as_tuple(net::use_awaitable));
}

task<bool>
lifespan_session::startup(app_function const& app, logger const& log)
{
    log.log(log_level::info, "Waiting for application startup.");
    auto self = shared_from_this();
    auto run_app = [](std::shared_ptr<lifespan_session> s, app_function const& app) -> task<> {
        co_await app(s->scope_, cserve::receive{*s}, cserve::send{*s});
    };
    net::co_spawn(server_wait_.get_executor(), run_app(self, app), [self](std::exception_ptr e) {
        self->app_done_ = true;
        self->app_error_ = e;
        self->wake();
    });
    while (startup_ == answer::none && !app_done_)
        co_await wait();

    if (startup_ == answer::failed) {
        if (!message_.empty())
            log.log(log_level::error, message_);
        log.log(log_level::error, "Application startup failed. Exiting.");
        co_return false;
    }
    if (startup_ == answer::none && app_error_) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(app_error_);
        } catch (std::exception const& e) {
            what = boost::core::demangle(typeid(e).name()) + ": " + e.what();
        } catch (...) {
        }
        if (mode_ == lifespan_mode::automatic) {
            log.log(log_level::info, "ASGI 'lifespan' protocol appears unsupported.");
            co_return true;
        }
        message_ = what;
        log.log(log_level::error, "Exception in 'lifespan' protocol\n" + what);
        log.log(log_level::error, "Application startup failed. Exiting.");
        co_return false;
    }
    if (startup_ == answer::complete)
        log.log(log_level::info, "Application startup complete.");
    co_return true;
}

task<>
lifespan_session::shutdown(logger const& log)
{
    if (app_done_ || startup_ != answer::complete)
        co_return; // the application takes no part (or has already left)
    log.log(log_level::info, "Waiting for application shutdown.");
    shutdown_requested_ = true;
    app_wait_.cancel();
    while (shutdown_ == answer::none && !app_done_)
        co_await wait();
    if (shutdown_ == answer::failed) {
        log.log(log_level::error, message_.empty() ? std::string("Application shutdown failed.") : message_);
    } else if (shutdown_ == answer::none && app_error_) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(app_error_);
        } catch (std::exception const& e) {
            what = boost::core::demangle(typeid(e).name()) + ": " + e.what();
        } catch (...) {
        }
        log.log(log_level::error, "Exception in 'lifespan' protocol\n" + what);
    } else {
        log.log(log_level::info, "Application shutdown complete.");
    }
}

task<event>
lifespan_session::receive()
{
    auto self = shared_from_this(); // the server may be gone when this resumes
    if (receives_++ == 0)
        co_return lifespan::startup{};
    while (!shutdown_requested_) {
        app_wait_.expires_at(std::chrono::steady_clock::time_point::max());
        auto [ec] = co_await app_wait_.async_wait(net::as_tuple(net::use_awaitable));
        if (ec && !shutdown_requested_ &&
            (co_await net::this_coro::cancellation_state).cancelled() != net::cancellation_type::none) {
            // The application cancelled this receive() (app.hpp): the shutdown is still
            // for the next one.
            --receives_;
            throw boost::system::system_error(net::error::operation_aborted);
        }
    }
    co_return lifespan::shutdown{};
}

task<>
lifespan_session::send(event e)
{
    auto fail = [&](char const* when) {
        throw boost::system::system_error(make_error_code(error::unexpected_event),
                                          "Unexpected ASGI message '" + std::string(event_name(e)) + "' sent, " + when + ".");
    };
    if (std::holds_alternative<lifespan::startup_complete>(e) || std::holds_alternative<lifespan::startup_failed>(e)) {
        if (startup_ != answer::none)
            fail("after startup was answered");
        if (auto* f = std::get_if<lifespan::startup_failed>(&e)) {
            startup_ = answer::failed;
            message_ = f->message;
        } else {
            startup_ = answer::complete;
        }
    } else if (std::holds_alternative<lifespan::shutdown_complete>(e) ||
               std::holds_alternative<lifespan::shutdown_failed>(e)) {
        if (!shutdown_requested_ || shutdown_ != answer::none)
            fail("before 'lifespan.shutdown'");
        if (auto* f = std::get_if<lifespan::shutdown_failed>(&e)) {
            shutdown_ = answer::failed;
            message_ = f->message;
        } else {
            shutdown_ = answer::complete;
        }
    } else {
        fail("on the lifespan scope");
    }
    wake();
    co_return;
}

} // namespace cserve::detail

#endif
