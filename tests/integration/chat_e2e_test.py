#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""End-to-end test of the example `websocket_chat` in a real browser (headless Chromium).

Run as:

    /usr/bin/python3 tests/integration/chat_e2e_test.py --httpbin PATH --hello PATH \\
        [--chat PATH] [unittest args]

The chat server is <directory of --httpbin>/websocket_chat unless --chat names it. The
browser is Debian's /usr/bin/chromium, driven through the Chrome DevTools Protocol (CDP)
over its DevTools WebSocket with the `websockets` library; the browser tests are skipped
when Chromium is not installed (scripts/setup.sh installs it).

Everything runs on 127.0.0.1, every wait is bounded, the server and the browser are killed
on every path, and a watchdog aborts the whole run if it ever takes longer than 90 s.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, EXIT_TIMEOUT, Process, Server, parse_args, require_executable, run_tests)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

CHAT = None  # set from the command line in main()

BROWSER_TIMEOUT = 20.0    # until Chromium's "DevTools listening on" line
CDP_TIMEOUT = 10.0        # one DevTools command
READY_TIMEOUT = 15.0      # a page loaded and its WebSocket open
MESSAGE_TIMEOUT = 5.0     # a chat message shown in the other page
WATCHDOG_SECONDS = 90     # the whole run

DEVTOOLS_RE = re.compile(r"DevTools listening on (?P<url>ws://\S+)")


class ChatServer(Server):
    """websocket_chat on a free port of 127.0.0.1; over TLS with `tls` (a TLSFiles)."""

    def __init__(self, tls=None):
        # Over TLS the log says which WebSockets came over HTTP/2 (RFC 8441).
        extra = ["--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key, "--log-level", "debug"] \
            if tls else []
        super().__init__(CHAT, "--host", HOST, "--port", "0", *extra, port_zero=False)

    def stop(self):
        """SIGTERM, and the exit status (None if it did not exit in time)."""
        return super().stop(signal.SIGTERM, EXIT_TIMEOUT, check=False)


class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI in a
    temporary directory (removed by cleanup())."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cserve-chat-tls-")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True, timeout=30)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Browser(Process):
    """Headless Chromium with a fresh profile, in a process group of its own (its helper
    processes go with it), and the URL of its DevTools WebSocket. With `insecure`, it
    accepts any certificate (the test's self-signed one)."""

    def __init__(self, insecure=False):
        self.profile = tempfile.mkdtemp(prefix="cserve-chat-e2e-")
        env = dict(os.environ)
        for name in ("http_proxy", "https_proxy", "all_proxy",
                     "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(name, None)  # the browser talks to 127.0.0.1 only
        # Whatever Chromium writes outside its profile (crash report settings, dconf, NSS
        # database) goes to the temporary directory too, not to the user's home.
        env["HOME"] = self.profile
        env["XDG_CONFIG_HOME"] = os.path.join(self.profile, ".config")
        env["XDG_CACHE_HOME"] = os.path.join(self.profile, ".cache")
        try:
            super().__init__([CHROMIUM] + CHROMIUM_FLAGS +
                             (["--ignore-certificate-errors"] if insecure else []) + [
                "--user-data-dir=" + self.profile, "--remote-debugging-port=0", "about:blank"],
                new_session=True, env=env)
        except Exception:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        m = self.wait_for_match(DEVTOOLS_RE, BROWSER_TIMEOUT)
        if m is None:
            self.kill()
            raise AssertionError("Chromium did not log 'DevTools listening on' within %.0f s; "
                                 "stderr:\n%s" % (BROWSER_TIMEOUT, self.log_text(last=40)))
        self.devtools_url = m.group("url")

    def kill(self):
        """Cleanup: SIGKILL the whole process group, remove the profile (never fails)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group Popen created for it
        except OSError:
            pass
        super().kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# A minimal Chrome DevTools Protocol client: one command at a time, events ignored.
# ---------------------------------------------------------------------------------------

class CdpError(Exception):
    pass


class Cdp:

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, params=None, session=None, timeout=CDP_TIMEOUT):
        """Sends one command (to a page when session is given) and returns its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await asyncio.wait_for(self.ws.send(json.dumps(message)), timeout)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CdpError("no answer to %s within %.0f s" % (method, timeout))
            try:
                reply = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            except asyncio.TimeoutError:
                continue  # the deadline check above reports it
            if reply.get("id") != self.next_id:
                continue  # an event, or the answer to nothing we wait for
            if "error" in reply:
                raise CdpError("%s: %s" % (method, reply["error"]))
            return reply.get("result", {})

    async def open_page(self, url):
        """Opens url in a new tab and returns the session id to drive it with."""
        target = await self.call("Target.createTarget", {"url": url})
        attached = await self.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        return attached["sessionId"]

    async def evaluate(self, session, expression):
        """The value of a JavaScript expression in the page; CdpError if it threw."""
        result = await self.call("Runtime.evaluate",
                                 {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise CdpError("%s threw: %s" % (expression, result["exceptionDetails"]))
        return result.get("result", {}).get("value")

    async def wait_true(self, session, expression, timeout, what):
        """Polls expression until it is true. While the page is still loading, an
        evaluation may fail (no context yet, or the old one destroyed): that is 'not yet'."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(session, expression) is True:
                    return
            except CdpError as e:
                last = e
            await asyncio.sleep(0.05)
        raise AssertionError("%s: not within %.0f s (last error: %s)" % (what, timeout, last))


def js(value):
    """A JavaScript literal for a Python string."""
    return json.dumps(value)


def shows(text):
    """A JavaScript expression: the page's message list has an item 'userN: <text>'."""
    return ("Array.from(document.querySelectorAll('#messages li'))"
            ".some(li => /^user\\d+: /.test(li.textContent) && li.textContent.endsWith(': ' + %s))"
            % js(text))


READY = "window.chatReady === true"


# ---------------------------------------------------------------------------------------

class PageTests(unittest.TestCase):
    """The HTTP side, without a browser."""

    def setUp(self):
        self.server = ChatServer()
        self.addCleanup(self.server.kill)
        # No proxy from the environment: everything is on 127.0.0.1.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def test_page_and_404(self):
        with self.opener.open(self.server.url("/"), timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.get("content-type"), "text/html; charset=utf-8")
            body = r.read().decode("utf-8")
        self.assertIn('(location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"', body)
        self.assertIn('id="messages"', body)
        self.assertIn('id="input"', body)
        self.assertIn('id="send"', body)
        self.assertNotIn("innerHTML", body)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.opener.open(self.server.url("/nope"), timeout=5)
        self.assertEqual(cm.exception.code, 404)
        cm.exception.close()
        self.assertEqual(self.server.stop(), 0, self.server.log_text())


@unittest.skipUnless(os.access(CHROMIUM, os.X_OK),
                     CHROMIUM + " is not installed (apt-get install chromium, or scripts/setup.sh)")
class BrowserTests(unittest.TestCase):
    """Two browser tabs in the chat room."""

    tls = False  # TLSBrowserTests: https and wss

    def setUp(self):
        files = None
        if self.tls:
            files = TLSFiles()
            self.addCleanup(files.cleanup)
        self.server = ChatServer(files)
        self.addCleanup(self.server.kill)
        self.browser = Browser(insecure=self.tls)
        self.addCleanup(self.browser.kill)

    def diagnostics(self):
        return ("\n--- server stderr:\n%s\n--- chromium stderr (last 30 lines):\n%s"
                % (self.server.log_text(), self.browser.log_text(last=30)))

    def drive(self, scenario):
        """Runs scenario(cdp) against the browser; on failure, adds both processes' logs."""
        async def run():
            async with websockets.connect(self.browser.devtools_url, max_size=None,
                                          open_timeout=CDP_TIMEOUT, close_timeout=2) as ws:
                cdp = Cdp(ws)
                await scenario(cdp)
                try:
                    await cdp.call("Browser.close", timeout=5)
                except (CdpError, websockets.ConnectionClosed):
                    pass  # closing: the browser may drop the connection before answering
        try:
            asyncio.run(run())
        except AssertionError as e:
            raise AssertionError(str(e) + self.diagnostics()) from None
        except Exception as e:
            raise AssertionError("%s: %s%s" % (type(e).__name__, e, self.diagnostics())) from e
        if self.browser.wait(EXIT_TIMEOUT) is None:
            self.fail("Chromium did not exit within %.0f s of Browser.close" % EXIT_TIMEOUT)

    def test_message_typed_in_one_page_appears_in_both(self):
        url = self.server.url("/")
        tag = uuid.uuid4().hex
        clicked = "hello <i>from page 1</i> & co " + tag  # markup must stay text
        typed = "typed in page 2, sent with Enter " + tag

        async def scenario(cdp):
            page1 = await cdp.open_page(url)
            page2 = await cdp.open_page(url)
            t0 = time.monotonic()
            await cdp.wait_true(page1, READY, READY_TIMEOUT, "page 1 WebSocket open")
            await cdp.wait_true(page2, READY, READY_TIMEOUT, "page 2 WebSocket open")
            print("\n  both pages connected in %.2f s" % (time.monotonic() - t0), file=sys.stderr)

            # Page 1: set the input and click Send.
            await cdp.evaluate(page1, "document.getElementById('input').value = %s;"
                                      "document.getElementById('send').click(); true" % js(clicked))
            t0 = time.monotonic()
            await cdp.wait_true(page2, shows(clicked), MESSAGE_TIMEOUT, "page 1's message in page 2")
            print("  page 1 -> page 2 in %.3f s" % (time.monotonic() - t0), file=sys.stderr)
            await cdp.wait_true(page1, shows(clicked), MESSAGE_TIMEOUT,
                                "page 1's message in page 1 (a broadcast includes the sender)")
            # Shown as text: no <i> element was created from the message.
            for page in (page1, page2):
                self.assertIs(await cdp.evaluate(page, "document.querySelector('#messages i') === null"),
                              True, "a message was inserted as HTML")
            self.assertEqual(await cdp.evaluate(page1, "document.getElementById('input').value"), "")

            # Page 2: real keyboard input, sent with the Enter key.
            await cdp.call("Page.bringToFront", session=page2)
            await cdp.evaluate(page2, "document.getElementById('input').focus(); true")
            await cdp.call("Input.insertText", {"text": typed}, page2)
            for kind in ("keyDown", "keyUp"):
                await cdp.call("Input.dispatchKeyEvent", {
                    "type": kind, "key": "Enter", "code": "Enter",
                    "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13,
                    **({"text": "\r"} if kind == "keyDown" else {})}, page2)
            await cdp.wait_true(page1, shows(typed), MESSAGE_TIMEOUT, "page 2's message in page 1")
            await cdp.wait_true(page2, shows(typed), MESSAGE_TIMEOUT, "page 2's message in page 2")

        self.drive(scenario)
        rc = self.server.stop()
        self.assertEqual(rc, 0, "server exit status after SIGTERM" + self.diagnostics())
        if self.tls:
            # Chromium fetched the page over HTTP/2 (ALPN h2), saw extended CONNECT
            # advertised, and opened both WebSockets as streams of that connection.
            self.assertEqual(self.server.log_text().count("(RFC 8441)"), 2, self.diagnostics())

    def test_server_shutdown_closes_open_pages_with_1012(self):
        url = self.server.url("/")

        async def scenario(cdp):
            page = await cdp.open_page(url)
            await cdp.wait_true(page, READY, READY_TIMEOUT, "page WebSocket open")
            # SIGTERM while the browser is connected: run() drains, closing it 1012.
            t0 = time.monotonic()
            self.server.proc.send_signal(signal.SIGTERM)
            rc = await asyncio.get_running_loop().run_in_executor(None, self.server.wait, EXIT_TIMEOUT)
            self.assertEqual(rc, 0, "server exit status after SIGTERM with a page connected")
            print("\n  server exited %.3f s after SIGTERM" % (time.monotonic() - t0), file=sys.stderr)
            await cdp.wait_true(page, "window.chatCloseCode === 1012", MESSAGE_TIMEOUT,
                                "page saw close code 1012")

        self.drive(scenario)


class TLSBrowserTests(BrowserTests):
    """The same over https and wss (the page picks wss from its https location)."""

    tls = True

    def test_page_is_served_over_https(self):
        self.assertTrue(self.server.url("/").startswith("https://"), self.server.running_line)


def main():
    args, rest = parse_args("--chat")
    global CHAT
    if args.chat:
        CHAT = os.path.abspath(args.chat)
    else:
        CHAT = os.path.join(os.path.dirname(args.httpbin), "websocket_chat")
    require_executable(CHAT, __file__, " (build the websocket_chat target, or pass --chat PATH)")
    run_tests(rest, WATCHDOG_SECONDS)


if __name__ == "__main__":
    main()
