// cserve/cserve.hpp -- the whole public API
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_CSERVE_HPP
#define CSERVE_CSERVE_HPP

#include <cserve/app.hpp>
#include <cserve/config.hpp>
#include <cserve/error.hpp>
#include <cserve/event.hpp>
#include <cserve/log.hpp>
#include <cserve/metrics.hpp>
#include <cserve/proxy_headers.hpp>
#include <cserve/run.hpp>
#include <cserve/scope.hpp>
#include <cserve/server.hpp>
#include <cserve/task.hpp>
#include <cserve/version.hpp>

#endif
