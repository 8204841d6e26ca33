#!/usr/bin/python3
"""Dask distributed peer for loom-bench: the same no-op workload and latency method.

LocalCluster with 2 worker processes (1 thread each). Throughput: N no-op tasks submitted with
client.map in batches, results gathered; latency: one task at a time, submit -> result.
Prints one JSON line. Needs Debian's python3-distributed (bench/peers/run_peers.sh installs it).
"""
import argparse
import json
import statistics
import time

from dask.distributed import Client, LocalCluster


def noop(x):
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--latency-samples", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.gather(client.map(noop, range(100), pure=False))  # warm up
        t0 = time.perf_counter()
        futures = []
        for start in range(0, a.tasks, a.batch):
            futures.extend(client.map(noop, range(start, min(a.tasks, start + a.batch)), pure=False))
        results = client.gather(futures)
        seconds = time.perf_counter() - t0
        assert results == list(range(a.tasks))
        rtt = []
        for i in range(a.latency_samples):
            s = time.perf_counter()
            assert client.submit(noop, i, pure=False).result() == i
            rtt.append((time.perf_counter() - s) * 1000)
    rtt.sort()
    print(json.dumps({"system": "dask", "tasks": a.tasks, "seconds": round(seconds, 3),
                      "tasks_per_s": round(a.tasks / seconds), "latency_samples": len(rtt),
                      "p50_ms": round(statistics.median(rtt), 3), "p99_ms": round(rtt[int(0.99 * (len(rtt) - 1))], 3)}))


if __name__ == "__main__":
    main()
