//! Camera producers: a publisher fed from a ring instead of a WebRTC transport (IP cameras,
//! `crate::ingest`).
//!
//! The ingest thread writes plaintext RTP packets (one [`IngestPacket`] slot each, the track's
//! index beside it) into a bounded wait-free SPSC ring (`rtrb`) and wakes the camera's shard
//! once per batch (one access unit or audio frame: [`IngestWriter::flush`], the shard's
//! command eventfd, as the shard mesh does). The shard drains the ring with its mesh messages
//! (one packet per call, inside the turn's work budget) and hands each packet to the camera's
//! [`Producer`] exactly as a decrypted browser packet: router tracks, retransmission ring,
//! keyframe limiter, mirrors on other shards and recorders all work unchanged.
//!
//! The producer's peer has a transport only because every peer has one: it is never routed
//! (no ufrag, no address) and stays marked failed, so the timers skip it and the feedback a
//! browser publisher would get (receiver reports, NACKs, PLIs) is never written. Keyframe
//! requests of subscribers therefore stop here: an RTSP camera has no way to be asked for one
//! (see `crate::ingest::rtsp`).
//!
//! No allocation or I/O per packet on the shard: a packet is moved out of its slot onto the
//! stack and parsed there. A full ring drops the packet on the writer's side (counted there).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtrb::{Consumer, Producer as RingTx, RingBuffer};

use super::core::{MediaCore, Role};
use super::egress::Egress;
use super::producer::{Producer, Rid, Seen};
use super::stats::MediaDrop;
use super::{IceParams, InTrack, PeerId};
use crate::dtls::{DtlsRole, Fingerprint, FingerprintAlg};
use crate::shard::mesh::ShardWake;
use crate::wire::rtp::RtpView;

/// Largest packet a slot holds.
pub const INGEST_MTU: usize = 1500;

/// Packets a camera's ring holds: ~0.5 s of a 4 Mbit/s camera.
pub const INGEST_RING: usize = 256;

/// One packet in a camera's ring (its SSRC names its track in the producer).
#[derive(Clone, Copy)]
pub struct IngestPacket {
    len: u16,
    data: [u8; INGEST_MTU],
}

/// The writing end of a camera's ring (the ingest thread's).
pub struct IngestWriter {
    tx: RingTx<IngestPacket>,
    wake: Option<ShardWake>,
    written: bool,
    /// Packets dropped because the ring was full.
    pub dropped: u64,
}

impl IngestWriter {
    /// Writes one packet with `fill` (given the slot, returns the length): false when the
    /// ring is full (counted in `dropped`) or `fill` wrote nothing.
    pub fn push(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.tx.is_full() {
            self.dropped += 1;
            return false;
        }
        let mut p = IngestPacket { len: 0, data: [0; INGEST_MTU] };
        let Some(n) = fill(&mut p.data).filter(|&n| n <= INGEST_MTU) else { return false };
        p.len = n as u16;
        let ok = self.tx.push(p).is_ok();
        self.written |= ok;
        ok
    }

    /// Wakes the shard if packets were written since the last call (once per batch).
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.written)
            && let Some(w) = &self.wake
        {
            w.wake();
        }
    }

    /// The shard let the producer go (the stream was unpublished).
    pub fn is_abandoned(&self) -> bool {
        self.tx.is_abandoned()
    }
}

/// The reading end on its way to the shard inside a [`super::ShardCommand`] (commands are
/// `Clone`; the shard takes it out once).
#[derive(Clone)]
pub struct IngestFeed(Arc<Mutex<Option<Consumer<IngestPacket>>>>);

impl IngestFeed {
    fn take(&self) -> Option<Consumer<IngestPacket>> {
        // A poisoned cell only means a panic elsewhere while it was held: the ring is intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The reading end of a camera's ring outside a shard (tests). Not API.
#[doc(hidden)]
pub struct IngestReader(Consumer<IngestPacket>);

impl IngestReader {
    /// The next packet, if one waits.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let p = self.0.pop().ok()?;
        p.data.get(..usize::from(p.len)).map(<[u8]>::to_vec)
    }
}

impl IngestFeed {
    /// Takes the reading end for a test instead of a shard. Not API.
    #[doc(hidden)]
    pub fn into_reader(self) -> Option<IngestReader> {
        self.take().map(IngestReader)
    }
}

impl fmt::Debug for IngestFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IngestFeed")
    }
}

/// A camera's ring: the writer for the ingest thread (waking `wake`, the camera's shard) and
/// the feed for [`super::ShardCommand::AddIngest`].
pub fn ingest_ring(wake: Option<ShardWake>) -> (IngestWriter, IngestFeed) {
    let (tx, rx) = RingBuffer::new(INGEST_RING);
    let w = IngestWriter { tx, wake, written: false, dropped: 0 };
    (w, IngestFeed(Arc::new(Mutex::new(Some(rx)))))
}

/// One camera producer of this shard.
struct Tap {
    slot: u32,
    rx: Consumer<IngestPacket>,
}

/// The camera producers of a shard.
#[derive(Default)]
pub(super) struct Ingests {
    taps: Vec<Tap>,
    /// Where the next drain starts (round robin).
    next: usize,
}

impl MediaCore {
    /// A camera's producer: a peer that is never routed, its producer fed from `feed`.
    pub(super) fn add_ingest(
        &mut self,
        now: Instant,
        id: PeerId,
        tracks: Vec<InTrack>,
        feed: IngestFeed,
    ) {
        let Some(rx) = feed.take() else { return };
        // Credentials nobody knows; removed from the routes right away.
        let ice = IceParams {
            local_ufrag: format!("ingest-{}", id.0),
            local_pwd: String::new(),
            remote_ufrag: String::new(),
        };
        let fp = Fingerprint::of_der(FingerprintAlg::Sha256, &[]);
        let Some(slot) = self.insert_peer(now, id, &ice, fp, DtlsRole::Server) else { return };
        self.routes.by_ufrag.remove(ice.local_ufrag.as_str());
        let producer = Producer::new(&mut self.router, tracks, now, &self.settings);
        if let Some(peer) = self.peers.get_mut(slot as usize).and_then(Option::as_mut) {
            peer.role = Role::Publisher(producer);
            peer.transport.placeholder = true;
        }
        self.ingests.taps.push(Tap { slot, rx });
    }

    /// The peer in `slot` is gone: its ring (if a camera's) is dropped, which the ingest
    /// thread sees.
    pub(super) fn drop_ingest(&mut self, slot: u32) {
        self.ingests.taps.retain(|t| t.slot != slot);
    }

    /// Whether packets of a camera wait.
    pub(super) fn has_ingest_input(&self) -> bool {
        self.ingests.taps.iter().any(|t| !t.rx.is_empty())
    }

    /// Forwards one waiting camera packet (round robin over the cameras); false when none
    /// waits.
    pub(super) fn drain_ingest(&mut self, now: Instant, tx: &mut Egress<'_>) -> bool {
        let n = self.ingests.taps.len();
        let start = self.ingests.next;
        let mut found = None;
        for k in 0..n {
            let i = (start + k) % n;
            if let Some(t) = self.ingests.taps.get_mut(i)
                && let Ok(p) = t.rx.pop()
            {
                found = Some((t.slot, p));
                self.ingests.next = i + 1;
                break;
            }
        }
        let Some((slot, mut p)) = found else { return false };
        self.on_ingest_packet(now, slot, &mut p, tx);
        true
    }

    fn on_ingest_packet(
        &mut self,
        now: Instant,
        slot: u32,
        p: &mut IngestPacket,
        tx: &mut Egress<'_>,
    ) {
        let arrival = now.saturating_duration_since(self.epoch);
        let len = usize::from(p.len).min(INGEST_MTU);
        let buf = &mut p.data[..];
        let Ok(seen) = RtpView::parse(&buf[..len]).map(|v| Seen {
            ssrc: v.ssrc(),
            pt: v.payload_type(),
            twcc_seq: None,
            rid: Rid::default(),
        }) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        let Some(Some(peer)) = self.peers.get_mut(slot as usize) else { return };
        let Role::Publisher(producer) = &mut peer.role else { return };
        let r = match producer.receive(buf, len, arrival, seen) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(reason) => return self.stats.count_drop(reason),
        };
        self.accepted(now, slot, &r, tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_drops_on_the_writer_and_a_dropped_reader_is_seen() {
        let (mut w, feed) = ingest_ring(None);
        for _ in 0..INGEST_RING {
            assert!(w.push(|b| Some(b.len())));
        }
        assert!(!w.push(|_| Some(1)));
        assert_eq!(w.dropped, 1);
        assert!(!w.is_abandoned());
        let mut rx = feed.take().unwrap();
        assert!(feed.take().is_none(), "taken once");
        assert_eq!(rx.pop().map(|p| p.len).ok(), Some(INGEST_MTU as u16));
        assert!(w.push(|_| Some(12)));
        assert!(!w.push(|_| None), "nothing written");
        drop(rx);
        assert!(w.is_abandoned());
    }
}
