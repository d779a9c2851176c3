# Pinned versions of everything the test bed builds or installs. Sourced by the scripts here.
K8S_VERSION=v1.35.4          # must match tools/k8s-bins/go.mod and the k8s-openapi feature (v1_35)
ETCD_VERSION=v3.6.16         # must match tools/etcd-bin/go.mod
KWOK_VERSION=v0.8.0
HELM_VERSION=v4.3.1
SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
BIN_CACHE=$SLUICE_CACHE/bin
