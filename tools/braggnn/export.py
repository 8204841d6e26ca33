"""Writes BraggNN's committed data files (kernels/science/data/) from trained state dicts (train.py):

  braggnn_trained.safetensors        trained BraggNN weights (built into the braggnn kernel)
  braggnn_fpga_e5m4.bitstream        trained FPGA-class weights + number format + checksum
  braggnn_fpga_e5m3.bitstream        (built into the braggnn-fpga kernel; format: kernels/science/bitstream.h)
  golden_<net>_<weights>.safetensors for net in braggnn, braggnn_fpga and weights in random, trained:
                                     the weights, golden.input (raw counts [16, 11, 11]: synthetic peaks
                                     and one constant patch) and golden.output ([16, 2], PyTorch float32)

  /usr/bin/python3 tools/braggnn/export.py --braggnn /tmp/braggnn.pt --fpga /tmp/fpga.pt --out kernels/science/data
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "nn"))
import model as models  # noqa: E402
import safetensors_io  # noqa: E402
import synth  # noqa: E402

GOLDEN_SEED = 4242
GOLDEN_N = 16


def weights_of(m):
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in m.state_dict().items()}


def golden_input():
    counts, _ = synth.generate(GOLDEN_N - 1, seed=GOLDEN_SEED)
    return np.concatenate([counts, np.full((1, synth.PATCH, synth.PATCH), 7.0, np.float32)])


def forward(m, counts):
    with torch.no_grad():
        x = torch.from_numpy(synth.minmax_normalise(counts)).unsqueeze(1)
        return m.eval()(x).numpy().astype(np.float32)


def bitstream_checksum(network, number_format, tensors):
    """kernels/science/bitstream.h's CanonicalBytes, hashed."""
    h = hashlib.sha256()
    h.update(f"loom-bitstream-v1\nnetwork={network}\nnumber_format={number_format}\n".encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        h.update(name.encode() + b"\n" + ",".join(str(d) for d in a.shape).encode() + b"\n" + a.tobytes())
    return "sha256:" + h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--braggnn", required=True, help="trained BraggNN state dict from train.py")
    ap.add_argument("--fpga", required=True, help="trained FPGA-class BraggNN state dict from train.py")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    x = golden_input()
    for kind, path in (("braggnn", args.braggnn), ("braggnn-fpga", args.fpga)):
        stem = kind.replace("-", "_")
        torch.manual_seed(7)  # the seeded random weights: PyTorch's default initialisation
        rand = models.make(kind)
        trained = models.make(kind)
        saved = torch.load(path)
        trained.load_state_dict(saved["state_dict"])
        for label, m, meta in (("random", rand, {"weights": "torch.manual_seed(7), default init"}),
                               ("trained", trained, saved["metadata"])):
            t = weights_of(m)
            t["golden.input"] = x
            t["golden.output"] = forward(m, x)
            safetensors_io.save(os.path.join(args.out, f"golden_{stem}_{label}.safetensors"), t,
                                metadata={"network": kind, **meta})
        w = weights_of(trained)
        if kind == "braggnn":
            safetensors_io.save(os.path.join(args.out, "braggnn_trained.safetensors"), w,
                                metadata={"network": kind, **saved["metadata"]})
        else:
            for fmt in ("e5m4", "e5m3"):
                meta = {"loom_artifact": "bitstream", "format_version": "1", "network": kind,
                        "number_format": fmt, "checksum": bitstream_checksum(kind, fmt, w)}
                safetensors_io.save(os.path.join(args.out, f"braggnn_fpga_{fmt}.bitstream"), w, metadata=meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
