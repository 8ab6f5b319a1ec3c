#!/usr/bin/env bash
# The loss, delay and reordering table (issue 19): tools/impair_table.sh [SECONDS] [ROW...]
# For each row, two runs of tests/js/lib/impair_scenario.mjs, each in a fresh network namespace:
# one Chromium publisher and one Chromium subscriber, each behind its own veth link whose four
# directions (publisher up/down, subscriber up/down) go through `ringsfu-load impair` relays
# (NFQUEUE, src/load/impair.rs): first through ringsfu (openvidu-browser), then as a direct
# Chromium-to-Chromium call over the same links. A window of SECONDS (default 30) after 400
# video packets. Prints a markdown table (subscriber side: video packets lost on the media SSRC,
# RTX received, NACKs sent, PLIs, freezes, frames decoded of those the publisher encoded) and
# keeps every run's full result in $IMPAIR_OUT (default target/impair_table.jsonl). ROW: the
# names below (default all). Root only (unshare --net, ip netns, iptables). Uses $RINGSFU_BIN
# and $RINGSFU_LOAD_BIN, else the debug builds in $CARGO_TARGET_DIR (or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
out=${IMPAIR_OUT:-${CARGO_TARGET_DIR:-target}/impair_table.jsonl}
mkdir -p "$(dirname "$out")"
: >"$out"

# name | flags of each of the four link directions (pubUp pubDown subUp subDown)
all='loss5|--loss 5|--loss 5|--loss 5|--loss 5
loss10|--loss 10|--loss 10|--loss 10|--loss 10
loss20|--loss 20|--loss 20|--loss 20|--loss 20
loss10-pub|--loss 10|--loss 10|||
loss10-sub|||--loss 10|--loss 10
delay100j30|--delay 100 --jitter 30|--delay 100 --jitter 30|--delay 100 --jitter 30|--delay 100 --jitter 30
reorder5|--reorder 5|--reorder 5|--reorder 5|--reorder 5
loss10+delay100j30|--loss 10 --delay 100 --jitter 30|--loss 10 --delay 100 --jitter 30|--loss 10 --delay 100 --jitter 30|--loss 10 --delay 100 --jitter 30'

want=" $* "
while IFS='|' read -r name a b c d; do
  [ $# -eq 0 ] || [[ $want == *" $name "* ]] || continue
  for mode in sfu direct; do
    cfg=$(node -e '
      const [mode, secs, ...l] = process.argv.slice(1);
      const f = (s) => s.split(" ").filter(Boolean);
      console.log(JSON.stringify({ mode, seconds: Number(secs), warmupPackets: 400,
        links: { pubUp: f(l[0]), pubDown: f(l[1]), subUp: f(l[2]), subDown: f(l[3]) } }));
    ' "$mode" "$secs" "$a" "$b" "$c" "$d")
    echo "== $name $mode ($(date -u +%H:%M:%S))" >&2
    res=$(cd tests/js && IMPAIR_CONFIG=$cfg timeout 600 unshare --net -- sh -c \
      'ip link set lo up && exec node lib/impair_scenario.mjs' 2>&1 | grep '^RESULT ' | head -1 || true)
    [ -n "$res" ] || res='RESULT {"ok":false,"error":"no result"}'
    printf '%s\n' "${res#RESULT }" | node -e '
      const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
      r.row = process.argv[1]; r.mode = process.argv[2]; delete r.logs;
      console.log(JSON.stringify(r));' "$name" "$mode" >>"$out"
  done
done <<<"$all"

node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
  console.log("| row | path | lost (media SSRC) | RTX recv | RTX/lost | NACKs | PLIs | freezes | freeze s | frames decoded / encoded |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    if (!r.ok) { console.log(`| ${r.row} | ${r.mode} | failed: ${String(r.error).split("\n")[0]} |||||||||`); continue; }
    const s = r.summary;
    const share = s.videoLost > 0 ? (s.retransmitted / s.videoLost).toFixed(2) : "-";
    console.log(`| ${r.row} | ${r.mode === "sfu" ? "ringsfu" : "direct"} | ${s.videoLost} / ${s.videoPackets + s.videoLost} | ${s.retransmitted} | ${share} | ${s.nackCount} | ${s.pliCount} | ${s.freezeCount} | ${s.freezeSeconds.toFixed(2)} | ${s.framesDecoded} / ${s.framesEncoded} |`);
  }
' "$out"
