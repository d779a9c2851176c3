#!/usr/bin/env bash
# Starts/stops RabbitMQ as a plain local process (no systemd): AMQP on 127.0.0.1:5672,
# management API on 127.0.0.1:15672, guest/guest from loopback.
#   SLUICE_BROKER=4 (default): RabbitMQ 4.x from the Debian testing root broker-root.sh builds,
#     run with chroot in a private mount namespace, so nothing stays mounted after it exits.
#   SLUICE_BROKER=3.10: Debian 12's rabbitmq-server 3.10.8, installed by deps.sh.
# State lives in .testbed/rabbitmq-$SLUICE_BROKER (one per broker: their data formats differ).
# Only one broker runs at a time; `up` stops the other one first.
# Usage: rabbitmq.sh up|down|restart|crash|status|version
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/versions.sh"
tb=${TESTBED_DIR:-$root/.testbed}
dir=$tb/rabbitmq-$SLUICE_BROKER
log() { echo "rabbitmq: $*" >&2; }
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

# The broker's Erlang VM, whichever broker it is: `-s rabbit boot` starts the rabbit app.
node_pids() { pgrep -f 'beam\.smp.* -s rabbit boot' || true; }
overview() { curl -sf -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null; }
healthy() { overview >/dev/null; }
running_version() { overview | python3 -c 'import json,sys; print(json.load(sys.stdin)["rabbitmq_version"])' 2>/dev/null; }
want_major() { [ "$SLUICE_BROKER" = 3.10 ] && echo 3.10 || echo 4; }

config() {
  mkdir -p "$dir/log" "$dir/mnesia"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
loopback_users = none
log.file.level = warning
CONF
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  cat > "$dir/env.sh" <<ENV
export RABBITMQ_NODENAME=rabbit@localhost
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
export RABBITMQ_PID_FILE=$dir/rabbit.pid
export ERL_EPMD_ADDRESS=127.0.0.1
export HOME=$dir
ENV
}

start() {
  case "$SLUICE_BROKER" in
    3.10)
      [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || bash "$here/deps.sh"
      setsid nohup bash -c ". '$dir/env.sh' && exec /usr/lib/rabbitmq/bin/rabbitmq-server" \
        > "$dir/log/stdout.log" 2>&1 < /dev/null &
      ;;
    4)
      local r; r=$(bash "$here/broker-root.sh")
      # The state directory appears at the same path inside the root, so logs and data are
      # where the 3.10 broker keeps them.
      setsid nohup $sudo unshare -m --propagation private sh -c "
        mount -t proc proc '$r/proc' && mount --rbind /dev '$r/dev' &&
        mkdir -p '$r$dir' && mount --bind '$dir' '$r$dir' &&
        exec chroot '$r' sh -c '. $dir/env.sh && exec /usr/lib/rabbitmq/bin/rabbitmq-server'" \
        > "$dir/log/stdout.log" 2>&1 < /dev/null &
      ;;
    *) log "SLUICE_BROKER must be 4 or 3.10, not $SLUICE_BROKER"; exit 2 ;;
  esac
}

up() {
  if healthy; then
    case "$(running_version)" in
      "$(want_major)".*) log "already up: RabbitMQ $(running_version)"; return ;;
      *) log "RabbitMQ $(running_version) is running, SLUICE_BROKER=$SLUICE_BROKER wants $(want_major).x: switching"
         down ;;
    esac
  fi
  [ -z "$(node_pids)" ] || down # a node that never became healthy
  config
  log "starting RabbitMQ (SLUICE_BROKER=$SLUICE_BROKER)"
  start
  for _ in $(seq 1 240); do
    if healthy; then
      log "up: RabbitMQ $(running_version) (amqp 127.0.0.1:5672, management http://127.0.0.1:15672, guest/guest on loopback)"
      return
    fi
    sleep 0.5
  done
  log "did not become healthy in 120s; see $dir/log"; tail -20 "$dir/log/stdout.log" >&2; exit 1
}

stop_with() { # signal
  local pids; pids=$(node_pids)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  $sudo kill "-$1" $pids 2>/dev/null || true
  for _ in $(seq 1 300); do [ -z "$(node_pids)" ] && return 0; sleep 0.1; done
  return 1
}

down() {
  # SIGTERM is RabbitMQ's graceful shutdown; a node still there after 30 s is killed.
  stop_with TERM || stop_with KILL || true
  # epmd outlives the node; the next broker (perhaps the other version) starts its own.
  $sudo pkill -f 'epmd -daemon' 2>/dev/null || true
  log "down"
}

crash() {
  [ -n "$(node_pids)" ] || { log "not running"; exit 1; }
  stop_with KILL
  log "killed (SIGKILL)"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  restart) down; up ;;
  crash) crash ;;
  status) healthy && echo "up: RabbitMQ $(running_version)" || { echo down; exit 1; } ;;
  version) running_version ;;
  *) echo "usage: $0 up|down|restart|crash|status|version" >&2; exit 2 ;;
esac
