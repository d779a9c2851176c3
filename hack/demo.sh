#!/usr/bin/env bash
# make demo: installs Sluice into the local test bed, runs the controller and the test bed's
# pod runner (which starts dispatcher pods as processes) in the background, applies
# config/samples/, waits for everything to be Ready, shows the exchanges and queues on the
# broker, starts a local receiver that verifies signatures, publishes events that arrive
# signed (one after a retry, one dead-lettered), one nobody subscribes to (kept in the
# unroutable queue), and repairs a deleted exchange.
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
  --egress-allow 127.0.0.0/8 --dispatcher-log-format plain \
  > "$tb/controller.log" 2>&1 < /dev/null &
echo $! > "$tb/controller.pid"
say "Starting the pod runner, the test bed's stand-in kubelet for dispatcher pods (log: .testbed/podrunner.log)"
KUBECONFIG=$tb/kubeconfig SLUICE_BIN=$root/target/debug/sluice \
  setsid nohup "$root/target/debug/sluice-podrunner" --state-dir "$tb/pods" \
  > "$tb/podrunner.log" 2>&1 < /dev/null &
echo $! > "$tb/podrunner.pid"
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.5; done
curl -s http://127.0.0.1:8080/readyz

say "Applying config/samples/"
k apply -f "$root/config/samples/"
k wait --for=condition=Ready eventtopic --all -n shop --timeout=90s
k wait --for=condition=Ready subscription --all -n shop --timeout=90s
k wait --for=condition=Ready webhook --all -n shop --timeout=90s
k wait --for=condition=Ready apiversionpolicy --all -n shop --timeout=90s

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

publish() { # exchange, routing key, message id: an order of customer c-42, as v2
  curl -s -u guest:guest -H 'content-type: application/json' -X POST \
    "http://127.0.0.1:15672/api/exchanges/%2f/$1/publish" \
    -d '{"routing_key":"'"$2"'","payload":"{\"id\":\"'"$3"'\",\"customer\":{\"id\":\"c-42\"}}","payload_encoding":"string","properties":{"delivery_mode":2,"content_type":"application/json","message_id":"'"$3"'","timestamp":'"$(date +%s)"',"headers":{"event-version":"v2"}}}' >/dev/null
}
queue_messages() {
  curl -s -u guest:guest "http://127.0.0.1:15672/api/queues/%2f/$1?columns=messages" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("messages") or 0)'
}

say "A local receiver on 127.0.0.1:8090 that verifies signatures with the generated secret"
secret=$(k get secret -n shop sluice-signing-billing -o jsonpath='{.data.secret}' | base64 -d)
[ -f "$tb/receiver.pid" ] && kill "$(cat "$tb/receiver.pid")" 2>/dev/null || true
setsid nohup python3 "$here/demo-receiver.py" 8090 "$secret" > "$tb/receiver.log" 2>&1 < /dev/null &
echo $! > "$tb/receiver.pid"
sleep 1
echo "  secret from Secret shop/sluice-signing-billing (status.signingSecret of Webhook billing)"

say "The event versions of the orders topic: kubectl get apiversionpolicy -n shop (the migration board)"
k get apiversionpolicy -n shop -o wide
k get apiversionpolicy -n shop orders-versions -o jsonpath='{range .status.versions[*]}  {.name}: {.state}, {.subscriptions} Subscription(s) {.pinned}{"\n"}{end}'
k get subscription -n shop -o custom-columns=SUBSCRIPTION:.metadata.name,VERSION:.status.version.name,STATE:.status.version.state

say "Publishing to sluice.shop.orders: order.created (to billing as v2 and to crm as v1, deprecated), flaky (503 once, retried after 10s), bad (400, dead-lettered)"
publish sluice.shop.orders order.created evt-1001
publish sluice.shop.orders order.cancelled flaky-1002
publish sluice.shop.orders order.updated bad-1003
for _ in $(seq 1 60); do
  grep -q 'flaky-1002 request 2' "$tb/receiver.log" && [ "$(queue_messages sluice.shop.billing.dlq)" -ge 1 ] && break
  sleep 0.5
done
sed 's/^/  /' "$tb/receiver.log"
echo "  (evt-1001 arrived twice: as v2 for billing, and rendered as v1 for crm, with its deprecation headers)"
echo "  sluice.shop.billing.dlq: $(queue_messages sluice.shop.billing.dlq) message(s) (bad-1003, x-sluice-reason non-retryable-status)"
sleep 4  # the dispatcher reports every 3s
k get webhook -n shop billing -o wide

say "Publishing refund.issued: no Subscription matches it, so it is kept in the unroutable queue"
publish sluice.shop.orders refund.issued evt-1004
for _ in $(seq 1 40); do [ "$(queue_messages sluice.shop.orders.unroutable)" -ge 1 ] && break; sleep 0.5; done
echo "  sluice.shop.orders.unroutable: $(queue_messages sluice.shop.orders.unroutable) message(s)"

say "Drift repair: deleting exchange sluice.shop.payments behind the operator's back"
curl -s -u guest:guest -X DELETE 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments'
echo "  deleted; the next resync (at most ~11s here, 5m by default) re-creates it"
for _ in $(seq 1 60); do
  curl -sf -u guest:guest 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments' >/dev/null && break; sleep 0.5
done
curl -sf -u guest:guest 'http://127.0.0.1:15672/api/exchanges/%2f/sluice.shop.payments' >/dev/null && echo "  sluice.shop.payments is back"
k get events -n shop --field-selector reason=DriftRepaired -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers
curl -s http://127.0.0.1:8080/metrics | grep -E '^sluice_(drift_repairs_total|broker_up|resources)' || true

say "What Prometheus (http://127.0.0.1:9090, scraping the controller and the dispatcher pods every second) counted"
promql() { # query, label to print
  curl -s http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$1" | python3 -c '
import json, sys
label = sys.argv[1]
for r in json.load(sys.stdin)["data"]["result"]:
    print("  %-28s %s" % (r["metric"].get(label, ""), r["value"][1]))' "$2"
}
sleep 2
echo "sum by (outcome) (sluice_delivery_attempts_total{namespace=\"shop\"}):"
promql 'sum by (outcome) (sluice_delivery_attempts_total{namespace="shop"})' outcome
echo "sum by (queue) (sluice_queue_messages{namespace=\"shop\",webhook=\"billing\"}), the dispatcher's samples:"
promql 'sum by (queue) (sluice_queue_messages{namespace="shop",webhook="billing"})' queue

cat <<MSG

Sluice is running against the local test bed:
  kubectl:    export KUBECONFIG=$tb/kubeconfig; $bin/kubectl get sluice -A
  RabbitMQ:   http://127.0.0.1:15672 (guest/guest)
  Prometheus: http://127.0.0.1:9090 (e.g. sluice_delivery_attempts_total, sluice_queue_messages)
  metrics:    http://127.0.0.1:8080/metrics (controller); dispatcher pods' admin ports in
              .testbed/pods/targets.json (the file Prometheus discovers them from)
  controller: .testbed/controller.log (pid $(cat "$tb/controller.pid"))
  dispatcher: .testbed/pods/shop_sluice-dispatcher-billing-*/container.log
  receiver:   .testbed/receiver.log
Stop everything with: make testbed-down
MSG
