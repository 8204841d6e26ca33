#!/usr/bin/python3
"""Which threads of a loom-bench run use the CPU, interval by interval.

Starts loom-bench (by default its throughput run) and, every `--interval` seconds while it runs,
reads the CPU time of every thread of the Redis, service, endpoint, worker and bench processes
on this machine (/proc/<pid>/task/*/stat). Prints one line per interval: the CPU used by all of
them together (100 % is one core) and the busiest threads. A run limited by one thread shows
it near 100 %; a run whose total stays well under the cores it has is limited by waiting (one
stage's latency), not by work. The throughput run has two phases, visible here: while the bench
submits (Redis runs the submit scripts and the consumers wait behind them), then while the
backlog drains.

    bench/thread_cpu.py build/bin/loom-bench [--interval 0.5] [--top 6] [-- extra loom-bench flags]

Python standard library only. Threads are named as their process names them (ZMQbg/IO/0 is
ZeroMQ's I/O thread, grpcpp_sync_ser a gRPC server thread, bio_aof_fsync Redis's fsync
thread); a child of redis-server is an AOF rewrite. Other processes on the machine are not
counted.
"""
import argparse
import os
import subprocess
import sys
import time

PROCESSES = ("redis-server", "loom-service", "loom-endpoint", "loom-worker", "loom-bench")
SHORT = {"redis-server": "redis", "loom-service": "service", "loom-endpoint": "endpoint",
         "loom-worker": "worker", "loom-bench": "bench"}


def snapshot():
    """(process name, pid, tid, thread name) -> CPU seconds, for every thread of PROCESSES."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in PROCESSES:
                continue
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[(comm, pid, tid, name)] = (int(fields[11]) + int(fields[12])) / hz
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="the loom-bench binary")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("--top", type=int, default=6, help="threads shown per line")
    ap.add_argument("--min-total", type=float, default=20.0,
                    help="leave out intervals using less than this much CPU in all (%% of one core)")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then flags for loom-bench")
    args = ap.parse_args()
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    cmd = [args.bench] + (extra or ["--tasks", "100000", "--latency-samples", "10"])
    print("$ " + " ".join(cmd), flush=True)
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prev, prev_t = snapshot(), time.monotonic()
    start = prev_t
    print(f"{'t (s)':>6} {'all':>5}  busiest threads (% of one core)")
    while bench.poll() is None:
        time.sleep(args.interval)
        cur, now = snapshot(), time.monotonic()
        used = {k: (v - prev.get(k, v)) / (now - prev_t) * 100 for k, v in cur.items()}
        total = sum(used.values())
        if total >= args.min_total:
            top = sorted(used.items(), key=lambda kv: -kv[1])[:args.top]
            cells = [f"{SHORT[k[0]]}:{k[3]} {v:.0f}" for k, v in top]
            print(f"{now - start:6.1f} {total:4.0f}%  " + " | ".join(cells), flush=True)
        prev, prev_t = cur, now
    out = bench.stdout.read()
    summary = [l for l in out.splitlines() if not l.startswith("20")]  # drop the log lines
    print("\n".join(summary))
    return bench.returncode


if __name__ == "__main__":
    sys.exit(main())
