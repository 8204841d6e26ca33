#!/usr/bin/python3
"""How often the processes of the scale scenario's endpoints switch off the CPU, per task.

Starts `loom-bench --scenario scale`, and across its 100-endpoint run reads the context switches
(voluntary and involuntary, /proc/<pid>/task/*/status) of some of its endpoints and of their
workers, by thread name (the endpoint's or worker's own thread, ZeroMQ's I/O thread). A count
is a wake-up: on a VM each costs tens of microseconds, so with 10 tasks per endpoint message
the count per message, next to the CPU per task that loom-bench prints, says whether the
endpoints pay for work or for waking up. Each thread kind's CPU (utime + stime from
/proc/<pid>/task/*/stat, in clock ticks, so a rough figure for threads that ran little) is
printed beside its switches, per 10 tasks.

    bench/scale_context_switches.py build/bin/loom-bench [--sample 20] [-- extra loom-bench flags]

Python standard library only. Counts switches of whole processes that run through the window;
a process that exits within it is left out.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time


def children_of(parents):
    out = collections.defaultdict(list)
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid in parents:
            out[ppid].append(int(p))
    return out


def endpoints_named(pattern):
    found = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline") as f:
                cmd = f.read().split("\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith("loom-endpoint") and "--id" in cmd:
            name = cmd[cmd.index("--id") + 1]
            if re.fullmatch(pattern, name):
                found[int(p)] = name
    return found


TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def switches(pid):
    """(thread name (digits stripped), "switches" or "cpu_us") -> so far, for one process."""
    out = collections.Counter()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = re.sub(r"[0-9]+$", "", f.read().strip())
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        for key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            out[(name, "switches")] += int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1))
        fields = stat[stat.rindex(")") + 2:].split()
        out[(name, "cpu_us")] += (int(fields[11]) + int(fields[12])) * TICK_US
    return out


def wait_for(path, text, proc):
    while True:
        with open(path) as f:
            if text in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", help="path to loom-bench")
    ap.add_argument("--sample", type=int, default=20, help="endpoints to read (of the 100)")
    ap.add_argument("extra", nargs="*", help="more loom-bench flags (after --)")
    a = ap.parse_args()
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen([a.bench, "--scenario", "scale", *a.extra], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(log.name, "tasks round-robin", proc):
            sys.exit("loom-bench ended before its 100-endpoint run; its output:\n" + open(log.name).read())
        eps = endpoints_named(r"scale-\d+")
        picked = sorted(eps, key=lambda p: eps[p])[1:a.sample + 1]  # scale-000 also ran the one-endpoint phase
        kids = children_of(set(picked))
        procs = [("endpoint", p) for p in picked] + [("worker", k) for p in picked for k in kids[p]]
        before = {p: switches(p) for _, p in procs}
        tasks_total = None
        while tasks_total is None:
            with open(log.name) as f:
                m = re.search(r"endpoints: (\d+)/\1 results", f.read())
            if m:
                tasks_total = int(m.group(1))
            elif proc.poll() is not None:
                sys.exit("loom-bench ended during the 100-endpoint run")
            else:
                time.sleep(0.02)
        after = {p: switches(p) for _, p in procs}
        proc.wait()
        output = open(log.name).read()
    n_eps = len(eps)
    tasks_per_endpoint = tasks_total / max(1, n_eps)
    per = collections.Counter()
    for kind, p in procs:
        if before[p] is None or after[p] is None:
            continue
        for name, v in after[p].items():
            per[(kind, name)] += v - before[p].get(name, 0)
    print(f"{len(picked)} of {n_eps} endpoints read, {tasks_per_endpoint:.0f} tasks each in the 100-endpoint run")
    print(f"{'process':10} {'thread':18} {'switches per 10 tasks':>22} {'CPU us per 10 tasks':>20}")
    for kind, name in sorted({(k, n) for (k, (n, _)) in per}):
        sw = per[(kind, (name, "switches"))] / len(picked) / tasks_per_endpoint * 10
        cpu = per[(kind, (name, "cpu_us"))] / len(picked) / tasks_per_endpoint * 10
        if sw == 0 and cpu == 0:
            continue
        print(f"{kind:10} {name:18} {sw:22.2f} {cpu:20.1f}")
    for line in output.splitlines():
        if "CPU per task" in line or ("round-robin" in line and "tasks/s" in line):
            print(line)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
