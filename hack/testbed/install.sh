#!/usr/bin/env bash
# Installs Sluice into the test bed the way a user would: the CRDs, then the Helm chart
# (RBAC, ServiceAccount, broker Secret) with 0 controller replicas, because the test bed has
# no kubelet and runs the controller as a local process instead. Writes a kubeconfig with
# the chart's ServiceAccount token to .testbed/sluice-sa.kubeconfig.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tb=${TESTBED_DIR:-$root/.testbed}
. "$here/versions.sh"
bin=$BIN_CACHE/current
export KUBECONFIG=${KUBECONFIG:-$tb/kubeconfig}
ns=${SLUICE_NAMESPACE:-sluice-system}

"$bin/kubectl" apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
"$bin/kubectl" wait --for=condition=Established --timeout=60s \
  crd/eventtopics.sluice.dev crd/subscriptions.sluice.dev crd/webhooks.sluice.dev crd/apiversionpolicies.sluice.dev >/dev/null
"$bin/helm" upgrade --install sluice "$root/charts/sluice" --namespace "$ns" --create-namespace \
  --set replicaCount=0 --set broker.create=true \
  --set-string broker.uri='amqp://guest:guest@127.0.0.1:5672/%2f' \
  --set-string broker.managementUri='http://127.0.0.1:15672' \
  --wait --timeout 2m >/dev/null

token=$("$bin/kubectl" -n "$ns" create token sluice --duration=48h)
server=$("$bin/kubectl" config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$("$bin/kubectl" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat > "$tb/sluice-sa.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: sluice
  user: {token: "$token"}
contexts:
- name: sluice
  context: {cluster: testbed, user: sluice, namespace: $ns}
current-context: sluice
KC
echo "install: Sluice CRDs and chart installed in $ns; controller kubeconfig $tb/sluice-sa.kubeconfig" >&2
