#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Integration test for the cserve example program `hello` (no flags, 127.0.0.1:8000).

Run as:

    /usr/bin/python3 tests/integration/hello_test.py --hello PATH [--httpbin PATH] [unittest args]
"""

import argparse
import ctypes
import datetime
import email.utils
import faulthandler
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

HOST = "127.0.0.1"
PORT = 8000
HELLO = None

RUNNING_RE = re.compile(r"cserve running on http://127\.0\.0\.1:8000 \(Press CTRL\+C to quit\)")
IMF_FIXDATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$")


def _die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def port_in_use():
    """Whether something already listens on (or holds) 127.0.0.1:8000."""
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, PORT))
        return False
    except OSError:
        return True
    finally:
        s.close()


class HelloTest(unittest.TestCase):

    def setUp(self):
        if port_in_use():
            self.skipTest("port %d on %s is already in use; `hello` can only bind there"
                          % (PORT, HOST))
        self.lines = []
        self.proc = subprocess.Popen([HELLO], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=_die_with_parent)
        self.addCleanup(self._kill)
        self.running = threading.Event()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        if not self.running.wait(10):
            self.fail("hello did not log 'cserve running on http://127.0.0.1:8000' "
                      "within 10 s; stderr:\n" + "\n".join(self.lines))

    def _drain(self):
        try:
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(line)
                if RUNNING_RE.search(line):
                    self.running.set()
        except (OSError, ValueError):
            pass

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.reader.join(2)
        self.proc.stderr.close()

    def test_curl_then_sigint(self):
        p = subprocess.run(["curl", "-si", "--max-time", "5", "--noproxy", "*",
                            "http://127.0.0.1:8000/"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        head, _, body = p.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.assertRegex(lines[0], r"^HTTP/1\.1 200 ")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        self.assertEqual(body, b"Hello, world!")
        self.assertEqual(headers.get("server"), "cserve")
        date = headers.get("date")
        self.assertIsNotNone(date, "no date header")
        self.assertRegex(date, IMF_FIXDATE_RE)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - email.utils.parsedate_to_datetime(date)).total_seconds()), 120)

        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.fail("hello did not exit within 5 s of SIGINT")
        self.assertEqual(rc, 0, "exit status after SIGINT; stderr:\n" + "\n".join(self.lines))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.path.join(here, "..", "..", "build", "examples")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--hello", default=os.path.join(build, "hello"))
    parser.add_argument("--httpbin", default=os.path.join(build, "httpbin"))
    args, rest = parser.parse_known_args()
    global HELLO
    HELLO = os.path.abspath(args.hello)
    if not os.access(HELLO, os.X_OK):
        sys.exit("hello_test.py: %s is not an executable" % HELLO)
    faulthandler.dump_traceback_later(60, exit=True)
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
