#!/usr/bin/env bash
# make e2e-kind: the e2e suite with a kind cluster as the control plane instead of the local
# processes. Needs Docker. RabbitMQ and the controller still run on this machine (the suite
# starts the controller with the chart's ServiceAccount token, exactly as on the test bed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/testbed/versions.sh"
KIND_VERSION=${KIND_VERSION:-v0.32.0}
cluster=${KIND_CLUSTER:-sluice-e2e}
tb=$root/.testbed/kind
mkdir -p "$tb"

command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "e2e-kind: needs a running Docker engine" >&2; exit 2; }
bin=$(bash "$here/testbed/build-bins.sh")
kind=$BIN_CACHE/kind-$KIND_VERSION/kind
[ -x "$kind" ] || GOBIN=$(dirname "$kind") go install "sigs.k8s.io/kind@$KIND_VERSION"

bash "$here/testbed/deps.sh"
bash "$here/testbed/rabbitmq.sh" up
"$kind" get clusters | grep -qx "$cluster" || "$kind" create cluster --name "$cluster" --wait 120s
"$kind" get kubeconfig --name "$cluster" > "$tb/kubeconfig"

KUBECONFIG=$tb/kubeconfig TESTBED_DIR=$tb bash "$here/testbed/install.sh"
cd "$root"
SLUICE_BIN_DIR="$bin" SLUICE_TESTBED="$tb" cargo test --features e2e --test e2e -- --test-threads=1
