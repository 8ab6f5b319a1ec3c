//! Per-consumer layer selection for simulcast and SVC, sans-IO and allocation-free:
//! [`LayerSelector`] decides which packets a consumer gets, [`SeqTsRewriter`] makes what it
//! gets look like one continuous stream (one SSRC, sequence numbers, timestamps, VP8/VP9
//! picture id and TL0PICIDX).
//!
//! Per publisher packet, for one consumer:
//! 1. Inspect the payload once per packet ([`crate::wire::codec::inspect`]; with the AV1
//!    Dependency Descriptor, [`DdPacket::apply_to`](crate::wire::codec::av1_dd::DdPacket::apply_to)
//!    puts its layer ids, frame start/end and switch points into the [`PacketInfo`]).
//! 2. [`LayerSelector::on_packet`] gives a [`Verdict`]: forward (with the marker bit to send)
//!    or drop (why), and maybe "ask encoding k for a keyframe" (rate-limited per encoding).
//! 3. Forward: [`SeqTsRewriter::forward`] gives the outgoing seq, timestamp, picture id and
//!    TL0PICIDX ([`Rewrite::apply`] writes them). A drop whose reason is a layer of the current
//!    encoding ([`DropReason::in_current`]): [`SeqTsRewriter::dropped`], so it leaves no hole.
//! 4. A NACK for an outgoing seq: [`SeqTsRewriter::source_of`] maps it back to the encoding,
//!    SSRC and publisher seq of the stored packet (and the timestamp offset to resend it with).
//!
//! Switching rules. Simulcast encodings are independent streams, so the decoder can only
//! change encoding at a keyframe of the new one, up or down: a switch down asks for the lower
//! encoding's keyframe at once and keeps forwarding the current encoding until it comes (a
//! delta frame of another encoding would corrupt the picture). Temporal layers go down at the
//! next picture start and up at a keyframe or a layer-sync frame (VP8 Y, VP9 U; with the AV1
//! Dependency Descriptor, a frame whose indication for a higher temporal layer's decode target
//! is Switch, up to that layer). VP9 k-SVC (and AV1 L3T3_KEY, by its descriptor's ids)
//! spatial layers go down at the next picture start (spatial ids above the target dropped)
//! and up at a key picture (in k-SVC only key pictures let an upper layer start; switching
//! within a picture would also leave the marker on a lower layer). A layer frame is forwarded
//! or dropped whole, decided by its first packet; a packet older than the newest of its
//! encoding (reordered) changes no state and passes only the layers forwarded both before and
//! after the last change.
//!
//! Marker bit: dropping the top spatial layer removes the packet that carried the marker. In
//! k-SVC each layer frame's last packet has E set, so the outgoing marker is the incoming one
//! OR (E set AND the packet's spatial id is the highest forwarded one).
//!
//! Sequence numbers: out = in + offset; a dropped in-order packet lowers the offset of what
//! follows by one, so drops leave no holes while input gaps (real losses) stay gaps that the
//! subscriber NACKs. The offset change points are kept in a fixed ring ([`SEQ_HISTORY`]) so
//! late packets and NACKs map with the offset of their time. A late packet of a dropped layer
//! cannot be taken back: its slot stays a hole, and [`SeqTsRewriter::source_of`] maps it to
//! nothing (the last [`LATE_DROPS`] of them). On an encoding switch, seq continues from the
//! last sent + 1, the timestamp from the last sent plus the arrival time elapsed since
//! (at least one tick), picture id from the last + 1 and TL0PICIDX from the last + 1 (a
//! keyframe is a TL0 frame). Dropped temporal-layer pictures lower the picture id offset the
//! same way, so the receiver does not take a dropped picture for a lost one.

use std::time::{Duration, Instant};

use crate::router::{SeqExtender, TrackId};
use crate::wire::WireError;
use crate::wire::codec::av1_dd::{self, DdStructure};
use crate::wire::codec::{Codec, PacketInfo, PictureId, vp8, vp9};
use crate::wire::rtp::RtpRewriter;

/// The last AV1 Dependency Descriptor structure of each router track (a keyframe's descriptor
/// carries it; the packets after it refer to its templates). Boxed: a structure is a few KiB.
#[derive(Default)]
pub struct DdStructures {
    by_track: Vec<Option<Box<DdStructure>>>,
}

impl DdStructures {
    /// Reads descriptor `dd` of a packet of `track` into `info` (layer ids, frame start and end,
    /// switch points), keeping the structure it carries. A descriptor that does not parse
    /// changes nothing.
    pub fn apply(&mut self, track: TrackId, dd: &[u8], info: &mut PacketInfo) {
        let i = track.0 as usize;
        if self.by_track.len() <= i {
            self.by_track.resize_with(i + 1, || None);
        }
        let Some(slot) = self.by_track.get_mut(i) else { return };
        let Ok(mut p) = av1_dd::parse(dd, slot.as_deref()) else { return };
        if let Some(s) = p.new_structure.take() {
            *slot = Some(Box::new(s));
        }
        p.apply_to(info);
        if p.spatial_id.is_some() {
            info.switch_temporal = slot.as_deref().and_then(|s| p.switch_temporal(s));
        }
    }

    /// The structure last seen on `track`.
    pub fn get(&self, track: TrackId) -> Option<&DdStructure> {
        self.by_track.get(track.0 as usize)?.as_deref()
    }

    /// Forgets `track`'s structure (a new stream on a reused router track).
    pub fn forget(&mut self, track: TrackId) {
        if let Some(s) = self.by_track.get_mut(track.0 as usize) {
            *s = None;
        }
    }
}

/// Encodings (simulcast rids) a selector handles.
pub const MAX_ENCODINGS: usize = 4;
/// Sequence-offset change points kept for late packets and NACKs.
pub const SEQ_HISTORY: usize = 128;
/// Picture-id offset change points kept.
pub const PIC_HISTORY: usize = 32;
/// Outgoing seqs of late packets of dropped layers remembered (NACKs for them get nothing).
pub const LATE_DROPS: usize = 32;

/// What a consumer wants or gets: a simulcast encoding (rid index, 0 = lowest) and the
/// highest spatial and temporal id forwarded within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerTarget {
    pub encoding: u8,
    pub spatial: u8,
    pub temporal: u8,
}

/// The RTP header facts of one publisher packet the layer code needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Simulcast encoding index (rid index; 0 for a single-encoding stream).
    pub encoding: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// Why a packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No keyframe yet to start with.
    Waiting,
    /// A packet of an encoding other than the forwarded one.
    OtherEncoding,
    /// A spatial layer above the forwarded one.
    Spatial,
    /// A temporal layer above the forwarded one.
    Temporal,
    /// Encoding index beyond [`MAX_ENCODINGS`].
    BadEncoding,
}

impl DropReason {
    /// True when the packet belongs to the forwarded encoding: tell [`SeqTsRewriter::dropped`].
    pub fn in_current(self) -> bool {
        matches!(self, DropReason::Spatial | DropReason::Temporal)
    }
}

/// Forward or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward with this marker bit; `switched` when the packet starts a new encoding (pass it
    /// to [`SeqTsRewriter::forward`]).
    Forward {
        marker: bool,
        switched: bool,
    },
    Drop(DropReason),
}

/// What [`LayerSelector::on_packet`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// Send a PLI for this encoding (its SSRC) now.
    pub keyframe_request: Option<u8>,
}

/// Chooses, per consumer, what to forward of a simulcast / SVC publisher (see the module doc).
#[derive(Debug, Clone)]
pub struct LayerSelector {
    target: LayerTarget,
    current: Option<LayerTarget>,
    keyframe_interval: Duration,
    last_request: [Option<Instant>; MAX_ENCODINGS],
    switches: u64,
    /// Newest sequence number seen per encoding (older packets are late).
    highest_seq: [Option<u16>; MAX_ENCODINGS],
    /// The layer frame being dropped whole: its timestamp, spatial id and why.
    skipping: Option<(u32, u8, DropReason)>,
    /// The last layer change within the encoding: at which seq, and the layers before it.
    change: Option<(u16, u8, u8)>,
}

impl LayerSelector {
    /// A selector aiming at `target`, asking a given encoding for a keyframe at most once per
    /// `keyframe_interval`.
    pub fn new(target: LayerTarget, keyframe_interval: Duration) -> LayerSelector {
        LayerSelector {
            target,
            current: None,
            keyframe_interval,
            last_request: [None; MAX_ENCODINGS],
            switches: 0,
            highest_seq: [None; MAX_ENCODINGS],
            skipping: None,
            change: None,
        }
    }

    /// Changes the target; the switch happens on the packets that follow.
    pub fn set_target(&mut self, target: LayerTarget) {
        self.target = target;
    }

    pub fn target(&self) -> LayerTarget {
        self.target
    }

    /// What is forwarded now (`None` until the first keyframe).
    pub fn current(&self) -> Option<LayerTarget> {
        self.current
    }

    /// Encoding, spatial and temporal layer changes so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    fn request(&mut self, now: Instant, enc: u8) -> Option<u8> {
        let slot = self.last_request.get_mut(enc as usize)?;
        if slot.is_some_and(|t| now.saturating_duration_since(t) < self.keyframe_interval) {
            return None;
        }
        *slot = Some(now);
        Some(enc)
    }

    /// Decides for one publisher packet (see the module doc for the rules).
    pub fn on_packet(&mut self, now: Instant, p: &PacketMeta, info: &PacketInfo) -> Verdict {
        let tgt = self.target;
        let enc = p.encoding;
        let Some(hi) = self.highest_seq.get_mut(enc as usize) else {
            let action = Action::Drop(DropReason::BadEncoding);
            return Verdict { action, keyframe_request: None };
        };
        // A packet older than the newest of its encoding changes nothing, it is only filtered.
        let late = hi.is_some_and(|h| (p.seq.wrapping_sub(h) as i16) <= 0);
        if !late {
            *hi = Some(p.seq);
        }
        let fresh = LayerTarget { encoding: enc, spatial: tgt.spatial, temporal: tgt.temporal };
        let mut switched = false;
        let mut cur = match self.current {
            None if info.keyframe && !late && enc <= tgt.encoding => {
                switched = true;
                fresh
            }
            None => {
                let kf = self.request(now, tgt.encoding);
                return Verdict { action: Action::Drop(DropReason::Waiting), keyframe_request: kf };
            }
            Some(cur) if cur.encoding != enc => {
                let closer = if tgt.encoding > cur.encoding {
                    enc > cur.encoding && enc <= tgt.encoding
                } else {
                    enc < cur.encoding && enc >= tgt.encoding
                };
                if info.keyframe && !late && closer {
                    switched = true;
                    fresh
                } else {
                    let kf = if tgt.encoding != cur.encoding {
                        self.request(now, tgt.encoding)
                    } else {
                        None
                    };
                    let action = Action::Drop(DropReason::OtherEncoding);
                    return Verdict { action, keyframe_request: kf };
                }
            }
            Some(cur) => cur,
        };
        if switched {
            self.skipping = None;
            self.change = None;
        }
        let sid = info.spatial_id.unwrap_or(0);
        let tid = info.temporal_id.unwrap_or(0);
        let top_layer_end = |top: u8| info.spatial_id.is_some() && info.frame_end && sid == top;
        if late {
            // Sent before the last layer change: only what both sides of the change forward.
            let (ms, mt) = match self.change {
                Some((at, s, t)) if (at.wrapping_sub(p.seq) as i16) > 0 => {
                    (s.min(cur.spatial), t.min(cur.temporal))
                }
                _ => (cur.spatial, cur.temporal),
            };
            let action = if sid > ms {
                Action::Drop(DropReason::Spatial)
            } else if tid > mt {
                Action::Drop(DropReason::Temporal)
            } else {
                Action::Forward { marker: p.marker || top_layer_end(ms), switched: false }
            };
            return Verdict { action, keyframe_request: None };
        }
        let before = cur;
        let picture_start = info.frame_start && sid == 0;
        if picture_start {
            if tgt.spatial < cur.spatial || (info.keyframe && tgt.spatial > cur.spatial) {
                cur.spatial = tgt.spatial;
            }
            if tgt.temporal < cur.temporal || (info.keyframe && tgt.temporal > cur.temporal) {
                cur.temporal = tgt.temporal;
            } else if let Some(up) = info.switch_temporal {
                // A Dependency Descriptor's switch point: up to the highest target it opens.
                if tgt.temporal > cur.temporal && up > cur.temporal {
                    cur.temporal = up.min(tgt.temporal);
                }
            } else if tgt.temporal > cur.temporal
                && info.layer_sync
                && tid > cur.temporal
                && tid <= tgt.temporal
            {
                cur.temporal = tid;
            }
        }
        if switched || cur != before {
            self.switches += 1;
        }
        if !switched && cur != before {
            self.change = Some((p.seq, before.spatial, before.temporal));
        }
        self.current = Some(cur);
        let mut kf = None;
        if cur.encoding != tgt.encoding {
            kf = self.request(now, tgt.encoding);
        }
        let layer_drop = if sid > cur.spatial {
            if tgt.spatial > cur.spatial && kf.is_none() {
                kf = self.request(now, cur.encoding);
            }
            Some(DropReason::Spatial)
        } else if tid > cur.temporal {
            Some(DropReason::Temporal)
        } else {
            None
        };
        // A layer frame is forwarded or dropped whole: its first packet decides for the rest
        // (the same timestamp and spatial id), so a switch never starts mid-frame.
        if info.frame_start {
            self.skipping = layer_drop.map(|r| (p.timestamp, sid, r));
        }
        let skip = match self.skipping {
            Some((ts, s, r)) if !info.frame_start && ts == p.timestamp && s == sid => Some(r),
            _ => None,
        };
        let action = match layer_drop.or(skip) {
            Some(r) => Action::Drop(r),
            None => Action::Forward { marker: p.marker || top_layer_end(cur.spatial), switched },
        };
        Verdict { action, keyframe_request: kf }
    }
}

/// The outgoing header fields of one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// The picture id to write (15 bits; a 7-bit descriptor keeps it modulo 128).
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
}

impl Rewrite {
    /// Writes SSRC, seq, timestamp, `marker` and (VP8/VP9) picture id and TL0PICIDX into a
    /// whole RTP packet in place.
    pub fn apply(&self, codec: Codec, packet: &mut [u8], marker: bool) -> Result<(), WireError> {
        let mut w = RtpRewriter::new(packet)?;
        w.set_ssrc(self.ssrc).set_sequence_number(self.seq).set_timestamp(self.timestamp);
        w.set_marker(marker);
        let start = w.header_len();
        let end = start + w.view().payload().len();
        let payload = packet.get_mut(start..end).ok_or(WireError::Truncated("rtp: payload"))?;
        if let Some(id) = self.picture_id {
            match codec {
                Codec::Vp8 => vp8::rewrite_picture_id(payload, id, self.tl0picidx)?,
                Codec::Vp9 => vp9::rewrite_picture_id(payload, id, self.tl0picidx)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Where an outgoing sequence number came from, to answer a NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackSource {
    pub encoding: u8,
    /// The publisher SSRC and sequence number of the packet (look it up in the RTX ring).
    pub ssrc: u32,
    pub seq: u16,
    /// Add to the stored packet's timestamp.
    pub ts_offset: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct SeqEntry {
    epoch: u32,
    encoding: u8,
    ssrc: u32,
    from_in: u64,
    from_out: u64,
    off: i64,
    ts_off: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct PicEntry {
    epoch: u32,
    from_in: i64,
    off: i64,
}

/// A fixed ring of the newest `N` entries.
#[derive(Debug, Clone)]
struct Ring<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
    head: usize,
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    fn new() -> Self {
        Ring { items: [T::default(); N], len: 0, head: 0 }
    }
    fn push(&mut self, v: T) {
        self.items[self.head] = v;
        self.head = (self.head + 1) % N;
        self.len = (self.len + 1).min(N);
    }
    fn newest_mut(&mut self) -> Option<&mut T> {
        if self.len == 0 {
            return None;
        }
        Some(&mut self.items[(self.head + N - 1) % N])
    }
    /// Newest first.
    fn iter(&self) -> impl Iterator<Item = &T> {
        (1..=self.len).map(move |i| &self.items[(self.head + N - i) % N])
    }
}

/// The input side of the forwarded encoding since the last switch.
#[derive(Debug, Clone)]
struct Epoch {
    id: u32,
    encoding: u8,
    ssrc: u32,
    ext: SeqExtender,
    start_in: u64,
    highest_in: u64,
    off: i64,
    ts_off: u32,
    /// Extended picture ids: highest seen, current offset, modulus.
    pic: Option<(i64, i64, i64)>,
    tl0_off: u8,
}

/// Rewrites what a [`LayerSelector`] forwards into one continuous outgoing stream (see the
/// module doc): seq, timestamp, picture id, TL0PICIDX.
#[derive(Debug, Clone)]
pub struct SeqTsRewriter {
    out_ssrc: u32,
    clock_rate: u32,
    epoch: Option<Epoch>,
    next_epoch: u32,
    /// Highest outgoing extended seq sent, and the timestamp sent with it.
    last_out: u64,
    last_ts: Option<u32>,
    last_at: Option<Instant>,
    /// Highest outgoing extended picture id and TL0PICIDX sent.
    last_pic: Option<i64>,
    last_tl0: Option<u8>,
    seqs: Ring<SeqEntry, SEQ_HISTORY>,
    pics: Ring<PicEntry, PIC_HISTORY>,
    /// Outgoing extended seqs whose packet came late and was dropped.
    late_drops: Ring<u64, LATE_DROPS>,
}

/// Extends `v` (modulo `m`) to the value nearest `highest`.
fn nearest(highest: i64, v: i64, m: i64) -> i64 {
    let mut d = (v - highest).rem_euclid(m);
    if d >= m / 2 {
        d -= m;
    }
    highest + d
}

impl SeqTsRewriter {
    /// One outgoing stream `out_ssrc` at `clock_rate` Hz whose first packet gets `first_seq`.
    pub fn new(out_ssrc: u32, clock_rate: u32, first_seq: u16) -> SeqTsRewriter {
        SeqTsRewriter {
            out_ssrc,
            clock_rate,
            epoch: None,
            next_epoch: 0,
            last_out: (1u64 << 32) + u64::from(first_seq.wrapping_sub(1)),
            last_ts: None,
            last_at: None,
            last_pic: None,
            last_tl0: None,
            seqs: Ring::new(),
            pics: Ring::new(),
            late_drops: Ring::new(),
        }
    }

    /// The last outgoing sequence number sent.
    pub fn last_seq(&self) -> u16 {
        self.last_out as u16
    }

    /// The last outgoing timestamp sent (for padding that goes with the stream).
    pub fn last_timestamp(&self) -> Option<u32> {
        self.last_ts
    }

    /// The publisher SSRC forwarded now and what is added to its timestamps (to translate its
    /// sender reports).
    pub fn current_source(&self) -> Option<(u32, u32)> {
        self.epoch.as_ref().map(|e| (e.ssrc, e.ts_off))
    }

    fn start_epoch(&mut self, now: Instant, p: &PacketMeta, info: &PacketInfo) {
        // Seqs above the last sent that the old epoch kept for late packets go to the new one.
        let last_out = self.last_out;
        for d in self.late_drops.items.iter_mut().filter(|d| **d > last_out) {
            *d = 0;
        }
        let mut ext = SeqExtender::default();
        let in0 = ext.extend(p.seq);
        let off = (self.last_out + 1) as i64 - in0 as i64;
        let ts_off = match (self.last_ts, self.last_at) {
            (Some(ts), Some(at)) => {
                let ticks = now.saturating_duration_since(at).as_nanos()
                    * u128::from(self.clock_rate)
                    / 1_000_000_000;
                let delta = u32::try_from(ticks.max(1)).unwrap_or(u32::MAX / 2).min(u32::MAX / 2);
                ts.wrapping_add(delta).wrapping_sub(p.timestamp)
            }
            _ => 0,
        };
        let id = self.next_epoch;
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let pic = info.picture_id.map(|pid| self.start_pictures(id, pid));
        let tl0_off = match (info.tl0picidx, self.last_tl0) {
            (Some(t), Some(last)) => last.wrapping_add(1).wrapping_sub(t),
            _ => 0,
        };
        self.seqs.push(SeqEntry {
            epoch: id,
            encoding: p.encoding,
            ssrc: p.ssrc,
            from_in: in0,
            from_out: self.last_out + 1,
            off,
            ts_off,
        });
        self.epoch = Some(Epoch {
            id,
            encoding: p.encoding,
            ssrc: p.ssrc,
            ext,
            start_in: in0,
            highest_in: in0 - 1,
            off,
            ts_off,
            pic,
            tl0_off,
        });
    }

    /// Picture ids of an epoch from its first packet that has one: continuing from the last
    /// sent + 1. Returns (highest extended id seen, offset, modulus).
    fn start_pictures(&mut self, epoch: u32, pid: PictureId) -> (i64, i64, i64) {
        let m = i64::from(pid.modulus());
        let in_ext = (1i64 << 20) + i64::from(pid.value);
        let off = match self.last_pic {
            Some(last) => last + 1 - in_ext,
            None => 0,
        };
        self.pics.push(PicEntry { epoch, from_in: in_ext, off });
        (in_ext - 1, off, m)
    }

    fn seq_offset_at(&self, epoch: u32, in_ext: u64) -> Option<i64> {
        self.seqs
            .iter()
            .take_while(|e| e.epoch == epoch)
            .find(|e| e.from_in <= in_ext)
            .map(|e| e.off)
    }

    fn pic_offset_at(&self, epoch: u32, in_ext: i64) -> Option<i64> {
        self.pics
            .iter()
            .take_while(|e| e.epoch == epoch)
            .find(|e| e.from_in <= in_ext)
            .map(|e| e.off)
    }

    /// The outgoing fields of a packet the selector forwards (`switched` from its verdict, or
    /// the first packet of another encoding). `None` for a late packet from before the switch
    /// or older than the kept history: drop it.
    pub fn forward(
        &mut self,
        now: Instant,
        p: &PacketMeta,
        info: &PacketInfo,
        switched: bool,
    ) -> Option<Rewrite> {
        if switched || self.epoch.as_ref().is_none_or(|e| e.encoding != p.encoding) {
            self.start_epoch(now, p, info);
        }
        if let Some(pid) = info.picture_id
            && let Some(id) = self.epoch.as_ref().filter(|e| e.pic.is_none()).map(|e| e.id)
        {
            let st = self.start_pictures(id, pid);
            if let Some(e) = self.epoch.as_mut() {
                e.pic = Some(st);
            }
        }
        let e = self.epoch.as_mut()?;
        let in_ext = e.ext.extend(p.seq);
        if in_ext < e.start_in {
            return None;
        }
        let (epoch, in_order) = (e.id, in_ext > e.highest_in);
        let off = if in_order {
            e.highest_in = in_ext;
            e.off
        } else {
            self.seq_offset_at(epoch, in_ext)?
        };
        let e = self.epoch.as_mut()?;
        let out = (in_ext as i64 + off) as u64;
        let timestamp = p.timestamp.wrapping_add(e.ts_off);
        let tl0picidx = info.tl0picidx.map(|t| t.wrapping_add(e.tl0_off));
        let mut picture_id = None;
        if let (Some(pid), Some((hi, poff, m))) = (info.picture_id, e.pic.as_mut()) {
            let x = nearest(*hi, i64::from(pid.value), *m);
            let o = if x > *hi {
                *hi = x;
                Some(*poff)
            } else {
                None
            };
            let o = match o {
                Some(o) => o,
                None => self.pic_offset_at(epoch, x)?,
            };
            let out_pic = x + o;
            self.last_pic = Some(self.last_pic.map_or(out_pic, |l| l.max(out_pic)));
            picture_id = Some((out_pic.rem_euclid(0x8000)) as u16);
        }
        if out > self.last_out {
            self.last_out = out;
            self.last_ts = Some(timestamp);
            self.last_at = Some(now);
            if tl0picidx.is_some() {
                self.last_tl0 = tl0picidx;
            }
        }
        Some(Rewrite { ssrc: self.out_ssrc, seq: out as u16, timestamp, picture_id, tl0picidx })
    }

    /// A packet of the forwarded encoding the selector dropped (a layer above the target): the
    /// packets after it move down by one so the drop leaves no hole, and a dropped picture
    /// (its first packet) moves the picture ids after it down by one.
    pub fn dropped(&mut self, p: &PacketMeta, info: &PacketInfo) {
        let Some(e) = self.epoch.as_mut() else {
            return;
        };
        if e.encoding != p.encoding {
            return;
        }
        let in_ext = e.ext.extend(p.seq);
        if in_ext < e.highest_in && in_ext >= e.start_in {
            // Its outgoing seq was left free for it: remember it so a NACK gets nothing.
            let epoch = e.id;
            if let Some(off) = self.seq_offset_at(epoch, in_ext) {
                self.late_drops.push((in_ext as i64 + off) as u64);
            }
            return;
        }
        if in_ext > e.highest_in {
            e.highest_in = in_ext;
            e.off -= 1;
            let (epoch, off) = (e.id, e.off);
            let from_out = (in_ext as i64 + 1 + off) as u64;
            match self.seqs.newest_mut() {
                Some(n) if n.epoch == epoch && n.from_in == in_ext => {
                    n.from_in = in_ext + 1;
                    n.off = off;
                }
                _ => self.seqs.push(SeqEntry {
                    epoch,
                    encoding: e.encoding,
                    ssrc: e.ssrc,
                    from_in: in_ext + 1,
                    from_out,
                    off,
                    ts_off: e.ts_off,
                }),
            }
        }
        let picture_start = info.frame_start && info.spatial_id.unwrap_or(0) == 0;
        let (Some(pid), Some((hi, poff, m))) = (info.picture_id, e.pic.as_mut()) else {
            return;
        };
        let x = nearest(*hi, i64::from(pid.value), *m);
        if !picture_start || x <= *hi {
            return;
        }
        *hi = x;
        *poff -= 1;
        let (epoch, off) = (e.id, *poff);
        match self.pics.newest_mut() {
            Some(n) if n.epoch == epoch && n.from_in == x => {
                n.from_in = x + 1;
                n.off = off;
            }
            _ => self.pics.push(PicEntry { epoch, from_in: x + 1, off }),
        }
    }

    /// The publisher packet an outgoing sequence number was made from (for a NACK), if it is
    /// still in the history. The seq of a real loss maps to the lost packet (not in the ring);
    /// the seq left free for a packet that came late and was dropped (a layer above the
    /// target) maps to nothing: that hole stays (its NACK is not answered).
    pub fn source_of(&self, out_seq: u16) -> Option<NackSource> {
        let out = SeqExtender::nearest(self.last_out, out_seq);
        if out > self.last_out || self.late_drops.iter().any(|&d| d == out) {
            return None;
        }
        let e = self.seqs.iter().find(|e| e.from_out <= out)?;
        let in_ext = out as i64 - e.off;
        Some(NackSource {
            encoding: e.encoding,
            ssrc: e.ssrc,
            seq: in_ext as u16,
            ts_offset: e.ts_off,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{PictureId, inspect};

    fn vp8(key: bool, start: bool, tid: u8, sync: bool, pic: u16, tl0: u8) -> PacketInfo {
        PacketInfo {
            frame_start: start,
            keyframe: key && start,
            temporal_id: Some(tid),
            layer_sync: sync,
            picture_id: Some(PictureId { value: pic & 0x7FFF, long: true }),
            tl0picidx: Some(tl0),
            ..Default::default()
        }
    }

    fn meta(encoding: u8, seq: u16, ts: u32) -> PacketMeta {
        PacketMeta { encoding, ssrc: 100 + u32::from(encoding), seq, timestamp: ts, marker: true }
    }

    const KF: Duration = Duration::from_millis(500);

    #[test]
    fn waits_for_keyframe_then_switches_up_only_at_keyframe() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerTarget { encoding: 0, spatial: 0, temporal: 2 }, KF);
        let v = s.on_packet(t0, &meta(0, 1, 0), &vp8(false, true, 0, false, 1, 1));
        assert_eq!(v.action, Action::Drop(DropReason::Waiting));
        assert_eq!(v.keyframe_request, Some(0));
        // Rate-limited.
        let v = s.on_packet(t0, &meta(0, 2, 0), &vp8(false, true, 0, false, 1, 1));
        assert_eq!(v.keyframe_request, None);
        let v = s.on_packet(t0, &meta(0, 3, 0), &vp8(true, true, 0, false, 2, 2));
        assert_eq!(v.action, Action::Forward { marker: true, switched: true });
        s.set_target(LayerTarget { encoding: 2, spatial: 0, temporal: 2 });
        // Delta frame of encoding 2: dropped, keyframe asked of encoding 2.
        let t1 = t0 + Duration::from_secs(1);
        let v = s.on_packet(t1, &meta(2, 50, 0), &vp8(false, true, 0, false, 9, 9));
        assert_eq!(v.action, Action::Drop(DropReason::OtherEncoding));
        assert_eq!(v.keyframe_request, Some(2));
        // The current encoding keeps flowing meanwhile.
        let v = s.on_packet(t1, &meta(0, 4, 0), &vp8(false, true, 0, false, 3, 3));
        assert!(matches!(v.action, Action::Forward { switched: false, .. }));
        let v = s.on_packet(t1, &meta(2, 51, 0), &vp8(true, true, 0, false, 10, 10));
        assert!(matches!(v.action, Action::Forward { switched: true, .. }));
        assert_eq!(s.current().map(|c| c.encoding), Some(2));
        let v = s.on_packet(t1, &meta(0, 5, 0), &vp8(true, true, 0, false, 4, 4));
        assert_eq!(v.action, Action::Drop(DropReason::OtherEncoding));
    }

    #[test]
    fn temporal_down_at_once_up_at_sync() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerTarget { encoding: 0, spatial: 0, temporal: 2 }, KF);
        let mut seq = 0u16;
        let mut fwd = |s: &mut LayerSelector, i: &PacketInfo| {
            seq += 1;
            matches!(s.on_packet(t0, &meta(0, seq, 0), i).action, Action::Forward { .. })
        };
        assert!(fwd(&mut s, &vp8(true, true, 0, false, 0, 0)));
        assert!(fwd(&mut s, &vp8(false, true, 2, false, 1, 0)));
        s.set_target(LayerTarget { encoding: 0, spatial: 0, temporal: 0 });
        assert!(!fwd(&mut s, &vp8(false, true, 1, false, 2, 0)));
        assert!(fwd(&mut s, &vp8(false, true, 0, false, 3, 1)));
        s.set_target(LayerTarget { encoding: 0, spatial: 0, temporal: 1 });
        assert!(!fwd(&mut s, &vp8(false, true, 1, false, 4, 1)));
        assert!(fwd(&mut s, &vp8(false, true, 1, true, 5, 1)));
        assert!(fwd(&mut s, &vp8(false, false, 1, false, 5, 1)));
        assert!(!fwd(&mut s, &vp8(false, true, 2, true, 6, 1)));
    }

    #[test]
    fn vp9_ksvc_spatial_drop_moves_marker() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerTarget { encoding: 0, spatial: 1, temporal: 7 }, KF);
        let pkt = |sid: u8, b: bool, e: bool, key: bool, p: bool| PacketInfo {
            frame_start: b,
            frame_end: e,
            keyframe: key,
            inter_predicted: p,
            spatial_id: Some(sid),
            temporal_id: Some(0),
            ..Default::default()
        };
        let mut m = meta(0, 0, 0);
        let on = |s: &mut LayerSelector, m: &mut PacketMeta, i: &PacketInfo| {
            m.seq += 1;
            s.on_packet(t0, m, i)
        };
        m.marker = false;
        // Key picture: S0, S1 (end of layer), S2 (end, marker) -> S2 dropped, S1 gets the marker.
        let v = on(&mut s, &mut m, &pkt(0, true, true, true, false));
        assert_eq!(v.action, Action::Forward { marker: false, switched: true });
        let v = on(&mut s, &mut m, &pkt(1, true, true, false, false));
        assert_eq!(v.action, Action::Forward { marker: true, switched: false });
        m.marker = true;
        let v = on(&mut s, &mut m, &pkt(2, true, true, false, false));
        assert_eq!(v.action, Action::Drop(DropReason::Spatial));
        assert_eq!(v.keyframe_request, None);
        // Target up: the next S2 frame is inter-predicted, so drop and ask for a keyframe.
        s.set_target(LayerTarget { encoding: 0, spatial: 2, temporal: 7 });
        let v = on(&mut s, &mut m, &pkt(2, true, true, false, true));
        assert_eq!(v.keyframe_request, Some(0));
        // Only a key picture lets S2 in (not an intra-layer S2 frame mid-picture).
        let v = on(&mut s, &mut m, &pkt(2, true, true, false, false));
        assert_eq!(v.action, Action::Drop(DropReason::Spatial));
        m.marker = false;
        let v = on(&mut s, &mut m, &pkt(0, true, true, true, false));
        assert!(matches!(v.action, Action::Forward { marker: false, .. }));
        let v = on(&mut s, &mut m, &pkt(1, true, true, false, false));
        assert!(matches!(v.action, Action::Forward { marker: false, .. }));
        m.marker = true;
        let v = on(&mut s, &mut m, &pkt(2, true, true, false, false));
        assert!(matches!(v.action, Action::Forward { marker: true, .. }));
        // Down again: applied at the next picture start, not mid-picture.
        s.set_target(LayerTarget { encoding: 0, spatial: 0, temporal: 7 });
        m.marker = false;
        assert!(matches!(
            on(&mut s, &mut m, &pkt(1, true, false, false, true)).action,
            Action::Forward { .. }
        ));
        let v = on(&mut s, &mut m, &pkt(0, true, true, false, true));
        assert_eq!(v.action, Action::Forward { marker: true, switched: false });
        assert_eq!(
            on(&mut s, &mut m, &pkt(1, true, true, false, true)).action,
            Action::Drop(DropReason::Spatial)
        );
    }

    #[test]
    fn frames_whole_and_late_packets_change_nothing() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(LayerTarget { encoding: 0, spatial: 0, temporal: 0 }, KF);
        let act = |s: &mut LayerSelector, seq: u16, ts: u32, i: &PacketInfo| {
            s.on_packet(t0, &meta(0, seq, ts), i).action
        };
        assert!(matches!(
            act(&mut s, 10, 0, &vp8(true, true, 0, false, 0, 0)),
            Action::Forward { .. }
        ));
        // A TL1 frame dropped at its start; the target rises (TL1) with a sync frame start
        // in between; the rest of the dropped frame stays dropped.
        assert_eq!(
            act(&mut s, 11, 3000, &vp8(false, true, 1, false, 1, 0)),
            Action::Drop(DropReason::Temporal)
        );
        s.set_target(LayerTarget { encoding: 0, spatial: 0, temporal: 1 });
        assert_eq!(
            act(&mut s, 12, 3000, &vp8(false, false, 1, false, 1, 0)),
            Action::Drop(DropReason::Temporal)
        );
        // A late sync frame start does not switch up.
        assert_eq!(
            act(&mut s, 9, 0, &vp8(false, true, 1, true, 9, 0)),
            Action::Drop(DropReason::Temporal)
        );
        assert_eq!(s.current().map(|c| c.temporal), Some(0));
        assert!(matches!(
            act(&mut s, 13, 6000, &vp8(false, true, 1, true, 2, 0)),
            Action::Forward { .. }
        ));
        assert_eq!(s.current().map(|c| c.temporal), Some(1));
        assert!(matches!(
            act(&mut s, 14, 6000, &vp8(false, false, 1, true, 2, 0)),
            Action::Forward { .. }
        ));
        // A late TL1 packet from before the change: dropped (its frame was); a late TL0 one
        // goes through.
        assert_eq!(
            act(&mut s, 12, 3000, &vp8(false, false, 1, false, 1, 0)),
            Action::Drop(DropReason::Temporal)
        );
        assert!(matches!(
            act(&mut s, 10, 0, &vp8(false, false, 0, false, 0, 0)),
            Action::Forward { .. }
        ));
        // A late keyframe of another encoding does not switch either.
        s.set_target(LayerTarget { encoding: 1, spatial: 0, temporal: 1 });
        assert!(matches!(
            s.on_packet(t0, &meta(1, 500, 0), &vp8(false, true, 0, false, 0, 0)).action,
            Action::Drop(_)
        ));
        let late_key = s.on_packet(t0, &meta(1, 499, 0), &vp8(true, true, 0, false, 0, 0));
        assert_eq!(late_key.action, Action::Drop(DropReason::OtherEncoding));
        let key = s.on_packet(t0, &meta(1, 501, 0), &vp8(true, true, 0, false, 0, 0));
        assert!(matches!(key.action, Action::Forward { switched: true, .. }));
    }

    #[test]
    fn seq_ts_picture_continuous_across_drops_and_switch() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(0xABCD, 90_000, 1000);
        // Encoding 0: seq 10.. ; frames alternate TL0 / TL1; TL1 dropped.
        let mut outs = Vec::new();
        let mut tl0 = 7u8;
        for i in 0..10u16 {
            let pic = 500 + i;
            let tid = (i % 2) as u8;
            if tid == 0 {
                tl0 = tl0.wrapping_add(1);
            }
            let info = vp8(i == 0, true, tid, false, pic, tl0);
            let p = meta(0, 10 + i, 3000 * u32::from(i));
            if tid == 1 {
                r.dropped(&p, &info);
            } else {
                outs.push(r.forward(t0, &p, &info, i == 0).unwrap());
            }
        }
        for w in outs.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].picture_id.unwrap(), w[0].picture_id.unwrap() + 1);
            assert_eq!(w[1].tl0picidx.unwrap(), w[0].tl0picidx.unwrap().wrapping_add(1));
            assert_eq!(w[1].timestamp - w[0].timestamp, 6000);
        }
        assert_eq!(outs[0].seq, 1000);
        let last = *outs.last().unwrap();
        // NACK of an outgoing seq maps back to the publisher seq.
        assert_eq!(r.source_of(last.seq).map(|s| (s.ssrc, s.seq)), Some((100, 18)));
        assert_eq!(r.source_of(1001).map(|s| s.seq), Some(12));
        // A loss inside the forwarded layer stays a gap: seq 20 lost, 21 is TL1 (dropped)...
        let info = vp8(false, true, 0, false, 600, 20);
        let a = r.forward(t0, &meta(0, 22, 40_000), &info, false).unwrap();
        assert_eq!(a.seq, last.seq.wrapping_add(3));
        // Switch to encoding 1 at a keyframe 20 ms later.
        let t1 = t0 + Duration::from_millis(20);
        let info = vp8(true, true, 0, false, 9000, 200);
        let b = r.forward(t1, &meta(1, 40_000, 777), &info, true).unwrap();
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        assert_eq!(b.timestamp, a.timestamp + 1800);
        assert_eq!(b.picture_id, Some(a.picture_id.unwrap() + 1));
        assert_eq!(b.tl0picidx, Some(a.tl0picidx.unwrap().wrapping_add(1)));
        assert_eq!(r.source_of(b.seq).map(|s| (s.encoding, s.seq)), Some((1, 40_000)));
        assert_eq!(r.source_of(a.seq).map(|s| (s.encoding, s.seq)), Some((0, 22)));
        // A late packet of the old encoding is not forwarded by the selector; one of the new
        // encoding from before the switch point is refused here.
        assert!(r.forward(t1, &meta(1, 39_999, 0), &info, false).is_none());
    }

    #[test]
    fn late_packets_use_the_offset_of_their_time() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(1, 90_000, 0);
        let i = PacketInfo { frame_start: true, keyframe: true, ..Default::default() };
        let a = r.forward(t0, &meta(0, 100, 0), &i, true).unwrap();
        // 101 missing (late), 102 dropped, 103 forwarded, then 101 arrives.
        r.dropped(&meta(0, 102, 0), &i);
        let c = r.forward(t0, &meta(0, 103, 0), &i, false).unwrap();
        let b = r.forward(t0, &meta(0, 101, 0), &i, false).unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (0, 1, 2));
        assert_eq!(r.source_of(1).map(|s| s.seq), Some(101));
        assert_eq!(r.source_of(2).map(|s| s.seq), Some(103));
        // 104 missing, 105 forwarded; 104 comes late and is dropped: its seq stays a hole
        // that a NACK gets nothing for.
        let e = r.forward(t0, &meta(0, 105, 0), &i, false).unwrap();
        r.dropped(&meta(0, 104, 0), &i);
        assert_eq!(e.seq, 4);
        assert_eq!(r.source_of(3), None);
        assert_eq!(r.source_of(4).map(|s| s.seq), Some(105));
    }

    #[test]
    fn apply_rewrites_a_real_packet() {
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        pkt.extend_from_slice(&[0x90, 0xE0, 0x85, 0x00, 3, 0x40, 0x10]);
        let rw = Rewrite {
            ssrc: 7,
            seq: 42,
            timestamp: 9000,
            picture_id: Some(0x0102),
            tl0picidx: Some(5),
        };
        rw.apply(Codec::Vp8, &mut pkt, true).unwrap();
        let v = crate::wire::RtpView::parse(&pkt).unwrap();
        assert_eq!((v.ssrc(), v.sequence_number(), v.timestamp(), v.marker()), (7, 42, 9000, true));
        let i = inspect(Codec::Vp8, v.payload(), true).unwrap();
        assert_eq!(i.picture_id, Some(PictureId { value: 0x0102, long: true }));
        assert_eq!(i.tl0picidx, Some(5));
    }

    /// A descriptor carrying its structure is kept per track; the next packets of that track
    /// get their layer ids from its templates, another track's do not.
    #[test]
    fn dd_structures_are_kept_per_track() {
        use crate::wire::codec::av1_dd::{BitWriter, sample_l1t3_with_structure};
        let mut dd = DdStructures::default();
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 1);
        let mut info = PacketInfo::default();
        dd.apply(TrackId(3), w.finish(), &mut info);
        assert_eq!((info.spatial_id, info.temporal_id), (Some(0), Some(0)));
        assert!(info.keyframe, "a base-layer frame without references");
        // Template 3 (T2) without a structure in the packet: 3 bytes of mandatory fields.
        let plain = |template: u8, frame: u16| {
            let mut w = BitWriter::default();
            w.put(1, 1);
            w.put(1, 1);
            w.put(6, u32::from(template));
            w.put(16, u32::from(frame));
            w.finish().to_vec()
        };
        let mut info = PacketInfo::default();
        dd.apply(TrackId(3), &plain(3, 2), &mut info);
        assert_eq!(info.temporal_id, Some(2));
        let mut other = PacketInfo::default();
        dd.apply(TrackId(4), &plain(3, 2), &mut other);
        assert_eq!(other.temporal_id, None, "no structure known for that track");
        dd.forget(TrackId(3));
        let mut gone = PacketInfo::default();
        dd.apply(TrackId(3), &plain(3, 3), &mut gone);
        assert_eq!(gone.temporal_id, None);
    }

    /// AV1 with the Dependency Descriptor (the L1T3 sample structure: T1 frames are switch
    /// points for the T2 target, T2 frames for nothing, T0 delta frames "required"): temporal
    /// layers by the descriptor's ids, up only where a frame's indication says Switch.
    #[test]
    fn av1_temporal_up_at_a_descriptor_switch_point() {
        use crate::wire::codec::av1_dd::{BitWriter, sample_l1t3_with_structure};
        let t0 = Instant::now();
        let track = TrackId(3);
        let mut dd = DdStructures::default();
        let mut s = LayerSelector::new(LayerTarget { encoding: 0, spatial: 3, temporal: 1 }, KF);
        let mut seq = 0u16;
        let mut send = |s: &mut LayerSelector, dd: &mut DdStructures, ext: &[u8]| {
            seq += 1;
            let mut info = PacketInfo::default();
            dd.apply(track, ext, &mut info);
            let v = s.on_packet(t0, &meta(0, seq, u32::from(seq) * 3000), &info);
            (matches!(v.action, Action::Forward { .. }), info.switch_temporal)
        };
        // Three-byte descriptors: start and end of frame, template id, frame number.
        let frame = |template: u8, n: u16| [0xC0 | template, (n >> 8) as u8, n as u8];
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 1);
        assert_eq!(send(&mut s, &mut dd, w.finish()), (true, Some(2)), "the keyframe");
        assert_eq!(send(&mut s, &mut dd, &frame(3, 2)), (false, None), "T2 above the target");
        assert_eq!(send(&mut s, &mut dd, &frame(2, 3)), (true, Some(2)), "T1");
        s.set_target(LayerTarget { encoding: 0, spatial: 3, temporal: 3 });
        assert_eq!(send(&mut s, &mut dd, &frame(4, 4)), (false, None), "T2: no switch point");
        assert_eq!(send(&mut s, &mut dd, &frame(1, 5)), (true, None), "T0 (required, no switch)");
        assert_eq!(send(&mut s, &mut dd, &frame(3, 6)), (false, None));
        assert_eq!(s.current().map(|c| c.temporal), Some(1));
        assert_eq!(send(&mut s, &mut dd, &frame(2, 7)), (true, Some(2)), "T1 opens T2");
        assert_eq!(s.current().map(|c| c.temporal), Some(2));
        assert_eq!(send(&mut s, &mut dd, &frame(4, 8)), (true, None), "T2 forwarded now");
        // Down at once, at the next picture start.
        s.set_target(LayerTarget { encoding: 0, spatial: 3, temporal: 0 });
        assert_eq!(send(&mut s, &mut dd, &frame(2, 9)), (false, Some(2)));
        assert_eq!(send(&mut s, &mut dd, &frame(1, 10)), (true, None));
    }
}
