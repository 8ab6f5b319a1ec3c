#!/usr/bin/env bash
# One session spanning three nodes, measured with ringsfu-load (BENCHMARKS.md, "A session over
# three nodes"). Usage: tools/bench_cluster.sh [SUBSCRIBERS] [SECONDS] [IO_BACKEND]
#
# A redis-server and three ringsfu nodes (release build, one media shard each) on 127.0.0.1,
# 127.0.0.2 and 127.0.0.3; `[cluster] spill_after` = SUBSCRIBERS/3, so the owner hosts a third
# of the subscriber legs and the other two nodes a third each, fed by one relay leg each.
# ringsfu-load (1 publisher -> SUBSCRIBERS, one session, through node A's REST API; clients
# connect where their tokens say) measures loss and latency; each node's CPU time (utime + stime
# from /proc) and forwarded packets (`rtp_out` on /metrics) are read around the run. Then the
# same topology on one node alone (no cluster) in the same run: CPU per forwarded packet of the
# cluster (all nodes) against the single node is the cost of spanning.
#
# SESSIONS=k runs k such sessions (spill_after stays SUBSCRIBERS/3: each session spans the
# three nodes); VIDEO_BITRATE sets each publisher's (default 1000000). Per node the report gives
# the relay's packets out and in and the GSO sends with the datagrams they carried (relay legs
# leave as trains: `TxQueue::gather_trains`).
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-60}
SECS=${2:-20}
BACKEND=${3:-auto}
SESSIONS=${SESSIONS:-1}
VIDEO_BITRATE=${VIDEO_BITRATE:-1000000}
BIN=${BIN:-target/release/ringsfu}
LOAD=${LOAD:-target/release/ringsfu-load}
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release --bins
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/bench-cluster.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
sysctl -qw net.core.rmem_max=16777216 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rtp_out() {
  curl -s -u OPENVIDUAPP:MY_SECRET "$1/metrics" \
    | awk '/^ringsfu_shard_rtp_out_total/ {s += $2} END {print s + 0}'
}
counters() { # URL -> "relay out/in, GSO sends (datagrams)" summed over shards
  curl -s -u OPENVIDUAPP:MY_SECRET "$1/metrics" | awk '
    /^ringsfu_shard_relay_out_total/ {o += $2} /^ringsfu_shard_relay_in_total/ {i += $2}
    /^ringsfu_shard_tx_gso_sends_total/ {g += $2} /^ringsfu_shard_tx_gso_datagrams_total/ {d += $2}
    END {printf "relay out %d in %d, GSO sends %d (%d datagrams)", o, i, g, d}'
}
wait_up() {
  for _ in $(seq 100); do curl -sf "$1/openvidu/api/config/openvidu-publicurl" >/dev/null && return 0; sleep 0.1; done
  echo "node at $1 did not start" >&2; exit 1
}

start_node() { # NAME HOST EXTRA_ENV... -> sets URL_<NAME>, PID_<NAME>
  local name=$1 host=$2 port media turn
  shift 2
  port=$(free_port); media=$(free_port); turn=$(free_port)
  env "$@" "$BIN" --port "$port" --set "server.address=$host" --set "media.bind_address=$host" \
    --set "media.port_base=$media" --set media.shards=1 --set "media.io_backend=$BACKEND" \
    --set "turn.port=$turn" --set server.log_level=warn >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  printf -v "URL_$name" '%s' "http://$host:$port"
  wait_up "http://$host:$port"
}

run_load() { # URL JSON
  "$LOAD" --url "$1" --quiet -p 1 -s "$SUBS" -k "$SESSIONS" --duration "$SECS" --video-bitrate "$VIDEO_BITRATE" \
    --json "$2" >"$2.txt" 2>"$2.log" || true
}

report() { # LABEL JSON
  python3 - "$1" "$2" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
ph = d["phases"][0] if "phases" in d else d
lat = ph.get("latency_ms", {})
print(f"{label}: connected {ph.get('connected')}/{ph.get('clients')}, loss {ph.get('loss')}, "
      f"latency p50/p99 ms {lat.get('p50')}/{lat.get('p99')}, egress pps {ph.get('server_egress_pps')}")
EOF
}

# --- the cluster
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5
spill=$(( SUBS / 3 ))
for n in A:127.0.0.1 B:127.0.0.2 C:127.0.0.3; do
  name=${n%%:*}; host=${n#*:}
  start_node "$name" "$host" RINGSFU_CLUSTER_REDIS_URL="redis://127.0.0.1:$redis_port" \
    RINGSFU_CLUSTER_NODE_ID="$name" RINGSFU_CLUSTER_INTERNAL_ADDRESS="$host:$(free_port)" \
    RINGSFU_CLUSTER_INTERNAL_SECRET=bench-cluster-secret-0123456789 \
    RINGSFU_CLUSTER_SPILL_AFTER="$spill"
done
sleep 2.5 # every node sees the others
declare -A c0 p0
for n in A B C; do pid_var=PID_$n; url_var=URL_$n; c0[$n]=$(cpu_ticks "${!pid_var}"); p0[$n]=$(rtp_out "${!url_var}"); done
run_load "$URL_A" "$WORK/cluster.json"
hz=$(getconf CLK_TCK)
total_cpu=0; total_pkts=0
echo "== $SESSIONS session(s), 1 -> $SUBS, over three nodes (spill_after $spill, backend $BACKEND)"
for n in A B C; do
  pid_var=PID_$n; url_var=URL_$n
  c=$(( $(cpu_ticks "${!pid_var}") - c0[$n] )); p=$(( $(rtp_out "${!url_var}") - p0[$n] ))
  legs=$(curl -s -u OPENVIDUAPP:MY_SECRET "${!url_var}/metrics" | awk '/^ringsfu_cluster_(remote|hosted)_legs/ {printf "%s=%s ", $1, $2}')
  echo "node $n: cpu $(python3 -c "print(round($c/$hz, 2))") s, rtp out $p, us/packet $(python3 -c "print(round($c/$hz*1e6/max($p,1), 2))"); $legs; $(counters "${!url_var}")"
  total_cpu=$(( total_cpu + c )); total_pkts=$(( total_pkts + p ))
done
report cluster "$WORK/cluster.json"
cluster_us=$(python3 -c "print($total_cpu/$hz*1e6/max($total_pkts,1))")
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# --- one node alone, same topology
start_node S 127.0.0.1
c=$(cpu_ticks "$PID_S"); p=$(rtp_out "$URL_S")
run_load "$URL_S" "$WORK/single.json"
c=$(( $(cpu_ticks "$PID_S") - c )); p=$(( $(rtp_out "$URL_S") - p ))
single_us=$(python3 -c "print($c/$hz*1e6/max($p,1))")
echo "== the same on one node: cpu $(python3 -c "print(round($c/$hz, 2))") s, rtp out $p, us/packet $(python3 -c "print(round($single_us, 2))")"
report single "$WORK/single.json"
echo "cluster/single CPU per forwarded packet (all nodes): $(python3 -c "print(round($cluster_us/$single_us, 2))")"
