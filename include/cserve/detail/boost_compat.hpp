// cserve/detail/boost_compat.hpp -- what differs between the Boost releases cserve supports
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_BOOST_COMPAT_HPP
#define CSERVE_DETAIL_BOOST_COMPAT_HPP

#include <cserve/detail/config.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/version.hpp>
#include <boost/beast/version.hpp>

#if BOOST_ASIO_VERSION >= 103300
#include <boost/asio/config.hpp>
#endif

// Beast 359 (Boost 1.90) reports a chunked body's trailer fields through a pure virtual
// basic_parser::on_trailer_field_impl instead of on_field_impl.
#if BOOST_BEAST_VERSION >= 359
#define CSERVE_DETAIL_BEAST_TRAILER_FIELD_IMPL 1
#else
#define CSERVE_DETAIL_BEAST_TRAILER_FIELD_IMPL 0
#endif

namespace cserve::detail {

// Whether `ioc` was made for one thread (concurrency hint 1), so that its connections need
// no strand and the server's deadline lists no lock.
inline bool
one_thread_hint(boost::asio::io_context& ioc)
{
#if BOOST_ASIO_VERSION >= 103300
    // Asio 1.33 (Boost 1.87) keeps the hint in the execution context's public configuration
    // and removed the scheduler's accessor.
    return boost::asio::config(ioc).get("scheduler", "concurrency_hint", 0) == 1;
#else
    return boost::asio::use_service<boost::asio::detail::io_context_impl>(ioc).concurrency_hint() == 1;
#endif
}

} // namespace cserve::detail

#endif
