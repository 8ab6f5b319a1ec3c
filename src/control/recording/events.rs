//! What the recordings read from the registry (its webhook outputs) and what they tell the
//! participants and the webhook: `recordingStarted` / `recordingStopped` to the roles
//! `recording.notification` names, `recordingId` / `recordingName` in joinRoom, and
//! `recordingStatusChanged`.

use serde_json::{Value, json};

use super::Ms;
use super::props::{Recording, Status};
use crate::control::registry::{Output, Role};
use crate::control::{Inner, State};

/// A registry event the recordings follow, read from the registry's webhook outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RegEvent {
    Created { session: String },
    Published { session: String, connection: String, stream: String },
    Unpublished { session: String, stream: String },
    Left { session: String, reason: String },
    Destroyed { session: String, reason: String },
}

/// The registry event a webhook body reports, if the recordings care.
pub(crate) fn observe(hook: &Value) -> Option<RegEvent> {
    let s = |k: &str| hook.get(k).and_then(Value::as_str).map(str::to_string);
    let session = s("sessionId")?;
    match hook.get("event")?.as_str()? {
        "webrtcConnectionCreated" if s("connection").as_deref() == Some("OUTBOUND") => {
            Some(RegEvent::Published {
                session,
                connection: s("connectionId")?,
                stream: s("streamId")?,
            })
        }
        "webrtcConnectionDestroyed" if s("connection").as_deref() == Some("OUTBOUND") => {
            Some(RegEvent::Unpublished { session, stream: s("streamId")? })
        }
        "sessionCreated" => Some(RegEvent::Created { session }),
        "participantLeft" => Some(RegEvent::Left { session, reason: s("reason")? }),
        "sessionDestroyed" => Some(RegEvent::Destroyed { session, reason: s("reason")? }),
        _ => None,
    }
}

/// The roles `recording.notification` names.
pub(crate) fn notified_roles(setting: &str) -> &'static [Role] {
    match setting {
        "none" => &[],
        "moderator" => &[Role::Moderator],
        "all" => &[Role::Subscriber, Role::Publisher, Role::Moderator],
        _ => &[Role::Publisher, Role::Moderator],
    }
}

/// `recordingStatusChanged` webhook body (OpenVidu's `CDREventRecordingStatusChanged`).
pub(super) fn status_hook(rec: &Recording, status: Status, reason: Option<&str>, now: Ms) -> Value {
    let mut v = json!({
        "event": "recordingStatusChanged",
        "sessionId": rec.session_id,
        "uniqueSessionId": rec.unique_session_id,
        "timestamp": now,
        "startTime": rec.created_at,
    });
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    let p = &rec.props;
    v["id"] = json!(rec.id);
    v["name"] = json!(p.name);
    v["outputMode"] = json!(p.output_mode.as_str());
    if p.output_mode.is_composed() && p.has_video {
        v["resolution"] = json!(p.resolution);
        v["frameRate"] = json!(p.frame_rate);
        v["recordingLayout"] = json!(p.recording_layout);
        if let Some(c) = p.custom_layout.as_ref().filter(|c| !c.is_empty()) {
            v["customLayout"] = json!(c);
        }
        if let Some(n) = &p.media_node {
            v["media_node_id"] = json!(n);
        }
    }
    v["hasAudio"] = json!(p.has_audio);
    v["hasVideo"] = json!(p.has_video);
    v["size"] = json!(rec.size);
    v["duration"] = json!(rec.duration);
    v["status"] = json!(status.as_str());
    v
}

/// Sends `method` to the session's active participants whose role is notified.
pub(super) fn notify_roles(
    inner: &Inner,
    st: &mut State,
    session: &str,
    method: &'static str,
    params: Value,
) {
    let roles = notified_roles(&inner.cfg.recording.notification);
    let Some(s) = st.reg.session(session) else { return };
    let to: Vec<String> = s
        .connections
        .iter()
        .filter(|c| roles.contains(&c.props.role))
        .filter_map(|c| c.active.as_ref().map(|a| a.rpc.clone()))
        .collect();
    if !to.is_empty() {
        st.reg.emit(Output::Notify { to, method, params });
    }
}

/// `recordingId` / `recordingName` of the joinRoom answer while the session is recorded and the
/// participant's role is notified.
pub(crate) fn join_fields(inner: &Inner, st: &State, session: &str, cid: &str, result: &mut Value) {
    let Some(rec) = st.rec.active_of(session) else { return };
    let Some(role) = st.reg.role(session, cid) else { return };
    if notified_roles(&inner.cfg.recording.notification).contains(&role) {
        result["recordingId"] = json!(rec.id);
        result["recordingName"] = json!(rec.props.name);
    }
}
