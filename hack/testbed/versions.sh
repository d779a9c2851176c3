# Pinned versions of everything the test bed builds or installs. Sourced by the scripts here.
K8S_VERSION=v1.35.4          # must match tools/k8s-bins/go.mod and the k8s-openapi feature (v1_35)
ETCD_VERSION=v3.6.16         # must match tools/etcd-bin/go.mod
KWOK_VERSION=v0.8.0
HELM_VERSION=v4.3.1
SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
BIN_CACHE=$SLUICE_CACHE/bin
# The broker. `SLUICE_BROKER=4` (the default) runs RabbitMQ 4.x from a Debian testing root
# (broker-root.sh); `SLUICE_BROKER=3.10` runs Debian 12's own rabbitmq-server 3.10.8.
SLUICE_BROKER=${SLUICE_BROKER:-4}
BROKER_SUITE=forky                       # Debian testing when 4.3.6 was pinned
RABBITMQ4_VERSION=4.3.6-1                # Debian package version in $BROKER_SUITE
ERLANG4_VERSION=1:29.1.1+dfsg-1          # the Erlang that package was built against
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT_CACHE=$SLUICE_CACHE/roots
