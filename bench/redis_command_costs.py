#!/usr/bin/python3
"""Where Redis spends its time during a Loom throughput run, per script and per command.

Starts `loom-bench` (throughput scenario), finds the redis-server it started, and after a
warm-up logs every command for a while with SLOWLOG (threshold 0). Prints, per Lua script
(by its first argument) and per command, the calls, the time Redis spent in them, and the
time per task finished in the window. Commands run by a script are counted both under the
script and under their own name: the script's time less its commands' is the cost of the
Lua machinery itself (arguments, redis.call, replies).

    bench/redis_command_costs.py build/bin/loom-bench [--tasks 80000] [--warmup 2.5] [--window 1]

Python standard library only; speaks RESP over a socket.
"""
import argparse
import collections
import os
import re
import socket
import subprocess
import sys
import time


def resp_command(sock, rfile, *args):
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
    return resp_read(rfile)


def resp_read(rfile):
    line = rfile.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else rfile.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(rfile) for _ in range(n)]
    raise RuntimeError("unexpected reply from Redis: %r" % line)


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def redis_port_of(bench_pid, deadline):
    while time.time() < deadline:
        for pid in descendants(bench_pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            # Redis rewrites its title to "redis-server HOST:PORT".
            title = b" ".join(argv).decode(errors="replace")
            m = re.match(r"\S*redis-server\S* \S*:(\d+)", title)
            if m and int(m.group(1)) > 0:
                return int(m.group(1))
        time.sleep(0.1)
    raise RuntimeError("no redis-server started by loom-bench")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", help="path of loom-bench")
    ap.add_argument("--tasks", type=int, default=80000)
    ap.add_argument("--warmup", type=float, default=2.5, help="seconds before the window opens")
    ap.add_argument("--window", type=float, default=1.0, help="seconds of commands logged")
    ap.add_argument("bench_args", nargs="*", help="more loom-bench flags (after --)")
    a = ap.parse_args()
    bench = subprocess.Popen([a.bench, "--tasks", str(a.tasks), "--latency-samples", "10"] + a.bench_args,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        port = redis_port_of(bench.pid, time.time() + 30)
        sock = socket.create_connection(("127.0.0.1", port))
        rfile = sock.makefile("rb")
        time.sleep(a.warmup)
        resp_command(sock, rfile, "CONFIG", "SET", "slowlog-max-len", "1000000")
        resp_command(sock, rfile, "SLOWLOG", "RESET")
        resp_command(sock, rfile, "CONFIG", "SET", "slowlog-log-slower-than", "0")
        time.sleep(a.window)
        resp_command(sock, rfile, "CONFIG", "SET", "slowlog-log-slower-than", "10000")
        entries = resp_command(sock, rfile, "SLOWLOG", "GET", "1000000")
    finally:
        out = bench.communicate()[0].decode(errors="replace")
    # Tasks finished in the window: one HSET each that writes the result ("r", a success) or the
    # error ("x", a failure) into the task's hash, right after its new state.
    totals = collections.defaultdict(lambda: [0, 0])
    finished = 0
    for e in entries:
        argv = e[3]
        name = argv[0].decode().lower()
        if name == "hset" and len(argv) > 4 and argv[4] in (b"r", b"x"):
            finished += 1
        if name in ("evalsha", "eval") and len(argv) > 3:
            name = "%s %s.. (first argument %s)" % (name, argv[1][:8].decode(), argv[3][:16].decode("latin1"))
        totals[name][0] += 1
        totals[name][1] += e[2]
    print("Redis, %.1f s window after %.1f s: %d tasks finished" % (a.window, a.warmup, finished))
    print("%-60s %8s %10s %12s %12s" % ("command", "calls", "ms", "us/call", "us/task"))
    for name, (calls, us) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print("%-60s %8d %10.1f %12.1f %12.2f" % (name, calls, us / 1000, us / calls, us / max(finished, 1)))
    for line in out.splitlines():
        if "tasks/s" in line:
            print(line.strip())
    return 0 if bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
