#!/usr/bin/env bash
# The one command: builds cserve in Release, runs every server it finds against the same loads,
# prints markdown tables (also written to benchmarks/results/latest.md).
#
#   bash benchmarks/run.sh                 # full run: 10 s per case, every case twice
#   bash benchmarks/run.sh --quick         # 2 s per case, once: checks the harness
#   bash benchmarks/run.sh --only cserve,nginx,http
#
# Every argument is passed on to benchmarks/run.py (see `/usr/bin/python3 benchmarks/run.py --help`).
# Environment: BUILD_DIR (default build-bench), SKIP_INSTALL=1, SKIP_BUILD=1, JOBS (default 2).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build-bench}"
jobs="${JOBS:-2}"

for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
        exec /usr/bin/python3 "$here/run.py" --help
    fi
done

# --- what the harness needs, from Debian -----------------------------------------------------
missing=()
installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]; }
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    if ! installed nginx && ! installed nginx-light && ! command -v nginx >/dev/null; then
        missing+=(nginx)
    fi
    for p in wrk curl python3 python3-uvicorn python3-uvloop python3-httptools python3-websockets \
             nghttp2-client h2o python3-h2 python3-matplotlib \
             libbenchmark-dev cmake clang build-essential libboost1.81-dev util-linux; do
        installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "run.sh: installing ${missing[*]}" >&2
        if [[ $EUID -ne 0 ]]; then
            echo "run.sh: not root; install these yourself: apt-get install ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # Debian 12 ships "nginx"; older releases have "nginx-light".
        if [[ " ${missing[*]} " == *" nginx "* ]] && ! apt-cache show nginx >/dev/null 2>&1; then
            missing=("${missing[@]/#nginx/nginx-light}")
        fi
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# --- build cserve in Release, with the benchmark programs ------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    mkdir -p "$build_dir"
    cmake -S "$root" -B "$build_dir" \
        -DCMAKE_CXX_COMPILER=clang++ \
        -DCMAKE_BUILD_TYPE=Release \
        -DCSERVE_BUILD_BENCHMARKS=ON \
        -DCSERVE_BUILD_TESTS=OFF \
        -DCSERVE_BUILD_EXAMPLES=ON >"$build_dir/configure.log" 2>&1 \
        || { cat "$build_dir/configure.log" >&2; exit 1; }
    cmake --build "$build_dir" -j"$jobs"
fi

# 5,000 idle keep-alive connections: the servers inherit this limit from run.py.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

/usr/bin/python3 "$here/run.py" --build-dir "$build_dir" "$@"

# HTTP/2 (and HTTP/1.1 by the same client) against nginx and h2o with h2load, and the chart of
# CPU per request by server and protocol: results/latest-http2.md and results/latest.svg.
# SKIP_HTTP2=1 leaves it out; --quick makes it one short round.
if [[ "${SKIP_HTTP2:-0}" != 1 ]]; then
    h2args=(--out "$here/results/latest-http2.md" --svg "$here/results/latest.svg")
    for arg in "$@"; do
        [[ "$arg" == --quick ]] && h2args+=(--rounds 1 --requests 20000 --idle 200)
    done
    /usr/bin/python3 "$here/http2.py" --build-dir "$build_dir" "${h2args[@]}"
fi
