#!/usr/bin/python3
"""Exports PtychoNN weights, golden inputs/outputs and an ONNX model for the C++ tests.

    /usr/bin/python3 tools/ptychonn/export.py --trained /tmp/ptychonn-train

reads the state dicts train.py wrote and writes (paths relative to the repository root):
  kernels/science/models/ptychonn.safetensors, ptychonn_edge.safetensors   trained weights
  tests/data/ptychonn/golden_ptychonn.safetensors        input [2,1,64,64] (synth.py, seed 5) and
      the outputs for seeded random weights (models.seeded_weights, seed 7) and the trained ones
  tests/data/ptychonn/golden_ptychonn_edge.safetensors   the same for the edge model, [2,1,128,128]
  tests/data/ptychonn/ptychonn_edge.onnx                 the trained edge model, torch.onnx.export
  tests/data/ptychonn/reference_metrics.json             train.py's held-out metrics
Takes a few seconds.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "nn"))

import models  # noqa: E402
import safetensors_io  # noqa: E402
import synth  # noqa: E402

RANDOM_SEED = 7
INPUT_SEED = 5
SAMPLES = 2


def outputs(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    if isinstance(out, tuple):
        return {"amplitude": out[0].numpy(), "phase": out[1].numpy()}
    return {"phase": out.numpy()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", required=True, help="train.py's --out directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models_dir = os.path.join(ROOT, "kernels", "science", "models")
    data_dir = os.path.join(ROOT, "tests", "data", "ptychonn")
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    for name, cls, n in (("ptychonn", models.PtychoNN, 64), ("ptychonn_edge", models.PtychoNNEdge, 128)):
        trained = cls().eval()
        trained.load_state_dict(torch.load(os.path.join(args.trained, name + ".pt")))
        weights = {k: v.numpy() for k, v in trained.state_dict().items()}
        safetensors_io.save(os.path.join(models_dir, name + ".safetensors"), weights,
                            {"architecture": name, "source": "tools/ptychonn/train.py (synthetic data)"})
        x = synth.make_dataset(INPUT_SEED, n, SAMPLES)[0][:, None]
        golden = {"input": x}
        for k, v in outputs(models.seeded_random(cls, RANDOM_SEED), x).items():
            golden["random_" + k] = v
        for k, v in outputs(trained, x).items():
            golden["trained_" + k] = v
        safetensors_io.save(os.path.join(data_dir, "golden_" + name + ".safetensors"), golden,
                            {"random_seed": str(RANDOM_SEED), "input_seed": str(INPUT_SEED),
                             "torch": torch.__version__})
        if name == "ptychonn_edge":
            torch.onnx.export(trained, torch.from_numpy(x[:1]), os.path.join(data_dir, name + ".onnx"),
                              input_names=["frames"], output_names=["phase"], opset_version=13,
                              dynamic_axes={"frames": {0: "batch"}, "phase": {0: "batch"}})
    shutil.copy(os.path.join(args.trained, "metrics.json"), os.path.join(data_dir, "reference_metrics.json"))
    print(json.dumps(json.load(open(os.path.join(data_dir, "reference_metrics.json"))), indent=1))


if __name__ == "__main__":
    main()
