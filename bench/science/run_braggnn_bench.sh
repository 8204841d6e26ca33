#!/usr/bin/env bash
# Runs loom-bench-braggnn and its PyTorch CPU peer (bench/peers/braggnn_torch.py) on the same
# peaks and trained weights, one after the other in one command, and prints one table: us per
# patch, Loom / PyTorch speed-up, the OpenHLS FPGA figure, and BraggNN vs the pseudo-Voigt fit.
# Both sides single-threaded (THREADS=N for PyTorch's intra-op threads); Loom's *_2threads rows
# split one batch across two threads. Without PyTorch (no python3-torch) the Loom side runs
# alone and the PyTorch columns read "-". Loom's "(CPU time)" column is its process's CPU time per
# patch (both threads' for *_2threads): on a shared machine the wall clock also counts the time
# other processes hold the core. Builds nothing.
# Usage: bench/science/run_braggnn_bench.sh [BUILD_DIR (default build)]
set -euo pipefail
build="${1:-build}"
threads="${THREADS:-1}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bench="$build/bin/loom-bench-braggnn"
[[ -x "$bench" ]] || { echo "no $bench; build the loom-bench-braggnn target first" >&2; exit 1; }
[[ -x /usr/bin/python3 ]] || { echo "needs /usr/bin/python3 with Debian's python3-torch" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
"$bench" --data-dir "$root/kernels/science/data" --batches 1,64,256,1024 --write-peaks "$tmp/peaks.safetensors" \
  > "$tmp/loom.jsonl"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  /usr/bin/python3 "$root/bench/peers/braggnn_torch.py" "$tmp/peaks.safetensors" --threads "$threads" \
    --batches 1,64,256,1024 > "$tmp/torch.jsonl"
else
  echo "no PyTorch (python3-torch): Loom alone" >&2
  : > "$tmp/torch.jsonl"
fi
/usr/bin/python3 - "$tmp/loom.jsonl" "$tmp/torch.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
loom = {(r["bench"], r["batch"]): r["us_per_sample"] for r in lines}
cpu = {(r["bench"], r["batch"]): r["cpu_us_per_sample"] for r in lines}
rows = [json.loads(l) for l in open(sys.argv[2])]
torch = {(r["bench"], r["batch"]): r["us_per_sample"] for r in rows}
peer = f"PyTorch {rows[0]['torch']} CPU, {rows[0]['threads']} thread(s)" if rows else "no PyTorch"
print(f"{peer}; Loom single-threaded but for the *_2threads rows\n")
print(f"{'network':<22} {'batch':>5} {'Loom us/patch':>14} {'(CPU time)':>11} {'PyTorch us/patch':>17} {'speed-up':>9}")
for name in ("braggnn_f32", "fpga_f32"):
    for b in (1, 64, 256, 1024):
        l, c, t = loom[(name, b)], cpu[(name, b)], torch.get((name, b))
        ratio = f"{t / l:>8.2f}x" if t is not None else f"{'-':>9}"
        peer = f"{t:>17.2f}" if t is not None else f"{'-':>17}"
        print(f"{name:<22} {b:>5} {l:>14.2f} {c:>11.2f} {peer} {ratio}")
for (name, b), v in sorted(loom.items()):
    if name.endswith("_2threads") or name == "fpga_e5m4_emulated":
        print(f"{name:<22} {b:>5} {v:>14.2f} {cpu[(name, b)]:>11.2f} {'-':>17} {'-':>9}")
print(f"\nOpenHLS on an Alveo U280 (Levental et al. 2023): 4.8 us/patch")
fit = [v for (n, b), v in loom.items() if n == "pseudo_voigt_fit"][0]
com = [v for (n, b), v in loom.items() if n == "centre_of_mass"][0]
same = [v for (n, b), v in loom.items() if n == "braggnn_f32_same_peaks"][0]
print(f"pseudo-Voigt LM fit: {fit:.1f} us/peak; centre of mass {com:.3f} us/peak; BraggNN on the same peaks "
      f"(one batch) {same:.2f} us/peak: BraggNN is {fit / same:.1f}x faster than the fit")
PY
