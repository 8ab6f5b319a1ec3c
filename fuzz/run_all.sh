#!/bin/sh
# Runs the fuzz targets one after the other, single job.
#
#   fuzz/run_all.sh [SECONDS] [target...]
#       every listed target (default: all of fuzz_targets/) for SECONDS each (default 600).
#       New inputs go to a scratch corpus ($WORK/<target>), the committed seeds are read-only.
#
#   fuzz/run_all.sh --campaign [EXECS] [target...]
#       a long campaign: each target runs until EXECS executions (default 100000000), then
#       what it found is minimised and merged into found/<target>/ (libFuzzer's -merge=1:
#       only inputs that add coverage to what found/ holds; corpus/ keeps the hand-made,
#       well-formed seeds), and every crash is copied into regressions/<target>/. All three
#       are replayed by `cargo test --test wire_corpus`.
#       One line per target in $WORK/campaign.tsv: target, executions, seconds, exec/s,
#       found/ files before and after, crashes. Exit status 1 when any target crashed.
#
# Logs: $WORK/<target>.log; crashes land in fuzz/artifacts/<target>/ first.
#
# MAX_LEN=n: libFuzzer's -max_len (default 4096). Smaller for a target whose real input is
# short makes each execution cheaper (av1_dd: a Dependency Descriptor is at most 255 bytes,
# 512 leaves room for a structure and a few frames after it).
#
# JOBS=n (campaigns): n fuzzing processes per target on the same scratch corpus, each running
# EXECS/n executions; the table sums their executions and rates. Logs: $WORK/<target>.log for
# the first, $WORK/<target>.<j>.log for the others.
#
# FUZZ_BIN_DIR=dir runs the target binaries found there (copies of
# target/x86_64-unknown-linux-gnu/release/<target> from `cargo fuzz build -O --debug-assertions`)
# instead of `cargo fuzz run`, which rebuilds first: a campaign of hours then keeps fuzzing the
# build it started with while the tree changes.
set -u
cd "$(dirname "$0")"
WORK=${WORK:-/tmp/ringsfu-fuzz}
MAX_LEN=${MAX_LEN:-4096}
JOBS=${JOBS:-1}
mkdir -p "$WORK"
all_targets() { for f in fuzz_targets/*.rs; do basename "$f" .rs; done; }
count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
fuzz() {
    if [ -n "${FUZZ_BIN_DIR:-}" ]; then
        ft=$1
        shift
        # What `cargo fuzz run` passes: artifacts under artifacts/<target>/; `--` is its own.
        mkdir -p "artifacts/$ft"
        args=""
        for a in "$@"; do [ "$a" = "--" ] || args="$args $a"; done
        # shellcheck disable=SC2086
        "$FUZZ_BIN_DIR/$ft" -artifact_prefix="artifacts/$ft/" $args
    else
        RUSTC_BOOTSTRAP=1 cargo fuzz run -O --debug-assertions "$@"
    fi
}

if [ "${1:-}" = "--campaign" ]; then
    shift
    EXECS=${1:-100000000}
    shift 2>/dev/null || true
    TARGETS=${*:-$(all_targets)}
    failed=0
    printf 'target\texecs\tseconds\texec_per_s\tcorpus_before\tcorpus_after\tcrashes\n' > "$WORK/campaign.tsv"
    for t in $TARGETS; do
        mkdir -p "$WORK/$t" "corpus/$t" "found/$t"
        before=$(count "found/$t")
        echo "== $t ($EXECS executions)"
        start=$(date +%s)
        touch "$WORK/$t.start"
        # JOBS processes share the scratch corpus (libFuzzer reloads it), EXECS split between them.
        per=$(( (EXECS + JOBS - 1) / JOBS ))
        pids=""
        logs=""
        j=1
        while [ "$j" -le "$JOBS" ]; do
            log="$WORK/$t.log"
            [ "$j" -eq 1 ] || log="$WORK/$t.$j.log"
            logs="$logs $log"
            fuzz "$t" "$WORK/$t" "corpus/$t" "found/$t" -- -runs="$per" -rss_limit_mb=2048 -max_len="$MAX_LEN" \
                -print_final_stats=1 > "$log" 2>&1 &
            pids="$pids $!"
            j=$((j + 1))
        done
        rc=0
        for p in $pids; do wait "$p" || rc=$?; done
        secs=$(( $(date +%s) - start ))
        # shellcheck disable=SC2086
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' $logs | awk '{ s += $1 } END { print s }')
        # shellcheck disable=SC2086
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' $logs | awk '{ s += $1 } END { print s }')
        # Merge what adds coverage to the committed inputs (minimised by libFuzzer).
        fuzz "$t" "found/$t" "$WORK/$t" -- -merge=1 -rss_limit_mb=2048 -max_len="$MAX_LEN" \
            > "$WORK/$t.merge.log" 2>&1
        after=$(count "found/$t")
        crashes=0
        # Only what this run found (older artifacts were dealt with before).
        for a in $(find "artifacts/$t" -maxdepth 1 -type f -newer "$WORK/$t.start" 2>/dev/null); do
            mkdir -p "regressions/$t"
            cp "$a" "regressions/$t/"
            crashes=$((crashes + 1))
        done
        [ "$rc" -eq 0 ] || [ "$crashes" -gt 0 ] || crashes="run-failed($rc)"
        [ "$crashes" = 0 ] || failed=1
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-?}" "$secs" "${rate:-?}" "$before" "$after" "$crashes" \
            | tee -a "$WORK/campaign.tsv"
    done
    exit "$failed"
fi

SECS=${1:-600}
shift 2>/dev/null || true
TARGETS=${*:-$(all_targets)}
for t in $TARGETS; do
    mkdir -p "$WORK/$t" "found/$t"
    echo "== $t ($SECS s)"
    fuzz "$t" "$WORK/$t" "corpus/$t" "found/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -max_len="$MAX_LEN" -print_final_stats=1 \
        > "$WORK/$t.log" 2>&1
    echo "   exit $?"
    grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done|DEDUP|ERROR" "$WORK/$t.log"
done
