#!/usr/bin/python3
"""Two builds of benchmarks/hello_bench side by side: server CPU per request (or per echoed
WebSocket message), in interleaved slices so that both see the same host.

    /usr/bin/python3 benchmarks/ab.py OLD/benchmarks/hello_bench NEW/benchmarks/hello_bench \
        [--ws WS_LOAD] [--rounds 8] [--seconds 3]

Each server runs pinned to CPU 0, the load (wrk -c64, or ws_load with 64 connections and
64-byte messages) to CPU 1; every round gives each server one slice. Prints each slice and
the totals, and B/A: below 1 means the second build spends less CPU per request.
"""
import argparse
import os
import re
import socket
import subprocess
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"ab.py: nothing listens on port {port}")


def load(args, port):
    if args.ws:
        cmd = [args.ws, "--host", "127.0.0.1", "--port", str(port), "--path", "/ws", "--connections", "64",
               "--size", "64", "--duration", str(args.seconds), "--warmup", "0.2"]
        pattern = r'"messages":(\d+)'
    else:
        cmd = ["wrk", "-t1", "-c64", f"-d{args.seconds}s", f"http://127.0.0.1:{port}/"]
        pattern = r"(\d+) requests in"
    out = subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True, check=True).stdout
    return int(re.search(pattern, out).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ws", metavar="WS_LOAD", help="benchmarks/ws_load: measure the WebSocket echo instead")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=int, default=3)
    args = p.parse_args()

    servers = []
    try:
        for i, binary in enumerate((args.a, args.b)):
            port = 18081 + i
            proc = subprocess.Popen(["taskset", "-c", "0", binary, "--host", "127.0.0.1", "--port", str(port),
                                     "--no-access-log", "--timeout-keep-alive", "60", "--lifespan", "off"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers.append((proc, port))
            wait_for_port(port)
        totals = [[0.0, 0], [0.0, 0]]
        for r in range(args.rounds):
            for i, (proc, port) in enumerate(servers):
                before = cpu_seconds(proc.pid)
                n = load(args, port)
                used = cpu_seconds(proc.pid) - before
                totals[i][0] += used
                totals[i][1] += n
                print(f"round {r} {'AB'[i]}: {n} in {args.seconds} s, {1e6 * used / n:.3f} us CPU each", flush=True)
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()
    us = [1e6 * c / n for c, n in totals]
    print(f"A {args.a}: {us[0]:.3f} us CPU each over {totals[0][1]}")
    print(f"B {args.b}: {us[1]:.3f} us CPU each over {totals[1][1]}")
    print(f"B/A = {us[1] / us[0]:.3f}")


if __name__ == "__main__":
    main()
