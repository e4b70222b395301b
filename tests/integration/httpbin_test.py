#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box integration tests for cserve, driven through the example program `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/httpbin_test.py --httpbin PATH --hello PATH [unittest args]

Every test talks to 127.0.0.1 only, every socket and subprocess operation is bounded by
a timeout, and a watchdog aborts the whole run if it ever takes longer than two minutes.

Ordinary requests go through httpx and curl; anything where a client library would hide
what the server does on the wire (framing, keep-alive, pipelining, malformed requests)
goes through raw sockets and the small HTTP/1.1 response parser below.
"""

import datetime
import email.utils
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import uuid

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IMF_FIXDATE_RE, IO_TIMEOUT, RUNNING_RE, Server, parse_args, require_executable,
    run_tests)

# Set from the command line in main().
HTTPBIN = None
HELLO = None


def expected_bytes(n):
    """The body of GET /bytes/{n}."""
    return bytes(ord("a") + i % 26 for i in range(n))


def expected_stream(n):
    """The body of GET /stream/{n}."""
    return b"".join(b"chunk %d\n" % i for i in range(n))


# ---------------------------------------------------------------------------------------
# A raw socket client and a strict HTTP/1.1 response parser
# ---------------------------------------------------------------------------------------

class Closed(Exception):
    """The peer closed the connection while a response was being read."""


class BadResponse(Exception):
    """The bytes on the wire are not a valid HTTP/1.1 response."""


class Response:
    def __init__(self, version, status, reason, headers, body, chunks=None):
        self.version = version        # "HTTP/1.1"
        self.status = status          # int
        self.reason = reason          # str
        self.headers = headers        # [(lower-cased name, value)] in order
        self.body = body              # bytes
        self.chunks = chunks          # [bytes] if the body was chunked, else None

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def has(self, name):
        return self.get(name) is not None

    def __repr__(self):
        return "<Response %s %d %r headers=%r body=%r>" % (
            self.version, self.status, self.reason, self.headers, self.body[:200])


def build_request(method, target, headers=None, body=b"", version="HTTP/1.1", host="x"):
    """The bytes of one request. headers is a list of (name, value); a Host header is
    added first unless host is None or headers already has one."""
    headers = list(headers or [])
    if host is not None and not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", host))
    lines = ["%s %s %s" % (method, target, version)]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts):
    """A chunked request body made of the given chunks (empty parts are skipped)."""
    out = b""
    for p in parts:
        if p:
            out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n\r\n"


class RawConn:
    """A TCP connection to the server with a read buffer."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = bytearray()
        self.informational = []   # 1xx responses skipped by read_response

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def send_ignoring_reset(self, data):
        """sendall, but a server that already answered and closed is not an error."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed("connection closed by the server; unparsed bytes: %r"
                         % bytes(self.buf[:200]))
        self.buf += data

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > 1 << 20 and delim == b"\r\n\r\n":
                raise BadResponse("no end of header in %d bytes" % len(self.buf))
            self._recv_more()

    def read_line(self):
        return self.read_until(b"\r\n")

    def read_exact(self, n):
        while len(self.buf) < n:
            self._recv_more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self):
        """(version, status, reason, headers) of the next response header."""
        head = self.read_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise BadResponse("bad status line %r (full head %r)" % (lines[0], head[:500]))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise BadResponse("bad header line %r" % line)
            headers.append((name.decode("latin-1").lower(),
                            value.strip(b" \t").decode("latin-1")))
        return (m.group(1).decode(), int(m.group(2)),
                (m.group(3) or b"").decode("latin-1"), headers)

    def read_chunked_body(self):
        chunks = []
        while True:
            line = self.read_line()
            size_text = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                raise BadResponse("bad chunk size line %r" % line)
            size = int(size_text, 16)
            if size == 0:
                while self.read_line() != b"":   # trailer section
                    pass
                return chunks
            chunks.append(self.read_exact(size))
            crlf = self.read_exact(2)
            if crlf != b"\r\n":
                raise BadResponse("chunk data not followed by CRLF: %r" % crlf)

    def read_response(self, method="GET", skip_informational=True):
        """Reads one complete response, framed as RFC 9112 section 6.3 says."""
        while True:
            version, status, reason, headers = self.read_head()
            if skip_informational and 100 <= status < 200 and status != 101:
                self.informational.append((version, status, reason, headers))
                continue
            break
        resp = Response(version, status, reason, headers, b"")
        te = resp.get("transfer-encoding")
        cl = resp.get("content-length")
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return resp
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BadResponse("unexpected transfer-encoding %r" % te)
            if cl is not None:
                raise BadResponse("both transfer-encoding and content-length: %r" % resp)
            resp.chunks = self.read_chunked_body()
            resp.body = b"".join(resp.chunks)
        elif cl is not None:
            if not cl.isdigit():
                raise BadResponse("bad content-length %r" % cl)
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_eof()
        return resp

    def read_to_eof(self):
        """Everything until the server closes (a reset counts as a close)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
        except ConnectionResetError:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def wait_closed(self, timeout):
        """(closed, extra bytes): whether the server closed the connection within timeout,
        and whatever unread bytes arrived before that."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, bytes(self.buf)
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    return True, bytes(self.buf)
                self.buf += data
        except ConnectionResetError:
            return True, bytes(self.buf)
        except (socket.timeout, TimeoutError):
            return False, bytes(self.buf)
        finally:
            try:
                self.sock.settimeout(IO_TIMEOUT)
            except OSError:
                pass


def raw_exchange(port, request, method="GET"):
    """Sends one request on a fresh connection and returns (response, local port)."""
    with RawConn(port) as c:
        c.send(request)
        return c.read_response(method), c.local_port


def curl(*args, timeout=10):
    """Runs curl; returns the CompletedProcess (stdout as bytes)."""
    cmd = ["curl", "--silent", "--show-error", "--max-time", "8", "--noproxy", "*"] + list(args)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def parse_curl_include(out):
    """Splits `curl -i` output into [(status, headers dict lower-case)] and the body."""
    responses = []
    rest = out
    while rest.startswith(b"HTTP/"):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.setdefault(k.decode().strip().lower(), v.decode().strip())
        responses.append((status, headers))
    return responses, rest


def httpx_client(**kw):
    kw.setdefault("timeout", IO_TIMEOUT)
    return httpx.Client(trust_env=False, **kw)


class ServerTestCase(unittest.TestCase):
    """Helpers shared by every test class."""

    def start_server(self, *args):
        """A fresh server for this test only; killed at cleanup if still running."""
        server = Server(HTTPBIN, *args)
        self.addCleanup(server.kill)
        return server

    def assert_server_ok(self, server):
        """A fresh connection still gets 200 `Hello, world!` from /."""
        resp, _ = raw_exchange(server.port, build_request("GET", "/"))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, b"Hello, world!")

    def assert_closed(self, conn, timeout=3.0):
        closed, extra = conn.wait_closed(timeout)
        self.assertTrue(closed, "server did not close the connection within %.1f s" % timeout)
        self.assertEqual(extra, b"", "unexpected bytes after the response")

    def assert_open(self, conn, timeout=0.3):
        closed, extra = conn.wait_closed(timeout)
        self.assertFalse(closed, "server closed a connection that should stay open")
        self.assertEqual(extra, b"", "unexpected bytes on an idle connection")

    def assert_date_header(self, value):
        self.assertIsNotNone(value, "no date header")
        self.assertRegex(value, IMF_FIXDATE_RE)
        when = email.utils.parsedate_to_datetime(value)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - when).total_seconds()), 120, value)


class SharedServerTestCase(ServerTestCase):
    """One server (with SERVER_ARGS) for the whole class."""

    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Server(HTTPBIN, *cls.SERVER_ARGS)

    @classmethod
    def tearDownClass(cls):
        server = cls.server
        try:
            rc = server.stop()
        finally:
            server.kill()
        if rc != 0:
            raise AssertionError("server exited with status %r after SIGTERM; stderr:\n%s"
                                 % (rc, server.log_text()))

    @property
    def port(self):
        return self.server.port

    def url(self, path):
        return self.server.url(path)


# ---------------------------------------------------------------------------------------
# The routes of httpbin through ordinary clients
# ---------------------------------------------------------------------------------------

class RouteTests(SharedServerTestCase):

    def test_root_httpx(self):
        with httpx_client() as client:
            r = client.get(self.url("/"))
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.http_version, "HTTP/1.1")
        self.assertTrue(r.headers["content-type"].startswith("text/plain"), r.headers)
        self.assertEqual(r.content, b"Hello, world!")

    def test_root_curl(self):
        p = curl("-i", "--http1.1", self.url("/"))
        self.assertEqual(p.returncode, 0, p.stderr)
        responses, body = parse_curl_include(p.stdout)
        self.assertEqual(len(responses), 1, p.stdout)
        status, headers = responses[0]
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"), headers)
        self.assertEqual(headers.get("server"), "cserve")
        self.assert_date_header(headers.get("date"))
        self.assertEqual(body, b"Hello, world!")

    def test_not_found(self):
        with httpx_client() as client:
            for path in ("/nope", "/bytes", "/status/", "/bytes/abc", "/byteswhatever/3"):
                r = client.get(self.url(path))
                self.assertEqual(r.status_code, 404, path)
                self.assertEqual(r.content, b"Not Found", path)

    def test_not_found_curl(self):
        p = curl("-o", "/dev/null", "-w", "%{http_code}", self.url("/definitely/not/here"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"404")

    def test_bytes(self):
        with httpx_client() as client:
            for n in (0, 1, 26, 27, 1000):
                r = client.get(self.url("/bytes/%d" % n))
                self.assertEqual(r.status_code, 200, n)
                self.assertEqual(r.headers.get("content-length"), str(n))
                self.assertNotIn("transfer-encoding", r.headers)
                self.assertEqual(r.content, expected_bytes(n))

    def test_bytes_large(self):
        n = 3 * 1024 * 1024 + 7
        with httpx_client(timeout=10) as client:
            r = client.get(self.url("/bytes/%d" % n))
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers.get("content-length"), str(n))
        self.assertEqual(r.content, expected_bytes(n))

    def test_bytes_curl(self):
        p = curl(self.url("/bytes/100"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, expected_bytes(100))

    def test_stream_is_chunked(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/stream/5"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.get("transfer-encoding"), "chunked", resp)
        self.assertFalse(resp.has("content-length"), resp)
        self.assertEqual(resp.body, expected_stream(5))

    def test_stream_zero(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/stream/0"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, b"")

    def test_stream_httpx(self):
        with httpx_client() as client:
            with client.stream("GET", self.url("/stream/20")) as r:
                self.assertEqual(r.status_code, 200)
                body = b"".join(r.iter_bytes())
        self.assertEqual(body, expected_stream(20))

    def test_stream_curl(self):
        p = curl(self.url("/stream/3"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"chunk 0\nchunk 1\nchunk 2\n")

    def test_status_codes(self):
        with httpx_client() as client:
            for code in (200, 201, 202, 400, 401, 403, 404, 418, 500, 503):
                r = client.get(self.url("/status/%d" % code))
                self.assertEqual(r.status_code, code)
                self.assertEqual(r.content, b"", code)

    def test_status_204_has_no_body_or_framing_headers(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/status/204") + build_request("GET", "/"))
            r1 = c.read_response()
            self.assertEqual(r1.status, 204)
            self.assertFalse(r1.has("content-length"), r1)
            self.assertFalse(r1.has("transfer-encoding"), r1)
            # A body after the 204 would show up here instead of the next status line.
            r2 = c.read_response()
            self.assertEqual(r2.status, 200, r2)
            self.assertEqual(r2.body, b"Hello, world!")

    def test_status_304_has_no_body(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/status/304") + build_request("GET", "/bytes/4"))
            r1 = c.read_response()
            self.assertEqual(r1.status, 304)
            r2 = c.read_response()
            self.assertEqual(r2.status, 200, r2)
            self.assertEqual(r2.body, b"abcd")

    def test_delay(self):
        with httpx_client() as client:
            t0 = time.monotonic()
            r = client.get(self.url("/delay/300"))
            elapsed = time.monotonic() - t0
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.content, b"done")
        self.assertGreaterEqual(elapsed, 0.29)
        self.assertLess(elapsed, 3.0)

    def test_concurrent_requests(self):
        """Slow requests on separate connections run concurrently, not one after another."""
        results = [None] * 10
        # One after another they would take at least 10 s; together about 1 s, and on a
        # loaded machine still well under the bound.
        bound = 6.0
        clients = [httpx_client() for _ in results]  # created before the clock starts
        start = threading.Barrier(len(results) + 1)

        def worker(i):
            try:
                start.wait(10)
                r = clients[i].get(self.url("/delay/1000"))
                results[i] = (r.status_code, r.content)
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(results))]
        try:
            for t in threads:
                t.start()
            start.wait(10)
            t0 = time.monotonic()
            for t in threads:
                t.join(30)
            elapsed = time.monotonic() - t0
        finally:
            for c in clients:
                c.close()
        self.assertEqual(results, [(200, b"done")] * len(results))
        self.assertLess(elapsed, bound, "10 x /delay/1000 did not run concurrently")

    def test_pid(self):
        with httpx_client() as client:
            r = client.get(self.url("/pid"))
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.text.strip(), str(self.server.pid))

    def test_headers_route(self):
        req = (b"GET /headers HTTP/1.1\r\n"
               b"Host: example.test\r\n"
               b"X-Dup: one\r\n"
               b"X-UPPER-Case: Value With Spaces\r\n"
               b"x-pad:   padded   \r\n"
               b"x-dup: two\r\n"
               b"Accept: */*\r\n"
               b"\r\n")
        resp, _ = raw_exchange(self.port, req)
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.get("content-type", "").startswith("application/json"), resp)
        data = json.loads(resp.body)
        self.assertEqual(data["headers"], [
            ["host", "example.test"],
            ["x-dup", "one"],
            ["x-upper-case", "Value With Spaces"],
            ["x-pad", "padded"],
            ["x-dup", "two"],
            ["accept", "*/*"],
        ])

    def test_headers_route_httpx(self):
        with httpx_client() as client:
            r = client.get(self.url("/headers"), headers={"X-Custom-Thing": "v1"})
        self.assertEqual(r.status_code, 200)
        headers = r.json()["headers"]
        self.assertIn(["x-custom-thing", "v1"], headers)
        self.assertIn(["host", "%s:%d" % (HOST, self.port)], headers)
        for name, _ in headers:
            self.assertEqual(name, name.lower())

    def test_echo_1mib_content_length(self):
        body = os.urandom(1 << 20)
        with httpx_client(timeout=10) as client:
            r = client.post(self.url("/echo"), content=body)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers.get("content-type"), "application/octet-stream")
        self.assertEqual(r.headers.get("transfer-encoding"), "chunked")
        self.assertNotIn("content-length", r.headers)
        self.assertEqual(len(r.content), len(body))
        self.assertTrue(r.content == body, "echoed body differs")

    def test_echo_copies_content_type(self):
        with httpx_client() as client:
            r = client.put(self.url("/echo"), content=b'{"a": 1}',
                           headers={"content-type": "application/x-test; charset=utf-8"})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers.get("content-type"), "application/x-test; charset=utf-8")
        self.assertEqual(r.content, b'{"a": 1}')

    def test_echo_empty_get(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/echo"))
        self.assertEqual(resp.status, 200)
        # The whole (empty) body came in the first body event: a content-length, not chunks.
        self.assertEqual(resp.get("content-length"), "0", resp)
        self.assertIsNone(resp.get("transfer-encoding"), resp)
        self.assertEqual(resp.body, b"")

    def test_echo_chunked_request_raw(self):
        parts = [b"hello", b" ", b"chunked", os.urandom(5000), b"world"]
        req = build_request("POST", "/echo", [("Transfer-Encoding", "chunked"),
                                              ("Content-Type", "text/x-parts")])
        with RawConn(self.port) as c:
            c.send(req + chunked(*parts))
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.get("content-type"), "text/x-parts")
            # Echoed as it was read: one body event gets a content-length, several are chunked.
            if resp.get("transfer-encoding") is None:
                self.assertEqual(resp.get("content-length"), str(len(b"".join(parts))))
            else:
                self.assertEqual(resp.get("transfer-encoding"), "chunked")
                self.assertIsNone(resp.get("content-length"))
            self.assertEqual(resp.body, b"".join(parts))
            # The connection is still usable afterwards.
            c.send(build_request("GET", "/bytes/3"))
            self.assertEqual(c.read_response().body, b"abc")

    def test_echo_chunked_request_sent_piecewise(self):
        """Chunks sent in separate writes, split mid-line and mid-data, with an
        extension, upper-case hex and a trailer."""
        with RawConn(self.port) as c:
            c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
            pieces = [b"4\r\nab", b"cd\r\n", b"A;name=value\r\n0123", b"456789\r\n",
                      b"1\r", b"\n!\r\n", b"0\r\nX-Trailer: yes\r\n", b"\r\n"]
            for p in pieces:
                c.send(p)
                time.sleep(0.02)
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"abcd0123456789!")

    def test_echo_chunked_curl(self):
        data = os.urandom(200000)
        p = subprocess.run(
            ["curl", "--silent", "--show-error", "--max-time", "8", "--noproxy", "*",
             "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/x-bin",
             "--data-binary", "@-", self.url("/echo")],
            input=data, capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(p.stdout), len(data))
        self.assertTrue(p.stdout == data, "echoed body differs")

    def test_upload_content_length(self):
        body = os.urandom(1 << 20)
        with httpx_client(timeout=10) as client:
            r = client.post(self.url("/upload"), content=body)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json(), {"bytes": len(body)})

    def test_upload_chunked_httpx(self):
        parts = [os.urandom(n) for n in (1, 1000, 65536, 3, 100000)]

        def gen():
            yield from parts

        with httpx_client(timeout=10) as client:
            r = client.post(self.url("/upload"), content=gen())
        self.assertEqual(r.request.headers.get("transfer-encoding"), "chunked")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json(), {"bytes": sum(map(len, parts))})

    def test_upload_empty(self):
        resp, _ = raw_exchange(self.port, build_request(
            "POST", "/upload", [("Content-Length", "0")]))
        self.assertEqual(resp.status, 200)
        self.assertEqual(json.loads(resp.body), {"bytes": 0})

    def test_upload_curl(self):
        data = os.urandom(300000)
        p = subprocess.run(
            ["curl", "--silent", "--show-error", "--max-time", "8", "--noproxy", "*",
             "--data-binary", "@-", self.url("/upload")],
            input=data, capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"bytes": len(data)})

    def test_expect_100_continue_raw(self):
        body = b"0123456789" * 100
        with RawConn(self.port) as c:
            c.send(build_request("POST", "/upload", [("Content-Length", str(len(body))),
                                                     ("Expect", "100-continue")]))
            version, status, reason, headers = c.read_head()
            self.assertEqual((version, status), ("HTTP/1.1", 100),
                             "expected 'HTTP/1.1 100 Continue' before sending the body")
            c.send(body)
            resp = c.read_response("POST")
            self.assertEqual(resp.status, 200)
            self.assertEqual(json.loads(resp.body), {"bytes": len(body)})
            # And the connection is still good for another request.
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().body, b"Hello, world!")

    def test_expect_100_continue_echo_starts_response_first(self):
        # /echo sends its response_start before it receives: the head is still held then,
        # so the 100 goes out first.
        with RawConn(self.port) as c:
            c.send(build_request("POST", "/echo", [("Content-Length", "5"),
                                                   ("Expect", "100-continue")]))
            version, status, reason, headers = c.read_head()
            self.assertEqual((version, status), ("HTTP/1.1", 100),
                             "expected 'HTTP/1.1 100 Continue' before sending the body")
            c.send(b"hello")
            resp = c.read_response("POST")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"hello")

    def test_expect_100_continue_curl(self):
        data = os.urandom(5000)
        p = subprocess.run(
            ["curl", "--silent", "--show-error", "--max-time", "8", "--noproxy", "*",
             "-i", "--http1.1", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
             "--data-binary", "@-", self.url("/upload")],
            input=data, capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        responses, body = parse_curl_include(p.stdout)
        self.assertEqual([s for s, _ in responses], [100, 200], p.stdout[:500])
        self.assertEqual(json.loads(body), {"bytes": len(data)})

    def test_head_httpx(self):
        with httpx_client() as client:
            g = client.get(self.url("/bytes/26"))
            h = client.head(self.url("/bytes/26"))
        self.assertEqual(h.status_code, 200)
        self.assertEqual(h.headers.get("content-length"), "26")
        self.assertEqual(h.headers.get("content-type"), g.headers.get("content-type"))
        self.assertEqual(h.content, b"")

    def test_head_curl(self):
        p = curl("-I", self.url("/bytes/26"))
        self.assertEqual(p.returncode, 0, p.stderr)
        responses, body = parse_curl_include(p.stdout)
        self.assertEqual(len(responses), 1)
        status, headers = responses[0]
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-length"), "26")
        self.assertEqual(body, b"")

    def test_head_sends_no_body_raw(self):
        """HEAD responses carry GET's headers; the next pipelined response must start
        right after the HEAD response's header."""
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/bytes/5") + build_request("GET", "/"))
            g = c.read_response()
            g_root = c.read_response()
            c.send(build_request("HEAD", "/bytes/5") + build_request("HEAD", "/")
                   + build_request("HEAD", "/stream/3") + build_request("GET", "/bytes/2"))
            h = c.read_response("HEAD")
            self.assertEqual(h.status, 200)
            self.assertEqual(h.get("content-length"), "5")
            drop = {"date"}
            self.assertEqual([kv for kv in h.headers if kv[0] not in drop],
                             [kv for kv in g.headers if kv[0] not in drop])
            h2 = c.read_response("HEAD")
            self.assertEqual(h2.status, 200)
            self.assertEqual(h2.get("content-length"), g_root.get("content-length"))
            self.assertEqual(h2.get("transfer-encoding"), g_root.get("transfer-encoding"))
            h3 = c.read_response("HEAD")
            self.assertEqual(h3.status, 200)
            self.assertFalse(h3.has("content-length"), h3)
            last = c.read_response()
            self.assertEqual(last.status, 200, last)
            self.assertEqual(last.body, b"ab")

    def test_default_headers(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/"))
        self.assertEqual(resp.get_all("server"), ["cserve"])
        self.assertEqual(len(resp.get_all("date")), 1, resp)
        self.assert_date_header(resp.get("date"))
        # On error responses too.
        resp, _ = raw_exchange(self.port, build_request("GET", "/nope"))
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.get("server"), "cserve")
        self.assert_date_header(resp.get("date"))

    def test_keep_alive_http11(self):
        with RawConn(self.port) as c:
            for i in range(20):
                c.send(build_request("GET", "/bytes/%d" % i))
                resp = c.read_response()
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.body, expected_bytes(i))
                self.assertNotEqual(resp.get("connection", "").lower(), "close", resp)
            c.send(build_request("GET", "/stream/2"))
            self.assertEqual(c.read_response().body, expected_stream(2))
            self.assert_open(c)
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().body, b"Hello, world!")

    def test_http10_closes_after_response(self):
        with RawConn(self.port) as c:
            c.send(b"GET / HTTP/1.0\r\n\r\n")
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"Hello, world!")
            self.assertNotEqual(resp.get("connection", "").lower(), "keep-alive")
            self.assert_closed(c)

    def test_http10_keep_alive(self):
        with RawConn(self.port) as c:
            c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"Hello, world!")
            self.assertEqual(resp.get("connection", "").lower(), "keep-alive", resp)
            self.assert_open(c)
            c.send(b"GET /bytes/3 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            resp = c.read_response()
            self.assertEqual(resp.body, b"abc")
            self.assertEqual(resp.get("connection", "").lower(), "keep-alive", resp)
            # Without the header the HTTP/1.0 default (close) applies again.
            c.send(b"GET / HTTP/1.0\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            self.assert_closed(c)

    def test_http10_streaming_response_is_close_delimited(self):
        """HTTP/1.0 has no chunked coding: a body without length ends with the close."""
        with RawConn(self.port) as c:
            c.send(b"GET /stream/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            version, status, _, headers = c.read_head()
            self.assertEqual(status, 200)
            names = [k for k, _ in headers]
            self.assertNotIn("transfer-encoding", names)
            self.assertEqual(c.read_to_eof(), expected_stream(3))

    def test_connection_close(self):
        with RawConn(self.port) as c:
            # The second request must not be answered after `Connection: close`.
            c.send(build_request("GET", "/bytes/4", [("Connection", "close")])
                   + build_request("GET", "/bytes/3"))
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"abcd")
            self.assert_closed(c)

    def test_connection_close_httpx(self):
        with httpx_client() as client:
            r = client.get(self.url("/"), headers={"Connection": "close"})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.content, b"Hello, world!")

    def test_pipelining_in_order(self):
        reqs = [("GET", "/delay/300"), ("GET", "/"), ("GET", "/bytes/3"),
                ("GET", "/stream/2"), ("GET", "/status/404"), ("HEAD", "/bytes/7"),
                ("GET", "/nope"), ("GET", "/status/204"), ("GET", "/bytes/1")]
        with RawConn(self.port) as c:
            c.send(b"".join(build_request(m, p) for m, p in reqs))
            got = [c.read_response(m) for m, _ in reqs]
            self.assertEqual([(r.status, r.body) for r in got], [
                (200, b"done"), (200, b"Hello, world!"), (200, b"abc"),
                (200, b"chunk 0\nchunk 1\n"), (404, b""), (200, b""), (404, b"Not Found"),
                (204, b""), (200, b"a")])
            self.assertEqual(got[5].get("content-length"), "7")
            self.assert_open(c)

    def test_pipelining_with_bodies(self):
        with RawConn(self.port) as c:
            c.send(build_request("POST", "/upload", [("Content-Length", "5")], b"hello")
                   + build_request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                                   chunked(b"ab", b"cd"))
                   + build_request("GET", "/")
                   + build_request("POST", "/upload", [("Content-Length", "3")], b"xyz"))
            self.assertEqual(json.loads(c.read_response().body), {"bytes": 5})
            self.assertEqual(c.read_response().body, b"abcd")
            self.assertEqual(c.read_response().body, b"Hello, world!")
            self.assertEqual(json.loads(c.read_response().body), {"bytes": 3})

    def test_pipelining_byte_by_byte(self):
        """Requests dribbled one byte at a time still parse."""
        data = build_request("GET", "/bytes/2") + build_request("GET", "/")
        with RawConn(self.port) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                c.send(data[i:i + 1])
            self.assertEqual(c.read_response().body, b"ab")
            self.assertEqual(c.read_response().body, b"Hello, world!")

    def test_large_header_under_limit_ok(self):
        resp, _ = raw_exchange(self.port, build_request(
            "GET", "/", [("X-Big", "a" * 8000), ("X-Big2", "b" * 4000)]))
        self.assertEqual(resp.status, 200)

    def test_unknown_upgrade_ignored(self):
        # (Upgrade: h2c is HTTP/2's: tests/integration/http2_test.py.)
        req = build_request("GET", "/", [("Connection", "Upgrade"), ("Upgrade", "foo/2, irc")])
        with RawConn(self.port) as c:
            c.send(req)
            resp = c.read_response()
            self.assertEqual(resp.version, "HTTP/1.1")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"Hello, world!")
            self.assertFalse(resp.has("upgrade"), resp)
            c.send(build_request("GET", "/bytes/2"))
            self.assertEqual(c.read_response().body, b"ab")

    def test_scope(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/scope?x=1&y=%20"))
            resp = c.read_response()
            local_port = c.local_port
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.get("content-type", "").startswith("application/json"), resp)
        scope = json.loads(resp.body)
        for key in ("type", "http_version", "method", "scheme", "path", "raw_path",
                    "query_string", "root_path", "client", "server"):
            self.assertIn(key, scope)
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["path"], "/scope")
        self.assertEqual(scope["raw_path"], "/scope")
        self.assertEqual(scope["query_string"], "x=1&y=%20")
        self.assertEqual(scope["root_path"], "")
        self.assertEqual(scope["client"], [HOST, local_port])
        self.assertEqual(scope["server"], [HOST, self.port])

    def test_scope_raw_query(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/scope?q=a%20b&r=%2F+c"))
        scope = json.loads(resp.body)
        self.assertEqual(scope["query_string"], "q=a%20b&r=%2F+c")
        self.assertEqual(scope["path"], "/scope")

    def test_scope_no_query(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/scope"))
        self.assertEqual(json.loads(resp.body)["query_string"], "")

    def test_scope_http10(self):
        resp, _ = raw_exchange(self.port, b"GET /scope HTTP/1.0\r\n\r\n")
        self.assertEqual(resp.status, 200)
        scope = json.loads(resp.body)
        self.assertEqual(scope["http_version"], "1.0")

    def test_scope_head(self):
        resp, _ = raw_exchange(self.port, build_request("HEAD", "/scope"), method="HEAD")
        self.assertEqual(resp.status, 200)

    def test_scope_absolute_form(self):
        target = "http://%s:%d/scope?a=b" % (HOST, self.port)
        resp, _ = raw_exchange(self.port, build_request(
            "GET", target, host="%s:%d" % (HOST, self.port)))
        self.assertEqual(resp.status, 200, resp)
        scope = json.loads(resp.body)
        self.assertEqual(scope["path"], "/scope")
        self.assertEqual(scope["raw_path"], "/scope")
        self.assertEqual(scope["query_string"], "a=b")

    def test_scope_httpx(self):
        with httpx_client() as client:
            r = client.get(self.url("/scope"), params={"k": "v w"})
        scope = r.json()
        self.assertEqual(scope["path"], "/scope")
        self.assertIn(scope["query_string"], ("k=v+w", "k=v%20w"))
        self.assertEqual(scope["client"][0], HOST)
        self.assertIsInstance(scope["client"][1], int)

    def test_access_log_line(self):
        tag = uuid.uuid4().hex
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            c.send(build_request("GET", "/nope-%s" % tag))
            self.assertEqual(c.read_response().status, 404)
            lp = c.local_port
        ok_line = 'INFO:     %s:%d - "GET / HTTP/1.1" 200 OK' % (HOST, lp)
        nf_line = 'INFO:     %s:%d - "GET /nope-%s HTTP/1.1" 404 Not Found' % (HOST, lp, tag)
        self.assertIsNotNone(self.server.wait_for_line(lambda l: l == nf_line, 3),
                             "no access log line %r in:\n%s" % (nf_line, self.server.log_text()))
        self.assertIn(ok_line, self.server.log_lines())

    def test_disconnect_is_noticed(self):
        with httpx_client() as client:
            base = client.get(self.url("/disconnects")).json()["count"]
            c = RawConn(self.port)
            c.send(build_request("GET", "/disconnect"))
            time.sleep(0.3)
            c.close()
            deadline = time.monotonic() + 10.0
            count = base
            while time.monotonic() < deadline:
                count = client.get(self.url("/disconnects")).json()["count"]
                if count != base:
                    break
                time.sleep(0.05)
            self.assertEqual(count, base + 1,
                             "the app did not see the client disconnect within 10 s")


# ---------------------------------------------------------------------------------------
# Malformed requests
# ---------------------------------------------------------------------------------------

class ProtocolErrorTests(SharedServerTestCase):

    def assert_rejected(self, request, status, allow_close_without_response=False):
        with RawConn(self.port) as c:
            c.send_ignoring_reset(request)
            try:
                resp = c.read_response()
            except Closed:
                if not allow_close_without_response:
                    raise
                resp = None
            except ConnectionResetError:
                if not allow_close_without_response:
                    self.fail("connection reset before a %d response arrived" % status)
                resp = None
            if resp is not None:
                self.assertEqual(resp.status, status, resp)
                self.assert_closed(c)
        self.assert_server_ok(self.server)

    def test_garbage_request_line(self):
        self.assert_rejected(b"GARBAGE\r\n\r\n", 400)

    def test_bad_http_version(self):
        self.assert_rejected(b"GET / HTTP/x.y\r\nHost: x\r\n\r\n", 400)

    def test_header_too_large(self):
        self.assert_rejected(build_request("GET", "/", [("X-Big", "a" * 20000)]), 431)

    def test_many_headers_too_large(self):
        headers = [("X-H%d" % i, "v" * 100) for i in range(200)]
        self.assert_rejected(build_request("GET", "/", headers), 431)

    def test_content_length_and_transfer_encoding(self):
        self.assert_rejected(build_request(
            "POST", "/upload", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            b"5\r\nhello\r\n0\r\n\r\n"), 400)

    def test_two_different_content_lengths(self):
        self.assert_rejected(build_request(
            "POST", "/upload", [("Content-Length", "5"), ("Content-Length", "6")],
            b"hello!"), 400)

    def test_bad_content_length(self):
        self.assert_rejected(build_request(
            "POST", "/upload", [("Content-Length", "abc")], b"abc"), 400)

    def test_bad_chunk_size(self):
        self.assert_rejected(build_request(
            "POST", "/upload", [("Transfer-Encoding", "chunked")],
            b"zz\r\nhello\r\n0\r\n\r\n"), 400, allow_close_without_response=True)

    def test_missing_host_http11(self):
        self.assert_rejected(b"GET / HTTP/1.1\r\n\r\n", 400)

    def test_missing_host_http10_is_fine(self):
        resp, _ = raw_exchange(self.port, b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(resp.status, 200)

    def test_two_host_headers(self):
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_whitespace_before_colon(self):
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400)

    def test_chunk_ext_quoted_string_not_closed_on_its_line(self):
        # Without a bound the server would buffer and rescan every later byte.
        self.assert_rejected(build_request(
            "POST", "/upload", [("Transfer-Encoding", "chunked")],
            b'5;a="x\r\nhello\r\n0\r\n\r\n' + b"x" * 100000), 400)

    def test_chunk_line_too_long(self):
        self.assert_rejected(build_request(
            "POST", "/upload", [("Transfer-Encoding", "chunked")],
            b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400)

    def test_chunk_ext_control_characters(self):
        for value in (b'"x\ny"', b'"x\x00y"', b'"x\x01\x7fy"'):
            with self.subTest(value=value):
                with RawConn(self.port) as c:
                    c.send_ignoring_reset(build_request(
                        "POST", "/upload", [("Transfer-Encoding", "chunked")],
                        b"5;a=" + value + b"\r\nhello\r\n0\r\n\r\n") + build_request("GET", "/"))
                    resp = c.read_response()
                    self.assertEqual(resp.status, 400, resp)
                    self.assert_closed(c)
        self.assert_server_ok(self.server)

    def test_obs_fold_after_empty_value(self):
        for request in (
                build_request("GET", "/headers", [("X-A", "\r\n\tfolded value")]),
                build_request("POST", "/upload", [("Transfer-Encoding", "\r\n chunked")],
                              b"5\r\nhello\r\n0\r\n\r\n"),
                build_request("POST", "/upload", [("Content-Length", "\r\n 5")], b"hello")):
            with self.subTest(request=request):
                self.assert_rejected(request.replace(b": \r\n", b":\r\n"), 400)

    def test_space_inside_target(self):
        self.assert_rejected(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400)

    def test_bad_request_after_good_one_on_same_connection(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/bytes/2") + b"GARBAGE\r\n\r\n")
            self.assertEqual(c.read_response().body, b"ab")
            resp = c.read_response()
            self.assertEqual(resp.status, 400)
            self.assert_closed(c)
        self.assert_server_ok(self.server)

    def test_client_closes_mid_request(self):
        for data in (b"GET / HT", build_request("POST", "/upload", [("Content-Length", "100")],
                                                b"only part of it")):
            c = RawConn(self.port)
            c.send(data)
            time.sleep(0.1)
            c.close()
        self.assert_server_ok(self.server)


# ---------------------------------------------------------------------------------------
# Exceptions and misbehaviour in the application
# ---------------------------------------------------------------------------------------

class AppErrorTests(SharedServerTestCase):

    def test_error_before_start(self):
        n_before = sum("Exception in ASGI application" in l for l in self.server.log_lines())
        with httpx_client() as client:
            r = client.get(self.url("/error/before"))
        self.assertEqual(r.status_code, 500)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            n = sum("Exception in ASGI application" in l for l in self.server.log_lines())
            if n > n_before:
                break
            time.sleep(0.05)
        else:
            self.fail("no 'Exception in ASGI application' logged; stderr:\n%s"
                      % self.server.log_text())
        self.assert_server_ok(self.server)

    def test_error_none(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/error/none"))
        self.assertEqual(resp.status, 500)
        self.assert_server_ok(self.server)

    def test_error_none_curl(self):
        p = curl("-o", "/dev/null", "-w", "%{http_code}", self.url("/error/none"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"500")

    def test_error_after_start(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/error/after"))
            # 5 of the 10 body bytes went out before the app threw: the connection must
            # close before the rest, and nothing else may be sent in place of the response.
            data = c.read_to_eof()   # must end (close) rather than time out
            head, sep, rest = data.partition(b"\r\n\r\n")
            self.assertTrue(sep, "incomplete response header: %r" % data[:300])
            self.assertRegex(head, rb"^HTTP/1\.1 200\b")
            self.assertRegex(head.lower(), rb"\r\ncontent-length: *10\r?(\n|$)")
            self.assertEqual(rest, b"01234", "more than the body sent before the failure")
        self.assertIsNotNone(
            self.server.wait_for_line(lambda l: "Exception in ASGI application" in l, 3),
            "no 'Exception in ASGI application' logged; stderr:\n%s" % self.server.log_text())
        self.assert_server_ok(self.server)

    def test_error_after_start_before_body(self):
        # Nothing was written (the head waits for the first body bytes): a 500 replaces the
        # response the application started, and the connection stays usable.
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/error/started"))
            resp = c.read_response()
            self.assertEqual(resp.status, 500, resp)
            self.assertEqual(resp.body, b"Internal Server Error")
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().body, b"Hello, world!")
        self.assertIsNotNone(
            self.server.wait_for_line(lambda l: "before its body" in l, 3),
            "the exception was not logged; stderr:\n%s" % self.server.log_text())

    def test_error_after_start_httpx(self):
        with httpx_client() as client:
            with self.assertRaises(httpx.TransportError):
                client.get(self.url("/error/after"))

    def test_error_before_raw(self):
        with RawConn(self.port) as c:
            c.send(build_request("GET", "/error/before"))
            resp = c.read_response()
            self.assertEqual(resp.status, 500)
        self.assert_server_ok(self.server)


# ---------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------

class HeaderFlagTests(ServerTestCase):

    def test_no_server_no_date_extra_headers(self):
        server = self.start_server("--no-server-header", "--no-date-header",
                                   "--header", "x-a:b", "--header", "X-Other:two words")
        for path, status in (("/", 200), ("/nope", 404), ("/stream/1", 200)):
            resp, _ = raw_exchange(server.port, build_request("GET", path))
            self.assertEqual(resp.status, status)
            self.assertFalse(resp.has("server"), resp)
            self.assertFalse(resp.has("date"), resp)
            self.assertEqual(resp.get_all("x-a"), ["b"], resp)
            self.assertEqual(resp.get("x-other"), "two words", resp)
        p = curl("-i", server.url("/"))
        self.assertEqual(p.returncode, 0, p.stderr)
        responses, _ = parse_curl_include(p.stdout)
        self.assertEqual(len(responses), 1, p.stdout)
        status, headers = responses[0]
        self.assertEqual(status, 200)
        self.assertNotIn("server", headers)
        self.assertNotIn("date", headers)
        self.assertEqual(headers.get("x-a"), "b")
        self.assertEqual(server.stop(), 0)

    def test_extra_header_keeps_defaults(self):
        server = self.start_server("--header", "x-a:b")
        with httpx_client() as client:
            r = client.get(server.url("/"))
        self.assertEqual(r.headers.get("x-a"), "b")
        self.assertEqual(r.headers.get("server"), "cserve")
        self.assert_date_header(r.headers.get("date"))
        self.assertEqual(server.stop(), 0)

    def test_no_server_header_only(self):
        server = self.start_server("--no-server-header")
        resp, _ = raw_exchange(server.port, build_request("GET", "/"))
        self.assertFalse(resp.has("server"), resp)
        self.assert_date_header(resp.get("date"))
        self.assertEqual(server.stop(), 0)


class AccessLogFlagTests(ServerTestCase):

    def test_no_access_log(self):
        server = self.start_server("--no-access-log")
        tag = uuid.uuid4().hex
        with httpx_client() as client:
            self.assertEqual(client.get(server.url("/")).status_code, 200)
            self.assertEqual(client.get(server.url("/nope-" + tag)).status_code, 404)
        time.sleep(0.5)
        self.assertEqual(server.stop(), 0)
        lines = server.log_lines()
        self.assertFalse([l for l in lines if tag in l or '"GET / HTTP/1.1"' in l],
                         "access log lines despite --no-access-log:\n%s" % "\n".join(lines))
        self.assertTrue(any(RUNNING_RE.search(l) for l in lines))


class KeepAliveTimeoutTests(ServerTestCase):

    def test_idle_connection_closed(self):
        server = self.start_server("--timeout-keep-alive", "2")
        with RawConn(server.port) as c:
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            # Activity within the timeout keeps the connection alive: requests 0.5 s apart,
            # for longer than the timeout in all.
            for _ in range(5):
                time.sleep(0.5)
                c.send(build_request("GET", "/bytes/1"))
                self.assertEqual(c.read_response().body, b"a")
            t0 = time.monotonic()
            closed, extra = c.wait_closed(10)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "idle keep-alive connection not closed within 10 s")
        self.assertEqual(extra, b"")
        self.assertGreaterEqual(elapsed, 1.5, "closed too early (%.2f s)" % elapsed)
        # Room for a loaded machine, and below the 5 s of the default keep-alive timeout.
        self.assertLessEqual(elapsed, 4.0, "closed too late (%.2f s)" % elapsed)
        self.assert_server_ok(server)
        self.assertEqual(server.stop(), 0)

    def test_slow_response_not_cut_by_keep_alive_timeout(self):
        server = self.start_server("--timeout-keep-alive", "1")
        with RawConn(server.port) as c:
            c.send(build_request("GET", "/delay/1800"))
            resp = c.read_response()
            self.assertEqual((resp.status, resp.body), (200, b"done"))
        self.assertEqual(server.stop(), 0)


class RequestHeaderTimeoutTests(ServerTestCase):

    def test_slowloris(self):
        # A long keep-alive timeout, so that only the request-header timeout can cut the
        # connection off within the bound (the default request-header timeout is 30 s).
        server = self.start_server("--timeout-request-header", "1", "--timeout-keep-alive", "60")
        with RawConn(server.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            closed, data = c.wait_closed(20)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "incomplete header not cut off within 20 s")
        self.assertLessEqual(elapsed, 10.0, "cut off too late (%.2f s)" % elapsed)
        self.assertGreaterEqual(elapsed, 0.5, "cut off too early (%.2f s)" % elapsed)
        if data:
            self.assertRegex(data[:200], rb"^HTTP/1\.1 408\b")
        # A well-behaved client is unaffected.
        self.assert_server_ok(server)
        self.assertEqual(server.stop(), 0)


class RootPathTests(SharedServerTestCase):
    SERVER_ARGS = ("--root-path", "/api")

    def test_scope_root_path(self):
        resp, _ = raw_exchange(self.port, build_request("GET", "/scope?z=9"))
        self.assertEqual(resp.status, 200, resp)
        scope = json.loads(resp.body)
        self.assertEqual(scope["root_path"], "/api")
        self.assertEqual(scope["path"], "/api/scope")
        self.assertEqual(scope["raw_path"], "/api/scope")
        self.assertEqual(scope["query_string"], "z=9")

    def test_routes_still_work(self):
        with httpx_client() as client:
            self.assertEqual(client.get(self.url("/")).content, b"Hello, world!")
            self.assertEqual(client.get(self.url("/bytes/3")).content, b"abc")


class HostFlagTests(ServerTestCase):

    def test_explicit_host(self):
        server = self.start_server("--host", "127.0.0.1")
        self.assertEqual(server.host, "127.0.0.1")
        with httpx_client() as client:
            self.assertEqual(client.get(server.url("/")).status_code, 200)
        self.assertEqual(server.stop(), 0)


# ---------------------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------------------

def _request_in_thread(port, path, results):
    def run():
        try:
            with RawConn(port, timeout=15) as c:
                c.send(build_request("GET", path))
                results["sent"] = time.monotonic()
                try:
                    results["response"] = c.read_response()
                except (Closed, ConnectionResetError) as e:
                    results["closed"] = e
                results["end"] = time.monotonic()
        except Exception as e:  # reported by the test
            results["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# How long a server with nothing left to wait for may take to exit after SIGTERM: ample on a
# loaded machine, and far below what these tests' servers would otherwise wait for (their
# keep-alive timeout is set to a minute, and the requests they would wait for run longer).
SHUTDOWN_BOUND = 10.0


def wait_for_key(results, key, timeout=10.0):
    """Waits until results (filled by a _request_in_thread thread) has key; whether it has."""
    deadline = time.monotonic() + timeout
    while key not in results and time.monotonic() < deadline:
        time.sleep(0.01)
    return key in results


class ShutdownTests(ServerTestCase):

    def start_server(self, *args):
        return super().start_server("--timeout-keep-alive", "60", *args)

    def assert_in_flight(self, server, results):
        """The request of a _request_in_thread thread has been sent, and the server has
        accepted its connection: a later connection is accepted after it (the backlog is
        FIFO) and is served here."""
        self.assertTrue(wait_for_key(results, "sent"), results)
        self.assert_server_ok(server)

    def test_sigterm_idle_exits_zero(self):
        server = self.start_server()
        self.assert_server_ok(server)
        t0 = time.monotonic()
        self.assertEqual(server.stop(signal.SIGTERM, timeout=SHUTDOWN_BOUND + 5), 0)
        self.assertLess(time.monotonic() - t0, SHUTDOWN_BOUND)

    def test_sigint_exits_zero(self):
        server = self.start_server()
        self.assert_server_ok(server)
        self.assertEqual(server.stop(signal.SIGINT), 0)

    def test_idle_keep_alive_connection_does_not_delay_shutdown(self):
        server = self.start_server()  # keep-alive timeout: a minute
        with RawConn(server.port) as c:
            c.send(build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            t0 = time.monotonic()
            self.assertEqual(server.stop(signal.SIGTERM, timeout=SHUTDOWN_BOUND + 5), 0)
            self.assertLess(time.monotonic() - t0, SHUTDOWN_BOUND)
            closed, extra = c.wait_closed(5)
            self.assertTrue(closed)

    def test_head_of_endless_stream_yields_and_ends_with_client(self):
        # HEAD writes no body: send() has nothing to wait for, yet the loop must still run
        # other connections and signals, and notice the client leaving.
        server = self.start_server()
        for path in ("/stream/18446744073709551615", "/bytes/18446744073709551615"):
            with self.subTest(path=path):
                c = RawConn(server.port)
                c.send(build_request("HEAD", path))
                self.assertEqual(c.read_response("HEAD").status, 200)
                self.assert_server_ok(server)
                c.close()
                time.sleep(0.2)
                self.assert_server_ok(server)
        # Nothing is left running: the server exits on SIGTERM at once (an endless stream
        # still running would hold it back forever).
        t0 = time.monotonic()
        self.assertEqual(server.stop(signal.SIGTERM, timeout=SHUTDOWN_BOUND + 5), 0,
                         server.log_text())
        self.assertLess(time.monotonic() - t0, SHUTDOWN_BOUND)

    def test_graceful_shutdown_completes_inflight_request(self):
        server = self.start_server()
        results = {}
        t = _request_in_thread(server.port, "/delay/3000", results)
        self.assert_in_flight(server, results)
        server.send_signal(signal.SIGTERM)
        t_sig = time.monotonic()

        # The listener closes while the in-flight request is still running: a connection is
        # refused before its response has arrived.
        refused_while_running = None
        while time.monotonic() - t_sig < 10.0:
            try:
                probe = socket.create_connection((HOST, server.port), timeout=0.5)
                probe.close()
            except ConnectionRefusedError:
                refused_while_running = "end" not in results and server.proc.poll() is None
                break
            except OSError:
                pass
            time.sleep(0.05)

        t.join(15)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", results, results)
        self.assertNotIn("closed", results, "in-flight request cut off: %r" % results)
        resp = results.get("response")
        self.assertIsNotNone(resp, results)
        self.assertEqual((resp.status, resp.body), (200, b"done"))
        # One SIGTERM is enough: wait for the exit instead of signalling a process that is
        # already on its way out.
        self.assertEqual(server.wait(timeout=SHUTDOWN_BOUND), 0, server.log_text())
        self.assertIsNotNone(refused_while_running,
                             "new connections still accepted 10 s after SIGTERM")
        self.assertTrue(refused_while_running,
                        "listener not closed while the in-flight request was running")

    def test_graceful_shutdown_timeout_cuts_off_request(self):
        server = self.start_server("--timeout-graceful-shutdown", "1")
        results = {}
        # Would run for a minute: only the 1 s grace period can end it within the bound.
        t = _request_in_thread(server.port, "/delay/60000", results)
        self.assert_in_flight(server, results)
        server.send_signal(signal.SIGTERM)
        t_sig = time.monotonic()
        rc = server.wait(timeout=SHUTDOWN_BOUND + 5)
        exit_after = time.monotonic() - t_sig
        t.join(15)
        self.assertFalse(t.is_alive(), "in-flight request neither answered nor closed")
        self.assertEqual(rc, 0, "exit status %r; stderr:\n%s" % (rc, server.log_text()))
        self.assertLessEqual(exit_after, SHUTDOWN_BOUND, "took %.2f s to exit" % exit_after)
        self.assertGreaterEqual(exit_after, 0.7,
                                "exited after %.2f s, before the 1 s grace period" % exit_after)
        self.assertNotIn("error", results, results)
        resp = results.get("response")
        if resp is not None:
            self.assertNotEqual(resp.status, 200, "request completed despite the cut-off")


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

class CommandLineTests(unittest.TestCase):

    def run_httpbin(self, *args):
        return subprocess.run([HTTPBIN] + list(args), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=10)

    def test_help(self):
        p = self.run_httpbin("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertIn("usage", out.lower())
        for flag in ("--host", "--port", "--root-path", "--timeout-keep-alive", "--header"):
            self.assertIn(flag, out)

    def test_unknown_flag(self):
        p = self.run_httpbin("--port", "0", "--bogus")
        self.assertEqual(p.returncode, 2, p.stderr)
        err = p.stderr.decode("utf-8", "replace").strip()
        self.assertEqual(len(err.splitlines()), 1, "expected a one-line error, got:\n" + err)
        self.assertIn("--bogus", err)

    def test_port_not_a_number(self):
        p = self.run_httpbin("--port", "notanumber")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertTrue(p.stderr.strip(), "no error message")

    def test_missing_flag_value(self):
        p = self.run_httpbin("--port")
        self.assertEqual(p.returncode, 2, p.stderr)


# ---------------------------------------------------------------------------------------

class AcceptLimitTests(unittest.TestCase):
    """Out of file descriptors, the accept loop backs off instead of spinning or dying."""

    def test_emfile_backs_off_and_recovers(self):
        srv = Server(HTTPBIN, "--no-access-log", nofile=32)
        clients = []
        try:
            # More connections than the server has descriptors: the kernel completes them
            # all (backlog), the server accepts until EMFILE.
            for _ in range(60):
                clients.append(socket.create_connection((HOST, srv.port), timeout=IO_TIMEOUT))
            line = srv.wait_for_line(lambda l: "accept failed" in l, 10)
            self.assertIsNotNone(line, "no 'accept failed' line; stderr:\n" + srv.log_text())
            self.assertIn("retrying", line)

            # While descriptors are exhausted the server must not spin: measure its CPU.
            def cpu_ticks():
                with open("/proc/%d/stat" % srv.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])  # utime + stime
            before = cpu_ticks()
            time.sleep(1.0)
            used = cpu_ticks() - before
            hz = os.sysconf("SC_CLK_TCK")
            self.assertLess(used / hz, 0.3, "server burnt %.2f s of CPU in 1 s at EMFILE" % (used / hz))

            # Free the descriptors: the server serves again.
            for c in clients:
                c.close()
            clients = []
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline:
                try:
                    r = httpx.get(srv.url("/"), timeout=IO_TIMEOUT)
                    status = r.status_code
                    if status == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            self.assertEqual(status, 200)
            self.assertEqual(srv.stop(), 0)
        finally:
            for c in clients:
                c.close()
            srv.kill()


def main():
    args, rest = parse_args()
    global HTTPBIN, HELLO
    HTTPBIN = args.httpbin
    HELLO = args.hello
    require_executable(HTTPBIN, __file__)
    run_tests(rest)


if __name__ == "__main__":
    main()
