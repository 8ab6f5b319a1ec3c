//! Environment variables and `section.key=value` overrides, turned into a TOML table shaped like
//! [`Config`](super::Config). Values are typed by the key's default value, so `OPENVIDU_SECRET=1234`
//! stays a string and `RINGSFU_MEDIA_SHARDS=x` fails with the key named.

use toml::{Table, Value};

use super::{Config, ConfigError, err};

/// OpenVidu 2 environment variables and the key each sets.
pub const OPENVIDU_ENV: &[(&str, &str)] = &[
    ("OPENVIDU_SECRET", "server.secret"),
    ("HTTPS_PORT", "server.port"),
    ("DOMAIN_OR_PUBLIC_IP", "server.public_host"),
    ("OPENVIDU_PUBLICURL", "server.public_url"),
    ("FORCE_PLAIN_HTTP", "tls.enabled"),
    ("CERTIFICATE_TYPE", "tls.self_signed"),
    ("COTURN_IP", "turn.public_ip"),
    ("COTURN_PORT", "turn.port"),
    ("COTURN_SHARED_SECRET_KEY", "turn.static_auth_secret"),
    ("OPENVIDU_WEBHOOK", "webhook.enabled"),
    ("OPENVIDU_WEBHOOK_ENDPOINT", "webhook.endpoint"),
    ("OPENVIDU_WEBHOOK_HEADERS", "webhook.headers"),
    ("OPENVIDU_WEBHOOK_EVENTS", "webhook.events"),
    ("OPENVIDU_STREAMS_FORCED_VIDEO_CODEC", "sessions.forced_video_codec"),
    ("OPENVIDU_STREAMS_ALLOW_TRANSCODING", "sessions.allow_transcoding"),
    ("OPENVIDU_STREAMS_VIDEO_MAX_RECV_BANDWIDTH", "sessions.video_max_recv_bandwidth"),
    ("OPENVIDU_STREAMS_VIDEO_MIN_RECV_BANDWIDTH", "sessions.video_min_recv_bandwidth"),
    ("OPENVIDU_STREAMS_VIDEO_MAX_SEND_BANDWIDTH", "sessions.video_max_send_bandwidth"),
    ("OPENVIDU_STREAMS_VIDEO_MIN_SEND_BANDWIDTH", "sessions.video_min_send_bandwidth"),
    ("OPENVIDU_SESSIONS_GARBAGE_INTERVAL", "sessions.garbage_interval"),
    ("OPENVIDU_SESSIONS_GARBAGE_THRESHOLD", "sessions.garbage_threshold"),
    ("OPENVIDU_WEBRTC_ICE_SERVERS", "sessions.ice_servers"),
    ("OPENVIDU_RECORDING", "recording.enabled"),
    ("OPENVIDU_WEBRTC_SIMULCAST", "media.simulcast"),
    ("OPENVIDU_RECORDING_PATH", "recording.path"),
    ("OPENVIDU_RECORDING_PUBLIC_ACCESS", "recording.public_access"),
    ("OPENVIDU_RECORDING_NOTIFICATION", "recording.notification"),
    ("OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT", "recording.autostop_timeout"),
];

fn defaults() -> Table {
    // Invariant: Config's Default serialises (all fields are plain data); tested below.
    Table::try_from(Config::default()).expect("default config serialises")
}

/// The optional keys (`Option` fields, absent from the serialised defaults while unset): all
/// are file paths, so strings.
const OPTIONAL_KEYS: &[(&str, &str)] = &[("tls", "cert"), ("tls", "key"), ("webhook", "ca_file")];

/// The template value of `section.key`, or None when the key does not exist. Optional keys
/// (absent from the serialised defaults) are typed as strings.
fn template(defaults: &Table, section: &str, key: &str) -> Option<Value> {
    let sec = defaults.get(section)?.as_table()?;
    match sec.get(key) {
        Some(v) => Some(v.clone()),
        None if OPTIONAL_KEYS.contains(&(section, key)) => Some(Value::String(String::new())),
        None => None,
    }
}

/// Parses `raw` into a value of the same TOML type as `like`.
fn typed(raw: &str, like: &Value) -> Result<Value, String> {
    let raw_t = raw.trim();
    match like {
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Boolean(_) => match raw_t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not a boolean (true/false)")),
        },
        Value::Integer(_) => raw_t
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Value::Float(_) => {
            raw_t.parse::<f64>().map(Value::Float).map_err(|_| format!("{raw:?} is not a number"))
        }
        Value::Array(_) => {
            if raw_t.is_empty() {
                return Ok(Value::Array(Vec::new()));
            }
            if raw_t.starts_with('[') {
                // A TOML or JSON array of strings.
                let doc = format!("v = {raw_t}");
                let parsed = doc.parse::<Table>().ok().and_then(|t| t.get("v").cloned());
                match parsed {
                    Some(Value::Array(items)) if items.iter().all(Value::is_str) => {
                        Ok(Value::Array(items))
                    }
                    _ => match serde_json::from_str::<Vec<String>>(raw_t) {
                        Ok(items) => {
                            Ok(Value::Array(items.into_iter().map(Value::String).collect()))
                        }
                        Err(_) => Err(format!("{raw:?} is not an array of strings")),
                    },
                }
            } else {
                Ok(Value::Array(
                    raw_t
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        Value::Table(_) | Value::Datetime(_) => Err("not settable from a string".into()),
    }
}

fn set(out: &mut Table, section: &str, key: &str, v: Value) {
    let sec = out.entry(section.to_string()).or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = sec {
        t.insert(key.to_string(), v);
    }
}

/// Builds the table that the environment contributes.
pub(super) fn overlay(vars: &[(String, String)]) -> Result<Table, ConfigError> {
    let defaults = defaults();
    let mut out = Table::new();
    // OpenVidu names first, RINGSFU_ names second so they win.
    for (name, key) in OPENVIDU_ENV {
        let Some((_, raw)) = vars.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let (section, k) = key.split_once('.').expect("keys in OPENVIDU_ENV are section.key");
        let bad = |m: String| err(key, format!("{m} (from environment variable {name})"));
        match *name {
            "FORCE_PLAIN_HTTP" => {
                let plain = typed(raw, &Value::Boolean(true)).map_err(bad)?;
                set(&mut out, "tls", "enabled", Value::Boolean(!plain.as_bool().unwrap_or(true)));
            }
            "CERTIFICATE_TYPE" => match raw.trim() {
                "selfsigned" => {
                    set(&mut out, "tls", "enabled", Value::Boolean(true));
                    set(&mut out, "tls", "self_signed", Value::Boolean(true));
                }
                "owncert" => set(&mut out, "tls", "enabled", Value::Boolean(true)),
                other => {
                    return Err(bad(format!(
                        "{other:?} is not supported (selfsigned or owncert; use a TLS terminator for letsencrypt)"
                    )));
                }
            },
            "DOMAIN_OR_PUBLIC_IP" => {
                set(&mut out, "server", "public_host", Value::String(raw.trim().to_string()));
                if let Ok(ip) = raw.trim().parse::<std::net::IpAddr>() {
                    set(
                        &mut out,
                        "media",
                        "public_ips",
                        Value::Array(vec![Value::String(ip.to_string())]),
                    );
                }
            }
            _ => {
                let like = template(&defaults, section, k).expect("OPENVIDU_ENV keys exist");
                set(&mut out, section, k, typed(raw, &like).map_err(bad)?);
            }
        }
    }
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("RINGSFU_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        // Only variables naming a configuration section are ours (RINGSFU_BIN and the like,
        // used by scripts around the server, are not); within a section a wrong key is an
        // error, so a typo never silently falls back to a default.
        let Some((section, key)) = lower.split_once('_') else { continue };
        if !defaults.get(section).is_some_and(Value::is_table) {
            continue;
        }
        let dotted = format!("{section}.{key}");
        let Some(like) = template(&defaults, section, key) else {
            return Err(err(&dotted, format!("unknown configuration variable {name}")));
        };
        let v = typed(raw, &like)
            .map_err(|m| err(&dotted, format!("{m} (from environment variable {name})")))?;
        set(&mut out, section, key, v);
    }
    Ok(out)
}

/// Builds the table of `section.key=value` overrides (CLI flags).
pub(super) fn overrides_table(pairs: &[(String, String)]) -> Result<Table, ConfigError> {
    let defaults = defaults();
    let mut out = Table::new();
    for (dotted, raw) in pairs {
        let Some((section, key)) = dotted.split_once('.') else {
            return Err(err(dotted, "want section.key"));
        };
        let Some(like) = template(&defaults, section, key) else {
            return Err(err(dotted, "unknown configuration key"));
        };
        let v =
            typed(raw, &like).map_err(|m| err(dotted, format!("{m} (from the command line)")))?;
        set(&mut out, section, key, v);
    }
    Ok(out)
}
