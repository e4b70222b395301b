#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box tests of --metrics-port: GET /metrics (the Prometheus text format) and
GET /healthz, driven through the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/metrics_test.py --httpbin PATH --hello PATH [args]

(--hello is accepted for the shared command line and not used.)

A single process: requests by method and status class, body bytes, WebSocket connections
and messages, the output accepted by `promtool check metrics`, /healthz 200 while serving
and 503 while a request drains after SIGTERM; TLS handshakes (completed and failed), HTTP/2
connections and streams. With --workers 2 (the master serves the
listener): every worker's requests in the totals, totals that never go backwards across a
SIGHUP rolling restart, a SIGKILLed worker and --limit-max-requests (each counted by cause),
/healthz 503 while draining. The master's listener refuses a malformed request (400), other
methods (405) and paths (404), keeps a connection alive, and a port that is taken stops the
start. Last, a real Prometheus server scrapes a --workers 2 httpbin and answers a query with
the number of requests made.

Every socket talks to 127.0.0.1 only, and every operation is bounded by a timeout.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

import asyncio

import httpx
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, CheckedServer, Process, children, httpbin_main, wait_until)

HTTPBIN = None
WATCHDOG = 150
METRICS_RE = re.compile(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics and /healthz")


def parse_metrics(text):
    """{'name{labels}': value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def requests_total(samples):
    return sum(v for k, v in samples.items() if k.startswith("http_server_requests_total{"))


class MetricsServer(CheckedServer):
    """httpbin with --metrics-port 0; metrics_port is the port it logged."""

    def __init__(self, *args, **kw):
        super().__init__(HTTPBIN, "--metrics-port", "0", *args, **kw)
        line = self.wait_for_line(METRICS_RE.search, 10)
        assert line, "no 'Metrics on' line:\n" + self.log_text()
        self.metrics_port = int(METRICS_RE.search(line).group(1))

    def get(self, path):
        return httpx.get("http://%s:%d%s" % (HOST, self.metrics_port, path), timeout=IO_TIMEOUT)

    def samples(self):
        r = self.get("/metrics")
        assert r.status_code == 200, r
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse_metrics(r.text)


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


def drain_with_healthz_503(test, srv):
    """SIGTERM while a request runs: /healthz answers 503 "draining" until the process is
    gone, the request completes, the exit status is 0."""
    done = {}
    t = threading.Thread(target=lambda: done.update(r=httpx.get(srv.url("/delay/1500"), timeout=IO_TIMEOUT)))
    t.start()
    test.assertTrue(wait_until(lambda: srv.samples()["http_server_active_requests"] == 1, 5))
    srv.send_signal(signal.SIGTERM)
    test.assertTrue(wait_until(lambda: srv.get("/healthz").status_code == 503, 2))
    test.assertEqual(srv.get("/healthz").text, "draining\n")
    t.join(IO_TIMEOUT)
    test.assertEqual(done["r"].status_code, 200)
    test.assertEqual(srv.wait(5), 0)


def fresh_requests(srv, path, n):
    """n requests, each on a connection of its own (so that workers share them)."""
    for _ in range(n):
        with httpx.Client(timeout=IO_TIMEOUT) as c:
            assert c.get(srv.url(path)).status_code in (200, 404, 503)


class SingleProcess(unittest.TestCase):
    def test_counts_promtool_and_healthz(self):
        srv = MetricsServer()
        try:
            with httpx.Client(timeout=IO_TIMEOUT) as c:
                for _ in range(5):
                    self.assertEqual(c.get(srv.url("/")).status_code, 200)
                self.assertEqual(c.post(srv.url("/echo"), content=b"x" * 1000).status_code, 200)
                self.assertEqual(c.get(srv.url("/status/503")).status_code, 503)
                self.assertEqual(c.request("BREW", srv.url("/")).status_code, 404)
            async def echoed():
                out = []
                async with websockets.connect(srv.ws_url("/ws/echo"), open_timeout=IO_TIMEOUT) as ws:
                    for i in range(3):
                        await ws.send("m%d" % i)
                        out.append(await ws.recv())
                return out
            self.assertEqual(asyncio.run(asyncio.wait_for(echoed(), 10)), ["m0", "m1", "m2"])
            # HTTP/2 (prior knowledge): one connection, two streams, counted as requests too.
            # (nghttp: curl 7.88 fails its second request on a reused prior-knowledge connection,
            # against nginx too.)
            out = subprocess.run(["nghttp", "-n", srv.url("/"), srv.url("/?again")], capture_output=True, timeout=10)
            self.assertEqual(out.returncode, 0, out.stderr)
            # An h2c upgrade: one request, counted once (as stream 1, not also over HTTP/1.1).
            out = subprocess.run(["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                                  srv.url("/")], capture_output=True, timeout=10)
            self.assertEqual((out.returncode, out.stdout), (0, b"2"), out.stderr)
            wait_until(lambda: srv.samples().get("cserve_websocket_active_connections") == 0, 5)
            s = srv.samples()
            self.assertEqual(s["cserve_http2_connections_total"], 2)
            self.assertEqual(s["cserve_http2_streams_total"], 3)
            self.assertEqual(s['http_server_requests_total{method="GET",status="2xx"}'], 5 + 2 + 1)
            self.assertEqual(s['http_server_requests_total{method="POST",status="2xx"}'], 1)
            self.assertEqual(s['http_server_requests_total{method="GET",status="5xx"}'], 1)
            self.assertEqual(s['http_server_requests_total{method="_OTHER",status="4xx"}'], 1)
            self.assertEqual(requests_total(s), 11) # the WebSocket handshake is not a request
            self.assertEqual(s["http_server_request_duration_seconds_count"], 11)
            self.assertEqual(s['http_server_request_duration_seconds_bucket{le="+Inf"}'], 11)
            self.assertEqual(s["http_server_request_body_bytes_total"], 1000)
            self.assertGreaterEqual(s["http_server_response_body_bytes_total"], 1000)
            self.assertEqual(s["http_server_active_requests"], 0)
            self.assertEqual(s["cserve_websocket_connections_total"], 1)
            self.assertEqual(s['cserve_websocket_messages_total{direction="received"}'], 3)
            self.assertEqual(s['cserve_websocket_messages_total{direction="sent"}'], 3)
            self.assertNotIn("cserve_workers", s) # no supervisor

            text = srv.get("/metrics").text
            rc, out = promtool_check(text)
            self.assertEqual(rc, 0, out)
            self.assertEqual(out.strip(), "", "promtool's lint: " + out)

            r = srv.get("/healthz")
            self.assertEqual((r.status_code, r.text), (200, "ok\n"))

            drain_with_healthz_503(self, srv)
        finally:
            srv.kill()
        self.assertIsNone(srv.sanitizer_report())

    def test_port_taken(self):
        with socket.socket() as taken:
            taken.bind((HOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            for workers in ("1", "2"):
                p = Process([HTTPBIN, "--port", "0", "--workers", workers, "--metrics-port", str(port)])
                self.assertEqual(p.wait(10), 1, p.log_text())
                self.assertIn("cannot serve metrics", p.log_text())


class Tls(unittest.TestCase):
    def test_handshakes_counted(self):
        tmp = tempfile.mkdtemp(prefix="cserve-metrics-tls-")
        try:
            key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30)
            srv = MetricsServer("--ssl-certfile", cert, "--ssl-keyfile", key)
            try:
                for _ in range(2):
                    with httpx.Client(verify=cert, timeout=IO_TIMEOUT) as c:
                        self.assertEqual(c.get(srv.url("/")).status_code, 200)
                with socket.create_connection((HOST, srv.port), timeout=IO_TIMEOUT) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") # plain HTTP to the TLS port
                    s.recv(100)
                self.assertTrue(wait_until(
                    lambda: srv.samples()['cserve_tls_handshakes_total{result="error"}'] == 1, 5))
                s = srv.samples()
                self.assertEqual(s['cserve_tls_handshakes_total{result="ok"}'], 2)
                self.assertEqual(s['http_server_requests_total{method="GET",status="2xx"}'], 2)
                srv.stop_checked()
            finally:
                srv.kill()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Workers(unittest.TestCase):
    def test_totals_across_workers_restarts_and_kills(self):
        srv = MetricsServer("--workers", "2")
        try:
            self.assertTrue(wait_until(lambda: srv.get("/healthz").status_code == 200, 10))
            fresh_requests(srv, "/", 40)
            self.assertTrue(wait_until(lambda: requests_total(srv.samples()) == 40, 5))
            pids = set(children(srv.pid))
            self.assertEqual(len(pids), 2)

            # SIGHUP: both replaced; the totals never go backwards meanwhile.
            seen = []
            srv.send_signal(signal.SIGHUP)

            def replaced():
                s = srv.samples()
                seen.append(requests_total(s))
                return s['cserve_worker_restarts_total{cause="hup"}'] == 2 and not (
                    pids & set(children(srv.pid)))
            self.assertTrue(wait_until(replaced, 15, interval=0.05))
            self.assertEqual(seen, sorted(seen))
            self.assertGreaterEqual(min(seen), 40)
            fresh_requests(srv, "/", 10)
            self.assertTrue(wait_until(lambda: requests_total(srv.samples()) == 50, 5))

            # A worker killed: its counts stay.
            victim = children(srv.pid)[0]
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(wait_until(
                lambda: srv.samples()['cserve_worker_restarts_total{cause="crash"}'] == 1, 10))
            s = srv.samples()
            self.assertEqual(requests_total(s), 50)
            self.assertTrue(wait_until(lambda: srv.samples()["cserve_workers"] == 2, 10))
            self.assertEqual(srv.samples()['cserve_worker_restarts_total{cause="watchdog"}'], 0)
            rc, out = promtool_check(srv.get("/metrics").text)
            self.assertEqual(rc, 0, out)

            drain_with_healthz_503(self, srv) # the master's /healthz
        finally:
            srv.kill()
        self.assertIsNone(srv.sanitizer_report())

    def test_max_requests_replacements_keep_their_counts(self):
        srv = MetricsServer("--workers", "2", "--limit-max-requests", "3")
        try:
            self.assertTrue(wait_until(lambda: srv.get("/healthz").status_code == 200, 10))
            fresh_requests(srv, "/", 12)
            self.assertTrue(wait_until(
                lambda: srv.samples()['cserve_worker_restarts_total{cause="max_requests"}'] >= 2, 10))
            self.assertTrue(wait_until(lambda: requests_total(srv.samples()) == 12, 5))
            srv.stop_checked()
        finally:
            srv.kill()

    def test_master_listener_http(self):
        srv = MetricsServer("--workers", "2")
        try:
            self.assertTrue(wait_until(lambda: srv.get("/healthz").status_code == 200, 10)) # a worker serves
            def raw(data):
                with socket.create_connection((HOST, srv.metrics_port), timeout=IO_TIMEOUT) as s:
                    s.sendall(data)
                    out = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            return out
                        out += chunk

            self.assertTrue(raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n"))
            r = raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(r.startswith(b"HTTP/1.1 405 "), r)
            self.assertIn(b"\r\nallow: GET, HEAD\r\n", r)
            r = raw(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(r.startswith(b"HTTP/1.1 404 "), r)
            r = raw(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(r.startswith(b"HTTP/1.1 200 OK\r\n"), r)
            self.assertTrue(r.endswith(b"\r\n\r\n"), r) # no body
            r = raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertEqual(r.count(b"HTTP/1.1 200 OK\r\n"), 2, r) # pipelined, keep-alive
            self.assertIn(b"cserve_workers 2\n", r)
            self.assertTrue(raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 4"))
            # Many connections that send nothing: the listener still answers.
            idle = [socket.create_connection((HOST, srv.metrics_port), timeout=IO_TIMEOUT)
                    for _ in range(80)]
            try:
                for s in idle[:70]:
                    s.close()
                self.assertTrue(wait_until(lambda: srv.get("/healthz").status_code == 200, 15))
            finally:
                for s in idle:
                    s.close()
            srv.stop_checked()
        finally:
            srv.kill()


class RealPrometheus(unittest.TestCase):
    def test_prometheus_scrapes_and_answers_a_query(self):
        if not shutil.which("prometheus"):
            self.fail("prometheus is not installed (scripts/setup.sh installs it)")
        srv = MetricsServer("--workers", "2")
        tmp = tempfile.mkdtemp(prefix="cserve-prom-")
        prom = None
        try:
            with socket.socket() as s:
                s.bind((HOST, 0))
                prom_port = s.getsockname()[1]
            with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                        "scrape_configs:\n  - job_name: cserve\n    static_configs:\n"
                        "      - targets: ['127.0.0.1:%d']\n" % srv.metrics_port)
            prom = Process(["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                            "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                            "--web.listen-address=127.0.0.1:%d" % prom_port, "--log.level=warn"])
            fresh_requests(srv, "/", 25)

            def query(q):
                try:
                    r = httpx.get("http://127.0.0.1:%d/api/v1/query?query=%s"
                                  % (prom_port, urllib.parse.quote(q)), timeout=IO_TIMEOUT)
                except httpx.HTTPError:
                    return None
                if r.status_code != 200:
                    return None
                result = r.json()["data"]["result"]
                return float(result[0]["value"][1]) if result else None

            self.assertTrue(wait_until(lambda: query('up{job="cserve"}') == 1, 40, interval=0.5),
                            prom.log_text())
            self.assertTrue(wait_until(lambda: query("sum(http_server_requests_total)") == 25, 20,
                                       interval=0.5), prom.log_text())
            self.assertEqual(query("cserve_workers"), 2)
            self.assertEqual(query("http_server_request_duration_seconds_count"), 25)
            srv.stop_checked()
        finally:
            if prom:
                prom.kill()
            srv.kill()
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    httpbin_main(__file__, WATCHDOG, lambda path: globals().update(HTTPBIN=path))


if __name__ == "__main__":
    main()
