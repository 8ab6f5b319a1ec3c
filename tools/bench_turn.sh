#!/usr/bin/env bash
# TURN relaying cost, ringsfu vs coturn, in one run on this machine.
#
# Starts coturn's `turnserver` and ringsfu (io_uring and epoll shells) side by side on loopback
# with equivalent settings (2 relay threads / 2 shards, the same user, realm, loopback peers, two
# relay addresses each with the whole unprivileged port range), one `turnutils_peer` echo peer,
# then, alternating between the servers for ROUNDS rounds, runs the same `turnutils_uclient` load
# against each and reads the server's CPU time (utime + stime from /proc/<pid>/stat) around it.
# Reports CPU time per relayed packet (client->peer and peer->client legs both count) per server
# and the ratios. Then it opens as many allocations as each server grants, up to ALLOCS
# (tools/turn_alloc_flood.py; the media engine is off, so every allocation holds a relay socket
# in both servers), and reports the count reached and the memory per allocation (process RSS;
# kernel slab). tools/bench_turn_scale.sh measures allocations to ringsfu's own media port.
#
# Usage: tools/bench_turn.sh [ROUNDS]     (needs root for the open-file limit; Debian's coturn)
# Env: CLIENTS (20) MESSAGES (2000) LENGTH (120) INTERVAL ms (2) ALLOCS (100000; 0 = skip)
#      RINGSFU_BIN (target/release/ringsfu, built when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
CLIENTS=${CLIENTS:-20}
MESSAGES=${MESSAGES:-2000}
LENGTH=${LENGTH:-120}
INTERVAL=${INTERVAL:-2}
ALLOCS=${ALLOCS:-100000}
BIN=${RINGSFU_BIN:-target/release/ringsfu}

. tools/bench_lib.sh
bench_setup bench_turn turnserver turnutils_uclient turnutils_peer python3
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

CLK_TCK=$(getconf CLK_TCK)
P_COTURN=23478 P_URING=24478 P_EPOLL=25478 P_PEER=23480

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

wait_udp() { # port: wait (bounded) until a STUN Binding is answered
  for _ in $(seq 1 100); do
    timeout 2 turnutils_stunclient -p "$1" 127.0.0.1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench_turn: nothing answers on UDP $1" >&2; exit 1
}

# --- servers ---
turnserver -n --listening-ip=127.0.0.1 --listening-port=$P_COTURN \
  --relay-ip=127.0.3.1 --relay-ip=127.0.3.2 --min-port=1024 --max-port=65535 \
  --relay-threads=2 --allow-loopback-peers --no-cli --no-tls --no-dtls --no-tcp-relay \
  --lt-cred-mech --user=alice:wonderland --realm=ringsfu --user-quota=0 --total-quota=0 \
  --userdb="$WORK/turndb" --log-file="$WORK/coturn.log" --no-stdout-log \
  --pidfile="$WORK/coturn.pid" >/dev/null 2>&1 &
PID_COTURN=$!
PIDS+=("$PID_COTURN")

start_ringsfu() { # port backend httpport relay-prefix
  cat >"$WORK/ringsfu-$2.toml" <<EOF
[server]
port = $3
secret = "bench"
[media]
# The media engine stays off: this measures the TURN shards (same count and backend).
enabled = false
shards = 2
pin_threads = false
io_backend = "$2"
[turn]
port = $1
users = ["alice:wonderland"]
allow_loopback_peers = true
relay_ips = ["$4.1", "$4.2"]
relay_port_min = 1024
relay_port_max = 65535
max_allocations = 1000000
max_allocations_per_user = 1000000
EOF
  "$BIN" --config "$WORK/ringsfu-$2.toml" --log-level warn >"$WORK/ringsfu-$2.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}
start_ringsfu $P_URING uring 24443 127.0.1; PID_URING=$STARTED
start_ringsfu $P_EPOLL epoll 25443 127.0.4; PID_EPOLL=$STARTED
turnutils_peer -L 127.0.0.1 -p $P_PEER >/dev/null 2>&1 &
PIDS+=("$!")
wait_udp $P_COTURN; wait_udp $P_URING; wait_udp $P_EPOLL

# --- relaying cost, alternating ---
declare -A CPU PKTS LOSS
for s in coturn uring epoll; do CPU[$s]=0; PKTS[$s]=0; LOSS[$s]=0; done
load() { # name pid port
  local before after out sent recv lost
  before=$(cpu_ticks "$2")
  out=$(timeout 600 turnutils_uclient -c -m "$CLIENTS" -n "$MESSAGES" -l "$LENGTH" -z "$INTERVAL" \
        -u alice -w wonderland -e 127.0.0.1 -r $P_PEER -p "$3" 127.0.0.1 2>&1) || true
  after=$(cpu_ticks "$2")
  sent=$(echo "$out" | grep -o 'tot_send_msgs=[0-9]*' | tail -1 | cut -d= -f2)
  recv=$(echo "$out" | grep -o 'tot_recv_msgs=[0-9]*' | tail -1 | cut -d= -f2)
  lost=$(echo "$out" | sed -n 's/.*Total lost packets \([0-9]*\).*/\1/p' | tail -1)
  [ -n "$sent" ] && [ -n "$recv" ] || { echo "bench_turn: no totals from uclient against $1:"; echo "$out" | tail -5; exit 1; }
  CPU[$1]=$(( ${CPU[$1]} + after - before ))
  PKTS[$1]=$(( ${PKTS[$1]} + sent + recv ))
  LOSS[$1]=$(( ${LOSS[$1]} + ${lost:-0} ))
  printf '  round %d %-7s cpu %5d ticks  relayed %8d  lost %d\n' "$r" "$1" $((after - before)) $((sent + recv)) "${lost:-0}"
}
echo "load: $CLIENTS clients x $MESSAGES messages of $LENGTH bytes every $INTERVAL ms, ChannelData over UDP, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  load coturn "$PID_COTURN" $P_COTURN
  load uring "$PID_URING" $P_URING
  load epoll "$PID_EPOLL" $P_EPOLL
done
per_pkt() { awk -v c="${CPU[$1]}" -v p="${PKTS[$1]}" -v t="$CLK_TCK" 'BEGIN { if (p > 0) printf "%.2f", c / t / p * 1e6; else print "nan" }'; }
ratio() { awk -v a="$(per_pkt "$1")" -v b="$(per_pkt "$2")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
echo
echo "| server | CPU time | relayed packets | lost | CPU per relayed packet |"
echo "|---|---|---|---|---|"
for s in coturn uring epoll; do
  name=$s; [ "$s" = uring ] && name="ringsfu (io_uring)"; [ "$s" = epoll ] && name="ringsfu (epoll)"
  printf '| %s | %s s | %d | %d | %s µs |\n' "$name" "$(awk -v c="${CPU[$s]}" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", c / t }')" "${PKTS[$s]}" "${LOSS[$s]}" "$(per_pkt "$s")"
done
echo
echo "ratio ringsfu (io_uring) / coturn: $(ratio uring coturn)   (goal: <= 0.50)"
echo "ratio ringsfu (epoll)    / coturn: $(ratio epoll coturn)"

# --- allocations reached ---
[ "$ALLOCS" -gt 0 ] || exit 0
flood() { # name pid port
  local rss0 slab0 rss1 slab1 line="" n fpid
  rss0=$(rss_kb "$2"); slab0=$(slab_kb)
  python3 tools/turn_alloc_flood.py 127.0.0.1 "$3" alice wonderland ringsfu "$ALLOCS" \
    --batch 1000 --hold 8 >"$WORK/flood-$3.log" 2>&1 &
  fpid=$!
  for _ in $(seq 1 1800); do # at most 15 minutes
    line=$(grep '^allocations=' "$WORK/flood-$3.log" 2>/dev/null || true)
    [ -n "$line" ] && break
    kill -0 "$fpid" 2>/dev/null || break
    sleep 0.5
  done
  sleep 2 # the server has bound every relay socket by now
  rss1=$(rss_kb "$2"); slab1=$(slab_kb)
  wait "$fpid" 2>/dev/null || true
  [ -n "$line" ] || { echo "| $1 | flood failed: $(tail -1 "$WORK/flood-$3.log") |"; return; }
  n=$(echo "$line" | sed 's/allocations=\([0-9]*\).*/\1/')
  printf '| %s | %s | %s | %s KiB | %s KiB |\n' "$1" "$n" \
    "$(echo "$line" | sed 's/.*failed=\([0-9]*\) first_error=\(.*\)/\1 (first: \2)/')" \
    "$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')" \
    "$(awk -v a="$slab0" -v b="$slab1" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')"
}
echo
echo "allocations: up to $ALLOCS from one user (one client socket plays them all, a 127.x.y.z source each)"
echo
echo "| server | allocations | failed | RSS per allocation | kernel slab per allocation |"
echo "|---|---|---|---|---|"
flood "ringsfu (io_uring)" "$PID_URING" $P_URING
flood coturn "$PID_COTURN" $P_COTURN
