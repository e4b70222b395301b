// tests/support/main.cpp -- main() of cserve_tests
// SPDX-License-Identifier: BSL-1.0

// Catch2 v2 generates main() in the TU that defines CATCH_CONFIG_MAIN. Catch2 v3 ignores the
// macro: there the test executable links Catch2::Catch2WithMain and this TU is empty.
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
