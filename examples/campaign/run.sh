#!/usr/bin/env bash
# The campaign example on one machine: an SMTP sink, a coordinator with a
# rate limiter and a circuit breaker for the provider, two campaign worker
# nodes, and the campaign driver showing live progress.
#
#   examples/campaign/run.sh BUILD_DIR [RECIPIENTS] [BATCH]
#
# BUILD_DIR holds nodes/drover-node and examples/campaign/* (scripts/test
# builds them). The sink plays a provider outage of 3 s after a fifth of
# the mail: the breaker opens, the batches wait with their attempts, probes
# run after the cooldown, and the campaign finishes. Every process started
# here is stopped by its PID when the script ends.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [RECIPIENTS] [BATCH]}
recipients=${2:-10000}
batch=${3:-100}
node=$build/nodes/drover-node
dir=$build/examples/campaign
work=$(mktemp -d /tmp/drover-campaign-XXXXXX)
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then # what went wrong is in the logs
    for f in "$work"/*.log; do
      echo "--- $f" >&2
      tail -20 "$f" >&2
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_line() { # file pattern
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: '$2' never appeared in $1" >&2
  tail -20 "$1" >&2
  return 1
}

smtp_port=$(free_port)
admin_port=$(free_port)
cluster_port=$(free_port)
secret=campaign-example-secret-0123456789
# A node refuses to run as root (its jobs would): it switches to this user.
run_as=()
if [ "$(id -u)" = 0 ]; then run_as=(--run-as "${DROVER_RUN_AS:-drover}"); fi

"$dir/smtp_sink" --port "$smtp_port" --count-file "$work/sent" \
  --outage-after $((recipients / 5)) --outage-ms 3000 >"$work/sink.log" 2>&1 &
pids+=($!)
wait_line "$work/sink.log" "listening on"

# 500 messages a second at most across both workers (each message takes
# a token mid-job; each batch's dispatch takes one more), and a breaker
# that opens after 3 failed attempts in a row with the provider down,
# probing after 2 s.
"$node" --node-id coord --roles coordinator --store memory \
  --admin-port "$admin_port" --cluster-port "$cluster_port" \
  --join-secret "$secret" --remote-job-types campaign.send \
  --rate-limit mail:rate=500,burst=50 \
  --circuit-breaker smtp:failures=3,cooldown=2,probes=1,codes=smtp_unavailable \
  "${run_as[@]}" >"$work/coord.log" 2>&1 &
pids+=($!)
wait_line "$work/coord.log" "ready"

for w in w1 w2; do
  "$dir/campaign_worker" --node-id "$w" --roles worker \
    --coordinator "127.0.0.1:$cluster_port" --join-secret "$secret" \
    --slots cpu=4 "${run_as[@]}" >"$work/$w.log" 2>&1 &
  pids+=($!)
  wait_line "$work/$w.log" "joined the coordinator"
done

status=0
"$dir/campaign" --node "127.0.0.1:$admin_port" --smtp "127.0.0.1:$smtp_port" \
  --recipients "$recipients" --batch "$batch" --bounce-every 50 \
  --timeout-s 600 || status=$?
accepted=$(cat "$work/sent" 2>/dev/null || echo 0)
echo "the sink accepted $accepted messages"
# Mail is at-least-once: the sink has every message the campaign counts as
# sent (a message sent after a batch's last checkpoint may come twice).
expected=$((recipients - recipients / 50))
if [ "$status" = 0 ] && [ "$accepted" -lt "$expected" ]; then
  echo "sink check: FAILED ($accepted accepted, $expected sent)"
  status=1
fi
grep -h "flow control" "$work/coord.log" | sed 's/^/coordinator: /' || true
exit $status
