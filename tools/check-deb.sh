#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks its file list, its conffiles and its
# maintainer scripts. Fails when a file is missing or unexpected.
#   tools/check-deb.sh            cargo deb (release build), the package users install
#   tools/check-deb.sh --no-build package the release binary already in target/release
# Needs cargo-deb (cargo install cargo-deb --locked) and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo deb "$@" --output "$out/" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
deb=$(ls "$out"/*.deb)
echo "built $(basename "$deb")"

# The files the package must contain, with their modes (`dpkg-deb -c` columns 1 and 6).
expected=$(cat <<'LIST'
-rwxr-xr-x ./usr/bin/ringsfu
-rw-r----- ./etc/ringsfu/ringsfu.toml
-rw-r--r-- ./usr/lib/systemd/system/ringsfu.service
-rw-r--r-- ./usr/lib/sysusers.d/ringsfu.conf
-rw-r--r-- ./usr/lib/tmpfiles.d/ringsfu.conf
-rw-r--r-- ./usr/share/doc/ringsfu/README.md
-rw-r--r-- ./usr/share/doc/ringsfu/copyright
-rw-r--r-- ./usr/share/doc/ringsfu/grafana-dashboard.json
LIST
)
# ringsfu-load ships once the load generator exists.
if grep -q '^name = "ringsfu-load"' Cargo.toml; then
  expected=$(printf '%s\n-rwxr-xr-x ./usr/bin/ringsfu-load' "$expected")
fi
# ringsfu-composer (COMPOSED recording) ships beside ringsfu, where ringsfu looks for it.
if grep -q '^name = "ringsfu-composer"' Cargo.toml; then
  expected=$(printf '%s\n-rwxr-xr-x ./usr/bin/ringsfu-composer' "$expected")
fi
actual=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $1, $6}' | sort)
echo "$actual"
if ! diff <(echo "$expected" | sort) <(echo "$actual"); then
  echo "FAIL: the package's file list differs from the expected one (< expected, > actual)" >&2
  exit 1
fi

ctl="$out/control"
dpkg-deb -e "$deb" "$ctl"
grep -qx '/etc/ringsfu/ringsfu.toml' "$ctl/conffiles" || { echo "FAIL: ringsfu.toml is not a conffile" >&2; exit 1; }
grep -q 'systemd-sysusers.*ringsfu.conf' "$ctl/postinst" || { echo "FAIL: postinst does not create the user" >&2; exit 1; }
grep -q 'systemd-tmpfiles --create ringsfu.conf' "$ctl/postinst" || { echo "FAIL: postinst does not apply tmpfiles" >&2; exit 1; }
grep -q '^Depends:.*systemd' "$ctl/control" || { echo "FAIL: no dependency on systemd" >&2; exit 1; }
if grep -q '^name = "ringsfu-composer"' Cargo.toml; then
  grep -q '^Depends:.*libgstreamer1.0-0' "$ctl/control" || { echo "FAIL: the composer's GStreamer library is not a dependency" >&2; exit 1; }
  grep -q '^Recommends:.*gstreamer1.0-plugins-ugly' "$ctl/control" || { echo "FAIL: the composer's plugins are not recommended" >&2; exit 1; }
fi
# The packaged unit and example configuration are the ones in the tree.
dpkg-deb -x "$deb" "$out/root"
cmp systemd/ringsfu.service "$out/root/usr/lib/systemd/system/ringsfu.service"
cmp systemd/ringsfu.toml "$out/root/etc/ringsfu/ringsfu.toml"
"$out/root/usr/bin/ringsfu" --check-config --config "$out/root/etc/ringsfu/ringsfu.toml" >/dev/null
if [ -e "$out/root/usr/bin/ringsfu-composer" ]; then "$out/root/usr/bin/ringsfu-composer" --version >/dev/null; fi
echo "package OK"
