#!/usr/bin/env bash
# Builds the control-plane binaries, kwok and helm from the Go module proxy, once per pinned
# version, into a cache outside the repository. Prints the directory holding them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# A build cache of our own, removed once the binaries are built: they are cached by version,
# so the several GB of compiled packages are of no use afterwards and only fill a CI disk.
export GOCACHE=$SLUICE_CACHE/go-build
log() { echo "build-bins: $*" >&2; }
began=$(date +%s)
built=""

k8s_dir=$BIN_CACHE/kubernetes-$K8S_VERSION
if [ ! -x "$k8s_dir/kubectl" ]; then
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (first time only; ~6 min on 2 cores)"
  start=$(date +%s)
  mkdir -p "$k8s_dir.tmp"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldf="-s -w"
  # Without these the binaries report v0.0.0-master, which breaks discovery-based version checks.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$root/tools/k8s-bins" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldf" \
    -o "$k8s_dir.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$k8s_dir" && mv "$k8s_dir.tmp" "$k8s_dir"
  log "kubernetes binaries built in $(( $(date +%s) - start ))s"; built=1
fi

etcd_dir=$BIN_CACHE/etcd-$ETCD_VERSION
if [ ! -x "$etcd_dir/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  mkdir -p "$etcd_dir.tmp"
  (cd "$root/tools/etcd-bin" && go build -trimpath -ldflags "-s -w" -o "$etcd_dir.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$etcd_dir" && mv "$etcd_dir.tmp" "$etcd_dir"; built=1
fi

kwok_dir=$BIN_CACHE/kwok-$KWOK_VERSION
if [ ! -x "$kwok_dir/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$kwok_dir.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$kwok_dir" && mv "$kwok_dir.tmp" "$kwok_dir"; built=1
fi

helm_dir=$BIN_CACHE/helm-$HELM_VERSION
if [ ! -x "$helm_dir/helm" ]; then
  log "building helm $HELM_VERSION"
  GOBIN="$helm_dir.tmp" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  rm -rf "$helm_dir" && mv "$helm_dir.tmp" "$helm_dir"; built=1
fi

if [ -n "$built" ]; then
  rm -rf "$GOCACHE"
  log "all binaries ready in $(( $(date +%s) - began ))s"
fi

# One directory on PATH for the scripts and tests.
mkdir -p "$BIN_CACHE/current"
ln -sf "$k8s_dir"/* "$etcd_dir/etcd" "$kwok_dir/kwok" "$helm_dir/helm" "$BIN_CACHE/current/"
echo "$BIN_CACHE/current"
