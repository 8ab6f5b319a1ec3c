//! Recorder consumers: a consumer whose transport is a ring to a recorder thread
//! ([`crate::record::writer`]) instead of a socket (INDIVIDUAL recording, issue 16).
//!
//! A recorder is attached to a publisher on the publisher's own shard (publishers live on
//! their session's home shard). Each packet the publisher's producer accepts (decrypted, RTX
//! put back together, in arrival order: the producer's own NACKs to the publisher repair the
//! losses, the recorder's reorder buffer waits for them) is copied once into the recorder's
//! ring, beside the fanout; sender reports follow for lip sync. The recorder thread asks for
//! keyframes (a PLI at once when it is attached, then its own rate-limited requests, drained
//! every tick); its NACK requests are not sent, since the producer already NACKs every gap.
//! The ring is woken once per loop turn ([`MediaCore::flush_mesh`]); a full ring drops the
//! packet (counted by the recorder's input and `recorder_dropped` in the shard stats).
//!
//! Detaching (the recording stopped) or removing the publisher drops the ring's input: the
//! recorder thread then writes what it has, closes the file and reports.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::PeerId;
use super::core::{MediaCore, Role};
use super::egress::Egress;
use super::stats::stat;
use crate::record::mkv::TrackKind;
use crate::record::writer::{RecorderInput, Request};
use crate::sdp::MediaKind;
use crate::wire::rtcp::sr;
use crate::wire::rtp::RtpView;

/// A recorder's input on its way to the shard inside a [`super::ShardCommand`] (commands are
/// `Clone`; the shard takes the input out once, when it attaches the recorder).
#[derive(Clone)]
pub struct RecorderFeed(Arc<Mutex<Option<RecorderInput>>>);

impl RecorderFeed {
    pub fn new(input: RecorderInput) -> RecorderFeed {
        RecorderFeed(Arc::new(Mutex::new(Some(input))))
    }

    fn take(&self) -> Option<RecorderInput> {
        // A poisoned cell only means a panic elsewhere while it was held: the input is intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl fmt::Debug for RecorderFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecorderFeed")
    }
}

/// One attached recorder.
pub(super) struct Tap {
    id: u64,
    /// The publisher's peer slot.
    publisher: u32,
    input: RecorderInput,
    /// What each producer track is to the recorder (by track index); `None`: not recorded.
    kinds: Vec<Option<TrackKind>>,
}

impl MediaCore {
    /// Attaches recorder `id` to `publisher` (on this shard) and asks for a keyframe at once.
    pub(super) fn attach_recorder(
        &mut self,
        publisher: PeerId,
        id: u64,
        feed: RecorderFeed,
        tx: &mut Egress<'_>,
    ) {
        let Some(input) = feed.take() else { return };
        let Some(&slot) = self.by_id.get(&publisher) else {
            // The publisher left before the recorder came: dropping the input ends it (empty).
            tracing::info!(?publisher, "recorder for a publisher that is gone");
            return;
        };
        let Some(Some(peer)) = self.peers.get(slot as usize) else { return };
        let Role::Publisher(p) = &peer.role else { return };
        // A simulcast track is recorded from its highest encoding only.
        let kinds = p
            .tracks
            .iter()
            .map(|t| {
                (usize::from(t.encoding) + 1 == t.cfg.encodings()).then_some(match t.cfg.kind {
                    MediaKind::Video => TrackKind::Video,
                    MediaKind::Audio => TrackKind::Audio,
                })
            })
            .collect::<Vec<_>>();
        let video: Vec<_> = p
            .tracks
            .iter()
            .zip(&kinds)
            .filter(|(t, k)| t.cfg.kind == MediaKind::Video && k.is_some())
            .map(|(t, _)| t.track)
            .collect();
        self.recorders.retain(|t| t.id != id);
        self.recorders.push(Tap { id, publisher: slot, input, kinds });
        for track in video {
            self.send_pli(publisher, track, true, tx);
        }
        self.update_gauges();
    }

    /// Detaches recorder `id`: its thread finishes the file.
    pub(super) fn detach_recorder(&mut self, id: u64) {
        self.recorders.retain(|t| t.id != id);
        self.update_gauges();
    }

    /// The publisher in `slot` is gone: its recorders finish.
    pub(super) fn drop_recorders_of(&mut self, slot: u32) {
        self.recorders.retain(|t| t.publisher != slot);
    }

    /// The publisher in `slot` started over on a new connection (new SSRCs, sequence numbers
    /// and timestamps): its recorders re-anchor the tracks and wait for a keyframe.
    pub(super) fn restart_recorders_of(&mut self, slot: u32) {
        for t in self.recorders.iter_mut().filter(|t| t.publisher == slot) {
            for k in t.kinds.iter().flatten() {
                t.input.push_restart(*k);
            }
        }
    }

    /// One accepted packet of track `index` of the publisher in `slot`, to its recorders.
    pub(super) fn copy_to_recorders(&mut self, slot: u32, index: usize, v: &RtpView<'_>) {
        let MediaCore { recorders, stats, .. } = self;
        for t in recorders.iter_mut().filter(|t| t.publisher == slot) {
            let Some(&Some(kind)) = t.kinds.get(index) else { continue };
            if !t.input.push(kind, v.sequence_number(), v.timestamp(), v.marker(), v.payload()) {
                stat!(stats, recorder_dropped);
            }
        }
    }

    /// A sender report of track `index` of the publisher in `slot`, to its recorders.
    pub(super) fn sr_to_recorders(&mut self, slot: u32, index: usize, info: &sr::SenderInfo) {
        for t in self.recorders.iter_mut().filter(|t| t.publisher == slot) {
            if let Some(&Some(kind)) = t.kinds.get(index) {
                t.input.push_sender_report(kind, info.ntp_time, info.rtp_timestamp);
            }
        }
    }

    /// Every tick while recorders run: their keyframe requests to the publishers, and the
    /// recorders whose thread ended (failed, or stopped) are let go. True while any runs.
    pub(super) fn recorder_tick(&mut self, tx: &mut Egress<'_>) -> bool {
        if self.recorders.is_empty() {
            return false;
        }
        let before = self.recorders.len();
        self.recorders.retain(|t| !t.input.is_finished());
        for i in 0..self.recorders.len() {
            let t = &mut self.recorders[i];
            let mut pli = false;
            while let Some(r) = t.input.poll_request() {
                // NACKs: the producer already asks the publisher for every gap.
                pli |= matches!(r, Request::Pli);
            }
            if pli {
                let slot = t.publisher;
                self.keyframes_for_recorder(slot, tx);
            }
        }
        if self.recorders.len() != before {
            self.update_gauges();
        }
        !self.recorders.is_empty()
    }

    /// A PLI to the publisher in `slot` for each of its video tracks, at once (the recorder
    /// limits its own requests).
    fn keyframes_for_recorder(&mut self, slot: u32, tx: &mut Egress<'_>) {
        let mut video = [None; 4];
        let Some(Some(peer)) = self.peers.get(slot as usize) else { return };
        let Role::Publisher(p) = &peer.role else { return };
        let id = peer.id;
        let tracks = p.tracks.iter().filter(|t| {
            t.cfg.kind == MediaKind::Video && usize::from(t.encoding) + 1 == t.cfg.encodings()
        });
        for (v, t) in video.iter_mut().zip(tracks) {
            *v = Some(t.track);
        }
        for track in video.into_iter().flatten() {
            self.send_pli(id, track, true, tx);
        }
    }

    /// Once per loop turn: wakes the recorder threads whose ring is filling up.
    pub(super) fn wake_recorders(&mut self) {
        for t in &mut self.recorders {
            t.input.wake();
        }
    }

    /// Recorders attached on this shard.
    pub(super) fn recorder_count(&self) -> usize {
        self.recorders.len()
    }
}
