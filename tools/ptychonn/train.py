#!/usr/bin/python3
"""Trains PtychoNN and PtychoNN-edge on synthetic ptychography (synth.py), seeded, on the CPU.

    /usr/bin/python3 tools/ptychonn/train.py --out /tmp/ptychonn-train

writes <out>/ptychonn.pt, <out>/ptychonn_edge.pt (state dicts) and <out>/metrics.json (held-out
phase MAE and SSIM, with the trivial predictor's for comparison); export.py turns them into the
committed safetensors files. The budget is deliberately small for a 2-core CPU (800 and 400
patterns, 3 epochs; 58 minutes on a machine loaded by parallel builds) and far too small for the
networks to beat a constant prediction: see docs/KERNELS-PTYCHONN.md.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import models
import synth

TRAIN_SEED = {64: 1, 128: 3}
TEST_SEED = {64: 2, 128: 4}


def evaluate(model, n, count, edge):
    xs, amps, phases = synth.make_dataset(TEST_SEED[n], n, count)
    with torch.no_grad():
        out = model(torch.from_numpy(xs)[:, None])
    phase = (out if edge else out[1])[:, 0].numpy()
    m = {"count": count,
         "phase_mae": float(np.abs(phase - phases).mean()),
         "phase_ssim": float(np.mean([synth.ssim(phase[i], phases[i], 1.5) for i in range(count)])),
         "trivial_phase_mae": float(np.abs(phases - phases.mean()).mean())}
    if not edge:
        amp = out[0][:, 0].numpy()
        m["amplitude_mae"] = float(np.abs(amp - amps).mean())
        m["amplitude_ssim"] = float(np.mean([synth.ssim(amp[i], amps[i], 0.5) for i in range(count)]))
        m["trivial_amplitude_mae"] = float(np.abs(amps - amps.mean()).mean())
    return m


def train(cls, n, samples, epochs, batch, seed):
    edge = cls is models.PtychoNNEdge
    t0 = time.time()
    xs, amps, phases = synth.make_dataset(TRAIN_SEED[n], n, samples)
    gen_s = time.time() - t0
    torch.manual_seed(seed)  # PyTorch's default initialisation, seeded
    model = cls().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(xs)[:, None]
    a = torch.from_numpy(amps)[:, None]
    p = torch.from_numpy(phases)[:, None]
    t1 = time.time()
    for epoch in range(epochs):
        order = torch.randperm(samples, generator=g)
        total = 0.0
        for i in range(0, samples, batch):
            idx = order[i:i + batch]
            out = model(x[idx])
            if edge:
                loss = F.l1_loss(out, p[idx])
            else:
                loss = F.l1_loss(out[0], a[idx]) + F.l1_loss(out[1], p[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"{cls.__name__} epoch {epoch + 1}/{epochs}: loss {total / samples:.4f} "
              f"({time.time() - t1:.0f} s)", flush=True)
    model.eval()
    return model, {"train_samples": samples, "epochs": epochs, "batch": batch,
                   "data_seconds": round(gen_s, 1), "train_seconds": round(time.time() - t1, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the state dicts and metrics.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=800, help="PtychoNN training patterns")
    ap.add_argument("--edge-samples", type=int, default=400, help="PtychoNN-edge training patterns")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--test", type=int, default=64, help="held-out patterns per network")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    metrics = {}
    for name, cls, n, samples in (("ptychonn", models.PtychoNN, 64, args.samples),
                                  ("ptychonn_edge", models.PtychoNNEdge, 128, args.edge_samples)):
        model, info = train(cls, n, samples, args.epochs, 16, seed=10)
        torch.save(model.state_dict(), os.path.join(args.out, name + ".pt"))
        info.update(evaluate(model, n, args.test, cls is models.PtychoNNEdge))
        metrics[name] = info
        print(name, json.dumps(info), flush=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    main()
