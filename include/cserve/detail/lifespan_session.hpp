// cserve/detail/lifespan_session.hpp -- the ASGI lifespan protocol: startup and shutdown
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_LIFESPAN_SESSION_HPP
#define CSERVE_DETAIL_LIFESPAN_SESSION_HPP

#include <cserve/detail/config.hpp>
#include <cserve/app.hpp>
#include <cserve/config.hpp>
#include <cserve/event.hpp>
#include <cserve/log.hpp>
#include <cserve/scope.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <exception>
#include <memory>
#include <string>

namespace cserve::detail {

namespace net = boost::asio;

// Runs the application once on a lifespan scope for the whole life of the server. The
// application's coroutine may outlive the server (an application that never returns), so
// the session is shared with it and touches nothing of the server's from receive/send.
class lifespan_session final : public std::enable_shared_from_this<lifespan_session>, public channel {
public:
    CSERVE_DECL lifespan_session(net::any_io_executor ex, lifespan_mode mode);

    // Sends startup and waits for the answer; false when the server must not start.
    CSERVE_DECL task<bool> startup(app_function const& app, logger const& log);

    // Sends shutdown (when the application took part) and waits for the answer.
    CSERVE_DECL task<> shutdown(logger const& log);

    // The state the application's startup left: copied into every connection scope.
    state_map const& state() const noexcept { return scope_.state; }

    // The message of "lifespan.startup.failed", or of the exception that failed startup.
    std::string const& failure() const noexcept { return message_; }

    CSERVE_DECL task<event> receive() override;
    CSERVE_DECL task<> send(event e) override;

private:
    CSERVE_DECL task<> wait();
    CSERVE_DECL void wake() noexcept;

    lifespan_mode mode_;
    cserve::scope scope_;
    net::steady_timer app_wait_;    // the application waiting in receive()
    net::steady_timer server_wait_; // the server waiting for an answer
    bool shutdown_requested_ = false;
    int receives_ = 0;
    enum class answer { none, complete, failed } startup_ = answer::none, shutdown_ = answer::none;
    bool app_done_ = false;
    std::exception_ptr app_error_;
    std::string message_;
};

} // namespace cserve::detail

#endif
