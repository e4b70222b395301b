// cserve/task.hpp -- the coroutine type applications are written in
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_TASK_HPP
#define CSERVE_TASK_HPP

#include <cserve/detail/config.hpp>

#include <boost/asio/awaitable.hpp>

namespace cserve {

/** The coroutine type of applications and of every cserve asynchronous operation.

    It is `boost::asio::awaitable<T>`: a task runs on the executor of the coroutine that
    awaits it, and everything Asio offers inside an awaitable (timers, sockets,
    `co_spawn`, cancellation) works inside an application.
*/
template <class T = void>
using task = boost::asio::awaitable<T>;

} // namespace cserve

#endif
