// cserve/version.hpp -- the library version, parsed by CMake
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_VERSION_HPP
#define CSERVE_VERSION_HPP

/// The version as one integer: major * 10000 + minor * 100 + patch.
#define CSERVE_VERSION 100

/// The version as a string, "major.minor.patch".
#define CSERVE_VERSION_STRING "0.1.0"

#endif
