//! The binary's configuration front door: `--check-config`, precedence, and the one-line error
//! with exit code 2.

use std::process::Command;

fn ringsfu() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
    // A clean environment: nothing of the caller's RINGSFU_/OPENVIDU_ settings leaks in.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn check_config_prints_the_effective_configuration_masked() {
    let out = ringsfu().arg("--check-config").env("OPENVIDU_SECRET", "topsecret").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("topsecret"), "{text}");
    let table: toml::Table = text.parse().expect("the output is TOML");
    assert_eq!(table["server"]["secret"].as_str(), Some("********"));
    assert_eq!(table["server"]["port"].as_integer(), Some(4443));
    assert_eq!(table["server"]["address"].as_str(), Some("127.0.0.1"));
}

#[test]
fn precedence_file_env_cli() {
    let dir = std::env::temp_dir().join(format!("ringsfu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringsfu.toml");
    std::fs::write(&file, "[server]\nport = 5000\n[media]\nshards = 3\nport_base = 41000\n")
        .unwrap();
    let run = |envs: &[(&str, &str)], args: &[&str]| -> toml::Table {
        let mut c = ringsfu();
        c.arg("--check-config").arg("--config").arg(&file).args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().parse().unwrap()
    };
    let t = run(&[], &[]);
    assert_eq!(t["server"]["port"].as_integer(), Some(5000));
    let t = run(&[("HTTPS_PORT", "6000"), ("RINGSFU_MEDIA_SHARDS", "2")], &[]);
    assert_eq!(t["server"]["port"].as_integer(), Some(6000));
    assert_eq!(t["media"]["shards"].as_integer(), Some(2));
    assert_eq!(t["media"]["port_base"].as_integer(), Some(41000));
    let t = run(&[("HTTPS_PORT", "6000")], &["--port", "7000", "--set", "media.shards=4"]);
    assert_eq!(t["server"]["port"].as_integer(), Some(7000));
    assert_eq!(t["media"]["shards"].as_integer(), Some(4));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_configuration_is_one_line_naming_the_key_and_exit_2() {
    for (env, args, key) in [
        (vec![("RINGSFU_MEDIA_SHARDS", "many")], vec![], "media.shards"),
        (vec![("HTTPS_PORT", "99999")], vec![], "server.port"),
        (vec![], vec!["--set", "tls.enabled=true"], "tls.cert"),
        (vec![("RINGSFU_WEBHOOK_CA_FILE", "/nonexistent/ca.pem")], vec![], "webhook.ca_file"),
        (vec![], vec!["--set", "nosuch.key=1"], "nosuch.key"),
        (vec![], vec!["--config", "/nonexistent/ringsfu.toml"], "cannot read config file"),
    ] {
        let mut c = ringsfu();
        c.args(&args);
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(key), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// `ringsfu --check-config` with `args`: the effective configuration as a TOML table.
fn effective(args: &[&str]) -> toml::Table {
    let out = ringsfu().arg("--check-config").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().parse().expect("--check-config prints TOML")
}

/// Keys of the shipped example whose value deliberately differs from the embedded default (the
/// example's header names them).
const PRODUCTION_DIFFERS: &[&str] = &["recording.path", "server.demo"];

#[test]
fn the_shipped_example_configuration_is_valid_and_documents_every_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let parsed: toml::Table = text.parse().expect("systemd/ringsfu.toml parses as TOML");
    let from_example = effective(&["--config", example]);
    // Every key line of the example: its section and whether the line above is a comment.
    let mut section = String::new();
    let mut documented = std::collections::BTreeMap::new();
    let mut previous = "";
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_string();
        } else if !l.starts_with('#')
            && let Some((key, _)) = l.split_once('=')
        {
            documented.insert(format!("{section}.{}", key.trim()), previous.starts_with('#'));
        }
        previous = l;
    }
    let mut checked = 0;
    for (section, keys) in &from_example {
        let keys = keys.as_table().expect("a section is a table");
        for key in keys.keys() {
            let dotted = format!("{section}.{key}");
            assert!(
                parsed.get(section).and_then(|s| s.get(key)).is_some(),
                "{dotted} is not set in the [{section}] section of systemd/ringsfu.toml"
            );
            assert_eq!(
                documented.get(&dotted),
                Some(&true),
                "{dotted} in systemd/ringsfu.toml has no comment line right above it"
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} keys in the effective configuration");
    // The example holds the embedded defaults except the keys its header names.
    let defaults = effective(&[]);
    let mut differ = Vec::new();
    for (section, keys) in &defaults {
        for (key, value) in keys.as_table().unwrap() {
            if from_example[section].get(key) != Some(value) {
                differ.push(format!("{section}.{key}"));
            }
        }
    }
    assert_eq!(
        differ, PRODUCTION_DIFFERS,
        "keys of systemd/ringsfu.toml that differ from the defaults"
    );
    for key in PRODUCTION_DIFFERS {
        assert!(text.lines().take(5).any(|l| l.contains(key)), "the header does not name {key}");
    }
}

/// `--check-config` prints the shard count the machine resolved (`shards = 0` is one per CPU)
/// with where it came from, and the port plan derived from it.
#[test]
fn check_config_prints_the_resolved_shards_and_ports() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = ringsfu().arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("\nshards = {cpus}  # auto: {cpus} CPUs\n")), "{text}");
    assert!(text.contains(&format!("# cpus = {cpus}\n")), "{text}");
    let last = 40000 + cpus - 1;
    let media = if cpus == 1 { "40000".to_string() } else { format!("40000-{last}") };
    assert!(text.contains(&format!("# port: media UDP {media}  (media.port_base)")), "{text}");
    for n in [1usize, 3, 16] {
        let t = effective(&["--shards", &n.to_string()]);
        assert_eq!(t["media"]["shards"].as_integer(), Some(n as i64));
        let out = ringsfu().args(["--check-config", "--shards", &n.to_string()]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let turn = format!("# port: shard TURN UDP {}", 40000 + n);
        assert!(text.contains(&turn), "{n} shards: {text}");
    }
}

/// Two port ranges that overlap: one line naming both keys, exit 2 (also when serving).
#[test]
fn overlapping_ports_exit_2_naming_both_keys() {
    for (args, keys) in [
        (vec!["--shards", "2", "--set", "turn.port=40001"], ["media.port_base", "turn.port"]),
        (vec!["--port", "3478"], ["server.port", "turn.port"]),
        (
            vec!["--shards", "4", "--set", "turn.relay_port_min=40006"],
            ["turn.shard_ports", "turn.relay_port_min..turn.relay_port_max"],
        ),
    ] {
        for check in [true, false] {
            let mut c = ringsfu();
            if check {
                c.arg("--check-config");
            }
            let out = c.args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{err}");
            for k in keys {
                assert!(err.contains(&format!("`{k}`")), "{args:?}: {err}");
            }
        }
    }
}
