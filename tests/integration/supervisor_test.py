#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Integration tests for cserve's multi-process supervisor (`--workers N`), driven through
the example `httpbin`.

Run as:

    /usr/bin/python3 tests/integration/supervisor_test.py --httpbin PATH --hello PATH [unittest args]

Covers what the master process of `httpbin --workers N` promises, each with real requests:
start-up and logging; SIGTERM/SIGINT (graceful, also as a terminal's Ctrl+C to the process
group; --timeout-graceful-shutdown; a second and a third signal), SIGQUIT (immediate);
SIGHUP (a rolling restart under load that loses no request, with new-connection and
keep-alive clients); SIGTTIN/SIGTTOU; SIGUSR1 (--log-file reopened by the master and every
worker); SIGUSR2 (a zero-downtime upgrade to a new binary, and one that cannot execute); a
crashed worker replaced, with back-off; a lifespan startup failure (exit status 3); the
watchdog (--timeout-worker-healthcheck); --limit-max-requests under workers; WEB_CONCURRENCY
and CSERVE_WORKERS; bad values; workers leaving after their master was SIGKILLed; and the
single-process mode (no master) with its signals.

Every server is started in a session of its own, so that cleanup can find and SIGKILL every
process it made (workers, and the new master of an upgrade, which this script did not spawn)
by scanning /proc. Every test talks to 127.0.0.1 only, every socket and subprocess operation
is bounded by a timeout, and a watchdog aborts the whole run if it ever takes longer than two
minutes.
"""

import collections
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cserve_harness  # noqa: E402
from cserve_harness import (  # noqa: E402
    all_stats, children, env_with, proc_stat, wait_until,
    Closed, HOST, IO_TIMEOUT, EXIT_TIMEOUT, RUN_TIMEOUT, RUNNING_RE, STARTUP_TIMEOUT, WATCHDOG_SECONDS,
    Process, die_with_parent, parse_args, require_executable, run_tests)

# Set from the command line in main().
HTTPBIN = None
HELLO = None

# How long a worker may take to appear, start or be replaced.
WORKER_TIMEOUT = 10.0
# Load phases around a signal: before it, and after what it does is complete.
LOAD_BEFORE = 0.5
LOAD_AFTER = 0.5
# How long a shutdown that should be immediate may take, from the signal until the exit:
# ample on a loaded machine, and far below the requests such a shutdown must not wait for
# (/delay/30000).
AT_ONCE = 10.0

STARTUP_COMPLETE = re.compile(r"Application startup complete\.")
ACCESS_LINE = re.compile(r'127\.0\.0\.1:\d+ - "GET /pid HTTP/1\.1" 200')


def run_httpbin(*args, env=None):
    """Runs httpbin to completion (it is expected to exit by itself, at once)."""
    return subprocess.run([HTTPBIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          env=env if env is not None else env_with(), timeout=RUN_TIMEOUT,
                          preexec_fn=lambda: die_with_parent(no_core=True))


# ---------------------------------------------------------------------------------------
# Processes, from /proc
# ---------------------------------------------------------------------------------------

def wait_children(ppid, n, timeout=None, exclude=()):
    """Waits until ppid has exactly n live children, none of them in exclude; returns them
    (oldest first), or None if that does not happen within timeout."""
    exclude = set(exclude)

    def ready():
        kids = children(ppid)
        return kids if len(kids) == n and not exclude & set(kids) else None
    return wait_until(ready, WORKER_TIMEOUT if timeout is None else timeout)


def session_members(sid):
    """The live processes of session sid."""
    return [pid for pid, st in all_stats() if st[3] == str(sid) and st[0] != "Z"]


def reap_orphans(sid):
    """Reaps the zombies of session sid that are children of this process: orphaned
    workers and an upgrade's new master come here, as this process is a child subreaper
    (see main())."""
    me = str(os.getpid())
    for pid, st in all_stats():
        if st[3] == str(sid) and st[1] == me and st[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


# Every session started, for the last resort: should the run's watchdog be about to abort
# it, these are SIGKILLed first (an upgrade's new master would not die with this process).
SESSIONS = set()


def kill_every_session():
    for pid, st in all_stats():
        if st[3].isdigit() and int(st[3]) in SESSIONS and st[0] != "Z":
            kill_quietly(pid)


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def start_time(pid):
    st = proc_stat(pid)
    return None if st is None else int(st[19])


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------
# httpbin in a session of its own
# ---------------------------------------------------------------------------------------

class Httpbin(Process):
    """One httpbin process (a master with --workers N, else a single server) in a new
    session, with every stderr line; `port` is parsed from the "running on" line unless
    wait_running is false (as with --log-file, where stderr goes to the file).

    cleanup() SIGKILLs every live process of the session (so the workers and an upgrade's
    new master too) and waits until none is left.
    """

    def __init__(self, *args, env=None, binary=None, wait_running=True):
        super().__init__([binary or HTTPBIN, "--port", "0"] + list(args),
                         env=env if env is not None else env_with(),
                         no_core=True, new_session=True)
        SESSIONS.add(self.pid)
        self.port = None
        if wait_running:
            m = self.wait_for_match(RUNNING_RE, STARTUP_TIMEOUT)
            if m is None:
                self.cleanup()
                raise AssertionError("%r did not log 'cserve running on ...' within %.0f s; "
                                     "stderr:\n%s" % (self.cmd, STARTUP_TIMEOUT, self.log_text()))
            self.port = int(m.group("port"))

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def cleanup(self):
        for _ in range(3):
            members = session_members(self.pid)
            for pid in members:
                kill_quietly(pid)
            if not members:
                break
            wait_until(lambda: not session_members(self.pid), EXIT_TIMEOUT)
        self.kill()
        reap_orphans(self.pid)

    # -- log

    def expect(self, regex, timeout=WORKER_TIMEOUT):
        """The first match of regex (a string or compiled) in a stderr line; fails unless
        there is one within timeout."""
        rx = re.compile(regex) if isinstance(regex, str) else regex
        m = self.wait_for_match(rx, timeout)
        if m is None:
            raise AssertionError("no line matching %r within %.1f s; stderr:\n%s"
                                 % (rx.pattern, timeout, self.log_text()))
        return m

    def count(self, regex):
        rx = re.compile(regex) if isinstance(regex, str) else regex
        return sum(1 for line in self.log_lines() if rx.search(line))

    def expect_count(self, regex, n, timeout=WORKER_TIMEOUT):
        """Waits until n stderr lines match regex; fails if they do not within timeout."""
        rx = re.compile(regex) if isinstance(regex, str) else regex
        seen = [0]

        def pred(line):
            if rx.search(line):
                seen[0] += 1
            return seen[0] >= n
        if self.wait_for_line(pred, timeout) is None:
            raise AssertionError("%d line(s) matching %r within %.1f s, wanted %d; stderr:\n%s"
                                 % (seen[0], rx.pattern, timeout, n, self.log_text()))

    def index(self, regex):
        """The index of the first stderr line matching regex, or None."""
        rx = re.compile(regex) if isinstance(regex, str) else regex
        for i, line in enumerate(self.log_lines()):
            if rx.search(line):
                return i
        return None

    # -- workers

    def workers(self):
        return children(self.pid)

    def wait_workers(self, n, timeout=WORKER_TIMEOUT, exclude=()):
        """Waits until the master has exactly n live children, none of them in exclude,
        and returns them (oldest first); fails if it does not within timeout."""
        got = wait_children(self.pid, n, timeout, exclude)
        if not got:
            raise AssertionError("the master did not have %d workers (not %s) within %.1f s: %s;"
                                 " stderr:\n%s" % (n, sorted(exclude), timeout, self.workers(),
                                                   self.log_text()))
        return got

    def started(self, n):
        """Waits until n workers completed their lifespan startup; returns the workers."""
        self.expect_count(STARTUP_COMPLETE, n)
        return self.wait_workers(n)

    def exit_status(self, timeout=EXIT_TIMEOUT, drain=True):
        """The exit status, waiting up to timeout (None if still running). With drain, also
        waits (up to 2 s) until every line written to stderr has been collected; without, not
        (an upgrade's new master still holds stderr)."""
        if drain:
            return self.wait(timeout)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=EXIT_TIMEOUT, drain=True):
        """Signals the process; fails unless it exits within timeout; the exit status."""
        self.send_signal(sig)
        rc = self.exit_status(timeout, drain)
        if rc is None:
            raise AssertionError("httpbin did not exit within %.1f s of signal %s; stderr:\n%s"
                                 % (timeout, sig, self.log_text()))
        return rc


def start(test, *args, **kw):
    """An Httpbin that the test cleans up whatever happens."""
    srv = Httpbin(*args, **kw)
    test.addCleanup(srv.cleanup)
    return srv


# ---------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: one connection, Content-Length framed responses
# ---------------------------------------------------------------------------------------

class RawConn(cserve_harness.RawConn):
    def outcome(self):
        """What became of the request sent: ("response", status, body), or ("closed", why)
        when the connection ended without one (EOF or reset)."""
        try:
            status, _, body = self.response()
            return ("response", status, body)
        except (Closed, ConnectionResetError, BrokenPipeError) as e:
            return ("closed", repr(e))


def get(port, path="/pid"):
    """GET path on a connection of its own: (status, body)."""
    c = RawConn(port)
    try:
        status, _, body = c.request(path, close=True)
        return status, body
    finally:
        c.close()


def connection_refused(port):
    """Whether a connection to port is refused now (ECONNREFUSED). False if it is accepted,
    or reset: an attempt that races the listener's close is reset, not refused."""
    try:
        s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    s.close()
    return False


def _tcp_table():
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            tx, rx = (int(x, 16) for x in parts[4].split(":"))
            yield parts[1], parts[2], tx, rx


def _loopback(port):
    return "0100007F:%04X" % port


def in_flight(test, port, path):
    """A connection on which GET path was sent and read by the server (so the request is
    running in a worker: a shutdown that begins now finds it in flight). The kernel says so:
    the client's send queue and the server end's receive queue are both empty."""
    c = RawConn(port)
    test.addCleanup(c.close)
    c.send(path)
    cport = c.sock.getsockname()[1]

    def read():
        server_rx = client_tx = None
        for local, remote, tx, rx in _tcp_table():
            if local == _loopback(port) and remote == _loopback(cport):
                server_rx = rx
            elif local == _loopback(cport) and remote == _loopback(port):
                client_tx = tx
        return server_rx == 0 and client_tx == 0
    test.assertTrue(wait_until(read, IO_TIMEOUT, 0.005),
                    "the server did not read GET %s within %.0f s" % (path, IO_TIMEOUT))
    return c


# ---------------------------------------------------------------------------------------
# Load: client threads sending GET /pid until stopped
# ---------------------------------------------------------------------------------------

class Load:
    """Client threads that send GET /pid back to back until stop(), each of one kind:
    "new" (a connection per request), "httpx" (an httpx.Client, keep-alive), "keepalive" (a
    raw keep-alive connection, reopened after a `connection: close` response). Records every
    answer (start time, pid) and every failure (time, kind, what)."""

    def __init__(self, port, kinds):
        self.port = port
        self.lock = threading.Lock()
        self.answers = []       # (monotonic start, pid)
        self.failures = []      # (monotonic, kind, description)
        self.reconnects = 0     # keep-alive connections closed by a `connection: close`
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in kinds]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(IO_TIMEOUT + 2)

    def _record(self, t0, status, body, kind):
        with self.lock:
            if status == 200 and body.isdigit():
                self.answers.append((t0, int(body)))
            else:
                self.failures.append((t0, kind, "status %d, body %r" % (status, body[:100])))

    def _fail(self, t0, kind, e):
        with self.lock:
            self.failures.append((t0, kind, repr(e)))

    def _run(self, kind):
        url = "http://%s:%d/pid" % (HOST, self.port)
        client = httpx.Client(timeout=IO_TIMEOUT, trust_env=False) if kind == "httpx" else None
        conn = None
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    if kind == "new":
                        status, body = get(self.port)
                    elif kind == "httpx":
                        r = client.get(url)
                        status, body = r.status_code, r.content
                    else:
                        if conn is None:
                            conn = RawConn(self.port)
                        status, hdrs, body = conn.request("/pid")
                        if hdrs.get("connection", "").lower() == "close":
                            conn.close()
                            conn = None
                            with self.lock:
                                self.reconnects += 1
                    self._record(t0, status, body, kind)
                except Exception as e:  # noqa: BLE001 -- every failure counts
                    self._fail(t0, kind, e)
                    if conn is not None:
                        conn.close()
                        conn = None
                    time.sleep(0.01)
        finally:
            if client is not None:
                client.close()
            if conn is not None:
                conn.close()

    def served(self, since=None):
        """How many answers were started at or after `since` (all without)."""
        with self.lock:
            return sum(1 for t, _ in self.answers if since is None or t >= since)

    def pids(self, since=None, until=None):
        with self.lock:
            return {p for t, p in self.answers
                    if (since is None or t >= since) and (until is None or t < until)}

    def wait_served(self, n, since=None, timeout=WORKER_TIMEOUT):
        return wait_until(lambda: self.served(since) >= n, timeout)


def run_load(test, port, kinds):
    load = Load(port, kinds).start()
    test.addCleanup(load.stop)
    return load


# ---------------------------------------------------------------------------------------
# Start-up and stopping
# ---------------------------------------------------------------------------------------

class StartupTests(unittest.TestCase):

    def test_master_binds_and_forks_the_workers(self):
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        self.assertEqual(srv.expect(r"Started parent process \[(\d+)\]").group(1), str(srv.pid))
        for w in workers:
            srv.expect(r"Started server process \[%d\]" % w, 0)
        # The master says where it listens, once; the workers do not.
        self.assertEqual(srv.count(RUNNING_RE), 1, srv.log_text())
        self.assertEqual(srv.count(r"Waiting for application startup\."), 2, srv.log_text())
        # Requests are answered by the workers, not by the master.
        pids = set()
        for _ in range(6):
            status, body = get(srv.port)
            self.assertEqual(status, 200)
            pids.add(int(body))
        self.assertTrue(pids <= set(workers), "answered by %s; workers %s" % (pids, workers))
        with httpx.Client(timeout=IO_TIMEOUT, trust_env=False) as c:
            self.assertEqual(c.get(srv.url("/state")).json(), {"startup_ran": True})

        self.assertEqual(srv.stop(), 0, srv.log_text())
        for w in workers:
            srv.expect(r"Finished server process \[%d\]" % w, 0)
            srv.expect(r"Worker \[%d\] exited with status 0" % w, 0)
        srv.expect(r"Stopping parent process \[%d\]" % srv.pid, 0)
        self.assertEqual([w for w in workers if alive(w)], [])


class StopTests(unittest.TestCase):

    def assert_refused_soon(self, srv):
        """New connections are refused within a moment of the signal, and stay refused."""
        self.assertTrue(wait_until(lambda: connection_refused(srv.port), 2.0, 0.01),
                        "connections still accepted 2 s after the signal; stderr:\n"
                        + srv.log_text())
        for _ in range(3):
            self.assertTrue(connection_refused(srv.port))

    def graceful(self, sig):
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/delay/1500")
        srv.send_signal(sig)
        srv.expect(r"Shutting down: draining 2 workers", EXIT_TIMEOUT)
        self.assert_refused_soon(srv)
        # The request in flight still completes, after the listeners closed.
        self.assertEqual(c.outcome(), ("response", 200, b"done"))
        self.assertEqual(srv.exit_status(), 0, srv.log_text())
        for w in workers:
            srv.expect(r"Worker \[%d\] exited with status 0" % w, 0)
        self.assertEqual(srv.count(r"did not stop in time"), 0, srv.log_text())

    def test_sigterm_drains_the_workers(self):
        self.graceful(signal.SIGTERM)

    def test_sigint_drains_the_workers(self):
        self.graceful(signal.SIGINT)

    def test_ctrl_c_to_the_process_group_drains_the_workers(self):
        # What a terminal does: SIGINT to every process of the group. The workers ignore it
        # and are drained by the master.
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/delay/1000")
        os.killpg(srv.pid, signal.SIGINT)  # the session's (and group's) leader is the master
        srv.expect(r"Shutting down: draining 2 workers", EXIT_TIMEOUT)
        self.assertEqual(c.outcome(), ("response", 200, b"done"))
        self.assertEqual(srv.exit_status(), 0, srv.log_text())
        for w in workers:
            srv.expect(r"Worker \[%d\] exited with status 0" % w, 0)

    def test_graceful_timeout_cancels_what_still_runs(self):
        srv = start(self, "--workers", "2", "--timeout-graceful-shutdown", "0.5")
        srv.started(2)
        c = in_flight(self, srv.port, "/delay/30000")
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = srv.exit_status(AT_ONCE)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, srv.log_text())
        self.assertGreaterEqual(elapsed, 0.45, "exited before the graceful timeout")
        # The worker cancelled it itself: the master did not have to kill anyone.
        srv.expect(r"Cancel 1 running task\(s\), timeout graceful shutdown exceeded", 0)
        self.assertEqual(srv.count(r"did not stop in time|killed by signal"), 0, srv.log_text())
        self.assertNotEqual(c.outcome(), ("response", 200, b"done"))

    def test_graceful_timeout_then_the_master_kills_a_stuck_worker(self):
        # A worker whose loop is blocked cannot cancel anything: the master SIGKILLs it 2 s
        # after the graceful timeout (not once the 20 s block is over).
        srv = start(self, "--workers", "2", "--timeout-graceful-shutdown", "0.5")
        srv.started(2)
        c = in_flight(self, srv.port, "/block/20000")
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = srv.exit_status(2.5 + AT_ONCE)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, srv.log_text())
        self.assertGreaterEqual(elapsed, 2.4, "killed before the graceful timeout + 2 s")
        srv.expect(r"Killing 1 workers that did not stop in time", 0)
        srv.expect(r"Worker \[\d+\] was killed by signal 9 \(Killed\)", 0)
        self.assertEqual(c.outcome()[0], "closed")

    def test_a_second_signal_stops_at_once(self):
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/delay/30000")
        srv.send_signal(signal.SIGINT)
        srv.expect(r"Shutting down: draining 2 workers", EXIT_TIMEOUT)
        # The idle worker drains and goes (so that the second signal does not race its exit);
        # the busy one waits for its request.
        srv.expect(r"Worker \[\d+\] exited with status 0", EXIT_TIMEOUT)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGINT)
        srv.expect(r"Shutting down now", EXIT_TIMEOUT)
        self.assertEqual(srv.exit_status(AT_ONCE + 5), 0, srv.log_text())
        self.assertLess(time.monotonic() - t0, AT_ONCE)
        self.assertEqual(c.outcome()[0], "closed")
        # The workers stopped on their own (SIGQUIT), nobody was killed.
        for w in workers:
            srv.expect(r"Worker \[%d\] exited with status 0" % w, 0)
        self.assertEqual(srv.count(r"did not stop in time"), 0, srv.log_text())

    def test_a_third_signal_kills(self):
        # A worker blocked in its loop ignores SIGTERM and SIGQUIT; a third signal SIGKILLs it
        # at once, not at the deadline 2 s after the second.
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/block/10000")
        srv.send_signal(signal.SIGTERM)
        srv.expect(r"Shutting down: draining 2 workers", EXIT_TIMEOUT)
        # The idle worker drains and goes; the blocked one stays.
        idle = int(srv.expect(r"Worker \[(\d+)\] exited with status 0", EXIT_TIMEOUT).group(1))
        (stuck,) = set(workers) - {idle}
        srv.send_signal(signal.SIGTERM)
        srv.expect(r"Shutting down now", EXIT_TIMEOUT)
        srv.send_signal(signal.SIGTERM)
        self.assertEqual(srv.exit_status(EXIT_TIMEOUT), 0, srv.log_text())
        srv.expect(r"Worker \[%d\] was killed by signal 9 \(Killed\)" % stuck, 0)
        self.assertEqual(srv.count(r"did not stop in time"), 0, srv.log_text())
        self.assertEqual(c.outcome()[0], "closed")

    def test_sigquit_stops_at_once(self):
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/delay/30000")
        t0 = time.monotonic()
        srv.send_signal(signal.SIGQUIT)
        srv.expect(r"Shutting down now", EXIT_TIMEOUT)
        self.assertEqual(srv.exit_status(AT_ONCE + 5), 0, srv.log_text())
        self.assertLess(time.monotonic() - t0, AT_ONCE)
        self.assertEqual(c.outcome()[0], "closed")
        self.assertEqual(srv.count(r"Shutting down: draining"), 0, srv.log_text())
        for w in workers:
            srv.expect(r"Worker \[%d\] exited with status 0" % w, 0)
        self.assertEqual(srv.count(r"did not stop in time"), 0, srv.log_text())
        self.assertTrue(connection_refused(srv.port))


# ---------------------------------------------------------------------------------------
# SIGHUP: rolling restart
# ---------------------------------------------------------------------------------------

class RollingRestartTests(unittest.TestCase):

    def test_hup_replaces_the_workers_one_at_a_time(self):
        srv = start(self, "--workers", "2", "--log-level", "debug")
        srv.expect_count(r"Worker \[\d+\] is serving", 2)
        old = srv.wait_workers(2)
        srv.send_signal(signal.SIGHUP)
        srv.expect(r"Handling signal: hup; restarting 2 workers")
        new = srv.wait_workers(2, exclude=old)
        for w in old:
            srv.expect(r"Worker \[%d\] exited with status 0" % w)
        for w in new:
            srv.expect(r"Worker \[%d\] is serving" % w)
        self.assertTrue(alive(srv.pid))
        self.assertEqual(srv.workers(), new)

        # From the log: each replacement serves before the next one starts, and before each
        # old worker exits there is one more serving replacement than old ones gone.
        lines = srv.log_lines()
        hup = srv.index(r"Handling signal: hup")

        def at(pattern):
            for i, line in enumerate(lines):
                if i > hup and re.search(pattern, line):
                    return i
            self.fail("no %r after the HUP; stderr:\n%s" % (pattern, "\n".join(lines)))
        first, second = sorted(new, key=lambda w: at(r"Started server process \[%d\]" % w))
        self.assertLess(at(r"Worker \[%d\] is serving" % first),
                        at(r"Started server process \[%d\]" % second),
                        "the second replacement started before the first served")
        serving = sorted(at(r"Worker \[%d\] is serving" % w) for w in new)
        exits = sorted(at(r"Worker \[%d\] exited" % w) for w in old)
        for k, e in enumerate(exits):
            self.assertLess(serving[k], e, "an old worker went before its replacement served:\n"
                            + "\n".join(lines[hup:]))

        for _ in range(4):
            status, body = get(srv.port)
            self.assertEqual(status, 200)
            self.assertIn(int(body), new)
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def restart_under_load(self, kinds):
        srv = start(self, "--workers", "2")
        old = srv.started(2)
        load = run_load(self, srv.port, kinds)
        self.assertTrue(load.wait_served(20), "the load got no answers: %s" % load.failures[:5])
        time.sleep(LOAD_BEFORE)
        t_hup = time.monotonic()
        srv.send_signal(signal.SIGHUP)
        srv.expect(r"Handling signal: hup; restarting 2 workers")
        new = srv.wait_workers(2, exclude=old)
        self.assertTrue(wait_until(lambda: not any(alive(w) for w in old), WORKER_TIMEOUT),
                        "old workers still alive")
        t_done = time.monotonic()
        self.assertTrue(load.wait_served(20, since=t_done))
        time.sleep(LOAD_AFTER)
        load.stop()

        self.assertEqual(load.failures, [], "requests failed across the restart (HUP at %.3f)"
                         % t_hup)
        self.assertTrue(load.pids(until=t_hup) & set(old), "no answer from an old worker")
        self.assertTrue(load.pids(since=t_done) <= set(new), load.pids(since=t_done))
        self.assertTrue(load.pids(since=t_done), "no answer from a new worker")
        self.assertEqual(srv.workers(), new)
        self.assertTrue(alive(srv.pid))
        self.assertEqual(srv.stop(), 0, srv.log_text())
        return load

    def test_hup_under_load_loses_no_request_new_connections(self):
        self.restart_under_load(["new", "new", "new"])

    def test_hup_under_load_loses_no_request_keep_alive(self):
        load = self.restart_under_load(["httpx", "httpx", "keepalive"])
        # The raw keep-alive connection was moved off its draining worker by a response with
        # `connection: close`, not by a failure.
        self.assertGreaterEqual(load.reconnects, 1)


# ---------------------------------------------------------------------------------------
# SIGTTIN, SIGTTOU
# ---------------------------------------------------------------------------------------

class ScaleTests(unittest.TestCase):

    def test_ttin_adds_a_worker_and_ttou_stops_the_oldest(self):
        srv = start(self, "--workers", "2")
        w1, w2 = srv.started(2)
        started = {w: start_time(w) for w in (w1, w2)}
        srv.send_signal(signal.SIGTTIN)
        srv.expect(r"Handling signal: ttin; workers: 3")
        three = srv.wait_workers(3)
        (w3,) = set(three) - {w1, w2}
        srv.expect_count(STARTUP_COMPLETE, 3)

        srv.send_signal(signal.SIGTTOU)
        srv.expect(r"Handling signal: ttou; workers: 2")
        stopped = int(srv.expect(r"Stopping worker \[(\d+)\]").group(1))
        self.assertIn(stopped, (w1, w2), "TTOU stopped %d, not one of the oldest" % stopped)
        if started[w1] != started[w2]:  # else /proc cannot tell which is older
            self.assertEqual(stopped, min((w1, w2), key=started.get))
        srv.expect(r"Worker \[%d\] exited with status 0" % stopped)
        remaining = srv.wait_workers(2, exclude=[stopped])
        self.assertEqual(set(remaining), {w1, w2, w3} - {stopped})

        srv.send_signal(signal.SIGTTOU)
        srv.expect(r"Handling signal: ttou; workers: 1")
        srv.expect_count(r"Stopping worker \[\d+\]", 2)
        (last,) = srv.wait_workers(1)
        # Never below one.
        srv.send_signal(signal.SIGTTOU)
        srv.expect_count(r"Handling signal: ttou; workers: 1", 2)
        # The master handles signals after its round of managing the workers: once it has
        # handled one more, the round after the TTOU above is over, and whatever it would
        # have stopped has been logged.
        srv.send_signal(signal.SIGTTOU)
        srv.expect_count(r"Handling signal: ttou; workers: 1", 3)
        self.assertEqual(srv.workers(), [last])
        self.assertEqual(srv.count(r"Stopping worker"), 2, srv.log_text())
        status, body = get(srv.port)
        self.assertEqual((status, int(body)), (200, last))
        self.assertEqual(srv.stop(), 0, srv.log_text())


# ---------------------------------------------------------------------------------------
# SIGUSR1: log file rotation
# ---------------------------------------------------------------------------------------

def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def count_in(path, regex):
    return len(re.findall(regex, read_text(path)))


def rotate_log_file(test, workers):
    """Starts httpbin with --log-file (and `workers` workers if more than 1), renames the
    file away, sends SIGUSR1 and checks that every process writes to a new file at the path
    from then on, the access log lines of later requests included. Returns the path."""
    tmp = tempfile.TemporaryDirectory(prefix="cserve-log-")
    test.addCleanup(tmp.cleanup)
    path = os.path.join(tmp.name, "httpbin.log")
    rotated = path + ".1"
    args = (["--workers", str(workers)] if workers > 1 else []) + ["--log-file", path]
    srv = start(test, *args, wait_running=False)
    m = wait_until(lambda: RUNNING_RE.search(read_text(path)), STARTUP_TIMEOUT)
    test.assertTrue(m, "no running line in the log file; it has:\n" + read_text(path))
    srv.port = int(m.group("port"))
    test.assertTrue(wait_until(lambda: count_in(path, STARTUP_COMPLETE) == workers,
                               WORKER_TIMEOUT), read_text(path))
    for _ in range(2):
        test.assertEqual(get(srv.port)[0], 200)
    test.assertTrue(wait_until(lambda: count_in(path, ACCESS_LINE) == 2, IO_TIMEOUT),
                    read_text(path))

    os.rename(path, rotated)
    srv.send_signal(signal.SIGUSR1)
    # The master and every worker reopen the file (workers + 1 processes with a master).
    reopened = r"Reopened log file " + re.escape(path)
    processes = workers + 1 if workers > 1 else 1
    test.assertTrue(wait_until(lambda: count_in(path, reopened) == processes, IO_TIMEOUT),
                    "new file:\n%s\nold file:\n%s" % (read_text(path), read_text(rotated)))
    for _ in range(4):
        test.assertEqual(get(srv.port)[0], 200)
    test.assertTrue(wait_until(lambda: count_in(path, ACCESS_LINE) == 4, IO_TIMEOUT),
                    read_text(path))
    test.assertEqual(srv.stop(), 0, read_text(path))
    test.assertEqual(count_in(rotated, ACCESS_LINE), 2, read_text(rotated))
    test.assertEqual(count_in(rotated, reopened), 0, read_text(rotated))
    test.assertEqual(count_in(path, reopened), processes, read_text(path))
    test.assertIn("Finished server process", read_text(path))
    # Standard error itself went to the file from the start.
    test.assertEqual(srv.log_text(), "")
    return path


class LogFileTests(unittest.TestCase):

    def test_usr1_reopens_the_log_file_in_master_and_workers(self):
        path = rotate_log_file(self, 2)
        self.assertIn("Stopping parent process", read_text(path))


# ---------------------------------------------------------------------------------------
# SIGUSR2: upgrade to a new binary
# ---------------------------------------------------------------------------------------

class UpgradeTests(unittest.TestCase):

    def test_usr2_starts_a_new_master_from_the_new_binary(self):
        tmp = tempfile.TemporaryDirectory(prefix="cserve-usr2-")
        self.addCleanup(tmp.cleanup)
        binary = os.path.join(tmp.name, "httpbin")
        shutil.copy2(HTTPBIN, binary)
        srv = start(self, "--workers", "2", binary=binary)
        old = srv.started(2)
        self.assertEqual(os.readlink("/proc/%d/exe" % srv.pid), binary)

        # The release: a new file put at the path the master was started from.
        shutil.copy2(HTTPBIN, binary + ".new")
        os.rename(binary + ".new", binary)
        self.assertTrue(os.readlink("/proc/%d/exe" % srv.pid).endswith("(deleted)"))

        load = run_load(self, srv.port, ["new", "new", "httpx"])
        self.assertTrue(load.wait_served(20), "the load got no answers: %s" % load.failures[:5])
        time.sleep(LOAD_BEFORE)
        mark = len(srv.log_lines())
        srv.send_signal(signal.SIGUSR2)
        m = srv.expect(r"Handling signal: usr2; started new master \[(\d+)\] from (.+)$")
        new_master = int(m.group(1))  # in the session: srv.cleanup() kills it if need be
        self.assertEqual(m.group(2), binary)
        srv.expect(r"Started parent process \[%d\]" % new_master)
        # On the same port: the listening socket was handed over, not bound anew.
        srv.expect_count(RUNNING_RE, 2)
        ports = [int(x.group("port")) for x in map(RUNNING_RE.search, srv.log_lines()[mark:]) if x]
        self.assertEqual(ports, [srv.port])
        self.assertEqual(os.readlink("/proc/%d/exe" % new_master), binary)
        self.assertEqual(proc_stat(new_master)[1], str(srv.pid))
        # One upgrade at a time.
        srv.send_signal(signal.SIGUSR2)
        srv.expect(r"Handling signal: usr2; an upgrade \(pid %d\) is already running" % new_master)
        self.assertEqual(srv.count(r"started new master"), 1, srv.log_text())

        new = wait_children(new_master, 2)
        self.assertTrue(new, "the new master has workers %s" % children(new_master))
        # Both generations serve.
        self.assertTrue(wait_until(lambda: load.pids() & set(new), WORKER_TIMEOUT),
                        "no answer from the new master's workers %s" % new)
        self.assertEqual(sorted(set(srv.workers()) - {new_master}), sorted(old))

        # The old master drains away; the new one goes on.
        t_stop = time.monotonic()
        self.assertEqual(srv.stop(drain=False), 0, srv.log_text())
        self.assertTrue(wait_until(lambda: not any(alive(w) for w in old), EXIT_TIMEOUT))
        t_gone = time.monotonic()
        self.assertTrue(load.wait_served(20, since=t_gone))
        time.sleep(LOAD_AFTER)
        load.stop()
        self.assertEqual(load.failures, [], "requests failed across the upgrade")
        self.assertTrue(load.pids(until=t_stop) & set(old))
        self.assertTrue(load.pids(since=t_gone))
        self.assertTrue(load.pids(since=t_gone) <= set(new), load.pids(since=t_gone))
        self.assertTrue(alive(new_master))
        self.assertEqual(sorted(children(new_master)), sorted(new))
        status, body = get(srv.port)
        self.assertEqual(status, 200)
        self.assertIn(int(body), new)

        os.kill(new_master, signal.SIGTERM)
        self.assertTrue(wait_until(lambda: not alive(new_master), EXIT_TIMEOUT),
                        "the new master did not exit on SIGTERM")
        self.assertFalse(any(alive(w) for w in new))
        srv.expect(r"Stopping parent process \[%d\]" % new_master, IO_TIMEOUT)
        self.assertTrue(connection_refused(srv.port))


    def test_usr2_with_nothing_to_execute_keeps_serving(self):
        tmp = tempfile.TemporaryDirectory(prefix="cserve-usr2-")
        self.addCleanup(tmp.cleanup)
        binary = os.path.join(tmp.name, "httpbin")
        shutil.copy2(HTTPBIN, binary)
        srv = start(self, "--workers", "2", binary=binary)
        workers = srv.started(2)
        os.remove(binary)
        srv.send_signal(signal.SIGUSR2)
        failed = int(srv.expect(r"New master \[(\d+)\] exited with status 127; this master goes"
                                r" on serving").group(1))
        srv.expect(r"cannot execute " + re.escape(binary), 0)
        self.assertEqual(srv.workers(), workers)
        for _ in range(4):
            status, body = get(srv.port)
            self.assertEqual(status, 200)
            self.assertIn(int(body), workers)

        # The binary is back: the next USR2 upgrades.
        shutil.copy2(HTTPBIN, binary)
        srv.send_signal(signal.SIGUSR2)
        m = srv.expect(r"Handling signal: usr2; started new master \[(?!%d\])(\d+)\]" % failed)
        new_master = int(m.group(1))
        srv.expect(r"Started parent process \[%d\]" % new_master)
        self.assertTrue(wait_children(new_master, 2))
        os.kill(new_master, signal.SIGTERM)
        srv.expect(r"New master \[%d\] exited with status 0; this master goes on serving"
                   % new_master)
        status, body = get(srv.port)
        self.assertEqual(status, 200)
        self.assertIn(int(body), workers)
        self.assertEqual(srv.stop(), 0, srv.log_text())


# ---------------------------------------------------------------------------------------
# Dead, crashing, stuck and retiring workers
# ---------------------------------------------------------------------------------------

class WorkerFailureTests(unittest.TestCase):

    def test_a_killed_worker_is_replaced_with_back_off(self):
        srv = start(self, "--workers", "2")
        victim, other = srv.started(2)
        # Each one dies young (within 10 s of its start): no delay for the first death, then
        # 100 ms, then 200 ms.
        for delay in (None, 100, 200):
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            suffix = "" if delay is None else " in %d ms" % delay
            srv.expect(r"Worker \[%d\] was killed by signal 9 \(Killed\); starting a new one%s$"
                       % (victim, suffix))
            workers = srv.wait_workers(2, exclude=[victim])
            if delay is not None:
                self.assertGreaterEqual(time.monotonic() - t0, delay / 1000.0 - 0.005)
            self.assertIn(other, workers)
            (victim,) = set(workers) - {other}
        status, _ = get(srv.port)
        self.assertEqual(status, 200)
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_startup_failure_stops_the_master_with_status_3(self):
        message = "supervisor_test refuses to start"
        srv = start(self, "--workers", "2", wait_running=False,
                    env=env_with(HTTPBIN_FAIL_STARTUP=message))
        rc = srv.exit_status(RUN_TIMEOUT)
        self.assertEqual(rc, 3, srv.log_text())
        srv.expect(r"Worker \[\d+\] failed to boot; stopping", 0)
        self.assertIn(message, srv.log_text())
        # No worker was started again.
        self.assertLessEqual(srv.count(r"Started server process"), 2, srv.log_text())

    def test_startup_failure_single_process_exits_3(self):
        message = "supervisor_test refuses to start alone"
        p = run_httpbin("--port", "0", env=env_with(HTTPBIN_FAIL_STARTUP=message))
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 3, err)
        self.assertIn(message, err)
        self.assertNotIn("Started parent process", err)

    def test_watchdog_aborts_a_blocked_worker(self):
        srv = start(self, "--workers", "2", "--timeout-worker-healthcheck", "1")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/block/10000")
        # The other worker goes on serving while one is stuck.
        answered = set()
        deadline = time.monotonic() + WORKER_TIMEOUT
        while srv.count(r"was killed by signal 6") == 0 and time.monotonic() < deadline:
            status, body = get(srv.port)
            self.assertEqual(status, 200)
            answered.add(int(body))
            time.sleep(0.05)
        m = srv.expect(r"WORKER TIMEOUT \(pid:(\d+)\)", 0)
        stuck = int(m.group(1))
        self.assertIn(stuck, workers)
        srv.expect(r"Worker \[%d\] was killed by signal 6 \(Aborted\); starting a new one" % stuck, 0)
        # (The last of these requests may have reached the replacement already.)
        self.assertNotIn(stuck, answered)
        self.assertIn((set(workers) - {stuck}).pop(), answered)
        self.assertEqual(c.outcome()[0], "closed")
        new = srv.wait_workers(2, exclude=[stuck])
        self.assertEqual(len(set(new) - set(workers)), 1)
        self.assertEqual(srv.count(r"WORKER TIMEOUT"), 1, srv.log_text())
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_limit_max_requests_retires_and_replaces_workers(self):
        srv = start(self, "--workers", "2", "--limit-max-requests", "10")
        srv.started(2)
        pids = collections.Counter()
        for i in range(60):
            status, body = get(srv.port)
            self.assertEqual(status, 200, "request %d" % i)
            pids[int(body)] += 1
        self.assertGreater(len(pids), 2, pids)
        # A worker takes no request after its 10th, except on a connection it accepted
        # before its drain began (then with `connection: close`): one at most, as this client
        # has one connection open at a time.
        self.assertLessEqual(max(pids.values()), 11, pids)
        retired = [p for p, n in pids.items() if n >= 10]
        self.assertTrue(retired, pids)
        for p in retired:
            srv.expect(r"Worker \[%d\] exited; starting a new one" % p)
        srv.wait_workers(2, exclude=retired)
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_workers_leave_when_the_master_is_killed(self):
        srv = start(self, "--workers", "2")
        workers = srv.started(2)
        c = in_flight(self, srv.port, "/delay/1500")
        os.kill(srv.pid, signal.SIGKILL)
        self.assertEqual(srv.exit_status(EXIT_TIMEOUT, drain=False), -signal.SIGKILL)
        srv.expect_count(r"Master process gone; shutting down", 2, 5.0)
        # They drain: the request in flight is answered.
        self.assertEqual(c.outcome(), ("response", 200, b"done"))
        self.assertTrue(wait_until(lambda: not any(alive(w) for w in workers), EXIT_TIMEOUT),
                        "workers still alive: %s" % [w for w in workers if alive(w)])
        for w in workers:
            srv.expect(r"Finished server process \[%d\]" % w, IO_TIMEOUT)
        self.assertTrue(connection_refused(srv.port))


# ---------------------------------------------------------------------------------------
# How many workers: --workers, WEB_CONCURRENCY, CSERVE_WORKERS, and bad values
# ---------------------------------------------------------------------------------------

class WorkerCountTests(unittest.TestCase):

    def assert_workers(self, n, *args, **env):
        srv = start(self, *args, env=env_with(**env))
        workers = srv.started(n)
        self.assertEqual(len(workers), n)
        self.assertEqual(srv.count(r"Started server process"), n, srv.log_text())
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_web_concurrency(self):
        self.assert_workers(3, WEB_CONCURRENCY="3")

    def test_workers_flag_wins_over_web_concurrency(self):
        self.assert_workers(2, "--workers", "2", WEB_CONCURRENCY="3")

    def test_cserve_workers(self):
        self.assert_workers(3, CSERVE_WORKERS="3")

    def test_cserve_workers_wins_over_web_concurrency(self):
        self.assert_workers(2, CSERVE_WORKERS="2", WEB_CONCURRENCY="3")

    def assert_usage_error(self, name, *args, **env):
        p = run_httpbin("--port", "0", *args, env=env_with(**env))
        err = p.stderr.decode("utf-8", "replace").strip()
        self.assertEqual(p.returncode, 2, err)
        self.assertEqual(len(err.splitlines()), 1, "expected a one-line error, got:\n" + err)
        self.assertIn(name, err)
        self.assertNotIn("running on", err)

    def test_bad_values_exit_2(self):
        with self.subTest("--workers 0"):
            self.assert_usage_error("--workers", "--workers", "0")
        with self.subTest("--workers x"):
            self.assert_usage_error("--workers", "--workers", "x")
        with self.subTest("WEB_CONCURRENCY=x"):
            self.assert_usage_error("WEB_CONCURRENCY", WEB_CONCURRENCY="x")
        with self.subTest("CSERVE_WORKERS=0"):
            self.assert_usage_error("CSERVE_WORKERS", CSERVE_WORKERS="0")
        with self.subTest("--timeout-worker-healthcheck 0"):
            self.assert_usage_error("--timeout-worker-healthcheck",
                                    "--timeout-worker-healthcheck", "0")

    def test_help_lists_the_new_flags(self):
        p = run_httpbin("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode("utf-8", "replace")
        for flag in ("--workers", "--timeout-worker-healthcheck", "--log-file"):
            self.assertIn(flag, out)


# ---------------------------------------------------------------------------------------
# Single-process mode: no master
# ---------------------------------------------------------------------------------------

class SingleProcessTests(unittest.TestCase):

    def assert_single(self, srv):
        srv.expect(STARTUP_COMPLETE)
        srv.expect(r"Started server process \[%d\]" % srv.pid, 0)
        self.assertEqual(srv.count(r"Started parent process"), 0, srv.log_text())
        self.assertEqual(srv.workers(), [])
        status, body = get(srv.port)
        self.assertEqual((status, int(body)), (200, srv.pid))

    def test_no_workers_flag_or_one_worker_means_no_master(self):
        for args, env in (((), {}), (("--workers", "1"), {}), ((), {"WEB_CONCURRENCY": "1"})):
            with self.subTest(args=args, env=env):
                srv = start(self, *args, env=env_with(**env))
                self.assert_single(srv)
                self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_sigterm_and_sigint_drain(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(sig=sig):
                srv = start(self)
                self.assert_single(srv)
                c = in_flight(self, srv.port, "/delay/3000")
                srv.send_signal(sig)
                self.assertTrue(wait_until(lambda: connection_refused(srv.port), 10.0, 0.01),
                                srv.log_text())
                # The listener closed while the request was still running.
                answered, _, _ = select.select([c.sock], [], [], 0)
                self.assertEqual(answered, [], "listener still open once the response came")
                self.assertEqual(c.outcome(), ("response", 200, b"done"))
                self.assertEqual(srv.exit_status(), 0, srv.log_text())
                srv.expect(r"Finished server process \[%d\]" % srv.pid, 0)

    def test_sigquit_stops_at_once(self):
        srv = start(self)
        self.assert_single(srv)
        c = in_flight(self, srv.port, "/delay/30000")
        t0 = time.monotonic()
        self.assertEqual(srv.stop(signal.SIGQUIT, timeout=AT_ONCE + 5), 0, srv.log_text())
        self.assertLess(time.monotonic() - t0, AT_ONCE)
        self.assertEqual(c.outcome()[0], "closed")

    def test_usr1_reopens_the_log_file(self):
        path = rotate_log_file(self, 1)
        self.assertNotIn("parent process", read_text(path))


def main():
    args, rest = parse_args()
    global HTTPBIN, HELLO
    HTTPBIN = args.httpbin
    HELLO = args.hello
    require_executable(HTTPBIN, __file__)
    # Orphans (the workers of a killed master, an upgrade's new master once the old one
    # exits) become children of this process rather than of pid 1, which in a container may
    # never reap them; cleanup reaps them.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    last_resort = threading.Timer(WATCHDOG_SECONDS - 5, kill_every_session)
    last_resort.daemon = True
    last_resort.start()
    run_tests(rest)


if __name__ == "__main__":
    main()
