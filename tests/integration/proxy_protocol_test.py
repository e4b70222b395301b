#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box tests of --proxy-protocol (HAProxy's PROXY protocol, v1 and v2), driven through
the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/proxy_protocol_test.py --httpbin PATH --hello PATH [args]

(--hello is accepted for the shared command line and not used.)

Headers written by the test over raw sockets: v1 TCP4 and TCP6, UNKNOWN; v2 PROXY over IPv4
and IPv6 with TLVs, LOCAL; a header that arrives a few bytes at a time; keep-alive requests
keeping the header's client; the header in front of a TLS handshake and in front of HTTP/2;
the access log. Refused (the connection closed, nothing answered, the server serving on): no
header, a malformed v1 line (bad address, bad port, too long, missing CRLF), a v2 header with
a bad version, command or family, a peer not in --forwarded-allow-ips. Then the real
components: nginx's stream module (`proxy_protocol on`, v1) and HAProxy (`send-proxy-v2`) in
front of httpbin, their client's address in the scope. After every test the server's log is
checked for sanitizer reports.

Every socket talks to 127.0.0.1 only, and every operation is bounded by a timeout.
"""

import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, RUN_TIMEOUT, CheckedServer, Process, env_with, httpbin_main, wait_until)

HTTPBIN = None
WATCHDOG = 120


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def v2_header(src, dst, sport, dport, command=0x1, family=None, tlvs=b"", version=2):
    """A v2 header: addresses as text (IPv4 or IPv6), TLVs appended as given."""
    v6 = ":" in src
    if family is None:
        family = 0x21 if v6 else 0x11
    af = socket.AF_INET6 if v6 else socket.AF_INET
    body = (socket.inet_pton(af, src) + socket.inet_pton(af, dst) + struct.pack("!HH", sport, dport)
            + tlvs)
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def scope_request(close=True):
    return (b"GET /scope HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"")
            + b"\r\n")


def read_response(sock):
    """One HTTP/1.1 response with a Content-Length: (status, headers text, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response: %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return int(head.split(b" ")[1]), head.decode("latin-1"), body[:n]


def closed_without_answer(sock, timeout=IO_TIMEOUT):
    """True if the server closes the connection without sending anything."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


class Httpbin(CheckedServer):
    def __init__(self, *args):
        super().__init__(HTTPBIN, *args, env=env_with(), no_core=True)



class ProxyProtocolTestCase(unittest.TestCase):

    SERVER_ARGS = ("--proxy-protocol",)

    @classmethod
    def setUpClass(cls):
        cls.server = Httpbin(*cls.SERVER_ARGS)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop_checked()

    def tearDown(self):
        report = self.server.sanitizer_report()
        self.assertIsNone(report, report)
        self.assertIsNone(self.server.proc.poll(), self.server.log_text(last=30))

    def connect(self, port=None):
        s = socket.create_connection((HOST, port or self.server.port), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def scope_after(self, header, pieces=1):
        """/scope on a new connection that begins with `header` (sent in `pieces` writes)."""
        s = self.connect()
        step = max(1, len(header) // pieces)
        for i in range(0, len(header), step):
            s.sendall(header[i:i + step])
            if pieces > 1:
                time.sleep(0.02)
        s.sendall(scope_request())
        status, _, body = read_response(s)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def assert_serving(self):
        scope = self.scope_after(b"PROXY TCP4 198.51.100.1 198.51.100.2 1 2\r\n")
        self.assertEqual(scope["client"], ["198.51.100.1", 1])


class AcceptedTests(ProxyProtocolTestCase):

    def test_v1_tcp4(self):
        scope = self.scope_after(b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 8443\r\n")
        self.assertEqual(scope["client"], ["203.0.113.7", 56324])
        self.assertEqual(scope["server"], ["192.0.2.10", 8443])
        self.assertTrue(wait_until(lambda: '203.0.113.7:56324 - "GET /scope HTTP/1.1" 200'
                                   in self.server.log_text(), IO_TIMEOUT), self.server.log_text())

    def test_v1_tcp6(self):
        scope = self.scope_after(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n")
        self.assertEqual(scope["client"], ["2001:db8::7", 65535])
        self.assertEqual(scope["server"], ["2001:db8::1", 443])

    def test_v1_unknown_keeps_the_peer(self):
        scope = self.scope_after(b"PROXY UNKNOWN\r\n")
        self.assertEqual(scope["client"][0], "127.0.0.1")
        scope = self.scope_after(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
        self.assertEqual(scope["client"][0], "127.0.0.1")

    def test_v2_ipv4_and_ipv6_with_tlvs(self):
        tlvs = tlv(0x02, b"example.com") + tlv(0x04, b"\x00" * 8)  # AUTHORITY, NOOP
        scope = self.scope_after(v2_header("203.0.113.9", "192.0.2.1", 40000, 80, tlvs=tlvs))
        self.assertEqual((scope["client"], scope["server"]),
                         (["203.0.113.9", 40000], ["192.0.2.1", 80]))
        scope = self.scope_after(v2_header("2001:db8::9", "2001:db8::1", 1234, 443))
        self.assertEqual(scope["client"], ["2001:db8::9", 1234])

    def test_v2_local_keeps_the_peer(self):
        scope = self.scope_after(v2_header("203.0.113.9", "192.0.2.1", 1, 2, command=0x0))
        self.assertEqual(scope["client"][0], "127.0.0.1")
        scope = self.scope_after(V2_SIGNATURE + b"\x20\x00\x00\x00")  # LOCAL, UNSPEC, empty
        self.assertEqual(scope["client"][0], "127.0.0.1")

    def test_header_in_pieces(self):
        scope = self.scope_after(b"PROXY TCP4 203.0.113.7 192.0.2.10 1000 2000\r\n", pieces=9)
        self.assertEqual(scope["client"], ["203.0.113.7", 1000])
        scope = self.scope_after(v2_header("203.0.113.8", "192.0.2.1", 3, 4), pieces=7)
        self.assertEqual(scope["client"], ["203.0.113.8", 3])

    def test_keep_alive_requests_keep_the_client(self):
        s = self.connect()
        s.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.10 5 6\r\n" + scope_request(close=False))
        for last in (False, False, True):
            status, _, body = read_response(s)
            self.assertEqual(json.loads(body)["client"], ["203.0.113.7", 5])
            if not last:
                s.sendall(scope_request(close=False))

    def test_http2_after_the_header(self):
        import h2.config
        import h2.connection
        import h2.events
        s = self.connect()
        s.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.10 7 8\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/scope"), (":scheme", "http"),
                              (":authority", "x")], end_stream=True)
        s.sendall(conn.data_to_send())
        body = b""
        deadline = time.monotonic() + IO_TIMEOUT
        done = False
        while not done and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.DataReceived):
                    body += e.data
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                if isinstance(e, h2.events.StreamEnded):
                    done = True
            s.sendall(conn.data_to_send())
        self.assertTrue(done, body)
        scope = json.loads(body)
        self.assertEqual((scope["http_version"], scope["client"]), ("2", ["203.0.113.7", 7]))


class RefusedTests(ProxyProtocolTestCase):

    def refused(self, data, why):
        """The connection that sends `data` is closed unanswered, and the log says `why`."""
        before = self.server.log_text().count(why)
        s = self.connect()
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertTrue(closed_without_answer(s), "answered: %r" % data)
        self.assertTrue(wait_until(lambda: self.server.log_text().count(why) > before, IO_TIMEOUT),
                        "no %r for %r: %s" % (why, data, self.server.log_text(last=5)))

    def test_no_header(self):
        self.refused(scope_request(), "sent no valid PROXY header")
        self.assert_serving()

    def test_malformed_v1(self):
        for line in (b"PROXY TCP4 1.2.3 192.0.2.10 1 2\r\n",          # bad address
                     b"PROXY TCP4 1.2.3.4 192.0.2.10 65536 2\r\n",    # port too large
                     b"PROXY TCP4 1.2.3.4 192.0.2.10 01 2\r\n",       # leading zero
                     b"PROXY TCP6 1.2.3.4 192.0.2.10 1 2\r\n",        # family mismatch
                     b"PROXY TCP4 1.2.3.4 192.0.2.10 1 2 3\r\n",      # a field too many
                     b"PROXY TCP4 1.2.3.4 192.0.2.10 1 2\n",          # no CR
                     b"PROXY UDP4 1.2.3.4 192.0.2.10 1 2\r\n"):       # not TCP
            self.refused(line + scope_request(), "sent a malformed PROXY header")
        self.refused(b"PROXY TCP4 " + b"1" * 120 + b"\r\n", "sent no valid PROXY header")
        self.assert_serving()

    def test_malformed_v2(self):
        self.refused(v2_header("1.2.3.4", "5.6.7.8", 1, 2, version=1), "sent a malformed PROXY header")
        self.refused(v2_header("1.2.3.4", "5.6.7.8", 1, 2, command=0x2), "sent a malformed PROXY header")
        self.refused(v2_header("1.2.3.4", "5.6.7.8", 1, 2, family=0x12), "sent a malformed PROXY header")
        # A length the addresses do not fill.
        self.refused(V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x01\x02\x03\x04",
                     "sent a malformed PROXY header")
        # Longer than cserve takes (16 + 4096).
        self.refused(V2_SIGNATURE + b"\x21\x11\x20\x00" + b"\x00" * 64, "sent no valid PROXY header")
        self.assert_serving()

    def test_client_that_leaves_mid_header(self):
        s = self.connect()
        s.sendall(b"PROXY TCP4 1.2.3.4")
        s.close()
        self.assertTrue(wait_until(lambda: "left before its PROXY header was whole"
                                   in self.server.log_text(), IO_TIMEOUT))
        self.assert_serving()


class UntrustedPeerTests(ProxyProtocolTestCase):

    SERVER_ARGS = ("--proxy-protocol", "--forwarded-allow-ips", "10.0.0.1")

    def test_peer_not_trusted_is_closed(self):
        s = self.connect()
        s.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.10 1 2\r\n" + scope_request())
        self.assertTrue(closed_without_answer(s))
        self.assertTrue(wait_until(lambda: "is not in --forwarded-allow-ips"
                                   in self.server.log_text(), IO_TIMEOUT))


class TlsTests(ProxyProtocolTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cserve-proxy-protocol-")
        cls.cert = os.path.join(cls.dir, "server.pem")
        key = os.path.join(cls.dir, "server.key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cls.cert, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=RUN_TIMEOUT)
        cls.server = Httpbin("--proxy-protocol", "--ssl-certfile", cls.cert, "--ssl-keyfile", key)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def test_header_then_tls(self):
        for header in (b"PROXY TCP4 203.0.113.7 192.0.2.10 9 443\r\n",
                       v2_header("203.0.113.7", "192.0.2.10", 9, 443)):
            raw = self.connect()
            raw.sendall(header)
            ctx = ssl.create_default_context(cafile=self.cert)
            s = ctx.wrap_socket(raw, server_hostname=HOST)
            s.sendall(scope_request())
            status, _, body = read_response(s)
            scope = json.loads(body)
            self.assertEqual((scope["scheme"], scope["client"]), ("https", ["203.0.113.7", 9]))
            self.assertIn("tls", scope)
            s.close()


class RealBalancerTests(unittest.TestCase):
    """nginx (stream module, `proxy_protocol on`: v1) and HAProxy (`send-proxy-v2`) in front
    of httpbin; a client through them is seen as itself (127.0.0.1 with its own port)."""

    def setUp(self):
        self.server = Httpbin("--proxy-protocol")
        self.addCleanup(self.check_server)
        self.dir = tempfile.mkdtemp(prefix="cserve-balancer-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def check_server(self):
        try:
            report = self.server.sanitizer_report()
            self.assertIsNone(report, report)
            self.assertEqual(self.server.stop(check=False), 0, self.server.log_text(last=30))
        finally:
            self.server.kill()

    def free_port(self):
        with socket.socket() as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]

    def through(self, port):
        """/scope through the balancer: (the scope, the client socket's own port)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            try:
                s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with s:
            s.sendall(scope_request())
            status, _, body = read_response(s)
            self.assertEqual(status, 200, body)
            return json.loads(body), s.getsockname()[1]

    def test_nginx_stream_proxy_protocol(self):
        module = "/usr/lib/nginx/modules/ngx_stream_module.so"
        if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) or not os.path.exists(module):
            self.skipTest("nginx with its stream module is not installed (scripts/setup.sh)")
        port = self.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
load_module %s;
daemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 64; }
stream {
    server {
        listen 127.0.0.1:%d;
        proxy_pass 127.0.0.1:%d;
        proxy_protocol on;
    }
}
""" % (module, self.dir, self.dir, port, self.server.port))
        nginx = Process(["/usr/sbin/nginx", "-c", conf, "-e", os.path.join(self.dir, "error.log")])
        self.addCleanup(nginx.kill)
        scope, own_port = self.through(port)
        self.assertEqual(scope["client"], ["127.0.0.1", own_port])
        self.assertEqual(scope["server"], ["127.0.0.1", port])

    def test_haproxy_send_proxy_v2(self):
        if not shutil.which("haproxy") and not os.path.exists("/usr/sbin/haproxy"):
            self.skipTest("haproxy is not installed (scripts/setup.sh)")
        port = self.free_port()
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("""
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:%d
    default_backend back
backend back
    server httpbin 127.0.0.1:%d send-proxy-v2
""" % (port, self.server.port))
        haproxy = Process(["/usr/sbin/haproxy", "-db", "-f", conf])
        self.addCleanup(haproxy.kill)
        scope, own_port = self.through(port)
        self.assertEqual(scope["client"], ["127.0.0.1", own_port])
        self.assertEqual(scope["server"], ["127.0.0.1", port])


def main():
    httpbin_main(__file__, WATCHDOG, lambda path: globals().update(HTTPBIN=path))


if __name__ == "__main__":
    main()
