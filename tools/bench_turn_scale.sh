#!/usr/bin/env bash
# How many TURN allocations ringsfu holds, and what each costs, when they are what an SFU's TURN
# carries: browsers relaying to the SFU's own media port.
#
# Starts ringsfu (media on, SHARDS shards, TURN with RELAY_IPS loopback relay addresses and the
# whole unprivileged port range each) and opens COUNT allocations with tools/turn_alloc_flood.py,
# split over the shards' own TURN ports (`[turn] shard_ports`, port_base + SHARDS + i: the server
# joinRoom offers first), each with a permission for that shard's media port. Reports the
# allocations granted, the relay sockets and descriptors the server holds, and its RSS and the
# kernel's slab growth per allocation, read while they are all alive.
#
# Usage: tools/bench_turn_scale.sh
# Env: COUNT (100000) SHARDS (2) RELAY_IPS (3) DELIVER_IN_PROCESS (true)
#      RINGSFU_BIN (target/release/ringsfu, built when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-100000}
SHARDS=${SHARDS:-2}
RELAY_IPS=${RELAY_IPS:-3}
DELIVER=${DELIVER_IN_PROCESS:-true}
BIN=${RINGSFU_BIN:-target/release/ringsfu}
. tools/bench_lib.sh
bench_setup bench_turn_scale python3 curl

HTTP=27443 TURN=27478 TLS=27349 MEDIA=27000
ips=$(seq 1 "$RELAY_IPS" | sed 's/.*/"127.0.7.&"/' | paste -sd, -)
cat >"$WORK/ringsfu.toml" <<EOF
[server]
port = $HTTP
secret = "bench"
[tls]
self_signed = true
[media]
shards = $SHARDS
port_base = $MEDIA
pin_threads = false
public_ips = ["127.0.0.1"]
[turn]
port = $TURN
tls_port = $TLS
users = ["alice:wonderland"]
relay_ips = [$ips]
relay_port_min = 1024
relay_port_max = 65535
max_allocations = 1000000
max_allocations_per_user = 1000000
deliver_in_process = $DELIVER
EOF
"$BIN" --config "$WORK/ringsfu.toml" --log-level warn >"$WORK/ringsfu.log" 2>&1 &
PID=$!
PIDS+=("$PID")
for _ in $(seq 1 100); do
  curl -sf -u OPENVIDUAPP:bench "http://127.0.0.1:$HTTP/metrics" >/dev/null 2>&1 && break
  sleep 0.1
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
fds() { ls "/proc/$PID/fd" | wc -l; }
metric() { curl -s -u OPENVIDUAPP:bench "http://127.0.0.1:$HTTP/metrics" | awk -v n="$1" 'index($0, n "{") == 1 { s += $NF } END { print s + 0 }'; }

rss0=$(rss_kb) slab0=$(slab_kb) fd0=$(fds)
per=$(( COUNT / SHARDS ))
start=$(date +%s.%N)
for i in $(seq 0 $((SHARDS - 1))); do
  port=$((MEDIA + SHARDS + i))
  python3 tools/turn_alloc_flood.py 127.0.0.1 "$port" alice wonderland ringsfu "$per" \
    --batch 1000 --hold 120 --peer "127.0.0.1:$((MEDIA + i))" >"$WORK/flood-$i.log" 2>&1 &
  PIDS+=("$!")
done
for i in $(seq 0 $((SHARDS - 1))); do
  for _ in $(seq 1 1200); do # at most 10 minutes
    grep -q '^allocations=' "$WORK/flood-$i.log" 2>/dev/null && break
    sleep 0.5
  done
done
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
sleep 2 # counters are published once a second
rss1=$(rss_kb) slab1=$(slab_kb) fd1=$(fds)
granted=0 failed=0
for i in $(seq 0 $((SHARDS - 1))); do
  line=$(grep '^allocations=' "$WORK/flood-$i.log" || echo "allocations=0 failed=? first_error=no result")
  echo "shard $i TURN port $((MEDIA + SHARDS + i)): $line"
  granted=$(( granted + $(echo "$line" | sed 's/allocations=\([0-9]*\).*/\1/') ))
done
allocs=$(metric ringsfu_turn_allocations)
sockets=$(metric ringsfu_turn_relay_sockets)
taken=$(metric ringsfu_turn_relay_open_failed_total)
echo
echo "| deliver_in_process | allocations granted | in /metrics | relay sockets | relayed ports found taken | server descriptors (before -> after) | RSS per allocation | kernel slab per allocation | time |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '| %s | %d | %d | %d | %d | %d -> %d | %s KiB | %s KiB | %s s |\n' "$DELIVER" "$granted" "$allocs" "$sockets" "$taken" "$fd0" "$fd1" \
  "$(awk -v a="$rss0" -v b="$rss1" -v n="$granted" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')" \
  "$(awk -v a="$slab0" -v b="$slab1" -v n="$granted" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')" \
  "$took"
