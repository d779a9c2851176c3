#!/usr/bin/env bash
# make demo: installs Sluice into the local test bed, runs the controller in the background,
# applies config/samples/, waits for the topics and subscriptions to be Ready, shows their
# exchanges and queues on the broker, publishes an event that a Subscription's queue receives
# and one nobody subscribes to (kept in the unroutable queue), and repairs a deleted exchange.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tb=$root/.testbed
. "$here/testbed/versions.sh"
bin=$BIN_CACHE/current
export KUBECONFIG=$tb/kubeconfig
k() { "$bin/kubectl" "$@"; }
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing the CRDs and the Helm chart into the local control plane"
bash "$here/testbed/install.sh"

say "Starting the controller (log: .testbed/controller.log, admin: http://127.0.0.1:8080, resync 10s for the demo)"
bash "$here/testbed/stop-controller.sh"
KUBECONFIG=$tb/sluice-sa.kubeconfig SLUICE_NAMESPACE=sluice-system RUST_LOG=info \
  setsid nohup "$root/target/debug/sluice" controller --admin-addr 127.0.0.1:8080 --resync 10s \
  > "$tb/controller.log" 2>&1 < /dev/null &
echo $! > "$tb/controller.pid"
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.5; done
curl -s http://127.0.0.1:8080/readyz

say "Applying config/samples/"
k apply -f "$root/config/samples/"
k wait --for=condition=Ready eventtopic --all -n shop --timeout=90s
k wait --for=condition=Ready subscription --all -n shop --timeout=90s

say "kubectl get sluice -n shop"
k get sluice -n shop -o wide

say "The exchanges on RabbitMQ (management API, guest/guest)"
curl -s -u guest:guest 'http://127.0.0.1:15672/api/exchanges/%2f?columns=name,type,durable,arguments' \
  | python3 -c '
import json, sys
rows = sorted((e for e in json.load(sys.stdin) if e["name"].startswith("sluice.shop.")), key=lambda e: e["name"])
print("%-40s %-8s %-8s %s" % ("NAME", "TYPE", "DURABLE", "ALTERNATE-EXCHANGE"))
for e in rows:
    print("%-40s %-8s %-8s %s" % (e["name"], e["type"], e["durable"], e["arguments"].get("alternate-exchange", "")))'

say "The queues on RabbitMQ: work queue, retry ladder and dead-letter queue per Subscription"
curl -s -u guest:guest 'http://127.0.0.1:15672/api/queues/%2f?columns=name,type,arguments,policy' \
  | python3 -c '
import json, sys
rows = sorted((q for q in json.load(sys.stdin) if q["name"].startswith("sluice.shop.")), key=lambda q: q["name"])
print("%-36s %-8s %-10s %s" % ("NAME", "TYPE", "TTL", "DEAD-LETTERS TO"))
for q in rows:
    a = q["arguments"]
    ttl = "%gs" % (a["x-message-ttl"] / 1000) if "x-message-ttl" in a else ""
    dlx = a.get("x-dead-letter-routing-key", "") if "x-dead-letter-exchange" in a else ""
    print("%-36s %-8s %-10s %s" % (q["name"], q["type"], ttl, dlx))'

publish() { # routing key, message id
  curl -s -u guest:guest -H 'content-type: application/json' -X POST \
    'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.orders/publish' \
    -d '{"routing_key":"'"$1"'","payload":"{\"id\":\"o-1001\"}","payload_encoding":"string","properties":{"delivery_mode":2,"content_type":"application/json","message_id":"'"$2"'","headers":{"event-version":"v2"}}}'
  echo
}
say "Publishing order.created to sluice.shop.orders: Subscription billing (order.*) receives it"
publish order.created evt-1001
say "Publishing refund.issued: no Subscription matches it, so it is kept in the unroutable queue"
publish refund.issued evt-1002
for q in sluice.shop.billing sluice.shop.orders.unroutable; do
  for _ in $(seq 1 40); do
    n=$(curl -s -u guest:guest "http://127.0.0.1:15672/api/queues/%2f/$q?columns=messages" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("messages") or 0)')
    [ "$n" -ge 1 ] && break; sleep 0.5
  done
  echo "  $q: $n message(s)"
done
echo "  (kubectl get subscriptions -n shop shows the counts after the next resync)"

say "Drift repair: deleting exchange sluice.shop.payments behind the operator's back"
curl -s -u guest:guest -X DELETE 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments'
echo "  deleted; the next resync (at most ~11s here, 5m by default) re-creates it"
for _ in $(seq 1 60); do
  curl -sf -u guest:guest 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments' >/dev/null && break; sleep 0.5
done
curl -sf -u guest:guest 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments' >/dev/null && echo "  sluice.shop.payments is back"
k get events -n shop --field-selector reason=DriftRepaired -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers
curl -s http://127.0.0.1:8080/metrics | grep -E '^sluice_(drift_repairs_total|broker_up|resources)' || true

cat <<MSG

Sluice is running against the local test bed:
  kubectl:    export KUBECONFIG=$tb/kubeconfig; $bin/kubectl get sluice -A
  RabbitMQ:   http://127.0.0.1:15672 (guest/guest)
  metrics:    http://127.0.0.1:8080/metrics
  controller: .testbed/controller.log (pid $(cat "$tb/controller.pid"))
Stop everything with: make testbed-down
MSG
