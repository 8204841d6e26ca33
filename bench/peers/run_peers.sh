#!/usr/bin/env bash
# Runs Loom and its peers on the same no-op workload, one after another in the same run, and
# prints each system's JSON line and the ratios. Not part of CI or the quick start: it installs
# Debian's python3-distributed, python3-celery and python3-redis when missing.
#   bench/peers/run_peers.sh [build-dir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../../build}"
need=()
for p in python3-distributed python3-celery python3-redis redis-server; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
out="$(mktemp -d)"
trap 'kill "${redis_pid:-0}" 2>/dev/null || true; rm -rf "$out"' EXIT

"$build/bin/loom-bench" --tasks 20000 --latency-samples 1000 --json 2>/dev/null | tail -1 > "$out/loom.json"
/usr/bin/python3 "$here/dask_noop.py" --tasks 5000 --latency-samples 500 2>/dev/null | tail -1 > "$out/dask.json"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" >/dev/null &
redis_pid=$!
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
PEER_REDIS_URL="redis://127.0.0.1:$port/0" /usr/bin/python3 "$here/celery_noop.py" --tasks 5000 --latency-samples 500 \
  2>/dev/null | tail -1 > "$out/celery.json"

/usr/bin/python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
rows = {n: json.load(open(os.path.join(d, n + ".json"))) for n in ("loom", "dask", "celery")}
for r in rows.values():
    print(json.dumps(r))
loom = rows["loom"]
print()
print(f"{'system':8} {'tasks/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'Loom tasks/s ratio':>20} {'Loom p50 ratio':>15}")
for n, r in rows.items():
    print(f"{n:8} {r['tasks_per_s']:>10} {r['p50_ms']:>8} {r['p99_ms']:>8} "
          f"{loom['tasks_per_s'] / r['tasks_per_s']:>19.1f}x {r['p50_ms'] / loom['p50_ms']:>14.1f}x")
PY
