#!/usr/bin/env bash
# Runs loom-bench-dog and its scikit-image peer on the same frames and prints one table: ms per
# 1000x1000 frame for n_bin = 3, 10, 50, the ratio to skimage.feature.blob_dog, and the paper's
# GPU figures (Levental et al. 2020: 6-60 ms per frame). Builds nothing.
# Usage: bench/vision/run_dog_bench.sh [BUILD_DIR (default build)] ; IMAGES=N (default 3) frames.
set -euo pipefail
build="${1:-build}"
images="${IMAGES:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
bench="$build/bin/loom-bench-dog"
[[ -x "$bench" ]] || { echo "no $bench; build the loom-bench-dog target first" >&2; exit 1; }
[[ -x /usr/bin/python3 ]] || { echo "needs /usr/bin/python3 with Debian's python3-skimage" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "frames:  $images x 1000x1000, 100 Gaussian spheres each (MakeSpheresFrame seeds 1..$images), 16-bit"
"$bench" --images "$images" --out-dir "$tmp/frames" --json > "$tmp/loom.jsonl"
/usr/bin/python3 "$here/skimage_dog.py" "$tmp/frames" 3 10 50 > "$tmp/skimage.jsonl"
/usr/bin/python3 - "$tmp/loom.jsonl" "$tmp/skimage.jsonl" <<'PY'
import json, sys
loom = [json.loads(l) for l in open(sys.argv[1])]
sk = {r["n_bin"]: r for r in map(json.loads, open(sys.argv[2]))}
dog = {(r["mode"], r["n_bin"]): r for r in loom if r["bench"] == "dog"}
print(f"loom threads: {loom[0]['threads']}; scikit-image {next(iter(sk.values()))['skimage']} (single-threaded)\n")
print(f"{'n_bin':>5} {'scales':>6} {'loom paper ms':>14} {'loom skimage-mode ms':>21} {'blob_dog ms':>12} "
      f"{'ratio paper':>12} {'ratio skimage-mode':>19} {'paper GPU ms':>13}")
for n in sorted(sk):
    p, s, b = dog[("paper", n)], dog[("skimage", n)], sk[n]
    print(f"{n:>5} {b['scales']:>6} {p['ms_median']:>14.1f} {s['ms_median']:>21.1f} {b['ms_median']:>12.1f} "
          f"{b['ms_median'] / p['ms_median']:>11.1f}x {b['ms_median'] / s['ms_median']:>18.1f}x {'6-60':>13}")
print("\nblobs per frame (truth 100): " + ", ".join(
    f"n_bin {n}: paper {dog[('paper', n)]['blobs_per_image']:.0f} (P {dog[('paper', n)]['precision']:.2f} "
    f"R {dog[('paper', n)]['recall']:.2f}), skimage-mode {dog[('skimage', n)]['blobs_per_image']:.0f}, "
    f"blob_dog {sk[n]['blobs_per_image']:.0f}" for n in sorted(sk)))
sweep = [r for r in loom if r["bench"] == "gauss_sweep"]
print("\nGaussian filter 1000x1000 float32, 1 thread, ms: sigma direct / fft (single) / fft per scale in a bank")
for r in sweep:
    print(f"  sigma {r['sigma']:>4g} (radius {r['radius']:>3}): {r['direct_ms']:7.2f} / {r['fft_ms']:7.2f} / {r['fft_bank_ms']:7.2f}")
PY
