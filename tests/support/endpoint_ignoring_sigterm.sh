#!/bin/sh
# Stands in for loom-endpoint as a daemon that ignores SIGTERM: this shell (the pid `loom endpoint
# start` records) ignores it and runs the real loom-endpoint as its child, which never hears of
# it. For the test that `loom endpoint stop` falls back to SIGKILL of the whole process group
# (endpoint_lifecycle_test).
trap '' TERM
"${LOOM_TEST_REAL_ENDPOINT:?}" "$@"
exit $?
