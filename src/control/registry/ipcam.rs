//! The registry's side of IP cameras (`control/ipcam.rs` drives it): which cameras exist and
//! how many subscribers each has, their media arriving (the stream gets its producer, or is
//! published again after a loss), their loss (the stream unpublished, the connection kept)
//! and their ingest status for the REST views.

use serde_json::{Value, json};

use super::{
    ConnectionType, Ms, PublishedMedia, Registry, media_hook_fields, participant_hook_short,
    stream_descriptor,
};

/// One IP camera connection as the ingest control loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcamView {
    pub session: String,
    pub connection: String,
    pub rtsp_uri: String,
    pub only_play_with_subscribers: bool,
    /// `networkCache`, milliseconds.
    pub network_cache: u64,
    pub adaptative_bitrate: bool,
    /// Connections subscribed to its stream (with or without a transport yet).
    pub subscribers: usize,
}

impl Registry {
    /// Every IP camera connection of every session.
    pub fn ipcams(&self) -> Vec<IpcamView> {
        let mut out = Vec::new();
        for s in self.sessions.values() {
            for c in s.connections.iter().filter(|c| c.props.kind == ConnectionType::IpCam) {
                let Some(uri) = &c.props.rtsp_uri else { continue };
                let stream = c.publisher.as_ref().map(|p| p.id.as_str());
                let subscribers = s
                    .connections
                    .iter()
                    .filter(|o| {
                        o.subscriptions.iter().any(|x| Some(x.stream_id.as_str()) == stream)
                    })
                    .count();
                out.push(IpcamView {
                    session: s.id.clone(),
                    connection: c.id.clone(),
                    rtsp_uri: uri.clone(),
                    only_play_with_subscribers: c.props.only_play_with_subscribers.unwrap_or(true),
                    network_cache: c.props.network_cache.unwrap_or(2000).max(0) as u64,
                    adaptative_bitrate: c.props.adaptative_bitrate.unwrap_or(true),
                    subscribers,
                });
            }
        }
        out
    }

    /// Camera `cid`'s media arrives through producer `media`: its stream gets it, or, after a
    /// loss, a new stream is published with it (`participantPublished`). Either way
    /// `webrtcConnectionCreated` (OUTBOUND). False when the connection is gone (the caller
    /// releases the producer).
    pub fn ipcam_ready(
        &mut self,
        session_id: &str,
        cid: &str,
        media: PublishedMedia,
        now: Ms,
    ) -> bool {
        let fresh = self.new_ipcam_stream(cid, now);
        let Some(session) = self.sessions.get_mut(session_id) else { return false };
        let others = session.active_rpcs_except(cid);
        let Some(conn) = session.connection_mut(cid) else { return false };
        let republished = conn.publisher.is_none();
        let peer = media.at.peer;
        let stream = conn.publisher.get_or_insert(fresh);
        let old = stream.transport.replace(media).map(|t| t.at).filter(|t| t.peer != peer);
        let stream = stream.clone();
        let conn = conn.clone();
        let session = session.clone();
        self.transports.insert(peer, (session_id.to_string(), cid.to_string()));
        self.release(old.into_iter().collect());
        if republished {
            let desc = json!({"id": cid, "createdAt": conn.active.as_ref().map(|a| a.active_at),
                "metadata": conn.full_metadata(), "streams": [stream_descriptor(&stream)]});
            self.notify(&others, "participantPublished", &desc);
        }
        let mut hook = participant_hook_short(&conn);
        hook["streamId"] = json!(stream.id);
        hook["connection"] = json!("OUTBOUND");
        media_hook_fields(&mut hook, &stream.media);
        self.webhook("webrtcConnectionCreated", &session, now, hook);
        true
    }

    /// Camera `cid` went away or never answered: its stream (if published) is unpublished
    /// with `reason`, its subscribers' legs and producer released; the connection stays.
    /// False when there was no stream.
    pub fn ipcam_lost(&mut self, session_id: &str, cid: &str, reason: &str, now: Ms) -> bool {
        let Some(session) = self.sessions.get(session_id) else { return false };
        let Some(owner) =
            session.connections.iter().position(|c| c.id == cid && c.publisher.is_some())
        else {
            return false;
        };
        self.unpublish_owned(session_id, owner, reason, false, now);
        true
    }

    /// Camera `cid`'s ingest status, shown as `ipcam` in its connection's JSON.
    pub fn set_ipcam_status(&mut self, session_id: &str, cid: &str, status: Value) {
        if let Some(c) = self.sessions.get_mut(session_id).and_then(|s| s.connection_mut(cid)) {
            c.ipcam_status = Some(status);
        }
    }
}
