#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Integration tests for cserve's deployment settings, driven through the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/config_test.py --httpbin PATH --hello PATH [unittest args]

Covers what a process supervisor or a reverse proxy relies on: --uds and --uds-mode, --fd,
systemd socket activation (LISTEN_FDS/LISTEN_PID) and readiness (NOTIFY_SOCKET),
CSERVE_<FLAG> environment variables, --proxy-headers / --forwarded-allow-ips,
--limit-concurrency and --limit-max-requests, and the exit status for bad values.

Every test talks to 127.0.0.1 or a Unix socket in a temporary directory only, every
socket and subprocess operation is bounded by a timeout, and a watchdog aborts the whole
run if it ever takes longer than two minutes.
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cserve_harness  # noqa: E402
from cserve_harness import (  # noqa: E402
    env_with, HOST, IO_TIMEOUT, EXIT_TIMEOUT, RUN_TIMEOUT, RUNNING_OR_UDS_RE, die_with_parent,
    parse_args, require_executable, run_tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Set from the command line in main().
HTTPBIN = None
HELLO = None

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


class Server(cserve_harness.Server):
    """One running httpbin process, where it listens (TCP or a Unix socket: port or uds),
    and every line it wrote to stderr; no core file if it crashes.

    port_zero adds `--port 0`; env replaces the environment; pass_fds are inherited;
    preexec runs in the child after fork (for what only the child knows, such as its pid).
    """

    def __init__(self, *args, **kw):
        super().__init__(HTTPBIN, *args, running_re=RUNNING_OR_UDS_RE, no_core=True, **kw)


def run_httpbin(*args, env=None):
    """Runs httpbin to completion (it is expected to exit by itself)."""
    return subprocess.run([HTTPBIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          env=env, timeout=RUN_TIMEOUT,
                          preexec_fn=lambda: die_with_parent(no_core=True))


def listening_socket():
    """A TCP socket listening on 127.0.0.1 on a free port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, 0))
    s.listen(64)
    return s


# ---------------------------------------------------------------------------------------
# A minimal raw HTTP/1.1 client: one connection, Content-Length framed responses
# ---------------------------------------------------------------------------------------

class RawConn(cserve_harness.RawConn):
    def wait_closed(self, timeout=IO_TIMEOUT):
        """Whether the server closed the connection (EOF or reset) within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False


# ---------------------------------------------------------------------------------------
# --uds and --uds-mode
# ---------------------------------------------------------------------------------------

class UnixSocketTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cserve-uds-")
        self.path = os.path.join(self.tmp.name, "httpbin.sock")

    def tearDown(self):
        self.tmp.cleanup()

    def client(self):
        return httpx.Client(transport=httpx.HTTPTransport(uds=self.path), timeout=IO_TIMEOUT)

    def test_serves_on_the_socket_and_removes_it_at_exit(self):
        srv = Server("--uds", self.path, port_zero=False)
        try:
            self.assertEqual(srv.uds, self.path, srv.running_line)
            with self.client() as c:
                r = c.get("http://localhost/")
                self.assertEqual(r.status_code, 200)
                self.assertEqual(r.text, "Hello, world!")
                scope = c.get("http://localhost/scope").json()
            self.assertEqual(scope["server"], [self.path, 0])
            self.assertIsNone(scope["client"])
            self.assertEqual(scope["scheme"], "http")
            self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
            self.assertEqual(srv.stop(), 0, srv.log_text())
            self.assertFalse(os.path.lexists(self.path), "the socket file is still there after SIGTERM")
        finally:
            srv.kill()

    def test_mode_is_0666_by_default(self):
        srv = Server("--uds", self.path, port_zero=False)
        try:
            mode = stat.S_IMODE(os.lstat(self.path).st_mode)
            self.assertEqual(mode, 0o666, "mode %o" % mode)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_uds_mode_sets_the_mode(self):
        srv = Server("--uds", self.path, "--uds-mode", "600", port_zero=False)
        try:
            mode = stat.S_IMODE(os.lstat(self.path).st_mode)
            self.assertEqual(mode, 0o600, "mode %o" % mode)
            with self.client() as c:
                self.assertEqual(c.get("http://localhost/").status_code, 200)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_a_stale_socket_file_is_replaced(self):
        # What a crashed earlier run leaves: a socket file nobody listens on.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        with self.assertRaises(OSError):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            finally:
                probe.close()

        srv = Server("--uds", self.path, port_zero=False)
        try:
            with self.client() as c:
                self.assertEqual(c.get("http://localhost/").status_code, 200)
            self.assertEqual(srv.stop(), 0, srv.log_text())
            self.assertFalse(os.path.lexists(self.path))
        finally:
            srv.kill()

    def test_a_regular_file_at_the_path_stops_the_start(self):
        with open(self.path, "w") as f:
            f.write("precious")
        p = run_httpbin("--uds", self.path)
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, err)
        self.assertIn(self.path, err)
        self.assertNotIn("running on", err)
        # The file is left alone.
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_a_path_too_long_for_a_socket_address_is_a_start_failure(self):
        # sockaddr_un holds 108 bytes: this path cannot be bound. run() documents exit
        # status 1 for a server that could not start, with the reason logged.
        path = os.path.join(self.tmp.name, "s" * 120 + ".sock")
        p = run_httpbin("--uds", path)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, "exit status %d; stderr:\n%s" % (p.returncode, err))
        self.assertIn(path, err)
        self.assertFalse(os.path.lexists(path))


# ---------------------------------------------------------------------------------------
# --fd and systemd socket activation
# ---------------------------------------------------------------------------------------

class InheritedSocketTests(unittest.TestCase):

    def test_fd_serves_on_the_inherited_socket(self):
        lsock = listening_socket()
        port = lsock.getsockname()[1]
        fd = lsock.fileno()
        srv = None
        try:
            srv = Server("--fd", str(fd), port_zero=False, pass_fds=(fd,))
            self.assertEqual(srv.port, port, srv.running_line)
            r = httpx.get("http://%s:%d/scope" % (HOST, port), timeout=IO_TIMEOUT)
            self.assertEqual(r.status_code, 200)
            self.assertEqual(r.json()["server"], [HOST, port])
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            if srv:
                srv.kill()
            lsock.close()

    def test_fd_bound_but_not_listening_is_served(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        srv = None
        try:
            srv = Server("--fd", str(s.fileno()), port_zero=False, pass_fds=(s.fileno(),))
            self.assertEqual(srv.port, port, srv.running_line)
            r = httpx.get("http://%s:%d/" % (HOST, port), timeout=IO_TIMEOUT)
            self.assertEqual(r.status_code, 200)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            if srv:
                srv.kill()
            s.close()

    def test_fd_unix_socket_is_served_and_its_file_left_alone(self):
        with tempfile.TemporaryDirectory(prefix="cserve-fd-") as tmp:
            path = os.path.join(tmp, "inherited.sock")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(16)
            srv = None
            try:
                srv = Server("--fd", str(s.fileno()), port_zero=False, pass_fds=(s.fileno(),))
                self.assertEqual(srv.uds, path, srv.running_line)
                with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=IO_TIMEOUT) as c:
                    scope = c.get("http://localhost/scope").json()
                self.assertEqual(scope["server"], [path, 0])
                self.assertIsNone(scope["client"])
                self.assertEqual(srv.stop(), 0, srv.log_text())
                # The server did not create the file, so it does not remove it.
                self.assertTrue(os.path.lexists(path), "the inherited socket's file was removed")
            finally:
                if srv:
                    srv.kill()
                s.close()

    def test_fd_that_is_not_a_socket_is_a_start_failure(self):
        p = run_httpbin("--fd", "0")  # stdin: /dev/null
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("fd 0", err)
        self.assertNotIn("running on", err)

    def test_systemd_socket_activation(self):
        lsock = listening_socket()
        port = lsock.getsockname()[1]
        fd = lsock.fileno()

        def activate():
            # In the child, as systemd does it: the socket at fd 3, and LISTEN_PID naming
            # the process that is about to exec (known only here).
            if fd != 3:
                os.dup2(fd, 3)
            os.set_inheritable(3, True)
            os.environ["LISTEN_FDS"] = "1"
            os.environ["LISTEN_PID"] = str(os.getpid())

        srv = None
        try:
            # pass_fds keeps fd 3 from being closed after preexec (it needs fd 3 open here:
            # it is, lsock took the lowest free descriptor and that is 3 or above).
            os.fstat(3)
            srv = Server(port_zero=False, pass_fds=(3,), preexec=activate)
            self.assertEqual(srv.port, port, srv.running_line)
            for _ in range(3):
                r = httpx.get("http://%s:%d/" % (HOST, port), timeout=IO_TIMEOUT)
                self.assertEqual(r.status_code, 200)
                self.assertEqual(r.text, "Hello, world!")
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            if srv:
                srv.kill()
            lsock.close()

    def test_systemd_socket_activate_as_docs_deploy_md_shows(self):
        # The command docs/deploy.md gives for trying the systemd units without systemd:
        # systemd-socket-activate listens, and the first connection starts httpbin on the
        # socket it passes (LISTEN_FDS), with a NOTIFY_SOCKET for Type=notify.
        tool = shutil.which("systemd-socket-activate")
        if not tool:
            self.skipTest("systemd-socket-activate is not installed (Debian's systemd package)")
        with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
            self.assertIn("systemd-socket-activate -l 127.0.0.1:8000 -E NOTIFY_SOCKET=/tmp/notify.sock "
                          "build/examples/httpbin --workers 2", f.read())
        with tempfile.TemporaryDirectory(prefix="cserve-activate-") as tmp:
            path = os.path.join(tmp, "notify.sock")
            ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            ns.bind(path)
            ns.settimeout(IO_TIMEOUT * 2)
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            proc = subprocess.Popen([tool, "-l", "%s:%d" % (HOST, port), "-E", "NOTIFY_SOCKET=" + path,
                                     HTTPBIN, "--workers", "2"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            try:
                deadline = time.monotonic() + IO_TIMEOUT
                while True:
                    try:
                        r = httpx.get("http://%s:%d/pid" % (HOST, port), timeout=IO_TIMEOUT * 2)
                        break
                    except httpx.ConnectError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                self.assertEqual(r.status_code, 200)
                self.assertNotEqual(int(r.text), proc.pid)  # a worker answered
                self.assertEqual(ns.recv(4096), b"READY=1")
                os.killpg(proc.pid, signal.SIGTERM)
                self.assertEqual(proc.wait(EXIT_TIMEOUT * 2), 0, proc.stderr.read().decode())
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                proc.stderr.close()
                ns.close()

    def test_listen_fds_for_another_pid_is_ignored(self):
        # LISTEN_PID names some other process: the variables are not for us, so the
        # server binds --port as usual.
        env = env_with(LISTEN_FDS="1", LISTEN_PID="1")
        srv = Server(env=env)
        try:
            self.assertIsNotNone(srv.port)
            self.assertEqual(httpx.get(srv.url("/"), timeout=IO_TIMEOUT).status_code, 200)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()


# ---------------------------------------------------------------------------------------
# sd_notify
# ---------------------------------------------------------------------------------------

class NotifyTests(unittest.TestCase):

    def test_ready_and_stopping_are_sent_to_notify_socket(self):
        with tempfile.TemporaryDirectory(prefix="cserve-notify-") as tmp:
            path = os.path.join(tmp, "notify")
            ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                ns.bind(path)
                ns.settimeout(IO_TIMEOUT)
                srv = Server(env=env_with(NOTIFY_SOCKET=path))
                try:
                    # The "running on" line is out: READY=1 follows at once, if it did not
                    # come before.
                    self.assertEqual(ns.recv(4096), b"READY=1", srv.log_text())
                    self.assertEqual(httpx.get(srv.url("/"), timeout=IO_TIMEOUT).status_code, 200)
                    # Nothing else while serving.
                    ns.settimeout(0.2)
                    with self.assertRaises((socket.timeout, TimeoutError)):
                        extra = ns.recv(4096)
                        self.fail("unexpected notification %r" % extra)
                    ns.settimeout(IO_TIMEOUT)
                    srv.proc.send_signal(signal.SIGTERM)
                    self.assertEqual(ns.recv(4096), b"STOPPING=1", srv.log_text())
                    self.assertEqual(srv.wait(), 0, srv.log_text())
                finally:
                    srv.kill()
            finally:
                ns.close()

    def test_no_notify_socket_is_fine(self):
        srv = Server(env=env_with())
        try:
            self.assertEqual(httpx.get(srv.url("/"), timeout=IO_TIMEOUT).status_code, 200)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()


# ---------------------------------------------------------------------------------------
# CSERVE_<FLAG> environment variables
# ---------------------------------------------------------------------------------------

class EnvironmentTests(unittest.TestCase):

    def test_server_header_false_removes_the_server_header(self):
        srv = Server(env=env_with(CSERVE_SERVER_HEADER="false"))
        try:
            r = httpx.get(srv.url("/"), timeout=IO_TIMEOUT)
            self.assertEqual(r.status_code, 200)
            self.assertNotIn("server", r.headers)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()
        # Without it the header is there (so the check above means something).
        srv = Server(env=env_with())
        try:
            r = httpx.get(srv.url("/"), timeout=IO_TIMEOUT)
            self.assertEqual(r.headers.get("server"), "cserve")
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_root_path_from_the_environment(self):
        srv = Server(env=env_with(CSERVE_ROOT_PATH="/api"))
        try:
            scope = httpx.get(srv.url("/scope"), timeout=IO_TIMEOUT).json()
            self.assertEqual(scope["root_path"], "/api")
            self.assertEqual(scope["path"], "/api/scope")
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_the_command_line_wins_over_the_environment(self):
        srv = Server("--root-path", "/cli", env=env_with(CSERVE_ROOT_PATH="/env"))
        try:
            scope = httpx.get(srv.url("/scope"), timeout=IO_TIMEOUT).json()
            self.assertEqual(scope["root_path"], "/cli")
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_a_bad_value_exits_2_naming_the_variable(self):
        p = run_httpbin("--port", "0", env=env_with(CSERVE_TIMEOUT_KEEP_ALIVE="abc"))
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 2, err)
        self.assertIn("CSERVE_TIMEOUT_KEEP_ALIVE", err)
        self.assertNotIn("running on", err)

    def test_a_bad_switch_value_exits_2_naming_the_variable(self):
        p = run_httpbin("--port", "0", env=env_with(CSERVE_ACCESS_LOG="maybe"))
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 2, err)
        self.assertIn("CSERVE_ACCESS_LOG", err)


# ---------------------------------------------------------------------------------------
# --proxy-headers and --forwarded-allow-ips
# ---------------------------------------------------------------------------------------

class ProxyHeadersTests(unittest.TestCase):

    def scopes(self, srv):
        """/scope with forwarded headers, then without, on one keep-alive connection."""
        with httpx.Client(timeout=IO_TIMEOUT) as c:
            forwarded = c.get(srv.url("/scope"), headers=FORWARDED)
            plain = c.get(srv.url("/scope"))
        self.assertEqual(forwarded.status_code, 200)
        self.assertEqual(plain.status_code, 200)
        return forwarded.json(), plain.json()

    def assert_unchanged(self, scope):
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["client"][0], HOST)
        self.assertNotEqual(scope["client"][1], 0)

    def test_trusted_by_default_from_127_0_0_1(self):
        srv = Server(env=env_with())
        try:
            forwarded, plain = self.scopes(srv)
            self.assertEqual(forwarded["client"], ["203.0.113.7", 0])
            self.assertEqual(forwarded["scheme"], "https")
            # The next request on the connection is back to what the socket says.
            self.assert_unchanged(plain)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_a_proxy_chain_gives_the_rightmost_untrusted_hop(self):
        srv = Server("--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8", env=env_with())
        try:
            r = httpx.get(srv.url("/scope"), timeout=IO_TIMEOUT,
                          headers={"X-Forwarded-For": "198.51.100.66, 203.0.113.7, 10.1.2.3"})
            self.assertEqual(r.json()["client"], ["203.0.113.7", 0])
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_a_peer_not_in_forwarded_allow_ips_is_not_believed(self):
        srv = Server("--forwarded-allow-ips", "10.1.1.1", env=env_with())
        try:
            forwarded, plain = self.scopes(srv)
            self.assert_unchanged(forwarded)
            self.assert_unchanged(plain)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_forwarded_allow_ips_from_the_environment(self):
        srv = Server(env=env_with(FORWARDED_ALLOW_IPS="10.1.1.1"))
        try:
            forwarded, _ = self.scopes(srv)
            self.assert_unchanged(forwarded)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()

    def test_no_proxy_headers(self):
        srv = Server("--no-proxy-headers", env=env_with())
        try:
            forwarded, plain = self.scopes(srv)
            self.assert_unchanged(forwarded)
            self.assert_unchanged(plain)
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.kill()


# ---------------------------------------------------------------------------------------
# --limit-concurrency and --limit-max-requests
# ---------------------------------------------------------------------------------------

class LimitTests(unittest.TestCase):

    def test_limit_concurrency_answers_503_past_the_limit(self):
        srv = Server("--limit-concurrency", "2", env=env_with())
        conns = []
        try:
            # Two idle keep-alive connections, each after one request.
            for _ in range(2):
                c = RawConn(srv.port)
                conns.append(c)
                status, hdrs, body = c.request("/")
                self.assertEqual(status, 200)
                self.assertNotEqual(hdrs.get("connection"), "close")
            with RawConn(srv.port) as third:
                status, hdrs, body = third.request("/")
                self.assertEqual(status, 503, body)
                self.assertEqual(body, b"Service Unavailable")
                self.assertEqual(hdrs.get("connection"), "close")
                self.assertTrue(third.wait_closed(), "the 503 connection stayed open")
            # The idle connections are still served.
            status, _, _ = conns[0].request("/")
            self.assertEqual(status, 200)

            # Below the limit again, new connections are served (once the server has seen
            # the close; poll for it).
            conns.pop().close()
            deadline = time.monotonic() + IO_TIMEOUT
            status = None
            while time.monotonic() < deadline:
                with RawConn(srv.port) as c:
                    status, _, _ = c.request("/")
                if status == 200:
                    break
                time.sleep(0.05)
            self.assertEqual(status, 200)
            for c in conns:
                c.close()
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            for c in conns:
                c.close()
            srv.kill()

    def test_limit_max_requests_exits_after_the_last_response(self):
        srv = Server("--limit-max-requests", "3", env=env_with())
        try:
            with httpx.Client(timeout=IO_TIMEOUT) as c:
                for i in range(3):
                    r = c.get(srv.url("/"))
                    self.assertEqual(r.status_code, 200, "request %d" % (i + 1))
                    self.assertEqual(r.text, "Hello, world!")
            rc = srv.wait(EXIT_TIMEOUT)
            self.assertEqual(rc, 0, "exit status %r; stderr:\n%s" % (rc, srv.log_text()))
            self.assertIn("Maximum request limit of 3 exceeded", srv.log_text())
        finally:
            srv.kill()

    def test_limit_max_requests_counts_across_connections(self):
        srv = Server("--limit-max-requests", "2", env=env_with())
        try:
            for _ in range(2):
                with RawConn(srv.port) as c:
                    status, _, _ = c.request("/")
                    self.assertEqual(status, 200)
            rc = srv.wait(EXIT_TIMEOUT)
            self.assertEqual(rc, 0, "exit status %r; stderr:\n%s" % (rc, srv.log_text()))
            self.assertIn("Maximum request limit of 2 exceeded", srv.log_text())
        finally:
            srv.kill()


# ---------------------------------------------------------------------------------------
# Bad values
# ---------------------------------------------------------------------------------------

class BadFlagTests(unittest.TestCase):

    def assert_usage_error(self, flag, *args):
        p = run_httpbin("--port", "0", *args, env=env_with())
        err = p.stderr.decode("utf-8", "replace").strip()
        self.assertEqual(p.returncode, 2, err)
        self.assertEqual(len(err.splitlines()), 1, "expected a one-line error, got:\n" + err)
        self.assertIn(flag, err)

    def test_uds_mode_999(self):
        self.assert_usage_error("--uds-mode", "--uds-mode", "999")

    def test_limit_concurrency_0(self):
        self.assert_usage_error("--limit-concurrency", "--limit-concurrency", "0")

    def test_forwarded_allow_ips_nonsense(self):
        self.assert_usage_error("--forwarded-allow-ips", "--forwarded-allow-ips", "nonsense")

    def test_limit_max_requests_not_a_number(self):
        self.assert_usage_error("--limit-max-requests", "--limit-max-requests", "many")

    def test_help_lists_the_new_flags(self):
        p = run_httpbin("--help", env=env_with())
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode("utf-8", "replace")
        for flag in ("--uds", "--uds-mode", "--fd", "--proxy-headers", "--no-proxy-headers",
                     "--forwarded-allow-ips", "--limit-concurrency", "--limit-max-requests",
                     "--limit-max-requests-jitter"):
            self.assertIn(flag, out)


def main():
    args, rest = parse_args()
    global HTTPBIN, HELLO
    HTTPBIN = args.httpbin
    HELLO = args.hello
    require_executable(HTTPBIN, __file__)
    run_tests(rest)


if __name__ == "__main__":
    main()
