#!/bin/sh
# Runs every fuzz target one after the other, single job, for SECONDS each (default 600).
# New inputs go to a scratch corpus ($WORK/<target>), the committed seeds are read-only input.
# Logs: $WORK/<target>.log; crashes land in fuzz/artifacts/<target>/.
# Usage: fuzz/run_all.sh [SECONDS] [target...]
set -u
cd "$(dirname "$0")"
SECS=${1:-600}
shift 2>/dev/null || true
WORK=${WORK:-/tmp/ringsfu-fuzz}
TARGETS=${*:-"demux stun channel_data rtp rtcp dtls_record stun_roundtrip rtp_rewrite rtcp_roundtrip stun_diff rtp_diff rtcp_diff sdp record_depack mkv_roundtrip codec_inspect av1_dd layer_switch compose_wire"}
for t in $TARGETS; do
    mkdir -p "$WORK/$t"
    echo "== $t ($SECS s)"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O --debug-assertions "$t" "$WORK/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
        > "$WORK/$t.log" 2>&1
    echo "   exit $?"
    grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done|DEDUP|ERROR" "$WORK/$t.log"
done
