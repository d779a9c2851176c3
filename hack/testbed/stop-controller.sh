#!/usr/bin/env bash
# Stops the background controller, pod runner and receiver `make demo` started, if they run:
# the e2e tests and the benchmarks start their own, and two controllers would both act on the
# same objects.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
for name in controller podrunner receiver; do
  pidfile=${TESTBED_DIR:-$root/.testbed}/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped the demo $name (pid $pid)" >&2
  fi
  rm -f "$pidfile"
done
