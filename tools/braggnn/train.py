"""Trains BraggNN or the FPGA-class BraggNN on synthetic peaks (synth.py) and saves the weights (a PyTorch
state dict; export_golden.py turns it into the committed safetensors and golden files).

  /usr/bin/python3 tools/braggnn/train.py --kind braggnn --out /tmp/braggnn.pt

Seeded (data, initial weights, batch order); single-threaded by default so the result repeats on the same build.
Prints the held-out error in pixels at the end. Times on the 2-core shared VM are in docs/KERNELS-BRAGGNN.md.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as models  # noqa: E402
import synth  # noqa: E402


CENTRE_MEAN = (synth.CENTRE_MIN + synth.CENTRE_MAX) / 2
CENTRE_STD = (synth.CENTRE_MAX - synth.CENTRE_MIN) / 12 ** 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["braggnn", "braggnn-fpga"], default="braggnn")
    ap.add_argument("--out", required=True, help="state dict (.pt) to write")
    ap.add_argument("--train", type=int, default=24000, help="training peaks")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    counts, truth = synth.generate(args.train, seed=1000 + args.seed)
    x = torch.from_numpy(synth.minmax_normalise(counts)).unsqueeze(1)
    # BraggNN ends in a linear layer, so it trains on standardised centres (unit variance, which
    # trains far faster) and the affine map back to centre / 11 is folded into that layer at the
    # end. The FPGA-class network ends in a ReLU and trains on centre / 11 directly.
    standardise = args.kind == "braggnn"
    shift, scale = (CENTRE_MEAN, CENTRE_STD) if standardise else (0.0, float(synth.PATCH))
    y = torch.from_numpy(((truth[:, :2] - shift) / scale).astype(np.float32))
    vcounts, vtruth = synth.generate(2000, seed=2000 + args.seed)
    vx = torch.from_numpy(synth.minmax_normalise(vcounts)).unsqueeze(1)
    print(f"data: {args.train} peaks in {time.time() - t0:.1f} s", flush=True)

    m = models.make(args.kind)
    if not standardise:
        # A ReLU on the output: start every dense unit, the outputs included, in the ReLU's live
        # range (outputs near the mean centre / 11), or the net can die at step one.
        with torch.no_grad():
            for fc in (m.fc1, m.fc2, m.fc3):
                fc.bias.fill_(0.1)
            m.fc4.weight.mul_(0.1)
            m.fc4.bias.fill_(CENTRE_MEAN / synth.PATCH)
    opt = torch.optim.Adam(m.parameters(), lr=args.lr)
    steps = args.epochs * ((args.train + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=args.lr / 100)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        m.train()
        perm = torch.randperm(args.train, generator=gen)
        total = 0.0
        for i in range(0, args.train, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        m.eval()
        with torch.no_grad():
            err = (m(vx).numpy() * scale + shift - vtruth[:, :2])
        dist = np.sqrt((err ** 2).sum(axis=1))
        print(f"epoch {epoch + 1}/{args.epochs}: train mse {total / args.train:.3g}, validation median "
              f"{np.median(dist):.3f} px, p95 {np.percentile(dist, 95):.3f} px, {time.time() - t0:.0f} s", flush=True)
    if standardise:  # fold (z * scale + shift) / 11 into the last linear layer
        with torch.no_grad():
            m.fc5.weight.mul_(scale / synth.PATCH)
            m.fc5.bias.mul_(scale).add_(shift).div_(synth.PATCH)
    meta = {"network": args.kind, "trained_on": f"synth.py seed {1000 + args.seed}, {args.train} peaks",
            "epochs": str(args.epochs), "train_seconds": f"{time.time() - t0:.0f}"}
    torch.save({"state_dict": m.state_dict(), "metadata": meta}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
