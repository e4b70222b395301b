#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Black-box tests of cserve's TLS (https and wss), driven through the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/tls_test.py --httpbin PATH --hello PATH [unittest args]

The certificates are made by this script, in a temporary directory, with the `openssl`
command: an EC P-256 CA, a server certificate for localhost and 127.0.0.1 (and a second one,
for rotation), its key also encrypted with a password, client certificates from that CA
(one directly, one under an intermediate CA), and a client certificate from another CA.

Covers: https round trips (a 5 MiB body through /echo), keep-alive and pipelining over one
TLS connection, concurrent TLS clients; ALPN (h2 preferred to http/1.1, http/1.1 when only
it is offered, a client offering only h2 refused under --no-http2); mutual TLS
(--ssl-cert-reqs 2, also on a resumed session) and optional client
certificates (--ssl-cert-reqs 1, also over wss), with every field
of the ASGI "tls" extension in /scope checked against what openssl and the client see (the
certificates' DER, the subject in RFC 4514 form, the TLS version, the IANA id of the cipher
suite); --ssl-ciphers; TLS 1.0 and 1.1 refused (Python's ssl and `openssl s_client`); plain
HTTP sent to the TLS port; silent clients cut off by --timeout-request-header (the handshake
counts); bad certificate, key, CA file, password or flags at start (exit status 2, one
`Error:` line naming the file, nothing listening), the encrypted key with its password, the
key read from the certificate file, the CSERVE_SSL_* variables; wss (a 5 MiB binary message,
text, /ws/scope); close_notify and a bare FIN from clients, and close_notify from the server
on a graceful shutdown; with --workers 2, certificate rotation on SIGHUP under load (no
request lost, a file that no longer loads keeps the current certificate) and TLS session
resumption in every worker (Python's ssl and `openssl s_client -reconnect`).

Every test talks to 127.0.0.1 only, every socket and subprocess operation is bounded by a
timeout, and a watchdog aborts the whole run if it ever takes too long.
"""

import asyncio
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

import httpx
import websockets
import websockets.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cserve_harness  # noqa: E402
from cserve_harness import (  # noqa: E402
    all_stats, children, env_with, proc_stat, wait_until,
    Closed, EXIT_TIMEOUT, HOST, IO_TIMEOUT, RUN_TIMEOUT, Server, die_with_parent, parse_args,
    require_executable, run_tests)

# Set from the command line in main().
HTTPBIN = None
HELLO = None

# The certificates, made once in setUpModule().
CERTS = None

# The password of the encrypted copy of the server key.
KEY_PASSWORD = "correct horse battery staple"

# How long the workers of --workers 2 may take to start, or to be replaced by a SIGHUP.
WORKER_TIMEOUT = 15.0
# The whole run (an ASan build is about three times slower than a release one).
WATCHDOG = 200

STARTUP_COMPLETE = re.compile(r"Application startup complete\.")
TLS_KEYS = {"server_cert", "client_cert_chain", "client_cert_name", "client_cert_error",
            "tls_version", "cipher_suite"}


def pem_der(path_or_text):
    """The DER of the first certificate in a PEM file (or PEM text)."""
    text = path_or_text
    if not text.lstrip().startswith("-----BEGIN"):
        with open(path_or_text) as f:
            text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", text, re.S)
    assert m, "no certificate in %r" % path_or_text[:100]
    return ssl.PEM_cert_to_DER_cert(m.group(0))


# ---------------------------------------------------------------------------------------
# Certificates, made with the openssl command
# ---------------------------------------------------------------------------------------

def openssl(*args, input=None):
    """Runs `openssl args...`; its stdout (text). Fails the run if it fails."""
    r = subprocess.run(["openssl"] + list(args), input=input, capture_output=True,
                       timeout=RUN_TIMEOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                             r.stderr))
    return r.stdout


CA_EXT = """\
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""
SUB_CA_EXT = CA_EXT + "authorityKeyIdentifier = keyid:always\n"
SERVER_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
CLIENT_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class Certs:
    """Every certificate and key the tests use, as paths in a temporary directory."""

    def __init__(self, directory):
        self.dir = directory
        self._serial = 1
        p = self.path
        for name, text in (("ca.ext", CA_EXT), ("sub-ca.ext", SUB_CA_EXT),
                           ("server.ext", SERVER_EXT), ("client.ext", CLIENT_EXT)):
            with open(p(name), "w") as f:
                f.write(text)

        self.ca, self.ca_key = self.self_signed("ca", "/CN=cserve test CA")
        self.server, self.server_key = self.issue("server", "/CN=localhost", "server.ext")
        # The second server certificate (another key): for rotation, and the key that does
        # not match the first.
        self.server2, self.server2_key = self.issue("server2", "/O=rotated/CN=localhost",
                                                    "server.ext")
        self.server_key_enc = p("server-enc.key")
        openssl("pkey", "-in", self.server_key, "-aes256", "-passout", "pass:" + KEY_PASSWORD,
                "-out", self.server_key_enc)
        # The certificate and its key in one file (--ssl-certfile alone).
        self.combined = self.concat("combined.pem", self.server, self.server_key)

        # A client certificate with a subject that RFC 4514 must escape (the comma).
        self.client, self.client_key = self.issue(
            "client", "/C=DE/O=cserve tests, inc./OU=integration/CN=test client", "client.ext")
        # A client certificate under an intermediate CA, sent with the intermediate.
        self.inter, self.inter_key = self.issue("inter", "/CN=cserve test intermediate CA",
                                                "sub-ca.ext")
        self.leaf, self.leaf_key = self.issue("leaf", "/O=cserve tests/CN=chained client",
                                              "client.ext", ca=(self.inter, self.inter_key))
        self.leaf_chain = self.concat("leaf-chain.pem", self.leaf, self.inter)
        # A client certificate from a CA the server does not trust.
        self.other_ca, self.other_ca_key = self.self_signed("other-ca", "/CN=some other CA")
        self.other_client, self.other_client_key = self.issue(
            "other-client", "/CN=stranger", "client.ext", ca=(self.other_ca, self.other_ca_key))

        self.garbage = p("garbage.pem")
        with open(self.garbage, "w") as f:
            f.write("this is not a PEM file\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def new_key(self, name):
        key = self.path(name + ".key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", key)
        return key

    def self_signed(self, name, subject):
        key = self.new_key(name)
        pem = self.path(name + ".pem")
        csr = self.path(name + ".csr")
        openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-signkey", key, "-days", "2",
                "-extfile", self.path("ca.ext"), "-out", pem)
        return pem, key

    def issue(self, name, subject, ext, ca=None):
        ca_pem, ca_key = ca or (self.ca, self.ca_key)
        key = self.new_key(name)
        pem = self.path(name + ".pem")
        csr = self.path(name + ".csr")
        self._serial += 1
        openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                "-set_serial", str(self._serial), "-days", "2", "-extfile", self.path(ext),
                "-out", pem)
        return pem, key

    def concat(self, name, *parts):
        out = self.path(name)
        with open(out, "w") as f:
            for part in parts:
                with open(part) as g:
                    f.write(g.read())
        return out


def subject_rfc4514(pem):
    """The certificate's subject as `openssl x509 -subject -nameopt RFC2253` prints it."""
    out = openssl("x509", "-in", pem, "-noout", "-subject", "-nameopt", "RFC2253").strip()
    assert out.startswith("subject="), out
    return out[len("subject="):].strip()


def cipher_ids():
    """{OpenSSL or IANA cipher name: its 16-bit IANA id}, from `openssl ciphers -V`."""
    ids = {}
    for line in openssl("ciphers", "-V", "ALL:@SECLEVEL=0").splitlines():
        m = re.match(r"\s*0x([0-9A-Fa-f]{2}),0x([0-9A-Fa-f]{2})\s+-\s+(\S+)", line)
        if m:
            ids[m.group(3)] = int(m.group(1) + m.group(2), 16)
    assert ids.get("TLS_AES_256_GCM_SHA384") == 0x1302, ids
    return ids


def setUpModule():  # noqa: N802 -- unittest's name
    global CERTS
    directory = tempfile.mkdtemp(prefix="cserve-tls-test-")
    try:
        CERTS = Certs(directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def tearDownModule():  # noqa: N802
    if CERTS is not None:
        shutil.rmtree(CERTS.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------

def client_context(cert=None, key=None, alpn=None, max_version=None, ciphers=None,
                   cafile=None):
    """A client context that trusts the test CA and checks the server's name (127.0.0.1);
    with cert (and key), it presents that client certificate (chain)."""
    ctx = ssl.create_default_context(cafile=cafile or CERTS.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def old_tls_context(version):
    """A client context that offers only `version` (TLS 1.0 or 1.1), which OpenSSL 3 only
    does at security level 0."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CERTS.ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


class TlsConn(cserve_harness.RawConn):
    """One TLS connection to 127.0.0.1:port speaking HTTP/1.1 by hand (the harness's
    RawConn over an ssl socket): the handshake is done by the constructor. wrap_kw go to
    SSLContext.wrap_socket (session, suppress_ragged_eofs)."""

    def __init__(self, port, ctx=None, timeout=IO_TIMEOUT, **wrap_kw):
        self.port = port
        self.buf = bytearray()
        raw = socket.create_connection((HOST, port), timeout=timeout)
        try:
            self.sock = (ctx or client_context()).wrap_socket(raw, server_hostname=HOST,
                                                              **wrap_kw)
        except BaseException:
            raw.close()
            raise

    def json(self, path):
        status, _, body = self.request(path)
        assert status == 200, (status, body[:200])
        return json.loads(body)

    def peer_der(self):
        return self.sock.getpeercert(binary_form=True)

    def info(self):
        """What the client saw of the connection (kept once it is closed)."""
        return TlsInfo(self.sock)


class TlsInfo:
    """The client's view of a TLS connection: version ("TLSv1.3"), cipher (OpenSSL's or
    IANA's name), der (the server's certificate), alpn, reused."""

    def __init__(self, sock):
        self.version = sock.version()
        self.cipher = sock.cipher()[0]
        self.der = sock.getpeercert(binary_form=True)
        self.alpn = sock.selected_alpn_protocol()
        self.reused = sock.session_reused


def tls_get(port, path, ctx=None, **wrap_kw):
    """GET path on a TLS connection of its own: (status, body, the server's certificate
    as DER, TlsInfo)."""
    with TlsConn(port, ctx, **wrap_kw) as c:
        status, _, body = c.request(path, close=True)
        return status, body, c.peer_der(), c.info()


def tls_scope(port, ctx=None, **wrap_kw):
    """GET /scope on a TLS connection of its own: (the scope, TlsInfo)."""
    with TlsConn(port, ctx, **wrap_kw) as c:
        return c.json("/scope"), c.info()


def refused_outcome(port, ctx):
    """What a GET /scope over a new TLS connection with ctx got, where the server is to
    refuse it: None if it was refused (the handshake failed, or the connection was closed
    before any response), else a description of the response."""
    try:
        with TlsConn(port, ctx) as c:
            c.send("/scope")
            status, _, body = c.response()
            return "a response: %d %r" % (status, body[:200])
    except socket.timeout:  # before OSError: it is one
        return "no answer within %.0f s" % IO_TIMEOUT
    except (ssl.SSLError, Closed, ConnectionError):
        return None
    except OSError as e:
        return "an unexpected error: %r" % e


def handshake_error(port, ctx):
    """The ssl.SSLError of a handshake the server is to refuse (None if it completed)."""
    raw = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    try:
        ctx.wrap_socket(raw, server_hostname=HOST).close()
    except ssl.SSLError as e:
        return e
    finally:
        raw.close()
    return None


def https_client(**kw):
    kw.setdefault("timeout", IO_TIMEOUT)
    kw.setdefault("verify", client_context())
    return httpx.Client(trust_env=False, **kw)


def https_url(port, path):
    return "https://%s:%d%s" % (HOST, port, path)


def wait_closed(sock, timeout):
    """Reads until the peer closes sock (EOF or reset), at most timeout seconds: (closed,
    the bytes that came first, seconds waited)."""
    data = b""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, data, time.monotonic() - t0
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, data, time.monotonic() - t0
        except (ConnectionError, ssl.SSLError):
            return True, data, time.monotonic() - t0
        if not chunk:
            return True, data, time.monotonic() - t0
        data += chunk


def run_ws(coro, timeout=IO_TIMEOUT * 4):
    """Runs one asyncio exchange to completion, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wss_connect(port, path, ctx=None, **kw):
    kw.setdefault("open_timeout", IO_TIMEOUT)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("ping_interval", None)
    return websockets.connect("wss://%s:%d%s" % (HOST, port, path),
                              ssl=ctx or client_context(), **kw)


def wss_scope(port, ctx=None):
    """The JSON that /ws/scope sends, and the client's (TLS version, cipher name)."""
    async def exchange():
        async with wss_connect(port, "/ws/scope", ctx) as ws:
            text = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
            ssl_object = ws.transport.get_extra_info("ssl_object")
            seen = ssl_object.version(), ssl_object.cipher()[0]
            try:
                await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
            except websockets.exceptions.ConnectionClosedOK:
                pass
            return json.loads(text), seen
    return run_ws(exchange())


def s_client(port, *args, timeout=RUN_TIMEOUT):
    """`openssl s_client -connect 127.0.0.1:port args...` with stdin at EOF:
    (exit status, stdout + stderr)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------

def tls_args(cert=None, key=None, *extra):
    """The flags of a server with the test's certificate (or cert and key)."""
    return ["--ssl-certfile", cert or CERTS.server, "--ssl-keyfile", key or CERTS.server_key] \
        + list(extra)


def live_children(ppid):
    """The live (not zombie) children of ppid."""
    return sorted(children(ppid))


class Httpbin(Server):
    """An httpbin process (with --workers, a master and its workers) in a session of its
    own, with a clean environment; with workers, the constructor also waits until every
    worker has completed its startup. cleanup() SIGKILLs the whole process group."""

    def __init__(self, *args, workers=None, env=None):
        self.workers = workers
        extra = ["--workers", str(workers)] if workers else []
        super().__init__(HTTPBIN, *(extra + list(args)), env=env or env_with(),
                         no_core=True, new_session=True)
        if workers:
            self.wait_startups(workers)

    def https(self, path="/"):
        return https_url(self.port, path)

    def count(self, regex):
        return sum(1 for line in self.log_lines() if regex.search(line))

    def wait_startups(self, n):
        """Waits until n lines say "Application startup complete."; fails otherwise."""
        def pred(_line):
            return self.count(STARTUP_COMPLETE) >= n
        if not pred(None) and self.wait_for_line(pred, WORKER_TIMEOUT) is None:
            self.cleanup()
            raise AssertionError("%d workers did not start within %.0f s; stderr:\n%s"
                                 % (n, WORKER_TIMEOUT, self.log_text()))

    def expect(self, regex, timeout=WORKER_TIMEOUT):
        rx = re.compile(regex)
        m = self.wait_for_match(rx, timeout)
        if m is None:
            raise AssertionError("no line matching %r within %.1f s; stderr:\n%s"
                                 % (rx.pattern, timeout, self.log_text()))
        return m

    def cleanup(self):
        """SIGKILLs every live process of the session (the master and its workers)."""
        for pid, st in all_stats():
            if st[3] == str(self.pid) and st[0] != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.kill()
        # Workers orphaned by the SIGKILL come to this process (a child subreaper, see
        # main()): reap them.
        me = str(os.getpid())
        for pid, st in all_stats():
            if st[1] == me and st[3] == str(self.pid) and st[0] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass


class TlsTestCase(unittest.TestCase):

    def start(self, *args, **kw):
        """An httpbin for this test, cleaned up whatever happens."""
        srv = Httpbin(*args, **kw)
        self.addCleanup(srv.cleanup)
        return srv

    def stop_ok(self, srv):
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def assert_serves(self, port, msg=""):
        """A fresh https connection gets 200 "Hello, world!" from /."""
        status, body, _, _ = tls_get(port, "/")
        self.assertEqual((status, body), (200, b"Hello, world!"), msg)

    def assert_tls_shape(self, tls):
        self.assertIsInstance(tls, dict)
        self.assertEqual(set(tls), TLS_KEYS, tls)


class SharedTlsServerTestCase(TlsTestCase):
    """One TLS server (tls_args() + SERVER_ARGS) for the whole class."""

    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Httpbin(*(tls_args() + list(cls.SERVER_ARGS)))

    @classmethod
    def tearDownClass(cls):
        server = cls.server
        try:
            rc = server.stop()
        finally:
            server.cleanup()
        if rc != 0:
            raise AssertionError("server exited with status %r after SIGTERM; stderr:\n%s"
                                 % (rc, server.log_text()))

    @property
    def port(self):
        return self.server.port


# ---------------------------------------------------------------------------------------
# https: requests, keep-alive, pipelining, ALPN, the tls extension, versions, plain HTTP
# ---------------------------------------------------------------------------------------

class HttpsTests(SharedTlsServerTestCase):

    def test_running_line_says_https(self):
        self.assertIn("cserve running on https://%s:%d " % (HOST, self.port),
                      self.server.running_line)

    def test_post_5mib_to_echo_comes_back_byte_for_byte(self):
        body = os.urandom(5 * 1024 * 1024)
        with https_client(timeout=IO_TIMEOUT * 4) as client:
            r = client.post(self.server.https("/echo"), content=body,
                            headers={"content-type": "application/octet-stream"})
            self.assertEqual(r.status_code, 200)
            self.assertEqual(len(r.content), len(body))
            self.assertTrue(r.content == body, "the echoed body differs")
            scope = client.get(self.server.https("/scope")).json()
        self.assertEqual(scope["scheme"], "https")
        self.assert_tls_shape(scope["tls"])

    def test_cleartext_server_has_no_tls_key(self):
        plain = self.start()
        r = httpx.get(plain.url("/scope"), timeout=IO_TIMEOUT, trust_env=False)
        self.assertEqual(r.json()["scheme"], "http")
        self.assertNotIn("tls", r.json())
        self.assertNotIn("https://", plain.running_line)

    def test_keep_alive_serves_many_requests_on_one_tls_connection(self):
        with TlsConn(self.port) as c:
            own_port = c.sock.getsockname()[1]
            for i in range(5):
                scope = c.json("/scope?i=%d" % i)
                self.assertEqual(scope["query_string"], "i=%d" % i)
                self.assertEqual(scope["client"], [HOST, own_port])
            status, _, body = c.request("/bytes/100000")
            self.assertEqual((status, len(body)), (200, 100000))
            self.assertEqual(c.json("/scope")["client"], [HOST, own_port])
        # httpx keeps its TLS connection too: every request comes from one client port.
        with https_client() as client:
            ports = {tuple(client.get(self.server.https("/scope")).json()["client"])
                     for _ in range(4)}
        self.assertEqual(len(ports), 1, ports)

    def test_pipelined_requests_answered_in_order(self):
        with TlsConn(self.port) as c:
            c.sock.sendall(b"GET /delay/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /scope?third HTTP/1.1\r\nHost: x\r\n\r\n")
            first = c.response()
            second = c.response()
            third = c.response()
            self.assertEqual((first[0], first[2]), (200, b"done"))
            self.assertEqual((second[0], second[2]), (200, b"abc"))
            self.assertEqual(third[0], 200)
            self.assertEqual(json.loads(third[2])["query_string"], "third")
            # Still open afterwards.
            self.assertEqual(c.request("/bytes/2")[2], b"ab")

    def test_concurrent_tls_connections(self):
        errors = []

        def client(n):
            try:
                with TlsConn(self.port) as c:
                    for i in range(5):
                        status, _, body = c.request("/bytes/%d" % (1000 * n + i))
                        if status != 200 or len(body) != 1000 * n + i:
                            errors.append((n, i, status, len(body)))
            except Exception as e:  # noqa: BLE001 -- every failure counts
                errors.append((n, repr(e)))
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT * 2)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running")
        self.assertEqual(errors, [])

    def assert_speaks_http2(self, c):
        """The server's first frame on an h2 connection is its SETTINGS (RFC 9113 §3.4)."""
        c.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"      # the preface
                       b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS
        head = b""
        while len(head) < 9:
            data = c.sock.recv(9 - len(head))
            self.assertTrue(data, "the connection ended before the server's SETTINGS")
            head += data
        self.assertEqual((head[3], head[5:9]), (4, b"\x00\x00\x00\x00"), head)

    def test_alpn_prefers_h2_then_http11(self):
        # h2 and http/1.1 offered (in either order): h2, the server's preference.
        for offer in (["h2", "http/1.1"], ["http/1.1", "h2"]):
            with self.subTest(offer=offer):
                with TlsConn(self.port, client_context(alpn=offer)) as c:
                    self.assertEqual(c.sock.selected_alpn_protocol(), "h2")
                    self.assert_speaks_http2(c)
        # Only http/1.1 offered: http/1.1.
        with TlsConn(self.port, client_context(alpn=["http/1.1"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(c.request("/")[2], b"Hello, world!")
        # No ALPN offered: none selected, served all the same (HTTP/1.1).
        with TlsConn(self.port, client_context()) as c:
            self.assertIsNone(c.sock.selected_alpn_protocol())
            self.assertEqual(c.request("/")[2], b"Hello, world!")

    def test_alpn_h2_only_negotiates_h2(self):
        with TlsConn(self.port, client_context(alpn=["h2"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "h2")
            self.assert_speaks_http2(c)
        self.assert_serves(self.port)

    def test_alpn_h2_only_is_refused_without_http2(self):
        srv = self.start(*tls_args(None, None, "--no-http2"))
        err = handshake_error(srv.port, client_context(alpn=["h2"]))
        self.assertIsNotNone(err, "a client offering only h2 completed the handshake")
        self.assertIn("no application protocol", str(err).lower())
        # h2 and http/1.1 offered: http/1.1.
        with TlsConn(srv.port, client_context(alpn=["h2", "http/1.1"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(c.request("/")[2], b"Hello, world!")
        self.assert_serves(srv.port)
        self.stop_ok(srv)

    def test_tls_extension_matches_openssl_tls13(self):
        ids = cipher_ids()
        scope, info = tls_scope(self.port)
        tls = scope["tls"]
        self.assert_tls_shape(tls)
        self.assertEqual(scope["scheme"], "https")
        self.assertEqual(pem_der(tls["server_cert"]), pem_der(CERTS.server))
        self.assertEqual(info.version, "TLSv1.3")
        self.assertEqual(tls["tls_version"], 0x0304)
        self.assertEqual(tls["cipher_suite"], ids[info.cipher], info.cipher)
        self.assertEqual(tls["client_cert_chain"], [])
        self.assertIsNone(tls["client_cert_name"])
        self.assertIsNone(tls["client_cert_error"])

    def test_tls_extension_matches_openssl_tls12(self):
        ids = cipher_ids()
        scope, info = tls_scope(self.port, client_context(max_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(info.version, "TLSv1.2")
        self.assertEqual(scope["tls"]["tls_version"], 0x0303)
        self.assertEqual(scope["tls"]["cipher_suite"], ids[info.cipher], info.cipher)
        self.assertEqual(pem_der(scope["tls"]["server_cert"]), pem_der(CERTS.server))
        # Each suite the default --ssl-ciphers allows, forced by the client.
        for name in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                     "ECDHE-ECDSA-CHACHA20-POLY1305"):
            with self.subTest(cipher=name):
                scope, info = tls_scope(self.port, client_context(
                    max_version=ssl.TLSVersion.TLSv1_2, ciphers=name))
                self.assertEqual(info.cipher, name)
                self.assertEqual(scope["tls"]["cipher_suite"], ids[name])
                self.assertEqual(scope["tls"]["tls_version"], 0x0303)
        # A TLS 1.2 suite outside the default list (CBC) is not accepted.
        err = handshake_error(self.port, client_context(
            max_version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA256"))
        self.assertIsNotNone(err, "a CBC suite was accepted")

    def test_tls10_and_tls11_refused_python_client(self):
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=version.name):
                err = handshake_error(self.port, old_tls_context(version))
                self.assertIsNotNone(err, "a %s handshake succeeded" % version.name)
                # The server's protocol_version alert, not a client that could not offer it.
                self.assertIn("protocol version", str(err).lower())
        self.assert_serves(self.port)

    def test_tls10_and_tls11_refused_openssl_s_client(self):
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                rc, out = s_client(self.port, flag, "-cipher", "DEFAULT:@SECLEVEL=0",
                                   "-CAfile", CERTS.ca)
                self.assertNotEqual(rc, 0, out)
                self.assertRegex(out, r"(?m)^New, \(NONE\), Cipher is \(NONE\)$")
                self.assertNotRegex(out, r"(?m)^(New|Reused), TLSv")
                self.assertIn("alert protocol version", out)
        # TLS 1.2 from the same client is fine.
        rc, out = s_client(self.port, "-tls1_2", "-CAfile", CERTS.ca)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(?m)^New, TLSv1\.2, Cipher is ECDHE-")

    def test_renegotiation_is_refused(self):
        # s_client's "R" command asks for a TLS 1.2 renegotiation; the server refuses it
        # (no_renegotiation) and the request after it gets no answer on that connection.
        feed = ("sleep 1; printf 'R\\n'; sleep 1; "
                "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'; sleep 1")
        p = subprocess.run(
            "(%s) | openssl s_client -connect %s:%d -tls1_2 -CAfile %s"
            % (feed, HOST, self.port, CERTS.ca),
            shell=True, capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        self.assertIn("RENEGOTIATING", out)
        self.assertIn("no renegotiation", out)
        self.assertNotIn("Hello, world!", out)
        self.assert_serves(self.port)

    def test_plain_http_to_the_tls_port_is_closed_at_once(self):
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            closed, data, waited = wait_closed(s, 2.0)
        self.assertTrue(closed, "the server did not close a plain HTTP connection within 2 s")
        # Nothing, or a TLS alert record (content type 21): never an HTTP response.
        self.assertTrue(data == b"" or data[:1] == b"\x15", data[:100])
        self.assertNotIn(b"HTTP/", data)
        self.assert_serves(self.port)

    def test_client_close_notify_is_answered_and_server_stays_healthy(self):
        c = TlsConn(self.port)
        try:
            self.assertEqual(c.request("/")[2], b"Hello, world!")
            # unwrap() sends close_notify and reads the server's (RFC 8446 6.1).
            raw = c.sock.unwrap()
            c.sock = raw
            closed, data, _ = wait_closed(raw, 3.0)
            self.assertTrue(closed, "the server did not close the TCP connection after "
                            "close_notify")
            self.assertEqual(data, b"")
        finally:
            c.close()
        self.assert_serves(self.port)

    def test_client_fin_without_close_notify_leaves_server_healthy(self):
        # Mid keep-alive: after a response, the client just closes the socket.
        c = TlsConn(self.port)
        self.assertEqual(c.request("/")[2], b"Hello, world!")
        c.sock.close()   # an SSLSocket's close() sends no close_notify
        self.assert_serves(self.port)
        # Mid request header.
        c = TlsConn(self.port)
        c.sock.sendall(b"GET /scope HTTP/1.1\r\nHos")
        c.sock.close()
        self.assert_serves(self.port)
        # Mid response: 8 MiB asked for, a little read.
        c = TlsConn(self.port)
        c.send("/bytes/8388608")
        c.sock.recv(1000)
        c.sock.close()
        self.assert_serves(self.port)
        with https_client() as client:
            self.assertEqual(client.get(self.server.https("/bytes/5")).content, b"abcde")


class CipherConfigTests(TlsTestCase):

    def test_ssl_ciphers_limits_tls12_suites(self):
        ids = cipher_ids()
        srv = self.start(*tls_args(None, None, "--ssl-ciphers",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"))
        scope, info = tls_scope(srv.port, client_context(max_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(info.cipher, "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertEqual(scope["tls"]["cipher_suite"], ids["ECDHE-ECDSA-CHACHA20-POLY1305"])
        self.assertEqual(scope["tls"]["cipher_suite"], 0xCCA9)
        err = handshake_error(srv.port, client_context(max_version=ssl.TLSVersion.TLSv1_2,
                                                       ciphers="ECDHE+AESGCM"))
        self.assertIsNotNone(err, "a suite outside --ssl-ciphers was accepted")
        # TLS 1.3 suites are OpenSSL's, whatever --ssl-ciphers says.
        scope, info = tls_scope(srv.port)
        self.assertEqual(scope["tls"]["tls_version"], 0x0304)
        self.assertEqual(scope["tls"]["cipher_suite"], ids[info.cipher])
        self.stop_ok(srv)


# ---------------------------------------------------------------------------------------
# Client certificates
# ---------------------------------------------------------------------------------------

class MutualTlsTests(SharedTlsServerTestCase):
    """--ssl-cert-reqs 2: a client certificate from the CA is required."""

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = ("--ssl-ca-certs", CERTS.ca, "--ssl-cert-reqs", "2")
        super().setUpClass()

    def test_valid_client_cert_is_reported(self):
        scope, _ = tls_scope(self.port, client_context(CERTS.client, CERTS.client_key))
        tls = scope["tls"]
        self.assert_tls_shape(tls)
        chain = [pem_der(p) for p in tls["client_cert_chain"]]
        self.assertEqual(chain[0], pem_der(CERTS.client))
        # Then what the client sent after its certificate: OpenSSL's client adds the CA
        # it found in its trust store, where the certificate file has no chain.
        self.assertLessEqual(set(chain[1:]), {pem_der(CERTS.ca)}, tls["client_cert_chain"])
        expected_name = subject_rfc4514(CERTS.client)
        self.assertIn("\\,", expected_name)   # the comma in O= is escaped
        self.assertEqual(tls["client_cert_name"], expected_name)
        self.assertIsNone(tls["client_cert_error"])
        self.assertEqual(pem_der(tls["server_cert"]), pem_der(CERTS.server))

    def test_client_chain_is_reported_leaf_first(self):
        scope, _ = tls_scope(self.port, client_context(CERTS.leaf_chain, CERTS.leaf_key))
        chain = [pem_der(p) for p in scope["tls"]["client_cert_chain"]]
        self.assertEqual(chain, [pem_der(CERTS.leaf), pem_der(CERTS.inter)])
        self.assertEqual(scope["tls"]["client_cert_name"], subject_rfc4514(CERTS.leaf))
        self.assertIsNone(scope["tls"]["client_cert_error"])

    def test_resumed_session_keeps_the_client_identity(self):
        ctx = client_context(CERTS.client, CERTS.client_key)
        with TlsConn(self.port, ctx) as c:
            c.json("/scope")
            session = c.sock.session
        self.assertIsNotNone(session)
        with TlsConn(self.port, ctx, session=session) as c:
            self.assertTrue(c.sock.session_reused, "the session was not resumed")
            tls = c.json("/scope")["tls"]
        self.assertGreaterEqual(len(tls["client_cert_chain"]), 1)
        self.assertEqual(pem_der(tls["client_cert_chain"][0]), pem_der(CERTS.client))
        self.assertEqual(tls["client_cert_name"], subject_rfc4514(CERTS.client))
        self.assertIsNone(tls["client_cert_error"])

    def test_no_client_cert_is_refused(self):
        outcome = refused_outcome(self.port, client_context())
        self.assertIsNone(outcome, "without a client certificate: %s" % outcome)
        self.assert_serves_with_cert()

    def test_client_cert_from_another_ca_is_refused(self):
        outcome = refused_outcome(self.port, client_context(CERTS.other_client,
                                                            CERTS.other_client_key))
        self.assertIsNone(outcome, "with another CA's certificate: %s" % outcome)
        self.assert_serves_with_cert()

    def assert_serves_with_cert(self):
        status, body, _, _ = tls_get(self.port, "/", client_context(CERTS.client,
                                                                    CERTS.client_key))
        self.assertEqual((status, body), (200, b"Hello, world!"))


class OptionalClientCertTests(SharedTlsServerTestCase):
    """--ssl-cert-reqs 1: a certificate is asked for; none, or an invalid one, is served."""

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = ("--ssl-ca-certs", CERTS.ca, "--ssl-cert-reqs", "1")
        super().setUpClass()

    def test_client_cert_is_asked_for_with_the_ca_names(self):
        rc, out = s_client(self.port, "-CAfile", CERTS.ca)
        self.assertEqual(rc, 0, out)
        self.assertIn("Acceptable client certificate CA names", out)
        self.assertRegex(out, r"(?m)^CN ?= ?cserve test CA$")

    def test_no_client_cert_is_served_with_empty_chain(self):
        scope, _ = tls_scope(self.port)
        tls = scope["tls"]
        self.assert_tls_shape(tls)
        self.assertEqual(tls["client_cert_chain"], [])
        self.assertIsNone(tls["client_cert_name"])
        self.assertIsNone(tls["client_cert_error"])

    def test_client_cert_from_another_ca_is_served_with_its_error(self):
        scope, _ = tls_scope(self.port, client_context(CERTS.other_client,
                                                      CERTS.other_client_key))
        tls = scope["tls"]
        self.assertIsInstance(tls["client_cert_error"], str)
        self.assertNotEqual(tls["client_cert_error"].strip(), "")
        self.assertEqual(pem_der(tls["client_cert_chain"][0]), pem_der(CERTS.other_client))
        self.assertEqual(tls["client_cert_name"], subject_rfc4514(CERTS.other_client))

    def test_wss_scope_reports_the_client_cert(self):
        scope, _ = wss_scope(self.port, client_context(CERTS.client, CERTS.client_key))
        self.assertEqual(scope["scheme"], "wss")
        tls = scope["tls"]
        self.assertEqual(pem_der(tls["client_cert_chain"][0]), pem_der(CERTS.client))
        self.assertEqual(tls["client_cert_name"], subject_rfc4514(CERTS.client))
        self.assertIsNone(tls["client_cert_error"])

    def test_valid_client_cert_is_served_without_error(self):
        scope, _ = tls_scope(self.port, client_context(CERTS.client, CERTS.client_key))
        tls = scope["tls"]
        self.assertEqual(pem_der(tls["client_cert_chain"][0]), pem_der(CERTS.client))
        self.assertEqual(tls["client_cert_name"], subject_rfc4514(CERTS.client))
        self.assertIsNone(tls["client_cert_error"])


# ---------------------------------------------------------------------------------------
# Timeouts and shutdown
# ---------------------------------------------------------------------------------------

class SilentClientTests(SharedTlsServerTestCase):
    SERVER_ARGS = ("--timeout-request-header", "1")

    def test_partial_client_hello_is_dropped(self):
        """A record header and nothing more: the handshake does not finish in time."""
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01")
            closed, data, waited = wait_closed(s, 6.0)
        self.assertTrue(closed, "a client stuck in its ClientHello was not dropped")
        self.assertLess(waited, 4.0)
        self.assertGreater(waited, 0.5, "dropped before the timeout")
        self.assert_serves(self.port)

    def test_silent_tcp_client_is_dropped(self):
        """No ClientHello: the handshake counts against --timeout-request-header."""
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as s:
            closed, data, waited = wait_closed(s, 6.0)
        self.assertTrue(closed, "a silent TCP client was not dropped within 6 s")
        self.assertLess(waited, 4.0)
        self.assertGreater(waited, 0.5, "dropped before the timeout")
        self.assertNotIn(b"HTTP/", data)
        self.assert_serves(self.port)

    def test_client_silent_after_the_handshake_is_dropped(self):
        with TlsConn(self.port) as c:
            closed, data, waited = wait_closed(c.sock, 6.0)
        self.assertTrue(closed, "a client silent after its handshake was not dropped")
        self.assertLess(waited, 4.0)
        self.assertGreater(waited, 0.5, "dropped before the timeout")
        self.assertNotIn(b"HTTP/", data)
        self.assert_serves(self.port)


class ShutdownTests(TlsTestCase):

    def assert_close_notify(self, conn):
        """The server ends conn's TLS stream cleanly: close_notify, not a bare FIN (which
        is SSLEOFError with suppress_ragged_eofs=False)."""
        conn.sock.settimeout(IO_TIMEOUT)
        try:
            data = conn.sock.recv(100)
        except ssl.SSLEOFError as e:
            self.fail("the connection ended without close_notify: %r" % e)
        self.assertEqual(data, b"")

    def test_graceful_shutdown_sends_close_notify_to_idle_keep_alive(self):
        srv = self.start(*tls_args())
        idle = TlsConn(srv.port, suppress_ragged_eofs=False)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("/")[2], b"Hello, world!")
        # And one with a request in flight: answered, then closed the same way.
        busy = TlsConn(srv.port, suppress_ragged_eofs=False)
        self.addCleanup(busy.close)
        busy.send("/delay/500")
        time.sleep(0.2)
        srv.send_signal(signal.SIGTERM)
        self.assert_close_notify(idle)
        status, hdrs, body = busy.response()
        self.assertEqual((status, body), (200, b"done"))
        self.assertEqual(hdrs.get("connection"), "close")
        self.assert_close_notify(busy)
        self.assertEqual(srv.wait(EXIT_TIMEOUT), 0, srv.log_text())


# ---------------------------------------------------------------------------------------
# Bad files and flags at start; the password; the key in the certificate file; variables
# ---------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def refused(port):
    try:
        socket.create_connection((HOST, port), timeout=IO_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


class StartupErrorTests(TlsTestCase):

    def start_fails(self, args, expected, unexpected=(), env=None, workers=None):
        """Runs httpbin with args on a free port; asserts exit status 2, exactly one stderr
        line, `Error: ...` with each of `expected` in it and none of `unexpected`, and
        nothing listening."""
        port = free_port()
        cmd = [HTTPBIN, "--port", str(port)] + (["--workers", str(workers)] if workers else []) \
            + list(args)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           env=env_with(**(env or {})), timeout=RUN_TIMEOUT,
                           preexec_fn=lambda: die_with_parent(no_core=True))
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 2, "%r: %s" % (cmd, err))
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "%r: %s" % (cmd, err))
        self.assertTrue(lines[0].startswith("Error: "), lines[0])
        for text in expected:
            self.assertIn(text, lines[0])
        for text in unexpected:
            self.assertNotIn(text, lines[0])
        self.assertTrue(refused(port), "something listens on %d after %r" % (port, cmd))
        return lines[0]

    def cases(self):
        """(what is wrong, the flags, what the error line says, what it must not say)."""
        c = CERTS
        missing = c.path("missing.pem")
        yield ("missing certificate", tls_args(missing, c.server_key),
               ["cannot read certificate file '%s': No such file or directory" % missing])
        yield ("certificate not PEM", tls_args(c.garbage, c.server_key),
               ["certificate file '%s'" % c.garbage])
        yield ("missing key", tls_args(c.server, missing),
               ["cannot read key file '%s': No such file or directory" % missing])
        # A file with no key in it at all is not an encrypted key: no password hint.
        yield ("key not PEM", tls_args(c.server, c.garbage),
               ["cannot load key file '%s'" % c.garbage], ["encrypted", "password"])
        yield ("key of another certificate", tls_args(c.server, c.server2_key),
               ["key file '%s' does not match certificate file '%s'"
                % (c.server2_key, c.server)])
        yield ("no key in the certificate file", ["--ssl-certfile", c.server],
               ["key file '%s'" % c.server], ["encrypted", "password"])
        yield ("wrong password",
               tls_args(c.server, c.server_key_enc, "--ssl-keyfile-password", "wrong"),
               ["cannot load key file '%s'" % c.server_key_enc,
                "(wrong --ssl-keyfile-password?)"])
        yield ("encrypted key without password", tls_args(c.server, c.server_key_enc),
               ["cannot load key file '%s'" % c.server_key_enc, "encrypted",
                "--ssl-keyfile-password"])
        yield ("missing CA file",
               tls_args(None, None, "--ssl-ca-certs", missing, "--ssl-cert-reqs", "2"),
               ["CA file '%s'" % missing, "No such file or directory"])
        yield ("CA file not PEM",
               tls_args(None, None, "--ssl-ca-certs", c.garbage, "--ssl-cert-reqs", "2"),
               ["CA file '%s'" % c.garbage])
        yield ("bad --ssl-ciphers", tls_args(None, None, "--ssl-ciphers", "NO-SUCH-CIPHER"),
               ["--ssl-ciphers", "NO-SUCH-CIPHER"])
        yield ("--ssl-cert-reqs 2 without --ssl-ca-certs",
               tls_args(None, None, "--ssl-cert-reqs", "2"), ["--ssl-ca-certs"])
        yield ("--ssl-keyfile without --ssl-certfile", ["--ssl-keyfile", c.server_key],
               ["--ssl-certfile"])
        if os.geteuid() != 0:   # root reads a mode 000 file all the same
            unreadable = c.path("unreadable.pem")
            if not os.path.exists(unreadable):
                shutil.copy(c.server, unreadable)
                os.chmod(unreadable, 0)
            yield ("unreadable certificate", tls_args(unreadable, c.server_key),
                   ["cannot read certificate file '%s': Permission denied" % unreadable])

    def test_bad_files_and_flags_exit_2_with_one_error_line(self):
        for name, args, expected, *unexpected in self.cases():
            with self.subTest(name):
                self.start_fails(args, expected, *unexpected)

    def test_bad_files_and_flags_exit_2_with_workers(self):
        for name, args, expected, *unexpected in self.cases():
            with self.subTest(name):
                self.start_fails(args, expected, *unexpected, workers=2)

    def test_bad_file_from_environment_variable(self):
        missing = CERTS.path("missing-env.pem")
        self.start_fails([], ["certificate file '%s'" % missing],
                         env={"CSERVE_SSL_CERTFILE": missing,
                              "CSERVE_SSL_KEYFILE": CERTS.server_key})

    def test_encrypted_key_with_the_right_password_serves(self):
        srv = self.start(*tls_args(CERTS.server, CERTS.server_key_enc,
                                   "--ssl-keyfile-password", KEY_PASSWORD))
        scope, info = tls_scope(srv.port)
        self.assertEqual(pem_der(scope["tls"]["server_cert"]), pem_der(CERTS.server))
        self.assertEqual(info.der, pem_der(CERTS.server))
        self.stop_ok(srv)

    def test_key_read_from_the_certificate_file(self):
        srv = self.start("--ssl-certfile", CERTS.combined)
        status, body, der, _ = tls_get(srv.port, "/")
        self.assertEqual((status, body), (200, b"Hello, world!"))
        self.assertEqual(der, pem_der(CERTS.server))
        self.stop_ok(srv)

    def test_environment_variables_configure_tls(self):
        srv = self.start(env=env_with(CSERVE_SSL_CERTFILE=CERTS.server,
                                       CSERVE_SSL_KEYFILE=CERTS.server_key_enc,
                                       CSERVE_SSL_KEYFILE_PASSWORD=KEY_PASSWORD,
                                       CSERVE_SSL_CA_CERTS=CERTS.ca,
                                       CSERVE_SSL_CERT_REQS="2",
                                       CSERVE_SSL_CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256"))
        scope, info = tls_scope(srv.port, client_context(CERTS.client, CERTS.client_key))
        self.assertEqual(scope["tls"]["client_cert_name"], subject_rfc4514(CERTS.client))
        self.assertEqual(info.der, pem_der(CERTS.server))
        _, info = tls_scope(srv.port, client_context(CERTS.client, CERTS.client_key,
                                                     max_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(info.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertIsNone(refused_outcome(srv.port, client_context()))
        self.stop_ok(srv)


# ---------------------------------------------------------------------------------------
# wss
# ---------------------------------------------------------------------------------------

class WssTests(SharedTlsServerTestCase):

    def test_echo_5mib_binary_and_text(self):
        big = os.urandom(5 * 1024 * 1024)

        async def exchange():
            async with wss_connect(self.port, "/ws/echo", max_size=2 ** 23,
                                   compression=None) as ws:
                await ws.send(big)
                got_big = await asyncio.wait_for(ws.recv(), IO_TIMEOUT * 2)
                await ws.send("héllo over wss")
                got_text = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
                return got_big, got_text
        got_big, got_text = run_ws(exchange())
        self.assertIsInstance(got_big, bytes)
        self.assertEqual(len(got_big), len(big))
        self.assertTrue(got_big == big, "the echoed binary message differs")
        self.assertEqual(got_text, "héllo over wss")

    def test_scope_has_wss_scheme_and_tls(self):
        scope, (version, cipher) = wss_scope(self.port)
        self.assertEqual(scope["type"], "websocket")
        self.assertEqual(scope["scheme"], "wss")
        tls = scope["tls"]
        self.assert_tls_shape(tls)
        self.assertEqual(pem_der(tls["server_cert"]), pem_der(CERTS.server))
        self.assertEqual(version, "TLSv1.3")
        self.assertEqual(tls["tls_version"], 0x0304)
        self.assertEqual(tls["cipher_suite"], cipher_ids()[cipher])
        self.assertEqual(tls["client_cert_chain"], [])


# ---------------------------------------------------------------------------------------
# --workers 2: certificate rotation on SIGHUP, session resumption in every worker
# ---------------------------------------------------------------------------------------

class RotationLoad:
    """A thread making https requests (GET /pid, a new connection each, the server
    verified against the CA) until stopped; records (time, the server's certificate DER)
    for every answer and every failure."""

    def __init__(self, port):
        self.port = port
        self.ctx = client_context()
        self.lock = threading.Lock()
        self.answers = []     # (monotonic, der)
        self.failures = []    # (monotonic, description)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(IO_TIMEOUT + 2)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                status, body, der, _ = tls_get(self.port, "/pid", self.ctx)
                with self.lock:
                    if status == 200 and body.isdigit():
                        self.answers.append((t0, der))
                    else:
                        self.failures.append((t0, "status %d, body %r" % (status, body[:100])))
            except Exception as e:  # noqa: BLE001 -- every failure counts
                with self.lock:
                    self.failures.append((t0, repr(e)))
                time.sleep(0.01)

    def served(self, since=0.0, der=None):
        with self.lock:
            return sum(1 for t, d in self.answers if t >= since and (der is None or d == der))

    def certs_since(self, since):
        with self.lock:
            return {d for t, d in self.answers if t >= since}


def replace_file(src, dst):
    """Copies src over dst atomically (a temporary file, then rename)."""
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class WorkerTests(TlsTestCase):

    def rotating_server(self):
        """httpbin --workers 2 serving certificate A from files of its own (to be replaced)."""
        cert = CERTS.path("rot-%s.pem" % self.id().rsplit(".", 1)[-1])
        key = cert[:-4] + ".key"
        replace_file(CERTS.server, cert)
        replace_file(CERTS.server_key, key)
        srv = self.start(*tls_args(cert, key), workers=2)
        return srv, cert, key

    def hup_and_wait_for_new_workers(self, srv, old):
        srv.send_signal(signal.SIGHUP)
        new = wait_until(lambda: (lambda kids: kids if len(kids) == 2 and not set(kids) & set(old)
                                  else None)(live_children(srv.pid)), WORKER_TIMEOUT)
        self.assertTrue(new, "the workers were not replaced within %.0f s: %s; stderr:\n%s"
                        % (WORKER_TIMEOUT, live_children(srv.pid), srv.log_text()))
        self.assertTrue(wait_until(lambda: self._old_gone(old), WORKER_TIMEOUT),
                        "old workers still alive")
        return new

    @staticmethod
    def _old_gone(old):
        return all(proc_stat(w) is None or proc_stat(w)[0] == "Z" for w in old)

    def test_hup_rotates_the_certificate_without_losing_a_request(self):
        srv, cert, key = self.rotating_server()
        a, b = pem_der(CERTS.server), pem_der(CERTS.server2)
        old = live_children(srv.pid)
        self.assertEqual(len(old), 2, old)
        load = RotationLoad(srv.port).start()
        self.addCleanup(load.stop)
        self.assertTrue(wait_until(lambda: load.served(der=a) >= 20, WORKER_TIMEOUT),
                        "the load got no answers: %s" % load.failures[:5])

        replace_file(CERTS.server2, cert)
        replace_file(CERTS.server2_key, key)
        t_hup = time.monotonic()
        srv.send_signal(signal.SIGHUP)
        srv.expect(r"Reloaded the TLS certificate and key")
        self.assertTrue(wait_until(lambda: load.served(t_hup, der=b) >= 1, 15.0),
                        "certificate B was not served within 15 s of the SIGHUP; stderr:\n%s"
                        % srv.log_text())
        self.assertTrue(wait_until(lambda: len(live_children(srv.pid)) == 2
                                   and self._old_gone(old), WORKER_TIMEOUT),
                        "old workers still alive; stderr:\n%s" % srv.log_text())
        t_done = time.monotonic()
        self.assertTrue(wait_until(lambda: load.served(t_done) >= 20, WORKER_TIMEOUT))
        load.stop()

        self.assertEqual(load.failures, [], "requests failed across the rotation (HUP at "
                         "%.3f)" % t_hup)
        self.assertEqual(load.certs_since(t_done), {b},
                         "certificate A still served once the old workers were gone")
        self.stop_ok(srv)

    def test_hup_with_a_broken_file_keeps_the_current_certificate(self):
        srv, cert, key = self.rotating_server()
        a = pem_der(CERTS.server)
        old = live_children(srv.pid)
        load = RotationLoad(srv.port).start()
        self.addCleanup(load.stop)
        self.assertTrue(wait_until(lambda: load.served() >= 10, WORKER_TIMEOUT),
                        "the load got no answers: %s" % load.failures[:5])
        # A certificate that does not match the key (another key left in place).
        replace_file(CERTS.server2, cert)
        self.hup_and_wait_for_new_workers(srv, old)
        srv.expect(r"Keeping the current TLS certificate: .*'%s'" % re.escape(key))
        t_done = time.monotonic()
        self.assertTrue(wait_until(lambda: load.served(t_done) >= 10, WORKER_TIMEOUT))
        load.stop()
        self.assertEqual(load.failures, [])
        self.assertEqual(load.certs_since(0), {a})
        self.stop_ok(srv)

    def test_session_resumes_in_every_worker(self):
        srv = self.start(*tls_args(), workers=2)
        ctx = client_context()
        with TlsConn(srv.port, ctx) as c:
            # A TLS 1.3 ticket arrives after the handshake: read a response first.
            status, _, first_pid = c.request("/pid")
            self.assertEqual(status, 200)
            self.assertEqual(c.sock.version(), "TLSv1.3")
            session = c.sock.session
        self.assertIsNotNone(session)
        self.assertTrue(session.has_ticket)

        pids, tries, not_reused = set(), 0, []
        while tries < 60 and (tries < 12 or len(pids) < 2):
            tries += 1
            with TlsConn(srv.port, ctx, session=session) as c:
                if not c.sock.session_reused:
                    not_reused.append(tries)
                status, _, body = c.request("/pid", close=True)
                self.assertEqual(status, 200)
                pids.add(int(body))
        self.assertEqual(not_reused, [], "connections not resumed (of %d)" % tries)
        self.assertGreaterEqual(len(pids), 2, "every resumed connection went to one worker "
                                "(%d connections)" % tries)
        self.assertTrue(pids <= set(live_children(srv.pid)), pids)

        # openssl s_client: 5 reconnections with the session of the first (TLS 1.2: its
        # -reconnect does not wait for a TLS 1.3 ticket).
        rc, out = s_client(srv.port, "-reconnect", "-tls1_2", "-CAfile", CERTS.ca)
        self.assertEqual(rc, 0, out)
        sessions = re.findall(r"(?m)^(New|Reused), TLSv1\.2, Cipher is \S+$", out)
        self.assertEqual(sessions, ["New"] + ["Reused"] * 5, out)
        self.stop_ok(srv)


def main():
    args, rest = parse_args()
    global HTTPBIN, HELLO
    HTTPBIN = args.httpbin
    HELLO = args.hello
    require_executable(HTTPBIN, __file__)
    if shutil.which("openssl") is None:
        sys.exit("%s: the openssl command is needed" % os.path.basename(__file__))
    # Workers orphaned by a killed master come to this process, which reaps them.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    run_tests(rest, WATCHDOG)


if __name__ == "__main__":
    main()
