#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Integration test for the cserve example program `hello` (no flags, 127.0.0.1:8000).

Run as:

    /usr/bin/python3 tests/integration/hello_test.py --hello PATH [--httpbin PATH] [unittest args]
"""

import datetime
import email.utils
import os
import re
import signal
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IMF_FIXDATE_RE, Server, parse_args, require_executable, run_tests)

PORT = 8000
HELLO = None

RUNNING_RE = re.compile(r"cserve running on http://127\.0\.0\.1:8000 \(Press CTRL\+C to quit\)")


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
        self.server = Server(HELLO, port_zero=False, running_re=RUNNING_RE)
        self.addCleanup(self.server.kill)

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

        self.server.send_signal(signal.SIGINT)
        rc = self.server.wait(5)
        if rc is None:
            self.fail("hello did not exit within 5 s of SIGINT")
        self.assertEqual(rc, 0, "exit status after SIGINT; stderr:\n" + self.server.log_text())


def main():
    args, rest = parse_args()
    global HELLO
    HELLO = args.hello
    require_executable(HELLO, __file__)
    run_tests(rest, 60)


if __name__ == "__main__":
    main()
