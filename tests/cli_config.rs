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

#[test]
fn the_shipped_example_configuration_is_valid_and_documents_every_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.toml");
    let out = ringsfu().args(["--check-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Every key of the effective configuration appears in the example (commented or not).
    let text = std::fs::read_to_string(example).unwrap();
    let effective: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    for (section, keys) in &effective {
        assert!(text.contains(&format!("[{section}]")), "section [{section}] missing");
        for key in keys.as_table().unwrap().keys() {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} ="))),
                "{section}.{key} is not documented in systemd/ringsfu.toml"
            );
        }
    }
}
