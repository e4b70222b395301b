#!/usr/bin/env bash
# scripts/test.sh -- build cserve and run every test; what CI runs (.ci/run)
# SPDX-License-Identifier: BSL-1.0
#
#   1. build/       RelWithDebInfo, header-only: the whole suite, the 60-s soak
#                   (benchmarks/soak.py; its memory bounds need a build without sanitizers),
#                   and the CMake consumer
#                   tests (add_subdirectory, FetchContent, build tree, install + find_package,
#                   and one consumer of the separately compiled library). The examples the
#                   integration tests drive are header-only; the unit tests link the library
#                   compiled once (tests/CMakeLists.txt), in every pass.
#   2. build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g, with
#                   CSERVE_SEPARATE_COMPILATION=ON so the full suite also runs in the other
#                   mode. Only what its ctest run needs is built; the consumer tests (cmake.*)
#                   are not repeated. The libFuzzer harnesses of tests/fuzz are built and run
#                   here too (fuzz.*, CSERVE_FUZZ_SECONDS each, default 30).
#   3. build-public-api/  CSERVE_BOOST_PUBLIC_API_ONLY=ON: every public-API fallback for Asio's and
#                   Beast's internals (detail/boost_compat.hpp), -O0; the unit tests.
#   4. build-boost-next/  the newest Boost.Asio and Beast (a header-only Boost tree, from
#                   ../shared/boost-next/boost-next.tar.xz or CSERVE_BOOST_NEXT): the examples and
#                   the unit tests, -O0 to keep the pass short. Skipped with a note where the
#                   archive is absent, except under CI (CI=true), where it must be there.
#   Passes 2 to 4 use separate compilation: the library's templates are compiled once, not in
#   every test's translation unit (pass 1's examples, header checks, ODR test and consumer
#   builds cover the header-only mode).
#
# The last line printed is the summary of the last ctest run. Exits non-zero if any step fails.
# Environment: CSERVE_JOBS (default 2) parallel jobs for the build and for ctest;
# CSERVE_CXX (default clang++) the compiler: GCC 12, Debian 12's g++, is refused by the
# headers (it destroys aggregate temporaries in co_await expressions twice).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=${CSERVE_JOBS:-2}
cxx=${CSERVE_CXX:-clang++}
summaries=()

step() { printf '\n==> %s\n' "$*"; }

# run_ctest <build dir> <description> [ctest args...]: on failure, ends the output with the
# summary line and exits.
run_ctest() {
  local dir=$1 what=$2 rc summary
  shift 2
  step "ctest: $what"
  set +e
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" "$@" 2>&1 | tee "$dir/ctest.log"
  rc=${PIPESTATUS[0]}
  set -e
  summary=$(grep -E '^[0-9]+% tests passed' "$dir/ctest.log" | tail -n 1 || true)
  summaries+=("$what: ${summary:-no summary (ctest exit status $rc)}")
  if ((rc != 0)); then
    printf '\n==> FAILED: %s\n' "$what"
    echo "${summary:-ctest failed with exit status $rc}"
    exit "$rc"
  fi
  last_summary=$summary
}

step "setup"
bash scripts/setup.sh

step "configure build/ (RelWithDebInfo, header-only, $cxx)"
cmake -S . -B build \
  "-DCMAKE_CXX_COMPILER=$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCSERVE_BUILD_TESTS=ON \
  -DCSERVE_BUILD_EXAMPLES=ON \
  -DCSERVE_SEPARATE_COMPILATION=OFF

step "build build/"
cmake --build build -j"$jobs"

run_ctest build "header-only"

# UBSan without two checks:
# - function: clang 14 cannot compile coroutines with it ("error: Cannot represent a
#   difference across sections").
# - vptr: its runtime probes memory through pipe(2), so while a test exhausts file
#   descriptors on purpose (EMFILE back-off) every dynamic type looks invalid.
sanitize="-fsanitize=address,undefined -fno-sanitize=function,vptr -fno-sanitize-recover=undefined"
# The fuzz harnesses (tests/fuzz) are built here too, and the whole build carries libFuzzer's
# coverage instrumentation (-fsanitize=fuzzer-no-link) so that the library they link is
# instrumented; each runs for CSERVE_FUZZ_SECONDS (default 30) as a test of this pass.
step "configure build-asan/ (ASan + UBSan, separate compilation, fuzz harnesses, $cxx)"
cmake -S . -B build-asan \
  "-DCMAKE_CXX_COMPILER=$cxx" \
  -DCMAKE_BUILD_TYPE=Debug \
  "-DCMAKE_CXX_FLAGS=-O1 -g -fno-omit-frame-pointer $sanitize -fsanitize=fuzzer-no-link" \
  -DCSERVE_BUILD_TESTS=ON \
  -DCSERVE_BUILD_EXAMPLES=ON \
  -DCSERVE_BUILD_FUZZERS=ON \
  "-DCSERVE_FUZZ_SECONDS=${CSERVE_FUZZ_SECONDS:-30}" \
  -DCSERVE_SEPARATE_COMPILATION=ON

step "build build-asan/ (test binaries only)"
cmake --build build-asan -j"$jobs" --target cserve_test_binaries

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_init_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
run_ctest build-asan "asan+ubsan, separate compilation" -E '^cmake\.|^soak$'

step "configure build-public-api/ (CSERVE_BOOST_PUBLIC_API_ONLY, separate compilation, -O0, $cxx)"
cmake -S . -B build-public-api \
  "-DCMAKE_CXX_COMPILER=$cxx" \
  -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG=-O0 \
  -DCSERVE_BUILD_TESTS=ON \
  -DCSERVE_BUILD_EXAMPLES=OFF \
  -DCSERVE_INSTALL=OFF \
  -DCSERVE_SEPARATE_COMPILATION=ON \
  -DCSERVE_BOOST_PUBLIC_API_ONLY=ON

step "build build-public-api/ (unit tests)"
cmake --build build-public-api -j"$jobs" --target cserve_tests cserve_odr

run_ctest build-public-api "public Asio/Beast API only, unit tests" -LE 'integration|cmake'

boost_next=${CSERVE_BOOST_NEXT:-../shared/boost-next/boost-next.tar.xz}
if [[ -f "$boost_next" ]]; then
  step "extract the newest Boost ($boost_next)"
  boost_tree=build-boost-next/boost
  rm -rf "$boost_tree"
  mkdir -p "$boost_tree"
  tar -xJf "$boost_next" -C "$boost_tree"
  boost_include=$(dirname "$(find "$boost_tree" -path '*/include/boost/version.hpp' | head -n 1)")
  boost_include=$(cd "$boost_include/.." && pwd)
  grep -E '^#define BOOST_(LIB_)?VERSION ' "$boost_include/boost/version.hpp"

  step "configure build-boost-next/ (Boost from $boost_include, separate compilation, -O0, $cxx)"
  cmake -S . -B build-boost-next \
    "-DCMAKE_CXX_COMPILER=$cxx" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG=-O0 \
    -DCSERVE_BUILD_TESTS=ON \
    -DCSERVE_BUILD_EXAMPLES=ON \
    -DCSERVE_INSTALL=OFF \
    -DCSERVE_SEPARATE_COMPILATION=ON \
    "-DBOOST_INCLUDEDIR=$boost_include" \
    -DBoost_NO_SYSTEM_PATHS=ON \
    -DBoost_NO_BOOST_CMAKE=ON

  # The system's Boost sits on the default include path: a header the tree lacks would be
  # taken from there without a word.
  if "$cxx" -std=c++20 -Iinclude -isystem "$boost_include" -fsyntax-only -H include/cserve/cserve.hpp 2>&1 |
      grep -q '/usr/include/boost/'; then
    echo "build-boost-next: <cserve/cserve.hpp> reaches the system's Boost" >&2
    exit 1
  fi

  step "build build-boost-next/ (test binaries and examples)"
  cmake --build build-boost-next -j"$jobs" --target cserve_test_binaries

  run_ctest build-boost-next "newest Boost, unit tests" -LE 'integration|cmake'
elif [[ "${CI:-}" == true ]]; then
  echo "scripts/test.sh: $boost_next is missing: the newest-Boost pass cannot run" >&2
  exit 1
else
  summaries+=("newest Boost: skipped ($boost_next not found)")
fi

step "summary"
for line in "${summaries[@]}"; do
  echo "  $line"
done
echo "$last_summary"
