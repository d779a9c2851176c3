#!/usr/bin/env bash
# Stops the background controller `make demo` started, if it runs: the e2e tests and the
# benchmarks start their own, and two controllers would both act on the same objects.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pidfile=${TESTBED_DIR:-$root/.testbed}/controller.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  echo "stopped the demo controller (pid $pid)" >&2
fi
rm -f "$pidfile"
