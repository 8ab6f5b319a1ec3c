#!/usr/bin/env bash
# One measurement of video freezes under random loss: tools/loss_freezes.sh PERCENT SECONDS
# In a network namespace of its own with only `lo`, an nftables rule drops PERCENT% of every
# UDP datagram at random on input (every hop: publisher -> ringsfu, ringsfu -> subscriber, and
# RTCP both ways; these kernels have no netem), then tests/js/lib/loss_scenario.mjs runs one
# openvidu-browser publisher and one subscriber in Chromium through ringsfu ($RINGSFU_BIN, else
# the debug build) and, after 800 video packets, a window of SECONDS. Prints the subscriber's
# freezes (count and total seconds, Chromium's freezeCount / totalFreezesDuration) over the
# window, its video packets lost on the media SSRC, retransmissions received, PLIs. Root only
# (unshare --net, nft).
set -euo pipefail
cd "$(dirname "$0")/.."
pct=${1:?loss percent}
secs=${2:?window seconds}
script=tests/js/lib/loss_scenario.mjs
out=$(LOSS_SCENARIO_SECONDS=$secs unshare --net -- sh -c "ip link set lo up \
  && nft add table inet loss && nft add chain inet loss in '{ type filter hook input priority 0; }' \
  && nft add rule inet loss in meta l4proto udp numgen random mod 100 '<' $pct drop \
  && exec node $script" 2>&1)
line=$(printf '%s\n' "$out" | grep '^RESULT ' | head -1)
[ -n "$line" ] || { printf '%s\n' "$out" | tail -40; exit 1; }
printf '%s\n' "${line#RESULT }" | node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
  if (!r.ok || !r.end) { console.log("failed:", r.error); process.exit(1); }
  const a = r.stats, b = r.end, d = (k) => (b[k] || 0) - (a[k] || 0);
  console.log(JSON.stringify({ loss_percent: Number(process.argv[1]), window_s: r.window,
    freezes: d("freezeCount"), freeze_s: Number(d("freezeSeconds").toFixed(3)),
    video_packets: d("videoPackets"), video_lost: d("videoLost"), retransmitted: d("retransmitted"),
    nacks_sent: d("nackCount"), plis: d("pliCount"), frames_decoded: d("framesDecoded") }));
' "$pct"
