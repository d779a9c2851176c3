#!/usr/bin/env bash
# make run: the controller in the foreground against the test bed (or $KUBECONFIG), with
# loopback allowlisted for webhooks, and the pod runner in the background starting the
# dispatcher Deployments it writes as local processes; both stop together.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tb=$root/.testbed
export KUBECONFIG=${KUBECONFIG:-$tb/kubeconfig}
SLUICE_BIN=$root/target/debug/sluice "$root/target/debug/sluice-podrunner" --state-dir "$tb/pods" \
  > "$tb/podrunner.log" 2>&1 < /dev/null &
runner=$!
trap 'kill $runner 2>/dev/null || true' EXIT
echo "pod runner: pid $runner, log .testbed/podrunner.log" >&2
SLUICE_NAMESPACE=sluice-system RUST_LOG=${RUST_LOG:-info,sluice=debug} \
  "$root/target/debug/sluice" controller --admin-addr 127.0.0.1:8080 \
  --egress-allow 127.0.0.0/8 --dispatcher-log-format plain
