// tests/support/catch.hpp -- the one include for Catch2, v3 where installed, else v2
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_TESTS_SUPPORT_CATCH_HPP
#define CSERVE_TESTS_SUPPORT_CATCH_HPP

// tests/CMakeLists.txt defines CSERVE_TEST_CATCH2_MAJOR to the version it found, so a machine
// with both versions' headers still gets the matching one; otherwise take what is there.
#if defined(CSERVE_TEST_CATCH2_MAJOR)
#if CSERVE_TEST_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
#elif __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#endif
