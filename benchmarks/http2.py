#!/usr/bin/python3
"""HTTP/2: cserve against nginx and h2o, with h2load, side by side in one run.

    /usr/bin/python3 benchmarks/http2.py --build-dir build-bench [--only h1-64,h2c-64x10,h2c-1x100,tls-64x10,download,idle]
                                      [--rounds 2] [--requests 200000] [--idle 2000] [--out FILE] [--svg FILE]

Cases, each measured as server CPU time per unit of work (utime+stime of the server's process
tree; every server pinned to CPU 0 and the load generator to CPU 1, as benchmarks/run.py does):
    h1-64       h2load --h1: HTTP/1.1 keep-alive, 64 connections, the same hello response (the
                HTTP/1.1 figure beside the HTTP/2 ones, by the same client)
    h2c-64x10   h2load over cleartext (prior knowledge), 64 connections x 10 streams, GET of the
                hello response: CPU per request
    h2c-1x100   the same with 1 connection x 100 streams
    tls-64x10   h2load over TLS (ALPN h2), 64 x 10
    download    h2load fetching 50 MiB over one stream (cserve: httpbin /bytes/N; nginx and h2o:
                a static file): CPU per GB
    idle        N HTTP/2 connections, each after one request and then idle: RSS per connection
The cases alternate between the servers in rounds (A B C A B C ...) so that drift on a shared
machine falls on all alike; the result is the sum over the rounds. With --svg the CPU per
request of each server and case is drawn as a bar chart (Debian's python3-matplotlib).
Only ever talks to 127.0.0.1.
"""

import argparse
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the shared harness: process CPU and RSS, Server)
import tls as tlsbench  # noqa: E402  (the certificate and the TLS nginx settings)

HOST = bench.HOST
TRANSFER = bench.TRANSFER_BYTES

NGINX_CONF = """
@USER_LINE@
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 30000;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 20000; accept_mutex off; }
http {
    access_log off;
    default_type application/octet-stream;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75;
    http2_max_requests 1000000;
    http2_max_concurrent_streams 128;
    tcp_nodelay on;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    server {
        listen 127.0.0.1:@PORT@ http2 backlog=4096;
        listen 127.0.0.1:@TLSPORT@ ssl http2 backlog=4096;
        listen 127.0.0.1:@H1PORT@ backlog=4096;
        server_name localhost;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        location = / { return 200 "Hello, world!"; }
        location /files/ { root @DIR@; }
    }
}
"""

H2O_CONF = """
user: @USER@
pid-file: @DIR@/h2o.pid
error-log: @DIR@/error.log
num-threads: 1
max-connections: 20000
http2-max-concurrent-requests-per-connection: 128
http2-idle-timeout: 120
listen:
  host: 127.0.0.1
  port: @PORT@
listen:
  host: 127.0.0.1
  port: @TLSPORT@
  ssl:
    certificate-file: @CERT@
    key-file: @KEY@
    minimum-version: TLSv1.2
hosts:
  default:
    paths:
      /:
        mruby.handler: |
          Proc.new do |env|
            [200, {"content-type" => "text/plain"}, ["Hello, world!"]]
          end
      /files:
        file.dir: @DIR@/files
"""


class H2Server(bench.Server):
    """bench.Server on two ports (cleartext h2c and TLS), ready when it answers over h2c."""

    def start(self):
        spec = self.spec
        self.port = bench.free_port()
        self.tls_port = bench.free_port()
        # nginx serves HTTP/1.1 on a port of its own (its h2c port speaks only HTTP/2); cserve and
        # h2o serve both on one.
        self.h1_port = bench.free_port() if spec.get("h1_port") else self.port
        argv = ["taskset", "-c", self.cpus] + spec["argv"](self.port, self.tls_port, self.tmp, self.h1_port)
        self.logfile = os.path.join(self.tmp, f"{self.name}.log")
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=bench.ROOT, start_new_session=True, env=spec.get("env"))
        out.close()
        bench.RUNNING.append(self)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise bench.ServerError(f"{self.name} exited at startup: {self.log_tail()}")
            how = (["-k", "--http2", f"https://{HOST}:{self.port}/"] if spec.get("tls_only")
                   else ["--http2-prior-knowledge", f"http://{HOST}:{self.port}/"])
            p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"] + how,
                               capture_output=True, text=True, timeout=10)
            if p.stdout == "200":
                return self
            time.sleep(0.1)
        raise bench.ServerError(f"{self.name} did not answer over h2c: {self.log_tail()}")


def files_dir(tmp, name):
    d = tempfile.mkdtemp(prefix=f"{name}-h2-", dir=tmp)
    os.makedirs(os.path.join(d, "files"))
    with open(os.path.join(d, "files", "big"), "wb") as f:
        f.write(os.urandom(1 << 20) * (TRANSFER >> 20))
    return d


def specs(build, tmp, cert, key):
    out = {}
    hello = os.path.join(build, "benchmarks", "hello_bench")
    httpbin = os.path.join(build, "examples", "httpbin")
    # cserve serves one port per process: the TLS cases get a second process (see tls_argv).
    common = ["--host", HOST, "--no-access-log", "--timeout-keep-alive", "120", "--http2-max-requests", "100000000"]
    out["cserve"] = dict(name="cserve", argv=lambda port, tls_port, tmp, h1_port=None: [hello, "--port", str(port)] + common,
                         tls_argv=lambda port, tmp: [hello, "--port", str(port), "--ssl-certfile", cert,
                                                     "--ssl-keyfile", key] + common)
    out["cserve-httpbin"] = dict(name="cserve", argv=lambda port, tls_port, tmp, h1_port=None: [httpbin, "--port", str(port)] + common)
    nginx = "/usr/sbin/nginx"
    if os.access(nginx, os.X_OK):
        def nginx_argv(port, tls_port, tmp, h1_port):
            d = files_dir(tmp, "nginx")
            conf = (NGINX_CONF.replace("@DIR@", d).replace("@PORT@", str(port)).replace("@TLSPORT@", str(tls_port))
                    .replace("@H1PORT@", str(h1_port))
                    .replace("@CERT@", cert).replace("@KEY@", key)
                    .replace("@USER_LINE@", "user root root;" if os.geteuid() == 0 else ""))
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            return [nginx, "-p", d, "-e", os.path.join(d, "error.log"), "-c", path]
        out["nginx"] = dict(name="nginx", argv=nginx_argv, h1_port=True)
    h2o = "/usr/bin/h2o"
    if os.access(h2o, os.X_OK):
        def h2o_argv(port, tls_port, tmp, h1_port):
            d = files_dir(tmp, "h2o")
            conf = (H2O_CONF.replace("@DIR@", d).replace("@PORT@", str(port)).replace("@TLSPORT@", str(tls_port))
                    .replace("@CERT@", cert).replace("@KEY@", key)
                    .replace("@USER@", "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")))
            path = os.path.join(d, "h2o.conf")
            with open(path, "w") as f:
                f.write(conf)
            return [h2o, "-c", path]
        out["h2o"] = dict(name="h2o", argv=h2o_argv)
    return out


def h2load(url, requests, conns, streams, timeout=300, h1=False):
    argv = ["taskset", "-c", bench.LOAD_CPU, "h2load", "-n", str(requests), "-c", str(conns), "-m", str(streams), url]
    if h1:
        argv.insert(4, "--h1")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    r = {}
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", p.stdout)
    if not m or p.returncode != 0:
        r["failed"] = f"h2load exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
        return r
    r["requests"] = int(m.group(3))
    if int(m.group(4)) or int(m.group(3)) != requests:
        r["failed"] = f"{m.group(4)} of {requests} requests failed"
    m = re.search(r"traffic: \S+ \((\d+)\) total, .*?\((\d+)\) data", p.stdout)
    if m:
        r["data_bytes"] = int(m.group(2))
    return r


def idle(server, n):
    """N HTTP/2 connections (prior knowledge), one request each, then idle."""
    import h2.config
    import h2.connection
    import h2.events
    for _ in range(3):
        subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", f"http://{HOST}:{server.port}/"],
                       timeout=10)
    time.sleep(0.5)
    before = bench.rss_kib(server.pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, server.port), timeout=10)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")],
                       end_stream=True)
        s.sendall(c.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.StreamEnded):
                    done = True
            s.sendall(c.data_to_send())
        socks.append(s)
    time.sleep(1.0)
    after = bench.rss_kib(server.pid)
    for s in socks:
        s.close()
    return {"connections": n, "rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": (after - before) / n}


def chart(results, names, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = [c for c, r in results.items() if "request" in r["unit"]]
    if not cases:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results[c].get(name, 0) or 0 for c in cases]
        bars = ax.bar([x + i * width for x in range(len(cases))], values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(cases))], cases, fontsize=8)
    ax.set_ylabel("server CPU µs per request (lower is better)")
    ax.set_title("h2load against each server: server CPU per request, by protocol")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(bench.ROOT, "build-bench"))
    p.add_argument("--only", default="h1-64,h2c-64x10,h2c-1x100,tls-64x10,download,idle")
    p.add_argument("--servers", default="cserve,nginx,h2o")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=200000)
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--out")
    p.add_argument("--svg")
    a = p.parse_args()
    only = set(a.only.split(","))
    bench.raise_nofile(a.idle * 2 + 1000)
    tmp = tempfile.mkdtemp(prefix="cserve-h2-bench-")
    cert, key = tlsbench.make_certificate(tmp)
    sp = specs(os.path.abspath(a.build_dir), tmp, cert, key)
    names = [n for n in a.servers.split(",") if n in sp]
    lines = [f"# HTTP/2: {', '.join(names)} ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"h2load on CPU 1, each server on CPU 0 (one worker or thread); {a.rounds} rounds alternating "
             f"the servers; {a.requests} requests per h2load run.", "",
             "| case | " + " | ".join(names) + " | " + " | ".join(f"cserve / {n}" for n in names if n != "cserve") + " |",
             "|---|" + "---|" * (len(names) * 2 - 1)]
    results = {}

    def add(case, unit, name, value):
        results.setdefault(case, {"unit": unit})[name] = value

    def alternate(case, unit, fn, per, server_of=lambda n: sp[n]):
        totals = {}
        step = 0
        for _ in range(a.rounds):
            for name in names:
                step += 1
                print(f"[{step}/{a.rounds * len(names)}] {case}: {name}", file=sys.stderr, flush=True)
                spec = server_of(name)
                with H2Server(spec, tmp) as srv:
                    r = bench.measured(srv, lambda: fn(srv, name))
                    if r.get("failed"):
                        print(f"{case} {name}: {r['failed']}", file=sys.stderr)
                        continue
                    t = totals.setdefault(name, [0.0, 0.0])
                    t[0] += r["server_cpu_s"]
                    t[1] += per(r)
        for name, (cpu, count) in totals.items():
            add(case, unit, name, cpu / count if count else float("nan"))
            print(f"{case} {name}: {cpu:.2f} s CPU for {count:g} (million requests or GB)", file=sys.stderr)

    per_request = lambda r: r["requests"] / 1e6  # noqa: E731  (CPU s per million = µs per request)
    if "h1-64" in only:
        alternate("HTTP/1.1 64x1", "CPU µs per request",
                  lambda s, n: h2load(f"http://{HOST}:{s.h1_port}/", a.requests, 64, 1, h1=True), per_request)
    if "h2c-64x10" in only:
        alternate("h2c 64x10", "CPU µs per request",
                  lambda s, n: h2load(f"http://{HOST}:{s.port}/", a.requests, 64, 10), per_request)
    if "h2c-1x100" in only:
        alternate("h2c 1x100", "CPU µs per request",
                  lambda s, n: h2load(f"http://{HOST}:{s.port}/", a.requests, 1, 100), per_request)
    if "tls-64x10" in only:
        # cserve serves TLS on its one port (a process of its own for this case); nginx and h2o
        # listen on both.
        def tls_load(s, n):
            port = s.port if s.spec.get("tls_only") else s.tls_port
            return h2load(f"https://{HOST}:{port}/", a.requests, 64, 10)
        alternate("h2 TLS 64x10", "CPU µs per request", tls_load, per_request,
                  server_of=lambda n: cserve_tls_spec(sp, n))
    if "download" in only:
        def dl(s, n):
            path = f"/bytes/{TRANSFER}" if n == "cserve" else "/files/big"
            r = h2load(f"http://{HOST}:{s.port}{path}", 2, 1, 1, timeout=120)
            if "data_bytes" in r and r["data_bytes"] < 2 * TRANSFER:
                r["failed"] = f"downloaded {r['data_bytes']} of {2 * TRANSFER} bytes"
            r["bytes"] = r.get("data_bytes", 0)
            return r
        alternate("50 MiB download, one stream", "CPU s per GB", dl, lambda r: r["bytes"] / 1e9,
                  server_of=lambda n: sp["cserve-httpbin"] if n == "cserve" else sp[n])
    if "idle" in only:
        for name in names:
            with H2Server(sp[name], tmp) as srv:
                try:
                    r = idle(srv, a.idle)
                except OSError as e:
                    print(f"idle {name}: failed: {e!r}", file=sys.stderr)
                    continue
                add(f"idle HTTP/2 connection, {a.idle}", "KiB RSS per connection", name, r["kib_per_conn"])
                print(f"idle {name}: {r}", file=sys.stderr)
    for case, r in results.items():
        row = [f"{r.get(n, float('nan')):.2f}" for n in names]
        c = r.get("cserve")
        ratios = [f"{c / r[n]:.2f}" if c and r.get(n) else "n/a" for n in names if n != "cserve"]
        lines.append(f"| {case} ({r['unit']}) | " + " | ".join(row) + " | " + " | ".join(ratios) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.svg:
        chart(results, names, a.svg)
    bench._cleanup()


def cserve_tls_spec(sp, name):
    """The server of the TLS case: cserve serves TLS on its one port, so its process is started
    with the TLS flags and the load goes to that port; nginx and h2o listen on both."""
    spec = sp[name]
    if "tls_argv" not in spec:
        return spec
    return dict(name=name, argv=lambda port, tls_port, tmp, h1_port=None: spec["tls_argv"](port, tmp), tls_only=True)


if __name__ == "__main__":
    main()
