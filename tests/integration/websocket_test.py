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
import threading
import time
import unittest
import zlib

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


DATA_KINDS = {0x1: "text", 0x2: "binary"}
CONTROL_KINDS = {0x8: "close", 0x9: "ping", 0xA: "pong"}
OPCODES = {"text": 0x1, "binary": 0x2, "cont": 0x0, "close": 0x8, "ping": 0x9, "pong": 0xA}


def mask(payload, key):
    """payload XORed with the 4-byte key repeated (RFC 6455 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def client_frame(kind, payload=b"", fin=True, length=None, rsv1=False):
    """One frame as a client must send it (RFC 6455 5.2): masked with a random key, the
    shortest length form. kind is a key of OPCODES; length, if given, is the length
    announced in the header instead of len(payload); rsv1 marks the first frame of a
    compressed message (RFC 7692 6)."""
    n = len(payload) if length is None else length
    head = struct.pack("!B", (0x80 if fin else 0) | (0x40 if rsv1 else 0) | OPCODES[kind])
    if n < 126:
        head += struct.pack("!B", 0x80 | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


def deflated(message, compressor=None):
    """message as a permessage-deflate payload (RFC 7692 7.2.1): a raw DEFLATE stream,
    flushed, without its 00 00 ff ff tail. compressor: one kept across messages (context
    takeover)."""
    c = compressor or zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def inflated(payload, decompressor=None):
    """The message of a compressed frame from the server. decompressor: the connection's,
    kept across messages (the server keeps its window: context takeover)."""
    d = decompressor or zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


DEFLATE_OFFER = ["Sec-WebSocket-Extensions: permessage-deflate"]


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def text_of(n):
    """A str whose UTF-8 encoding is exactly n bytes, with 2-byte characters in it."""
    return "\u00e9" * (n // 2) + "a" * (n % 2)


def binary_of(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


class RawWebSocket:
    """A TCP connection that does the opening handshake by hand and reads raw frames."""

    def __init__(self, port, target, extra=(), first=b""):
        """first: bytes sent in the same write as the request, right behind its blank
        line (before the 101 can have arrived)."""
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.buf = bytearray()
        self.events = []     # whole messages and control frames read but not yet returned
        self.partial = None  # [kind, bytearray] of a fragmented message being read
        request, _ = upgrade_request(target, extra)
        self.sock.sendall(request + first)
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
        _, _, opcode, payload = self.read_frame_full()
        return opcode, payload

    def read_frame_full(self):
        """(fin, rsv bits, opcode, payload) of the next frame from the server."""
        b0, b1 = self._read_exact(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        return bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F, self._read_exact(length)

    def read_event(self):
        """The next whole thing from the server: (kind, payload) with kind "text" or
        "binary" (a whole message, its fragments joined) or "close", "ping", "pong" (a
        control frame, also when it came between a message's fragments). Fails on a frame
        RFC 6455 forbids (rsv bits without an extension, a fragmented or >125-byte control
        frame, a continuation that continues nothing, a new message inside another)."""
        while not self.events:
            fin, rsv, opcode, payload = self.read_frame_full()
            if rsv:
                raise AssertionError("rsv bits %d set on a frame (opcode %d)" % (rsv, opcode))
            if opcode & 0x8:
                if not fin or len(payload) > 125:
                    raise AssertionError("malformed control frame: fin=%r opcode=%d len=%d"
                                         % (fin, opcode, len(payload)))
                kind = CONTROL_KINDS.get(opcode)
                if kind is None:
                    raise AssertionError("unknown control opcode %d" % opcode)
                self.events.append((kind, payload))
            elif opcode == 0:
                if self.partial is None:
                    raise AssertionError("a continuation frame outside any message")
                self.partial[1] += payload
                if fin:
                    self.events.append((self.partial[0], bytes(self.partial[1])))
                    self.partial = None
            elif opcode in DATA_KINDS:
                if self.partial is not None:
                    raise AssertionError("a new message inside a fragmented one")
                if fin:
                    self.events.append((DATA_KINDS[opcode], payload))
                else:
                    self.partial = [DATA_KINDS[opcode], bytearray(payload)]
            else:
                raise AssertionError("unknown data opcode %d" % opcode)
        return self.events.pop(0)

    def read_events(self, n):
        return [self.read_event() for _ in range(n)]

    def read_until_eof(self):
        """Every event until the server closes the connection (a reset counts as closed:
        a peer may reset after its close frame)."""
        events = []
        try:
            while True:
                events.append(self.read_event())
        except (EOFError, ConnectionResetError):
            return events


def http_get(server, path):
    with httpx.Client(trust_env=False, timeout=IO_TIMEOUT) as c:
        return c.get(server.url(path))


class Sender(threading.Thread):
    """Runs fn (writes on a socket) in a thread of its own, so that the test reads the
    echoes meanwhile and neither side's buffers fill up while the other waits."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.error = None

    def run(self):
        try:
            self.fn()
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self, timeout=IO_TIMEOUT):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("the sender did not finish within %.0f s" % timeout)
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------

class ServerTestCase(unittest.TestCase):

    def start_server(self, *args):
        """A fresh server for this test only; killed at cleanup if still running."""
        server = Server(HTTPBIN, *args)
        self.addCleanup(server.kill)
        return server


class DefaultServerTestCase(ServerTestCase):
    """One httpbin with default settings for the whole class, stopped cleanly at the end."""

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


class WebSocketRouteTests(DefaultServerTestCase):
    """httpbin's /ws/* routes on one server with default settings."""

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
        self.assertEqual(scope["root_path"], "")
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
            raw.sock.settimeout(10)
            frames = []
            close_code = None
            closed_without_frame = False
            try:
                while time.monotonic() - start < 10:
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
            # Closed about 0.4 s in; the bound leaves room for a loaded machine and is far
            # below the first ping of the default 20 s interval.
            self.assertLess(elapsed, 5.0, "frames: %r" % frames)
        finally:
            raw.close()
        self.assertIsNotNone(server.wait_for_line(lambda l: "ping timeout" in l, 10), server.log_text())
        self.assertEqual(server.stop(), 0)

    def test_pings_come_every_interval_when_pongs_come_at_once(self):
        # The timeout runs from each ping and its pong ends the wait: with every pong sent
        # at once the pings keep the interval (0.2 s), not interval + timeout (4.2 s).
        server = self.start_server("--ws-ping-interval", "0.2", "--ws-ping-timeout", "4")
        raw = RawWebSocket(server.port, "/ws/echo")
        self.addCleanup(raw.close)
        self.assertEqual(raw.status, 101)
        raw.sock.settimeout(10)
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        while len(times) < 4:
            kind, payload = raw.read_event()
            self.assertEqual(kind, "ping")
            times.append(time.monotonic())
            raw.sock.sendall(client_frame("pong", payload))
        gaps = [b - a for a, b in zip(times, times[1:])]
        # Bounds on the mean: one ping read late and the next on time make one short gap.
        self.assertLess(sum(gaps) / len(gaps), 2.0, "gaps between pings: %r" % gaps)
        self.assertGreater(sum(gaps) / len(gaps), 0.1, "gaps between pings: %r" % gaps)
        raw.close()
        self.assertEqual(server.stop(), 0)

    def test_ws_scope_has_root_path(self):
        server = self.start_server("--root-path", "/api")

        async def exchange():
            async with connect(server.ws_url("/ws/scope")) as ws:
                return await asyncio.wait_for(ws.recv(), IO_TIMEOUT)

        scope = json.loads(run(exchange()))
        self.assertEqual(scope["root_path"], "/api")
        self.assertEqual(server.stop(), 0)

    def test_compressed_message_inflating_past_max_size_closes_1009(self):
        # 64 MiB of zeros deflate to 64 KiB: the limit stops the inflating, not the end.
        server = self.start_server("--ws-max-size", "1048576")
        raw = RawWebSocket(server.port, "/ws/echo", extra=DEFLATE_OFFER)
        self.addCleanup(raw.close)
        raw.sock.settimeout(3)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
        self.assertLess(len(bomb), 1048576)
        start = time.monotonic()
        sender = Sender(lambda: raw.sock.sendall(client_frame("binary", bomb[:-4], rsv1=True)))
        sender.start()
        events = raw.read_until_eof()
        sender.finish()
        self.assertEqual([k for k, _ in events], ["close"], "events: %r" % events)
        self.assertEqual(close_code(events[0][1]), 1009)
        self.assertLess(time.monotonic() - start, 2)
        raw.close()
        self.assertEqual(server.stop(), 0)

    def test_compressed_frame_over_max_size_closes_1009(self):
        # The limit holds for the bytes on the wire too: the frame's header is enough.
        server = self.start_server("--ws-max-size", "1000")
        for name, data in [
                ("one frame", client_frame("binary", os.urandom(2000), rsv1=True)),
                ("only its header", client_frame("binary", length=1001, rsv1=True)),
                ("fragments", client_frame("binary", os.urandom(600), fin=False, rsv1=True)
                 + client_frame("cont", os.urandom(600)))]:
            with self.subTest(name):
                raw = RawWebSocket(server.port, "/ws/echo", extra=DEFLATE_OFFER)
                raw.sock.settimeout(3)
                raw.sock.sendall(data)
                events = raw.read_until_eof()
                raw.close()
                self.assertEqual([k for k, _ in events], ["close"], "events: %r" % events)
                self.assertEqual(close_code(events[0][1]), 1009)
        self.assertEqual(server.stop(), 0)

    def test_close_codes_an_app_may_not_send_become_1011(self):
        # RFC 6455 7.4: an application may close with 1000-1003, 1007-1014, 3000-4999.
        server = self.start_server()
        for code, want in [(999, 1011), (1004, 1011), (1005, 1011), (1006, 1011), (1015, 1011),
                           (2000, 1011), (2999, 1011), (5000, 1011), (66536, 1011),
                           (1000, 1000), (1003, 1003), (1007, 1007), (1014, 1014),
                           (3000, 3000), (4999, 4999)]:
            with self.subTest(code=code):
                raw = RawWebSocket(server.port, "/ws/close/%d" % code)
                raw.sock.settimeout(3)
                kind, payload = raw.read_event()
                raw.sock.sendall(client_frame("close", payload[:2]))
                rest = raw.read_until_eof()
                raw.close()
                self.assertEqual((kind, close_code(payload), rest), ("close", want, []))
        self.assertEqual(server.stop(), 0)
        self.assertIn("Exception in ASGI application", server.log_text())

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


class WebSocketFramingTests(DefaultServerTestCase):
    """Raw client frames against /ws/echo: how the server's own read buffering splits the
    received bytes into messages, pings and pongs (answered by the session) and what it
    hands Beast (close frames, malformed and too-big frames)."""

    # (kind, payload): every length form (7-bit up to 125, 16-bit from 126 to 65535,
    # 64-bit from 65536), text and binary, empty messages; the last one marks the end.
    MESSAGES = [
        ("text", b""), ("binary", b""),
        ("text", text_of(1).encode()), ("binary", binary_of(1)),
        ("text", text_of(125).encode()), ("binary", binary_of(125)),
        ("text", text_of(126).encode()), ("binary", binary_of(126)),
        ("binary", binary_of(65535)), ("text", text_of(65535).encode()),
        ("binary", binary_of(65536)), ("text", text_of(70001).encode()),
        ("text", b"end"),
    ]


    def open(self, server=None, first=b""):
        raw = RawWebSocket((server or self.server).port, "/ws/echo", first=first)
        self.addCleanup(raw.close)
        self.assertEqual(raw.status, 101)
        return raw

    def assertEvents(self, got, want):
        """got == want, with a short description of both on failure (no 64 KiB dumps)."""
        def short(events):
            return [(k, len(p), p[:12]) for k, p in events]
        self.assertEqual(len(got), len(want), "got %r, want %r" % (short(got), short(want)))
        for i, (g, w) in enumerate(zip(got, want)):
            self.assertTrue(g == w, "event %d: got %r, want %r" % (i, short([g]), short([w])))

    def test_many_messages_in_one_write_all_echoed_in_order(self):
        raw = self.open()
        data = b"".join(client_frame(k, p) for k, p in self.MESSAGES)
        sender = Sender(lambda: raw.sock.sendall(data))
        sender.start()
        events = raw.read_events(len(self.MESSAGES))
        sender.finish()
        self.assertEvents(events, self.MESSAGES)

    def test_messages_trickled_byte_by_byte_all_echoed(self):
        # About 270 000 one-byte writes: a few seconds on an idle machine, several times that
        # on a loaded one. The reads wait as long as the trickling may take.
        trickle_limit = 30
        raw = self.open()
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.sock.settimeout(trickle_limit)
        frames = [client_frame(k, p) for k, p in self.MESSAGES]
        deadline = time.monotonic() + trickle_limit

        def trickle():
            for f in frames:
                for i in range(len(f)):
                    raw.sock.sendall(f[i:i + 1])
                    # Every byte of a frame's start (its header, at most 14 bytes) on its
                    # own, so the server sees headers split anywhere; a pause now and
                    # then in a long payload.
                    if i < 16 or i % 512 == 0:
                        time.sleep(0.0005)
                    if time.monotonic() > deadline:
                        raise AssertionError("trickling took more than %d s" % trickle_limit)

        sender = Sender(trickle)
        sender.start()
        events = raw.read_events(len(self.MESSAGES))
        sender.finish(timeout=trickle_limit + 5)
        self.assertEvents(events, self.MESSAGES)

    def test_each_echo_is_one_frame_with_the_shortest_length(self):
        raw = self.open()
        data = b"".join(client_frame(k, p) for k, p in self.MESSAGES)
        sender = Sender(lambda: raw.sock.sendall(data))
        sender.start()
        for kind, payload in self.MESSAGES:
            b0, b1 = raw._read_exact(2)
            n = len(payload)
            want_form = n if n < 126 else 126 if n < 1 << 16 else 127
            self.assertEqual((b0 & 0x80, b0 & 0x70, b0 & 0x0F), (0x80, 0, OPCODES[kind]),
                             "%s message of %d bytes: FIN, no RSV, its opcode" % (kind, n))
            self.assertEqual(b1, want_form, "%d bytes: unmasked, the shortest length form" % n)
            if b1 == 126:
                self.assertEqual(struct.unpack("!H", raw._read_exact(2))[0], n)
            elif b1 == 127:
                self.assertEqual(struct.unpack("!Q", raw._read_exact(8))[0], n)
            self.assertTrue(raw._read_exact(n) == payload, "payload of the %d-byte echo" % n)
        sender.finish()

    def test_echo_is_compressed_when_deflate_was_negotiated(self):
        raw = RawWebSocket(self.server.port, "/ws/echo",
                           extra=["Sec-WebSocket-Extensions: permessage-deflate"])
        self.addCleanup(raw.close)
        self.assertEqual(raw.status, 101)
        self.assertIn("permessage-deflate", raw.headers.get("sec-websocket-extensions", ""))
        message = b"a compressible line of text\n" * 300
        raw.sock.sendall(client_frame("text", message))  # a client need not compress
        fin, rsv, opcode, payload = raw.read_frame_full()
        self.assertEqual((fin, rsv, opcode), (True, 4, 0x1), "one compressed (RSV1) text frame")
        self.assertLess(len(payload), len(message) // 4)
        # RFC 7692 7.2.1: the payload is a raw DEFLATE stream without its final empty block.
        self.assertEqual(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"), message)

    def open_deflate(self):
        raw = RawWebSocket(self.server.port, "/ws/echo", extra=DEFLATE_OFFER)
        self.addCleanup(raw.close)
        self.assertEqual(raw.status, 101)
        self.assertIn("permessage-deflate", raw.headers.get("sec-websocket-extensions", ""))
        raw.sock.settimeout(3)
        raw.decompressor = zlib.decompressobj(-15)
        return raw

    def read_compressed_echo(self, raw):
        """The next message from the server, which must be one compressed frame."""
        fin, rsv, opcode, payload = raw.read_frame_full()
        if opcode == 0x8:
            return "close", payload
        self.assertEqual((fin, rsv), (True, 4), "one compressed frame (opcode %d)" % opcode)
        return DATA_KINDS[opcode], inflated(payload, raw.decompressor)

    def test_large_compressed_echo_is_one_frame(self):
        raw = self.open_deflate()
        message = os.urandom(100000)  # does not compress: about as long compressed
        sender = Sender(lambda: raw.sock.sendall(client_frame("binary", message)))
        sender.start()
        self.assertEqual(self.read_compressed_echo(raw), ("binary", message))
        sender.finish()

    def test_compressed_messages_that_inflate_past_a_read_buffer_echo_intact(self):
        # Each inflates to far more than Beast's read offers at a time; the client keeps
        # its window across messages (context takeover), as the server does.
        raw = self.open_deflate()
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        lines = b"".join(b"line %d of a very compressible message\n" % (i % 100) for i in range(5000))
        messages = [bytes(57 * 1024), lines, lines, b"x" * 300000 + b"end", b"", b"short"]
        for m in messages:
            raw.sock.sendall(client_frame("binary", deflated(m, c), rsv1=True))
            kind, echo = self.read_compressed_echo(raw)
            self.assertTrue((kind, echo) == ("binary", m), "%s: %d bytes for %d" % (kind, len(echo), len(m)))
        # A message in three fragments, only the first marked (RFC 7692 6.1).
        data = deflated(lines, c)
        raw.sock.sendall(client_frame("text", data[:10], fin=False, rsv1=True)
                         + client_frame("ping", b"p") + client_frame("cont", data[10:300], fin=False)
                         + client_frame("cont", data[300:]))
        self.assertEqual(raw.read_frame_full(), (True, 0, 0xA, b"p"))
        self.assertTrue(self.read_compressed_echo(raw) == ("text", lines))

    def test_compressed_message_that_ends_inside_a_block_closes_1007(self):
        # The payload's end with its 00 00 ff ff tail must end a block (RFC 7692 7.2.1).
        # Here the tail lands inside a stored block: read again and again it is data that
        # never ends (Beast before 1.90) or bytes the client never sent.
        for name, payload in [
                ("stored block of 65535 bytes begun", deflated(b"hello " * 20) + b"\xff\xff\x00\x00"),
                ("stored block of 5 bytes begun", deflated(b"hello " * 20) + b"\x05\x00\xfa\xff"),
                ("half a stored block header", deflated(b"x" * 4000) + b"\x00\x00")]:
            with self.subTest(name):
                raw = self.open_deflate()
                raw.sock.sendall(client_frame("binary", payload, rsv1=True))
                events = raw.read_until_eof()
                raw.close()
                self.assertEqual([k for k, _ in events], ["close"],
                                 "events: %r" % [(k, len(p)) for k, p in events])
                self.assertEqual(close_code(events[0][1]), 1007)

    def test_compressed_data_that_does_not_inflate_closes_1007(self):
        for name, kind, payload in [
                ("reserved block type 3", "binary", b"\xff\xff\xff\xff\xff"),
                ("distance too far back", "binary",
                 deflated(b"refers to a window the server never saw",
                          zlib.compressobj(6, zlib.DEFLATED, -15,
                                           zdict=b"refers to a window the server never saw"))),
                ("invalid UTF-8 text", "text", deflated(b"\xc3\x28"))]:
            with self.subTest(name):
                raw = self.open_deflate()
                raw.sock.sendall(client_frame(kind, payload, rsv1=True))
                events = raw.read_until_eof()
                raw.close()
                self.assertEqual([k for k, _ in events], ["close"], "events: %r" % events)
                self.assertEqual(close_code(events[0][1]), 1007)

    def test_compressed_message_ending_with_a_final_block_arrives(self):
        # RFC 7692 7.2.3.3: a sender may end a message with a block marked BFINAL; what
        # follows starts a new DEFLATE stream, still with the window of the messages before.
        def final(message, zdict=None):
            c = (zlib.compressobj(6, zlib.DEFLATED, -15, zdict=zdict) if zdict
                 else zlib.compressobj(6, zlib.DEFLATED, -15))
            return c.compress(message) + c.flush(zlib.Z_FINISH)

        hello = b"Hello, a final block"
        raw = self.open_deflate()
        for payload, want in [
                (b"\x03\x00", b""),                 # an empty final block
                (final(hello), hello),
                (final(hello) + b"\x00", hello),     # RFC 7692's form, with a byte to flush
                (final(hello + hello, zdict=hello), hello + hello),  # refers to the window
                (deflated(b"and then flushed as usual"), b"and then flushed as usual")]:
            raw.sock.sendall(client_frame("binary", payload, rsv1=True))
            self.assertEqual(self.read_compressed_echo(raw), ("binary", want))

    FRAGMENTED_TEXT = "fragmented h\u00e9llo w\u00f6rld, " + "x" * 200 + " \u20ac end"

    def fragmented_frames(self):
        """ping p1, a text message in three fragments (split inside a UTF-8 character,
        the middle one 16-bit length) with ping p2 between the first two, ping p3, and
        then one more message to show nothing else came back."""
        whole = self.FRAGMENTED_TEXT.encode()
        cut1 = whole.index("\u00e9".encode()) + 1  # inside the 2-byte character
        cut2 = len(whole) - 3                      # inside the 3-byte euro sign
        self.assertGreaterEqual(cut2 - cut1, 126)
        return [
            client_frame("ping", b"p1"),
            client_frame("text", whole[:cut1], fin=False),
            client_frame("ping", b"p2"),
            client_frame("cont", whole[cut1:cut2], fin=False),
            client_frame("cont", whole[cut2:], fin=True),
            client_frame("ping", b"p3"),
            client_frame("text", b"after"),
        ]

    def check_fragmented_exchange(self, raw):
        events = []
        while ("text", b"after") not in events and len(events) < 10:
            events.append(raw.read_event())
        pongs = [e for e in events if e[0] == "pong"]
        data = [e for e in events if e[0] in ("text", "binary")]
        self.assertEqual(pongs, [("pong", b"p1"), ("pong", b"p2"), ("pong", b"p3")],
                         "events: %r" % events)
        self.assertEqual(data, [("text", self.FRAGMENTED_TEXT.encode()), ("text", b"after")],
                         "events: %r" % events)
        self.assertEqual(len(events), 5, "events: %r" % events)

    def test_fragmented_message_with_pings_in_one_write(self):
        raw = self.open()
        raw.sock.sendall(b"".join(self.fragmented_frames()))
        self.check_fragmented_exchange(raw)

    def test_fragmented_message_with_pings_in_separate_writes(self):
        raw = self.open()
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for f in self.fragmented_frames():
            raw.sock.sendall(f)
            time.sleep(0.02)
        self.check_fragmented_exchange(raw)

    def test_lone_ping_gets_pong_and_lone_pong_gets_nothing(self):
        raw = self.open()
        raw.sock.settimeout(2)
        raw.sock.sendall(client_frame("ping", b"lone ping"))
        self.assertEqual(raw.read_event(), ("pong", b"lone ping"))
        raw.sock.sendall(client_frame("ping", b""))
        self.assertEqual(raw.read_event(), ("pong", b""))
        raw.sock.sendall(client_frame("ping", binary_of(125)))  # the largest control payload
        self.assertEqual(raw.read_event(), ("pong", binary_of(125)))

        raw.sock.sendall(client_frame("pong", b"unsolicited"))
        raw.sock.settimeout(0.3)
        try:
            extra = raw.sock.recv(65536)
        except socket.timeout:
            extra = None
        self.assertIsNone(extra, "the server answered an unsolicited pong with %r" % extra)
        self.assertEqual((raw.buf, raw.events), (bytearray(), []))
        raw.sock.settimeout(2)
        raw.sock.sendall(client_frame("text", b"still here"))
        self.assertEqual(raw.read_event(), ("text", b"still here"))

    def test_frames_in_the_same_write_as_the_handshake(self):
        first = client_frame("text", b"early") + client_frame("binary", b"\x00\xffearly")
        raw = self.open(first=first)
        raw.sock.settimeout(2)
        self.assertEqual(raw.read_events(2), [("text", b"early"), ("binary", b"\x00\xffearly")])

    def test_control_frame_over_125_bytes_closes_1002(self):
        raw = self.open()
        raw.sock.settimeout(3)
        frame = client_frame("ping", b"q" * 126)
        self.assertEqual(frame[1], 0x80 | 126)  # the 16-bit length form
        raw.sock.sendall(frame)
        events = raw.read_until_eof()
        self.assertEqual(len(events), 1, "events: %r" % events)
        self.assertEqual(events[0][0], "close", "events: %r" % events)
        self.assertEqual(close_code(events[0][1]), 1002, "events: %r" % events)

    def check_too_big_closes_1009_promptly(self, server, data):
        raw = self.open(server)
        raw.sock.settimeout(10)
        start = time.monotonic()
        raw.sock.sendall(data)
        first = raw.read_event()
        elapsed = time.monotonic() - start
        self.assertEqual(first[0], "close", "got %r" % (first,))
        self.assertEqual(close_code(first[1]), 1009, "close payload %r" % first[1])
        # Without the payload, which never comes: anything but a prompt close is a hang
        # (or, at best, the default 20 s keepalive's 1011).
        self.assertLess(elapsed, 5.0)
        raw.sock.settimeout(3)  # the close follows at once, not after the 5 s close timeout
        rest = raw.read_until_eof()
        self.assertEqual(rest, [])
        # Our side of the TCP close: until it, the server's teardown waits for it (and a
        # server stopped meanwhile would wait for the connection).
        raw.close()

    def test_too_big_frame_header_closes_1009_without_the_payload(self):
        # The default limit (16 MiB): a header announcing one byte more, nothing after it.
        with self.subTest("default 16 MiB, 64-bit length"):
            self.check_too_big_closes_1009_promptly(
                self.server, client_frame("binary", length=16 * 1024 * 1024 + 1))

        small = self.start_server("--ws-max-size", "1000")
        with self.subTest("1000, 16-bit length"):
            self.check_too_big_closes_1009_promptly(
                small, client_frame("binary", length=1001))
        with self.subTest("1000, 64-bit length of 8 GiB, text"):
            self.check_too_big_closes_1009_promptly(
                small, client_frame("text", length=1 << 33))
        with self.subTest("1000, fragments that only together exceed it"):
            self.check_too_big_closes_1009_promptly(
                small, client_frame("binary", b"a" * 600, fin=False)
                + client_frame("cont", b"b" * 600, fin=False))
        with self.subTest("1000, exactly the limit still echoes"):
            raw = self.open(small)
            raw.sock.settimeout(2)
            raw.sock.sendall(client_frame("binary", b"c" * 500, fin=False)
                             + client_frame("cont", b"d" * 500))
            self.assertEqual(raw.read_event(), ("binary", b"c" * 500 + b"d" * 500))
            raw.close()  # or the server's shutdown waits for it to answer its close frame
        self.assertEqual(small.stop(), 0)

    def test_malformed_frames_close_1002_or_1007(self):
        def with_first_byte(frame, fn):
            return bytes([fn(frame[0])]) + frame[1:]

        cases = [
            ("unmasked", b"\x81\x03abc", [], 1002),
            ("rsv1 without an extension",
             with_first_byte(client_frame("text", b"abc"), lambda b: b | 0x40), [], 1002),
            ("reserved data opcode 3",
             with_first_byte(client_frame("text", b"abc"), lambda b: (b & 0xF0) | 0x3), [], 1002),
            ("continuation of nothing", client_frame("cont", b"abc"), [], 1002),
            ("new message inside a fragmented one",
             client_frame("text", b"a", fin=False) + client_frame("text", b"b"), [], 1002),
            ("fragmented ping", client_frame("ping", b"ab", fin=False), [], 1002),
            ("16-bit length form for 5 bytes",
             b"\x82\xfe\x00\x05kkkk" + mask(b"hello", b"kkkk"), [], 1002),
            ("64-bit length form for 200 bytes",
             b"\x82\xff" + (200).to_bytes(8, "big") + b"kkkk" + mask(b"h" * 200, b"kkkk"), [], 1002),
            ("close payload of 1 byte", client_frame("close", b"\x03"), [], 1002),
            ("invalid UTF-8 text", client_frame("text", b"ok\xff\xfe"), [], 1007),
            ("a good message, then an unmasked one, in one write",
             client_frame("text", b"ok") + b"\x81\x03abc", [("text", b"ok")], 1002),
        ]
        for name, data, want_before, code in cases:
            with self.subTest(name):
                raw = self.open()
                raw.sock.settimeout(3)
                raw.sock.sendall(data)
                events = raw.read_until_eof()
                raw.close()
                self.assertEqual(events[:-1], want_before, "events: %r" % events)
                self.assertTrue(events and events[-1][0] == "close", "events: %r" % events)
                self.assertEqual(close_code(events[-1][1]), code, "events: %r" % events)

    def test_ping_inside_an_unfinished_message_is_answered_at_once(self):
        # RFC 6455 5.5.2: a pong as soon as is practical, even while the fragments of a
        # message are still coming.
        raw = self.open()
        raw.sock.settimeout(1.5)
        raw.sock.sendall(client_frame("text", b"abc", fin=False) + client_frame("ping", b"p2"))
        self.assertEqual(raw.read_event(), ("pong", b"p2"))
        raw.sock.sendall(client_frame("ping", b"p3") + client_frame("cont", b"def"))
        self.assertEqual(raw.read_events(2), [("pong", b"p3"), ("text", b"abcdef")])

    def test_header_errors_close_1002_at_once_even_before_the_message_ends(self):
        def with_first_byte(frame, fn):
            return bytes([fn(frame[0])]) + frame[1:]

        cases = [
            ("reserved control opcode 0xB", with_first_byte(client_frame("ping", b"x"), lambda b: (b & 0xF0) | 0xB)),
            ("unmasked, not final", b"\x01\x03abc"),
            ("reserved data opcode 3, not final",
             with_first_byte(client_frame("text", b"abc", fin=False), lambda b: (b & 0xF0) | 0x3)),
            ("continuation of nothing, not final", client_frame("cont", b"abc", fin=False)),
            ("rsv2 set, not final", with_first_byte(client_frame("text", b"abc", fin=False), lambda b: b | 0x20)),
            ("rsv1 on a continuation",
             client_frame("text", b"a", fin=False) + with_first_byte(client_frame("cont", b"b", fin=False),
                                                                     lambda b: b | 0x40)),
        ]
        for name, data in cases:
            with self.subTest(name):
                raw = self.open()
                raw.sock.settimeout(1.5)  # nothing more is sent: the answer must not wait for it
                raw.sock.sendall(data)
                events = raw.read_until_eof()
                raw.close()
                self.assertTrue(events and events[-1][0] == "close", "events: %r" % events)
                self.assertEqual(close_code(events[-1][1]), 1002, "events: %r" % events)

    def test_client_close_4001_is_echoed_then_eof(self):
        raw = self.open()
        raw.sock.settimeout(3)
        raw.sock.sendall(client_frame("close", close_payload(4001, b"x")))
        events = raw.read_until_eof()
        self.assertEqual(len(events), 1, "events: %r" % events)
        self.assertEqual(events[0][0], "close", "events: %r" % events)
        self.assertEqual(close_code(events[0][1]), 4001, "events: %r" % events)


def main():
    args, rest = parse_args()  # --hello: passed by ctest to every script; not used here
    global HTTPBIN
    HTTPBIN = args.httpbin
    require_executable(HTTPBIN, __file__)
    run_tests(rest)


if __name__ == "__main__":
    main()
