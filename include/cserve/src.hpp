// cserve/src.hpp -- the library's only source: include it in one translation unit
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_SRC_HPP
#define CSERVE_SRC_HPP

#define CSERVE_SOURCE

#include <cserve/detail/config.hpp>

#if defined(CSERVE_HEADER_ONLY)
#error Do not compile cserve's sources with CSERVE_HEADER_ONLY defined
#endif

#include <cserve/impl/deadline_wheel.ipp>
#include <cserve/impl/error.ipp>
#include <cserve/impl/event.ipp>
#include <cserve/impl/log.ipp>
#include <cserve/impl/metrics.ipp>
#include <cserve/impl/proxy_headers.ipp>
#include <cserve/impl/run.ipp>
#include <cserve/impl/server.ipp>
#include <cserve/impl/process/worker_policy.ipp>

#endif
