#!/usr/bin/env bash
# Builds Loom's libFuzzer targets with clang (AddressSanitizer + UBSan) into build-fuzz/ and runs
# each for a bounded time on its seed corpus (tests/fuzz/corpus/<target>). A crash, a leak or a
# sanitizer report fails the run and leaves the input in build-fuzz/artifacts/.
#
#   tools/run_fuzzers.sh [SECONDS_PER_TARGET]     (default 30; CI runs it from quickstart.sh test)
#
# Longer runs: build-fuzz/bin/json_fuzz -max_total_time=3600 -jobs=2 build-fuzz/corpus/json_fuzz
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
build=build-fuzz
log() { printf '\n==> %s\n' "$*"; }

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
log "building the fuzz targets with clang into $build/"
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DLOOM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" >/dev/null
make -C "$build" -j2 --no-print-directory json_fuzz frame_fuzz link_fuzz

mkdir -p "$build/artifacts"
for target in json_fuzz frame_fuzz link_fuzz; do
  # A working copy of the seeds: what the fuzzer finds is kept between local runs.
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"${target%_fuzz}"/* "$corpus"/ 2>/dev/null || true
  log "fuzzing $target for ${seconds}s"
  "$build/bin/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" "$corpus" 2>&1 | tail -n 12
done
log "fuzzing found nothing"
