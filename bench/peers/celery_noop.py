#!/usr/bin/python3
"""Celery peer for loom-bench: the same no-op workload and latency method.

Redis as broker and result backend (a redis-server started by run_peers.sh on a free port),
2 prefork worker processes. Throughput: N no-op tasks sent with apply_async in batches, results
collected; latency: one task at a time, delay() -> get(). Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from celery import Celery

BROKER = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("celery_noop", broker=BROKER, backend=BROKER)
app.conf.update(task_acks_late=False, worker_prefetch_multiplier=4, result_expires=600)


@app.task
def noop(x):
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--latency-samples", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "--pool=prefork",
         f"--concurrency={a.workers}", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
         "--without-heartbeat"], cwd=here, env=dict(os.environ, PYTHONPATH=here))
    try:
        # Wait until the workers answer.
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if noop.delay(-1).get(timeout=2) == -1:
                    break
            except Exception:  # noqa: BLE001 - the worker is not up yet
                pass
        t0 = time.perf_counter()
        pending = []
        for start in range(0, a.tasks, a.batch):
            pending.extend(noop.apply_async((i,)) for i in range(start, min(a.tasks, start + a.batch)))
        results = [r.get(timeout=300) for r in pending]
        seconds = time.perf_counter() - t0
        assert results == list(range(a.tasks))
        rtt = []
        for i in range(a.latency_samples):
            s = time.perf_counter()
            assert noop.delay(i).get(timeout=30) == i
            rtt.append((time.perf_counter() - s) * 1000)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    rtt.sort()
    print(json.dumps({"system": "celery", "tasks": a.tasks, "seconds": round(seconds, 3),
                      "tasks_per_s": round(a.tasks / seconds), "latency_samples": len(rtt),
                      "p50_ms": round(statistics.median(rtt), 3), "p99_ms": round(rtt[int(0.99 * (len(rtt) - 1))], 3)}))


if __name__ == "__main__":
    main()
