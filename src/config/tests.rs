use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn load(file: Option<&str>, e: &[(&str, &str)], o: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "ringsfu-cfg-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let path = file.map(|text| {
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ringsfu.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    let r = Config::load(&Sources { file: path, env: env(e), overrides: env(o) });
    let _ = std::fs::remove_dir_all(&dir);
    r
}

#[test]
fn embedded_defaults_are_the_dev_deployment() {
    let c = load(None, &[], &[]).unwrap();
    assert_eq!(c.listen_addr().to_string(), "127.0.0.1:4443");
    assert_eq!(c.server.secret, "MY_SECRET");
    assert_eq!(c.public_url(), "http://127.0.0.1:4443");
    assert_eq!(c.ws_url(), "ws://127.0.0.1:4443");
    assert_eq!(c.media_public_ips(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.turn_public_ip(), "127.0.0.1");
    assert_eq!(c.turn_secret(), "MY_SECRET");
    assert!(!c.tls.enabled);
}

#[test]
fn precedence_file_then_env_then_cli() {
    let file = "[server]\nport = 5000\nsecret = \"file\"\n[media]\nshards = 3\nport_base = 41000\n";
    let c = load(Some(file), &[], &[]).unwrap();
    assert_eq!((c.server.port, c.server.secret.as_str(), c.media.shards), (5000, "file", 3));
    let c =
        load(Some(file), &[("HTTPS_PORT", "6000"), ("RINGSFU_MEDIA_SHARDS", "2")], &[]).unwrap();
    assert_eq!((c.server.port, c.media.shards, c.media.port_base), (6000, 2, 41000));
    let c = load(
        Some(file),
        &[("HTTPS_PORT", "6000"), ("RINGSFU_SERVER_PORT", "6001")],
        &[("server.port", "7000")],
    )
    .unwrap();
    assert_eq!(c.server.port, 7000);
    let c =
        load(Some(file), &[("HTTPS_PORT", "6000"), ("RINGSFU_SERVER_PORT", "6001")], &[]).unwrap();
    assert_eq!(c.server.port, 6001, "RINGSFU_ name wins over the OpenVidu twin");
}

#[test]
fn openvidu_names_map_to_keys() {
    let c = load(
        None,
        &[
            ("OPENVIDU_SECRET", "12345"),
            ("DOMAIN_OR_PUBLIC_IP", "10.1.2.3"),
            ("OPENVIDU_WEBHOOK", "true"),
            ("OPENVIDU_WEBHOOK_ENDPOINT", "http://127.0.0.1:7777/hook"),
            ("OPENVIDU_WEBHOOK_HEADERS", "[\"Authorization: Basic abc\"]"),
            ("OPENVIDU_WEBHOOK_EVENTS", "[\"sessionCreated\",\"participantJoined\"]"),
            ("OPENVIDU_STREAMS_FORCED_VIDEO_CODEC", "VP8"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.server.secret, "12345");
    assert_eq!(c.public_url(), "http://10.1.2.3:4443");
    assert_eq!(c.media_public_ips(), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
    assert!(c.webhook.enabled);
    assert_eq!(c.webhook.headers, vec!["Authorization: Basic abc"]);
    assert_eq!(c.webhook.events, vec!["sessionCreated", "participantJoined"]);
    assert_eq!(c.sessions.forced_video_codec, "VP8");
}

#[test]
fn lists_from_env_accept_commas() {
    let c = load(None, &[("RINGSFU_TURN_USERS", "a:b, c:d")], &[]).unwrap();
    assert_eq!(c.turn.users, vec!["a:b", "c:d"]);
    let c = load(None, &[("RINGSFU_MEDIA_PUBLIC_IPS", "192.0.2.1,2001:db8::1")], &[]).unwrap();
    assert_eq!(c.media.public_ips.len(), 2);
}

#[test]
fn errors_name_the_key() {
    let e = load(None, &[("RINGSFU_MEDIA_SHARDS", "many")], &[]).unwrap_err();
    assert_eq!(e.key, "media.shards");
    assert!(e.to_string().contains("RINGSFU_MEDIA_SHARDS"), "{e}");
    let e = load(None, &[("RINGSFU_MEDIA_NOPE", "1")], &[]).unwrap_err();
    assert_eq!(e.key, "media.nope");
    // Variables outside the configuration sections belong to other tools.
    assert!(load(None, &[("RINGSFU_BIN", "/x"), ("RINGSFU_TEST_DIR", "/y")], &[]).is_ok());
    let e = load(Some("[server]\nport = \"x\"\n"), &[], &[]).unwrap_err();
    assert_eq!(e.key, "server.port");
    let e = load(Some("[server]\nbogus = 1\n"), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = load(Some("[server\n"), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("ringsfu.toml"), "{e}");
    let e = load(None, &[("OPENVIDU_SECRET", "")], &[]).unwrap_err();
    assert_eq!(e.key, "server.secret");
    let e = load(None, &[], &[("tls.enabled", "true")]).unwrap_err();
    assert_eq!(e.key, "tls.cert");
    let e = load(None, &[], &[("turn.users", "nopass")]).unwrap_err();
    assert_eq!(e.key, "turn.users");
    let e = load(None, &[], &[("turn.denied_peer_ranges", "10.0.0.0/33")]).unwrap_err();
    assert_eq!(e.key, "turn.denied_peer_ranges");
    let e = load(None, &[], &[("sessions.forced_video_codec", "THEORA")]).unwrap_err();
    assert_eq!(e.key, "sessions.forced_video_codec");
    let e = load(None, &[], &[("webhook.enabled", "true")]).unwrap_err();
    assert_eq!(e.key, "webhook.endpoint");
    let e = load(None, &[], &[("server.log_level", "info,[[[")]).unwrap_err();
    assert_eq!(e.key, "server.log_level");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn webhook_https_endpoint_and_ca_file() {
    let on = [("webhook.enabled", "true"), ("webhook.endpoint", "https://hooks.example.org/ov")];
    let c = load(None, &[], &on).unwrap();
    assert_eq!(c.webhook.endpoint, "https://hooks.example.org/ov");
    assert_eq!(c.webhook.ca_file, None);
    // The delivery task's own parser decides: a malformed URL is refused at load, not
    // discovered when the webhooks start.
    for bad in ["ftp://h/x", "https://h:notaport/", "https://user:pw@h/x", "http://[::1/x"] {
        let e = load(None, &[], &[on[0], ("webhook.endpoint", bad)]).unwrap_err();
        assert_eq!(e.key, "webhook.endpoint", "{bad}: {e}");
    }

    let dir = std::env::temp_dir().join(format!(
        "ringsfu-cfg-ca-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, ca.cert.pem()).unwrap();
    let key_only = dir.join("key.pem");
    std::fs::write(&key_only, ca.signing_key.serialize_pem()).unwrap();
    let good_s = good.to_str().unwrap();
    // From the environment (the generic RINGSFU_ overlay), the command line and a file.
    let c = load(None, &[("RINGSFU_WEBHOOK_CA_FILE", good_s)], &on).unwrap();
    assert_eq!(c.webhook.ca_file.as_deref(), Some(good.as_path()));
    let c = load(None, &[], &[("webhook.ca_file", good_s)]).unwrap();
    assert_eq!(c.webhook.ca_file.as_deref(), Some(good.as_path()));
    let c = load(Some(&format!("[webhook]\nca_file = {good_s:?}\n")), &[], &[]).unwrap();
    assert_eq!(c.webhook.ca_file.as_deref(), Some(good.as_path()));
    // A file that is missing or holds no certificate names the key.
    let missing = dir.join("missing.pem");
    for bad in [&missing, &key_only] {
        let e = load(None, &[("RINGSFU_WEBHOOK_CA_FILE", bad.to_str().unwrap())], &on).unwrap_err();
        assert_eq!(e.key, "webhook.ca_file", "{e}");
        assert!(e.to_string().contains(bad.to_str().unwrap()), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn self_signed_needs_no_files() {
    let c = load(None, &[("CERTIFICATE_TYPE", "selfsigned")], &[]).unwrap();
    assert!(c.tls.enabled && c.tls.self_signed);
    assert_eq!(c.public_url(), "https://127.0.0.1:4443");
    assert_eq!(c.ws_url(), "wss://127.0.0.1:4443");
}

#[test]
fn masked_output_hides_secrets() {
    let c =
        load(None, &[("OPENVIDU_SECRET", "s3cr3t"), ("RINGSFU_TURN_USERS", "bob:hunter2")], &[])
            .unwrap();
    let t = c.to_masked_toml();
    assert!(!t.contains("s3cr3t") && !t.contains("hunter2"), "{t}");
    assert!(t.contains("bob:********"));
    // The masked rendering is itself a valid configuration file.
    assert!(t.parse::<toml::Table>().is_ok());
}

#[test]
fn cidr_parsing() {
    assert_eq!(parse_cidr("10.0.0.0/8").unwrap().1, 8);
    assert_eq!(parse_cidr("::1").unwrap().1, 128);
    assert!(parse_cidr("fe80::/129").is_err());
    assert!(parse_cidr("x/1").is_err());
}

#[test]
fn shard_turn_ports_follow_the_media_ports() {
    let c = load(Some("[media]\nshards = 3\nport_base = 40000\n"), &[], &[]).unwrap();
    assert_eq!(
        (0..3).map(|i| c.turn_shard_port(i)).collect::<Vec<_>>(),
        vec![Some(40003), Some(40004), Some(40005)]
    );
    let off = load(Some("[media]\nshards = 3\n[turn]\nshard_ports = false\n"), &[], &[]).unwrap();
    assert_eq!(off.turn_shard_port(0), None);
    // The media ports fit below 65536, the shards' TURN ports after them do not.
    let e = load(Some("[media]\nshards = 3\nport_base = 65531\n"), &[], &[]).unwrap_err();
    assert!(e.to_string().contains("turn.shard_ports"), "{e}");
    let ok = "[media]\nshards = 3\nport_base = 65531\n[turn]\nshard_ports = false\n\
              relay_port_min = 50000\nrelay_port_max = 60000\n";
    assert!(load(Some(ok), &[], &[]).is_ok());
}

/// The plan's ranges pairwise: no two share a port and a protocol.
fn assert_disjoint(plan: &PortPlan) {
    for (i, a) in plan.ranges.iter().enumerate() {
        for b in &plan.ranges[i + 1..] {
            let share =
                !matches!((a.proto, b.proto), (Proto::Udp, Proto::Tcp) | (Proto::Tcp, Proto::Udp));
            let meet = a.ports.start() <= b.ports.end() && b.ports.start() <= a.ports.end();
            assert!(!(share && meet), "{a} and {b} overlap in {plan}");
        }
    }
}

#[test]
fn port_plan_for_1_to_64_shards() {
    for n in 1..=64usize {
        let c = load(None, &[], &[("media.shards", &n.to_string())]).unwrap();
        let plan = c.port_plan().unwrap();
        assert_disjoint(&plan);
        let base = 40000usize;
        let media = plan.media().unwrap();
        assert_eq!((*media.start() as usize, *media.end() as usize), (base, base + n - 1));
        let turn = &plan.get("turn.shard_ports").unwrap().ports;
        assert_eq!((*turn.start() as usize, *turn.end() as usize), (base + n, base + 2 * n - 1));
        for i in 0..n {
            assert_eq!(c.turn_shard_port(i), Some((base + n + i) as u16), "{n} shards, shard {i}");
        }
        assert_eq!(c.turn_shard_port(n), None, "{n} shards: no shard {n}");
        assert_eq!(plan.get("turn.port").unwrap().ports, 3478..=3478);
        assert_eq!(plan.get("server.port").unwrap().ports, 4443..=4443);
        // `shards = 0` on a machine of n CPUs plans the same ports.
        let mut auto = load(None, &[], &[]).unwrap();
        auto.machine = Machine::fixed(n);
        assert_eq!(auto.effective_shards(), n);
        assert_eq!(auto.port_plan().unwrap(), plan);
    }
}

#[test]
fn port_plan_of_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ringsfu.toml");
    let text = std::fs::read_to_string(example).unwrap();
    for cpus in [1, 2, 3, 16, 64] {
        let mut c = load(Some(&text), &[], &[]).unwrap();
        c.machine = Machine::fixed(cpus);
        let plan = c.port_plan().unwrap();
        assert_disjoint(&plan);
        assert!(
            plan.media().is_some()
                && plan.get("turn.relay_port_min..turn.relay_port_max").is_some()
        );
    }
}

/// The configuration error of `o`, which must name both `a` and `b`.
fn overlap_error(o: &[(&str, &str)], a: &str, b: &str) {
    let e = load(None, &[], o).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&format!("`{a}`")) && text.contains(&format!("`{b}`")), "{o:?}: {text}");
}

#[test]
fn overlapping_ports_are_an_error_naming_both_keys() {
    let shards = [("media.shards", "2")];
    overlap_error(&[shards[0], ("turn.port", "40001")], "media.port_base", "turn.port");
    overlap_error(&[shards[0], ("turn.port", "40003")], "turn.shard_ports", "turn.port");
    overlap_error(&[("server.port", "3478")], "server.port", "turn.port");
    overlap_error(&[shards[0], ("turn.tls_port", "4443")], "server.port", "turn.tls_port");
    let relay = "turn.relay_port_min..turn.relay_port_max";
    overlap_error(&[shards[0], ("media.port_base", "62000")], "media.port_base", relay);
    overlap_error(
        &[("turn.relay_port_min", "3000"), ("turn.relay_port_max", "4000")],
        "turn.port",
        relay,
    );
    // TCP beside UDP is no overlap: the HTTP port may sit on a media port's number.
    assert!(load(None, &[], &[shards[0], ("server.port", "40000")]).is_ok());
    // Addresses: relays on an address of their own may use any port; a wildcard meets all.
    let own = [("turn.relay_ips", "[\"127.0.5.1\"]"), ("turn.relay_port_min", "1024")];
    assert!(load(None, &[], &[own[0], own[1]]).is_ok());
    let wild = [own[0], own[1], ("media.bind_address", "0.0.0.0")];
    overlap_error(&wild, "media.port_base", relay);
    overlap_error(
        &[("server.address", "0.0.0.0"), ("turn.tls_port", "4443")],
        "server.port",
        "turn.tls_port",
    );
    assert!(load(None, &[], &[("server.address", "127.0.0.2"), ("turn.tls_port", "4443")]).is_ok());
    // Ranges that are off are not planned.
    assert!(load(None, &[], &[("turn.enabled", "false"), ("server.port", "3478")]).is_ok());
    assert!(
        load(None, &[], &[shards[0], ("turn.shard_ports", "false"), ("turn.port", "40003")])
            .is_ok()
    );
}

/// The bug of the first wave: a shard thread pinned to one CPU asked `available_parallelism()`
/// again, saw 1 CPU and took the next shard's media port for its TURN port.
#[test]
fn a_pinned_thread_sees_the_same_shards_and_ports() {
    let c = load(None, &[], &[]).unwrap();
    let here = (c.effective_shards(), c.turn_shard_port(0), c.port_plan().unwrap());
    let c2 = c.clone();
    let there = std::thread::spawn(move || {
        // SAFETY: all-zero is a valid cpu_set_t; CPU 0 is below CPU_SETSIZE.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(0, &mut set) };
        // SAFETY: valid pointer and size; 0 = this thread. A failure leaves it unpinned.
        let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        (c2.effective_shards(), c2.turn_shard_port(0), c2.port_plan().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(here, there);
    assert_eq!(c.effective_shards(), c.machine.cpus);
}

#[test]
fn check_config_shows_the_resolved_shards() {
    let mut c = load(None, &[], &[]).unwrap();
    c.machine = Machine::fixed(3);
    let text = c.to_masked_toml();
    assert!(text.contains("\nshards = 3  # auto: 3 CPUs\n"), "{text}");
    assert!(text.contains("# port: media UDP 40000-40002  (media.port_base)"), "{text}");
    let t: toml::Table = text.parse().expect("still TOML");
    assert_eq!(t["media"]["shards"].as_integer(), Some(3));
    let c = load(None, &[], &[("media.shards", "16")]).unwrap();
    assert!(c.to_masked_toml().contains("\nshards = 16\n"));
}

#[test]
fn recording_section_from_file_env_and_defaults() {
    let c = load(None, &[], &[]).unwrap();
    assert!(c.recording.enabled, "the dev default records");
    assert_eq!(c.recording.path, "recordings");
    assert_eq!(c.recording.notification, "publisher_moderator");
    assert_eq!(c.recording.autostop_timeout, 120);
    assert!(!c.recording.public_access);
    let file = "[recording]\nenabled = false\npath = \"/srv/rec\"\nautostop_timeout = 5\n";
    let c = load(Some(file), &[], &[]).unwrap();
    assert_eq!((c.recording.enabled, c.recording.path.as_str()), (false, "/srv/rec"));
    assert_eq!(c.recording.autostop_timeout, 5);
    let c = load(
        Some(file),
        &[
            ("OPENVIDU_RECORDING", "true"),
            ("OPENVIDU_RECORDING_PATH", "/var/lib/ringsfu/recordings"),
            ("OPENVIDU_RECORDING_PUBLIC_ACCESS", "true"),
            ("OPENVIDU_RECORDING_NOTIFICATION", "all"),
            ("OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT", "0"),
        ],
        &[],
    )
    .unwrap();
    assert!(c.recording.enabled && c.recording.public_access);
    assert_eq!(c.recording.path, "/var/lib/ringsfu/recordings");
    assert_eq!(c.recording.notification, "all");
    assert_eq!(c.recording.autostop_timeout, 0);
    let c = load(None, &[("RINGSFU_RECORDING_NOTIFICATION", "moderator")], &[]).unwrap();
    assert_eq!(c.recording.notification, "moderator");
    let e = load(None, &[("OPENVIDU_RECORDING_NOTIFICATION", "everyone")], &[]).unwrap_err();
    assert_eq!(e.key, "recording.notification");
    let e = load(None, &[("OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT", "-1")], &[]).unwrap_err();
    assert_eq!(e.key, "recording.autostop_timeout");
    let e = load(None, &[], &[("recording.path", "")]).unwrap_err();
    assert_eq!(e.key, "recording.path");
}

#[test]
fn recording_composer_path_must_be_an_executable() {
    let c = load(None, &[], &[]).unwrap();
    assert_eq!(c.recording.composer_path, "", "default: the one beside the executable");
    let c = load(None, &[("RINGSFU_RECORDING_COMPOSER_PATH", "/bin/sh")], &[]).unwrap();
    assert_eq!(c.recording.composer_path, "/bin/sh");
    let c = load(Some("[recording]\ncomposer_path = \"/bin/sh\"\n"), &[], &[]).unwrap();
    assert_eq!(c.recording.composer_path, "/bin/sh");
    for bad in ["/nonexistent/ringsfu-composer", "/tmp"] {
        let e = load(None, &[("RINGSFU_RECORDING_COMPOSER_PATH", bad)], &[]).unwrap_err();
        assert_eq!(e.key, "recording.composer_path", "{bad}");
    }
}

#[test]
fn cluster_keys_are_checked_and_off_by_default() {
    let base = Config::default();
    assert!(!base.cluster.enabled());
    base.validate().unwrap();
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        c.cluster.redis_url = "redis://127.0.0.1:6379".into();
        c.cluster.internal_address = "10.0.0.5:4500".into();
        c.cluster.internal_secret = "0123456789abcdef".into();
        f(&mut c);
        c.validate().map_err(|e| e.key)
    };
    assert_eq!(with(&|_| {}), Ok(()));
    assert_eq!(with(&|c| c.cluster.redis_url = "http://x".into()), Err("cluster.redis_url".into()));
    assert_eq!(with(&|c| c.cluster.redis_url = "rediss://:pw@h:6380/1".into()), Ok(()));
    assert_eq!(
        with(&|c| c.cluster.internal_address = "".into()),
        Err("cluster.internal_address".into())
    );
    assert_eq!(
        with(&|c| c.cluster.internal_address = "0.0.0.0:4500".into()),
        Err("cluster.internal_address".into())
    );
    assert_eq!(
        with(&|c| c.cluster.internal_secret = "short".into()),
        Err("cluster.internal_secret".into())
    );
    assert_eq!(with(&|c| c.cluster.lease = 1), Err("cluster.lease".into()));
    assert_eq!(with(&|c| c.cluster.node_ttl = 10), Err("cluster.node_ttl".into()));
    assert_eq!(with(&|c| c.cluster.node_id = "a b".into()), Err("cluster.node_id".into()));
    assert_eq!(with(&|c| c.cluster.spill_after = 10), Ok(()));
    assert_eq!(
        with(&|c| {
            c.cluster.spill_after = 10;
            c.media.bind_address = "0.0.0.0".parse().unwrap();
        }),
        Err("cluster.spill_after".into())
    );
    let mut c = Config::default();
    c.cluster.internal_address = "10.0.0.5:4500".into();
    assert_eq!(c.cluster.node_id(), "10.0.0.5:4500");
    // The password of a Redis URL is masked in --check-config.
    c.cluster.redis_url = "redis://user:hunter2@h:6379".into();
    let shown = c.to_masked_toml();
    assert!(!shown.contains("hunter2") && shown.contains("redis://user:********@h:6379"));
}
