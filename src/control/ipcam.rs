//! IP cameras on the control plane: a task on the control runtime keeps the ingest thread
//! ([`crate::ingest::rtsp`]) in step with the registry and carries the cameras' events back.
//!
//! Every 200 ms it compares the registry's IPCAM connections ([`Registry::ipcams`]) with the
//! cameras it runs: a new connection starts a camera (its session's home shard chosen now:
//! the producer goes there), a connection gone (deleted, evicted with its session) stops one,
//! and a change in a stream's subscriber count is passed on (`onlyPlayWithSubscribers`). A
//! poll rather than a hook in every path that adds or ends a subscription: those paths are
//! many, and a fifth of a second is nothing next to an RTSP connection's set-up.
//!
//! The camera's events: [`CameraEvent::Ready`] makes the producer (a
//! [`ShardCommand::AddIngest`] on the home shard) and gives the stream its transport, or
//! publishes a new stream after a loss; [`CameraEvent::Lost`] unpublishes the stream with
//! reason [`LOST_REASON`] and keeps the connection; [`CameraEvent::Status`] is shown as
//! `ipcam` in the connection's JSON.
//!
//! [`Registry::ipcams`]: super::registry::Registry::ipcams

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::registry::{PublishedMedia, TransportRef};
use super::{Inner, now_ms};
use crate::dtls::{Fingerprint, FingerprintAlg};
use crate::ingest::rtsp::{CameraConfig, CameraEvent, IngestCommand, IngestService};
use crate::ingest::{CameraLayout, pt};
use crate::media::{InTrack, MediaEngine, ShardCommand};
use crate::sdp::{Codec, ExtIds, MediaKind, NegotiatedMedia, VideoCodecPolicy};

/// The `reason` of a camera's stream unpublished because the camera went away or never
/// answered: OpenVidu's for a publisher whose network connection was lost.
pub const LOST_REASON: &str = "networkDisconnect";

/// How often the registry's cameras are looked at.
const RECONCILE: Duration = Duration::from_millis(200);

/// Starts the ingest thread and the task that drives it (inside the control runtime).
pub(super) fn start(inner: &Arc<Inner>, engine: Arc<MediaEngine>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = match IngestService::start(tx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the IP camera ingest thread");
            return;
        }
    };
    tokio::spawn(run(Arc::downgrade(inner), engine, service, rx));
}

/// A camera the ingest thread runs.
struct Running {
    key: u64,
    session: String,
    connection: String,
    home: usize,
    subscribers: usize,
}

async fn run(
    weak: Weak<Inner>,
    engine: Arc<MediaEngine>,
    service: IngestService,
    mut events: mpsc::UnboundedReceiver<CameraEvent>,
) {
    let mut cams: Vec<Running> = Vec::new();
    let mut next_key = 0u64;
    let mut tick = tokio::time::interval(RECONCILE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => {
                let (Some(ev), Some(inner)) = (ev, weak.upgrade()) else { return };
                apply(&inner, &engine, &cams, ev);
            }
            _ = tick.tick() => {
                let Some(inner) = weak.upgrade() else { return };
                reconcile(&inner, &engine, &service, &mut cams, &mut next_key);
            }
        }
    }
}

fn reconcile(
    inner: &Inner,
    engine: &MediaEngine,
    service: &IngestService,
    cams: &mut Vec<Running>,
    next_key: &mut u64,
) {
    let views = inner.with(|st| st.reg.ipcams());
    cams.retain(|c| {
        let keep = views.iter().any(|v| v.session == c.session && v.connection == c.connection);
        if !keep {
            tracing::info!(session = %c.session, connection = %c.connection, "IP camera stopped");
            service.send(IngestCommand::Stop { key: c.key });
        }
        keep
    });
    for v in views {
        if let Some(c) =
            cams.iter_mut().find(|c| c.session == v.session && c.connection == v.connection)
        {
            if c.subscribers != v.subscribers {
                c.subscribers = v.subscribers;
                service.send(IngestCommand::Demand { key: c.key, subscribers: v.subscribers });
            }
            continue;
        }
        let home = inner.with(|st| st.reg.media_home(&v.session, || engine.choose_home()));
        let Some(home) = home else { continue };
        *next_key += 1;
        let key = *next_key;
        let camera = CameraConfig {
            rtsp_uri: v.rtsp_uri.clone(),
            only_play_with_subscribers: v.only_play_with_subscribers,
            network_cache: Duration::from_millis(v.network_cache),
            adaptative_bitrate: v.adaptative_bitrate,
        };
        tracing::info!(session = %v.session, connection = %v.connection, shard = home, "IP camera started");
        service.send(IngestCommand::Start { key, camera, wake: engine.shard_wake(home) });
        if v.subscribers > 0 {
            service.send(IngestCommand::Demand { key, subscribers: v.subscribers });
        }
        cams.push(Running {
            key,
            session: v.session,
            connection: v.connection,
            home,
            subscribers: v.subscribers,
        });
    }
}

fn apply(inner: &Inner, engine: &MediaEngine, cams: &[Running], ev: CameraEvent) {
    let key = match &ev {
        CameraEvent::Ready { key, .. }
        | CameraEvent::Lost { key, .. }
        | CameraEvent::Status { key, .. } => *key,
    };
    let Some(c) = cams.iter().find(|c| c.key == key) else { return };
    let (session, cid) = (c.session.as_str(), c.connection.as_str());
    match ev {
        CameraEvent::Ready { layout, ssrcs, feed, .. } => {
            let negotiated = negotiated(&layout, &ssrcs);
            let tracks = negotiated.iter().map(InTrack::from_negotiated).collect();
            let peer = engine.new_peer_id();
            let cmd = ShardCommand::AddIngest { id: peer, tracks, feed };
            if let Err(e) = engine.send(c.home, cmd) {
                tracing::warn!(session, connection = cid, error = %e, "IP camera producer not created");
                return;
            }
            let media = PublishedMedia {
                at: TransportRef { peer, shard: c.home },
                negotiated,
                policy: VideoCodecPolicy::MediaServerPreferred,
                connection_of: (Fingerprint::of_der(FingerprintAlg::Sha256, &[]), 0),
            };
            if inner.with(|st| st.reg.ipcam_ready(session, cid, media, now_ms())) {
                tracing::info!(session, connection = cid, peer = peer.0, shard = c.home, video = ?layout.video, audio = ?layout.audio, "IP camera published");
            } else {
                engine.release(&[(peer, c.home)]);
            }
        }
        CameraEvent::Lost { error, .. } => {
            if inner.with(|st| st.reg.ipcam_lost(session, cid, LOST_REASON, now_ms())) {
                tracing::info!(session, connection = cid, %error, "IP camera stream unpublished");
            }
        }
        CameraEvent::Status { status, .. } => {
            let v = serde_json::to_value(status).unwrap_or_default();
            inner.with(|st| st.reg.set_ipcam_status(session, cid, v));
        }
    }
}

/// The m-lines a camera's producer is published with (what subscribers are offered): H.264
/// packetization-mode 1 with the camera's profile, and its audio format.
pub fn negotiated(layout: &CameraLayout, ssrcs: &[u32]) -> Vec<NegotiatedMedia> {
    let mut out = Vec::new();
    let mut ssrc = ssrcs.iter().copied();
    let fb = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if let Some(id) = &layout.video {
        let codec = Codec {
            pt: pt::H264,
            name: "H264".into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={id}"),
            rtcp_fb: fb(&["nack", "nack pli", "ccm fir", "goog-remb"]),
            rtx_pt: None,
        };
        out.push(track(out.len(), MediaKind::Video, codec, ssrc.next()));
    }
    if let Some(a) = layout.audio {
        let (name, clock_rate, channels) = a.rtpmap();
        let fmtp = if name == "opus" { "minptime=10;useinbandfec=1" } else { "" };
        let codec = Codec {
            pt: a.pt(),
            name: name.into(),
            clock_rate,
            channels,
            fmtp: fmtp.into(),
            rtcp_fb: Vec::new(),
            rtx_pt: None,
        };
        out.push(track(out.len(), MediaKind::Audio, codec, ssrc.next()));
    }
    out
}

fn track(index: usize, kind: MediaKind, codec: Codec, ssrc: Option<u32>) -> NegotiatedMedia {
    NegotiatedMedia {
        mid: index.to_string(),
        kind,
        codec,
        rtx_pt: None,
        ext: ExtIds::default(),
        ssrc,
        rtx_ssrc: None,
        rids: Vec::new(),
        simulcast: Vec::new(),
        rid_specs: Vec::new(),
        sim_ssrcs: Vec::new(),
        nack: false,
        pli: false,
        fir: false,
        remb: false,
        transport_cc: false,
        rcvr_rtt: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::AudioCodec;
    use crate::sdp::{LocalTransport, OutgoingTrack};

    #[test]
    fn subscribers_are_offered_the_cameras_profile_and_audio() {
        let layout = CameraLayout {
            video: Some("42e01e".into()),
            video_profile: Some("Constrained Baseline".into()),
            audio: Some(AudioCodec::Pcmu),
            notes: Vec::new(),
        };
        let neg = negotiated(&layout, &[11, 22]);
        assert_eq!(neg.len(), 2);
        assert_eq!((neg[0].kind, neg[0].ssrc), (MediaKind::Video, Some(11)));
        assert_eq!((neg[1].kind, neg[1].ssrc), (MediaKind::Audio, Some(22)));
        assert_eq!(InTrack::from_negotiated(&neg[1]).clock_rate, 8000);
        // A server offer (prepareReceiveVideoFrom) built from them, as for any stream.
        let tracks: Vec<OutgoingTrack> = neg
            .iter()
            .enumerate()
            .map(|(i, m)| OutgoingTrack {
                kind: m.kind,
                codec: m.codec.clone(),
                ssrc: 100 + i as u32,
                rtx_ssrc: 200 + i as u32,
                cname: "c".into(),
                stream_id: "str_IPC_X".into(),
                track_id: format!("t{i}"),
            })
            .collect();
        let local = LocalTransport {
            ice_ufrag: "uf".into(),
            ice_pwd: "p".repeat(24),
            fingerprint_sha256: "AB:CD".into(),
            candidates: vec!["127.0.0.1:5000".parse().unwrap()],
            session_id: 1,
            session_version: 2,
        };
        let offer = crate::sdp::offer_subscribe(&local, &tracks);
        let fmtp = offer.media[0].codec.fmtp.clone();
        assert!(fmtp.contains("profile-level-id=42e01e") && fmtp.contains("packetization-mode=1"));
        assert!(
            offer.sdp.contains("H264/90000") && offer.sdp.contains("PCMU/8000"),
            "{}",
            offer.sdp
        );
        assert!(offer.sdp.contains("profile-level-id=42e01e"), "{}", offer.sdp);
    }
}
