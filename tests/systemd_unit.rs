//! The shipped systemd files: `systemd-analyze verify` of the unit (pointed at the built binary)
//! prints nothing, the unit carries the directives the service depends on, and the sysusers.d
//! and tmpfiles.d snippets apply to an empty root.
//!
//! `systemd-analyze` exits 0 on unknown keys and only prints a warning, so any output fails.
//! Without systemd's tools the tests skip loudly, unless `RINGSFU_REQUIRE_TOOLS=1` (CI sets it
//! through `tools/test.sh`), which turns a missing tool into a failure.

mod common;

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.service");
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.sysusers");
const TMPFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.tmpfile");

fn have(tool: &str) -> bool {
    common::tools_present(&[tool], "apt-get install systemd")
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringsfu-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn systemd_analyze_verify_prints_nothing() {
    if !have("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let bin = env!("CARGO_BIN_EXE_ringsfu");
    assert!(unit.contains("ExecStart=/usr/bin/ringsfu "), "the packaged path");
    let local = unit.replace("ExecStart=/usr/bin/ringsfu ", &format!("ExecStart={bin} "));
    let dir = temp_dir("verify");
    let path = dir.join("ringsfu.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
}

#[test]
fn the_unit_has_what_the_service_relies_on() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=10s",
        "User=ringsfu",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=1G",
    ] {
        assert!(lines.contains(&want), "missing `{want}` in {UNIT}");
    }
    let filter = lines.iter().find(|l| l.starts_with("SystemCallFilter=@system-service")).unwrap();
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(filter.contains(call), "{call} not allowed by {filter}");
    }
    // The stop timeout leaves room for the default drain (30 s) plus the final shutdown.
    let stop: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    let drain = ringsfu::config::Config::default().server.drain_timeout;
    assert!(stop > drain + 5, "TimeoutStopSec={stop} vs drain_timeout={drain}");
}

#[test]
fn sysusers_and_tmpfiles_apply_to_an_empty_root() {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        return;
    }
    let root = temp_dir("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("systemd-sysusers").arg(format!("--root={}", root.display())).arg(SYSUSERS));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(
            |l| l.starts_with("ringsfu:") && l.ends_with(":/var/lib/ringsfu:/usr/sbin/nologin")
        ),
        "{passwd}"
    );
    run(Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg(TMPFILES));
    use std::os::unix::fs::MetadataExt;
    let etc = std::fs::metadata(root.join("etc/ringsfu")).unwrap();
    assert_eq!(etc.mode() & 0o777, 0o750);
    assert!(Path::new(&root.join("var/lib/ringsfu")).is_dir());
    std::fs::remove_dir_all(&root).unwrap();
}
