//! JSON views of the registry for the REST API: the Session (§2.2) and Connection (§2.6)
//! objects exactly as node-client reads them.

use serde_json::{Value, json};

use super::registry::{Connection, ConnectionType, RegistryConfig, Session};

/// The §2.6 Connection object.
pub fn connection_json(session: &Session, c: &Connection, stats: bool) -> Value {
    let ipcam = c.props.kind == ConnectionType::IpCam;
    let mut v = json!({
        "id": c.id,
        "object": "connection",
        "status": if c.active.is_some() { "active" } else { "pending" },
        "connectionId": c.id,
        "sessionId": session.id,
        "createdAt": c.created_at,
        "activeAt": Value::Null,
        "location": Value::Null,
        "ip": Value::Null,
        "platform": Value::Null,
        "token": c.token_url,
        "type": if ipcam { "IPCAM" } else { "WEBRTC" },
        "record": c.props.record,
        "role": if ipcam { Value::Null } else { json!(c.props.role.as_str()) },
        "kurentoOptions": if ipcam { Value::Null } else { c.props.kurento_options.clone().unwrap_or(Value::Null) },
        "customIceServers": c.props.custom_ice_servers,
        "rtspUri": c.props.rtsp_uri,
        "adaptativeBitrate": c.props.adaptative_bitrate,
        "onlyPlayWithSubscribers": c.props.only_play_with_subscribers,
        "networkCache": c.props.network_cache,
        "serverData": c.props.data,
        "clientData": Value::Null,
        "publishers": Value::Null,
        "subscribers": Value::Null,
    });
    if ipcam {
        // ringsfu's own: how the camera's ingest is doing (see README "IP cameras").
        v["ipcam"] = c.ipcam_status.clone().unwrap_or(Value::Null);
    }
    if let Some(a) = &c.active {
        v["activeAt"] = json!(a.active_at);
        v["location"] = json!(a.location);
        v["ip"] = json!(a.ip);
        v["platform"] = json!(a.platform);
        v["clientData"] = json!(a.client_data);
        let pubs: Vec<Value> = c
            .publisher
            .iter()
            .map(|s| {
                let m = &s.media;
                let mut mo =
                    json!({"hasAudio": m.has_audio, "hasVideo": m.has_video, "filter": m.filter});
                if m.has_audio {
                    mo["audioActive"] = json!(m.audio_active);
                }
                if m.has_video {
                    mo["videoActive"] = json!(m.video_active);
                    mo["typeOfVideo"] = json!(m.type_of_video);
                    mo["frameRate"] = json!(m.frame_rate);
                    mo["videoDimensions"] = json!(m.video_dimensions);
                }
                if ipcam {
                    mo["adaptativeBitrate"] = json!(c.props.adaptative_bitrate);
                    mo["onlyPlayWithSubscribers"] = json!(c.props.only_play_with_subscribers);
                    mo["networkCache"] = json!(c.props.network_cache);
                    mo["rtspUri"] = json!(c.props.rtsp_uri);
                }
                let mut p =
                    json!({"createdAt": s.created_at, "streamId": s.id, "mediaOptions": mo});
                if stats {
                    add_stats_keys(&mut p, &s.id, None);
                }
                p
            })
            .collect();
        let subs: Vec<Value> = c
            .subscriptions
            .iter()
            .map(|s| {
                let mut v = json!({"createdAt": s.created_at, "streamId": s.stream_id});
                if stats {
                    let publisher = session.stream(&s.stream_id).map(|(p, _)| p.id.clone());
                    add_stats_keys(
                        &mut v,
                        &format!("{}_{}", c.id, s.stream_id),
                        Some(publisher.unwrap_or_default()),
                    );
                }
                v
            })
            .collect();
        v["publishers"] = Value::Array(pubs);
        v["subscribers"] = Value::Array(subs);
    }
    v
}

fn add_stats_keys(v: &mut Value, endpoint: &str, publisher: Option<String>) {
    v["webrtcEndpointName"] = json!(endpoint);
    v["remoteSdp"] = json!("");
    v["localSdp"] = json!("");
    v["clientIceCandidates"] = json!([]);
    v["serverIceCandidates"] = json!([]);
    v["localCandidate"] = json!("");
    v["remoteCandidate"] = json!("");
    v["events"] = json!([]);
    if let Some(p) = publisher {
        v["publisher"] = json!(p);
    }
}

/// `{"numberOfElements", "content"}` of a session's connections (pending ones only with
/// `pending`; the debug keys with `stats`).
pub fn connections_json(s: &Session, pending: bool, stats: bool) -> Value {
    let content: Vec<Value> = s
        .connections
        .iter()
        .filter(|c| pending || c.active.is_some())
        .map(|c| connection_json(s, c, stats))
        .collect();
    json!({"numberOfElements": content.len(), "content": content})
}

/// The §2.2 Session object. `pending`: include pending connections.
pub fn session_json(s: &Session, cfg: &RegistryConfig, pending: bool, stats: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "object": "session",
        "sessionId": s.id,
        "createdAt": s.created_at,
        "recording": s.recording.is_some(),
        "broadcasting": false,
        "mediaMode": s.props.media_mode,
        "recordingMode": s.props.recording_mode,
        "defaultRecordingProperties": s.props.default_recording_properties,
        "customSessionId": s.props.custom_session_id,
        "forcedVideoCodec": s.props.forced_video_codec.clone().unwrap_or_else(|| cfg.forced_video_codec.clone()),
        "allowTranscoding": s.props.allow_transcoding.unwrap_or(cfg.allow_transcoding),
        "connections": connections_json(s, pending, stats),
    });
    if let Some(m) = &s.props.media_node {
        v["mediaNode"] = m.clone();
    }
    v
}
