#!/usr/bin/env bash
# Checks the Dockerfile's build stage without Docker: copies what its COPY lines copy into an
# empty directory, as `docker build` would, and has cargo load the manifest there
# (`cargo fetch --locked` resolves every target path Cargo.toml declares and the lock file).
# A file the build needs but the Dockerfile does not copy fails here, not on a user's machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
# The build stage: from the first FROM to the next one. COPY lines with --from are other stages.
awk '/^FROM /{n++} n==1 && /^COPY / && !/--from/' "$root/Dockerfile" | while read -r _ args; do
  read -ra parts <<<"$args"
  dest=${parts[-1]}
  for src in "${parts[@]:0:${#parts[@]}-1}"; do
    case "$dest" in
      */) mkdir -p "$ctx/$dest"; cp -r "$root/$src" "$ctx/$dest" ;;
      *) mkdir -p "$(dirname "$ctx/$dest")"; cp -r "$root/$src" "$ctx/$dest" ;;
    esac
  done
done
(cd "$ctx" && cargo fetch --locked -q) || { echo "check-dockerfile: the Dockerfile's build stage misses files the build needs (above)" >&2; exit 1; }
echo "check-dockerfile: ok"
