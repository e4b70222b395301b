#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Faults, driven through the example `httpbin`: what the server does when its clients, its
application or its disk misbehave.

Run as:

    /usr/bin/python3 tests/integration/faults_test.py --httpbin PATH --hello PATH [args]

(--hello is accepted for the shared command line and not used.)

- 10,000 concurrent connections (the test raises its own and the server's fd limits), every
  one answered, and the server serving new ones afterwards;
- resets at every stage of a request (mid-header, mid-body, mid-response) and half-closed
  sockets (the client shuts down its side after the request: the response still arrives);
- an application that throws on every request for a while (2,000 requests): each is a 500,
  and the server's memory does not grow with them;
- `--log-file /dev/full` (every log write fails with ENOSPC, as on a full disk): serving goes
  on, and an unwritable log file at start is a one-line error;
- a worker SIGKILLed under load (`--workers 2`): only requests in flight on it fail, the other
  worker goes on, and the replacement serves.

Every socket talks to 127.0.0.1 only, and every operation is bounded by a timeout.
"""

import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, RUN_TIMEOUT, CheckedServer, children, env_with, httpbin_main, wait_until)

HTTPBIN = None
WATCHDOG = 150



def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sanitized(binary):
    """Whether `binary` was built with AddressSanitizer."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


class Httpbin(CheckedServer):
    def __init__(self, *args, **kw):
        super().__init__(HTTPBIN, *args, env=env_with(), no_core=True, **kw)



class FaultTestCase(unittest.TestCase):

    def start(self, *args, **kw):
        srv = Httpbin(*args, **kw)
        self.addCleanup(self.check_and_kill, srv)
        return srv

    def check_and_kill(self, srv):
        try:
            report = srv.sanitizer_report()
            self.assertIsNone(report, report)
        finally:
            srv.kill()

    def get(self, port, path="/bytes/10"):
        return httpx.get("http://%s:%d%s" % (HOST, port, path), timeout=IO_TIMEOUT)


class ConnectionFaultTests(FaultTestCase):

    def test_10000_concurrent_connections(self):
        n = 10000
        need = n + 1000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            except (ValueError, OSError):
                self.skipTest("cannot raise the fd limit to %d (hard limit %d)" % (need, hard))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        srv = self.start("--backlog", "4096", nofile=need + 100)
        sel = selectors.DefaultSelector()
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        request = b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
        expected = b"abcdefghij"
        # Connect all of them (in waves, within the listen backlog), then send one request on
        # each while all stay open.
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((HOST, srv.port))
            socks.append(s)
            if i % 2000 == 1999:
                time.sleep(0.2)
        deadline = time.monotonic() + 60
        pending = {}
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
            pending[s] = b""
        sent = 0
        answered = 0
        while answered < n and time.monotonic() < deadline:
            for key, events in sel.select(timeout=1):
                s = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        s.send(request)
                    except (BlockingIOError, InterruptedError):
                        continue
                    sent += 1
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(s)
                    self.fail("connection %d closed unanswered (%d answered)" % (socks.index(s), answered))
                pending[s] += data
                if pending[s].endswith(expected):
                    self.assertTrue(pending[s].startswith(b"HTTP/1.1 200 "), pending[s][:100])
                    answered += 1
                    sel.unregister(s)
        self.assertEqual(answered, n, "%d of %d answered (%d sent) within 60 s" % (answered, n, sent))
        # All of them are still open on both sides; a new connection is served too.
        self.assertEqual(self.get(srv.port).content, expected)
        for s in socks:
            s.close()
        socks.clear()
        self.assertEqual(self.get(srv.port).content, expected)
        self.assertEqual(srv.stop(), 0, srv.log_text(last=20))

    def test_resets_at_every_stage_and_half_closed_sockets(self):
        srv = self.start()

        def reset(data, read_first=0):
            s = socket.create_connection((HOST, srv.port), timeout=IO_TIMEOUT)
            s.sendall(data)
            if read_first:
                s.recv(read_first)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST

        for _ in range(20):
            reset(b"GET /bytes/10 HT")                                          # mid-header
            reset(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
            reset(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
            reset(b"GET /bytes/10000000 HTTP/1.1\r\nHost: x\r\n\r\n", read_first=1000)  # mid-response
            reset(b"GET /stream/100000 HTTP/1.1\r\nHost: x\r\n\r\n", read_first=100)
            reset(b"GET /delay/50 HTTP/1.1\r\nHost: x\r\n\r\n")                  # app running
        # Half-closed: the client shuts down its sending side after the request; the response
        # still comes, then the server closes.
        for path, body in (("/bytes/100000", 100000), ("/delay/100", 4)):
            s = socket.create_connection((HOST, srv.port), timeout=IO_TIMEOUT)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:100])
            self.assertEqual(len(data.partition(b"\r\n\r\n")[2]), body)
        self.assertEqual(self.get(srv.port).content, b"abcdefghij")
        self.assertEqual(srv.stop(), 0, srv.log_text(last=20))


class ApplicationFaultTests(FaultTestCase):

    def test_an_application_that_throws_for_a_while(self):
        srv = self.start()
        with httpx.Client(timeout=IO_TIMEOUT) as client:
            def burst(count):
                for i in range(count):
                    path = ("/error/before", "/error/started", "/error/none")[i % 3]
                    self.assertEqual(client.get("http://%s:%d%s" % (HOST, srv.port, path)).status_code, 500)
            burst(500)  # warm-up: allocators and caches settle
            before = rss_kib(srv.proc.pid)
            burst(1500)
            after = rss_kib(srv.proc.pid)
            self.assertEqual(client.get("http://%s:%d/bytes/10" % (HOST, srv.port)).content, b"abcdefghij")
        # ASan holds freed memory in its quarantine: the bound is for the real allocator.
        if not sanitized(HTTPBIN):
            self.assertLess(after - before, 2048, "RSS grew from %d to %d KiB over 1,500 failing "
                            "requests" % (before, after))
        self.assertTrue(wait_until(lambda: srv.log_text().count("Exception in ASGI application") >= 1300,
                                   IO_TIMEOUT))
        self.assertEqual(srv.stop(), 0, srv.log_text(last=20))


class LogFileFaultTests(FaultTestCase):

    def test_log_file_on_a_full_disk(self):
        # stderr goes to /dev/full: the "running on" line is lost with the rest, so the port is
        # chosen here and polled.
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([HTTPBIN, "--port", str(port), "--log-file", "/dev/full"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            self.assertTrue(wait_until(lambda: self.connects(port), IO_TIMEOUT * 2),
                            "httpbin --log-file /dev/full did not start")
            for _ in range(50):
                self.assertEqual(self.get(port).content, b"abcdefghij")
                self.assertEqual(self.get(port, "/error/before").status_code, 500)  # logs a traceback
            os.kill(proc.pid, signal.SIGUSR1)  # reopen: still /dev/full
            self.assertEqual(self.get(port).content, b"abcdefghij")
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(RUN_TIMEOUT), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()

    def test_unwritable_log_file_at_start_is_a_one_line_error(self):
        r = subprocess.run([HTTPBIN, "--port", "0", "--log-file", "/proc/self/nonexistent/x.log"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
        err = r.stderr.decode()
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("cannot open log file", err)
        self.assertNotIn("running on", err)

    @staticmethod
    def connects(port):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            return False


class WorkerFaultTests(FaultTestCase):

    def test_a_worker_sigkilled_under_load(self):
        srv = self.start("--workers", "2")
        self.assertTrue(wait_until(lambda: len(children(srv.proc.pid)) == 2, IO_TIMEOUT * 2))
        results = []  # (time, pid or None, error)
        stop = threading.Event()

        def client():
            with httpx.Client(timeout=IO_TIMEOUT) as c:
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        r = c.get("http://%s:%d/pid" % (HOST, srv.port), headers={"connection": "close"})
                        results.append((t, int(r.text), None))
                    except httpx.HTTPError as e:
                        results.append((t, None, repr(e)))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            victim, survivor = sorted(children(srv.proc.pid))
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(wait_until(lambda: victim not in children(srv.proc.pid)
                                       and len(children(srv.proc.pid)) == 2, IO_TIMEOUT * 2))
            replacement = (set(children(srv.proc.pid)) - {survivor}).pop()
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(IO_TIMEOUT * 2)
        failures = [r for r in results if r[2] is not None]
        # Only what was in flight on the victim when it died: at most one request per client.
        self.assertLessEqual(len(failures), len(threads), failures)
        for t, _, err in failures:
            self.assertGreaterEqual(t, t_kill - IO_TIMEOUT, err)
        served = [pid for _, pid, _ in results if pid]
        self.assertIn(survivor, served)
        self.assertIn(replacement, served, "the replacement served nothing")
        self.assertGreater(len(served), 100)
        self.assertEqual(srv.stop(), 0, srv.log_text(last=20))


def main():
    httpbin_main(__file__, WATCHDOG, lambda path: globals().update(HTTPBIN=path))


if __name__ == "__main__":
    main()
