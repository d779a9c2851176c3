#!/usr/bin/env bash
# Checks, before anything is built, that the machine has the toolchains the build needs, and
# names what to install when it does not. Debian packages (RabbitMQ, Prometheus, debootstrap)
# are installed by the test bed's scripts themselves.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fail=0
need() { echo "check-tools: $*" >&2; fail=1; }
# version_ge HAVE WANT: whether dotted version HAVE >= WANT
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

rust_want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml")
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  need "Rust >= $rust_want is missing: install it with rustup (https://rustup.rs)"
else
  have=$(rustc --version | awk '{print $2}')
  version_ge "$have" "$rust_want" || need "Rust $have is too old: edition 2024 and Cargo.toml need >= $rust_want (rustup update)"
  for c in fmt clippy; do
    cargo "$c" --version >/dev/null 2>&1 || need "cargo $c is missing: rustup component add $([ $c = fmt ] && echo rustfmt || echo clippy)"
  done
fi

# The newest `go` line of the Go modules the test bed and the bench build.
go_want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$root"/tools/*/go.mod | sort -V | tail -1)
if ! command -v go >/dev/null; then
  need "Go >= $go_want is missing: install it from https://go.dev/dl (the test bed builds Kubernetes with it)"
else
  have=$(go env GOVERSION | sed 's/^go//')
  # The test bed builds with GOTOOLCHAIN=local: the installed Go must be new enough itself.
  version_ge "$have" "$go_want" || need "Go $have is too old: tools/*/go.mod need >= $go_want (GOTOOLCHAIN=local, no download)"
fi

command -v python3 >/dev/null || need "python3 is missing: apt-get install python3"
if [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
  need "root or passwordless sudo is needed (apt-get, and the broker's chroot)"
fi
[ "$fail" = 0 ] || exit 1
echo "check-tools: ok (Rust $(rustc --version | awk '{print $2}'), Go $(go env GOVERSION | sed 's/^go//'))"
