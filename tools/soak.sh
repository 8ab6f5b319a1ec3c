#!/usr/bin/env bash
# Soak and churn: tools/soak.sh [SECONDS] (default 180; the CI stage in tools/test.sh runs 180,
# the long run in BENCHMARKS.md 1800).
#
# One ringsfu (the debug build of $CARGO_TARGET_DIR or target/, or $RINGSFU_BIN) on loopback.
# First a reference: one steady `ringsfu-load` session (1 publisher, 2 subscribers) alone for
# 20 s, its loss noted. Then, for SECONDS at once:
#   - the same steady session, measured for the whole run;
#   - signaling churn, tests/js/lib/churn.mjs: 50 joins/s over REST + WebSocket (leave, abrupt
#     close, session delete, token reuse attempts);
#   - media churn: `ringsfu-load` runs of 2 sessions (1 publisher, 1 subscriber each, real ICE,
#     DTLS, SRTP) joining, sending for 5 s and leaving, one after the other;
#   - the server's RSS sampled every 5 s.
# Then, after the reconnection window, it asserts:
#   - no leak: sessions, participants, pending connections, publishers, subscribers, WebSockets,
#     media peers, ICE legs, mirrors, TURN allocations and relay sockets back to the baseline
#     (/metrics), open fds within 2 of the baseline (/proc/PID/fd), and no leaked timer: the
#     shards' idle loop-turn rate within 2x (+3/s) of the baseline's;
#   - RSS drift <= 5% between the end of the first quarter and the end of the run;
#   - the steady session's loss within LOSS_TOLERANCE (default 0.002, i.e. 0.2 percentage
#     points) of the reference's, and no join failures in it.
# Prints the figures; exit 1 on any failed check. Needs curl, node (tests/js/node_modules) and
# python3; a few hundred MB of RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
D=${1:-180}
LOSS_TOLERANCE=${LOSS_TOLERANCE:-0.002}
target=${CARGO_TARGET_DIR:-$root/target}
BIN=${RINGSFU_BIN:-$target/debug/ringsfu}
LOAD=${RINGSFU_LOAD_BIN:-$target/debug/ringsfu-load}
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --bin ringsfu --bin ringsfu-load
for t in curl node python3; do command -v "$t" >/dev/null || { echo "soak: $t is missing" >&2; exit 1; }; done
[ -d tests/js/node_modules/ws ] || (cd tests/js && npm ci --no-audit --no-fund)

WORK=$(mktemp -d /tmp/ringsfu-soak.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); MEDIA=$(free_port); TURN=$(free_port)
while [ "$MEDIA" = "$HTTP" ] || [ "$TURN" = "$HTTP" ] || [ "$TURN" = "$MEDIA" ]; do TURN=$(free_port); MEDIA=$(free_port); done
URL=http://127.0.0.1:$HTTP
"$BIN" --port "$HTTP" --set media.port_base="$MEDIA" --set media.shards=1 --set turn.port="$TURN" \
  --set server.drain_timeout=1 >"$WORK/server.log" 2>&1 &
PID=$!
PIDS+=("$PID")
for _ in $(seq 200); do
  curl -fs "$URL/openvidu/api/config/openvidu-publicurl" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.05
done

metrics() { curl -fs -u OPENVIDUAPP:MY_SECRET "$URL/metrics"; }
# gauge NAME: the sum of every sample of NAME (all label sets).
gauge() { metrics | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'; }
fds() { ls "/proc/$PID/fd" | wc -l; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
# turn_rate: the shards' loop turns per second over 5 s (an idle shard turns about once a
# second; a leaked timer keeps it turning faster).
turn_rate() {
  local a b
  a=$(gauge ringsfu_shard_loop_turns_total); sleep 5; b=$(gauge ringsfu_shard_loop_turns_total)
  echo $(( (b - a) / 5 ))
}
GAUGES="ringsfu_sessions ringsfu_participants ringsfu_pending_connections ringsfu_publishers
ringsfu_subscribers ringsfu_websockets ringsfu_shard_media_publishers ringsfu_shard_media_subscribers
ringsfu_shard_ice_legs ringsfu_shard_mirror_producers ringsfu_turn_allocations ringsfu_turn_relay_sockets"
snapshot() { local g; for g in $GAUGES; do printf '%s=%s ' "$g" "$(gauge "$g")"; done; echo; }
loss_of() { node -e 'const j=require(process.argv[1]); const p=j.phases[0]; console.log(p.loss, p.failures ?? 0, p.connected, p.clients)' "$1"; }

sleep 2
base=$(snapshot); fds0=$(fds); rate0=$(turn_rate)
echo "soak: ${D}s against $BIN (pid $PID); baseline fds $fds0, idle turns ${rate0}/s"
echo "  $base"

steady() { # steady SECONDS JSON
  "$LOAD" --url "$URL" --server-pid "$PID" -p 1 -s 2 -k 1 --ramp 20 --duration "$1" \
    --max-load-cpu 1.0 --quiet --json "$2"
}
echo "soak: reference steady session, 20 s alone"
steady 20 "$WORK/ref.json" >"$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; exit 1; }
read -r ref_loss _ _ _ < <(loss_of "$WORK/ref.json")

start=$(date +%s)
end=$((start + D))
echo "soak: churn for ${D}s from $(date -u +%H:%M:%S)"
steady "$D" "$WORK/steady.json" >"$WORK/steady.log" 2>&1 &
steady_pid=$!; PIDS+=("$steady_pid")
(cd tests/js && exec node lib/churn.mjs --url "$URL" --rate 50 --duration "$D") >"$WORK/churn.json" 2>"$WORK/churn.err" &
churn_pid=$!; PIDS+=("$churn_pid")
(
  runs=0; failed=0
  while [ "$(date +%s)" -lt $((end - 8)) ]; do
    "$LOAD" --url "$URL" -p 1 -s 1 -k 2 --ramp 20 --duration 5 --max-load-cpu 1.0 --quiet \
      --json "$WORK/m.json" >/dev/null 2>&1 || failed=$((failed + 1))
    runs=$((runs + 1))
  done
  echo "$runs $failed" >"$WORK/media_churn"
) &
media_pid=$!; PIDS+=("$media_pid")
(
  while [ "$(date +%s)" -lt "$end" ]; do
    echo "$(( $(date +%s) - start )) $(rss_kb)" >>"$WORK/rss"
    sleep 5
  done
) &
PIDS+=("$!")

fail=0
check() { # check OK MESSAGE
  if [ "$1" = 1 ]; then echo "  ok   $2"; else echo "  FAIL $2"; fail=1; fi
}
wait "$media_pid" || true
wait "$churn_pid"; churn_rc=$?
wait "$steady_pid"; steady_rc=$?
echo "soak: churn over at $(date -u +%H:%M:%S); media churn runs (total failed): $(cat "$WORK/media_churn")"
echo "  signaling churn: $(cat "$WORK/churn.json")"
read -r loss failures connected clients < <(loss_of "$WORK/steady.json")
rss_q=$(awk -v q=$((D / 4)) '$1 >= q { print $2; exit }' "$WORK/rss")
rss_end=$(tail -1 "$WORK/rss" | awk '{ print $2 }')

# Abruptly closed participants are evicted after the reconnection window (10 s): wait for every
# gauge to come back (bounded: 60 s).
after=""
for _ in $(seq 60); do
  after=$(snapshot)
  [ "$after" = "$base" ] && break
  sleep 1
done
fds1=$(fds); rate1=$(turn_rate)
echo "  baseline $base"
echo "  after    $after"
check "$([ "$after" = "$base" ] && echo 1)" "every gauge back to the baseline"
check "$([ "$fds1" -le $((fds0 + 2)) ] && echo 1)" "open fds $fds0 -> $fds1"
check "$([ "$rate1" -le $((rate0 * 2 + 3)) ] && echo 1)" "idle loop turns ${rate0}/s -> ${rate1}/s (no leaked timer)"
drift=$(python3 -c "print(f'{($rss_end - $rss_q) / $rss_q * 100:.2f}')")
check "$(python3 -c "print(1 if $rss_end <= $rss_q * 1.05 else 0)")" "RSS ${rss_q} kB at $((D / 4)) s -> ${rss_end} kB at the end (drift ${drift}%, limit 5%)"
check "$(python3 -c "print(1 if $loss <= $ref_loss + $LOSS_TOLERANCE else 0)")" \
  "steady session loss $(python3 -c "print(f'{$loss*100:.4f}')")% under churn vs $(python3 -c "print(f'{$ref_loss*100:.4f}')")% alone (tolerance $(python3 -c "print($LOSS_TOLERANCE*100)") points)"
check "$([ "$steady_rc" = 0 ] && [ "$connected" = "$clients" ] && echo 1)" "steady session: $connected/$clients clients connected, ringsfu-load exit $steady_rc"
check "$([ "$churn_rc" = 0 ] && echo 1)" "signaling churn: no used token accepted, no request unanswered"
kill -0 "$PID" 2>/dev/null
check "$(kill -0 "$PID" 2>/dev/null && echo 1)" "server alive"
if [ "$fail" != 0 ]; then
  echo "soak: FAILED; server log tail:"; tail -20 "$WORK/server.log"
  exit 1
fi
echo "soak: passed"
