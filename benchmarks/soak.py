#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""A soak: httpbin --workers 2 under mixed load for a set time, with a SIGHUP rolling restart
every 30 s, sampling every process's memory and descriptors each second.

    /usr/bin/python3 benchmarks/soak.py --httpbin build/examples/httpbin [--seconds 300]
        [--hup-every 30] [--workers 2] [--out benchmarks/results/soak.json]

The load, all on 127.0.0.1, each kind in threads of its own and every answer checked:
- keep-alive: GET /bytes/N on one connection, the bytes compared;
- pipelined: ten requests written at once on a raw socket, ten responses read and compared;
- uploads: POST /echo of 16 KiB to 1 MiB of random bytes, the echo compared;
- streamed downloads: GET /stream/N (chunked), every chunk compared;
- WebSockets: /ws/echo, 20 text and binary messages each, every echo compared;
- resets (aborted on purpose, not failures): a request head cut off and the connection reset;
  a 1 MiB download reset after its first 4 KiB;
Restarts end some exchanges by design, counted apart and not as failures: a WebSocket
closed with 1012 (Service Restart) is connected again, and pipelined requests left
unanswered after a response with `connection: close` are sent again (RFC 9112 §9.3.2).
- slow readers: GET /bytes/2097152 read 64 KiB every 20 ms, compared.

Pass: the master never dies, every worker that exits does so for the restarts (status 0),
no request fails that was not aborted on purpose, and after the warm-up (the first 20 s of a
process's life) no process grows: the master's RSS by at most MASTER_RSS_KIB, a worker's by
at most WORKER_RSS_KIB over its life, and once the load stops every process is back to the
descriptors it had idle. Prints the figures; exits 1 on a failure, 0 otherwise.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import websockets
import websockets.exceptions

HOST = "127.0.0.1"
TIMEOUT = 15.0
WARMUP = 20.0
MASTER_RSS_KIB = 2048
WORKER_RSS_KIB = 16384
RUNNING_RE = re.compile(r"cserve running on http://127\.0\.0\.1:(\d+)")


def expected_bytes(n):
    pattern = bytes(ord("a") + i % 26 for i in range(26))
    return (pattern * (n // 26 + 1))[:n]


def proc_info(pid):
    """(RSS KiB, open descriptors) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        return rss, len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, StopIteration):
        return None


def children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(ppid) and fields[0] != "Z":
            out.append(int(name))
    return sorted(out)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.aborted = {}
        self.failures = []

    def good(self, kind, n=1):
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + n

    def abort(self, kind):
        with self.lock:
            self.aborted[kind] = self.aborted.get(kind, 0) + 1

    def fail(self, kind, what):
        with self.lock:
            self.failures.append("%s: %s" % (kind, what))


class Soak:
    def __init__(self, args):
        self.args = args
        self.tally = Tally()
        self.stop = threading.Event()
        self.samples = {}  # pid -> [(t, rss, fds)]
        self.role = {}     # pid -> "master" | "worker"
        self.started = {}  # pid -> first time seen
        self.hups = 0
        self.proc = subprocess.Popen(
            [args.httpbin, "--port", "0", "--workers", str(args.workers), "--no-access-log",
             "--timeout-keep-alive", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line.rstrip("\n"))
            m = RUNNING_RE.search(line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            self.proc.kill()
            raise SystemExit("soak.py: httpbin did not start:\n" + "\n".join(self.log))
        self.port = port
        self.url = "http://%s:%d" % (HOST, port)
        threading.Thread(target=self.read_log, daemon=True).start()
        wait = time.monotonic() + 15
        while len(children(self.proc.pid)) < args.workers and time.monotonic() < wait:
            time.sleep(0.05)
        time.sleep(0.5)

    def read_log(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    # ---- load

    def keep_alive(self):
        with httpx.Client(timeout=TIMEOUT) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                size = 1 + (n * 7919) % 65536
                try:
                    r = c.get(self.url + "/bytes/%d" % size)
                    if r.status_code == 200 and r.content == expected_bytes(size):
                        self.tally.good("keep-alive")
                    else:
                        self.tally.fail("keep-alive", "%d, %d bytes" % (r.status_code, len(r.content)))
                except httpx.HTTPError as e:
                    self.tally.fail("keep-alive", repr(e))

    def pipelined(self):
        sizes = []
        while not self.stop.is_set():
            # What a response with "connection: close" left unanswered goes again first, as
            # RFC 9112 §9.3.2 has a client do (a worker that drains answers that way).
            sizes = sizes or [100 + i * 37 for i in range(10)]
            try:
                with socket.create_connection((HOST, self.port), timeout=TIMEOUT) as s:
                    s.sendall(b"".join(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in sizes))
                    buf = b""
                    answered = 0
                    for n in sizes:
                        while b"\r\n\r\n" not in buf:
                            chunk = s.recv(65536)
                            if not chunk:
                                raise ConnectionError("closed before a response head")
                            buf += chunk
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                        while len(buf) < length:
                            chunk = s.recv(65536)
                            if not chunk:
                                raise ConnectionError("closed in a body")
                            buf += chunk
                        body, buf = buf[:length], buf[length:]
                        if not head.startswith(b"HTTP/1.1 200 ") or body != expected_bytes(n):
                            raise ValueError("response for %d bytes: %r" % (n, head[:40]))
                        answered += 1
                        if re.search(rb"\r\nconnection: close\r\n", head + b"\r\n", re.I):
                            break
                    self.tally.good("pipelined", answered)
                    if answered < len(sizes):
                        self.tally.abort("pipelined: unanswered after connection: close, sent again")
                    sizes = sizes[answered:]
            except (OSError, ValueError, AttributeError) as e:
                self.tally.fail("pipelined", repr(e))
                sizes = []

    def uploads(self):
        with httpx.Client(timeout=TIMEOUT) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                body = os.urandom(16384 + (n * 104729) % (1024 * 1024 - 16384))
                try:
                    r = c.post(self.url + "/echo", content=body)
                    if r.status_code == 200 and r.content == body:
                        self.tally.good("upload")
                    else:
                        self.tally.fail("upload", "%d, %d of %d bytes" % (r.status_code, len(r.content), len(body)))
                except httpx.HTTPError as e:
                    self.tally.fail("upload", repr(e))

    def streams(self):
        with httpx.Client(timeout=TIMEOUT) as c:
            n = 0
            while not self.stop.is_set():
                n = n % 500 + 1
                want = b"".join(b"chunk %d\n" % i for i in range(n))
                try:
                    with c.stream("GET", self.url + "/stream/%d" % n) as r:
                        got = b"".join(r.iter_bytes())
                    if r.status_code == 200 and got == want:
                        self.tally.good("stream")
                    else:
                        self.tally.fail("stream", "%d, %d of %d bytes" % (r.status_code, len(got), len(want)))
                except httpx.HTTPError as e:
                    self.tally.fail("stream", repr(e))

    def websockets_(self):
        # A worker that drains closes its WebSockets with 1012 (Service Restart): the client
        # connects again. Counted apart; any other ending is a failure.
        async def one():
            async with websockets.connect("ws://%s:%d/ws/echo" % (HOST, self.port), open_timeout=TIMEOUT,
                                          close_timeout=TIMEOUT, ping_interval=None, max_size=None) as ws:
                for i in range(20):
                    msg = ("text %d " % i) * (i + 1) if i % 2 else os.urandom(i * 100 + 1)
                    await ws.send(msg)
                    echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
                    if echo != msg:
                        raise ValueError("echo %d differs" % i)

        while not self.stop.is_set():
            try:
                asyncio.run(one())
                self.tally.good("websocket")
            except websockets.exceptions.ConnectionClosed as e:
                if e.rcvd is not None and e.rcvd.code == 1012:
                    self.tally.abort("websocket: closed 1012 by a restart, connected again")
                else:
                    self.tally.fail("websocket", repr(e))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                self.tally.fail("websocket", repr(e))

    def resets(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                s = socket.create_connection((HOST, self.port), timeout=TIMEOUT)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                if n % 2:
                    s.sendall(b"GET /bytes/100 HTTP/1.1\r\nHost: x\r\nX-Half: ")  # mid-request
                    time.sleep(0.01)
                else:
                    s.sendall(b"GET /bytes/1048576 HTTP/1.1\r\nHost: x\r\n\r\n")  # mid-response
                    got = 0
                    while got < 4096:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += len(chunk)
                s.close()  # SO_LINGER 0: a reset
                self.tally.abort("reset")
            except OSError as e:
                self.tally.fail("reset", repr(e))
            time.sleep(0.02)

    def slow_reader(self):
        size = 2 * 1024 * 1024
        want = expected_bytes(size)
        while not self.stop.is_set():
            try:
                with socket.create_connection((HOST, self.port), timeout=TIMEOUT) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size)
                    buf = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                        time.sleep(0.02)
                    body = buf.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in buf else b""
                    if buf.startswith(b"HTTP/1.1 200 ") and body == want:
                        self.tally.good("slow-reader")
                    else:
                        self.tally.fail("slow-reader", "%d of %d bytes" % (len(body), size))
            except OSError as e:
                self.tally.fail("slow-reader", repr(e))

    # ---- the restarts and the sampler

    def hup(self):
        while not self.stop.wait(self.args.hup_every):
            self.proc.send_signal(signal.SIGHUP)
            self.hups += 1

    def sample(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic() - t0
            pids = [(self.proc.pid, "master")] + [(p, "worker") for p in children(self.proc.pid)]
            for pid, role in pids:
                info = proc_info(pid)
                if info is None:
                    continue
                self.role.setdefault(pid, role)
                self.started.setdefault(pid, now)
                self.samples.setdefault(pid, []).append((now, info[0], info[1]))
            if self.proc.poll() is not None:
                self.tally.fail("master", "exited with %s" % self.proc.returncode)
                return
            time.sleep(1)

    # ---- the run

    def run(self):
        idle_before = {p: proc_info(p) for p in [self.proc.pid] + children(self.proc.pid)}
        kinds = [(self.keep_alive, 2), (self.pipelined, 1), (self.uploads, 1), (self.streams, 1),
                 (self.websockets_, 1), (self.resets, 1), (self.slow_reader, 1)]
        threads = [threading.Thread(target=self.sample, daemon=True), threading.Thread(target=self.hup, daemon=True)]
        for fn, count in kinds:
            threads += [threading.Thread(target=fn, daemon=True) for _ in range(count)]
        start = time.monotonic()
        for t in threads:
            t.start()
        self.stop.wait(self.args.seconds)
        self.stop.set()
        for t in threads:
            t.join(TIMEOUT * 2)
        elapsed = time.monotonic() - start
        time.sleep(2)  # the load's connections close
        idle_after = {p: proc_info(p) for p in [self.proc.pid] + children(self.proc.pid)}
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "did not exit within 30 s of SIGTERM"
        return self.report(elapsed, idle_before, idle_after, rc)

    def report(self, elapsed, idle_before, idle_after, rc):
        problems = list(self.tally.failures)
        if rc != 0:
            problems.append("master: exit status %s after SIGTERM" % rc)
        bad_exits = [line for line in self.log if re.search(r"Worker \[\d+\] (was killed|exited with status [1-9])", line)
                     or "WORKER TIMEOUT" in line]
        problems += ["log: " + line for line in bad_exits]
        growth = {}
        for pid, rows in self.samples.items():
            after = [r for r in rows if r[0] - self.started[pid] >= WARMUP]
            if len(after) < 2:
                continue
            base = after[0][1]
            peak = max(r[1] for r in after)
            growth[pid] = (self.role[pid], base, peak, rows[-1][1], after[-1][0] - after[0][0])
            bound = MASTER_RSS_KIB if self.role[pid] == "master" else WORKER_RSS_KIB
            if peak - base > bound:
                problems.append("%s %d: RSS grew from %d to %d KiB after its warm-up (bound %d KiB)"
                                % (self.role[pid], pid, base, peak, bound))
        master = self.proc.pid
        if idle_before.get(master) and idle_after.get(master) and idle_after[master][1] != idle_before[master][1]:
            problems.append("master: %d descriptors idle at the start, %d at the end"
                            % (idle_before[master][1], idle_after[master][1]))
        worker_fds_before = sorted({v[1] for p, v in idle_before.items() if p != master and v})
        worker_fds_after = sorted({v[1] for p, v in idle_after.items() if p != master and v})
        if worker_fds_after != worker_fds_before:
            problems.append("workers: %s descriptors idle at the start, %s at the end"
                            % (worker_fds_before, worker_fds_after))
        workers_seen = sum(1 for r in self.role.values() if r == "worker")
        figures = {
            "seconds": round(elapsed, 1),
            "workers": self.args.workers,
            "sighup": self.hups,
            "worker_processes_seen": workers_seen,
            "checked": self.tally.ok,
            "checked_total": sum(self.tally.ok.values()),
            "aborted_on_purpose": self.tally.aborted,
            "failures": len(self.tally.failures),
            "idle_descriptors": {"start": {str(k): v[1] for k, v in idle_before.items() if v},
                                 "end": {str(k): v[1] for k, v in idle_after.items() if v}},
            "rss_kib_after_warmup": {str(pid): {"role": g[0], "first": g[1], "peak": g[2], "last": g[3],
                                                "seconds": round(g[4])} for pid, g in growth.items()},
            "problems": problems[:50],
        }
        return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--httpbin", required=True)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--hup-every", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="write the figures here as JSON")
    args = ap.parse_args()
    figures = Soak(args).run()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if figures["problems"]:
        print("soak: FAILED (%d problems)" % len(figures["problems"]), file=sys.stderr)
        sys.exit(1)
    print("soak: passed: %.0f s, %d checked requests and messages, %d SIGHUP, nothing failed"
          % (figures["seconds"], figures["checked_total"], figures["sighup"]), file=sys.stderr)


if __name__ == "__main__":
    main()
