#!/usr/bin/python3
"""The PyTorch CPU peer of loom-bench-ptychonn: the same networks (tools/ptychonn/models.py), the
same seeded random weights and synthetic inputs, frames/s per model and batch, as JSON lines."""
import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "ptychonn"))
import models  # noqa: E402
import synth  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="ptychonn,ptychonn-edge")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        cls, n = (models.PtychoNN, 64) if name == "ptychonn" else (models.PtychoNNEdge, 128)
        model = models.seeded_random(cls, 7)
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.from_numpy(synth.make_dataset(5, n, batch)[0][:, None])
            with torch.inference_mode():
                t0 = time.perf_counter()
                model(x)
                first = time.perf_counter() - t0
                times = []
                start = time.perf_counter()
                while time.perf_counter() - start < args.seconds or len(times) < 3:
                    a = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - a)
            times.sort()
            med = times[len(times) // 2]
            print(json.dumps({"impl": "pytorch-cpu", "torch": torch.__version__, "threads": args.threads,
                              "model": name, "batch": batch, "frames_per_s": round(batch / med, 1),
                              "ms_per_batch": round(med * 1e3, 3), "first_call_ms": round(first * 1e3, 1),
                              "runs": len(times)}), flush=True)


if __name__ == "__main__":
    main()
