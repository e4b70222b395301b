#!/usr/bin/env bash
# Builds examples/hello.cpp and serves it on http://127.0.0.1:8000 (Ctrl+C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target hello -j2
exec build/examples/hello
