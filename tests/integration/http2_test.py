#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box tests of cserve's HTTP/2 (on nghttp2), driven through the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/http2_test.py --httpbin PATH --hello PATH [unittest args]

(--hello is accepted for the shared command line and not used.) The TLS tests make a
self-signed certificate for 127.0.0.1 with the `openssl` command in a temporary directory.

Clients: curl (--http2-prior-knowledge, --http2 for Upgrade: h2c, and ALPN over TLS), h2load
(many streams over a few connections), Python's `h2` library over raw sockets for ordinary
frame-level exchanges (it checks what the server sends: flow control, header validity, the
stream states), and frames written by hand (struct + hpack) for what a well-behaved library
refuses to produce.

Covers: the three ways in (prior knowledge, Upgrade: h2c with and without a request body,
ALPN h2 over TLS) and the ASGI scope of a stream (http_version "2", :authority as a host
header, scheme); many concurrent streams on one connection, each checked byte for byte; HEAD;
application failures before and after the response started (500, RST_STREAM INTERNAL_ERROR,
the connection going on); a 5 MiB upload and an 8 MiB download through flow control, a
download through a 1 KiB client window opened slowly, and the request body window of a
stream whose application does not read (never more than the initial 65535 bytes); a client
RST_STREAM mid-response (the other streams unaffected, the application sees the disconnect);
protocol errors (DATA on stream 0, upper-case header names, missing pseudo-headers,
connection-specific headers, even stream ids, bad frame sizes, a bad preface) answered with
RST_STREAM or GOAWAY PROTOCOL_ERROR; the rapid reset, PING, SETTINGS and CONTINUATION floods
ending the connection; a connection error while a stream's application still waits (for its
body, for the client's window, for a disconnect): the connection must still end, and SIGTERM
still stop the server; --max-header-bytes (SETTINGS_MAX_HEADER_LIST_SIZE, 431 on the stream),
--limit-request-body (413), --http2-max-concurrent-streams (advertised and enforced),
--http2-max-requests (GOAWAY after the last), --timeout-keep-alive (GOAWAY on an idle
connection); --no-http2 (505 for a preface, Upgrade: h2c ignored, ALPN h2 refused); h2load
over cleartext and TLS; a graceful shutdown (SIGTERM) with a stream in flight. WebSocket over
HTTP/2 (RFC 8441), its frames written by the test: the setting advertised (not with --ws
none), echo through the stream's flow control, fragments and pings, the scope, subprotocols,
permessage-deflate, denials (403, the application's own response), 501 for other CONNECTs,
close codes and END_STREAM, many WebSockets and requests on one connection, a client's reset
or END_STREAM, --ws-max-size (1009), SIGTERM (1012, then GOAWAY). PING liveness: a peer that
acknowledges stays, one that does not is dropped after --ws-ping-timeout. After every
test the servers' logs are checked for sanitizer reports.

Every test talks to 127.0.0.1 only, every socket and subprocess operation is bounded by a
timeout, and a watchdog aborts the whole run if it ever takes too long.
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    EXIT_TIMEOUT, HOST, IO_TIMEOUT, RUN_TIMEOUT, CheckedServer, env_with, parse_args,
    require_executable, run_tests, wait_until)

# Set from the command line in main().
HTTPBIN = None

# The whole run (an ASan build is about three times slower than a release one).
WATCHDOG = 200


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)

# SETTINGS parameters.
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS, \
    SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = \
    range(1, 7)

MIB = 1024 * 1024


def expected_bytes(n):
    """The body of GET /bytes/{n}."""
    pattern = bytes(ord("a") + i % 26 for i in range(26))
    return (pattern * (n // 26 + 1))[:n]


def expected_stream(n):
    """The body of GET /stream/{n}."""
    return b"".join(b"chunk %d\n" % i for i in range(n))


def request_headers(path, method="GET", authority="x", scheme="http", extra=()):
    return [(":method", method), (":path", path), (":scheme", scheme),
            (":authority", authority)] + list(extra)


# ---------------------------------------------------------------------------------------
# curl and h2load
# ---------------------------------------------------------------------------------------

def curl(*args, timeout=RUN_TIMEOUT):
    """`curl -sS --max-time ... args...`: (exit status, stdout as bytes, stderr as text)."""
    r = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout) - 1)] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def curl_body_and_version(*args):
    """curl's body and %{http_version} (written by -w after a marker)."""
    rc, out, err = curl("-w", "\n@@http_version=%{http_version}", *args)
    assert rc == 0, "curl %r failed (%d): %s" % (args, rc, err)
    body, _, version = out.rpartition(b"\n@@http_version=")
    return body, version.decode()


def nghttp(*args, timeout=RUN_TIMEOUT, data=None):
    """`nghttp args...` (nghttp2's client): (exit status, stdout as bytes, stderr as text)."""
    r = subprocess.run(["nghttp", "-t", str(int(timeout) - 1)] + list(args),
                       input=data, stdin=None if data is not None else subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


H2LOAD_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored")
H2LOAD_STATUS_RE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load(url, *args, timeout=40):
    """Runs h2load; (total, started, done, succeeded, failed, errored), 2xx count, output."""
    r = subprocess.run(["h2load"] + list(args) + [url], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    m = H2LOAD_RE.search(out)
    s = H2LOAD_STATUS_RE.search(out)
    assert m and s, "h2load printed no summary (%d): %s" % (r.returncode, out)
    return tuple(int(x) for x in m.groups()), int(s.group(1)), out


# ---------------------------------------------------------------------------------------
# An HTTP/2 client on Python's h2 library
# ---------------------------------------------------------------------------------------

class H2Response:
    """What came back on one stream."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.status = None       # int, from :status
        self.headers = []        # [(name, value)] without :status
        self.body = bytearray()
        self.data_frames = []    # the size of every DATA frame's data
        self.trailers = None
        self.informational = []  # [(status, headers)] of 1xx responses
        self.ended = False       # END_STREAM from the server
        self.reset = None        # the error code of a RST_STREAM from the server
        self.client_reset = None  # the error code of h2's own reset (the server erred)

    @property
    def done(self):
        return self.ended or self.reset is not None or self.client_reset is not None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return ("<stream %d: status %r, %d body bytes %r, ended %s, reset %r, client reset "
                "%r, headers %r>" % (self.stream_id, self.status, len(self.body),
                                     bytes(self.body[:80]), self.ended, self.reset,
                                     self.client_reset, self.headers))


class ConnectionClosed(Exception):
    """The server closed the connection while the client waited for something."""


class H2Client:
    """One HTTP/2 connection through Python's h2 library, by prior knowledge (or over a
    given socket, such as a TLS one with ALPN h2). Every received DATA frame is acknowledged
    (its window handed back) unless auto_ack is false."""

    def __init__(self, port=None, *, sock=None, settings=None, auto_ack=True, config=None,
                 start=True):
        self.sock = sock or socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.sock.settimeout(IO_TIMEOUT)
        # Frames go out as they are made (as curl and nghttp do): with Nagle's algorithm a
        # small frame waits for the ACK of the previous one.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(config or h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True,
                                                            initial_values=settings)
        self.auto_ack = auto_ack
        self.responses = {}
        self.events = []
        self.goaway = None          # the ConnectionTerminated event, once one came
        self.closed = False         # the server closed the TCP connection
        self.remote_settings = {}   # what the server's SETTINGS frames said
        self.window_updates = []    # (stream id, increment) of every WINDOW_UPDATE received
        if start:
            self.conn.initiate_connection()
            self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def feed(self, data):
        for e in self.conn.receive_data(data):
            self.handle(e)
        self.flush()

    def handle(self, e):
        self.events.append(e)
        sid = getattr(e, "stream_id", None)
        r = self.responses.get(sid) if sid else None
        if isinstance(e, h2.events.ResponseReceived):
            for k, v in e.headers:
                if k == ":status":
                    r.status = int(v)
                else:
                    r.headers.append((k, v))
        elif isinstance(e, h2.events.DataReceived):
            if r is not None:
                r.body += e.data
                r.data_frames.append(len(e.data))
            if self.auto_ack and e.flow_controlled_length:
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.InformationalResponseReceived):
            hdrs = [(k, v) for k, v in e.headers if k != ":status"]
            r.informational.append((int(dict(e.headers)[":status"]), hdrs))
        elif isinstance(e, h2.events.TrailersReceived):
            r.trailers = list(e.headers)
        elif isinstance(e, h2.events.StreamEnded):
            r.ended = True
        elif isinstance(e, h2.events.StreamReset):
            if r is not None and e.remote_reset:
                r.reset = e.error_code
            elif r is not None:
                r.client_reset = e.error_code
        elif isinstance(e, h2.events.ConnectionTerminated):
            self.goaway = e
        elif isinstance(e, h2.events.RemoteSettingsChanged):
            for k, v in e.changed_settings.items():
                self.remote_settings[int(k)] = v.new_value
        elif isinstance(e, h2.events.WindowUpdated):
            self.window_updates.append((e.stream_id, e.delta))

    def pump(self, timeout=IO_TIMEOUT):
        """Reads what the server sends (one recv), handles it; False on EOF or reset.
        Raises socket.timeout if nothing comes within timeout."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.feed(data)
        return True

    def pump_for(self, seconds):
        """Handles whatever comes for `seconds` (stops early at EOF)."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self.pump(remaining)
            except socket.timeout:
                return

    def wait_for(self, pred, timeout=IO_TIMEOUT, what="the condition"):
        """Pumps until pred() is true; fails (AssertionError) after timeout or at EOF."""
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: not within %.1f s; streams: %r; goaway: %r"
                                     % (what, timeout, self.responses, self.goaway))
            try:
                if not self.pump(remaining) and not pred():
                    raise ConnectionClosed("%s: the server closed the connection; streams: "
                                           "%r; goaway: %r" % (what, self.responses, self.goaway))
            except socket.timeout:
                pass

    def wait_closed(self, timeout=IO_TIMEOUT):
        """Pumps until the server closes the connection; True if it did within timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.pump(remaining)
            except socket.timeout:
                return False
        return True

    def start(self, path, method="GET", extra=(), end_stream=True, authority="x"):
        """Sends a request's HEADERS; its stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = H2Response(sid)
        self.conn.send_headers(sid, request_headers(path, method, authority, extra=extra),
                               end_stream=end_stream)
        self.flush()
        return sid

    def send_bodies(self, bodies, chunk=16384, timeout=IO_TIMEOUT * 3):
        """Sends {stream id: body} interleaved, chunk bytes of each in turn, each as far as
        the server's windows allow (pumping for WINDOW_UPDATEs), and ends the streams. The
        rest of a body whose stream the server resets is dropped (the test sees the reset)."""
        left = {sid: memoryview(body) for sid, body in bodies.items()}
        deadline = time.monotonic() + timeout
        while left:
            progress = False
            for sid in list(left):
                r = self.responses[sid]
                if r.reset is not None or r.client_reset is not None:
                    del left[sid]
                    continue
                rest = left[sid]
                if not rest:
                    self.conn.end_stream(sid)
                    del left[sid]
                    progress = True
                    continue
                n = min(len(rest), chunk, self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size)
                if n > 0:
                    self.conn.send_data(sid, rest[:n].tobytes(), end_stream=n == len(rest))
                    left[sid] = rest[n:]
                    if n == len(rest):
                        del left[sid]
                    progress = True
            self.flush()
            if not progress:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the server's windows did not open within %.0f s "
                                         "(%r bytes left)" % (timeout, {k: len(v) for k, v
                                                                        in left.items()}))
                try:
                    if not self.pump(min(remaining, IO_TIMEOUT)):
                        raise ConnectionClosed("the server closed the connection while a "
                                               "body was sent; goaway %r" % self.goaway)
                except socket.timeout:
                    raise AssertionError("the server's windows stayed closed for %.0f s "
                                         "(%r bytes left)" % (IO_TIMEOUT, {
                                             k: len(v) for k, v in left.items()}))
            else:
                # Read what is there without waiting (the echoed body, WINDOW_UPDATEs).
                while not self.closed and select.select([self.sock], [], [], 0)[0]:
                    if not self.pump(IO_TIMEOUT):
                        break

    def request(self, path, method="GET", extra=(), body=None, timeout=IO_TIMEOUT,
                authority="x"):
        """One request on its own stream, waited for: its H2Response."""
        sid = self.start(path, method, extra, end_stream=body is None, authority=authority)
        if body is not None:
            self.send_bodies({sid: body})
        self.wait_for(lambda: self.responses[sid].done, timeout, "stream %d (%s %s)"
                      % (sid, method, path))
        return self.responses[sid]

    def wait_all(self, sids, timeout=IO_TIMEOUT):
        self.wait_for(lambda: all(self.responses[s].done for s in sids), timeout,
                      "streams %s" % sorted(sids))


# ---------------------------------------------------------------------------------------
# WebSocket over HTTP/2 (RFC 8441): frames written by the test
# ---------------------------------------------------------------------------------------

WS_CONT, WS_TEXT, WS_BINARY = 0, 1, 2
WS_CLOSE, WS_PING, WS_PONG = 8, 9, 10
SETTINGS_ENABLE_CONNECT_PROTOCOL = 8


def ws_frame(opcode, payload=b"", fin=True, rsv1=False):
    """A client frame (masked, RFC 6455 §5.2)."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class H2WebSocket:
    """A WebSocket on one stream of an H2Client: the extended CONNECT, then RFC 6455 frames
    in DATA frames, parsed from the stream's body as it arrives."""

    def __init__(self, client, path, extra=(), scheme="http"):
        self.c = client
        self.sid = client.conn.get_next_available_stream_id()
        self.r = client.responses[self.sid] = H2Response(self.sid)
        client.conn.send_headers(self.sid, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", scheme),
            (":path", path), (":authority", "x"), ("sec-websocket-version", "13")]
            + list(extra))
        client.flush()
        self.pos = 0  # what of the stream's body has been parsed into frames

    def response(self, timeout=IO_TIMEOUT):
        """Waits for the response's HEADERS: the status."""
        self.c.wait_for(lambda: self.r.status is not None or self.r.done, timeout,
                        "the response to the extended CONNECT")
        return self.r.status

    def send(self, opcode, payload=b"", fin=True, rsv1=False, timeout=IO_TIMEOUT * 3):
        """Sends one frame, in DATA frames as the stream's window allows."""
        data = memoryview(ws_frame(opcode, payload, fin, rsv1))
        deadline = time.monotonic() + timeout
        while data:
            n = min(len(data), self.c.conn.local_flow_control_window(self.sid),
                    self.c.conn.max_outbound_frame_size)
            if n > 0:
                self.c.conn.send_data(self.sid, data[:n].tobytes())
                self.c.flush()
                data = data[n:]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the stream's window stayed shut")
            try:
                self.c.pump(min(remaining, IO_TIMEOUT))
            except socket.timeout:
                pass

    def _next(self):
        """The next whole server frame in the body (opcode, fin, rsv1, payload), or None."""
        b = self.r.body
        p = self.pos
        if len(b) - p < 2:
            return None
        first, second = b[p], b[p + 1]
        assert not second & 0x80, "a masked server frame"
        n, head = second & 0x7f, 2
        if n == 126:
            if len(b) - p < 4:
                return None
            n, head = struct.unpack("!H", b[p + 2:p + 4])[0], 4
        elif n == 127:
            if len(b) - p < 10:
                return None
            n, head = struct.unpack("!Q", b[p + 2:p + 10])[0], 10
        if len(b) - p < head + n:
            return None
        self.pos = p + head + n
        return first & 0x0f, bool(first & 0x80), bool(first & 0x40), bytes(b[p + head:p + head + n])

    def recv(self, timeout=IO_TIMEOUT):
        """The next frame from the server; pings are answered."""
        while True:
            f = [None]

            def got():
                f[0] = self._next()
                return f[0] is not None

            self.c.wait_for(lambda: got() or self.r.done, timeout, "a WebSocket frame")
            if f[0] is None:
                f[0] = self._next()
            if f[0] is None:
                raise ConnectionClosed("the stream ended: %r" % self.r)
            if f[0][0] == WS_PING:
                self.send(WS_PONG, f[0][3])
                continue
            return f[0]

    def end(self):
        """Ends the client's side of the stream."""
        self.c.conn.end_stream(self.sid)
        self.c.flush()


# ---------------------------------------------------------------------------------------
# Frames by hand
# ---------------------------------------------------------------------------------------

def frame(ftype, flags, sid, payload=b""):
    """The bytes of one frame."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


class Frame:
    def __init__(self, ftype, flags, sid, payload, headers=None):
        self.type = ftype
        self.flags = flags
        self.sid = sid
        self.payload = payload
        self.headers = headers    # decoded, for HEADERS (and its CONTINUATIONs)

    @property
    def error_code(self):
        """RST_STREAM's error code, or GOAWAY's."""
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        return None

    @property
    def last_stream_id(self):
        return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF

    def settings(self):
        return {k: v for k, v in (struct.unpack(">HI", self.payload[i:i + 6])
                                  for i in range(0, len(self.payload), 6))}

    def __repr__(self):
        name = FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else str(self.type)
        extra = ""
        if self.type in (RST_STREAM, GOAWAY):
            extra = " error %d" % self.error_code
            if self.type == GOAWAY:
                extra += " last %d %r" % (self.last_stream_id, self.payload[8:100])
        elif self.headers is not None:
            extra = " %r" % self.headers
        elif self.type == DATA:
            extra = " %d bytes" % len(self.payload)
        return "<%s flags 0x%x stream %d%s>" % (name, self.flags, self.sid, extra)


class RawH2:
    """A TCP connection speaking HTTP/2 frame by frame: the preface and a SETTINGS frame
    (unless preface is False) are sent at once; what is sent is up to the test, what comes
    back is parsed into Frames (HEADERS decoded with HPACK)."""

    def __init__(self, port, settings=b"", preface=True, rcvbuf=None, timeout=IO_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((HOST, port))
        except BaseException:
            self.sock.close()
            raise
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.frames = []       # every frame received
        self.eof = False
        self._header_block = None
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def headers_frame(self, sid, hdrs, end_stream=True, end_headers=True):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, self.enc.encode(hdrs))

    def get(self, sid, path, extra=()):
        """Sends GET path on stream sid (HEADERS with END_STREAM)."""
        self.send(self.headers_frame(sid, request_headers(path, extra=extra)))

    def read_frame(self, timeout=IO_TIMEOUT):
        """The next frame (a HEADERS frame with its CONTINUATIONs joined and decoded), or
        None at EOF (or a reset). Raises socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                    payload = bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    f = Frame(ftype, flags, sid & 0x7FFFFFFF, payload)
                    f = self._headers(f)
                    if f is None:
                        continue
                    self.frames.append(f)
                    return f
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no frame within %.1f s" % timeout)
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def _headers(self, f):
        if f.type == HEADERS:
            p = f.payload
            pad = 0
            if f.flags & PADDED:
                pad = p[0]
                p = p[1:]
            if f.flags & PRIORITY_FLAG:
                p = p[5:]
            p = p[:len(p) - pad]
            if not f.flags & END_HEADERS:
                self._header_block = (f, p)
                return None
            f.headers = self.dec.decode(p)
            return f
        if f.type == CONTINUATION and self._header_block:
            first, p = self._header_block
            p += f.payload
            if not f.flags & END_HEADERS:
                self._header_block = (first, p)
                return None
            self._header_block = None
            first.headers = self.dec.decode(p)
            first.flags |= END_HEADERS
            return first
        return f

    def read_until(self, pred, timeout=IO_TIMEOUT):
        """Frames until (and with) the first for which pred is true, or until EOF or the
        timeout: (that frame or None, every frame read)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, seen
            try:
                f = self.read_frame(remaining)
            except socket.timeout:
                return None, seen
            if f is None:
                return None, seen
            seen.append(f)
            if pred(f):
                return f, seen

    def read_to_eof(self, timeout=IO_TIMEOUT):
        """Every frame until EOF: (whether EOF came within timeout, the frames)."""
        _, seen = self.read_until(lambda f: False, timeout)
        return self.eof, seen

    def response(self, sid, timeout=IO_TIMEOUT):
        """(status, body, the stream's RST_STREAM error code or None, frames seen) once
        stream sid ends (END_STREAM or RST_STREAM); a WINDOW_UPDATE goes back for every DATA
        frame. Fails if the connection ends first."""
        status, body, reset = None, b"", None
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("stream %d: no end within %.1f s: %r" % (sid, timeout, seen))
            try:
                f = self.read_frame(remaining)
            except socket.timeout:
                continue
            if f is None:
                raise ConnectionClosed("stream %d: the connection ended: %r" % (sid, seen))
            seen.append(f)
            if f.type == DATA and f.payload:
                self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(f.payload)))
                          + frame(WINDOW_UPDATE, 0, f.sid, struct.pack(">I", len(f.payload))))
            if f.sid != sid:
                continue
            if f.type == HEADERS and f.headers:
                for k, v in f.headers:
                    if k == ":status":
                        status = int(v)
            elif f.type == DATA:
                body += f.payload
            elif f.type == RST_STREAM:
                return status, body, f.error_code, seen
            if f.type in (HEADERS, DATA) and f.flags & END_STREAM:
                return status, body, reset, seen


def goaways(frames):
    return [f for f in frames if f.type == GOAWAY]


# ---------------------------------------------------------------------------------------
# Certificates, for the TLS tests
# ---------------------------------------------------------------------------------------

CERT_DIR = None


def make_certificate():
    """A self-signed EC certificate for 127.0.0.1 and localhost: (cert path, key path)."""
    global CERT_DIR
    if CERT_DIR is None:
        CERT_DIR = tempfile.mkdtemp(prefix="cserve-http2-test-")
    cert = os.path.join(CERT_DIR, "server.pem")
    key = os.path.join(CERT_DIR, "server.key")
    if not os.path.exists(cert):
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError("openssl req failed (%d): %s" % (r.returncode, r.stderr))
    return cert, key


def tearDownModule():  # noqa: N802 -- unittest's name
    if CERT_DIR is not None:
        shutil.rmtree(CERT_DIR, ignore_errors=True)


def tls_context(alpn, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(alpn)
    return ctx


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------

class Httpbin(CheckedServer):
    def __init__(self, *args):
        super().__init__(HTTPBIN, *args, env=env_with(), no_core=True)



class H2TestCase(unittest.TestCase):
    """A test with servers of its own (start()), checked afterwards: alive (until stopped),
    no sanitizer report in the log."""

    def start(self, *args):
        srv = Httpbin(*args)
        self.addCleanup(self._check_and_kill, srv)
        return srv

    def _check_and_kill(self, srv):
        try:
            self.assert_healthy(srv, stopped_ok=True)
        finally:
            srv.kill()

    def assert_healthy(self, srv, stopped_ok=False):
        report = srv.sanitizer_report()
        self.assertIsNone(report, "a sanitizer report in the server's log:\n%s" % report)
        if not stopped_ok:
            self.assertIsNone(srv.proc.poll(), "the server exited (%r); log:\n%s"
                              % (srv.proc.poll(), srv.log_text(last=50)))

    def stop_ok(self, srv):
        self.assertEqual(srv.stop(), 0, srv.log_text(last=50))

    def assert_serves(self, port, msg=""):
        """A new prior-knowledge connection gets /bytes/1000 right."""
        with H2Client(port) as c:
            r = c.request("/bytes/1000")
            self.assertEqual((r.status, bytes(r.body)), (200, expected_bytes(1000)),
                             msg or repr(r))


class SharedServerTestCase(H2TestCase):
    """One httpbin (SERVER_ARGS) for the whole class, checked after every test."""

    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Httpbin(*cls.SERVER_ARGS)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop_checked()

    def tearDown(self):
        self.assert_healthy(self.server)

    @property
    def port(self):
        return self.server.port

    def url(self, path):
        return "http://%s:%d%s" % (HOST, self.port, path)


# ---------------------------------------------------------------------------------------
# Negotiation: prior knowledge, Upgrade: h2c
# ---------------------------------------------------------------------------------------

class NegotiationTests(SharedServerTestCase):

    def test_prior_knowledge_curl_scope_and_host_header(self):
        body, version = curl_body_and_version("--http2-prior-knowledge", self.url("/scope"))
        self.assertEqual(version, "2")
        scope = json.loads(body)
        self.assertEqual(scope["http_version"], "2")
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["path"], "/scope")
        self.assertNotIn("tls", scope)
        body, version = curl_body_and_version("--http2-prior-knowledge",
                                              self.url("/headers"))
        self.assertEqual(version, "2")
        headers = json.loads(body)["headers"]
        # :authority stands in for Host; no pseudo-header reaches the application.
        self.assertIn(["host", "%s:%d" % (HOST, self.port)], headers)
        self.assertEqual([h for h in headers if h[0].startswith(":")], [])
        self.assertIn("GET /scope HTTP/2", self.server.log_text())

    def test_h2_library_scope_query_and_authority(self):
        with H2Client(self.port) as c:
            r = c.request("/scope?a=1&b=%20", authority="example.test:8443")
            self.assertEqual(r.status, 200, r)
            scope = json.loads(bytes(r.body))
            self.assertEqual(scope["http_version"], "2")
            self.assertEqual(scope["query_string"], "a=1&b=%20")
            self.assertEqual(scope["client"], [HOST, c.sock.getsockname()[1]])
            self.assertEqual(scope["server"], [HOST, self.port])
            r = c.request("/headers", extra=[("x-one", "1"), ("x-two", "2")],
                          authority="example.test:8443")
            headers = json.loads(bytes(r.body))["headers"]
            self.assertEqual(headers, [["host", "example.test:8443"], ["x-one", "1"],
                                       ["x-two", "2"]])
            self.assertEqual(r.header("content-type"), "application/json")
            self.assertEqual(r.header("content-length"), str(len(r.body)))
            self.assertEqual(r.header("server"), "cserve")

    def test_upgrade_h2c_curl_get(self):
        body, version = curl_body_and_version("--http2", self.url("/scope"))
        self.assertEqual(version, "2")
        self.assertEqual(json.loads(body)["http_version"], "2")
        # curl 7.88 keeps only 32 KiB of what follows the 101: stream 1's response waits for
        # the client's preface, so a large one does not arrive with the 101.
        for _ in range(5):
            body, version = curl_body_and_version("--http2", self.url("/bytes/100000"))
            self.assertEqual(version, "2")
            self.assertTrue(body == expected_bytes(100000), "the body of /bytes/100000 differs")

    def test_upgrade_h2c_curl_post_body_is_echoed(self):
        # curl sends the body with the upgrade request (Content-Length, over HTTP/1.1).
        payload = b"hello over an upgraded connection " * 10
        body, version = curl_body_and_version("--http2", "--data-binary", payload,
                                              "-H", "content-type: application/x-test",
                                              self.url("/echo"))
        self.assertEqual(version, "2")
        self.assertEqual(body, payload, "the upgraded request's body did not reach the "
                         "application (stream 1)")
        body, version = curl_body_and_version("--http2", "--data-binary", payload,
                                              self.url("/upload"))
        self.assertEqual(version, "2")
        self.assertEqual(json.loads(body), {"bytes": len(payload)})

    def upgrade(self, method, path, body=b"", extra=b"", port=None):
        """An HTTP/1.1 request with Upgrade: h2c and h2's HTTP2-Settings on a new socket (to
        the shared server unless `port`): (the status line, an H2Client on the upgraded
        connection or None)."""
        c = H2Client(sock=socket.create_connection((HOST, port or self.port),
                                                   timeout=IO_TIMEOUT), start=False)
        settings = c.conn.initiate_upgrade_connection().decode()
        req = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               "Upgrade: h2c\r\nHTTP2-Settings: %s\r\n" % (method, path, settings)).encode()
        if body or method == "POST":
            req += b"Content-Length: %d\r\n" % len(body)
        c.sock.sendall(req + extra + b"\r\n" + body)
        head = b""
        while b"\r\n\r\n" not in head:
            data = c.sock.recv(65536)
            if not data:
                raise ConnectionClosed("no answer to the upgrade request: %r" % head)
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n")[0].decode()
        if " 101 " not in status_line + " ":
            return head.decode("latin-1"), c, rest
        c.responses[1] = H2Response(1)
        c.flush()           # the preface and SETTINGS
        if rest:
            c.feed(rest)
        return head.decode("latin-1"), c, None

    def test_upgrade_h2c_by_hand_with_body(self):
        body = os.urandom(40000)
        head, c, _ = self.upgrade("POST", "/echo", body)
        with c:
            self.assertTrue(head.startswith("HTTP/1.1 101 Switching Protocols"), head)
            self.assertRegex(head.lower(), r"\r\nupgrade: h2c(\r\n|$)")
            c.wait_all([1], IO_TIMEOUT * 2)
            r = c.responses[1]
            self.assertEqual(r.status, 200, r)
            self.assertEqual(len(r.body), len(body), "stream 1 echoed %d of %d bytes"
                             % (len(r.body), len(body)))
            self.assertTrue(bytes(r.body) == body, "the echoed body differs")
            # The connection goes on as HTTP/2.
            r = c.request("/bytes/10")
            self.assertEqual(bytes(r.body), b"abcdefghij")

    def test_upgrade_h2c_by_hand_get_then_more_streams(self):
        head, c, _ = self.upgrade("GET", "/scope")
        with c:
            self.assertTrue(head.startswith("HTTP/1.1 101 "), head)
            c.wait_all([1])
            r = c.responses[1]
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(bytes(r.body))["http_version"], "2")
            sids = [c.start("/bytes/%d" % n) for n in (1, 70000, 3)]
            c.wait_all(sids)
            for sid, n in zip(sids, (1, 70000, 3)):
                self.assertEqual(bytes(c.responses[sid].body), expected_bytes(n))
        # HEAD upgraded: headers only.
        head, c, _ = self.upgrade("HEAD", "/bytes/500")
        with c:
            self.assertTrue(head.startswith("HTTP/1.1 101 "), head)
            c.wait_all([1])
            r = c.responses[1]
            self.assertEqual((r.status, r.header("content-length"), bytes(r.body)),
                             (200, "500", b""), r)

    def test_upgrade_counts_once_against_limit_max_requests(self):
        srv = self.start("--limit-max-requests", "2")
        head, c, _ = self.upgrade("GET", "/bytes/5", port=srv.port)
        with c:
            self.assertTrue(head.startswith("HTTP/1.1 101 "), head)
            c.wait_all([1])
            self.assertEqual(bytes(c.responses[1].body), b"abcde")
            self.assertIsNone(c.goaway, "the upgraded request was counted twice")
            # The server's second request: served, then the server drains and exits (its
            # GOAWAY comes before the response, which h2 then refuses to read).
            c.start("/bytes/3")
            try:
                c.wait_closed()
            except h2.exceptions.ProtocolError:
                pass
        self.assertEqual(srv.wait(EXIT_TIMEOUT), 0, srv.log_text(last=30))
        self.assertIn('"GET /bytes/3 HTTP/2" 200', srv.log_text())

    def test_upgrade_with_large_or_chunked_body_stays_http11(self):
        # More than 64 KiB: served over HTTP/1.1, no 101.
        body = os.urandom(100000)
        head, c, rest = self.upgrade("POST", "/upload", body)
        with c:
            self.assertTrue(head.startswith("HTTP/1.1 200"), head)
            m = re.search(r"(?i)\r\ncontent-length: (\d+)", head)
            while len(rest) < int(m.group(1)):
                rest += c.sock.recv(65536)
            self.assertEqual(json.loads(rest), {"bytes": 100000})
        # Chunked: the same.
        sock = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        with sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                         b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__"
                         b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            data = b""
            while b'{"bytes": 5}' not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            self.assertIn(b'{"bytes": 5}', data)

    def test_upgrade_with_bad_http2_settings_is_400(self):
        sock = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                         b"Upgrade: h2c\r\nHTTP2-Settings: A*B\r\n\r\n")
            data = sock.recv(65536)
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)

    def test_h2c_upgrade_without_http2_settings_is_plain_http11(self):
        sock = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        with sock:
            sock.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                         b"Upgrade: h2c\r\n\r\n")
            data = b""
            while not data.endswith(b"abc"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertTrue(data.endswith(b"\r\n\r\nabc"), data)


# ---------------------------------------------------------------------------------------
# Streams: concurrency, HEAD, application failures, resets
# ---------------------------------------------------------------------------------------

class StreamTests(SharedServerTestCase):

    def test_50_concurrent_streams_byte_for_byte(self):
        logged = self.server.log_text().count('"POST /echo HTTP/2" 200')
        with H2Client(self.port) as c:
            bodies = {}
            downloads = {}
            for i in range(50):
                if i % 2:
                    sid = c.start("/echo", "POST", [("content-type", "application/x-%d" % i)],
                                  end_stream=False)
                    bodies[sid] = os.urandom(1000 + 3000 * i)
                else:
                    n = 5000 + 7919 * i
                    downloads[c.start("/bytes/%d" % n)] = n
            c.send_bodies(bodies, chunk=4096)
            c.wait_all(list(bodies) + list(downloads), IO_TIMEOUT * 3)
            for sid, body in bodies.items():
                r = c.responses[sid]
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("content-type"), "application/x-%d"
                                 % ((sid - 1) // 2), r)
                self.assertEqual(len(r.body), len(body), r)
                self.assertTrue(bytes(r.body) == body, "stream %d: the echo differs" % sid)
            for sid, n in downloads.items():
                r = c.responses[sid]
                self.assertEqual((r.status, r.header("content-length")), (200, str(n)), r)
                self.assertTrue(bytes(r.body) == expected_bytes(n),
                                "stream %d: /bytes/%d differs" % (sid, n))
            self.assertIsNone(c.goaway)
        self.assertTrue(wait_until(lambda: self.server.log_text().count(
            '"POST /echo HTTP/2" 200') == logged + 25, 2.0), "not 25 access log lines")

    def test_streams_are_served_concurrently(self):
        # Three /delay/600 at once take about 0.6 s, not 1.8 s.
        with H2Client(self.port) as c:
            t0 = time.monotonic()
            sids = [c.start("/delay/600") for _ in range(3)]
            fast = c.start("/bytes/5")
            c.wait_for(lambda: c.responses[fast].done)
            self.assertLess(time.monotonic() - t0, 0.5, "a quick stream waited for slow ones")
            c.wait_all(sids)
            elapsed = time.monotonic() - t0
            for sid in sids:
                self.assertEqual(bytes(c.responses[sid].body), b"done")
            self.assertLess(elapsed, 1.5)

    def test_stream_endpoint_and_status(self):
        with H2Client(self.port) as c:
            r = c.request("/stream/200")
            self.assertEqual(r.status, 200)
            self.assertEqual(bytes(r.body), expected_stream(200))
            self.assertIsNone(r.header("transfer-encoding"))
            self.assertIsNone(r.header("content-length"))
            for code in (204, 304, 404, 418, 503):
                r = c.request("/status/%d" % code)
                self.assertEqual((r.status, bytes(r.body)), (code, b""), r)
            r = c.request("/nope")
            self.assertEqual((r.status, bytes(r.body)), (404, b"Not Found"))

    def test_head_gets_headers_only(self):
        with H2Client(self.port) as c:
            r = c.request("/bytes/12345", "HEAD")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("content-length"), "12345")
            self.assertEqual(bytes(r.body), b"")
            self.assertEqual(r.data_frames, [])
            self.assertTrue(r.ended)
            r = c.request("/")
            self.assertEqual(bytes(r.body), b"Hello, world!")

    def test_trailers(self):
        with H2Client(self.port) as c:
            r = c.request("/trailers")
            self.assertEqual((r.status, bytes(r.body)), (200, b"body"), r)
            self.assertEqual(r.trailers, [("x-checksum", "abc")], r)
            self.assertTrue(r.ended)
            self.assertIsNone(r.header("content-length"))
            r = c.request("/bytes/3")
            self.assertEqual(bytes(r.body), b"abc")

    def test_early_hints(self):
        with H2Client(self.port) as c:
            r = c.request("/early-hints")
            self.assertEqual((r.status, bytes(r.body)), (200, b"hinted"), r)
            self.assertEqual(len(r.informational), 1, r.informational)
            status, hdrs = r.informational[0]
            self.assertEqual(status, 103)
            self.assertEqual([v for k, v in hdrs if k == "link"],
                             ["</style.css>; rel=preload; as=style",
                              "<https://cdn.example>; rel=preconnect"], hdrs)

    def test_application_failures(self):
        with H2Client(self.port) as c:
            slow = c.start("/delay/500")
            r = c.request("/error/before")
            self.assertEqual(r.status, 500, r)
            self.assertIsNone(r.reset)
            r = c.request("/error/started")
            self.assertEqual(r.status, 500, r)
            r = c.request("/error/none")
            self.assertEqual(r.status, 500, r)
            # Started, and 5 of its 10 bytes sent: the stream is reset, INTERNAL_ERROR.
            r = c.request("/error/after")
            self.assertEqual(r.reset, INTERNAL_ERROR, r)
            self.assertFalse(r.ended, r)
            self.assertIn(bytes(r.body), (b"", b"01234"))
            # The connection goes on, and the stream in flight completes.
            r = c.request("/bytes/7")
            self.assertEqual(bytes(r.body), b"abcdefg")
            c.wait_all([slow])
            self.assertEqual(bytes(c.responses[slow].body), b"done")
            self.assertIsNone(c.goaway)

    def disconnects(self, c):
        return json.loads(bytes(c.request("/disconnects").body))["count"]

    def test_client_reset_mid_response_leaves_other_streams(self):
        with H2Client(self.port, auto_ack=False) as c:
            before = self.disconnects(c)
            big = c.start("/bytes/%d" % (50 * MIB))
            slow = c.start("/delay/400")
            waiting = c.start("/disconnect")
            c.wait_for(lambda: len(c.responses[big].body) > 0)
            c.conn.reset_stream(big, CANCEL)
            c.conn.reset_stream(waiting, CANCEL)
            c.flush()
            # The windows are handed back by hand from now on (auto_ack was off for the
            # window to stay closed while the reset went out).
            c.auto_ack = True
            c.conn.increment_flow_control_window(len(c.responses[big].body))
            c.flush()
            c.wait_all([slow])
            self.assertEqual((c.responses[slow].status, bytes(c.responses[slow].body)),
                             (200, b"done"))
            got = len(c.responses[big].body)
            self.assertLess(got, 50 * MIB)
            self.assertTrue(bytes(c.responses[big].body) == expected_bytes(got))
            r = c.request("/bytes/3")
            self.assertEqual(bytes(r.body), b"abc")
            # The application waiting on /disconnect saw it.
            self.assertTrue(wait_until(lambda: self.disconnects(c) == before + 1, 3.0),
                            "the reset stream's application saw no disconnect")
            self.assertIsNone(c.goaway)

    def test_h2load_cleartext(self):
        counts, ok, out = h2load(self.url("/bytes/1000"), "-n", "200", "-c", "2", "-m", "10")
        self.assertEqual(counts, (200, 200, 200, 200, 0, 0), out)
        self.assertEqual(ok, 200, out)
        self.assertIn("Application protocol: h2c\n", out)


# ---------------------------------------------------------------------------------------
# Flow control
# ---------------------------------------------------------------------------------------

class FlowControlTests(SharedServerTestCase):

    def test_5mib_upload_echoed_and_counted(self):
        body = os.urandom(5 * MIB)
        with H2Client(self.port) as c:
            sid = c.start("/echo", "POST", end_stream=False)
            c.send_bodies({sid: body})
            c.wait_all([sid], IO_TIMEOUT * 3)
            r = c.responses[sid]
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), len(body))
            self.assertTrue(bytes(r.body) == body, "the 5 MiB echo differs")
            # The stream's window opened as the application read (never more than the
            # 65535 outstanding at a time: h2 would have refused to send more).
            self.assertTrue(any(s == sid for s, _ in c.window_updates))
            r = c.request("/upload", "POST", body=body, timeout=IO_TIMEOUT * 3)
            self.assertEqual(json.loads(bytes(r.body)), {"bytes": 5 * MIB})

    def test_8mib_download(self):
        n = 8 * MIB
        with H2Client(self.port) as c:
            r = c.request("/bytes/%d" % n, timeout=IO_TIMEOUT * 3)
            self.assertEqual(r.header("content-length"), str(n))
            self.assertEqual(len(r.body), n)
            self.assertTrue(bytes(r.body) == expected_bytes(n), "the 8 MiB body differs")
            self.assertLessEqual(max(r.data_frames), 16384)

    def test_download_through_a_1kib_window_opened_slowly(self):
        n = 100000
        with H2Client(self.port, settings={SETTINGS_INITIAL_WINDOW_SIZE: 1024},
                      auto_ack=False) as c:
            c.wait_for(lambda: SETTINGS_MAX_CONCURRENT_STREAMS in c.remote_settings)
            sid = c.start("/bytes/%d" % n)
            s2 = c.start("/stream/300")
            deadline = time.monotonic() + IO_TIMEOUT * 4
            acked = {sid: 0, s2: 0}
            while not (c.responses[sid].done and c.responses[s2].done):
                self.assertLess(time.monotonic(), deadline, c.responses)
                try:
                    c.pump(IO_TIMEOUT)
                except socket.timeout:
                    self.fail("nothing came for %.0f s: %r" % (IO_TIMEOUT, c.responses))
                for s in (sid, s2):
                    got = len(c.responses[s].body)
                    # No more than the window allowed is outstanding.
                    self.assertLessEqual(got - acked[s], 1024, c.responses[s])
                    if got > acked[s] and not c.responses[s].done:
                        time.sleep(0.002)
                        c.conn.increment_flow_control_window(got - acked[s], s)
                        c.conn.increment_flow_control_window(got - acked[s])
                        acked[s] = got
                c.flush()
            r = c.responses[sid]
            self.assertEqual(r.status, 200)
            self.assertTrue(bytes(r.body) == expected_bytes(n), "the body differs")
            self.assertLessEqual(max(r.data_frames), 1024)
            self.assertGreaterEqual(len(r.data_frames), n // 1024)
            self.assertEqual(bytes(c.responses[s2].body), expected_stream(300))

    def test_body_window_stays_shut_while_the_application_does_not_read(self):
        with H2Client(self.port) as c:
            c.wait_for(lambda: SETTINGS_MAX_CONCURRENT_STREAMS in c.remote_settings)
            # /delay never reads its body.
            sid = c.start("/delay/1500", extra=[("content-type", "application/octet-stream")],
                          end_stream=False)
            self.assertEqual(c.conn.remote_settings.initial_window_size, 65535)
            sent = 0
            while c.conn.local_flow_control_window(sid) > 0:
                n = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
                c.conn.send_data(sid, b"x" * n)
                sent += n
            c.flush()
            self.assertEqual(sent, 65535)
            c.pump_for(0.8)
            self.assertFalse(c.responses[sid].done, c.responses[sid])
            self.assertEqual([d for s, d in c.window_updates if s == sid], [],
                             "the server opened the window of a stream whose application "
                             "does not read")
            self.assertEqual(c.conn.local_flow_control_window(sid), 0)
            with self.assertRaises(h2.exceptions.FlowControlError):
                c.conn.send_data(sid, b"x")
            # Other streams go on meanwhile (the connection window is not what is shut).
            r = c.request("/echo", "POST", body=b"y" * 100000)
            self.assertEqual(bytes(r.body), b"y" * 100000)
            c.wait_all([sid])
            self.assertEqual((c.responses[sid].status, bytes(c.responses[sid].body)),
                             (200, b"done"))

    def test_client_that_never_opens_its_window(self):
        # The server sends no more than the window, and gives up cleanly when the client
        # goes; the server goes on.
        with H2Client(self.port, auto_ack=False) as c:
            sid = c.start("/bytes/%d" % (4 * MIB))
            c.pump_for(0.5)
            r = c.responses[sid]
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), 65535)
            self.assertFalse(r.done)
        self.assert_serves(self.port)


# ---------------------------------------------------------------------------------------
# Protocol errors and floods
# ---------------------------------------------------------------------------------------

class ProtocolErrorTests(SharedServerTestCase):

    def connection_error(self, data, expected=PROTOCOL_ERROR, settle=True):
        """Sends data on a new connection (after the preface and SETTINGS, and the
        SETTINGS ACK when settle): a GOAWAY with `expected` must come, then EOF."""
        with RawH2(self.port) as c:
            if settle:
                c.send(frame(SETTINGS, ACK, 0))
            c.send(data)
            eof, frames = c.read_to_eof(IO_TIMEOUT)
        g = goaways(frames)
        self.assertTrue(g, "no GOAWAY: %r" % frames)
        self.assertEqual(g[-1].error_code, expected, frames)
        self.assertTrue(eof, "the connection stayed open after GOAWAY: %r" % frames)
        self.assert_serves(self.port)
        return g[-1]

    def stream_error(self, hdrs, expected=PROTOCOL_ERROR, data=b""):
        """A request with hdrs on stream 1: RST_STREAM `expected`, or a 400 response; then
        stream 3 on the same connection is served."""
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            c.send(c.headers_frame(1, hdrs, end_stream=not data)
                   + (frame(DATA, END_STREAM, 1, data) if data else b""))
            status, body, reset, frames = c.response(1)
            if reset is None:
                self.assertEqual(status, 400, frames)
            else:
                self.assertEqual(reset, expected, frames)
            c.get(3, "/bytes/4")
            status, body, reset, frames = c.response(3)
            self.assertEqual((status, body, reset), (200, b"abcd", None), frames)
        self.assert_serves(self.port)
        return reset

    def test_data_on_stream_0(self):
        self.connection_error(frame(DATA, END_STREAM, 0, b"x"))

    def test_headers_on_an_even_stream(self):
        enc = hpack.Encoder()
        self.connection_error(frame(HEADERS, END_STREAM | END_HEADERS, 2,
                                    enc.encode(request_headers("/"))))

    def test_stream_ids_going_down(self):
        # A new stream with an id below the last one: RFC 9113 §5.1.1 makes it a connection
        # error; nghttp2 may also just ignore a HEADERS frame on a stream it has closed.
        # Either way stream 3 is never served.
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            c.get(5, "/")
            status, body, _, _ = c.response(5)
            self.assertEqual((status, body), (200, b"Hello, world!"))
            c.get(3, "/headers")
            c.get(7, "/bytes/3")
            f, frames = c.read_until(lambda f: f.type == GOAWAY or (
                f.sid == 7 and f.flags & END_STREAM), IO_TIMEOUT)
            self.assertIsNotNone(f, frames)
            self.assertEqual([g for g in frames if g.sid == 3 and g.type != RST_STREAM], [],
                             frames)
            if f.type == GOAWAY:
                self.assertEqual(f.error_code, PROTOCOL_ERROR, frames)
                self.assertTrue(c.read_to_eof()[0])
            else:
                self.assertEqual(f.payload, b"abc", frames)
        self.assertNotIn('"GET /headers HTTP/2"', self.server.log_text())
        self.assert_serves(self.port)

    def test_bad_preface(self):
        # The preface, then a PING instead of SETTINGS.
        with RawH2(self.port, preface=False) as c:
            c.send(PREFACE + frame(PING, 0, 0, b"12345678"))
            eof, frames = c.read_to_eof()
        self.assertTrue(eof, frames)
        self.assertIn(PROTOCOL_ERROR, [f.error_code for f in goaways(frames)], frames)
        self.assert_serves(self.port)

    def test_zero_window_update(self):
        self.connection_error(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))

    def test_frame_larger_than_max_frame_size(self):
        self.connection_error(frame(PING, 0, 0, b"p" * 20000), FRAME_SIZE_ERROR)

    def test_window_overflow(self):
        self.connection_error(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)),
                              FLOW_CONTROL_ERROR)

    def test_uppercase_header_name(self):
        self.stream_error(request_headers("/headers", extra=[("X-Upper", "1")]))

    def test_missing_path(self):
        self.stream_error([(":method", "GET"), (":scheme", "http"), (":authority", "x")])

    def test_missing_method(self):
        self.stream_error([(":path", "/"), (":scheme", "http"), (":authority", "x")])

    def test_unknown_pseudo_header(self):
        self.stream_error(request_headers("/", extra=[(":protocol", "websocket")]))

    def test_pseudo_header_after_regular(self):
        self.stream_error([(":method", "GET"), ("x-a", "1"), (":path", "/"),
                           (":scheme", "http"), (":authority", "x")])

    def test_connection_specific_headers(self):
        for name, value in (("connection", "keep-alive"), ("keep-alive", "timeout=5"),
                            ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
                            ("te", "gzip")):
            with self.subTest(header=name):
                self.stream_error(request_headers("/headers", extra=[(name, value)]))

    def test_content_length_mismatch(self):
        self.stream_error(request_headers("/echo", "POST", extra=[("content-length", "10")]),
                          data=b"12345")

    def test_rapid_reset_gets_enhance_your_calm(self):
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            burst = bytearray()
            for i in range(600):
                sid = 1 + 2 * i
                burst += c.headers_frame(sid, request_headers("/delay/1000"))
                burst += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            try:
                c.send(bytes(burst))
            except (BrokenPipeError, ConnectionResetError):
                pass
            eof, frames = c.read_to_eof(IO_TIMEOUT)
        g = goaways(frames)
        self.assertTrue(g, "no GOAWAY after 600 rapid resets: %r" % frames[-5:])
        self.assertEqual(g[0].error_code, ENHANCE_YOUR_CALM, g)
        self.assertLess(g[0].last_stream_id, 1 + 2 * 599, g)
        self.assertTrue(eof, "the connection stayed open")
        self.assertTrue(self.server.wait_for_line(
            lambda line: "resets streams too fast" in line, 2.0), self.server.log_text(last=5))
        self.assert_serves(self.port)

    def test_max_reset_rate_flag(self):
        srv = self.start("--http2-max-reset-rate", "10")

        def reset_burst(c, first, n):
            burst = bytearray()
            for i in range(n):
                sid = first + 2 * i
                burst += c.headers_frame(sid, request_headers("/delay/1000"))
                burst += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            c.send(bytes(burst))

        # 15 resets are within the burst of 20: the connection serves on.
        with RawH2(srv.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            reset_burst(c, 1, 15)
            c.get(31, "/bytes/3")
            status, body, reset, frames = c.response(31)
            self.assertEqual((status, body), (200, b"abc"), frames)
            self.assertFalse(goaways(frames), frames)
        # 30 are not.
        with RawH2(srv.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            try:
                reset_burst(c, 1, 30)
            except (BrokenPipeError, ConnectionResetError):
                pass
            eof, frames = c.read_to_eof(IO_TIMEOUT)
        g = goaways(frames)
        self.assertTrue(g, "no GOAWAY after 30 rapid resets: %r" % frames[-5:])
        self.assertEqual(g[0].error_code, ENHANCE_YOUR_CALM, g)
        self.assertTrue(eof, "the connection stayed open")
        self.assert_serves(srv.port)

    def test_slow_resets_are_fine(self):
        # Resets below the budget (a browser cancelling a few requests) are no attack.
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            for i in range(50):
                c.send(c.headers_frame(1 + 2 * i, request_headers("/delay/1000"))
                       + frame(RST_STREAM, 0, 1 + 2 * i, struct.pack(">I", CANCEL)))
            c.get(101, "/bytes/10")
            status, body, reset, frames = c.response(101)
            self.assertEqual((status, body), (200, b"abcdefghij"))
            self.assertEqual(goaways(frames), [])

    def flood(self, unit, count):
        """Sends `count` copies of `unit` on a new connection whose receive buffer is small,
        without reading; then reads until EOF. (frames received, whether EOF came)."""
        with RawH2(self.port, rcvbuf=4096) as c:
            c.sock.setblocking(False)
            data = memoryview(unit * count)
            deadline = time.monotonic() + IO_TIMEOUT
            while data and time.monotonic() < deadline:
                _, w, _ = select.select([], [c.sock], [], 0.5)
                if not w:
                    continue
                try:
                    n = c.sock.send(data[:65536])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                data = data[n:]
            c.sock.setblocking(True)
            eof, frames = c.read_to_eof(IO_TIMEOUT * 2)
            return frames, eof, len(data)

    # More PINGs than the socket buffers on both sides hold (about 5 MB): the server cannot
    # write its ACKs as fast as they come, and nghttp2's limit on queued ACKs (1000) trips.
    FLOOD = 300000

    def test_ping_flood_ends_the_connection(self):
        frames, eof, unsent = self.flood(frame(PING, 0, 0, b"pingping"), self.FLOOD)
        acks = sum(1 for f in frames if f.type == PING and f.flags & ACK)
        self.assertTrue(eof, "the connection stayed open after %d PINGs" % self.FLOOD)
        self.assertLess(acks, self.FLOOD, "every PING was answered: no flood protection")
        # A GOAWAY first, or just the end of the connection (what nghttp2 advises).
        g = goaways(frames)
        if g:
            self.assertEqual(g[-1].error_code, ENHANCE_YOUR_CALM, g)
        self.assert_serves(self.port)

    def test_settings_flood_ends_the_connection(self):
        frames, eof, unsent = self.flood(frame(SETTINGS, 0, 0, b""), self.FLOOD)
        acks = sum(1 for f in frames if f.type == SETTINGS and f.flags & ACK)
        self.assertTrue(eof, "the connection stayed open after %d SETTINGS" % self.FLOOD)
        self.assertLess(acks, self.FLOOD, "every SETTINGS was acknowledged: no flood "
                        "protection")
        g = goaways(frames)
        if g:
            self.assertEqual(g[-1].error_code, ENHANCE_YOUR_CALM, g)
        self.assert_serves(self.port)

    def test_continuation_flood_ends_the_connection(self):
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            enc = hpack.Encoder()
            data = bytearray(frame(HEADERS, END_STREAM, 1, enc.encode(request_headers("/"))))
            for i in range(5000):
                data += frame(CONTINUATION, 0, 1, enc.encode([("x-c%d" % (i % 50), "v")]))
            try:
                c.send(bytes(data))
            except (BrokenPipeError, ConnectionResetError):
                pass
            eof, frames = c.read_to_eof(IO_TIMEOUT)
        self.assertTrue(eof, "the connection stayed open: %r" % frames[-5:])
        self.assertTrue(goaways(frames), frames)
        self.assertNotIn(HEADERS, [f.type for f in frames], "the flooded request was served")
        self.assert_serves(self.port)

    def test_empty_continuation_flood_ends_the_connection(self):
        with RawH2(self.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            data = bytearray(c.headers_frame(1, request_headers("/"), end_headers=False))
            data += frame(CONTINUATION, 0, 1, b"") * 20000
            try:
                c.send(bytes(data))
            except (BrokenPipeError, ConnectionResetError):
                pass
            eof, frames = c.read_to_eof(IO_TIMEOUT)
        self.assertTrue(eof, "the connection stayed open: %r" % frames[-5:])
        self.assert_serves(self.port)

    def test_garbage_after_preface_and_abrupt_close(self):
        # A client that vanishes mid-frame, and one that sends junk: the server goes on.
        with RawH2(self.port) as c:
            c.send(c.headers_frame(1, request_headers("/delay/200"))[:12])
        with RawH2(self.port) as c:
            c.send(os.urandom(3000))
            c.read_to_eof(IO_TIMEOUT)
        with RawH2(self.port) as c:
            c.get(1, "/bytes/%d" % MIB)
            c.read_frame()
        self.assert_serves(self.port)


class ConnectionErrorWithBusyStreamTests(H2TestCase):
    """A connection error (GOAWAY from nghttp2) while a stream's application is still busy:
    the application must learn that the client is gone, the connection must be closed, and
    the server must still exit on SIGTERM. A server of its own for each test."""

    # From the GOAWAY to the end of the connection, at most.
    CLOSE_TIMEOUT = 3.0

    def busy_then_error(self, setup, trigger, expected):
        srv = self.start()
        with RawH2(srv.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            setup(c)
            c.read_until(lambda f: False, 0.3)
            c.send(trigger)
            eof, frames = c.read_to_eof(self.CLOSE_TIMEOUT)
            g = goaways(frames)
            self.assertTrue(g, frames)
            self.assertEqual(g[-1].error_code, expected, g)
            self.assertTrue(eof, "the connection stayed open %.0f s after GOAWAY %r"
                            % (self.CLOSE_TIMEOUT, g[-1]))
        self.assert_serves(srv.port)
        self.stop_ok(srv)

    @staticmethod
    def echo_waiting_for_body(c):
        c.send(c.headers_frame(1, request_headers("/echo", "POST"), end_stream=False)
               + frame(DATA, 0, 1, b"abc"))

    def test_data_on_stream_0_while_the_application_waits_for_the_body(self):
        self.busy_then_error(self.echo_waiting_for_body, frame(DATA, END_STREAM, 0, b"x"),
                             PROTOCOL_ERROR)

    def test_oversized_frame_while_the_application_waits_for_the_body(self):
        enc_frame = frame(PING, 0, 0, b"p" * 20000)
        self.busy_then_error(self.echo_waiting_for_body, enc_frame, FRAME_SIZE_ERROR)

    def test_data_on_stream_0_while_the_application_waits_for_the_window(self):
        self.busy_then_error(lambda c: c.get(1, "/bytes/%d" % (10 * MIB)),
                             frame(DATA, END_STREAM, 0, b"x"), PROTOCOL_ERROR)

    def test_data_on_stream_0_while_the_application_waits_for_a_disconnect(self):
        self.busy_then_error(lambda c: c.get(1, "/disconnect"),
                             frame(DATA, END_STREAM, 0, b"x"), PROTOCOL_ERROR)

    def test_data_on_stream_0_while_the_application_sleeps(self):
        self.busy_then_error(lambda c: c.get(1, "/delay/500"),
                             frame(DATA, END_STREAM, 0, b"x"), PROTOCOL_ERROR)

    def test_rapid_reset_while_a_stream_waits_for_a_disconnect(self):
        data = bytearray()
        srv = self.start()
        with RawH2(srv.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            c.get(1, "/disconnect")
            c.read_until(lambda f: False, 0.3)
            for i in range(1, 400):
                sid = 1 + 2 * i
                data += c.headers_frame(sid, request_headers("/delay/200"))
                data += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            try:
                c.send(bytes(data))
            except (BrokenPipeError, ConnectionResetError):
                pass
            eof, frames = c.read_to_eof(self.CLOSE_TIMEOUT)
            g = goaways(frames)
            self.assertTrue(g, frames[-5:])
            self.assertEqual(g[-1].error_code, ENHANCE_YOUR_CALM, g)
            self.assertTrue(eof, "the connection stayed open %.0f s after GOAWAY %r"
                            % (self.CLOSE_TIMEOUT, g[-1]))
        self.assert_serves(srv.port)
        self.stop_ok(srv)


# ---------------------------------------------------------------------------------------
# Limits and settings
# ---------------------------------------------------------------------------------------

class LimitTests(H2TestCase):

    def test_max_header_bytes_431_and_the_connection_goes_on(self):
        srv = self.start("--max-header-bytes", "4096")
        with H2Client(srv.port) as c:
            c.wait_for(lambda: SETTINGS_MAX_HEADER_LIST_SIZE in c.remote_settings)
            self.assertEqual(c.remote_settings[SETTINGS_MAX_HEADER_LIST_SIZE], 4096)
            r = c.request("/headers", extra=[("x-big", "b" * 8192)])
            self.assertEqual(r.status, 431, r)
            self.assertIsNone(r.reset)
            # Just under the limit (each field counts name + value + 32).
            r = c.request("/headers", extra=[("x-big", "b" * 3000)])
            self.assertEqual(r.status, 200, r)
            self.assertIn(["x-big", "b" * 3000], json.loads(bytes(r.body))["headers"])
            # Many small fields adding up past it.
            r = c.request("/headers", extra=[("x-%d" % i, "v" * 40) for i in range(100)])
            self.assertEqual(r.status, 431, r)
            r = c.request("/bytes/6")
            self.assertEqual((r.status, bytes(r.body)), (200, b"abcdef"))
            self.assertIsNone(c.goaway)
        self.stop_ok(srv)

    def test_limit_request_body_413(self):
        srv = self.start("--limit-request-body", "1000")
        with H2Client(srv.port) as c:
            # content-length over the limit: 413 before the application runs.
            r = c.request("/echo", "POST", extra=[("content-length", "5000")],
                          body=b"q" * 5000)
            self.assertEqual(r.status, 413, r)
            r = c.request("/bytes/5")
            self.assertEqual((r.status, bytes(r.body)), (200, b"abcde"))
            # No content-length, the body grows past the limit before a response: 413.
            r = c.request("/upload", "POST", body=b"q" * 5000)
            self.assertEqual(r.status, 413, r)
            # At the limit: served.
            r = c.request("/upload", "POST", body=b"q" * 1000)
            self.assertEqual((r.status, json.loads(bytes(r.body))), (200, {"bytes": 1000}))
            r = c.request("/echo", "POST", extra=[("content-length", "1000")], body=b"e" * 1000)
            self.assertEqual((r.status, bytes(r.body)), (200, b"e" * 1000))
            # Past the limit once the response has started (/echo sends what it read): the
            # stream is reset.
            sid = c.start("/echo", "POST", end_stream=False)
            c.conn.send_data(sid, b"a" * 600)
            c.flush()
            c.wait_for(lambda: len(c.responses[sid].body) == 600)
            c.conn.send_data(sid, b"b" * 600, end_stream=True)
            c.flush()
            c.wait_for(lambda: c.responses[sid].done)
            r = c.responses[sid]
            self.assertEqual((r.status, bytes(r.body), r.reset), (200, b"a" * 600,
                                                                   INTERNAL_ERROR), r)
            r = c.request("/bytes/5")
            self.assertEqual((r.status, bytes(r.body)), (200, b"abcde"))
            self.assertIsNone(c.goaway)
        self.stop_ok(srv)

    def test_max_concurrent_streams_advertised_and_enforced(self):
        srv = self.start("--http2-max-concurrent-streams", "5")
        with RawH2(srv.port) as c:
            f, _ = c.read_until(lambda f: f.type == SETTINGS and not f.flags & ACK)
            self.assertIsNotNone(f)
            self.assertEqual(f.settings().get(SETTINGS_MAX_CONCURRENT_STREAMS), 5, f.settings())
            self.assertEqual(f.settings().get(SETTINGS_MAX_HEADER_LIST_SIZE), 16384)
            c.send(frame(SETTINGS, ACK, 0))
            c.read_until(lambda f: f.type == SETTINGS and f.flags & ACK)
            for i in range(6):
                c.get(1 + 2 * i, "/delay/500")
            _, frames = c.read_until(lambda f: False, 3.0)
        # The sixth is refused: RST_STREAM (REFUSED_STREAM or PROTOCOL_ERROR, RFC 9113
        # §5.1.2), or, as nghttp2 does once its SETTINGS are acknowledged, GOAWAY
        # PROTOCOL_ERROR with the fifth as the last stream.
        resets = [f for f in frames if f.type == RST_STREAM]
        g = goaways(frames)
        if g:
            self.assertEqual((g[0].error_code, g[0].last_stream_id), (PROTOCOL_ERROR, 9), g)
        else:
            self.assertEqual([f.sid for f in resets], [11], frames)
            self.assertIn(resets[0].error_code, (REFUSED_STREAM, PROTOCOL_ERROR), resets)
            done = [f.sid for f in frames if f.type == DATA and f.flags & END_STREAM]
            self.assertEqual(sorted(done), [1, 3, 5, 7, 9], frames)
        self.assertEqual([f for f in frames if f.sid == 11 and f.type != RST_STREAM], [],
                         frames)
        # Five at a time are fine.
        with H2Client(srv.port) as c:
            sids = [c.start("/delay/300") for _ in range(5)]
            c.wait_all(sids)
            self.assertEqual([bytes(c.responses[s].body) for s in sids], [b"done"] * 5)
        self.stop_ok(srv)

    def test_max_requests_goaway_after_the_third_stream(self):
        srv = self.start("--http2-max-requests", "3")
        # (Frames by hand: h2 refuses every frame that follows a GOAWAY.)
        with RawH2(srv.port) as c:
            c.send(frame(SETTINGS, ACK, 0))
            for sid in (1, 3):
                c.get(sid, "/bytes/3")
                status, body, reset, frames = c.response(sid)
                self.assertEqual((status, body, reset), (200, b"abc", None), frames)
                self.assertEqual(goaways(frames), [])
            c.get(5, "/delay/300")
            status, body, reset, frames = c.response(5)
            self.assertEqual((status, body, reset), (200, b"done", None), frames)
            eof, rest = c.read_to_eof()
            g = goaways(frames + rest)
            self.assertEqual([(f.error_code, f.last_stream_id) for f in g], [(NO_ERROR, 5)],
                             frames + rest)
            self.assertTrue(eof, "the connection stayed open after GOAWAY")
        # A client opens another connection and is served.
        body, version = curl_body_and_version("--http2-prior-knowledge",
                                              "http://%s:%d/bytes/4" % (HOST, srv.port))
        self.assertEqual((body, version), (b"abcd", "2"))
        # h2load gets everything done over new connections.
        counts, ok, out = h2load("http://%s:%d/" % (HOST, srv.port), "-n", "20", "-c", "1")
        self.assertEqual(ok, counts[3], out)
        self.stop_ok(srv)

    def test_keep_alive_timeout_closes_idle_connection(self):
        srv = self.start("--timeout-keep-alive", "1")
        with H2Client(srv.port) as c:
            t0 = time.monotonic()
            c.wait_for(lambda: c.goaway is not None, 4.0, "GOAWAY on an idle connection")
            waited = time.monotonic() - t0
            self.assertEqual(c.goaway.error_code, NO_ERROR)
            self.assertGreater(waited, 0.7)
            self.assertLess(waited, 3.0)
            self.assertTrue(c.wait_closed(2.0), "not closed after GOAWAY")
        # After a stream: idle again from the end of the last one, not the start.
        with H2Client(srv.port) as c:
            r = c.request("/delay/1500")
            self.assertEqual(bytes(r.body), b"done")
            self.assertIsNone(c.goaway, "GOAWAY while a stream was open")
            t0 = time.monotonic()
            c.wait_for(lambda: c.goaway is not None, 4.0, "GOAWAY on an idle connection")
            waited = time.monotonic() - t0
            self.assertGreater(waited, 0.7)
            self.assertLess(waited, 3.0)
            self.assertEqual(c.goaway.last_stream_id, 1)
            self.assertTrue(c.wait_closed(2.0))
        self.stop_ok(srv)


# ---------------------------------------------------------------------------------------
# --no-http2
# ---------------------------------------------------------------------------------------

class NoHttp2Tests(SharedServerTestCase):
    SERVER_ARGS = ("--no-http2",)

    def test_preface_gets_505(self):
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as s:
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 505 "), data)
        self.assertNotIn(b"\x00\x00", data[:9])
        rc, out, err = curl("--http2-prior-knowledge", self.url("/"))
        self.assertNotEqual(rc, 0, out)

    def test_upgrade_h2c_is_ignored(self):
        body, version = curl_body_and_version("--http2", self.url("/scope"))
        self.assertEqual(version, "1.1")
        self.assertEqual(json.loads(body)["http_version"], "1.1")
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings"
                      b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
            data = b""
            while not data.endswith(b"abc"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertNotIn(b"101", data.split(b"\r\n")[0])


# ---------------------------------------------------------------------------------------
# TLS: ALPN h2
# ---------------------------------------------------------------------------------------

class TlsTests(H2TestCase):

    @classmethod
    def setUpClass(cls):
        cls.cert, cls.key = make_certificate()
        cls.server = Httpbin("--ssl-certfile", cls.cert, "--ssl-keyfile", cls.key)

    @classmethod
    def tearDownClass(cls):
        SharedServerTestCase.tearDownClass.__func__(cls)

    def tearDown(self):
        self.assert_healthy(self.server)

    def url(self, path):
        return "https://%s:%d%s" % (HOST, self.server.port, path)

    def test_curl_alpn_h2_scope(self):
        body, version = curl_body_and_version("--cacert", self.cert, "--http2",
                                              self.url("/scope"))
        self.assertEqual(version, "2")
        scope = json.loads(body)
        self.assertEqual(scope["http_version"], "2")
        self.assertEqual(scope["scheme"], "https")
        self.assertIn("tls", scope)
        self.assertEqual(scope["tls"]["client_cert_chain"], [])
        body, version = curl_body_and_version("-k", "--http2", "--data-binary", "x" * 70000,
                                              self.url("/echo"))
        self.assertEqual((version, body), ("2", b"x" * 70000))

    def test_nghttp_alpn_h2(self):
        rc, out, err = nghttp(self.url("/scope"))
        self.assertEqual(rc, 0, err)
        scope = json.loads(out)
        self.assertEqual((scope["http_version"], scope["scheme"]), ("2", "https"))
        self.assertIn("tls", scope)

    def test_websocket_over_h2_is_wss(self):
        raw = socket.create_connection((HOST, self.server.port), timeout=IO_TIMEOUT)
        sock = tls_context(["h2"], self.cert).wrap_socket(raw, server_hostname=HOST)
        with H2Client(sock=sock) as c:
            ws = H2WebSocket(c, "/ws/scope", scheme="https")
            self.assertEqual(ws.response(), 200, ws.r)
            scope = json.loads(ws.recv()[3])
            self.assertEqual((scope["scheme"], scope["http_version"]), ("wss", "2"))
            self.assertIn("tls", scope)

    def test_curl_http11_still_served(self):
        body, version = curl_body_and_version("--cacert", self.cert, "--http1.1",
                                              self.url("/scope"))
        self.assertEqual(version, "1.1")
        self.assertEqual(json.loads(body)["http_version"], "1.1")

    def test_h2_library_over_tls_concurrent_streams(self):
        raw = socket.create_connection((HOST, self.server.port), timeout=IO_TIMEOUT)
        sock = tls_context(["h2", "http/1.1"], self.cert).wrap_socket(raw,
                                                                      server_hostname=HOST)
        self.assertEqual(sock.selected_alpn_protocol(), "h2")
        with H2Client(sock=sock) as c:
            sids = {c.start("/bytes/%d" % (1000 * i + 1)): 1000 * i + 1 for i in range(20)}
            echo = c.start("/echo", "POST", end_stream=False)
            body = os.urandom(MIB)
            c.send_bodies({echo: body})
            c.wait_all(list(sids) + [echo], IO_TIMEOUT * 2)
            for sid, n in sids.items():
                self.assertTrue(bytes(c.responses[sid].body) == expected_bytes(n), sid)
            self.assertTrue(bytes(c.responses[echo].body) == body)
            r = c.request("/scope")
            self.assertEqual(json.loads(bytes(r.body))["scheme"], "https")

    def test_h2load_tls(self):
        counts, ok, out = h2load(self.url("/bytes/1000"), "-n", "200", "-c", "2", "-m", "10")
        self.assertEqual(counts, (200, 200, 200, 200, 0, 0), out)
        self.assertEqual(ok, 200, out)
        self.assertIn("Application protocol: h2\n", out)

    def test_no_http2_refuses_alpn_h2_only(self):
        srv = self.start("--ssl-certfile", self.cert, "--ssl-keyfile", self.key, "--no-http2")
        raw = socket.create_connection((HOST, srv.port), timeout=IO_TIMEOUT)
        with raw:
            with self.assertRaises(ssl.SSLError) as cm:
                tls_context(["h2"], self.cert).wrap_socket(raw, server_hostname=HOST)
        self.assertIn("no application protocol", str(cm.exception).lower())
        body, version = curl_body_and_version("--cacert", self.cert, "--http2",
                                              "https://%s:%d/scope" % (HOST, srv.port))
        self.assertEqual(version, "1.1")
        self.stop_ok(srv)


# ---------------------------------------------------------------------------------------
# WebSocket over HTTP/2 (RFC 8441)
# ---------------------------------------------------------------------------------------

class NghttpTests(SharedServerTestCase):
    """nghttp2's own client: prior knowledge, Upgrade: h2c, uploads, concurrent streams."""

    def test_get_prior_knowledge_and_upgrade(self):
        rc, out, err = nghttp(self.url("/bytes/70000"))
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, expected_bytes(70000))
        rc, out, err = nghttp("-u", self.url("/scope"))
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["http_version"], "2")

    def test_upload_echoed(self):
        body = os.urandom(300000)
        with tempfile.NamedTemporaryFile() as f:
            f.write(body)
            f.flush()
            rc, out, err = nghttp("-d", f.name, self.url("/echo"))
        self.assertEqual(rc, 0, err)
        self.assertTrue(out == body, "the echoed body differs (%d of %d bytes)"
                        % (len(out), len(body)))

    def test_concurrent_streams_stats(self):
        rc, out, err = nghttp("-n", "-s", "-m", "20", self.url("/bytes/5000"),
                              self.url("/stream/30"))
        self.assertEqual(rc, 0, err)
        rows = [line.split() for line in out.decode().splitlines()
                if re.match(r"\s*\d+\s+\+", line)]
        self.assertEqual(len(rows), 40, out.decode())
        for row in rows:
            self.assertEqual(row[4], "200", row)
        self.assertEqual(sorted({(row[5], row[6]) for row in rows}),
                         [(str(len(expected_stream(30))), "/stream/30"), ("4K", "/bytes/5000")])


class WebSocketOverH2Tests(SharedServerTestCase):

    def test_extended_connect_is_advertised(self):
        with H2Client(self.port) as c:
            c.wait_for(lambda: SETTINGS_ENABLE_CONNECT_PROTOCOL in c.remote_settings)
            self.assertEqual(c.remote_settings[SETTINGS_ENABLE_CONNECT_PROTOCOL], 1)

    def test_echo_text_and_binary_byte_for_byte(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/echo")
            self.assertEqual(ws.response(), 200, ws.r)
            self.assertIsNone(ws.r.header("sec-websocket-accept"))
            self.assertIsNone(ws.r.header("sec-websocket-extensions"))  # none offered
            ws.send(WS_TEXT, "héllo".encode())
            self.assertEqual(ws.recv(), (WS_TEXT, True, False, "héllo".encode()))
            # Larger than the stream's 64 KiB window in both directions.
            big = bytes(range(256)) * 1200
            ws.send(WS_BINARY, big)
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT * 2), (WS_BINARY, True, False, big))
            # A fragmented message with a ping between its fragments.
            ws.send(WS_TEXT, b"frag", fin=False)
            ws.send(WS_PING, b"p1")
            ws.send(WS_CONT, b"mented", fin=True)
            self.assertEqual(ws.recv(), (WS_PONG, True, False, b"p1"))
            self.assertEqual(ws.recv(), (WS_TEXT, True, False, b"fragmented"))
            # The client closes: the server answers with the same code and ends the stream.
            ws.send(WS_CLOSE, ws_close_payload(1000))
            self.assertEqual(ws.recv(), (WS_CLOSE, True, False, ws_close_payload(1000)))
            c.wait_for(lambda: ws.r.done, what="the end of the stream")
            self.assertTrue(ws.r.ended, ws.r)
            # The connection goes on serving.
            r = c.request("/bytes/500")
            self.assertEqual((r.status, bytes(r.body)), (200, expected_bytes(500)))

    def test_scope(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/scope?a=1", extra=[("sec-websocket-protocol", "p1, p2")])
            self.assertEqual(ws.response(), 200, ws.r)
            op, _, _, text = ws.recv()
            scope = json.loads(text)
            self.assertEqual(scope["type"], "websocket")
            self.assertEqual(scope["http_version"], "2")
            self.assertEqual(scope["scheme"], "ws")
            self.assertEqual(scope["path"], "/ws/scope")
            self.assertEqual(scope["query_string"], "a=1")
            self.assertEqual(scope["subprotocols"], ["p1", "p2"])
            self.assertEqual(ws.recv()[:1], (WS_CLOSE,))

    def test_subprotocol_is_answered(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/echo", extra=[("sec-websocket-protocol", "chat, other")])
            self.assertEqual(ws.response(), 200, ws.r)
            self.assertEqual(ws.r.header("sec-websocket-protocol"), "chat")

    def test_permessage_deflate(self):
        import zlib
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/echo",
                             extra=[("sec-websocket-extensions", "permessage-deflate")])
            self.assertEqual(ws.response(), 200, ws.r)
            self.assertEqual(ws.r.header("sec-websocket-extensions"), "permessage-deflate")
            text = b"compress me " * 500
            co = zlib.compressobj(wbits=-15)
            payload = co.compress(text) + co.flush(zlib.Z_SYNC_FLUSH)
            ws.send(WS_TEXT, payload[:-4], rsv1=True)
            op, fin, rsv1, data = ws.recv()
            self.assertEqual((op, fin, rsv1), (WS_TEXT, True, True))
            self.assertLess(len(data), len(text) // 10)
            self.assertEqual(zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff"),
                             text)

    def test_denials(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/reject")
            self.assertEqual(ws.response(), 403, ws.r)
            ws = H2WebSocket(c, "/ws/deny")
            self.assertEqual(ws.response(), 401, ws.r)
            c.wait_for(lambda: ws.r.done, what="the denial's body")
            self.assertEqual(bytes(ws.r.body), b"denied")
            self.assertEqual(ws.r.header("content-type"), "text/plain")
            # A CONNECT without :protocol, or for another protocol, proxies nothing.
            sid = c.start("/", method="CONNECT", extra=[(":protocol", "chat")])
            c.wait_for(lambda: c.responses[sid].done)
            self.assertEqual(c.responses[sid].status, 501)
            r = c.request("/bytes/10")
            self.assertEqual(r.status, 200)
        # The log is read by a thread of the test harness: the lines may come a little later.
        for line in ('"WebSocket /ws/reject" 403', '"WebSocket /ws/deny" 401'):
            self.assertTrue(wait_until(lambda: line in self.server.log_text(), IO_TIMEOUT),
                            self.server.log_text(last=10))

    def test_server_close_code_then_end_stream(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/close/4001")
            self.assertEqual(ws.response(), 200, ws.r)
            self.assertEqual(ws.recv(), (WS_CLOSE, True, False, ws_close_payload(4001, b"bye")))
            ws.send(WS_CLOSE, ws_close_payload(4001))
            c.wait_for(lambda: ws.r.done, what="the end of the stream")
            self.assertTrue(ws.r.ended, ws.r)

    def test_streamed_messages_and_http_streams_together(self):
        with H2Client(self.port) as c:
            sockets = [H2WebSocket(c, "/ws/stream/50") for _ in range(4)]
            sids = [c.start("/bytes/%d" % (20000 + i)) for i in range(4)]
            for ws in sockets:
                self.assertEqual(ws.response(), 200, ws.r)
            for ws in sockets:
                for i in range(50):
                    self.assertEqual(ws.recv(), (WS_TEXT, True, False, b"msg %d" % i))
                self.assertEqual(ws.recv()[:1], (WS_CLOSE,))
            c.wait_all(sids)
            for i, sid in enumerate(sids):
                self.assertEqual(bytes(c.responses[sid].body), expected_bytes(20000 + i))

    def test_client_reset_and_client_end_leave_the_connection_serving(self):
        with H2Client(self.port) as c:
            ws = H2WebSocket(c, "/ws/echo")
            self.assertEqual(ws.response(), 200)
            ws.send(WS_TEXT, b"one")
            self.assertEqual(ws.recv()[3], b"one")
            c.conn.reset_stream(ws.sid, h2.errors.ErrorCodes.CANCEL)
            c.flush()
            ws2 = H2WebSocket(c, "/ws/echo")
            self.assertEqual(ws2.response(), 200)
            ws2.end()  # END_STREAM without a close frame: the WebSocket is gone (1006)
            c.wait_for(lambda: ws2.r.done, what="the end of the second WebSocket")
            self.assertEqual(c.request("/bytes/100").status, 200)

    def test_message_too_big_closes_with_1009(self):
        srv = self.start("--ws-max-size", "1000")
        with H2Client(srv.port) as c:
            ws = H2WebSocket(c, "/ws/echo")
            self.assertEqual(ws.response(), 200)
            ws.send(WS_BINARY, b"x" * 2000)
            op, _, _, payload = ws.recv()
            self.assertEqual((op, payload[:2]), (WS_CLOSE, struct.pack("!H", 1009)))
            self.assertEqual(c.request("/bytes/100").status, 200)

    def test_ws_none_does_not_advertise_extended_connect(self):
        srv = self.start("--ws", "none")
        with H2Client(srv.port) as c:
            r = c.request("/bytes/10")
            self.assertEqual(r.status, 200)
            self.assertNotIn(SETTINGS_ENABLE_CONNECT_PROTOCOL, c.remote_settings)

    def test_sigterm_closes_with_1012(self):
        # Frames by hand: h2 refuses every frame that follows a GOAWAY.
        srv = self.start()
        c = RawH2(srv.port)
        self.addCleanup(c.close)
        c.send(frame(SETTINGS, ACK, 0))
        c.send(c.headers_frame(1, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
            (":path", "/ws/echo"), (":authority", "x"), ("sec-websocket-version", "13")],
            end_stream=False))
        h, frames = c.read_until(lambda f: f.type == HEADERS and f.sid == 1)
        self.assertIsNotNone(h, frames)
        self.assertIn((":status", "200"), h.headers)
        srv.send_signal(signal.SIGTERM)
        d, frames = c.read_until(lambda f: f.type == DATA and f.sid == 1)
        self.assertIsNotNone(d, frames)
        self.assertEqual(d.payload[:4], b"\x88\x02" + struct.pack("!H", 1012), d)
        self.assertTrue(goaways(frames), "no GOAWAY: %r" % frames)
        c.send(frame(DATA, END_STREAM, 1, ws_frame(WS_CLOSE, ws_close_payload(1012))))
        eof, frames = c.read_to_eof()
        self.assertTrue(eof, "the connection stayed open: %r" % frames)
        self.assertEqual(srv.wait(EXIT_TIMEOUT), 0, srv.log_text(last=50))


class PingTests(H2TestCase):
    """PING for liveness: --ws-ping-interval and --ws-ping-timeout on HTTP/2 connections."""

    def test_a_peer_that_answers_stays_and_one_that_does_not_is_dropped(self):
        srv = self.start("--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.5")
        # h2 answers PINGs: a stream stays open across several intervals.
        with H2Client(srv.port) as c:
            sid = c.start("/delay/2000")
            c.pump_for(1.5)
            self.assertFalse(c.closed)
            pings = [e for e in c.events if isinstance(e, h2.events.PingReceived)]
            self.assertGreaterEqual(len(pings), 2, c.events)
            c.wait_all([sid])
            self.assertEqual(bytes(c.responses[sid].body), b"done")
        # Frames by hand, never acknowledging a PING: dropped after interval + timeout.
        raw = RawH2(srv.port)
        self.addCleanup(raw.close)
        raw.send(frame(SETTINGS, ACK, 0))
        raw.get(1, "/delay/5000")
        start = time.monotonic()
        eof, frames = raw.read_to_eof(timeout=4)
        self.assertTrue(eof, "the connection stayed open: %r" % frames)
        self.assertLess(time.monotonic() - start, 3.5)
        self.assertTrue(any(f.type == PING and not f.flags & ACK for f in frames), frames)
        # The line is written before the close, but read from the server's stderr by a thread
        # of the harness, which may not have reached it yet.
        self.assertTrue(wait_until(lambda: "keepalive PING" in srv.log_text(), 2), srv.log_text())
        self.assert_serves(srv.port)


# ---------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------

class ShutdownTests(H2TestCase):

    # Frames by hand: h2 refuses every frame that follows a GOAWAY.

    def test_sigterm_with_a_stream_in_flight(self):
        srv = self.start()
        idle = RawH2(srv.port)
        self.addCleanup(idle.close)
        idle.send(frame(SETTINGS, ACK, 0))
        idle.get(1, "/bytes/2")
        self.assertEqual(idle.response(1)[:3], (200, b"ab", None))
        c = RawH2(srv.port)
        self.addCleanup(c.close)
        c.send(frame(SETTINGS, ACK, 0))
        c.get(1, "/delay/1000")
        c.read_until(lambda f: False, 0.3)
        srv.send_signal(signal.SIGTERM)
        g, frames = c.read_until(lambda f: f.type == GOAWAY or f.sid == 1)
        self.assertIsNotNone(g, "no GOAWAY after SIGTERM: %r" % frames)
        self.assertEqual(g.type, GOAWAY, "the stream was answered before the GOAWAY: %r"
                         % frames)
        self.assertEqual((g.error_code, g.last_stream_id), (NO_ERROR, 1), g)
        status, body, reset, frames = c.response(1)
        self.assertEqual((status, body, reset), (200, b"done", None), frames)
        eof, frames = c.read_to_eof()
        self.assertTrue(eof, "the connection stayed open: %r" % frames)
        # The idle connection got its GOAWAY too, and was closed.
        eof, frames = idle.read_to_eof()
        self.assertTrue(eof, "the idle connection stayed open: %r" % frames)
        self.assertEqual([(f.error_code, f.last_stream_id) for f in goaways(frames)],
                         [(NO_ERROR, 1)], frames)
        self.assertEqual(srv.wait(EXIT_TIMEOUT), 0, srv.log_text(last=50))

    def test_sighup_with_workers_drains_http2_connections(self):
        srv = self.start("--workers", "2")
        c = RawH2(srv.port)
        self.addCleanup(c.close)
        c.send(frame(SETTINGS, ACK, 0))
        c.get(1, "/pid")
        status, body, _, frames = c.response(1)
        self.assertEqual(status, 200, frames)
        old = int(body)
        c.get(3, "/delay/1000")
        c.read_until(lambda f: False, 0.3)
        srv.send_signal(signal.SIGHUP)
        # The old worker drains: GOAWAY, the stream in flight completes, the connection ends.
        g, frames = c.read_until(lambda f: f.type == GOAWAY, timeout=IO_TIMEOUT * 2)
        self.assertIsNotNone(g, "no GOAWAY after SIGHUP: %r" % frames)
        self.assertEqual((g.error_code, g.last_stream_id), (NO_ERROR, 3), g)
        status, body, reset, frames = c.response(3)
        self.assertEqual((status, body, reset), (200, b"done", None), frames)
        eof, frames = c.read_to_eof()
        self.assertTrue(eof, "the connection stayed open: %r" % frames)
        # New connections go to the new workers.
        self.assertTrue(wait_until(lambda: not os.path.exists("/proc/%d" % old), IO_TIMEOUT * 2),
                        "the old worker did not exit")
        with H2Client(srv.port) as h:
            self.assertNotEqual(int(h.request("/pid").body), old)
        self.assertEqual(srv.stop(), 0, srv.log_text(last=30))

    def test_sigterm_refuses_streams_after_goaway(self):
        srv = self.start()
        c = RawH2(srv.port)
        self.addCleanup(c.close)
        c.send(frame(SETTINGS, ACK, 0))
        c.get(1, "/delay/800")
        c.read_until(lambda f: False, 0.2)
        srv.send_signal(signal.SIGTERM)
        g, frames = c.read_until(lambda f: f.type == GOAWAY)
        self.assertIsNotNone(g, frames)
        # A stream the client opens after the GOAWAY (it had not seen it) is not served.
        c.get(3, "/headers")
        status, body, reset, frames = c.response(1)
        self.assertEqual((status, body, reset), (200, b"done", None), frames)
        eof, rest = c.read_to_eof()
        self.assertTrue(eof, "the connection stayed open: %r" % rest)
        self.assertEqual([f for f in frames + rest if f.sid == 3 and f.type != RST_STREAM],
                         [], frames + rest)
        self.assertEqual(srv.wait(EXIT_TIMEOUT), 0, srv.log_text(last=50))
        self.assertNotIn('"GET /headers HTTP/2"', srv.log_text())


def main():
    args, rest = parse_args()
    global HTTPBIN
    HTTPBIN = args.httpbin
    require_executable(HTTPBIN, __file__)
    for tool in ("curl", "h2load", "openssl"):
        if shutil.which(tool) is None:
            sys.exit("%s: the %s command is needed" % (os.path.basename(__file__), tool))
    run_tests(rest, WATCHDOG)


if __name__ == "__main__":
    main()
