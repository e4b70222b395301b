#!/usr/bin/env bash
# scripts/setup.sh -- install what cserve's build, tests and examples need (Debian 12)
# SPDX-License-Identifier: BSL-1.0
#
# Idempotent: installs only the packages that are missing, and touches apt only then.
# Runs as root directly, otherwise through sudo.
set -euo pipefail

packages=(
  build-essential     # make, libstdc++, binutils
  clang               # the compiler: Debian 12's g++ 12 is refused (see detail/config.hpp)
  libclang-rt-14-dev  # clang's ASan/UBSan runtimes for the sanitizer pass
  llvm                # llvm-symbolizer: sanitizer reports with file:line
  cmake
  libboost1.81-dev    # Asio, Beast (header-only parts)
  catch2              # unit tests (Catch2 2.13 on Debian 12)
  libssl-dev          # TLS
  openssl             # the openssl CLI: tests make their certificates with it
  zlib1g-dev          # permessage-deflate
  libnghttp2-dev      # HTTP/2
  pkg-config          # CMake finds libnghttp2 with it
  curl                # manual and scripted checks against the examples
  python3             # tests/integration/*.py ...
  python3-httpx       # ... their HTTP client
  python3-websockets  # ... and WebSocket client
  python3-h2          # ... and HTTP/2 frames (tests/integration/http2_test.py)
  nghttp2-client      # nghttp and h2load: HTTP/2 clients for the tests
  chromium            # headless browser for tests/integration/chat_e2e_test.py
  nginx               # a real proxy in front of the examples (benchmarks, PROXY protocol tests)
  libnginx-mod-stream # nginx's stream module: proxy_protocol on (proxy_protocol_test.py)
  haproxy             # send-proxy-v2 (proxy_protocol_test.py)
  systemd             # systemd-socket-activate (config_test.py)
  prometheus          # promtool and a real scrape of --metrics-port (metrics_test.py)
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  if [[ "$status" != installed ]]; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#packages[@]} packages are installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: missing packages (${missing[*]}), and neither root nor sudo is available" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
