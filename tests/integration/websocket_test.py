#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box tests of cserve's WebSocket and lifespan support, through the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/websocket_test.py --httpbin PATH [--hello PATH] [unittest args]

The client is the `websockets` library (Debian's python3-websockets, 10.x), independent of
the server's Beast; where a client library would answer for us (pings, the close
handshake), a raw socket does the opening handshake by hand and reads the frames itself.
Everything talks to 127.0.0.1 only, every operation is bounded by a timeout, and a watchdog
aborts the whole run if it ever takes longer than two minutes.
"""

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import sys
import time
import unittest

import httpx
import websockets
import websockets.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, Server, parse_args, require_executable, run_tests)

HTTPBIN = None  # set in main()


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------

def run(coro, timeout=IO_TIMEOUT * 2):
    """Runs one asyncio exchange to completion, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url, **kw):
    """websockets.connect with bounded timeouts and no pings of the client's own."""
    kw.setdefault("open_timeout", IO_TIMEOUT)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("ping_interval", None)
    return websockets.connect(url, **kw)


async def expect_close(ws):
    """Reads until the connection closes; returns the ConnectionClosed exception and
    every message that arrived before it."""
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
        except websockets.exceptions.ConnectionClosed as e:
            return e, messages


def upgrade_request(target, extra=()):
    """The bytes of an opening handshake request, and its Sec-WebSocket-Key."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET %s HTTP/1.1" % target, "Host: %s" % HOST, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: 13"]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


class RawWebSocket:
    """A TCP connection that does the opening handshake by hand and reads raw frames."""

    def __init__(self, port, target, extra=()):
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.buf = bytearray()
        request, _ = upgrade_request(target, extra)
        self.sock.sendall(request)
        head = self._read_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.decode().strip().lower()] = value.decode().strip()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def _read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(delim)]
                return out
            self._recv_more()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._recv_more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_body(self, n):
        return self._read_exact(n)

    def read_frame(self):
        """(opcode, payload) of the next frame from the server (unmasked, RFC 6455 5.2)."""
        b0, b1 = self._read_exact(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        return b0 & 0x0F, self._read_exact(length)


def http_get(server, path):
    with httpx.Client(trust_env=False, timeout=IO_TIMEOUT) as c:
        return c.get(server.url(path))


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------

class ServerTestCase(unittest.TestCase):

    def start_server(self, *args):
        """A fresh server for this test only; killed at cleanup if still running."""
        server = Server(HTTPBIN, *args)
        self.addCleanup(server.kill)
        return server


class WebSocketRouteTests(ServerTestCase):
    """httpbin's /ws/* routes on one server with default settings."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(HTTPBIN)

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.server.stop()
        finally:
            cls.server.kill()
        if rc != 0:
            raise AssertionError("server exited with status %r after SIGTERM; stderr:\n%s"
                                 % (rc, cls.server.log_text()))

    def test_echo_subprotocol_text_bytes_and_1mib(self):
        big = bytes(i % 251 for i in range(1 << 20))

        async def exchange():
            async with connect(self.server.ws_url("/ws/echo"), subprotocols=["chat", "x"],
                               max_size=None) as ws:
                out = {"subprotocol": ws.subprotocol}
                await ws.send("héllo")
                out["text"] = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                await ws.send(b"\x00\x01\xff")
                out["bytes"] = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                await ws.send(big)
                out["big"] = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                return out

        out = run(exchange())
        self.assertEqual(out["subprotocol"], "chat")
        self.assertEqual(out["text"], "héllo")
        self.assertIsInstance(out["text"], str)
        self.assertEqual(out["bytes"], b"\x00\x01\xff")
        self.assertIsInstance(out["bytes"], bytes)
        self.assertEqual(len(out["big"]), len(big))
        self.assertTrue(out["big"] == big, "the 1 MiB message came back different")

    def test_stream_then_close_1000(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/stream/5")) as ws:
                return await expect_close(ws)

        closed, messages = run(exchange())
        self.assertEqual(messages, ["msg %d" % i for i in range(5)])
        self.assertIsNotNone(closed.rcvd)
        self.assertEqual(closed.rcvd.code, 1000)

    def test_close_code_and_reason(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/close/4003")) as ws:
                return await expect_close(ws)

        closed, messages = run(exchange())
        self.assertEqual(messages, [])
        self.assertIsNotNone(closed.rcvd)
        self.assertEqual(closed.rcvd.code, 4003)
        self.assertEqual(closed.rcvd.reason, "bye")

    def test_reject_is_403(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/reject")):
                pass

        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            run(exchange())
        self.assertEqual(cm.exception.status_code, 403)

    def test_deny_is_401_with_the_apps_body(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/deny")):
                pass

        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            run(exchange())
        self.assertEqual(cm.exception.status_code, 401)

        raw = RawWebSocket(self.server.port, "/ws/deny")
        try:
            self.assertEqual(raw.status, 401)
            self.assertEqual(raw.headers.get("content-length"), "6")
            self.assertEqual(raw.read_body(6), b"denied")
        finally:
            raw.close()

    def test_scope(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/scope?a=1"), subprotocols=["p1", "p2"]) as ws:
                port = ws.local_address[1]
                text = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                closed, rest = await expect_close(ws)
                return port, text, closed, rest

        local_port, text, closed, rest = run(exchange())
        scope = json.loads(text)
        self.assertEqual(scope["type"], "websocket")
        self.assertEqual(scope["scheme"], "ws")
        self.assertEqual(scope["path"], "/ws/scope")
        self.assertEqual(scope["query_string"], "a=1")
        self.assertEqual(scope["subprotocols"], ["p1", "p2"])
        self.assertEqual(scope["client"][0], HOST)
        self.assertEqual(scope["client"][1], local_port)
        self.assertEqual(rest, [])
        self.assertEqual(closed.rcvd.code, 1000)

    def test_handshake_response_headers(self):
        raw = RawWebSocket(self.server.port, "/ws/echo")
        try:
            self.assertEqual(raw.status, 101)
            self.assertEqual(raw.headers.get("upgrade", "").lower(), "websocket")
            self.assertEqual(raw.headers.get("server"), "cserve")
            self.assertIn("sec-websocket-accept", raw.headers)
        finally:
            raw.close()

    def test_permessage_deflate_negotiated_by_default(self):
        message = "a compressible line of text\n" * 8000

        async def exchange():
            async with connect(self.server.ws_url("/ws/echo"), compression="deflate") as ws:
                ext = ws.response_headers.get("Sec-WebSocket-Extensions")
                await ws.send(message)
                return ext, await asyncio.wait_for(ws.recv(), IO_TIMEOUT)

        ext, echo = run(exchange())
        self.assertIsNotNone(ext, "no sec-websocket-extensions in the 101 response")
        self.assertIn("permessage-deflate", ext)
        self.assertEqual(echo, message)

    def test_access_log_line(self):
        async def exchange():
            async with connect(self.server.ws_url("/ws/echo")) as ws:
                await ws.send("x")
                await asyncio.wait_for(ws.recv(), IO_TIMEOUT)

        run(exchange())
        line = self.server.wait_for_line(lambda l: '"WebSocket /ws/echo" [accepted]' in l, 3)
        self.assertIsNotNone(line, "no access log line; stderr:\n" + self.server.log_text())
        self.assertRegex(line, r"127\.0\.0\.1:\d+ - \"WebSocket /ws/echo\" \[accepted\]")

    def test_state_from_lifespan_startup(self):
        r = http_get(self.server, "/state")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json(), {"startup_ran": True})


class WebSocketConfigTests(ServerTestCase):
    """Flags that change WebSocket and lifespan behaviour: one server per test."""

    def test_max_size_closes_1009(self):
        server = self.start_server("--ws-max-size", "1000")

        async def exchange():
            async with connect(server.ws_url("/ws/echo"), max_size=None) as ws:
                await ws.send(b"y" * 1000)  # exactly the limit: fine
                first = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                await ws.send(b"x" * 5000)
                closed, rest = await expect_close(ws)
                return first, closed, rest

        first, closed, rest = run(exchange())
        self.assertEqual(first, b"y" * 1000)
        self.assertEqual(rest, [])
        self.assertIsNotNone(closed.rcvd, "no close frame from the server: %r" % closed)
        self.assertEqual(closed.rcvd.code, 1009)
        self.assertEqual(server.stop(), 0)

    def test_ping_timeout_closes_1011(self):
        server = self.start_server("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.2")
        raw = RawWebSocket(server.port, "/ws/echo")
        try:
            self.assertEqual(raw.status, 101)
            start = time.monotonic()
            raw.sock.settimeout(3)
            frames = []
            close_code = None
            closed_without_frame = False
            try:
                while time.monotonic() - start < 3:
                    opcode, payload = raw.read_frame()
                    frames.append((round(time.monotonic() - start, 2), opcode))
                    if opcode == 0x8:
                        close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        break
            except (EOFError, ConnectionResetError):
                closed_without_frame = True
            elapsed = time.monotonic() - start
            opcodes = [op for _, op in frames]
            self.assertIn(0x9, opcodes, "no ping frame: %r" % frames)
            self.assertLess(opcodes.index(0x9), len(opcodes) - (0 if closed_without_frame else 1))
            if not closed_without_frame:
                self.assertEqual(close_code, 1011, "frames: %r" % frames)
            self.assertLess(elapsed, 2.0, "frames: %r" % frames)
        finally:
            raw.close()
        self.assertIsNotNone(server.wait_for_line(lambda l: "ping timeout" in l, 3), server.log_text())
        self.assertEqual(server.stop(), 0)

    def test_no_deflate_flag(self):
        server = self.start_server("--ws-per-message-deflate", "false")

        async def exchange():
            async with connect(server.ws_url("/ws/echo"), compression="deflate") as ws:
                ext = ws.response_headers.get("Sec-WebSocket-Extensions")
                await ws.send("plain")
                return ext, await asyncio.wait_for(ws.recv(), IO_TIMEOUT)

        ext, echo = run(exchange())
        self.assertIsNone(ext)
        self.assertEqual(echo, "plain")
        self.assertEqual(server.stop(), 0)

    def test_ws_none_serves_upgrades_as_http(self):
        server = self.start_server("--ws", "none")
        raw = RawWebSocket(server.port, "/ws/echo")
        try:
            self.assertEqual(raw.status, 404)  # httpbin has no HTTP route at /ws/echo
            self.assertEqual(raw.read_body(int(raw.headers["content-length"])), b"Not Found")
        finally:
            raw.close()

        async def exchange():
            async with connect(server.ws_url("/ws/echo")):
                pass

        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            run(exchange())
        self.assertEqual(cm.exception.status_code, 404)
        self.assertEqual(server.stop(), 0)

    def test_sigterm_closes_open_websocket_with_1012(self):
        server = self.start_server()

        async def exchange():
            async with connect(server.ws_url("/ws/echo")) as ws:
                await ws.send("before")
                echo = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                server.proc.send_signal(signal.SIGTERM)
                closed, rest = await expect_close(ws)
                return echo, closed, rest

        echo, closed, rest = run(exchange())
        self.assertEqual(echo, "before")
        self.assertEqual(rest, [])
        self.assertIsNotNone(closed.rcvd, "no close frame: %r" % closed)
        self.assertEqual(closed.rcvd.code, 1012)
        rc = server.wait()
        self.assertEqual(rc, 0, "exit status %r; stderr:\n%s" % (rc, server.log_text()))

    def test_lifespan_off(self):
        server = self.start_server("--lifespan", "off")
        r = http_get(server, "/state")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json(), {"startup_ran": False})
        self.assertNotIn("Waiting for application startup", server.log_text())
        self.assertEqual(server.stop(), 0)

    def test_lifespan_log_lines(self):
        server = self.start_server()
        self.assertIsNotNone(server.wait_for_line(lambda l: "Application startup complete." in l, 1),
                             server.log_text())
        self.assertEqual(server.stop(), 0)
        log = server.log_text()
        self.assertIn("Waiting for application shutdown.", log)
        self.assertIn("Application shutdown complete.", log)


def main():
    args, rest = parse_args()  # --hello: passed by ctest to every script; not used here
    global HTTPBIN
    HTTPBIN = args.httpbin
    require_executable(HTTPBIN, __file__)
    run_tests(rest)


if __name__ == "__main__":
    main()
