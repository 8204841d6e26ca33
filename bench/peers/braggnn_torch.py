"""PyTorch CPU peer of loom-bench-braggnn: us per patch of BraggNN and the FPGA-class network (float32,
eval mode, no_grad) on the same peaks and trained weights, one JSON line per measurement.

  /usr/bin/python3 bench/peers/braggnn_torch.py PEAKS.safetensors [--threads 1]

Timing includes the per-patch min-max normalisation, as Loom's does."""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tools", "braggnn"))
sys.path.insert(0, os.path.join(ROOT, "tools", "nn"))
import model as models  # noqa: E402
import safetensors_io  # noqa: E402


def load(kind, path):
    tensors, _ = safetensors_io.load(path)
    m = models.make(kind).eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("golden.")})
    return m


def normalise(x):
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(x)).unsqueeze(1)


def median_seconds(fn, budget, min_reps=3):
    fn()
    t = []
    start = time.perf_counter()
    while len(t) < min_reps or time.perf_counter() - start < budget:
        a = time.perf_counter()
        fn()
        t.append(time.perf_counter() - a)
    return float(np.median(t))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("peaks")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "kernels", "science", "data"))
    ap.add_argument("--batches", default="1,64,256,1024")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tensors, _ = safetensors_io.load(args.peaks)
    patches = torch.from_numpy(tensors["patches"])
    nets = {"braggnn_f32": load("braggnn", os.path.join(args.data_dir, "braggnn_trained.safetensors")),
            "fpga_f32": load("braggnn-fpga", os.path.join(args.data_dir, "braggnn_fpga_e5m4.bitstream"))}
    with torch.no_grad():
        for b in map(int, args.batches.split(",")):
            x = patches[:b]
            for name, m in nets.items():
                s = median_seconds(lambda: m(normalise(x)), args.budget)
                print(json.dumps({"bench": name, "batch": b, "us_per_sample": s * 1e6 / b, "torch": torch.__version__,
                                  "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
