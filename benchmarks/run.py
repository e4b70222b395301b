#!/usr/bin/python3
"""cserve's benchmark harness: starts each server, loads it, stops it, prints markdown tables.

Run it through benchmarks/run.sh (which installs the tools and builds cserve in Release), or
directly with Debian's python:

    /usr/bin/python3 benchmarks/run.py --build-dir build-bench [--quick] [--only NAME,...]

Servers (each skipped with a note when it is not there):
    cserve          <build>/benchmarks/hello_bench   cserve's hello app + WebSocket echo on any path
    cserve-hello    <build>/examples/hello           the example as shipped (127.0.0.1:8000, access log on)
    cserve-httpbin  <build>/examples/httpbin         GET / hello, POST /upload, GET /bytes/{n}, /ws/echo
    beast           <build>/benchmarks/beast_server  plain Boost.Beast C++20 coroutine server
    nginx           nginx from Debian, `return 200 "Hello, world!"`
    uvicorn         Debian's uvicorn + uvloop + httptools serving benchmarks/uvicorn_app.py

Sections: http (wrk at 64 and 256 connections), pipeline (16 requests per write), ws (WebSocket
echo, 64 B and 4 KiB), idle (RSS per idle keep-alive connection), transfer (50 MiB upload and
download), workers (cserve --workers 1 vs 2), micro (the Google Benchmark micro-benchmark).

Only ever talks to 127.0.0.1. The server runs on CPU 0 (taskset -c 0), the load generator on
CPU 1; server CPU time is utime+stime from /proc/<pid>/stat summed over the server's process
tree, read right before and right after each measured load window. The http and ws cases run
the servers side by side: all started at once, the load of each case cut into 2 s slices that
take turns between the servers, so that the host's drift falls on all of them alike.
"""

import argparse
import atexit
import contextlib
import datetime
import errno
import http.client
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
SERVER_CPU = "0"
LOAD_CPU = "1"
ALL_CPUS = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))) or "0,1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELLO = b"Hello, world!"
TRANSFER_BYTES = 50 * 1024 * 1024  # 52428800

SECTIONS = ["http", "pipeline", "ws", "idle", "transfer", "workers", "micro"]
SERVER_NAMES = ["cserve", "cserve-hello", "cserve-httpbin", "beast", "nginx", "uvicorn"]


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# /proc: CPU time and RSS of a process tree


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()  # fields from "state" on: [0]=state [1]=ppid ...


def process_tree(pid):
    """pid and all its live descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(d)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime + stime of pid and its descendants (all threads), in seconds."""
    ticks = 0
    for p in process_tree(pid):
        try:
            f = _stat_fields(p)
            ticks += int(f[11]) + int(f[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return ticks / CLK_TCK


def rss_kib(pid):
    """VmRSS of pid and its descendants, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def machine_busy_seconds():
    """CPU time the whole machine spent busy (all CPUs; steal excluded), and steal, in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------------------
# Ports and servers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) != 0


def http_get(port, path="/", timeout=5.0):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


RUNNING = []  # servers to kill whatever happens


def _cleanup():
    for s in list(RUNNING):
        s.stop()


atexit.register(_cleanup)


class ServerError(Exception):
    pass


class Server:
    """One server process (and its children) in its own process group."""

    def __init__(self, spec, tmp, cpus=SERVER_CPU, extra=(), tag=""):
        self.spec = spec
        self.name = spec["name"]
        self.tmp = tmp
        self.cpus = cpus
        self.extra = list(extra)
        self.tag = tag
        self.proc = None
        self.port = None
        self.logfile = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        spec = self.spec
        self.port = spec.get("fixed_port") or free_port()
        argv = spec["argv"](self.port, self.tmp) + self.extra
        argv = ["taskset", "-c", self.cpus] + argv
        self.logfile = os.path.join(self.tmp, f"{self.name}{self.tag}.log")
        out = open(self.logfile, "ab")
        log(f"start {self.name}{' ' + ' '.join(self.extra) if self.extra else ''} on port {self.port} (cpu {self.cpus})")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=spec.get("cwd", ROOT), start_new_session=True,
                                     env=spec.get("env"))
        out.close()
        RUNNING.append(self)
        deadline = time.monotonic() + 20
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode} at startup: {self.log_tail()}")
            try:
                status, body = http_get(self.port, spec.get("check_path", "/"), timeout=2)
                if status == 200 and (not spec.get("hello", True) or body == HELLO):
                    return self
                last = f"GET / answered {status} {body[:60]!r}"
                raise ServerError(f"{self.name}: {last}")
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        raise ServerError(f"{self.name} did not answer on port {self.port} within 20 s ({last}): {self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, n=600):
        try:
            with open(self.logfile, "rb") as f:
                return f.read()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 8), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    log(f"{self.name} did not stop on {sig.name}")
        # Anything left in the group (children of a master that exited first).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.returncode is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self in RUNNING:
            RUNNING.remove(self)
        self.proc = None


def server_specs(build, notes):
    """The servers of the comparison that are installed; notes get a line per missing one."""
    specs = {}
    common = ["--host", HOST, "--no-access-log", "--timeout-keep-alive", "60"]

    hello_bench = os.path.join(build, "benchmarks", "hello_bench")
    if os.access(hello_bench, os.X_OK):
        help_text = _help(hello_bench)
        specs["cserve"] = dict(
            name="cserve", desc="benchmarks/hello_bench (cserve, --no-access-log)",
            argv=lambda port, tmp: [hello_bench, "--port", str(port)] + common,
            ws_path="/ws", idle=True, workers="--workers" in help_text)
    else:
        notes.append(f"cserve (hello_bench) skipped: {hello_bench} not built")

    hello = os.path.join(build, "examples", "hello")
    if os.access(hello, os.X_OK):
        if port_is_free(8000):
            specs["cserve-hello"] = dict(
                name="cserve-hello",
                desc="examples/hello as shipped (hard-wired 127.0.0.1:8000, access log on, keep-alive 5 s)",
                argv=lambda port, tmp: [hello], fixed_port=8000, http_only=True)
        else:
            notes.append("cserve-hello (examples/hello) skipped: 127.0.0.1:8000 is in use and the example is hard-wired to it")
    else:
        notes.append(f"cserve-hello skipped: {hello} not built")

    httpbin = os.path.join(build, "examples", "httpbin")
    if os.access(httpbin, os.X_OK):
        specs["cserve-httpbin"] = dict(
            name="cserve-httpbin", desc="examples/httpbin (cserve, --no-access-log)",
            argv=lambda port, tmp: [httpbin, "--port", str(port)] + common,
            ws_path="/ws/echo", idle=True, transfer=True)
    else:
        notes.append(f"cserve-httpbin skipped: {httpbin} not built")

    beast = os.path.join(build, "benchmarks", "beast_server")
    if os.access(beast, os.X_OK):
        specs["beast"] = dict(
            name="beast", desc="benchmarks/beast_server (plain Boost.Beast, C++20 coroutines)",
            argv=lambda port, tmp: [beast, "--port", str(port)],
            ws_path="/ws", idle=True)
    else:
        notes.append(f"beast skipped: {beast} not built")

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx:
        def nginx_argv(port, tmp):
            d = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
            with open(os.path.join(HERE, "nginx.conf")) as f:
                conf = f.read()
            user = "user root root;" if os.geteuid() == 0 else ""
            conf = conf.replace("@DIR@", d).replace("@PORT@", str(port)).replace("@USER_LINE@", user)
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            return [nginx, "-p", d, "-e", os.path.join(d, "error.log"), "-c", path]
        specs["nginx"] = dict(
            name="nginx", desc="nginx, 1 worker, `return 200 \"Hello, world!\"` (master + worker CPU summed)",
            argv=nginx_argv, idle=True)
    else:
        notes.append("nginx skipped: not installed")

    uv = _python_has("uvicorn", "uvloop", "httptools")
    if uv is True:
        ws_impl = "websockets" if _python_has("websockets") is True else (
            "wsproto" if _python_has("wsproto") is True else "none")
        argv = ["/usr/bin/python3", "-m", "uvicorn", "uvicorn_app:app", "--app-dir", HERE,
                "--host", HOST, "--loop", "uvloop", "--http", "httptools", "--ws", ws_impl,
                "--no-access-log", "--timeout-keep-alive", "60", "--lifespan", "on", "--log-level", "warning"]
        specs["uvicorn"] = dict(
            name="uvicorn", desc=f"uvicorn + uvloop + httptools + {ws_impl}, raw ASGI app (uvicorn_app.py)",
            argv=lambda port, tmp: argv + ["--port", str(port)],
            ws_path="/ws" if ws_impl != "none" else None, idle=True, transfer=True,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        if ws_impl == "none":
            notes.append("uvicorn WebSocket skipped: neither python3-websockets nor python3-wsproto is installed")
    else:
        notes.append(f"uvicorn skipped: /usr/bin/python3 lacks {uv}")
    return specs


def _help(binary):
    try:
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _python_has(*modules):
    code = "import importlib.util,sys; m=[n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]; print(' '.join(m))"
    try:
        r = subprocess.run(["/usr/bin/python3", "-c", code, *modules], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "python3"
    missing = r.stdout.strip()
    return True if r.returncode == 0 and not missing else (missing or "python3")


# ------------------------------------------------------------------------------------------
# Load generators


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _to_us(value, unit):
    return float(value) * _UNITS_US[unit]


def parse_wrk(text):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        r["requests"] = int(m.group(1))
        r["seconds"] = _to_us(m.group(2), m.group(3)) / 1e6
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rate"] = float(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        # wrk sometimes prints a percentile as 0.00us (seen with pipelining): no data, not 0.
        if m and float(m.group(1)) > 0:
            r[key] = _to_us(m.group(1), m.group(2))
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errors["non-2xx"] = int(m.group(1))
    r["errors"] = sum(errors.values())
    r["error_detail"] = errors
    return r


def run_wrk(port, conns, duration, threads=1, script=None, cpus=LOAD_CPU, path="/"):
    argv = ["taskset", "-c", cpus, "wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s",
            "--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", script]
    argv.append(f"http://{HOST}:{port}{path}")
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return {"failed": "wrk timed out"}
    r = parse_wrk(p.stdout)
    r["output"] = p.stdout
    if p.returncode != 0 or "requests" not in r:
        r["failed"] = f"wrk exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
    return r


def run_ws_load(binary, port, path, conns, size, duration, binary_frames, cpus=LOAD_CPU, warmup=None):
    argv = ["taskset", "-c", cpus, binary, "--host", HOST, "--port", str(port), "--path", path,
            "--connections", str(conns), "--size", str(size), "--duration", str(duration)]
    if warmup is not None:
        argv += ["--warmup", str(warmup)]
    argv.append("--binary" if binary_frames else "--text")
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return {"failed": "ws_load timed out"}
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if p.returncode != 0:
                r["failed"] = f"ws_load exit {p.returncode}: {p.stderr.strip()[-300:]}"
            return r
    return {"failed": f"ws_load exit {p.returncode}, no JSON: {(p.stderr or p.stdout).strip()[-300:]}"}


def measured(server, fn):
    """Runs fn() (a load) and adds the server's CPU time, wall time and the client's CPU to its result."""
    (b0, s0), c0, l0, t0 = machine_busy_seconds(), cpu_seconds(server.pid), children_cpu(), time.monotonic()
    r = fn()
    c1, l1, t1, (b1, s1) = cpu_seconds(server.pid), children_cpu(), time.monotonic(), machine_busy_seconds()
    r["server_cpu_s"] = c1 - c0
    r["client_cpu_s"] = l1 - l0
    r["wall_s"] = t1 - t0
    # Everything else the machine did meanwhile (other processes, unattributed kernel work):
    # large values mean the numbers of this case are disturbed.
    r["other_cpu_s"] = max(0.0, (b1 - b0) - r["server_cpu_s"] - r["client_cpu_s"])
    r["steal_s"] = s1 - s0
    if server.proc.poll() is not None:
        r["failed"] = f"server exited with {server.proc.returncode}: {server.log_tail(300)}"
    return r


def combine(slices, count_key):
    """One result from the slices of an interleaved case: counts, CPU and times summed, the rate
    over the summed load time, p50 and p99 the count-weighted mean of the slices' own."""
    for r in slices:
        if "failed" in r:
            return r
    out = {}
    for k in (count_key, "server_cpu_s", "client_cpu_s", "wall_s", "other_cpu_s", "steal_s", "errors", "seconds"):
        out[k] = sum(r.get(k) or 0 for r in slices)
    count = out[count_key]
    if out["seconds"] > 0:
        out["rate"] = count / out["seconds"]
    for key in ("p50_us", "p99_us"):
        weighted = [(r[key], r.get(count_key) or 0) for r in slices if r.get(key) is not None]
        total = sum(n for _, n in weighted)
        if total > 0:
            out[key] = sum(v * n for v, n in weighted) / total
    out["slices"] = len(slices)
    return out


# ------------------------------------------------------------------------------------------
# Idle keep-alive connections


def _response_complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if m:
        return len(buf) - end - 4 >= int(m.group(1))
    if b"transfer-encoding: chunked" in head:
        return buf.endswith(b"0\r\n\r\n")
    return False


def open_idle_connections(port, n, deadline_s=90, in_flight=200):
    """n keep-alive connections, each of which has completed one GET /. Returns (sockets, failures)."""
    sel = selectors.DefaultSelector()
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    done, failures, started = [], 0, 0
    pending = {}  # sock -> [state, buffer]
    deadline = time.monotonic() + deadline_s

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return False
        pending[s] = ["connect", b""]
        sel.register(s, selectors.EVENT_WRITE)
        return True

    try:
        while len(done) < n and time.monotonic() < deadline:
            while started < n + failures and len(pending) < in_flight and failures < n // 10 + 50:
                started += 1
                if not start_one():
                    failures += 1
            if not pending:
                break
            for key, events in sel.select(timeout=1.0):
                s = key.fileobj
                state = pending[s]
                try:
                    if state[0] == "connect":
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        s.send(request)  # 40 bytes: goes out whole
                        state[0] = "read"
                        sel.modify(s, selectors.EVENT_READ)
                    else:
                        data = s.recv(65536)
                        if not data:
                            raise OSError("closed")
                        state[1] += data
                        if _response_complete(state[1]):
                            if not state[1].startswith(b"HTTP/1.1 200"):
                                raise OSError(f"status {state[1][:20]!r}")
                            sel.unregister(s)
                            del pending[s]
                            done.append(s)
                except OSError:
                    sel.unregister(s)
                    del pending[s]
                    s.close()
                    failures += 1
    finally:
        for s in pending:
            sel.unregister(s)
            s.close()
        sel.close()
    return done, failures


def count_alive(socks):
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0):
        try:
            if key.fileobj.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except OSError:
            closed += 1
    sel.close()
    return len(socks) - closed


def idle_rss(server, n):
    for _ in range(3):  # warm the server up: a request on a connection of its own
        http_get(server.port)
    time.sleep(0.5)
    before = rss_kib(server.pid)
    t0 = time.monotonic()
    socks, failures = open_idle_connections(server.port, n)
    opened_s = time.monotonic() - t0
    try:
        time.sleep(1.0)
        after = rss_kib(server.pid)
        alive = count_alive(socks)
    finally:
        for s in socks:
            s.close()
    r = {"connections": len(socks), "alive": alive, "failures": failures, "open_s": opened_s,
         "rss_before_kib": before, "rss_after_kib": after}
    if socks:
        r["kib_per_conn"] = (after - before) / len(socks)
    if len(socks) < n or alive < len(socks):
        r["warning"] = f"{len(socks)}/{n} opened, {alive} still open when measured"
    return r


# ------------------------------------------------------------------------------------------
# Upload and download


def transfer(server, kind, duration, upload_file, min_reps=2):
    url = f"http://{HOST}:{server.port}" + ("/upload" if kind == "upload" else f"/bytes/{TRANSFER_BYTES}")
    if kind == "upload":
        argv = ["curl", "-s", "-o", "/dev/null", "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                "--data-binary", f"@{upload_file}", "-w", "%{http_code} %{size_upload} %{time_total}", url]
    else:
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url]
    argv = ["taskset", "-c", LOAD_CPU] + argv

    def load():
        total, seconds, reps, errors, detail = 0, 0.0, 0, 0, ""
        start = time.monotonic()
        while reps < min_reps or time.monotonic() - start < duration:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                code, size, t = p.stdout.split()
                code, size, t = int(code), int(float(size)), float(t)
            except (subprocess.TimeoutExpired, ValueError) as e:
                errors += 1
                detail = repr(e)
                if errors > 3:
                    break
                continue
            reps += 1
            if code != 200 or size != TRANSFER_BYTES:
                errors += 1
                detail = f"HTTP {code}, {size} bytes"
            total += size
            seconds += t
        r = {"transfers": reps, "bytes": total, "seconds": seconds, "errors": errors}
        if detail:
            r["error_detail"] = {detail: errors}
        if seconds:
            r["mb_per_s"] = total / seconds / 1e6
        return r

    return measured(server, load)


# ------------------------------------------------------------------------------------------
# Formatting


def fmt_us(us):
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def fmt_errors(r):
    if r.get("failed"):
        return "FAILED: " + r["failed"].replace("|", "/").replace("\n", " ")[:160]
    n = r.get("errors", 0)
    if not n:
        return "0"
    detail = ", ".join(f"{k} {v}" for k, v in (r.get("error_detail") or {}).items())
    return f"**{n}**" + (f" ({detail})" if detail else "")


def per_unit_us(r, count_key):
    n = r.get(count_key)
    if not n or "server_cpu_s" not in r:
        return None
    return r["server_cpu_s"] * 1e6 / n


def cpu_pct(r, key="server_cpu_s"):
    if not r.get("wall_s") or key not in r:
        return None
    return 100.0 * r[key] / r["wall_s"]


def table(header, rows, align=None):
    """A markdown table; align is one character per column, l or r (default: first l, others r)."""
    align = align or "l" + "r" * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build_dir)
        self.notes = []
        self.results = []  # dicts: section, case, server, run, result
        self.micro_output = None
        self.tmp = tempfile.mkdtemp(prefix="cserve-bench-")
        self.loadavg_start = loadavg()
        self.specs = server_specs(self.build, self.notes)
        self.ws_load = os.path.join(self.build, "benchmarks", "ws_load")
        self.micro = os.path.join(self.build, "benchmarks", "micro_hot_path")
        only = [x.strip() for x in (args.only or "").split(",") if x.strip()]
        unknown = [x for x in only if x not in SECTIONS and x not in SERVER_NAMES]
        if unknown:
            sys.exit(f"--only: unknown {', '.join(unknown)} (servers: {', '.join(SERVER_NAMES)}; sections: {', '.join(SECTIONS)})")
        self.only_sections = [x for x in only if x in SECTIONS] or SECTIONS
        self.only_servers = [x for x in only if x in SERVER_NAMES] or SERVER_NAMES
        self.servers = [self.specs[n] for n in SERVER_NAMES if n in self.specs and n in self.only_servers]

    def record(self, section, case, server, run, result):
        result = dict(result)
        self.results.append({"section": section, "case": case, "server": server, "run": run, "result": result})
        brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()
                 if k in ("rate", "requests", "messages", "p99_us", "server_cpu_s", "errors", "failed",
                          "kib_per_conn", "mb_per_s", "warning")}
        log(f"  {section} {case} {server} run {run}: {brief}")

    def fail(self, section, case, server, run, err):
        self.record(section, case, server, run, {"failed": str(err)})

    def run(self):
        a = self.args
        log(f"servers: {', '.join(s['name'] for s in self.servers) or 'none'}; sections: {', '.join(self.only_sections)}; "
            f"{a.duration} s per case, {a.runs} run(s)")
        try:
            for run in range(1, a.runs + 1):
                self.run_interleaved(run)
                for spec in self.servers:
                    self.run_server(spec, run)
                if "workers" in self.only_sections and "cserve" in self.only_servers:
                    self.run_workers(run)
            if "micro" in self.only_sections and "cserve" in self.only_servers:
                self.run_micro()
        finally:
            _cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run_server(self, spec, run):
        a = self.args
        name = spec["name"]
        sections = self.only_sections
        http_only = spec.get("http_only")

        def group(section, fn):
            try:
                with Server(spec, self.tmp) as server:
                    fn(server)
            except ServerError as e:
                self.notes.append(f"run {run}, {section}: {e}")
                self.fail(section, "*", name, run, e)

        if "pipeline" in sections and not http_only:
            def pipeline_cases(server):
                self.wrk_case("pipeline", "64 connections, 16 per write", server, run, 64,
                              script=os.path.join(HERE, "pipeline.lua"))
            group("pipeline", pipeline_cases)
        if "idle" in sections and spec.get("idle"):
            def idle_case(server):
                r = idle_rss(server, a.idle_conns)
                self.record("idle", f"{a.idle_conns} connections", name, run, r)
            group("idle", idle_case)
        if "transfer" in sections and spec.get("transfer"):
            upload_file = self._upload_file()

            def transfer_cases(server):
                for kind in ("upload", "download"):
                    r = transfer(server, kind, a.duration, upload_file, min_reps=1 if a.quick else 3)
                    self.record("transfer", kind, name, run, r)
            group("transfer", transfer_cases)

    def run_interleaved(self, run):
        """The sections the targets compare servers on (http, ws), side by side: every server of
        the run is started at once (all on CPU 0; those not under load are idle), and each case's
        load is cut into slices that go round the servers, the first one moving on each round.
        A change in the host's speed during a case then falls on every server alike."""
        a = self.args
        cases = []  # (section, case, servers, count key, load(server, seconds))
        if "http" in self.only_sections:
            for conns in (64, 256):
                cases.append(("http", f"{conns} connections", list(self.servers), "requests",
                              lambda server, d, c=conns: run_wrk(server.port, c, d)))
        if "ws" in self.only_sections:
            ws_specs = [spec for spec in self.servers if spec.get("ws_path")]
            if ws_specs and not os.access(self.ws_load, os.X_OK):
                self._note_once(f"WebSocket section skipped: {self.ws_load} not built")
            elif ws_specs:
                for size in (64, 4096):
                    cases.append(("ws", f"{size} B", ws_specs, "messages",
                                  lambda server, d, z=size: run_ws_load(
                                      self.ws_load, server.port, server.spec["ws_path"], a.ws_conns, z, d,
                                      not a.ws_text, warmup=0)))
        if not cases:
            return
        slice_s = 2 if a.duration >= 4 else a.duration
        rounds = max(1, round(a.duration / slice_s))
        with contextlib.ExitStack() as stack:
            servers = {}
            for spec in {id(s): s for case in cases for s in case[2]}.values():
                try:
                    servers[spec["name"]] = stack.enter_context(Server(spec, self.tmp))
                except ServerError as e:
                    self.notes.append(f"run {run}: {e}")
                    for section in sorted({c[0] for c in cases if spec in c[2]}):
                        self.fail(section, "*", spec["name"], run, e)
            for section, case, specs, count_key, load in cases:
                names = [spec["name"] for spec in specs if spec["name"] in servers]
                if a.warmup:
                    for name in names:
                        load(servers[name], a.warmup)
                parts = {name: [] for name in names}
                for i in range(rounds):
                    k = i % len(names)
                    for name in names[k:] + names[:k]:
                        server = servers[name]
                        parts[name].append(measured(server, lambda: load(server, slice_s)))
                for name in names:
                    self.record(section, case, name, run, combine(parts[name], count_key))

    def _note_once(self, note):
        if note not in self.notes:
            self.notes.append(note)

    def _upload_file(self):
        path = os.path.join(self.tmp, "upload.bin")
        if not os.path.exists(path):
            chunk = bytes(ord("a") + i % 26 for i in range(1 << 20))
            with open(path, "wb") as f:
                for _ in range(TRANSFER_BYTES // len(chunk)):
                    f.write(chunk)
        return path

    def wrk_case(self, section, case, server, run, conns, script=None, threads=1, cpus=LOAD_CPU):
        a = self.args
        if a.warmup:
            run_wrk(server.port, conns, a.warmup, threads=threads, script=script, cpus=cpus)
        r = measured(server, lambda: run_wrk(server.port, conns, a.duration, threads=threads, script=script, cpus=cpus))
        self.record(section, case, server.name, run, r)

    def run_workers(self, run):
        spec = self.specs.get("cserve")
        if spec is None:
            self._note_once("workers section skipped: hello_bench not built")
            return
        if not spec.get("workers"):
            self._note_once("workers section skipped: hello_bench --help does not list --workers (not implemented yet)")
            return
        for w in (1, 2):
            try:
                with Server(spec, self.tmp, cpus=ALL_CPUS, extra=["--workers", str(w)], tag=f"-w{w}") as server:
                    self.wrk_case("workers", f"{w} worker{'s' if w > 1 else ''}", server, run, 64,
                                  threads=2, cpus=ALL_CPUS)
            except ServerError as e:
                self.notes.append(f"run {run}, workers {w}: {e}")
                self.fail("workers", f"{w} worker{'s' if w > 1 else ''}", "cserve", run, e)

    def run_micro(self):
        if not os.access(self.micro, os.X_OK):
            self._note_once(f"micro-benchmark skipped: {self.micro} not built")
            return
        t = "0.1" if self.args.quick else "1"
        log(f"micro_hot_path --benchmark_min_time={t}")
        out = ""
        for flag in (f"--benchmark_min_time={t}", f"--benchmark_min_time={t}s"):
            try:
                p = subprocess.run(["taskset", "-c", SERVER_CPU, self.micro, flag],
                                   capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                out = "micro_hot_path timed out after 900 s"
                break
            out = p.stdout.strip() or p.stderr.strip()
            if p.returncode == 0:
                break
            out = f"exit {p.returncode}\n{p.stdout}\n{p.stderr}".strip()
        self.micro_output = out

    # --------------------------------------------------------------------------------------
    # Report

    def get(self, section, case, server, run):
        for e in self.results:
            if e["section"] == section and e["case"] == case and e["server"] == server and e["run"] == run:
                return e["result"]
        return None

    def rows(self, section):
        seen = []
        for e in self.results:
            if e["section"] == section and e["case"] != "*" and e["case"] not in seen:
                seen.append(e["case"])
        return seen

    def report(self):
        a = self.args
        out = []
        env = environment(self.build)
        out.append(f"# cserve benchmarks, {env['date']}\n")
        out.append(table(["", ""], [
            ["machine", env["machine"]],
            ["kernel", env["kernel"]],
            ["compiler", env["compiler"]],
            ["build", env["build"]],
            ["commit", env["commit"]],
            ["tools", env["tools"]],
            ["load average", f"{self.loadavg_start} before the run, {loadavg()} after (1, 5, 15 min; "
                             f"`other CPU %` in the tables is what else the machine did during each case)"],
            ["mode", f"{'quick' if a.quick else 'full'}: {a.duration} s per case after {a.warmup} s warm-up, "
                     f"{a.runs} run(s) of every case"],
            ["pinning", f"server on CPU {SERVER_CPU} (`taskset -c {SERVER_CPU}`), load generator on CPU {LOAD_CPU}; "
                        f"server CPU = utime+stime of its process tree from /proc (10 ms ticks)"],
        ], align="ll"))
        out.append("")
        out.append("Servers: " + "; ".join(f"**{s['name']}** = {s['desc']}" for s in self.servers) + ".\n")

        def wrk_section(section, title):
            cases = self.rows(section)
            if not cases:
                return
            out.append(f"## {title}\n")
            for case in cases:
                rows = []
                for spec in self._servers_with(section, case):
                    for run in range(1, a.runs + 1):
                        r = self.get(section, case, spec, run)
                        if r is None:
                            continue
                        rows.append([spec, run, fmt_num(r.get("rate")), fmt_us(r.get("p50_us")), fmt_us(r.get("p99_us")),
                                     fmt_num(per_unit_us(r, "requests"), 2), fmt_num(cpu_pct(r)),
                                     fmt_num(cpu_pct(r, "client_cpu_s")), fmt_num(cpu_pct(r, "other_cpu_s")),
                                     fmt_errors(r)])
                out.append(f"### {case}\n")
                out.append(table(["server", "run", "req/s", "p50", "p99", "server CPU-µs/req", "server CPU %",
                                  "client CPU %", "other CPU %", "errors"], rows))
                out.append("")

        wrk_section("http", "HTTP hello (`wrk -t1 --latency`, GET /)")
        wrk_section("pipeline", "HTTP pipelining, 16 requests per write (`wrk -t1 -c64 -s pipeline.lua`)")

        cases = self.rows("ws")
        if cases:
            out.append(f"## WebSocket echo (`ws_load`, {a.ws_conns} connections, each sends one "
                       f"{'text' if a.ws_text else 'binary'} message and waits for the echo)\n")
            for case in cases:
                rows = []
                for spec in self._servers_with("ws", case):
                    for run in range(1, a.runs + 1):
                        r = self.get("ws", case, spec, run)
                        if r is None:
                            continue
                        rows.append([spec, run, fmt_num(r.get("rate")), fmt_us(r.get("p50_us")), fmt_us(r.get("p99_us")),
                                     fmt_num(per_unit_us(r, "messages"), 2), fmt_num(cpu_pct(r)),
                                     fmt_num(cpu_pct(r, "client_cpu_s")), fmt_num(cpu_pct(r, "other_cpu_s")),
                                     fmt_errors(r)])
                out.append(f"### {case} messages\n")
                out.append(table(["server", "run", "msg/s", "p50", "p99", "server CPU-µs/msg", "server CPU %",
                                  "client CPU %", "other CPU %", "errors"], rows))
                out.append("")

        cases = self.rows("idle")
        if cases:
            out.append(f"## Idle keep-alive connections ({a.idle_conns} connections, each after one complete GET /)\n")
            rows = []
            for spec in self._servers_with("idle", cases[0]):
                for run in range(1, a.runs + 1):
                    r = self.get("idle", cases[0], spec, run)
                    if r is None:
                        continue
                    if r.get("failed"):
                        rows.append([spec, run, "–", "–", "–", "–", fmt_errors(r)])
                        continue
                    rows.append([spec, run, fmt_num(r.get("kib_per_conn"), 2), fmt_num(r["rss_before_kib"] / 1024, 1),
                                 fmt_num(r["rss_after_kib"] / 1024, 1), f"{r['alive']}/{a.idle_conns}",
                                 r.get("warning", "")])
            out.append(table(["server", "run", "RSS KiB/conn", "RSS before MiB", "RSS after MiB", "open", "notes"], rows,
                             align="lrrrrrl"))
            out.append("")

        cases = self.rows("transfer")
        if cases:
            out.append(f"## 50 MiB upload (`POST /upload`) and download (`GET /bytes/{TRANSFER_BYTES}`), curl\n")
            rows = []
            for case in cases:
                for spec in self._servers_with("transfer", case):
                    for run in range(1, a.runs + 1):
                        r = self.get("transfer", case, spec, run)
                        if r is None:
                            continue
                        gb = r.get("bytes", 0) / 1e9
                        cpu_gb = r["server_cpu_s"] * 1e3 / gb if gb and "server_cpu_s" in r else None
                        rows.append([case, spec, run, r.get("transfers", 0), fmt_num(r.get("mb_per_s")),
                                     fmt_num(cpu_gb), fmt_errors(r)])
            out.append(table(["direction", "server", "run", "transfers", "MB/s", "server CPU-ms/GB", "errors"], rows,
                             align="llrrrrr"))
            out.append("")

        wrk_section("workers", "cserve --workers 1 vs 2 (server and `wrk -t2 -c64` both unpinned: "
                               "the workers and wrk's threads share both cores)")

        targets = self.targets()
        if targets:
            out.append("## Targets (ratios within the same run)\n")
            out.append(table(["target", "run", "cserve", "reference", "ratio", "limit", "verdict"], targets,
                             align="lrrrrrl"))
            out.append("")

        if self.micro_output:
            out.append("## Micro-benchmark (`micro_hot_path`, CPU 0)\n")
            out.append("```text\n" + self.micro_output + "\n```\n")

        if self.notes:
            out.append("## Notes\n")
            out.extend(f"- {n}" for n in self.notes)
            out.append("")
        return "\n".join(out)

    def _servers_with(self, section, case):
        names = []
        for e in self.results:
            if e["section"] == section and e["case"] == case and e["server"] not in names:
                names.append(e["server"])
        return names

    def targets(self):
        a = self.args
        rows = []
        me = "cserve" if "cserve" in self.specs else ("cserve-httpbin" if "cserve-httpbin" in self.specs else None)
        if me is None:
            return rows
        label = "" if me == "cserve" else f" ({me})"

        def verdict(ratio, limit, at_most):
            if ratio is None:
                return "–"
            miss = 100 * (ratio / limit - 1) if at_most else 100 * (1 - ratio / limit)
            if miss <= 0:
                return "pass"
            return f"**miss by {miss:.1f}%**" if miss < 10 else f"**miss by {miss:.0f}%**"

        def add(name, mine, ref, limit, at_most, unit_fmt, run):
            ratio = mine / ref if mine is not None and ref else None
            rows.append([name + label, run, unit_fmt(mine), unit_fmt(ref),
                         f"{ratio:.2f}" if ratio is not None else "–",
                         ("≤ " if at_most else "≥ ") + f"{limit:g}", verdict(ratio, limit, at_most)])

        def metric(section, case, server, run, fn):
            r = self.get(section, case, server, run)
            if r is None or r.get("failed"):
                return None
            return fn(r)

        cpu_req = lambda r: per_unit_us(r, "requests")
        cpu_msg = lambda r: per_unit_us(r, "messages")
        us2 = lambda v: f"{v:.2f} µs" if v is not None else "–"
        rate = lambda v: f"{v:,.0f}/s" if v is not None else "–"
        for run in range(1, a.runs + 1):
            c64 = "64 connections"
            for ref, limit in (("nginx", 1.0), ("beast", 0.7)):
                if self.get("http", c64, ref, run) is not None:
                    add(f"hello @64: CPU-µs/req ≤ {limit:g}× {ref}", metric("http", c64, me, run, cpu_req),
                        metric("http", c64, ref, run, cpu_req), limit, True, us2, run)
            for ref in ("nginx", "beast"):
                if self.get("http", c64, ref, run) is not None:
                    add(f"hello @64: req/s ≥ {ref}", metric("http", c64, me, run, lambda r: r.get("rate")),
                        metric("http", c64, ref, run, lambda r: r.get("rate")), 1.0, False, rate, run)
            ws_me = me if self.specs[me].get("ws_path") else None
            for size in ("64 B", "4096 B"):
                if ws_me and self.get("ws", size, "beast", run) is not None:
                    add(f"WebSocket echo {size}: CPU-µs/msg ≤ 0.8× beast", metric("ws", size, ws_me, run, cpu_msg),
                        metric("ws", size, "beast", run, cpu_msg), 0.8, True, us2, run)
            idle = metric("idle", f"{a.idle_conns} connections", me, run, lambda r: r.get("kib_per_conn"))
            if self.get("idle", f"{a.idle_conns} connections", me, run) is not None:
                rows.append([f"idle keep-alive connection ≤ 1 KiB RSS{label}", run,
                             f"{idle:.2f} KiB" if idle is not None else "–", "1 KiB",
                             f"{idle:.2f}" if idle is not None else "–", "≤ 1", verdict(idle, 1.0, True)])
            c256 = "256 connections"
            if self.get("http", c256, "nginx", run) is not None:
                add("hello @256: p99 ≤ nginx's", metric("http", c256, me, run, lambda r: r.get("p99_us")),
                    metric("http", c256, "nginx", run, lambda r: r.get("p99_us")), 1.0, True, fmt_us, run)
        return rows


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _cmd(argv, stderr=False):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (p.stderr if stderr else p.stdout).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(build):
    model = ""
    for line in _cmd(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    cache = {}
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"^([A-Za-z_]+):\w+=(.*)$", line.strip())
                if m:
                    cache[m.group(1)] = m.group(2)
    except OSError:
        pass
    cxx = cache.get("CMAKE_CXX_COMPILER", "clang++")
    compiler = (_cmd([cxx, "--version"]).splitlines() or ["?"])[0]
    bt = cache.get("CMAKE_BUILD_TYPE", "?")
    flags = " ".join(x for x in (cache.get("CMAKE_CXX_FLAGS", ""), cache.get(f"CMAKE_CXX_FLAGS_{bt.upper()}", "")) if x)
    boost = re.search(r"Boost-([\d.]+)", cache.get("Boost_DIR", ""))
    build_desc = f"CMAKE_BUILD_TYPE={bt}, CXXFLAGS `{flags}`" + (f", Boost {boost.group(1)}" if boost else "")
    head = _cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "?"
    status = _cmd(["git", "-C", ROOT, "status", "--porcelain"])
    commit = head + (f" (dirty: {len(status.splitlines())} changed/untracked paths)" if status else " (clean)")
    wrk = (_cmd(["wrk", "-v"], stderr=False) or _cmd(["wrk", "-v"], stderr=True)).splitlines()
    wrk = wrk[0].split(" Copyright")[0] if wrk else "wrk ?"
    nginx = _cmd(["nginx", "-v"], stderr=True).replace("nginx version: ", "")
    uv = _cmd(["/usr/bin/python3", "-c",
               "import uvicorn,uvloop,httptools,sys;v=lambda m:getattr(m,'__version__','?');"
               "print(f'uvicorn {v(uvicorn)}, uvloop {v(uvloop)}, httptools {v(httptools)}, python {sys.version.split()[0]}')"])
    tools = ", ".join(x for x in (wrk, nginx, uv) if x)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{model or platform.processor() or '?'}, {os.cpu_count()} CPUs, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "compiler": compiler,
        "build": build_desc,
        "commit": commit,
        "tools": tools,
    }


def raise_nofile(want=30000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"), help="cserve's Release build (default build-bench)")
    p.add_argument("--quick", action="store_true", help="2 s per case, one run: checks the harness")
    p.add_argument("--only", help=f"comma-separated servers ({', '.join(SERVER_NAMES)}) and/or sections ({', '.join(SECTIONS)})")
    p.add_argument("--duration", type=int, help="seconds of load per measured case (default 10, quick 2)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured load before each case (default 2, quick 1)")
    p.add_argument("--runs", type=int, help="how many times every case runs (default 2, quick 1)")
    p.add_argument("--idle-conns", type=int, default=5000, help="idle keep-alive connections to open (default 5000)")
    p.add_argument("--ws-conns", type=int, default=64, help="WebSocket connections (default 64)")
    p.add_argument("--ws-text", action="store_true", help="text WebSocket messages instead of binary")
    p.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"), help="where the markdown goes too")
    a = p.parse_args()
    a.duration = a.duration or (2 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.runs = a.runs or (1 if a.quick else 2)

    for tool in ("wrk", "taskset", "curl"):
        if not shutil.which(tool):
            sys.exit(f"run.py: {tool} is not installed (benchmarks/run.sh installs it)")
    if len(os.sched_getaffinity(0)) < 2:
        log("warning: fewer than 2 CPUs available; server and load generator share a CPU")
    nofile = raise_nofile()
    if nofile < a.idle_conns + 100:
        log(f"warning: RLIMIT_NOFILE is {nofile}; the idle test opens {a.idle_conns} connections")
    # This process is a load generator too (the idle connections): keep it off the server's CPU.
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    except OSError:
        pass

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    bench = Bench(a)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: the tables are incomplete")
    if float(bench.loadavg_start.split()[0] if bench.loadavg_start != "?" else 0) > 0.5:
        bench.notes.append(f"the machine was not idle when the run started (load average {bench.loadavg_start}): "
                           "expect noise, see `other CPU %`")
    text = bench.report()
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text + "\n")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"args": vars(a), "results": bench.results, "notes": bench.notes,
                   "micro": bench.micro_output}, f, indent=1)
    log(f"written to {a.out}")


if __name__ == "__main__":
    main()
