#!/bin/sh
# A stand-in for docker/podman in the container launch test (tests/integration/sandbox_test.cc):
# appends each command line to $LOOM_FAKE_RUNTIME_LOG; `run` executes what follows the image
# ($LOOM_FAKE_RUNTIME_IMAGE) on the host, as the container would; `rm` does nothing else.
log="${LOOM_FAKE_RUNTIME_LOG:?}"
image="${LOOM_FAKE_RUNTIME_IMAGE:?}"
echo "$*" >> "$log"
case "$1" in
  run)
    shift
    while [ $# -gt 0 ] && [ "$1" != "$image" ]; do shift; done
    [ $# -gt 0 ] || { echo "fake runtime: no image $image in the command" >&2; exit 125; }
    shift
    exec "$@"
    ;;
  rm) exit 0 ;;
  *) echo "fake runtime: unsupported command $1" >&2; exit 125 ;;
esac
