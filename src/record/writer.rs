//! The recorder thread: the thin shell around [`RecorderCore`] that owns the file.
//!
//! One thread per recording (per recorded stream). A recording writes a few hundred KB/s and
//! `fsync`s once at the end; one thread each keeps a slow disk, a long `fsync` or a failing
//! file from delaying any other recording, and needs no registry. Tens of streams are tens
//! of mostly sleeping threads.
//!
//! The shard feeds it through [`RecorderInput`]: a bounded wait-free SPSC ring (`rtrb`, as the
//! shards' command queues) of fixed-size [`RtpSlot`]s, written in place (one copy of the
//! payload, no zeroing) without allocating or locking; a full ring drops the packet and counts
//! it. The thread polls the ring every
//! [`POLL_INTERVAL`] (a recording needs no low latency), so a push costs no syscall;
//! [`RecorderInput::wake`], called once per shard loop turn, unparks it early only when the
//! ring is a quarter full. Requests for the publisher (NACK, PLI) come back through a second
//! ring the shard drains with [`RecorderInput::poll_request`]. (The shard mesh's hand-written
//! ring in `shard::mesh` is built for a full mesh of shard pairs, not for one-off pairs.)
//!
//! Faults: a file that cannot be created or written (ENOSPC: "disk full") reports
//! [`RecorderEvent::Failed`] at once; what was written stays on disk (the control plane flags
//! it), the rest of the stream is drained and discarded. A stream without a keyframe closes
//! audio-only or empty with [`Summary::no_video_reason`] set. Nothing here panics on input.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, RingBuffer};

use super::mkv::TrackKind;
use super::recorder::{Note, Output, RecorderConfig, RecorderCore, Summary};

/// Largest RTP payload a slot carries.
pub const SLOT_PAYLOAD: usize = 1500;
/// How often the recorder thread looks at its ring when nobody wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// One message from the shard: an RTP packet, a sender report or a restart. Plain data, written
/// in place in the ring ([`RecorderInput::push_slot`]): only the first `head.len` bytes of
/// `data` are ever written or read.
#[derive(Clone, Copy)]
pub struct RtpSlot {
    head: SlotHead,
    data: [MaybeUninit<u8>; SLOT_PAYLOAD],
}

/// What an [`RtpSlot`] says besides its payload.
#[derive(Clone, Copy)]
struct SlotHead {
    kind: SlotKind,
    video: bool,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ntp: u64,
    len: u16,
}

impl SlotHead {
    /// A message of `kind` about `track` with no payload and the other fields zero.
    fn new(kind: SlotKind, track: TrackKind) -> SlotHead {
        SlotHead {
            kind,
            video: track == TrackKind::Video,
            marker: false,
            seq: 0,
            timestamp: 0,
            ntp: 0,
            len: 0,
        }
    }
}

impl RtpSlot {
    /// The payload the shard wrote.
    fn payload(&self) -> &[u8] {
        let len = usize::from(self.head.len).min(SLOT_PAYLOAD);
        // SAFETY: `push_slot` writes `head.len` (at most SLOT_PAYLOAD) bytes of `data` before
        // it publishes the slot; `MaybeUninit<u8>` and `u8` have the same layout.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<u8>(), len) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Rtp,
    SenderReport,
    Restart,
}

/// A request for the publisher, for the shard to send as RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A generic NACK FCI (RFC 4585 §6.2.1): `pid` and the 16 following packets in `blp`.
    Nack {
        /// The track.
        track: TrackKind,
        /// First lost packet.
        pid: u16,
        /// Bitmask of lost packets after `pid`.
        blp: u16,
    },
    /// A Picture Loss Indication for the video track.
    Pli,
}

/// What a recording reports to the control plane (through the callback given to [`spawn`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RecorderEvent {
    /// Worth a log line or a webhook field; the recording goes on.
    Note(Note),
    /// The file is complete and synced.
    Finished(Summary),
    /// The file could not be written; what was written stays, flagged by this event.
    Failed {
        /// Why ("disk full", "cannot create the file: ...").
        reason: String,
        /// Bytes on disk.
        written: u64,
    },
}

/// Groups sequence numbers into NACK FCIs (a PID and a bitmask of the next 16).
pub fn nack_fcis(seqs: &[u16]) -> Vec<(u16, u16)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for s in sorted {
        if let Some((pid, blp)) = out.last_mut() {
            let d = s.wrapping_sub(*pid);
            if (1..=16).contains(&d) {
                *blp |= 1 << (d - 1);
                continue;
            }
        }
        out.push((s, 0));
    }
    out
}

/// The shard's end: push packets, wake once per turn, drain requests.
pub struct RecorderInput {
    packets: Producer<RtpSlot>,
    requests: Consumer<Request>,
    thread: Thread,
    dropped: u64,
}

impl RecorderInput {
    /// Writes `head` and `payload` straight into the ring's next slot (no slot-sized copy, no
    /// zeroing: the packet path copies the payload once); false when the ring is full.
    fn push_slot(&mut self, mut head: SlotHead, payload: &[u8]) -> bool {
        let len = payload.len().min(SLOT_PAYLOAD);
        head.len = len as u16;
        let Ok(mut chunk) = self.packets.write_chunk_uninit(1) else {
            self.dropped += 1;
            return false;
        };
        let (first, _) = chunk.as_mut_slices();
        let p = first[0].as_mut_ptr();
        // SAFETY: `p` is the reserved slot; `head` initialises every field but `data`, which is
        // `MaybeUninit` and receives `len` bytes, so the slot is a valid `RtpSlot` when the
        // chunk is committed.
        unsafe {
            std::ptr::addr_of_mut!((*p).head).write(head);
            let data = std::ptr::addr_of_mut!((*p).data).cast::<u8>();
            std::ptr::copy_nonoverlapping(payload.as_ptr(), data, len);
            chunk.commit_all();
        }
        true
    }

    /// One RTP packet (plaintext payload) of a track; false when the ring is full or the
    /// payload larger than [`SLOT_PAYLOAD`] (the packet is dropped and counted).
    pub fn push(
        &mut self,
        track: TrackKind,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> bool {
        if payload.len() > SLOT_PAYLOAD {
            self.dropped += 1;
            return false;
        }
        let head = SlotHead { marker, seq, timestamp, ..SlotHead::new(SlotKind::Rtp, track) };
        self.push_slot(head, payload)
    }

    /// A sender report of a track: RTP timestamp `rtp_ts` was NTP time `ntp`.
    pub fn push_sender_report(&mut self, track: TrackKind, ntp: u64, rtp_ts: u32) -> bool {
        let head =
            SlotHead { timestamp: rtp_ts, ntp, ..SlotHead::new(SlotKind::SenderReport, track) };
        self.push_slot(head, &[])
    }

    /// The publisher of a track started over (reconnected): see
    /// [`RecorderCore::restart_track`]. Push it before the new publisher's first packet.
    pub fn push_restart(&mut self, track: TrackKind) -> bool {
        self.push_slot(SlotHead::new(SlotKind::Restart, track), &[])
    }

    /// Once per shard loop turn: wakes the recorder thread early if its ring is filling up.
    pub fn wake(&mut self) {
        let cap = self.packets.buffer().capacity();
        if self.packets.slots() * 4 <= cap * 3 {
            self.thread.unpark();
        }
    }

    /// The next request for the publisher.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop().ok()
    }

    /// Packets dropped so far (ring full, too large).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// True when the recorder thread has ended.
    pub fn is_finished(&self) -> bool {
        self.packets.is_abandoned()
    }
}

/// The control plane's end: stop the recording, wait for it.
pub struct RecorderHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl RecorderHandle {
    /// Asks the recording to end: it writes what it has, closes, syncs and reports.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
    }

    /// Waits for the thread (after [`RecorderHandle::stop`], or after the shard dropped its
    /// [`RecorderInput`]).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts a recording into `path` (created or truncated by the thread). `on_event` runs on
/// the recorder thread.
pub fn spawn(
    path: PathBuf,
    cfg: RecorderConfig,
    ring_slots: usize,
    on_event: impl FnMut(RecorderEvent) + Send + 'static,
) -> io::Result<(RecorderInput, RecorderHandle)> {
    let (packets, packets_rx) = RingBuffer::new(ring_slots.max(16));
    let (requests_tx, requests) = RingBuffer::new(256);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("ringsfu-rec".into()).spawn(move || {
        let mut t = RecorderThread {
            core: RecorderCore::new(Instant::now(), cfg),
            packets: packets_rx,
            requests: requests_tx,
            file: None,
            pending: Vec::new(),
            written: 0,
            failed: false,
            on_event: Box::new(on_event),
        };
        t.run(&path, &stop2);
    })?;
    let input = RecorderInput { packets, requests, thread: thread.thread().clone(), dropped: 0 };
    Ok((input, RecorderHandle { stop, thread }))
}

/// One message a [`RingReader`] pops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingItem<'a> {
    /// An RTP packet of a track.
    Rtp { track: TrackKind, seq: u16, timestamp: u32, marker: bool, payload: &'a [u8] },
    /// A sender report: RTP timestamp `rtp_ts` was NTP time `ntp`.
    SenderReport { track: TrackKind, ntp: u64, rtp_ts: u32 },
    /// The publisher of a track started over.
    Restart { track: TrackKind },
}

/// The far end of a recorder ring for a reader other than [`spawn`]'s recorder thread (the
/// COMPOSED feed, [`super::feed`]): pop what the shard pushed, push requests back.
pub struct RingReader {
    packets: Consumer<RtpSlot>,
    requests: Producer<Request>,
}

impl RingReader {
    /// Hands the next message to `f`; false when the ring is empty.
    pub fn pop(&mut self, f: impl FnOnce(RingItem<'_>)) -> bool {
        let Ok(slot) = self.packets.pop() else { return false };
        let h = slot.head;
        let track = if h.video { TrackKind::Video } else { TrackKind::Audio };
        f(match h.kind {
            SlotKind::Rtp => RingItem::Rtp {
                track,
                seq: h.seq,
                timestamp: h.timestamp,
                marker: h.marker,
                payload: slot.payload(),
            },
            SlotKind::SenderReport => {
                RingItem::SenderReport { track, ntp: h.ntp, rtp_ts: h.timestamp }
            }
            SlotKind::Restart => RingItem::Restart { track },
        });
        true
    }

    /// A request for the publisher (a PLI); false when the request ring is full.
    pub fn request(&mut self, r: Request) -> bool {
        self.requests.push(r).is_ok()
    }

    /// True once the shard let go of the ring (detached, or the publisher left) and it is
    /// drained.
    pub fn is_finished(&self) -> bool {
        self.packets.is_abandoned() && self.packets.is_empty()
    }
}

/// A recorder ring whose reader is `reader` (unparked by [`RecorderInput::wake`]).
pub fn ring(ring_slots: usize, reader: Thread) -> (RecorderInput, RingReader) {
    let (packets, packets_rx) = RingBuffer::new(ring_slots.max(16));
    let (requests_tx, requests) = RingBuffer::new(256);
    let input = RecorderInput { packets, requests, thread: reader, dropped: 0 };
    (input, RingReader { packets: packets_rx, requests: requests_tx })
}

struct RecorderThread {
    core: RecorderCore,
    packets: Consumer<RtpSlot>,
    requests: Producer<Request>,
    file: Option<File>,
    pending: Vec<u8>,
    written: u64,
    failed: bool,
    on_event: Box<dyn FnMut(RecorderEvent) + Send>,
}

fn reason(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        "disk full".to_string()
    } else {
        format!("write failed: {e}")
    }
}

impl RecorderThread {
    fn run(&mut self, path: &Path, stop: &AtomicBool) {
        match OpenOptions::new().write(true).create(true).truncate(true).open(path) {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                self.failed = true;
                (self.on_event)(RecorderEvent::Failed {
                    reason: format!("cannot create the file: {e}"),
                    written: 0,
                });
            }
        }
        loop {
            let mut n = 0;
            while n < 4096 {
                let Ok(slot) = self.packets.pop() else { break };
                n += 1;
                if self.failed {
                    continue;
                }
                let now = Instant::now();
                let h = slot.head;
                let track = if h.video { TrackKind::Video } else { TrackKind::Audio };
                match h.kind {
                    SlotKind::SenderReport => {
                        self.core.handle_sender_report(now, track, h.ntp, h.timestamp)
                    }
                    SlotKind::Restart => self.core.restart_track(now, track),
                    SlotKind::Rtp => {
                        let payload = slot.payload();
                        self.core.handle_rtp(now, track, h.seq, h.timestamp, h.marker, payload);
                    }
                }
                self.drain();
            }
            let now = Instant::now();
            if let Some(t) = self.core.poll_timeout()
                && now >= t
            {
                self.core.handle_timeout(now);
            }
            self.drain();
            self.flush();
            let ended = stop.load(Ordering::Acquire) || self.packets.is_abandoned();
            if ended && self.packets.is_empty() {
                break;
            }
            if n == 0 {
                let sleep = self
                    .core
                    .poll_timeout()
                    .map_or(POLL_INTERVAL, |t| t.saturating_duration_since(now).min(POLL_INTERVAL));
                std::thread::park_timeout(sleep);
            }
        }
        if self.failed {
            return;
        }
        // Drained up to `Finished`, which flushes, syncs and reports.
        self.core.close(Instant::now());
        self.drain();
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            self.failed = true;
            self.pending.clear();
            (self.on_event)(RecorderEvent::Failed { reason: reason(e), written: self.written });
        }
    }

    fn flush(&mut self) {
        if self.failed || self.pending.is_empty() {
            return;
        }
        let Some(f) = self.file.as_mut() else { return };
        match f.write_all(&self.pending) {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Handles the core's outputs; `Finished` (the last) after flushing and syncing the file.
    fn drain(&mut self) {
        loop {
            let Some(o) = self.core.poll_output() else { return };
            match o {
                Output::Append(b) => {
                    if !self.failed {
                        self.pending.extend_from_slice(&b);
                        if self.pending.len() >= 256 * 1024 {
                            self.flush();
                        }
                    }
                }
                Output::Patch(p) => {
                    self.flush();
                    if !self.failed
                        && let Some(f) = self.file.as_ref()
                        && let Err(e) = f.write_all_at(p.bytes(), p.offset)
                    {
                        self.fail(&e);
                    }
                }
                Output::Nack { track, seqs } => {
                    for (pid, blp) in nack_fcis(&seqs) {
                        let _ = self.requests.push(Request::Nack { track, pid, blp });
                    }
                }
                Output::Pli => {
                    let _ = self.requests.push(Request::Pli);
                }
                Output::Note(n) => (self.on_event)(RecorderEvent::Note(n)),
                Output::Finished(s) => {
                    self.finish(s);
                    return;
                }
            }
        }
    }

    fn finish(&mut self, s: Summary) {
        self.flush();
        if self.failed {
            return;
        }
        if let Some(f) = self.file.as_ref()
            && let Err(e) = f.sync_all()
        {
            self.fail(&e);
            return;
        }
        (self.on_event)(RecorderEvent::Finished(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_grouping() {
        assert_eq!(
            nack_fcis(&[5, 6, 8, 21, 22, 65535, 0]),
            vec![(0, 0b1011_0000), (21, 1), (65535, 0)]
        );
    }
}
