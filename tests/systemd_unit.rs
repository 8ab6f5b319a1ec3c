//! The shipped systemd files: `systemd-analyze verify` of the unit (pointed at the built binary)
//! prints nothing, the unit carries the directives the service depends on, the binary starts
//! and finds its interface addresses under the unit's `RestrictAddressFamilies` (emulated with
//! a seccomp filter), and the sysusers.d and tmpfiles.d snippets apply to an empty root.
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
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=1G",
        // ProtectSystem=strict leaves /var/lib/ringsfu writable through this: the recordings.
        "StateDirectory=ringsfu",
    ] {
        assert!(lines.contains(&want), "missing `{want}` in {UNIT}");
    }
    // The packaged configuration records under the state directory.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.toml"))
            .unwrap();
    let cfg: toml::Table = example.parse().unwrap();
    let path = cfg["recording"]["path"].as_str().unwrap();
    assert!(path.starts_with("/var/lib/ringsfu/"), "recording.path {path} outside StateDirectory");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("ReadWritePaths=") || l.starts_with("ProtectSystem=full")),
        "the hardening stays strict"
    );
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
    let rec = std::fs::metadata(root.join("var/lib/ringsfu/recordings")).unwrap();
    assert!(rec.is_dir() && rec.mode() & 0o777 == 0o750);
    std::fs::remove_dir_all(&root).unwrap();
}

/// `socket(2)` family numbers for the names a unit's `RestrictAddressFamilies=` may list here.
fn family_number(name: &str) -> u32 {
    match name {
        "AF_UNIX" => libc::AF_UNIX as u32,
        "AF_INET" => libc::AF_INET as u32,
        "AF_INET6" => libc::AF_INET6 as u32,
        "AF_NETLINK" => libc::AF_NETLINK as u32,
        other => panic!("add {other} to family_number"),
    }
}

/// A seccomp program doing what systemd's `RestrictAddressFamilies=` does: `socket()` with a
/// family outside `allowed` fails with EAFNOSUPPORT.
fn address_family_filter(allowed: &[u32]) -> Vec<libc::sock_filter> {
    use common::bpf::{AUDIT_ARCH, JEQ_K, LD_W_ABS, RET_K, op};
    let k = allowed.len() as u8;
    let errno = libc::SECCOMP_RET_ERRNO | (libc::EAFNOSUPPORT as u32 & libc::SECCOMP_RET_DATA);
    let mut prog = vec![
        op(LD_W_ABS, 4, 0, 0), // seccomp_data.arch
        op(JEQ_K, AUDIT_ARCH, 1, 0),
        op(RET_K, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JEQ_K, libc::SYS_socket as u32, 0, k + 2),
        op(LD_W_ABS, 16, 0, 0), // seccomp_data.args[0], low half (little-endian)
    ];
    for (i, fam) in allowed.iter().enumerate() {
        prog.push(op(JEQ_K, *fam, k - i as u8, 0));
    }
    prog.push(op(RET_K, errno, 0, 0));
    prog.push(op(RET_K, libc::SECCOMP_RET_ALLOW, 0, 0));
    prog
}

/// Starts the binary bound to the wildcard address with no `media.public_ips`, so it lists
/// the interface addresses for its candidates, with `socket()` restricted to `families`;
/// returns what it logged up to "media engine running" (or its end).
fn start_log_under_families(families: &[u32]) -> String {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let prog = address_family_filter(families);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
    cmd.args(["--port", &common::free_port().to_string(), "--address", "127.0.0.1"])
        .args(["--shards", "1", "--set", "media.bind_address=0.0.0.0"])
        .args(["--set", &format!("media.port_base={}", common::free_udp_run())])
        .args(["--set", &format!("turn.port={}", common::free_port()), "--set", "turn.tls_port=0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only prctl (async-signal-safe) runs between fork and exec; the program was built
    // before the fork and outlives it.
    unsafe {
        cmd.pre_exec(move || {
            let fprog =
                libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = common::Proc(cmd.spawn().expect("spawn ringsfu under the filter"));
    let stderr = child.0.stderr.take().unwrap();
    let mut log = Vec::new();
    for line in std::io::BufReader::new(stderr).lines().take(200) {
        let Ok(line) = line else { break };
        let done = line.contains("media engine running");
        log.push(line);
        if done {
            break;
        }
    }
    log.join("\n")
}

#[test]
fn the_units_address_families_let_a_wildcard_bind_list_its_interfaces() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let families: Vec<u32> = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("RestrictAddressFamilies="))
        .expect("RestrictAddressFamilies in the unit")
        .split_whitespace()
        .map(family_number)
        .collect();
    const WARNING: &str = "cannot list the interface addresses";
    let log = start_log_under_families(&families);
    assert!(
        log.contains("media engine running"),
        "did not start under the unit's families:\n{log}"
    );
    assert!(!log.contains(WARNING), "{log}");
    // The filter is real: without AF_NETLINK the listing fails, and the binary says so.
    let netlink = libc::AF_NETLINK as u32;
    let without: Vec<u32> = families.into_iter().filter(|f| *f != netlink).collect();
    let log = start_log_under_families(&without);
    assert!(log.contains(WARNING), "no warning without AF_NETLINK:\n{log}");
}
