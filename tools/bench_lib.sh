# Sourced by the TURN benchmark scripts (tools/bench_turn*.sh): their common setup.

# bench_setup NAME TOOL...: fails unless every TOOL is installed, builds $BIN when missing, makes
# the scratch folder $WORK and arms the exit trap that kills the processes in PIDS (the script
# appends what it starts) and removes $WORK.
bench_setup() {
  local name=$1 t
  shift
  for t in "$@"; do
    command -v "$t" >/dev/null || {
      echo "$name: $t is missing (apt-get install coturn python3 curl)" >&2
      exit 1
    }
  done
  [ -x "$BIN" ] || cargo build --release --bin ringsfu
  WORK=$(mktemp -d "/tmp/$name.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
