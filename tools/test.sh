#!/usr/bin/env bash
# The whole ringsfu test suite, from a fresh Debian machine with only Rust installed.
# Installs the test-only tools it needs when missing (idempotent): Debian's chromium, janus, coturn's
# turnutils, iptables, ffmpeg, mkvtoolnix and unzip, GStreamer (headers and plugins, for ringsfu-composer; its RTSP server through python3-gi, for the IP camera tests), iproute2, nftables, openssl, systemd (systemd-analyze, -sysusers, -tmpfiles),
# Node.js; the npm packages of tests/js; cargo-deb. Then: format and lint checks, one debug build
# shared by every stage, `cargo test`, a 3-minute soak and churn run (tools/soak.sh), the interop tests with the real OpenVidu SDKs and headless
# Chromium, the Debian package (release build, file list checked by tools/check-deb.sh), and the
# README's first command: that release binary run with no flags, no configuration file and only
# PATH and HOME, on this machine's own core count, in a network namespace of its own, serving
# REST, the demo page, the WebSocket and two Chromium pages, then stopping on SIGTERM
# (tests/js/readme/first_command.test.mjs; needs root for the namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A one-shot build gains nothing from incremental compilation, whose caches would double the
# disk the ~25 test binaries take (CI machines have run out of disk linking them).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v turnutils_uclient >/dev/null || need_pkgs+=(coturn)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nft >/dev/null || need_pkgs+=(nftables)
# tests/js/browser_impair.test.mjs: NFQUEUE rules for the impairment relays (nft's own queue
# expression is not in these kernels; iptables' NFQUEUE target through nft_compat is)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
command -v node >/dev/null || need_pkgs+=(nodejs npm)
# tests/record_ffmpeg.rs: real bitstreams (ffmpeg) and file checks (ffprobe, mkvinfo)
command -v ffprobe >/dev/null || need_pkgs+=(ffmpeg)
command -v mkvinfo >/dev/null || need_pkgs+=(mkvtoolnix)
# tests/js/browser_recording.test.mjs: unzips the recordings the server serves
command -v unzip >/dev/null || need_pkgs+=(unzip)
# tools/soak.sh: /metrics and readiness over HTTP, free ports and arithmetic
command -v curl >/dev/null || need_pkgs+=(curl)
# tests/js/cluster.test.mjs: three nodes on one Redis (the test starts its own redis-server)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v python3 >/dev/null || need_pkgs+=(python3)
# tests/load_janus.rs: Janus (VideoRoom) beside ringsfu in one ringsfu-load run
command -v janus >/dev/null || need_pkgs+=(janus)
# tests/js/browser_ipcam.test.mjs: a fake IP camera, GStreamer's RTSP server through Debian's
# python3 (tests/js/lib/rtsp_camera.py), encoding H.264 (x264enc), PCMU and AAC (avenc_aac)
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
  || need_pkgs+=(python3-gi gir1.2-gst-rtsp-server-1.0)
for el in x264enc rtph264pay mulawenc avenc_aac; do
  if ! gst-inspect-1.0 "$el" >/dev/null 2>&1; then
    need_pkgs+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
    break
  fi
done
# ringsfu-composer (--features composer, COMPOSED recording): GStreamer's headers to build it,
# its plugins to run it (tests/js/browser_composed.test.mjs)
for p in libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_pkgs[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

step "npm packages for tests/js"
if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
  (cd tests/js && npm ci --no-audit --no-fund)
fi

# rustfmt and clippy come with rustup's default profile; a minimal toolchain lacks them.
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    step "installing the $comp component"
    rustup component add "$comp" || echo "WARNING: $comp unavailable; its check is skipped"
  fi
done

if ! cargo deb --version >/dev/null 2>&1; then
  step "installing cargo-deb"
  cargo install cargo-deb --locked
fi

step "cargo fmt --check"
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi

# Every stage builds with the composer (ringsfu-composer beside ringsfu in target/debug), so the
# one debug build is shared (the feature only adds code: the default build is a subset).
features=(--features composer)

step "cargo clippy"
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --all-targets "${features[@]}" -- -D warnings; fi

step "cargo build (debug, shared by every stage)"
cargo build --all-targets "${features[@]}"

step "cargo test"
# Tests that need systemd's tools (tests/systemd_unit.rs) fail instead of skipping.
export RINGSFU_REQUIRE_TOOLS=1
cargo test --no-fail-fast "${features[@]}"

step "soak and churn (tools/soak.sh 180: the debug build above, signaling + media churn, leak checks)"
tools/soak.sh 180

step "interop tests (openvidu-node-client, openvidu-browser in headless Chromium)"
export RINGSFU_BIN="$root/target/debug/ringsfu"
# In a network namespace of their own with only `lo` when this machine allows it (Chromium's
# WebRTC is happiest there and nothing leaks to the host network); the loss test makes its own
# namespace inside.
if unshare --net true 2>/dev/null; then
  (cd tests/js && unshare --net sh -c 'ip link set lo up && exec node --test --test-concurrency=1 --test-timeout=300000 ./*.test.mjs')
  # The browser media tests again on the epoll backend with two shards (the cross-shard test
  # always runs two shards; here its mesh is read by the epoll shell).
  (cd tests/js && RINGSFU_IO_BACKEND=epoll RINGSFU_SHARDS=2 unshare --net sh -c 'ip link set lo up && exec node --test --test-concurrency=1 --test-timeout=300000 ./browser_media.test.mjs ./browser_cross_shard.test.mjs')
else
  echo "unshare --net not permitted: running the interop tests in the host namespace"
  (cd tests/js && node --test --test-concurrency=1 --test-timeout=300000 ./*.test.mjs)
  (cd tests/js && RINGSFU_IO_BACKEND=epoll RINGSFU_SHARDS=2 node --test --test-concurrency=1 --test-timeout=300000 ./browser_media.test.mjs ./browser_cross_shard.test.mjs)
fi

step "Debian package (cargo deb, release build; contents checked)"
tools/check-deb.sh

step "the README's first command (release binary, no flags, clean environment, own network namespace)"
# The binary cargo deb just built is the one `cargo run --release` runs. Nothing here sets its
# shards or ports: it must start on this machine's core count with its defaults. The test makes
# the namespace itself; with RINGSFU_REQUIRE_TOOLS=1 (exported above) it fails rather than skips
# where unshare --net is not permitted.
(cd tests/js && RINGSFU_BIN="$root/target/release/ringsfu" node --test --test-timeout=300000 readme/first_command.test.mjs)

step "all tests passed"
# Kept for a look after the run (screenshots of two joined demo pages, from the demo page test
# and the README test).
ls -l target/test-artifacts/ 2>/dev/null || true
