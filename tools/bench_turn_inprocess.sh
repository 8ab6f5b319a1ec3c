#!/usr/bin/env bash
# What in-process delivery saves (issue 5, item 6): the server CPU time per datagram relayed
# from a TURN client to ringsfu's own media port, handed to the media core inside the process
# (`[turn] deliver_in_process = true`, the default) vs sent through the relay socket and
# received again on the media socket (`false`).
#
# Two ringsfu instances side by side on loopback (media on, 1 shard each, so the TURN listener,
# the relays and the media port share one shard), the same `turnutils_uclient` load against each,
# alternating for ROUNDS rounds; the peer is the instance's own media port, whose media core
# drops the (non-WebRTC) payloads the same way in both cases, so the difference is the kernel
# round trip. CPU time: the sum over the server's threads of /proc/<pid>/task/*/schedstat
# (nanoseconds on CPU) around each load, after one warm-up round that is not counted; relayed
# datagrams: the server's own counter (ringsfu_turn_relayed_packets_total).
#
# With COTURN=1 (needs Debian's coturn), coturn's `turnserver` runs beside them and relays the
# same load to the second instance's media port (a sink: it drops the datagrams): the deployment
# ringsfu replaces, a TURN server relaying browsers to a media server on the same host. Its CPU
# per relayed datagram excludes the media server's receive, so that comparison favours coturn;
# the script also reads the sink instance's CPU during coturn's rounds and reports coturn plus
# that receive (the whole deployment's cost for the same datagrams).
#
# Usage: tools/bench_turn_inprocess.sh [ROUNDS]
# Env: CLIENTS (10) MESSAGES (5000) LENGTH (200) INTERVAL ms (1)
#      RINGSFU_BIN (target/release/ringsfu, built when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
CLIENTS=${CLIENTS:-10}
MESSAGES=${MESSAGES:-5000}
LENGTH=${LENGTH:-200}
INTERVAL=${INTERVAL:-1}
BIN=${RINGSFU_BIN:-target/release/ringsfu}

. tools/bench_lib.sh
bench_setup bench_turn_inprocess turnutils_uclient turnutils_stunclient curl

declare -A TURN MEDIA HTTP PID
TURN[on]=26478; MEDIA[on]=26500; HTTP[on]=26443
TURN[off]=27478; MEDIA[off]=27500; HTTP[off]=27443
for m in on off; do
  deliver=true; [ "$m" = off ] && deliver=false
  # allow_loopback_peers: turnutils_uclient also binds a channel to a loopback address other
  # than the media port, which the default policy refuses.
  "$BIN" --port "${HTTP[$m]}" --log-level warn \
    --set media.shards=1 --set media.pin_threads=false --set "media.port_base=${MEDIA[$m]}" \
    --set 'media.public_ips=["127.0.0.1"]' --set "turn.port=${TURN[$m]}" \
    --set 'turn.relay_ips=["127.0.0.1"]' --set 'turn.users=["alice:wonderland"]' \
    --set turn.allow_loopback_peers=true --set "turn.deliver_in_process=$deliver" \
    >"$WORK/ringsfu-$m.log" 2>&1 &
  PID[$m]=$!
  PIDS+=("${PID[$m]}")
done
for m in on off; do
  ok=
  for _ in $(seq 1 100); do
    timeout 2 turnutils_stunclient -p "${TURN[$m]}" 127.0.0.1 >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "bench_turn_inprocess: ringsfu ($m) does not answer" >&2; cat "$WORK/ringsfu-$m.log" >&2; exit 1; }
done

MODES="on off"
if [ "${COTURN:-0}" = 1 ]; then
  command -v turnserver >/dev/null || { echo "bench_turn_inprocess: turnserver is missing" >&2; exit 1; }
  TURN[coturn]=28478
  turnserver -n --listening-ip=127.0.0.1 --listening-port=${TURN[coturn]} \
    --relay-ip=127.0.0.1 --min-port=30000 --max-port=39999 --relay-threads=1 \
    --allow-loopback-peers --no-cli --no-tls --no-dtls --no-tcp-relay --lt-cred-mech \
    --user=alice:wonderland --realm=ringsfu --user-quota=0 --total-quota=0 \
    --userdb="$WORK/turndb" --log-file="$WORK/coturn.log" --no-stdout-log \
    --pidfile="$WORK/coturn.pid" >/dev/null 2>&1 &
  PID[coturn]=$!
  PIDS+=("${PID[coturn]}")
  for _ in $(seq 1 100); do
    timeout 2 turnutils_stunclient -p "${TURN[coturn]}" 127.0.0.1 >/dev/null 2>&1 && break
    sleep 0.1
  done
  MODES="on off coturn"
fi

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ n += $1 } END { printf "%d", n }'; }
metric() { # mode series
  curl -s -u OPENVIDUAPP:MY_SECRET "http://127.0.0.1:${HTTP[$1]}/metrics" \
    | awk -v s="$2" 'index($0, s) == 1 { n += $NF } END { print n + 0 }'
}
declare -A CPU PKTS base_inproc
for m in $MODES; do CPU[$m]=0; PKTS[$m]=0; done
CPU[sink]=0
# Relayed datagrams: ringsfu's own counter; coturn's load is counted by what uclient sent.
relayed() { # mode log
  if [ "$1" = coturn ]; then
    grep -o 'tot_send_msgs=[0-9]*' "$2" | tail -1 | cut -d= -f2
  else
    metric "$1" 'ringsfu_turn_relayed_packets_total{shard="0",direction="to_peer"}'
  fi
}
echo "load: $CLIENTS clients x $MESSAGES messages of $LENGTH bytes every $INTERVAL ms, ChannelData over UDP to the server's own media port, $ROUNDS rounds"
for r in $(seq 0 "$ROUNDS"); do
  for m in $MODES; do
    log="$WORK/uclient-$m-$r.log"
    # coturn's peer: the media port of the instance without in-process delivery (a sink).
    peer=${MEDIA[$m]:-${MEDIA[off]}}
    before=$(cpu_ns "${PID[$m]}")
    sink0=$(cpu_ns "${PID[off]}")
    p0=0; [ "$m" = coturn ] || p0=$(relayed "$m" "")
    timeout 600 turnutils_uclient -c -m "$CLIENTS" -n "$MESSAGES" -l "$LENGTH" -z "$INTERVAL" \
      -u alice -w wonderland -e 127.0.0.1 -r "$peer" -p "${TURN[$m]}" 127.0.0.1 \
      >"$log" 2>&1 || true
    after=$(cpu_ns "${PID[$m]}")
    sink1=$(cpu_ns "${PID[off]}")
    if [ "$m" = coturn ]; then p1=$(relayed coturn "$log"); p1=${p1:-0}; else p1=$(relayed "$m" ""); fi
    if [ "$r" = 0 ]; then
      [ "$m" = coturn ] || base_inproc[$m]=$(metric "$m" 'ringsfu_turn_in_process_total{shard="0",direction="to_media"}')
    else
      CPU[$m]=$(( ${CPU[$m]} + after - before ))
      [ "$m" = coturn ] && CPU[sink]=$(( ${CPU[sink]} + sink1 - sink0 ))
      PKTS[$m]=$(( ${PKTS[$m]} + p1 - p0 ))
    fi
    printf '  round %d%s %-6s cpu %6.1f ms  relayed %8d\n' "$r" "$([ "$r" = 0 ] && echo ' (warm-up)')" "$m" "$(awk -v n=$((after - before)) 'BEGIN { print n / 1e6 }')" $((p1 - p0))
  done
done
inproc=$(( $(metric on 'ringsfu_turn_in_process_total{shard="0",direction="to_media"}') - ${base_inproc[on]} ))
kernel_inproc=$(( $(metric off 'ringsfu_turn_in_process_total{shard="0",direction="to_media"}') - ${base_inproc[off]} ))
per_pkt() { awk -v c="${CPU[$1]}" -v p="${PKTS[$1]}" 'BEGIN { if (p > 0) printf "%.2f", c / p / 1e3; else print "nan" }'; }
echo
echo "| delivery | CPU time | datagrams relayed to the media port | of them in-process | CPU per datagram |"
echo "|---|---|---|---|---|"
printf '| in-process | %s s | %d | %d | %s µs |\n' "$(awk -v c="${CPU[on]}" 'BEGIN { printf "%.3f", c / 1e9 }')" "${PKTS[on]}" "$inproc" "$(per_pkt on)"
printf '| kernel | %s s | %d | %d | %s µs |\n' "$(awk -v c="${CPU[off]}" 'BEGIN { printf "%.3f", c / 1e9 }')" "${PKTS[off]}" "$kernel_inproc" "$(per_pkt off)"
if [ "${COTURN:-0}" = 1 ]; then
  printf '| coturn, relaying to a media port on the same host | %s s | %d | - | %s µs |\n' "$(awk -v c="${CPU[coturn]}" 'BEGIN { printf "%.3f", c / 1e9 }')" "${PKTS[coturn]}" "$(per_pkt coturn)"
  CPU[deploy]=$(( ${CPU[coturn]} + ${CPU[sink]} )); PKTS[deploy]=${PKTS[coturn]}
  printf '| coturn + the media server receiving what it relays | %s s | %d | - | %s µs |\n' "$(awk -v c="${CPU[deploy]}" 'BEGIN { printf "%.3f", c / 1e9 }')" "${PKTS[deploy]}" "$(per_pkt deploy)"
fi
ratio() { awk -v a="$(per_pkt "$1")" -v b="$(per_pkt "$2")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
echo
echo "ratio in-process / kernel: $(ratio on off)"
if [ "${COTURN:-0}" = 1 ]; then
  echo "ratio ringsfu in-process / coturn: $(ratio on coturn)"
  echo "ratio ringsfu in-process / (coturn + media server receive): $(ratio on deploy)"
  echo "ratio ringsfu kernel / coturn: $(ratio off coturn)"
fi
