#!/usr/bin/env bash
# Loom's set-up and run script for a Debian 12 machine.
#
#   tools/quickstart.sh demo   install what is missing, build, start a local fabric (redis-server,
#                              loom-service, one loom-endpoint with workers) on free loopback
#                              ports, run the demo against it, stop everything
#   tools/quickstart.sh test   install what is missing, build, run the whole test suite (ctest), then
#                              the fuzz targets for 30 s each (tools/run_fuzzers.sh, clang)
#   tools/quickstart.sh build  install what is missing and build into build/
#   tools/quickstart.sh deps   only install what is missing (containers/Dockerfile uses it)
#   tools/quickstart.sh up     build, then start a local fabric and leave it running (.loom/)
#   tools/quickstart.sh down   stop the fabric that `up` started
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config ccache clang libclang-rt-dev
  libzmq3-dev cppzmq-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libhiredis-dev redis-server
  libjemalloc-dev
  libspdlog-dev libssl-dev libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  prometheus-cpp-dev
  libcpp-httplib-dev openssl nlohmann-json3-dev
  libeigen3-dev
  libdnnl-dev libonnx-dev
  bubblewrap
  # A real one-node Slurm for the Slurm provider's tests (tests/support/slurm_cluster.h)
  slurm-wlm munge
)

log() { printf '\n==> %s\n' "$*"; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#PACKAGES[@]} Debian packages are installed"
    return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  # RUNLEVEL=1 keeps the redis-server package from starting a system-wide Redis: Loom starts
  # its own on free ports.
  $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Optimised as RelWithDebInfo (-O2); DEBUG_INFO=0 (the test suite) leaves out the debug
# information, which nearly doubles the compile time on a 2-core machine and no test needs.
# Switching between the two rebuilds everything.
build() {
  local flags="-O2 -g -DNDEBUG"
  [ "${DEBUG_INFO:-1}" = 1 ] || flags="-O2 -DNDEBUG"
  log "building into build/ (cmake, -j2, $flags)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" "$@" >/dev/null
  cmake --build build -j2
}

case "${1:-}" in
  demo)
    install_packages
    build
    log "running the demo on a fresh local fabric"
    exec build/bin/loom-local run --state-dir build/state -- build/bin/loom-demo --service '{grpc}' --endpoint local
    ;;
  test)
    install_packages
    DEBUG_INFO=0 build -DLOOM_WERROR=ON
    log "running the test suite"
    (cd build && ctest --output-on-failure --timeout 600)
    # The JSON and ZeroMQ-frame decoders and the worker sockets' framing under libFuzzer with
    # ASan/UBSan, 30 s each.
    exec tools/run_fuzzers.sh 30
    ;;
  build)
    install_packages
    build
    ;;
  deps)
    # Only the Debian packages (containers/Dockerfile builds on this).
    install_packages
    ;;
  up)
    install_packages
    build
    exec build/bin/loom-local up --state-dir .loom
    ;;
  down)
    exec build/bin/loom-local down --state-dir .loom
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
