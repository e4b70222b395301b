#!/usr/bin/python3
# SPDX-License-Identifier: BSL-1.0
"""Three httpbin instances behind nginx, upgraded and restarted one after another under load,
with /healthz deciding what is in rotation: not one request may fail.

Run as:

    /usr/bin/python3 tests/integration/rolling_test.py --httpbin PATH --hello PATH [args]

(--hello is accepted for the shared command line and not used.) Skipped where
/usr/sbin/nginx is not installed (scripts/setup.sh installs it).

The pattern docs/deploy.md describes, on loopback: each instance is `httpbin --workers 2
--metrics-port M`; nginx balances over them (docs/nginx/cserve-proxy.conf, keep-alive
upstream connections). A controller polls every instance's /healthz ten times a second and
rewrites nginx's upstream block (an instance whose health check failed twice in a row is
`down`; one answer of 200 puts it back), reloading nginx on each change, as a load
balancer's health check would. Four clients send GETs and POSTs whose bodies are checked.

1. Upgrade in place: SIGUSR2 to each instance's master starts a new master on the same
   sockets; once its workers serve, SIGTERM drains the old one. The old master leaves the
   metrics listener to the new one, so the instance never leaves rotation.
2. Restart: SIGTERM to each instance; its /healthz answers 503 (then nothing), the controller
   takes it out of rotation, it drains and exits, a new instance starts on the same ports and
   goes back in once its /healthz says 200.

Every socket talks to 127.0.0.1 only, and every operation is bounded by a timeout.
"""

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cserve_harness import (  # noqa: E402
    HOST, IO_TIMEOUT, Process, Server, children, env_with, httpbin_main, proc_stat, wait_until)

HTTPBIN = None
NGINX = "/usr/sbin/nginx"
WATCHDOG = 170

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROXY_CONF = os.path.join(ROOT, "docs", "nginx", "cserve-proxy.conf")

NGINX_CONF = """
worker_processes 1;
daemon off;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    upstream app {
@SERVERS@
        keepalive 16;
    }
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }
    include @PROXY_CONF@;
    server {
        listen 127.0.0.1:@PORT@;
        location / { proxy_pass http://app; }
    }
}
"""

USR2_RE = re.compile(r"started new master \[(\d+)\]")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


class Instance:
    """One httpbin --workers 2 with its metrics listener, on fixed ports."""

    def __init__(self, port, metrics_port):
        self.port, self.metrics_port = port, metrics_port
        self.procs = []  # every Server started for it (their logs)
        self.master = None
        self.start()

    def start(self):
        srv = Server(HTTPBIN, "--port", str(self.port), "--workers", "2", "--metrics-port",
                     str(self.metrics_port), "--no-access-log", "--timeout-graceful-shutdown", "10",
                     port_zero=False, env=env_with())
        self.procs.append(srv)
        self.master = srv.pid

    def healthy(self):
        try:
            return httpx.get("http://%s:%d/healthz" % (HOST, self.metrics_port), timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self):
        return "\n".join(p.log_text() for p in self.procs)

    def kill(self):
        for pid in [self.master] + children(self.master):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for p in self.procs:
            p.kill()


class Balancer:
    """nginx, and a controller thread that keeps its upstream block in step with /healthz."""

    def __init__(self, dir, instances):
        self.dir, self.instances = dir, instances
        self.port = free_port()
        self.path = os.path.join(dir, "nginx.conf")
        self.up = [True] * len(instances)
        self.fails = [0] * len(instances)
        self.events = []  # (time, index, "down" | "up")
        self.reloads = 0
        self.write()
        self.nginx = Process([NGINX, "-c", self.path, "-e", os.path.join(dir, "error.log")])
        assert wait_until(self.serving, IO_TIMEOUT * 2), "nginx did not start: " + self.nginx.log_text()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.control, daemon=True)
        self.thread.start()

    def serving(self):
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def write(self):
        servers = "\n".join("        server %s:%d%s;" % (HOST, inst.port, "" if up else " down")
                            for inst, up in zip(self.instances, self.up))
        conf = NGINX_CONF
        for k, v in {"@DIR@": self.dir, "@SERVERS@": servers, "@PROXY_CONF@": PROXY_CONF,
                     "@PORT@": self.port}.items():
            conf = conf.replace(k, str(v))
        with open(self.path, "w") as f:
            f.write(conf)

    def control(self):
        while not self.stop.is_set():
            changed = False
            for i, inst in enumerate(self.instances):
                if inst.healthy():
                    self.fails[i] = 0
                    if not self.up[i]:
                        self.up[i], changed = True, True
                        self.events.append((time.monotonic(), i, "up"))
                else:
                    self.fails[i] += 1
                    if self.up[i] and self.fails[i] >= 2:
                        self.up[i], changed = False, True
                        self.events.append((time.monotonic(), i, "down"))
            if changed:
                self.write()
                self.nginx.send_signal(signal.SIGHUP)  # reload: old workers finish their requests
                self.reloads += 1
            self.stop.wait(0.1)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.nginx.kill()


class Load:
    """Clients through nginx: GET /bytes/N and POST /echo, every answer checked."""

    def __init__(self, port, clients=4):
        self.url = "http://%s:%d" % (HOST, port)
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(clients)]
        for t in self.threads:
            t.start()

    def run(self, k):
        n = 0
        # A connection per request: each nginx reload closes the idle client connections of its
        # old worker, and a request sent on one just then is reset by nginx, not by cserve.
        with httpx.Client(timeout=IO_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while not self.stop.is_set():
                n += 1
                try:
                    if n % 2:
                        size = 1000 + (n * 37 + k) % 3000
                        r = c.get(self.url + "/bytes/%d" % size)
                        good = r.status_code == 200 and len(r.content) == size
                    else:
                        body = os.urandom(2000 + n % 5000)
                        r = c.post(self.url + "/echo", content=body)
                        good = r.status_code == 200 and r.content == body
                    with self.lock:
                        if good:
                            self.ok += 1
                        else:
                            self.failures.append("%s %d %r" % (r.request.method, r.status_code, r.content[:200]))
                except httpx.HTTPError as e:
                    with self.lock:
                        self.failures.append(repr(e))

    def count(self):
        with self.lock:
            return self.ok

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(IO_TIMEOUT * 2)


@unittest.skipUnless(os.access(NGINX, os.X_OK), NGINX + " is not installed (scripts/setup.sh)")
class RollingTests(unittest.TestCase):
    def test_upgrade_and_restart_three_instances_behind_nginx_under_load(self):
        tmp = tempfile.mkdtemp(prefix="cserve-rolling-")
        instances, balancer, load = [], None, None
        try:
            instances = [Instance(free_port(), free_port()) for _ in range(3)]
            for inst in instances:
                self.assertTrue(wait_until(inst.healthy, 10), inst.log())
            balancer = Balancer(tmp, instances)
            load = Load(balancer.port)
            self.assertTrue(wait_until(lambda: load.count() >= 200, 20), load.failures[:5])

            # 1. SIGUSR2 upgrade in place, then SIGTERM to the old master.
            for inst in instances:
                old, log = inst.master, inst.procs[-1]
                before = log.log_text().count("Application startup complete.")
                os.kill(old, signal.SIGUSR2)
                line = log.wait_for_line(USR2_RE.search, 10)
                self.assertIsNotNone(line, log.log_text())
                new = int(USR2_RE.search(line).group(1))
                # The new master's two workers are up.
                self.assertTrue(wait_until(
                    lambda: log.log_text().count("Application startup complete.") >= before + 2
                    and len(children(new)) == 2, 15), log.log_text())
                served = load.count()
                os.kill(old, signal.SIGTERM)
                self.assertEqual(log.wait(15), 0, log.log_text(last=40))
                inst.master = new
                self.assertTrue(wait_until(lambda: load.count() >= served + 50, 10), load.failures[:5])
                self.assertTrue(inst.healthy())
            self.assertEqual([e for e in balancer.events], [],
                             "an instance left rotation during its upgrade in place")

            # 2. SIGTERM, out of rotation by /healthz, a new instance on the same ports.
            for i, inst in enumerate(instances):
                old = inst.master
                os.kill(old, signal.SIGTERM)
                self.assertTrue(wait_until(lambda: not balancer.up[i], 5), "never out of rotation")
                self.assertTrue(wait_until(lambda: not alive(old), 15), inst.log())
                inst.start()
                self.assertTrue(wait_until(lambda: balancer.up[i], 10), "never back in rotation")
                served = load.count()
                self.assertTrue(wait_until(lambda: load.count() >= served + 50, 10), load.failures[:5])

            load.finish()
            self.assertEqual(load.failures, [])
            self.assertGreater(load.ok, 500)
            self.assertEqual([(i, what) for _, i, what in balancer.events],
                             [(0, "down"), (0, "up"), (1, "down"), (1, "up"), (2, "down"), (2, "up")])
            # Every instance takes its share again.
            for inst in instances:
                r = httpx.get("http://%s:%d/metrics" % (HOST, inst.metrics_port), timeout=IO_TIMEOUT)
                self.assertEqual(r.status_code, 200)
            print("rolling: %d requests, %d nginx reloads, none failed" % (load.ok, balancer.reloads),
                  file=sys.stderr)
        finally:
            if load:
                load.finish()
            if balancer:
                balancer.close()
            for inst in instances:
                inst.kill()
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    httpbin_main(__file__, WATCHDOG, lambda path: globals().update(HTTPBIN=path))


if __name__ == "__main__":
    main()
