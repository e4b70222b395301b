// cserve/detail/config.hpp -- compilation mode macros (header-only or separately compiled)
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_DETAIL_CONFIG_HPP
#define CSERVE_DETAIL_CONFIG_HPP

#include <boost/config.hpp>

// GCC before 13 destroys the members of an aggregate temporary twice when the temporary
// is created inside a co_await expression, which is how every response is written:
// `co_await send(cserve::http::response_start{.status = 200, .headers = {...}})` double-frees.
// Refuse to build rather than crash at the first request.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13 && !defined(CSERVE_ALLOW_GCC12)
#error "cserve needs Clang >= 14 or GCC >= 13: GCC 12 destroys aggregate temporaries in co_await expressions twice. Build with clang++ (CMAKE_CXX_COMPILER=clang++)."
#endif

// Header-only unless the user asks for separate compilation, exactly as Beast does it:
// with CSERVE_SEPARATE_COMPILATION, one translation unit includes <cserve/src.hpp>.
#ifndef CSERVE_HEADER_ONLY
#ifndef CSERVE_SEPARATE_COMPILATION
#define CSERVE_HEADER_ONLY 1
#endif
#endif

// HTTP/2 on nghttp2: CMake defines CSERVE_HTTP2=1 and links libnghttp2 (CSERVE_HTTP2=OFF
// builds without it). Without CMake, define it and link -lnghttp2 yourself.
#ifndef CSERVE_HTTP2
#define CSERVE_HTTP2 0
#endif

#if defined(CSERVE_HEADER_ONLY)
#define CSERVE_DECL inline
#else
#define CSERVE_DECL
#endif

#endif
