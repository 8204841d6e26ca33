#!/usr/bin/env bash
# PtychoNN frames/s: Loom's oneDNN kernels next to PyTorch CPU, measured in the same run, with the
# ratio (docs/BENCHMARKS.md). Usage: bench/science/run_ptychonn_bench.sh [build-dir] [seconds]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build}"
seconds="${2:-3}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# Interleaved, model by model, so both see the same machine load.
for m in ptychonn ptychonn-edge; do
  "$build/bin/loom-bench-ptychonn" --models "$m" --batches 1,8 --seconds "$seconds" | tee -a "$out"
  /usr/bin/python3 "$here/ptychonn_torch.py" --models "$m" --batches 1,8 --seconds "$seconds" | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {(r["impl"], r["model"], r["batch"]): r for r in rows}
print("\n| model | batch | Loom oneDNN frames/s | PyTorch CPU frames/s | ratio |")
print("|---|---|---|---|---|")
for (impl, model, batch), r in sorted(by.items()):
    if impl != "loom-onednn":
        continue
    p = by.get(("pytorch-cpu", model, batch))
    if p:
        print(f"| {model} | {batch} | {r['frames_per_s']:.0f} | {p['frames_per_s']:.0f} | "
              f"{r['frames_per_s'] / p['frames_per_s']:.2f}x |")
PY
