#!/usr/bin/env bash
# Starts/stops Debian's RabbitMQ as a plain local process (no systemd): AMQP on 127.0.0.1:5672,
# management API on 127.0.0.1:15672, guest/guest. State lives in .testbed/rabbitmq.
# Usage: rabbitmq.sh up|down|restart|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${TESTBED_DIR:-$root/.testbed}/rabbitmq
log() { echo "rabbitmq: $*" >&2; }

export RABBITMQ_NODENAME=rabbit@localhost
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
export RABBITMQ_PID_FILE=$dir/rabbit.pid
export ERL_EPMD_ADDRESS=127.0.0.1
export HOME=$dir

install_if_missing() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || bash "$here/deps.sh"
}

healthy() { curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; }

up() {
  install_if_missing
  if healthy; then log "already up"; return; fi
  mkdir -p "$dir/log" "$dir/mnesia"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
loopback_users = none
log.file.level = warning
CONF
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  log "starting"
  nohup /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/log/stdout.log" 2>&1 &
  for _ in $(seq 1 120); do
    healthy && { log "up (amqp 127.0.0.1:5672, management http://127.0.0.1:15672, guest/guest)"; return; }
    sleep 0.5
  done
  log "did not become healthy; see $dir/log"; tail -20 "$dir/log/stdout.log" >&2; exit 1
}

down() {
  if [ -f "$dir/rabbit.pid" ] || healthy; then
    /usr/lib/rabbitmq/bin/rabbitmqctl -q stop "$dir/rabbit.pid" >/dev/null 2>&1 || true
  fi
  pkill -f "beam.*-sname rabbit@localhost" 2>/dev/null || pkill -f "rabbit@localhost" 2>/dev/null || true
  log "down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  restart) down; up ;;
  status) healthy && echo up || { echo down; exit 1; } ;;
  *) echo "usage: $0 up|down|restart|status" >&2; exit 2 ;;
esac
