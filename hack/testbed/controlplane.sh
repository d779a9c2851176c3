#!/usr/bin/env bash
# Starts/stops a real Kubernetes control plane as local processes: etcd, kube-apiserver (RBAC
# on), kube-controller-manager, kube-scheduler and kwok with one fake node. Binaries come from
# build-bins.sh (built from the Go module proxy, cached by version). The admin kubeconfig is
# .testbed/kubeconfig. Usage: controlplane.sh up|down|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tb=${TESTBED_DIR:-$root/.testbed}
dir=$tb/controlplane
pki=$dir/pki
log() { echo "controlplane: $*" >&2; }
. "$here/versions.sh"

APISERVER_PORT=${APISERVER_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-2379}
server=https://127.0.0.1:$APISERVER_PORT

pidfile() { echo "$dir/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

start() { # name, command...
  local name=$1; shift
  if running "$name"; then return; fi
  setsid nohup "$@" > "$dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "$what did not become healthy in ${secs}s; last log lines:"; tail -20 "$dir/${what}.log" >&2 || true
  return 1
}

# One CA signs the serving cert and the client certs; a separate key pair signs service
# account tokens, as in a kubeadm cluster.
make_pki() {
  [ -f "$pki/admin.crt" ] && return
  mkdir -p "$pki"; cd "$pki"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj "/CN=sluice-testbed-ca" -days 3650 -out ca.crt 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key 2>/dev/null
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  issue() { # name, subject, extensions
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  issue apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
    'subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1' \
    'extendedKeyUsage=serverAuth' 'keyUsage=critical,digitalSignature,keyEncipherment')"
  client='extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment'
  issue admin "/O=system:masters/CN=sluice-admin" "$client"
  issue controller-manager "/CN=system:kube-controller-manager" "$client"
  issue scheduler "/CN=system:kube-scheduler" "$client"
  cd - >/dev/null
}

kubeconfig() { # user, output
  local user=$1 out=$2
  cat > "$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-testbed
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$user.crt")
    client-key-data: $(base64 -w0 < "$pki/$user.key")
contexts:
- name: sluice-testbed
  context: {cluster: sluice-testbed, user: $user}
current-context: sluice-testbed
EOF
}

apiserver_ready() {
  curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz" >/dev/null 2>&1
}

# Bump when the stage definitions below change, so a running test bed picks them up.
KWOK_STAGES_STAMP=2

# kwok's own stage definitions (node ready/heartbeat, pod ready/complete/delete), read from
# the module kwok was built from (they are not part of this repository). Pods labelled
# app.kubernetes.io/name=sluice-dispatcher are left out of "ready" and "delete": the pod
# runner (hack/testbed/podrunner) runs them as processes and reports their status, as a
# kubelet would.
kwok_stages() {
  local src out=$dir/kwok-stages
  src=$(GOFLAGS=-mod=mod go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  mkdir -p "$out"
  cp "$src/node/fast/node-initialize.yaml" "$src/node/heartbeat/node-heartbeat.yaml" \
    "$src/pod/fast/pod-complete.yaml" "$out/"
  for stage in pod-ready pod-delete; do
    awk '{ print }
         /^    matchExpressions:$/ && !done {
           print "    - key: '"'"'.metadata.labels.\"app.kubernetes.io/name\"'"'"'"
           print "      operator: NotIn"
           print "      values: [sluice-dispatcher]"
           done = 1
         }' "$src/pod/fast/$stage.yaml" > "$out/$stage.yaml"
    grep -q 'sluice-dispatcher' "$out/$stage.yaml" || { log "cannot adapt kwok stage $stage"; exit 1; }
  done
  echo "$KWOK_STAGES_STAMP" > "$out/.stamp"
}

start_kwok() {
  kwok_stages
  local stages=$dir/kwok-stages
  start kwok "$bin/kwok" --kubeconfig "$tb/kubeconfig" \
    --config "$stages/node-initialize.yaml" --config "$stages/node-heartbeat.yaml" \
    --config "$stages/pod-ready.yaml" --config "$stages/pod-complete.yaml" \
    --config "$stages/pod-delete.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.0.1.0/24 --node-ip 127.0.0.1 --server-address 127.0.0.1:10247
}

up() {
  bin=$(bash "$here/build-bins.sh")
  mkdir -p "$dir"
  make_pki
  kubeconfig admin "$tb/kubeconfig"
  kubeconfig controller-manager "$dir/controller-manager.kubeconfig"
  kubeconfig scheduler "$dir/scheduler.kubeconfig"
  if running etcd && running kube-apiserver && running kube-controller-manager \
     && running kube-scheduler && running kwok && apiserver_ready; then
    if [ "$(cat "$dir/kwok-stages/.stamp" 2>/dev/null)" != "$KWOK_STAGES_STAMP" ]; then
      log "restarting kwok with the current stage definitions"
      kill "$(cat "$(pidfile kwok)")" 2>/dev/null || true
      for _ in $(seq 1 40); do running kwok || break; sleep 0.25; done
      start_kwok
    fi
    log "already up ($server, kubeconfig $tb/kubeconfig)"; return
  fi
  start etcd "$bin/etcd" --name sluice-testbed --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:$((ETCD_PORT + 1)) --initial-advertise-peer-urls http://127.0.0.1:$((ETCD_PORT + 1)) \
    --initial-cluster "sluice-testbed=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer "$server" --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --allow-privileged=true \
    --endpoint-reconciler-type none --profiling=false --cert-dir "$dir/certs" \
    --max-requests-inflight 1000 --max-mutating-requests-inflight 500
  wait_for kube-apiserver 90 apiserver_ready

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false
  start_kwok
  wait_for kube-controller-manager 60 curl -sfk https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -sfk https://127.0.0.1:10259/healthz

  # One fake node for kwok to run (simulate) Pods on, so Deployments become Available.
  "$bin/kubectl" --kubeconfig "$tb/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "32", memory: 256Gi, pods: "1000"}
EOF
  # The default ServiceAccount appears once the controller-manager runs; admission needs it.
  for _ in $(seq 1 120); do
    "$bin/kubectl" --kubeconfig "$tb/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.25
  done
  log "up ($server, kubeconfig $tb/kubeconfig)"
}

down() {
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if running "$name"; then
      kill "$(cat "$(pidfile "$name")")" 2>/dev/null || true
    fi
  done
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    local f; f=$(pidfile "$name")
    if [ -f "$f" ]; then
      for _ in $(seq 1 40); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    fi
  done
  log "down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) apiserver_ready && echo up || { echo down; exit 1; } ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
