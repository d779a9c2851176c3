#!/usr/bin/env bash
# Starts/stops Debian's Prometheus as a plain local process on 127.0.0.1:9090, scraping every
# second what the test bed runs: the dispatcher pods the pod runner started (file_sd list
# .testbed/pods/targets.json) and the controllers the e2e harness and `make run` start
# (.testbed/controllers/*.json). State lives in .testbed/prometheus.
# Usage: prometheus.sh up|down|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tb=${TESTBED_DIR:-$root/.testbed}
dir=$tb/prometheus
addr=127.0.0.1:9090
log() { echo "prometheus: $*" >&2; }

healthy() { curl -sf "http://$addr/-/ready" >/dev/null 2>&1; }

up() {
  command -v prometheus >/dev/null 2>&1 || bash "$here/deps.sh"
  if healthy; then log "already up"; return; fi
  # Started but not ready yet (replaying its WAL): wait for it rather than start another.
  if [ -f "$dir/prometheus.pid" ] && kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null; then
    wait_ready; return
  fi
  mkdir -p "$dir/data" "$tb/pods" "$tb/controllers"
  [ -f "$tb/pods/targets.json" ] || echo '[]' > "$tb/pods/targets.json"
  # The controller `make run` and `make demo` start; the e2e harness adds its own.
  echo '[{"targets": ["127.0.0.1:8080"], "labels": {"instance": "local"}}]' > "$tb/controllers/local.json"
  # honor_labels: the dispatchers' own namespace label is the pod's namespace anyway.
  cat > "$dir/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice-dispatcher
    honor_labels: true
    file_sd_configs:
      - files: ['$tb/pods/targets.json']
        refresh_interval: 1s
  - job_name: sluice-controller
    honor_labels: true
    file_sd_configs:
      - files: ['$tb/controllers/*.json']
        refresh_interval: 1s
CONF
  promtool check config "$dir/prometheus.yml" >/dev/null
  log "starting"
  setsid nohup prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=1d --web.listen-address="$addr" \
    > "$dir/prometheus.log" 2>&1 < /dev/null &
  echo $! > "$dir/prometheus.pid"
  wait_ready
}

wait_ready() {
  for _ in $(seq 1 60); do
    healthy && { log "up (http://$addr)"; return; }
    sleep 0.5
  done
  log "did not become ready; see $dir/prometheus.log"; tail -20 "$dir/prometheus.log" >&2; exit 1
}

down() {
  pkill -f "prometheus --config.file=$dir/" 2>/dev/null || true
  # Gone for good (its TSDB lock released) before a following `up`.
  for _ in $(seq 1 100); do
    pgrep -f "prometheus --config.file=$dir/" >/dev/null || break
    sleep 0.1
  done
  rm -f "$dir/prometheus.pid"
  log "down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) healthy && echo up || { echo down; exit 1; } ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
