# SPDX-License-Identifier: BSL-1.0
"""The harness shared by the integration tests in this directory (not a test itself).

A test script puts this directory on sys.path and imports what it needs:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cserve_harness import Server, parse_args, ...

What is here: the loopback address and the timeouts every script uses, the regular
expressions for cserve's "running on" line and for an IMF-fixdate, `Process` (a subprocess
that dies with the test runner and whose stderr lines are collected by a thread), `Server`
(a cserve example program started on a port of its own choosing, with its port parsed from
the "running on" line), and the command line handling shared by the scripts' main().
"""

import argparse
import ctypes
import faulthandler
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

HOST = "127.0.0.1"

IO_TIMEOUT = 5.0          # every socket read/write
STARTUP_TIMEOUT = 10.0    # until the "running on" line
EXIT_TIMEOUT = 5.0        # from a signal until the process has exited
RUN_TIMEOUT = 10.0        # a process that is expected to exit by itself
WATCHDOG_SECONDS = 115    # the whole run

# The line a server logs once it listens on TCP.
RUNNING_RE = re.compile(
    r"cserve running on https?://(?P<host>\[[^\]]*\]|[^\s:/]+):(?P<port>\d+)"
    r" \(Press CTRL\+C to quit\)")

# The same, or its form for a Unix domain socket (httpbin --uds, or --fd with a Unix socket).
RUNNING_OR_UDS_RE = re.compile(
    r"cserve running on (?:https?://(?P<host>\[[^\]]*\]|[^\s:/]+):(?P<port>\d+)"
    r"|unix socket (?P<uds>.+?)) \(Press CTRL\+C to quit\)")

# An HTTP Date header value (RFC 9110, IMF-fixdate).
IMF_FIXDATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$")


# ---------------------------------------------------------------------------------------
# Processes, from /proc
# ---------------------------------------------------------------------------------------

def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session,
    ...), or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def all_stats():
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                yield int(name), st


def children(ppid):
    """The live (not zombie) child processes of ppid, oldest first."""
    kids = [(int(st[19]), pid) for pid, st in all_stats()
            if st[1] == str(ppid) and st[0] != "Z"]
    return [pid for _, pid in sorted(kids)]


def env_with(**changes):
    """The test's environment with `changes`, minus anything inherited from outside that
    would change what httpbin does (CSERVE_*, WEB_CONCURRENCY, socket activation...)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CSERVE_") and k not in (
               "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "NOTIFY_SOCKET", "LISTEN_FDS",
               "LISTEN_PID", "LISTEN_FDNAMES", "HTTPBIN_FAIL_STARTUP")}
    env.update(changes)
    return env


def wait_until(pred, timeout, interval=0.02):
    """pred()'s first true value within timeout, or None."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------

def die_with_parent(no_core=False):
    """In the child: get SIGKILLed if the test runner dies, so nothing outlives it; with
    no_core, also leave no core file behind if it crashes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if no_core:
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ValueError, OSError):
            pass


class Process:
    """A subprocess whose stderr lines are collected by a thread and can be waited for.

    stdin and stdout are /dev/null. In the child, after fork: die_with_parent(no_core),
    then RLIMIT_NOFILE set to nofile if given, then preexec() if given (for what only the
    child knows, such as its pid). env replaces the environment; pass_fds are inherited;
    new_session puts the process in a session (and process group) of its own.
    """

    def __init__(self, cmd, *, env=None, pass_fds=(), preexec=None, nofile=None,
                 no_core=False, new_session=False):
        self.cmd = list(cmd)

        def child_setup():
            die_with_parent(no_core)
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            if preexec is not None:
                preexec()

        self.lines = []
        self._cond = threading.Condition()
        self._eof = False
        self.returncode = None
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=child_setup, env=env, pass_fds=pass_fds,
            start_new_session=new_session)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self):
        try:
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def log_lines(self):
        with self._cond:
            return list(self.lines)

    def log_text(self, last=None):
        """Every stderr line so far (or the last `last` of them), one string."""
        lines = self.log_lines()
        return "\n".join(lines[-last:] if last else lines)

    def wait_for_line(self, pred, timeout):
        """The first stderr line for which pred is true, waiting up to timeout; or None."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_for_match(self, regex, timeout):
        """The first match of regex in a stderr line, waiting up to timeout; or None."""
        line = self.wait_for_line(regex.search, timeout)
        return None if line is None else regex.search(line)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=EXIT_TIMEOUT):
        """The exit status, or None if the process is still running after timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._thread.join(2)
        return self.returncode

    def kill(self):
        """Cleanup: SIGKILL if still running (never fails)."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._thread.join(2)
        if self.proc.stderr:
            try:
                self.proc.stderr.close()
            except OSError:
                pass


class Server(Process):
    """One running server process, where it listens, and every line it wrote to stderr.

    Runs `binary [--port 0] args...` (port_zero adds `--port 0`) and waits until it logs a
    line matching running_re; fails (AssertionError, process killed) if it does not within
    startup_timeout. Then running_line is that line, and host, port (an int) and uds are its
    named groups (None where running_re has no such group or it did not match, so
    running_re=RUNNING_OR_UDS_RE also accepts a server on a Unix socket). The other keyword
    arguments are Process's.
    """

    def __init__(self, binary, *args, port_zero=True, running_re=RUNNING_RE,
                 startup_timeout=STARTUP_TIMEOUT, **process_kw):
        super().__init__([binary] + (["--port", "0"] if port_zero else []) + list(args),
                         **process_kw)
        line = self.wait_for_line(running_re.search, startup_timeout)
        if line is None:
            self.kill()
            raise AssertionError(
                "%r did not log 'cserve running on ...' within %.0f s; stderr:\n%s"
                % (self.cmd, startup_timeout, self.log_text()))
        groups = running_re.search(line).groupdict()
        self.running_line = line
        self.host = groups.get("host")
        self.port = int(groups["port"]) if groups.get("port") else None
        self.uds = groups.get("uds")
        self.tls = "cserve running on https://" in line

    def url(self, path="/"):
        return "%s://%s:%d%s" % ("https" if self.tls else "http", HOST, self.port, path)

    def ws_url(self, path):
        return "%s://%s:%d%s" % ("wss" if self.tls else "ws", HOST, self.port, path)

    def stop(self, sig=signal.SIGTERM, timeout=EXIT_TIMEOUT, check=True):
        """Signals the process and returns its exit status. If it does not exit within
        timeout: with check, kills it and fails (AssertionError); without, returns None."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None and check:
            self.kill()
            raise AssertionError(
                "server did not exit within %.1f s of signal %s; stderr:\n%s"
                % (timeout, sig, self.log_text()))
        return rc


# ---------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: one keep-alive connection, Content-Length framed responses
# ---------------------------------------------------------------------------------------

class Closed(Exception):
    """The peer closed the connection while a response was being read."""


class RawConn:
    """One TCP connection to 127.0.0.1:port speaking HTTP/1.1 by hand, for what a library
    client hides (keep-alive reuse, the exact moment of a close). Responses must be framed
    by Content-Length."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed("connection closed by the server; unparsed bytes: %r"
                         % bytes(self.buf[:200]))
        self.buf += data

    def send(self, path, headers=(), close=False):
        """Sends GET path with the given (name, value) headers."""
        lines = (["GET %s HTTP/1.1" % path, "Host: x"] + ["%s: %s" % h for h in headers]
                 + (["Connection: close"] if close else []))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def response(self):
        """Reads one response: (status, {lower-cased name: value}, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._recv_more()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        status_line, *fields = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        hdrs = {}
        for f in fields:
            name, _, value = f.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._recv_more()
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return status, hdrs, body

    def request(self, path, headers=(), close=False):
        """send() then response()."""
        self.send(path, headers, close)
        return self.response()


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def parse_args(*extra_flags):
    """The scripts' own flags, and the rest (for unittest): --httpbin and --hello (made
    absolute; by default build/examples/{httpbin,hello} of this source tree), and each of
    extra_flags (a string option, None unless given)."""
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.path.join(here, "..", "..", "build", "examples")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--httpbin", default=os.path.join(build, "httpbin"))
    parser.add_argument("--hello", default=os.path.join(build, "hello"))
    for flag in extra_flags:
        parser.add_argument(flag)
    args, rest = parser.parse_known_args()
    args.httpbin = os.path.abspath(args.httpbin)
    args.hello = os.path.abspath(args.hello)
    return args, rest


def require_executable(path, script, hint=""):
    """Exits (status 1, a message naming script) unless path is an executable."""
    if not os.access(path, os.X_OK):
        sys.exit("%s: %s is not an executable%s" % (os.path.basename(script), path, hint))


# What a sanitizer or a crash leaves in a server's log.
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                          r"SUMMARY: \w+Sanitizer|terminate called|Segmentation fault")


class CheckedServer(Server):
    """A Server whose log can be searched for a sanitizer report (or a crash)."""

    def sanitizer_report(self):
        """The report with its context, or None."""
        text = self.log_text()
        m = SANITIZER_RE.search(text)
        return text[max(0, m.start() - 2000):m.start() + 6000] if m else None


    def stop_checked(self):
        """SIGTERM, then fails (AssertionError) on a sanitizer report or an exit status but 0."""
        try:
            rc = self.stop(check=False)
            report = self.sanitizer_report()
        finally:
            self.kill()
        if report:
            raise AssertionError("a sanitizer report in the server's log:\n%s" % report)
        if rc != 0:
            raise AssertionError("server exited with status %r after SIGTERM; log:\n%s"
                                 % (rc, self.log_text(last=50)))


def httpbin_main(script, watchdog_seconds, set_httpbin):
    """A test script's main(): the command line's --httpbin (checked, then given to
    set_httpbin), and the tests under a watchdog."""
    args, rest = parse_args()
    require_executable(args.httpbin, script)
    set_httpbin(args.httpbin)
    run_tests(rest, watchdog_seconds)


def run_tests(rest, watchdog_seconds=WATCHDOG_SECONDS):
    """unittest.main with the arguments parse_args left over, under a watchdog that aborts
    the whole run (with every thread's traceback) after watchdog_seconds."""
    faulthandler.dump_traceback_later(watchdog_seconds, exit=True)
    unittest.main(argv=[sys.argv[0]] + rest)
