#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""httpbin behind a real nginx, the way it is deployed: over TCP and over a Unix socket.

Run as:

    /usr/bin/python3 tests/integration/nginx_test.py --httpbin PATH --hello PATH [unittest args]

(--hello is accepted for the shared command line and not used.) Skipped where
/usr/sbin/nginx is not installed (scripts/setup.sh installs it).

nginx (NGINX_CONF, which includes docs/nginx/cserve-proxy.conf, the settings docs/deploy.md
shows) proxies to two httpbins, one on 127.0.0.1 and one on a Unix socket, with keep-alive
upstream connections, the WebSocket upgrade headers, X-Forwarded-For and -Proto, unbuffered
requests and responses; it listens on cleartext HTTP/1.1 and on TLS with HTTP/2. The tests: keep-alive upstream connections (many
requests, few connections on httpbin's side), the client's address and scheme through the
proxy (X-Forwarded-For, trusted by --forwarded-allow-ips), a streamed 16 MiB upload
(counted), an 8 KiB one echoed, and a 64 MiB download, checked
byte for byte, a WebSocket echoed through nginx, and HTTP/2 from the
client to nginx over TLS. Each through both upstreams. After every test the httpbins' logs are
checked for sanitizer reports.
"""

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import httpx
import websockets.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, RUN_TIMEOUT, RUNNING_OR_UDS_RE, CheckedServer, Process, env_with,
    httpbin_main, wait_until)

HTTPBIN = None
NGINX = "/usr/sbin/nginx"
WATCHDOG = 150


# The proxy settings docs/deploy.md recommends, from the file it shows.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROXY_CONF = os.path.join(ROOT, "docs", "nginx", "cserve-proxy.conf")

# @DIR@, @PORT@ (cleartext), @TLS_PORT@, @UDS_PORT@ (cleartext, to the Unix-socket httpbin),
# @TCP_UPSTREAM@ and @UDS_PATH@ are filled in.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;

    upstream cserve_tcp {
        server @TCP_UPSTREAM@;
        keepalive 16;
    }
    upstream cserve_uds {
        server unix:@UDS_PATH@;
        keepalive 16;
    }

    # "Connection: upgrade" for a WebSocket, else nothing: the upstream connection stays open.
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    include @PROXY_CONF@;

    server {
        listen 127.0.0.1:@PORT@;
        location / { proxy_pass http://cserve_tcp; }
    }
    server {
        listen 127.0.0.1:@UDS_PORT@;
        location / { proxy_pass http://cserve_uds; }
    }
    server {
        listen 127.0.0.1:@TLS_PORT@ ssl http2;
        ssl_certificate @DIR@/cert.pem;
        ssl_certificate_key @DIR@/key.pem;
        location / { proxy_pass http://cserve_tcp; }
    }
}
"""


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def expected_bytes(n):
    pattern = bytes(ord("a") + i % 26 for i in range(26))
    return (pattern * (n // 26 + 1))[:n]


def established_to(port):
    """TCP connections established to 127.0.0.1:port (the server's side), from ss."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout
    return len([line for line in out.splitlines() if line.strip()])


class Httpbin(CheckedServer):
    def __init__(self, *args):
        super().__init__(HTTPBIN, *args, env=env_with(), no_core=True,
                         running_re=RUNNING_OR_UDS_RE)



@unittest.skipUnless(os.access(NGINX, os.X_OK), NGINX + " is not installed (scripts/setup.sh)")
class BehindNginxTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cserve-nginx-")
        os.chmod(cls.dir, 0o755)  # nginx's workers (user nobody) reach the Unix socket
        cls.uds = os.path.join(cls.dir, "httpbin.sock")
        cls.tcp = Httpbin()
        # A Unix-socket peer has no address to trust: as with uvicorn, "*" trusts whoever can
        # reach the socket (nginx here; the socket's permissions decide who that is).
        cls.unix = Httpbin("--uds", cls.uds, "--forwarded-allow-ips", "*")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", os.path.join(cls.dir, "key.pem"),
             "-out", os.path.join(cls.dir, "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=RUN_TIMEOUT)
        cls.port, cls.uds_port, cls.tls_port = free_port(), free_port(), free_port()
        conf = NGINX_CONF
        for k, v in {"@DIR@": cls.dir, "@PORT@": cls.port, "@TLS_PORT@": cls.tls_port,
                     "@UDS_PORT@": cls.uds_port, "@TCP_UPSTREAM@": "%s:%d" % (HOST, cls.tcp.port),
                     "@UDS_PATH@": cls.uds, "@PROXY_CONF@": PROXY_CONF}.items():
            conf = conf.replace(k, str(v))
        path = os.path.join(cls.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        cls.nginx = Process([NGINX, "-c", path, "-e", os.path.join(cls.dir, "error.log")])
        ok = wait_until(lambda: all(cls.connects(p) for p in (cls.port, cls.uds_port, cls.tls_port)),
                        IO_TIMEOUT * 2)
        if not ok:
            cls.tearDownClass()
            raise AssertionError("nginx did not start: %s" % cls.nginx.log_text())

    @classmethod
    def connects(cls, port):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            return False

    @classmethod
    def tearDownClass(cls):
        cls.nginx.kill()
        reports = []
        for srv in (cls.tcp, cls.unix):
            try:
                srv.stop(check=False)
                reports.append(srv.sanitizer_report())
            finally:
                srv.kill()
        shutil.rmtree(cls.dir, ignore_errors=True)
        for r in reports:
            if r:
                raise AssertionError("a sanitizer report in a server's log:\n%s" % r)

    def tearDown(self):
        for srv in (self.tcp, self.unix):
            report = srv.sanitizer_report()
            self.assertIsNone(report, report)
            self.assertIsNone(srv.proc.poll(), srv.log_text(last=30))

    def fronts(self):
        """(name, nginx's cleartext URL prefix) for the TCP and the Unix-socket upstream."""
        return [("tcp", "http://%s:%d" % (HOST, self.port)),
                ("uds", "http://%s:%d" % (HOST, self.uds_port))]

    def test_deploy_md_shows_the_proxy_settings_tested_here(self):
        with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
            doc = f.read()
        with open(PROXY_CONF) as f:
            conf = f.read()
        self.assertIn(conf.strip(), doc, "docs/deploy.md and docs/nginx/cserve-proxy.conf differ")

    def test_keep_alive_upstream_connections(self):
        with httpx.Client(timeout=IO_TIMEOUT) as client:
            for i in range(40):
                r = client.get("http://%s:%d/bytes/%d" % (HOST, self.port, 100 + i),
                               headers={"connection": "close"})  # a new client connection each
                self.assertEqual(r.content, expected_bytes(100 + i))
        # nginx kept its upstream connections open and reused them.
        n = established_to(self.tcp.port)
        self.assertGreaterEqual(n, 1)
        self.assertLessEqual(n, 4, "nginx opened a connection per request")

    def test_client_address_and_scheme_through_the_proxy(self):
        for name, base in self.fronts():
            with self.subTest(upstream=name):
                r = httpx.get(base + "/scope", headers={"x-forwarded-for": "203.0.113.5"},
                              timeout=IO_TIMEOUT)
                scope = json.loads(r.content)
                # nginx appends its peer (127.0.0.1, trusted): the client is the one before it.
                self.assertEqual(scope["client"][0], "203.0.113.5", scope)
                self.assertEqual(scope["scheme"], "http")
        r = httpx.get("https://%s:%d/scope" % (HOST, self.tls_port), verify=False,
                      timeout=IO_TIMEOUT)
        scope = json.loads(r.content)
        self.assertEqual((scope["scheme"], scope["client"][0]), ("https", "127.0.0.1"))
        self.assertEqual(scope["http_version"], "1.1")  # nginx to httpbin

    def test_streamed_upload_and_download(self):
        body = os.urandom(16 * 1024 * 1024)

        def pieces():
            for i in range(0, len(body), 256 * 1024):
                yield body[i:i + 256 * 1024]

        for name, base in self.fronts():
            with self.subTest(upstream=name):
                with httpx.Client(timeout=IO_TIMEOUT * 4) as client:
                    r = client.post(base + "/upload", content=pieces())  # chunked
                    self.assertEqual((r.status_code, r.json()), (200, {"bytes": len(body)}))
                    # Echoed: nginx stops sending a request body upstream once it has sent
                    # the response head on (ngx_http_upstream_send_request_handler), so an
                    # echo that answers as the body arrives gets only what nginx forwarded
                    # before then (docs/deploy.md). Sent in one write and smaller than
                    # nginx's client body buffer (16 KiB), the body goes up with the head.
                    self.assertEqual(self.echo(base, body[:8192]), body[:8192])
                    n = 64 * 1024 * 1024
                    h = hashlib.sha256()
                    total = 0
                    with client.stream("GET", base + "/bytes/%d" % n) as r:
                        for chunk in r.iter_bytes():
                            h.update(chunk)
                            total += len(chunk)
                    self.assertEqual(total, n)
                    self.assertEqual(h.hexdigest(), hashlib.sha256(expected_bytes(n)).hexdigest())

    def echo(self, base, body):
        """POST /echo of `body` (head and body in one write) over a raw socket: the echoed
        body."""
        host, port = base.replace("http://", "").split(":")
        s = socket.create_connection((host, int(port)), timeout=IO_TIMEOUT * 2)
        with s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body) + body)
            data = bytearray()
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:200])
        if b"transfer-encoding: chunked" in head.lower():
            out = bytearray()
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size.split(b";")[0], 16)
                if n == 0:
                    break
                out += rest[:n]
                rest = rest[n + 2:]
            return bytes(out)
        return rest

    def test_websocket_through_nginx(self):
        async def run(url):
            async with websockets.client.connect(url, open_timeout=IO_TIMEOUT) as ws:
                await ws.send("through nginx")
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO_TIMEOUT), "through nginx")
                await ws.send(b"\x00" * 100000)
                self.assertEqual(await asyncio.wait_for(ws.recv(), IO_TIMEOUT), b"\x00" * 100000)

        for name, base in self.fronts():
            with self.subTest(upstream=name):
                asyncio.run(run(base.replace("http://", "ws://") + "/ws/echo"))

    def test_http2_from_the_client_to_nginx(self):
        r = subprocess.run(["curl", "-sS", "-k", "--http2", "--max-time", "9",
                            "-w", "\n%{http_version}", "https://%s:%d/scope" % (HOST, self.tls_port)],
                           capture_output=True, timeout=RUN_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, version = r.stdout.rpartition(b"\n")
        self.assertEqual(version, b"2")
        self.assertEqual(json.loads(body)["scheme"], "https")
        with httpx.Client(http2=False, verify=False, timeout=IO_TIMEOUT) as client:
            self.assertEqual(client.get("https://%s:%d/bytes/70000" % (HOST, self.tls_port)).content,
                             expected_bytes(70000))


def main():
    httpbin_main(__file__, WATCHDOG, lambda path: globals().update(HTTPBIN=path))


if __name__ == "__main__":
    main()
