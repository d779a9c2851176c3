#!/usr/bin/env bash
# Builds, once per pinned version, a minimal Debian testing root holding RabbitMQ 4.x and its
# Erlang, cached in ~/.cache/sluice/roots. rabbitmq.sh runs the broker from it with chroot.
# Debian 12 ships RabbitMQ 3.10 only; the same mirror's testing suite has the 4.x users run.
# Prints the root's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
log() { echo "broker-root: $*" >&2; }

dest=$ROOT_CACHE/rabbitmq-$RABBITMQ4_VERSION
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi

sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap from Debian"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

began=$(date +%s)
tmp=$dest.tmp
mkdir -p "$ROOT_CACHE"
# A bootstrap that finished is kept for a retry of the steps after it.
if [ ! -f "$tmp/.bootstrapped" ]; then
  $sudo rm -rf "$tmp"
  log "debootstrapping Debian $BROKER_SUITE into $tmp (first time only, ~1-2 min)"
  # The sid script serves every suite after trixie; Debian 12's debootstrap has no forky script.
  $sudo debootstrap --variant=minbase "$BROKER_SUITE" "$tmp" "$DEBIAN_MIRROR" \
    /usr/share/debootstrap/scripts/sid >"$ROOT_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT_CACHE/debootstrap.log" >&2; exit 1; }
  $sudo touch "$tmp/.bootstrapped"
fi

# The mirror's testing snapshot can carry a Release file past its Valid-Until date; the
# packages are still signed, so only the date check is relaxed.
echo 'Acquire::Check-Valid-Until "false";' | $sudo tee "$tmp/etc/apt/apt.conf.d/99sluice-snapshot" >/dev/null
# Packages must not start services inside the root.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$tmp/usr/sbin/policy-rc.d" >/dev/null
$sudo chmod +x "$tmp/usr/sbin/policy-rc.d"

in_root() { # runs a command in the root with /proc and /dev mounted, privately
  $sudo unshare -m --propagation private sh -c \
    "mount -t proc proc '$tmp/proc' && mount --rbind /dev '$tmp/dev' && chroot '$tmp' $*"
}
in_root apt-get update -qq >/dev/null
have=$(in_root apt-cache madison rabbitmq-server erlang-base 2>/dev/null | awk -F'|' '{gsub(/ /, ""); print $1 "=" $2}' || true)
if ! grep -qFx "rabbitmq-server=$RABBITMQ4_VERSION" <<<"$have" || ! grep -qFx "erlang-base=$ERLANG4_VERSION" <<<"$have"; then
  log "the mirror no longer has rabbitmq-server=$RABBITMQ4_VERSION with erlang-base=$ERLANG4_VERSION; it has:"
  echo "$have" >&2
  log "pin versions it has in hack/testbed/versions.sh"
  exit 1
fi
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "rabbitmq-server=$RABBITMQ4_VERSION" "erlang-base=$ERLANG4_VERSION" >/dev/null
in_root apt-get clean
# epmd and the node resolve localhost through the root's own /etc/hosts.
$sudo cp /etc/hosts "$tmp/etc/hosts"
$sudo rm -f "$tmp/.bootstrapped" && $sudo touch "$tmp/.complete"
$sudo rm -rf "$dest" && $sudo mv "$tmp" "$dest"
log "RabbitMQ $RABBITMQ4_VERSION root ready in $(( $(date +%s) - began ))s ($(du -sh "$dest" | cut -f1))"
echo "$dest"
