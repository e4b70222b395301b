#!/usr/bin/python3
"""cserve against nginx over TLS: the same certificate (ECDSA P-256), the same TLS 1.3 suite.

    /usr/bin/python3 benchmarks/tls.py --build-dir build-bench [--only keepalive,handshake,download,idle]
                                       [--rounds 3] [--seconds 4] [--idle 5000] [--out FILE]

Cases, each measured as server CPU time per unit of work (utime+stime of the server's process
tree, both servers pinned to CPU 0 and the load generator to CPU 1, as benchmarks/run.py does):
    keepalive  wrk over https, 64 keep-alive connections, hello world: CPU per request
    handshake  wrk over https with `connection: close`: a full handshake per request (wrk does
               not resume sessions): CPU per handshake
    download   curl fetching 50 MiB over https (cserve: httpbin /bytes/N; nginx: a static file):
               CPU per GB
    idle       N keep-alive TLS connections, each after one request: RSS per connection
The cases alternate between the servers in rounds (A B A B ...) so that drift on a shared
machine falls on both alike; the result is the sum over the rounds. Kernel TLS offload is used
by nginx and cserve only where the kernel has the `tls` module; the report says whether it has.
Only ever talks to 127.0.0.1.
"""

import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the shared harness: process CPU and RSS, wrk, Server)

HOST = bench.HOST
SUITE = "TLS_AES_128_GCM_SHA256"
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
    tcp_nodelay on;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Ciphersuites @SUITE@;
    ssl_session_cache off;
    server {
        listen 127.0.0.1:@PORT@ ssl backlog=4096;
        server_name localhost;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        location = / { return 200 "Hello, world!"; }
        location /files/ { root @DIR@; }
    }
}
"""


def ktls_available():
    return os.path.exists("/proc/net/tls_stat")


def make_certificate(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https_get(port, path="/", timeout=5.0):
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with client_context().wrap_socket(raw) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class TLSServer(bench.Server):
    """bench.Server, ready when it answers over https."""

    def start(self):
        spec = self.spec
        self.port = bench.free_port()
        argv = ["taskset", "-c", self.cpus] + spec["argv"](self.port, self.tmp)
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
            try:
                if https_get(self.port)[0] == 200:
                    return self
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        raise bench.ServerError(f"{self.name} did not answer over https: {self.log_tail()}")


def specs(build, tmp, cert, key):
    out = {}
    common = ["--host", HOST, "--no-access-log", "--timeout-keep-alive", "120",
              "--ssl-certfile", cert, "--ssl-keyfile", key]
    # Both servers offer only the one TLS 1.3 suite, so that both encrypt with the same cipher.
    env_suite = dict(os.environ, OPENSSL_CONF=os.path.join(tmp, "openssl-suite.cnf"))
    with open(env_suite["OPENSSL_CONF"], "w") as f:
        f.write("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n"
                f"[sys]\nCiphersuites = {SUITE}\n")
    hello = os.path.join(build, "benchmarks", "hello_bench")
    httpbin = os.path.join(build, "examples", "httpbin")
    out["cserve"] = dict(name="cserve", argv=lambda port, tmp: [hello, "--port", str(port)] + common,
                         env=env_suite)
    out["cserve-httpbin"] = dict(name="cserve-httpbin", argv=lambda port, tmp: [httpbin, "--port", str(port)] + common,
                                 env=env_suite)
    nginx = "/usr/sbin/nginx"

    def nginx_argv(port, tmp):
        d = tempfile.mkdtemp(prefix="nginx-tls-", dir=tmp)
        os.makedirs(os.path.join(d, "files"))
        with open(os.path.join(d, "files", "big"), "wb") as f:
            f.write(os.urandom(1 << 20) * (TRANSFER >> 20))
        conf = (NGINX_CONF.replace("@DIR@", d).replace("@PORT@", str(port)).replace("@CERT@", cert)
                .replace("@KEY@", key).replace("@SUITE@", SUITE)
                .replace("@USER_LINE@", "user root root;" if os.geteuid() == 0 else ""))
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return [nginx, "-p", d, "-e", os.path.join(d, "error.log"), "-c", path]
    if os.access(nginx, os.X_OK):
        out["nginx"] = dict(name="nginx", argv=nginx_argv)
    return out


def wrk_https(port, conns, seconds, close=False):
    argv = ["taskset", "-c", bench.LOAD_CPU, "wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"https://{HOST}:{port}/")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    r = bench.parse_wrk(p.stdout)
    if p.returncode != 0 or "requests" not in r:
        r["failed"] = f"wrk exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
    return r


def download(port, path, reps):
    url = f"https://{HOST}:{port}{path}"
    got = 0
    for _ in range(reps):
        p = subprocess.run(["taskset", "-c", bench.LOAD_CPU, "curl", "-sk", "--tls13-ciphers", SUITE,
                            "-o", "/dev/null", "-w", "%{size_download}", url],
                           capture_output=True, text=True, timeout=120)
        got += int(p.stdout or 0)
    r = {"bytes": got}
    if got != reps * TRANSFER:
        r["failed"] = f"downloaded {got} of {reps * TRANSFER} bytes"
    return r


def idle(server, n):
    for _ in range(3):
        https_get(server.port)
    time.sleep(0.5)
    before = bench.rss_kib(server.pid)
    ctx = client_context()
    socks = []
    t0 = time.monotonic()
    for _ in range(n):
        raw = socket.create_connection((HOST, server.port), timeout=10)
        s = ctx.wrap_socket(raw)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"Hello, world!" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        socks.append(s)
    opened = time.monotonic() - t0
    time.sleep(1.0)
    after = bench.rss_kib(server.pid)
    for s in socks:
        s.close()
    return {"connections": n, "open_s": opened, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_conn": (after - before) / n}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(bench.ROOT, "build-bench"))
    p.add_argument("--only", default="keepalive,handshake,download,idle")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--idle", type=int, default=5000)
    p.add_argument("--out")
    a = p.parse_args()
    only = set(a.only.split(","))
    bench.raise_nofile(a.idle * 2 + 1000)
    tmp = tempfile.mkdtemp(prefix="cserve-tls-bench-")
    cert, key = make_certificate(tmp)
    sp = specs(os.path.abspath(a.build_dir), tmp, cert, key)
    lines = [f"# TLS: cserve vs nginx ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Certificate ECDSA P-256, TLS 1.3 {SUITE}; server on CPU 0, load on CPU 1; "
             f"{a.rounds} rounds alternating the servers. Kernel TLS: "
             f"{'available' if ktls_available() else 'not available (no tls module in this kernel), so both servers encrypt in user space'}.",
             "", "| case | cserve | nginx | cserve / nginx |", "|---|---|---|---|"]
    results = {}

    def add(case, unit, name, value):
        results.setdefault(case, {"unit": unit})[name] = value

    def alternate(case, unit, pairs, fn, per):
        totals = {}
        for _ in range(a.rounds):
            for name, spec in pairs:
                with TLSServer(spec, tmp) as srv:
                    r = bench.measured(srv, lambda: fn(srv))
                    if r.get("failed"):
                        print(f"{case} {name}: {r['failed']}", file=sys.stderr)
                        continue
                    t = totals.setdefault(name, [0.0, 0.0])
                    t[0] += r["server_cpu_s"]
                    t[1] += per(r)
        for name, (cpu, count) in totals.items():
            add(case, unit, name, cpu / count if count else float("nan"))
            print(f"{case} {name}: {cpu:.2f} s CPU for {count:.0f}", file=sys.stderr)

    ng = sp.get("nginx")
    if not ng:
        sys.exit("nginx is not installed (apt-get install nginx-light)")
    if "keepalive" in only:
        alternate("keep-alive hello, wrk -c64", "CPU µs per request",
                  [("cserve", sp["cserve"]), ("nginx", ng)],
                  lambda s: wrk_https(s.port, 64, a.seconds), lambda r: r["requests"] / 1e6)
    if "handshake" in only:
        alternate("full handshake per request, wrk -c16", "CPU µs per handshake",
                  [("cserve", sp["cserve"]), ("nginx", ng)],
                  lambda s: wrk_https(s.port, 16, a.seconds, close=True), lambda r: r["requests"] / 1e6)
    if "download" in only:
        alternate("50 MiB download, curl", "CPU s per GB",
                  [("cserve", sp["cserve-httpbin"]), ("nginx", ng)],
                  lambda s: download(s.port, f"/bytes/{TRANSFER}" if s.name != "nginx" else "/files/big", 2),
                  lambda r: r["bytes"] / 1e9)
    if "idle" in only:
        for name, spec in (("cserve", sp["cserve"]), ("nginx", ng)):
            with TLSServer(spec, tmp) as srv:
                r = idle(srv, a.idle)
                add(f"idle keep-alive TLS connection, {a.idle}", "KiB RSS per connection", name, r["kib_per_conn"])
                print(f"idle {name}: {r}", file=sys.stderr)
    for case, r in results.items():
        c, n = r.get("cserve"), r.get("nginx")
        ratio = f"{c / n:.2f}" if c and n else "n/a"
        lines.append(f"| {case} ({r['unit']}) | {c:.2f} | {n:.2f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    bench._cleanup()


if __name__ == "__main__":
    main()
