#!/bin/sh
# The ringsfu-load runs behind BENCHMARKS.md. Usage: tools/bench-load.sh [OUTDIR]
# Builds the release binaries, then runs each scenario once; JSON, SVG and the printed table of
# each run land in OUTDIR (default target/bench-load).
set -eu
out=${1:-target/bench-load}
mkdir -p "$out"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --bins
load=target/release/ringsfu-load
srv=target/release/ringsfu
run() {
    name=$1
    shift
    echo "== $name: ringsfu-load $*"
    "$load" --server-bin "$srv" --quiet --json "$out/$name.json" --svg "$out/$name.svg" "$@" \
        2>"$out/$name.log" | tee "$out/$name.txt"
}
# 1 -> N fanout on one server shard, both I/O backends and the raw ceiling, same run.
for n in 10 100 200; do
    run "fanout-$n" --backends uring,epoll --raw -p 1 -s "$n" --duration 15
done
# 1 publisher -> 1000 subscribers, server on 2 shards (2 cores); sampled verification.
run "fanout-1000" --backends uring,epoll --server-shards 2 --raw -p 1 -s 1000 --duration 10 \
    --ramp 100 --verify-ratio 0.05
# Many small sessions spread over 2 shards.
run "sessions-20x10" --backends uring,epoll --server-shards 2 --raw -k 20 -p 1 -s 10 \
    --duration 15
# 1000 subscriber legs as 40 sessions of 1 -> 25 on 2 shards (the 2-core capacity figure).
run "sessions-40x25" --backends uring,epoll --server-shards 2 --raw -k 40 -p 1 -s 25 \
    --duration 10 --ramp 200 --verify-ratio 0.05
