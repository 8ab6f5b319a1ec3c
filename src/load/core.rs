//! [`LoadCore`]: every synthetic client of a run inside one [`ShardCore`], driven by the crate's
//! own I/O shells (io_uring or epoll) on one socket.
//!
//! Each client has its own loopback source address (`127.10.x.y`, see [`client_ip`]) and sends
//! from it with IP_PKTINFO; the shell reports the local address a datagram arrived on, which
//! names the client ([`client_index`]). So one socket and one thread carry thousands of
//! distinct 5-tuples, as the SFU needs (it tells peers apart by address).
//!
//! Per client (secure mode): ICE (Binding requests with USE-CANDIDATE, short-term
//! MESSAGE-INTEGRITY and FINGERPRINT to the candidate of the SDP answer; consent refresh every
//! 5 s; a server's own checks are answered when the spec gives the client's password, as
//! Janus's libnice sends them), a DTLS client handshake ([`DtlsEndpoint`] in the client role),
//! SRTP from the exported keys. Raw mode skips all of it and sends plain RTP to the minimal
//! forwarder.
//!
//! Publishers send synthetic VP8 video (bitrate, packet size, frame rate, keyframes) and Opus
//! audio. Every payload carries a stamp: magic, publisher index, track, sequence number and send
//! time (nanoseconds since the run's epoch). Subscribers count every packet by its RTP header
//! (the SFU rewrites the sequence number with a per-leg offset, learnt from the first packet of
//! each leg, so the publisher's sequence number is recovered without decrypting) and decrypt a
//! sample (`verify_every`) to check the stamp and measure one-way latency.
//!
//! Latency uses the `now` the shell takes once per loop turn, so it includes up to one turn of
//! the load generator's own processing.
//!
//! `--simulcast` ([`super::simulcast`]): a publisher sends three VP8 layers (one SSRC each, the
//! `mid`, `rid` and transport-wide sequence extensions), makes a layer's next frame a keyframe
//! on a PLI or FIR naming it and answers NACKs with RTX from a per-layer history
//! (`repaired-rid`). Subscribers decrypt every packet (the layer and the frame are in the
//! stamp), pass a capped leg's datagrams through its policer first, send TWCC feedback, and
//! count a video leg by the SFU's sequence numbers, which stay continuous across its layer
//! switches.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::dtls::{DtlsContext, DtlsEndpoint, DtlsEvent, Fingerprint};
use crate::shard::{RecvMeta, ShardCore, TxQueue};
use crate::srtp::{DtlsRole, SrtpContext};
use crate::wire::stun::TransactionId;
use crate::wire::{Class as StunClass, IntegrityKey, StunView, StunWriter, stun::Method};

use super::hist::Hist;
use super::offer::{OPUS_PT, VP8_PT};
use super::simulcast::{
    self, EXT_MID, EXT_RID, EXT_TWCC, FrameTracker, SIM_STAMP_OFFSET, SimLeg, SimOutcome,
    TokenBucket, Vp8Header,
};
use crate::media::feedback::TwccRecorder;
use crate::wire::rtcp::{self, RtcpCompound, RtcpPacket};

/// First word of every payload stamp ("RSFL").
pub const STAMP_MAGIC: u32 = 0x5253_464C;
/// Codec payload header bytes before the stamp: the VP8 payload descriptor and frame tag (a
/// keyframe's with its start code and a 320x240 size, so a recorder takes it for one), or the
/// Opus TOC byte; zeros in a frame's later packets.
pub const STAMP_OFFSET: usize = 12;
/// A VP8 keyframe's first bytes (RFC 7741 descriptor with S set; RFC 6386 frame tag: key,
/// shown; start code; 320 x 240).
const VP8_KEY_HEADER: [u8; STAMP_OFFSET] =
    [0x10, 0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0];
/// An inter frame's first bytes (descriptor, frame tag with P set).
const VP8_DELTA_HEADER: [u8; STAMP_OFFSET] = [0x10, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Opus: the TOC byte of a 20 ms CELT fullband frame.
const OPUS_HEADER: [u8; STAMP_OFFSET] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Stamp bytes: magic, publisher index, track, simulcast layer + 1 (0: none), the packet's
/// index in its frame and the frame's packet count (simulcast video; else 0), sequence (u64),
/// send time (u64 ns).
pub const STAMP_LEN: usize = 28;
/// Smallest payload a synthetic packet has.
pub const MIN_PAYLOAD: usize = STAMP_OFFSET + STAMP_LEN;
/// Largest payload (keeps SRTP packets under 1280 bytes).
pub const MAX_PAYLOAD: usize = 1200;

const RTP_HEADER: usize = 12;
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const CHECK_TRIES: u32 = 100;
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);
const SCAN_INTERVAL: Duration = Duration::from_millis(10);
const SECOND: Duration = Duration::from_secs(1);
const AUDIO_PTIME: Duration = Duration::from_millis(20);
/// Legs (SSRCs) one subscriber client tracks; packets of further SSRCs are counted as unknown.
const MAX_LEGS: usize = 16;
/// Transport-wide congestion control feedback interval of a subscriber (simulcast runs).
const TWCC_INTERVAL: Duration = Duration::from_millis(50);
/// REMB interval (`--remb`).
const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// REMB an uncapped subscriber reports (`--remb`).
const REMB_UNCAPPED: u64 = 20_000_000;

/// The loopback source address of client `index` (127.10.0.1 upwards, skipping .0 and .255).
pub fn client_ip(index: u32) -> Ipv4Addr {
    let per_b = 254 * 256;
    Ipv4Addr::new(
        127,
        10u32.saturating_add(index / per_b).min(255) as u8,
        ((index / 254) % 256) as u8,
        (index % 254 + 1) as u8,
    )
}

/// Inverse of [`client_ip`].
pub fn client_index(ip: IpAddr) -> Option<u32> {
    let IpAddr::V4(v4) = ip else { return None };
    let o = v4.octets();
    if o[0] != 127 || o[1] < 10 || o[3] == 0 || o[3] == 255 {
        return None;
    }
    Some(u32::from(o[1] - 10) * 254 * 256 + u32::from(o[2]) * 254 + u32::from(o[3] - 1))
}

/// Synthetic media of every publisher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaProfile {
    /// Video bits per second (0: no video).
    pub video_bitrate: u64,
    /// Video RTP payload bytes per packet.
    pub video_packet: usize,
    pub fps: u32,
    /// A keyframe every this many frames (0: only the first).
    pub keyframe_every: u32,
    /// Keyframes are this many times the size of a delta frame.
    pub keyframe_factor: u32,
    /// Opus-like audio, 50 packets/s of this many payload bytes (0: no audio).
    pub audio_packet: usize,
}

impl MediaProfile {
    /// Whether frame `n` is a keyframe.
    pub fn is_keyframe(&self, n: u64) -> bool {
        n == 0 || (self.keyframe_every > 0 && n.is_multiple_of(u64::from(self.keyframe_every)))
    }

    /// Payload bytes of frame `n`.
    pub fn frame_bytes(&self, n: u64) -> usize {
        if self.video_bitrate == 0 || self.fps == 0 {
            return 0;
        }
        let mut bytes = self.video_bitrate / 8 / u64::from(self.fps);
        if self.is_keyframe(n) {
            bytes *= u64::from(self.keyframe_factor.max(1));
        }
        bytes as usize
    }

    /// Packets of frame `n`.
    pub fn packets_of_frame(&self, n: u64) -> usize {
        if self.video_bitrate == 0 || self.fps == 0 {
            return 0;
        }
        let pkt = self.video_packet.clamp(MIN_PAYLOAD, MAX_PAYLOAD);
        self.frame_bytes(n).div_ceil(pkt).max(1)
    }

    /// Average packets per second of one publisher (video and audio).
    pub fn packets_per_second(&self) -> f64 {
        let mut pps = if self.audio_packet > 0 { 50.0 } else { 0.0 };
        if self.fps > 0 && self.video_bitrate > 0 {
            let every = u64::from(self.keyframe_every.max(1));
            let total: u64 = (0..every).map(|n| self.packets_of_frame(n + 1) as u64).sum();
            pps += total as f64 / every as f64 * f64::from(self.fps);
        }
        pps
    }
}

/// ICE and DTLS parameters from the SFU's SDP answer.
#[derive(Debug, Clone)]
pub struct SecureSpec {
    /// Our ufrag (the answer's peer sees it as the remote ufrag).
    pub local_ufrag: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub remote_fingerprint: Fingerprint,
    /// Our ICE password, when the server sends connectivity checks too (Janus's libnice does,
    /// even in ICE-lite mode): the client answers them, signed with it. Empty: checks are not
    /// answered (ringsfu, an ICE-lite server, sends none).
    pub local_pwd: String,
}

/// One client to start.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub index: u32,
    pub session: u32,
    /// Where its media goes (the candidate of the answer, or the raw forwarder).
    pub server: SocketAddr,
    /// `Some((audio_ssrc, video_ssrc))` for a publisher.
    pub publish: Option<(u32, u32)>,
    /// For a subscriber leg: the index of the publisher it receives.
    pub source: Option<u32>,
    /// `None` in raw mode.
    pub secure: Option<SecureSpec>,
    /// A subscriber leg's receive cap in bits per second (a policer in front of it).
    pub cap_bps: Option<u64>,
    /// The transport-wide sequence number extension id the SFU's answer agreed (0: none):
    /// a subscriber sends TWCC feedback for it in simulcast runs.
    pub twcc_ext: u8,
}

/// Orchestrator → load core.
#[derive(Debug)]
pub enum LoadCommand {
    Add(Box<ClientSpec>),
    /// Start counting: every publisher's window starts at its next packet. The window's
    /// counters (packets, bytes, latency, each leg's deliveries, send-queue overflows, late
    /// frames) start from zero, so a run may measure several windows one after the other.
    StartWindow,
    /// The window ends at every publisher's next packet; publishers go on sending.
    EndWindow,
    /// Publishers stop; the window ends at their next packet.
    StopMedia,
    /// Publishers send this media from their next frame on (a saturation step).
    SetMedia(MediaProfile),
    /// Send the final report.
    Finish,
}

/// Per-second counters.
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// Seconds since the run's epoch (end of the interval).
    pub t: f64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub recv_packets: u64,
    pub recv_bytes: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub samples: u64,
}

/// One subscriber's outcome in the measurement window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberOutcome {
    pub index: u32,
    pub expected: u64,
    pub delivered: u64,
}

/// The core's final numbers.
#[derive(Debug, Clone, Default)]
pub struct CoreReport {
    pub subscribers: Vec<SubscriberOutcome>,
    /// Simulcast runs: each subscriber leg's layers, loss and freezes.
    pub sim: Vec<SimOutcome>,
    /// Simulcast runs: keyframe requests (PLI, FIR) the publishers received in the window.
    pub publisher_keyframe_requests: u64,
    /// Simulcast runs: packets the publishers retransmitted (RTX) on NACKs in the window.
    pub publisher_retransmissions: u64,
    /// One-way latency of the verified packets in the window (µs).
    pub latency: Hist,
    pub verified: u64,
    pub verify_failures: u64,
    /// Packets the publishers sent in the window.
    pub sent_packets: u64,
    /// Packets the subscribers received of those sent in the window.
    pub recv_packets: u64,
    pub sent_bytes: u64,
    pub recv_bytes: u64,
    pub srtp_failures: u64,
    pub late_frames: u64,
    pub rtcp_in: u64,
    /// Padding-only RTP packets the subscribers received (the run's).
    pub padding_in: u64,
    pub unknown: u64,
    /// Packets a publisher could not send in the window (the load generator's send queue was
    /// full): never sent, so never expected of the server.
    pub tx_full: u64,
}

/// Load core → orchestrator.
#[derive(Debug)]
pub enum LoadEvent {
    Connected { index: u32, at: Instant },
    FirstMedia { index: u32, at: Instant },
    Failed { index: u32, reason: &'static str },
    Second(Box<Second>),
    Final(Box<CoreReport>),
}

enum Phase {
    Checking { next: Instant, tries: u32 },
    Dtls,
    Connected { next_consent: Instant },
    Failed,
}

/// Stream slots of a publisher: audio, then video (simulcast: one per layer, lowest first).
const STREAMS: usize = 4;

struct Publisher {
    ssrc: [u32; STREAMS],
    next: [Instant; 2],
    frame: u64,
    seq: [u64; STREAMS],
    /// Simulcast: the transport-wide sequence number of the next packet.
    twcc_seq: u16,
    /// Simulcast, per layer: a keyframe was asked for; picture id; TL0PICIDX.
    force_key: [bool; 3],
    picture_id: [u16; 3],
    tl0: [u8; 3],
    /// Simulcast: what each layer sent lately, to answer NACKs with RTX (RFC 4588) on the
    /// layer's RTX SSRC; `None` without simulcast.
    rtx: Option<Box<RtxLayers>>,
}

/// Packets a simulcast layer keeps for retransmission.
const RTX_HISTORY: usize = 512;

/// What a retransmission needs to write a video packet again (its payload is synthetic, so
/// the fields, not the bytes, are kept).
#[derive(Clone, Copy, Default)]
struct Sent {
    seq: u64,
    ts: u32,
    marker: bool,
    hdr: [u8; SIM_STAMP_OFFSET],
    layer: [u8; 3],
    send_ns: u64,
    size: usize,
}

/// Per layer: its RTX SSRC and sequence, and the last [`RTX_HISTORY`] packets.
struct RtxLayers {
    ssrc: [u32; 3],
    seq: [u16; 3],
    sent: [[Sent; RTX_HISTORY]; 3],
}

impl RtxLayers {
    fn new() -> Box<RtxLayers> {
        Box::new(RtxLayers {
            ssrc: [rand::random::<u32>() | 1, rand::random::<u32>() | 1, rand::random::<u32>() | 1],
            seq: rand::random(),
            sent: [[Sent::default(); RTX_HISTORY]; 3],
        })
    }
}

/// The window slot of a stamp's track and layer.
fn stream_of(track: u8, layer: u8) -> usize {
    if usize::from(track) == AUDIO { AUDIO } else { VIDEO + usize::from(layer.min(2)) }
}

struct Leg {
    ssrc: u32,
    publisher: u32,
    track: u8,
    offset: u16,
    last: u64,
    in_window: u64,
    /// Simulcast video: layers, frames, freezes.
    sim: Option<Box<SimLeg>>,
}

/// A subscriber's receive side in simulcast runs: its policer and feedback.
struct SimRx {
    bucket: Option<TokenBucket>,
    cap_drops: u64,
    twcc: Option<Box<TwccRecorder>>,
    next_fb: Instant,
    next_remb: Instant,
    fb_sent: u64,
    remb_sent: u64,
    rtcp_ssrc: u32,
}

struct Client {
    spec: ClientSpec,
    ip: IpAddr,
    phase: Phase,
    username: String,
    key: Option<IntegrityKey>,
    /// Our short-term key, to check and sign answers to the server's checks.
    local_key: Option<IntegrityKey>,
    txid: TransactionId,
    dtls: Option<DtlsEndpoint>,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
    publisher: Option<Publisher>,
    legs: Vec<Leg>,
    got_media: bool,
    sample: u32,
    sim_rx: Option<Box<SimRx>>,
}

/// Settings of a [`LoadCore`].
#[derive(Clone)]
pub struct LoadSettings {
    pub media: MediaProfile,
    /// Decrypt and check one packet in this many (1 = every packet).
    pub verify_every: u32,
    /// Shared time origin of send stamps.
    pub epoch: Instant,
    /// DTLS context with the load generator's certificate (`None` in raw mode).
    pub dtls: Option<DtlsContext>,
    /// `--simulcast`: publishers send three layers, subscribers follow them (see
    /// [`simulcast`]).
    pub simulcast: bool,
    /// `--remb`: simulcast subscribers also send REMB.
    pub remb: bool,
}

/// Track indices.
const AUDIO: usize = 0;
const VIDEO: usize = 1;

/// See the module docs.
pub struct LoadCore {
    s: LoadSettings,
    clients: Vec<Option<Client>>,
    /// Per client index: the publisher's window `[start, end)` per stream (audio, video
    /// layers).
    windows: Vec<[(u64, u64); STREAMS]>,
    window_open: bool,
    /// When the last window opened and closed (its video bitrate per leg).
    window_at: (Option<Instant>, Option<Instant>),
    media_on: bool,
    events: std::collections::VecDeque<LoadEvent>,
    next_scan: Instant,
    next_second: Instant,
    next_media: Instant,
    sec: Second,
    sec_hist: Hist,
    report: CoreReport,
}

impl LoadCore {
    pub fn new(s: LoadSettings, now: Instant) -> LoadCore {
        LoadCore {
            s,
            clients: Vec::new(),
            windows: Vec::new(),
            window_open: false,
            window_at: (None, None),
            media_on: true,
            events: Default::default(),
            next_scan: now,
            next_second: now + SECOND,
            next_media: now + Duration::from_secs(3600),
            sec: Second::default(),
            sec_hist: Hist::default(),
            report: CoreReport::default(),
        }
    }

    fn add(&mut self, now: Instant, spec: ClientSpec, tx: &mut TxQueue) {
        let i = spec.index as usize;
        if i > 16 * 254 * 256 {
            self.events.push_back(LoadEvent::Failed { index: spec.index, reason: "index" });
            return;
        }
        if self.clients.len() <= i {
            self.clients.resize_with(i + 1, || None);
            self.windows.resize(i + 1, [(0, 0); STREAMS]);
        }
        let publisher = spec.publish.map(|(a, v)| Publisher {
            ssrc: [a, v, rand::random::<u32>() | 1, rand::random::<u32>() | 1],
            next: [now, now],
            frame: 0,
            seq: [rand::random::<u16>() as u64; STREAMS],
            twcc_seq: rand::random(),
            force_key: [false; 3],
            picture_id: [rand::random::<u16>() & 0x7FFF; 3],
            tl0: [rand::random(); 3],
            rtx: self.s.simulcast.then(RtxLayers::new),
        });
        let sim_rx = (self.s.simulcast && spec.publish.is_none()).then(|| {
            Box::new(SimRx {
                bucket: spec.cap_bps.map(TokenBucket::new),
                cap_drops: 0,
                twcc: (spec.twcc_ext != 0).then(Box::default),
                next_fb: now + TWCC_INTERVAL,
                next_remb: now + REMB_INTERVAL,
                fb_sent: 0,
                remb_sent: 0,
                rtcp_ssrc: rand::random::<u32>() | 1,
            })
        });
        let (username, key) = match &spec.secure {
            Some(s) => (
                format!("{}:{}", s.remote_ufrag, s.local_ufrag),
                Some(IntegrityKey::short_term(s.remote_pwd.as_bytes())),
            ),
            None => (String::new(), None),
        };
        let local_key = spec
            .secure
            .as_ref()
            .filter(|s| !s.local_pwd.is_empty())
            .map(|s| IntegrityKey::short_term(s.local_pwd.as_bytes()));
        let mut c = Client {
            local_key,
            ip: IpAddr::V4(client_ip(spec.index)),
            phase: Phase::Checking { next: now, tries: 0 },
            username,
            key,
            txid: rand::random(),
            dtls: None,
            srtp_out: None,
            srtp_in: None,
            publisher,
            legs: Vec::new(),
            got_media: false,
            sample: 0,
            sim_rx,
            spec,
        };
        if c.spec.secure.is_none() {
            c.phase = Phase::Connected { next_consent: now + Duration::from_secs(3600) };
            self.events.push_back(LoadEvent::Connected { index: c.spec.index, at: now });
        } else {
            send_check(&mut c, now, tx);
        }
        self.clients[i] = Some(c);
        self.next_media = now;
    }

    fn scan(&mut self, now: Instant, tx: &mut TxQueue) {
        for c in self.clients.iter_mut().flatten() {
            match &mut c.phase {
                Phase::Checking { next, tries } => {
                    if *next <= now {
                        if *tries >= CHECK_TRIES {
                            c.phase = Phase::Failed;
                            self.events.push_back(LoadEvent::Failed {
                                index: c.spec.index,
                                reason: "ICE: no answer to binding requests",
                            });
                            continue;
                        }
                        send_check(c, now, tx);
                    }
                }
                Phase::Dtls => {
                    if let Some(d) = c.dtls.as_mut()
                        && d.poll_timeout().is_some_and(|t| t <= now)
                    {
                        d.handle_timeout(now);
                        if let Some(ev) = drain_dtls(c, now, tx) {
                            self.events.push_back(ev);
                        }
                    }
                }
                Phase::Connected { next_consent } => {
                    if *next_consent <= now {
                        *next_consent = now + CONSENT_INTERVAL;
                        send_check(c, now, tx);
                    }
                    if c.sim_rx.is_some() {
                        send_feedback(c, now, self.s.remb, self.window_open, tx);
                    }
                }
                Phase::Failed => {}
            }
        }
    }

    fn send_media(&mut self, now: Instant, tx: &mut TxQueue) {
        let m = self.s.media;
        let frame_gap =
            if m.fps > 0 { Duration::from_secs(1) / m.fps } else { Duration::from_secs(3600) };
        let mut next_min = now + Duration::from_secs(3600);
        let epoch = self.s.epoch;
        for c in self.clients.iter_mut().flatten() {
            if !matches!(c.phase, Phase::Connected { .. }) {
                continue;
            }
            let Some(p) = c.publisher.as_mut() else { continue };
            if self.media_on {
                // Video: one frame per tick; catch up at most one second, else skip ahead.
                if m.video_bitrate > 0 && m.fps > 0 && p.next[VIDEO] <= now && self.s.simulcast {
                    if now.saturating_duration_since(p.next[VIDEO]) > SECOND {
                        self.report.late_frames += 1;
                        p.next[VIDEO] = now;
                    }
                    let out = SimOut {
                        tx: &mut *tx,
                        dst: c.spec.server,
                        src: c.ip,
                        srtp: c.srtp_out.as_mut(),
                        publisher: c.spec.index,
                        send_ns: now.saturating_duration_since(epoch).as_nanos() as u64,
                    };
                    let (sec, report, window) = (&mut self.sec, &mut self.report, self.window_open);
                    send_sim_frame(out, p, &m, &mut |ok, bytes| {
                        count_sent(sec, report, ok, bytes, window)
                    });
                    p.frame += 1;
                    p.next[VIDEO] += frame_gap;
                }
                if m.video_bitrate > 0 && m.fps > 0 && p.next[VIDEO] <= now {
                    if now.saturating_duration_since(p.next[VIDEO]) > SECOND {
                        self.report.late_frames += 1;
                        p.next[VIDEO] = now;
                    }
                    let n = m.packets_of_frame(p.frame);
                    let key = m.is_keyframe(p.frame);
                    let ts = (p.frame as u32).wrapping_mul(90_000 / m.fps.max(1));
                    let bytes_per_frame = m.frame_bytes(p.frame);
                    let pkt = m.video_packet.clamp(MIN_PAYLOAD, MAX_PAYLOAD);
                    for k in 0..n {
                        let left = bytes_per_frame.saturating_sub(k * pkt);
                        let size = left.clamp(MIN_PAYLOAD, pkt);
                        let hdr = match (k, key) {
                            (0, true) => VP8_KEY_HEADER,
                            (0, false) => VP8_DELTA_HEADER,
                            _ => [0; STAMP_OFFSET],
                        };
                        let seq = p.seq[VIDEO];
                        let ok = send_rtp(
                            tx,
                            c.spec.server,
                            c.ip,
                            c.srtp_out.as_mut(),
                            RtpOut {
                                pt: VP8_PT,
                                marker: k + 1 == n,
                                seq,
                                ts,
                                ssrc: p.ssrc[VIDEO],
                                ext: &[],
                                codec_hdr: &hdr,
                                publisher: c.spec.index,
                                track: VIDEO as u8,
                                layer: [0; 3],
                                send_ns: now.saturating_duration_since(epoch).as_nanos() as u64,
                                size,
                                rtx_seq: None,
                            },
                        );
                        // A packet that never left is not expected of the server either.
                        if ok {
                            p.seq[VIDEO] += 1;
                        }
                        count_sent(&mut self.sec, &mut self.report, ok, size, self.window_open);
                    }
                    p.frame += 1;
                    p.next[VIDEO] += frame_gap;
                }
                if m.audio_packet > 0 && p.next[AUDIO] <= now {
                    if now.saturating_duration_since(p.next[AUDIO]) > SECOND {
                        p.next[AUDIO] = now;
                    }
                    let seq = p.seq[AUDIO];
                    let size = m.audio_packet.clamp(MIN_PAYLOAD, MAX_PAYLOAD);
                    let mut ext = [0u8; EXT_BLOCK_MAX];
                    let ext_len = if self.s.simulcast {
                        p.twcc_seq = p.twcc_seq.wrapping_add(1);
                        ext_block(&mut ext, b"0", (EXT_RID, b""), p.twcc_seq)
                    } else {
                        0
                    };
                    let ok = send_rtp(
                        tx,
                        c.spec.server,
                        c.ip,
                        c.srtp_out.as_mut(),
                        RtpOut {
                            pt: OPUS_PT,
                            marker: false,
                            seq,
                            ts: (seq as u32).wrapping_mul(960),
                            ssrc: p.ssrc[AUDIO],
                            ext: &ext[..ext_len],
                            codec_hdr: &OPUS_HEADER,
                            publisher: c.spec.index,
                            track: AUDIO as u8,
                            layer: [0; 3],
                            send_ns: now.saturating_duration_since(epoch).as_nanos() as u64,
                            size,
                            rtx_seq: None,
                        },
                    );
                    if ok {
                        p.seq[AUDIO] += 1;
                    }
                    let bytes = size + ext_len;
                    count_sent(&mut self.sec, &mut self.report, ok, bytes, self.window_open);
                    p.next[AUDIO] += AUDIO_PTIME;
                }
            }
            for t in [AUDIO, VIDEO] {
                let active =
                    if t == VIDEO { m.video_bitrate > 0 && m.fps > 0 } else { m.audio_packet > 0 };
                if active && self.media_on {
                    next_min = next_min.min(p.next[t]);
                }
            }
        }
        self.next_media = next_min;
    }

    /// Closes every publisher's window at its next packet (and the subscribers' freeze
    /// counting at `now`).
    fn end_window(&mut self, now: Instant) {
        let was_open = self.window_open;
        if was_open {
            self.window_at.1 = Some(now);
        }
        self.window_open = false;
        for (i, c) in self.clients.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            if let Some(p) = &c.publisher {
                for (w, s) in self.windows[i].iter_mut().zip(p.seq) {
                    w.1 = w.1.min(s);
                }
            }
            for l in c.legs.iter_mut().filter(|_| was_open) {
                if let Some(s) = l.sim.as_deref_mut() {
                    s.frames.end_window(now);
                }
            }
        }
    }

    fn second(&mut self, now: Instant) {
        self.sec.t = now.saturating_duration_since(self.s.epoch).as_secs_f64();
        self.sec.p50_us = self.sec_hist.quantile(0.5);
        self.sec.p99_us = self.sec_hist.quantile(0.99);
        self.sec.samples = self.sec_hist.count();
        let s = std::mem::take(&mut self.sec);
        self.sec_hist.clear();
        self.events.push_back(LoadEvent::Second(Box::new(s)));
    }

    fn on_stun(
        &mut self,
        now: Instant,
        idx: usize,
        from: SocketAddr,
        buf: &[u8],
        tx: &mut TxQueue,
    ) {
        let Some(Some(c)) = self.clients.get_mut(idx) else { return };
        let Ok(msg) = StunView::parse(buf) else { return };
        if msg.method() == Method::BINDING && msg.class() == StunClass::Request {
            answer_check(c, &msg, from, tx);
            return;
        }
        if msg.method() != Method::BINDING || msg.transaction_id() != &c.txid {
            return;
        }
        match msg.class() {
            StunClass::SuccessResponse => {
                if let Phase::Checking { .. } = c.phase {
                    let (Some(ctx), Some(sec)) = (self.s.dtls.as_ref(), c.spec.secure.as_ref())
                    else {
                        return;
                    };
                    c.dtls =
                        Some(DtlsEndpoint::new(ctx, DtlsRole::Client, now, sec.remote_fingerprint));
                    c.phase = Phase::Dtls;
                    if let Some(ev) = drain_dtls(c, now, tx) {
                        self.events.push_back(ev);
                    }
                }
            }
            StunClass::ErrorResponse => {
                c.phase = Phase::Failed;
                self.events.push_back(LoadEvent::Failed {
                    index: c.spec.index,
                    reason: "ICE: error response",
                });
            }
            _ => {}
        }
    }

    fn on_rtp(&mut self, now: Instant, idx: usize, buf: &mut [u8], tx: &mut TxQueue) {
        let Some(Some(c)) = self.clients.get_mut(idx) else { return };
        if buf.len() < RTP_HEADER || !matches!(c.phase, Phase::Connected { .. }) {
            return;
        }
        let len = buf.len();
        // A capped leg's link: what exceeds its rate never arrives.
        if let Some(rx) = c.sim_rx.as_deref_mut()
            && let Some(b) = rx.bucket.as_mut()
            && !b.admit(now, len)
        {
            rx.cap_drops += u64::from(self.window_open);
            return;
        }
        let pt = buf[1] & 0x7f;
        if (72..=79).contains(&pt) {
            // RTCP (SR, RR, PLI, REMB, TWCC from the SFU): not counted as media. A simulcast
            // publisher answers a PLI or FIR with a keyframe of the layer it names.
            self.report.rtcp_in += 1;
            if self.s.simulcast
                && let Some(p) = c.publisher.as_mut()
                && let Some(n) = match c.srtp_in.as_mut() {
                    Some(srtp) => srtp.unprotect_rtcp(buf).ok(),
                    None => Some(len),
                }
            {
                let out = SimOut {
                    tx,
                    dst: c.spec.server,
                    src: c.ip,
                    srtp: c.srtp_out.as_mut(),
                    publisher: c.spec.index,
                    send_ns: 0,
                };
                let (keys, resent) = publisher_feedback(&buf[..n], p, out);
                if self.window_open {
                    self.report.publisher_keyframe_requests += keys;
                    self.report.publisher_retransmissions += resent;
                }
            }
            return;
        }
        let seq16 = u16::from_be_bytes([buf[2], buf[3]]);
        let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let sim = self.s.simulcast;
        if let Some(rx) = c.sim_rx.as_deref_mut()
            && let Some(rec) = rx.twcc.as_deref_mut()
            && let Ok(v) = crate::wire::RtpView::parse(buf)
            && let Some(tseq) = v.transport_cc(c.spec.twcc_ext)
        {
            rec.on_packet(tseq, now.saturating_duration_since(self.s.epoch));
        }
        let leg = c.legs.iter().position(|l| l.ssrc == ssrc);
        c.sample = c.sample.wrapping_add(1);
        // Simulcast runs read every packet: its layer and frame are in the stamp.
        let verify = sim || leg.is_none() || c.sample % self.s.verify_every.max(1) == 0;
        let mut stamp = None;
        let mut vp8 = None;
        if verify {
            let hl = header_len(buf);
            let plain = match (c.srtp_in.as_mut(), hl) {
                (_, None) => None,
                (Some(srtp), Some(hl)) => match srtp.unprotect_rtp(buf, hl) {
                    Ok(n) => Some((hl, n)),
                    Err(_) => {
                        self.report.srtp_failures += 1;
                        None
                    }
                },
                (None, Some(hl)) => Some((hl, len)),
            };
            // Padding only (an SFU probing the path): counted, no stamp expected; it takes a
            // sequence number of a simulcast leg.
            if let Some((_, n)) = plain
                && buf[0] & 0x20 != 0
                && crate::wire::RtpView::parse(&buf[..n]).is_ok_and(|v| v.payload().is_empty())
            {
                self.report.padding_in += 1;
                if let Some(l) = leg.and_then(|i| c.legs.get_mut(i))
                    && let Some(sl) = l.sim.as_deref_mut()
                {
                    let ext = unwrap_seq(l.last, seq16.wrapping_sub(l.offset));
                    l.last = l.last.max(ext);
                    sl.on_padding(ext, self.window_open);
                }
                return;
            }
            if let Some((hl, n)) = plain {
                let payload = &buf[hl..n];
                let at = if sim && pt == VP8_PT { SIM_STAMP_OFFSET } else { STAMP_OFFSET };
                stamp = read_stamp_at(payload, at);
                match stamp {
                    Some(_) => self.report.verified += 1,
                    None => self.report.verify_failures += 1,
                }
                if sim
                    && pt == VP8_PT
                    && let Some(s) = stamp
                {
                    let info = crate::wire::codec::vp8::inspect(payload, buf[1] & 0x80 != 0);
                    // A keyframe's size must be its layer's.
                    if let Ok(i) = info
                        && i.keyframe
                    {
                        let want = simulcast::LAYER_SIZES[usize::from(s.layer[0].clamp(1, 3) - 1)];
                        if simulcast::keyframe_size(payload, i.payload_offset) != Some(want) {
                            self.report.verify_failures += 1;
                        }
                    }
                    vp8 = info.ok();
                }
            }
        }
        let li = match (leg, stamp) {
            (Some(i), _) => i,
            (None, Some(s)) if c.legs.len() < MAX_LEGS => {
                // A simulcast video leg counts by the SFU's sequence numbers (continuous across
                // its layer switches); other legs by the publisher's, through a fixed offset.
                let sim_video = sim && usize::from(s.track) == VIDEO;
                c.legs.push(Leg {
                    ssrc,
                    publisher: s.publisher,
                    track: s.track,
                    offset: if sim_video { 0 } else { seq16.wrapping_sub(s.seq as u16) },
                    last: if sim_video { 0x1_0000 | u64::from(seq16) } else { s.seq },
                    in_window: 0,
                    sim: sim_video.then(Box::default),
                });
                c.legs.len() - 1
            }
            (None, _) => {
                self.report.unknown += 1;
                return;
            }
        };
        let l = &mut c.legs[li];
        let ext = unwrap_seq(l.last, seq16.wrapping_sub(l.offset));
        if ext > l.last {
            l.last = ext;
        }
        if let Some(s) = stamp
            && l.sim.is_none()
            && s.seq != ext
        {
            self.report.verify_failures += 1;
        }
        let in_window = match (&l.sim, stamp) {
            // The publisher's window of the stamp's layer.
            (Some(_), Some(s)) => {
                let (start, end) = self
                    .windows
                    .get(s.publisher as usize)
                    .map(|w| w[stream_of(s.track, s.layer[0].saturating_sub(1))])
                    .unwrap_or((0, 0));
                s.seq >= start && s.seq < end
            }
            (Some(_), None) => false,
            (None, _) => {
                let (start, end) = self
                    .windows
                    .get(l.publisher as usize)
                    .map(|w| w[stream_of(l.track, 0)])
                    .unwrap_or((0, 0));
                ext >= start && ext < end
            }
        };
        if in_window {
            l.in_window += 1;
        }
        if let (Some(sl), Some(s)) = (l.sim.as_deref_mut(), stamp) {
            let layer = s.layer[0].saturating_sub(1);
            sl.on_packet(layer, ext, len, vp8.and_then(|i| i.temporal_id), in_window);
            sl.frames.on_packet(now, ts, s.layer[1], s.layer[2], in_window);
        }
        self.sec.recv_packets += 1;
        self.sec.recv_bytes += len as u64;
        if in_window {
            self.report.recv_packets += 1;
            self.report.recv_bytes += len as u64;
        }
        if let Some(s) = stamp {
            let sent = self.s.epoch + Duration::from_nanos(s.send_ns);
            let us = now.saturating_duration_since(sent).as_micros() as u64;
            self.sec_hist.record(us);
            if in_window {
                self.report.latency.record(us);
            }
        }
        if !c.got_media {
            c.got_media = true;
            self.events.push_back(LoadEvent::FirstMedia { index: c.spec.index, at: now });
        }
    }
    /// The report of the last window (its counters; the run's for the cumulative ones:
    /// verification, SRTP failures, RTCP, unknown datagrams).
    fn final_report(&mut self) -> CoreReport {
        let mut r = self.report.clone();
        r.subscribers.clear();
        r.sim.clear();
        let m = self.s.media;
        let window_s = match self.window_at {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        for c in self.clients.iter().flatten() {
            if c.publisher.is_some() {
                continue;
            }
            let mut expected = 0;
            if let Some(p) = c.spec.source {
                let w = self.windows.get(p as usize).copied().unwrap_or_default();
                if m.audio_packet > 0 {
                    expected += w[AUDIO].1.saturating_sub(w[AUDIO].0);
                }
                if m.video_bitrate > 0 && m.fps > 0 && !self.s.simulcast {
                    expected += w[VIDEO].1.saturating_sub(w[VIDEO].0);
                }
            }
            let delivered = c.legs.iter().map(|l| l.in_window).sum();
            let video = c.legs.iter().find_map(|l| l.sim.as_deref());
            // Simulcast: the SFU chose what to forward; the video packets expected are the
            // span of its sequence numbers in the window.
            expected += video.map_or(0, SimLeg::expected);
            r.subscribers.push(SubscriberOutcome { index: c.spec.index, expected, delivered });
            if let Some(rx) = c.sim_rx.as_deref() {
                r.sim.push(sim_outcome(c.spec.index, rx, video, window_s));
            }
        }
        r
    }
}

/// One simulcast subscriber's outcome: its receive side and its video leg (`None`: no video
/// arrived).
fn sim_outcome(index: u32, rx: &SimRx, video: Option<&SimLeg>, window_s: f64) -> SimOutcome {
    let empty = SimLeg::default();
    let v = video.unwrap_or(&empty);
    let f: &FrameTracker = &v.frames;
    SimOutcome {
        index,
        cap_bps: rx.bucket.as_ref().map(TokenBucket::rate_bps),
        layer: v.main_layer(),
        last_layer: v.last_layer,
        layer_packets: v.layer_packets,
        switches: v.switches,
        tids: v.tids,
        video_expected: v.expected(),
        video_delivered: v.delivered(),
        video_bps: if window_s > 0.0 {
            v.layer_bytes.iter().sum::<u64>() as f64 * 8.0 / window_s
        } else {
            0.0
        },
        frames: f.frames,
        freezes: f.freezes,
        freeze_total: f.freeze_total,
        longest_freeze: f.longest_freeze,
        cap_drops: rx.cap_drops,
        twcc_feedback: rx.fb_sent,
        remb: rx.remb_sent,
        padding: v.padding,
    }
}

/// A simulcast publisher's answers to the SFU's feedback in a compound RTCP packet: a PLI or
/// FIR naming a layer's SSRC marks that layer's next frame a keyframe; a NACK naming one is
/// answered with RTX from the layer's history (packets too old are not). Returns the keyframe
/// requests and the retransmissions sent.
fn publisher_feedback(rtcp: &[u8], p: &mut Publisher, mut o: SimOut<'_>) -> (u64, u64) {
    let Ok(c) = RtcpCompound::parse_relaxed(rtcp) else { return (0, 0) };
    let layer_of = |p: &Publisher, ssrc: u32| p.ssrc[VIDEO..].iter().position(|&s| s == ssrc);
    let (mut keys, mut resent) = (0, 0);
    for pkt in c.packets().flatten() {
        let mut ask = |p: &mut Publisher, ssrc: u32| {
            if let Some(l) = layer_of(p, ssrc)
                && let Some(k) = p.force_key.get_mut(l)
            {
                *k = true;
                keys += 1;
            }
        };
        match pkt {
            RtcpPacket::Pli(pli) => ask(p, pli.media_ssrc),
            RtcpPacket::Fir(fir) => fir.entries().for_each(|(ssrc, _)| ask(p, ssrc)),
            RtcpPacket::Nack(nack) => {
                let Some(l) = layer_of(p, nack.media_ssrc) else { continue };
                for lost in nack.lost() {
                    resent += u64::from(retransmit(&mut o, p, l, lost));
                }
            }
            _ => {}
        }
    }
    (keys, resent)
}

/// Sends packet `lost` of layer `l` again on the layer's RTX stream (`repaired-rid`), if the
/// history still has it.
fn retransmit(o: &mut SimOut<'_>, p: &mut Publisher, l: usize, lost: u16) -> bool {
    let next = p.seq[VIDEO + l];
    let Some(r) = p.rtx.as_deref_mut() else { return false };
    let ext = unwrap_seq(next.saturating_sub(1), lost);
    let Some(e) = r.sent.get(l).map(|h| h[(ext % RTX_HISTORY as u64) as usize]) else {
        return false;
    };
    if e.size == 0 || e.seq != ext || ext >= next {
        return false;
    }
    r.seq[l] = r.seq[l].wrapping_add(1);
    p.twcc_seq = p.twcc_seq.wrapping_add(1);
    let mut ext_b = [0u8; EXT_BLOCK_MAX];
    let rid = (simulcast::EXT_REPAIRED_RID, simulcast::RIDS[l].as_bytes());
    let ext_len = ext_block(&mut ext_b, b"1", rid, p.twcc_seq);
    send_rtp(
        o.tx,
        o.dst,
        o.src,
        o.srtp.as_deref_mut(),
        RtpOut {
            pt: simulcast::RTX_PT,
            marker: e.marker,
            seq: e.seq,
            ts: e.ts,
            ssrc: r.ssrc[l],
            ext: &ext_b[..ext_len],
            codec_hdr: &e.hdr,
            publisher: o.publisher,
            track: VIDEO as u8,
            layer: e.layer,
            send_ns: e.send_ns,
            size: e.size,
            rtx_seq: Some(r.seq[l]),
        },
    )
}

fn count_sent(sec: &mut Second, r: &mut CoreReport, ok: bool, size: usize, window: bool) {
    if ok {
        sec.sent_packets += 1;
        sec.sent_bytes += (size + RTP_HEADER) as u64;
        if window {
            r.sent_packets += 1;
            r.sent_bytes += (size + RTP_HEADER) as u64;
        }
    } else {
        r.tx_full += 1;
    }
}

/// The extended sequence number nearest to `last` whose low 16 bits are `s`.
pub fn unwrap_seq(last: u64, s: u16) -> u64 {
    let cand = (last & !0xffff) | u64::from(s);
    let up = cand.wrapping_add(0x1_0000);
    let down = cand.wrapping_sub(0x1_0000);
    let dist = |x: u64| x.abs_diff(last);
    let mut best = cand;
    if dist(up) < dist(best) {
        best = up;
    }
    if cand >= 0x1_0000 && dist(down) < dist(best) {
        best = down;
    }
    best
}

fn header_len(buf: &[u8]) -> Option<usize> {
    crate::wire::RtpView::parse(buf).ok().map(|v| v.header_len())
}

/// A payload stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub track: u8,
    /// Simulcast video: layer + 1 (0: not simulcast), the packet's index in its frame, the
    /// frame's packet count.
    pub layer: [u8; 3],
    pub seq: u64,
    pub send_ns: u64,
}

/// Reads the stamp of an RTP payload.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    read_stamp_at(payload, STAMP_OFFSET)
}

/// Reads the stamp at `at` of an RTP payload ([`SIM_STAMP_OFFSET`] for simulcast video).
pub fn read_stamp_at(payload: &[u8], at: usize) -> Option<Stamp> {
    let s = payload.get(at..at.checked_add(STAMP_LEN)?)?;
    let u32_at = |i: usize| u32::from_be_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[i..i + 8]);
        u64::from_be_bytes(b)
    };
    (u32_at(0) == STAMP_MAGIC).then(|| Stamp {
        publisher: u32_at(4),
        track: s[8],
        layer: [s[9], s[10], s[11]],
        seq: u64_at(12),
        send_ns: u64_at(20),
    })
}

struct RtpOut<'a> {
    pt: u8,
    marker: bool,
    seq: u64,
    ts: u32,
    ssrc: u32,
    /// The header extension block (profile, length, elements); empty: none.
    ext: &'a [u8],
    /// The codec's bytes before the stamp.
    codec_hdr: &'a [u8],
    publisher: u32,
    track: u8,
    /// Simulcast: layer + 1, packet index in the frame, packets in the frame.
    layer: [u8; 3],
    send_ns: u64,
    /// Payload bytes (at least the codec header and the stamp).
    size: usize,
    /// A retransmission (RFC 4588) with this sequence number on the RTX stream: `seq` (the
    /// original's, in the stamp) is then written before the payload as the OSN.
    rtx_seq: Option<u16>,
}

/// Writes one RTP packet (SRTP-protected when `srtp` is given) into a send slot.
fn send_rtp(
    tx: &mut TxQueue,
    dst: SocketAddr,
    src: IpAddr,
    srtp: Option<&mut SrtpContext>,
    p: RtpOut,
) -> bool {
    let hl = RTP_HEADER + p.ext.len();
    let pre = if p.rtx_seq.is_some() { 2 } else { 0 };
    let at = p.codec_hdr.len();
    if p.size < at + STAMP_LEN || hl + pre + p.size > 1400 {
        return false;
    }
    let Some(mut slot) = tx.push(dst) else { return false };
    slot.set_source(Some(src));
    let b = slot.buf();
    if b.len() < hl + p.size + 64 {
        return false;
    }
    b[0] = if p.ext.is_empty() { 0x80 } else { 0x90 };
    b[1] = p.pt | if p.marker { 0x80 } else { 0 };
    b[2..4].copy_from_slice(&p.rtx_seq.unwrap_or(p.seq as u16).to_be_bytes());
    b[4..8].copy_from_slice(&p.ts.to_be_bytes());
    b[8..12].copy_from_slice(&p.ssrc.to_be_bytes());
    b[RTP_HEADER..hl].copy_from_slice(p.ext);
    if p.rtx_seq.is_some() {
        b[hl..hl + 2].copy_from_slice(&(p.seq as u16).to_be_bytes());
    }
    let pl = &mut b[hl + pre..hl + pre + p.size];
    pl[..at].copy_from_slice(p.codec_hdr);
    let s = &mut pl[at..at + STAMP_LEN];
    s[0..4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    s[4..8].copy_from_slice(&p.publisher.to_be_bytes());
    s[8] = p.track;
    s[9..12].copy_from_slice(&p.layer);
    s[12..20].copy_from_slice(&p.seq.to_be_bytes());
    s[20..28].copy_from_slice(&p.send_ns.to_be_bytes());
    // The rest of the payload keeps whatever the slot held: filler, as a codec's bytes are.
    let len = hl + pre + p.size;
    let n = match srtp {
        Some(ctx) => match ctx.protect_rtp(b, len, hl) {
            Ok(n) => n,
            Err(_) => return false,
        },
        None => len,
    };
    slot.commit(n);
    true
}

/// Largest extension block [`ext_block`] writes: its header and mid, rid and transport-wide
/// sequence elements, padded.
const EXT_BLOCK_MAX: usize = 20;

/// Writes a one-byte-form (RFC 8285) extension block: `mid`, `rid` (its extension id and value,
/// left out when empty: `rid` or `repaired-rid`) and the transport-wide sequence number `twcc`. Returns its length (a multiple of 4).
fn ext_block(out: &mut [u8; EXT_BLOCK_MAX], mid: &[u8], rid: (u8, &[u8]), twcc: u16) -> usize {
    let mut q = 4;
    let mut put = |id: u8, v: &[u8]| {
        if (1..=16).contains(&v.len()) && q + 1 + v.len() <= EXT_BLOCK_MAX {
            out[q] = (id << 4) | (v.len() as u8 - 1);
            out[q + 1..q + 1 + v.len()].copy_from_slice(v);
            q += 1 + v.len();
        }
    };
    put(EXT_MID, mid);
    put(rid.0, rid.1);
    put(EXT_TWCC, &twcc.to_be_bytes());
    let end = q.next_multiple_of(4);
    out[q..end].fill(0);
    out[0..2].copy_from_slice(&crate::wire::rtp::PROFILE_ONE_BYTE.to_be_bytes());
    out[2..4].copy_from_slice(&(((end - 4) / 4) as u16).to_be_bytes());
    end
}

/// Where a publisher's simulcast frame goes.
struct SimOut<'a> {
    tx: &'a mut TxQueue,
    dst: SocketAddr,
    src: IpAddr,
    srtp: Option<&'a mut SrtpContext>,
    publisher: u32,
    send_ns: u64,
}

/// Sends frame `p.frame` of every simulcast layer (lowest first), calling `sent(ok, bytes)`
/// per packet. A layer's keyframe when the profile says so or a PLI asked for one.
fn send_sim_frame(
    mut o: SimOut<'_>,
    p: &mut Publisher,
    m: &MediaProfile,
    sent: &mut dyn FnMut(bool, usize),
) {
    let ts = (p.frame as u32).wrapping_mul(90_000 / m.fps.max(1));
    for layer in 0..3usize {
        let key = m.is_keyframe(p.frame) || p.force_key[layer];
        p.force_key[layer] = false;
        let (bytes, pkt, n) = simulcast::layer_frame(m, layer, key);
        let (tid, sync) = if key { (0, false) } else { simulcast::temporal_of(p.frame) };
        if tid == 0 {
            p.tl0[layer] = p.tl0[layer].wrapping_add(1);
        }
        p.picture_id[layer] = p.picture_id[layer].wrapping_add(1) & 0x7FFF;
        let slot = VIDEO + layer;
        for k in 0..n {
            let hdr = simulcast::write_vp8_header(&Vp8Header {
                first: k == 0,
                key: key && k == 0,
                picture_id: p.picture_id[layer],
                tl0picidx: p.tl0[layer],
                tid,
                sync,
                size: simulcast::LAYER_SIZES[layer],
            });
            p.twcc_seq = p.twcc_seq.wrapping_add(1);
            let mut ext = [0u8; EXT_BLOCK_MAX];
            let ext_len =
                ext_block(&mut ext, b"1", (EXT_RID, simulcast::RIDS[layer].as_bytes()), p.twcc_seq);
            let size = bytes.saturating_sub(k * pkt).clamp(SIM_STAMP_OFFSET + STAMP_LEN, pkt);
            let seq = p.seq[slot];
            let ok = send_rtp(
                o.tx,
                o.dst,
                o.src,
                o.srtp.as_deref_mut(),
                RtpOut {
                    pt: VP8_PT,
                    marker: k + 1 == n,
                    seq,
                    ts,
                    ssrc: p.ssrc[slot],
                    ext: &ext[..ext_len],
                    codec_hdr: &hdr,
                    publisher: o.publisher,
                    track: VIDEO as u8,
                    layer: [layer as u8 + 1, k as u8, n as u8],
                    send_ns: o.send_ns,
                    size,
                    rtx_seq: None,
                },
            );
            if ok {
                if let Some(r) = p.rtx.as_deref_mut() {
                    r.sent[layer][(seq % RTX_HISTORY as u64) as usize] = Sent {
                        seq,
                        ts,
                        marker: k + 1 == n,
                        hdr,
                        layer: [layer as u8 + 1, k as u8, n as u8],
                        send_ns: o.send_ns,
                        size,
                    };
                }
                p.seq[slot] += 1;
            }
            sent(ok, size + ext_len);
        }
    }
}

/// A simulcast subscriber's feedback when due: TWCC every [`TWCC_INTERVAL`], REMB (its cap,
/// or [`REMB_UNCAPPED`]) every [`REMB_INTERVAL`] with `remb`.
fn send_feedback(c: &mut Client, now: Instant, remb: bool, window: bool, tx: &mut TxQueue) {
    let Some(rx) = c.sim_rx.as_deref_mut() else { return };
    // SRTCP when the client has keys (raw mode: plain RTCP).
    let mut srtp = c.srtp_out.as_mut();
    let mut protect = |b: &mut [u8], n: usize| match srtp.as_deref_mut() {
        Some(ctx) => ctx.protect_rtcp(b, n).ok(),
        None => Some(n),
    };
    let media_ssrc = c.legs.iter().find(|l| usize::from(l.track) == VIDEO).map_or(0, |l| l.ssrc);
    if rx.next_fb <= now {
        rx.next_fb = now + TWCC_INTERVAL;
        if let Some(rec) = rx.twcc.as_deref_mut()
            && let Some(fb) = rec.build()
            && let Some(mut slot) = tx.push(c.spec.server)
        {
            slot.set_source(Some(c.ip));
            let h = rtcp::twcc::TwccHeader {
                sender_ssrc: rx.rtcp_ssrc,
                media_ssrc,
                base_seq: fb.base_seq,
                reference_time: fb.reference_time,
                fb_pkt_count: fb.fb_pkt_count,
            };
            let b = slot.buf();
            // A feedback too long for one packet is dropped (the next covers what follows).
            let room = b.len().min(1200);
            if let Ok(n) = rtcp::twcc::write(&mut b[..room], &h, rec.deltas())
                && let Some(n) = protect(b, n)
            {
                slot.commit(n);
                rx.fb_sent += u64::from(window);
            }
        }
    }
    if remb && rx.next_remb <= now {
        rx.next_remb = now + REMB_INTERVAL;
        let rate = rx.bucket.as_ref().map_or(REMB_UNCAPPED, TokenBucket::rate_bps);
        if let Some(mut slot) = tx.push(c.spec.server) {
            slot.set_source(Some(c.ip));
            let b = slot.buf();
            if let Ok(n) = rtcp::remb::write(b, rx.rtcp_ssrc, rate, &[media_ssrc])
                && let Some(n) = protect(b, n)
            {
                slot.commit(n);
                rx.remb_sent += u64::from(window);
            }
        }
    }
}

/// Answers the server's connectivity check with a success response (XOR-MAPPED-ADDRESS, signed
/// with our password, FINGERPRINT), when the client knows its password and the request is
/// signed with it; anything else gets no answer.
fn answer_check(c: &Client, msg: &StunView<'_>, from: SocketAddr, tx: &mut TxQueue) {
    let Some(key) = c.local_key.as_ref() else { return };
    if msg.verify_integrity(key).is_err() {
        return;
    }
    let Some(mut slot) = tx.push(from) else { return };
    slot.set_source(Some(c.ip));
    let n = (|| -> Option<usize> {
        let mut w = StunWriter::new(
            slot.buf(),
            StunClass::SuccessResponse,
            Method::BINDING,
            msg.transaction_id(),
        )
        .ok()?;
        w.xor_mapped_address(from).ok()?.message_integrity(key).ok()?.fingerprint().ok()?;
        Some(w.finish())
    })();
    if let Some(n) = n {
        slot.commit(n);
    }
}

fn send_check(c: &mut Client, now: Instant, tx: &mut TxQueue) {
    let Some(key) = c.key.as_ref() else { return };
    if let Phase::Checking { next, tries } = &mut c.phase {
        *next = now + CHECK_INTERVAL;
        *tries += 1;
    } else {
        c.txid = rand::random();
    }
    let Some(mut slot) = tx.push(c.spec.server) else { return };
    slot.set_source(Some(c.ip));
    let n = (|| -> Option<usize> {
        let mut w =
            StunWriter::new(slot.buf(), StunClass::Request, Method::BINDING, &c.txid).ok()?;
        w.username(&c.username)
            .ok()?
            .priority(2_122_260_223)
            .ok()?
            .ice_controlling(u64::from(c.spec.index) + 1)
            .ok()?
            .use_candidate()
            .ok()?
            .message_integrity(key)
            .ok()?
            .fingerprint()
            .ok()?;
        Some(w.finish())
    })();
    if let Some(n) = n {
        slot.commit(n);
    }
}

/// Sends the DTLS endpoint's output; on connection builds the SRTP contexts.
fn drain_dtls(c: &mut Client, now: Instant, tx: &mut TxQueue) -> Option<LoadEvent> {
    let d = c.dtls.as_mut()?;
    loop {
        let Some(mut slot) = tx.push(c.spec.server) else { break };
        slot.set_source(Some(c.ip));
        match d.poll_transmit(slot.buf()) {
            Some(n) => slot.commit(n),
            None => break,
        }
    }
    let mut out = None;
    while let Some(ev) = d.poll_event() {
        match ev {
            DtlsEvent::Connected { keying_material, .. } => {
                match SrtpContext::from_dtls_keys(&keying_material, DtlsRole::Client) {
                    Ok((o, i)) => {
                        c.srtp_out = Some(o);
                        c.srtp_in = Some(i);
                        c.phase = Phase::Connected { next_consent: now + CONSENT_INTERVAL };
                        out = Some(LoadEvent::Connected { index: c.spec.index, at: now });
                    }
                    Err(_) => {
                        c.phase = Phase::Failed;
                        out = Some(LoadEvent::Failed { index: c.spec.index, reason: "SRTP keys" });
                    }
                }
            }
            DtlsEvent::Failed(_) => {
                c.phase = Phase::Failed;
                out = Some(LoadEvent::Failed { index: c.spec.index, reason: "DTLS failed" });
            }
            DtlsEvent::Closed => {
                c.phase = Phase::Failed;
                out = Some(LoadEvent::Failed { index: c.spec.index, reason: "DTLS closed" });
            }
        }
    }
    out
}

impl ShardCore for LoadCore {
    type Command = LoadCommand;
    type Event = LoadEvent;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let Some(idx) = meta.dst_ip.and_then(client_index) else {
            self.report.unknown += 1;
            return;
        };
        let idx = idx as usize;
        match buf.first() {
            Some(0..=3) => self.on_stun(now, idx, meta.src, buf, tx),
            Some(20..=63) => {
                let Some(Some(c)) = self.clients.get_mut(idx) else { return };
                if let Some(d) = c.dtls.as_mut() {
                    d.handle_packet(now, buf);
                    if let Some(ev) = drain_dtls(c, now, tx) {
                        self.events.push_back(ev);
                    }
                }
            }
            Some(128..=191) => self.on_rtp(now, idx, buf, tx),
            _ => self.report.unknown += 1,
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: LoadCommand, tx: &mut TxQueue) {
        match cmd {
            LoadCommand::Add(spec) => self.add(now, *spec, tx),
            LoadCommand::StartWindow => {
                self.window_open = true;
                let r = &mut self.report;
                (r.sent_packets, r.sent_bytes, r.recv_packets, r.recv_bytes) = (0, 0, 0, 0);
                (r.tx_full, r.late_frames) = (0, 0);
                r.latency.clear();
                (r.publisher_keyframe_requests, r.publisher_retransmissions) = (0, 0);
                self.window_at = (Some(now), None);
                for (i, c) in self.clients.iter_mut().enumerate() {
                    let Some(c) = c else { continue };
                    for l in &mut c.legs {
                        l.in_window = 0;
                        if let Some(s) = l.sim.as_deref_mut() {
                            s.start_window();
                        }
                    }
                    if let Some(rx) = c.sim_rx.as_deref_mut() {
                        (rx.cap_drops, rx.fb_sent, rx.remb_sent) = (0, 0, 0);
                    }
                    if let Some(p) = &c.publisher {
                        self.windows[i] = p.seq.map(|s| (s, u64::MAX));
                    }
                }
            }
            LoadCommand::EndWindow => self.end_window(now),
            LoadCommand::StopMedia => {
                self.media_on = false;
                self.end_window(now);
            }
            LoadCommand::SetMedia(m) => self.s.media = m,
            LoadCommand::Finish => {
                let r = self.final_report();
                self.events.push_back(LoadEvent::Final(Box::new(r)));
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue) {
        if self.next_media <= now {
            self.send_media(now, tx);
        }
        if self.next_scan <= now {
            self.next_scan = now + SCAN_INTERVAL;
            self.scan(now, tx);
        }
        if self.next_second <= now {
            self.next_second += SECOND;
            if self.next_second <= now {
                self.next_second = now + SECOND;
            }
            self.second(now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_media.min(self.next_scan).min(self.next_second))
    }

    fn poll_event(&mut self) -> Option<LoadEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(verify_every: u32) -> LoadSettings {
        LoadSettings {
            media: MediaProfile {
                video_bitrate: 100_000,
                video_packet: 500,
                fps: 10,
                keyframe_every: 10,
                keyframe_factor: 2,
                audio_packet: 60,
            },
            verify_every,
            epoch: Instant::now(),
            dtls: None,
            simulcast: false,
            remb: false,
        }
    }

    fn meta_to(index: u32, len: usize) -> RecvMeta {
        RecvMeta {
            src: "127.0.0.1:4000".parse().unwrap(),
            dst_ip: Some(IpAddr::V4(client_ip(index))),
            dst_port: 5000,
            socket: crate::shard::SocketId::MAIN,
            len,
            stride: len,
        }
    }

    /// Raw mode, publisher 0 -> subscriber 1 looped back by hand: every packet sent in the
    /// window is counted as delivered, with latency samples; hostile datagrams are counted and
    /// never panic.
    #[test]
    fn raw_loopback_counts_and_survives_garbage() {
        let t0 = Instant::now();
        let mut core = LoadCore::new(settings(1), t0);
        let mut tx = TxQueue::new(256);
        let server: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (index, publish, source) in [(0, Some((11, 12)), None), (1, None, Some(0))] {
            let spec = ClientSpec {
                index,
                session: 0,
                server,
                publish,
                source,
                secure: None,
                cap_bps: None,
                twcc_ext: 0,
            };
            core.handle_command(t0, LoadCommand::Add(Box::new(spec)), &mut tx);
        }
        core.handle_command(t0, LoadCommand::StartWindow, &mut tx);
        let mut now = t0;
        for _ in 0..100 {
            now += Duration::from_millis(10);
            core.handle_timeout(now, &mut tx);
            let mut sent = Vec::new();
            while let Some(p) = tx.pop_pending(|_, b| b.to_vec()) {
                sent.push(p);
            }
            for mut p in sent {
                let len = p.len();
                core.handle_datagram(now, meta_to(1, len), &mut p, &mut tx);
            }
        }
        core.handle_command(now, LoadCommand::StopMedia, &mut tx);
        // Garbage of every first-byte class, to a client and to no client.
        let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0x80], vec![0x80; 11], vec![0x80; 12]];
        for first in [0u8, 3, 20, 63, 64, 128, 191, 200, 255] {
            for len in [1usize, 12, 40, 200] {
                let mut v: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                v[0] = first;
                junk.push(v);
            }
        }
        // Packets with a valid stamp (of a publisher that does not exist) and a new SSRC each,
        // many times: the legs stay bounded.
        for ssrc in 0..100u32 {
            let mut t = TxQueue::new(1);
            let out = RtpOut {
                pt: VP8_PT,
                marker: false,
                seq: 1,
                ts: 0,
                ssrc: 1000 + ssrc,
                ext: &[],
                codec_hdr: &[0; STAMP_OFFSET],
                publisher: 7,
                track: 1,
                layer: [0; 3],
                send_ns: 0,
                size: 64,
                rtx_seq: None,
            };
            assert!(send_rtp(&mut t, server, IpAddr::V4(client_ip(0)), None, out));
            t.pop_pending(|_, b| junk.push(b.to_vec()));
        }
        for mut j in junk {
            let len = j.len();
            for index in [0, 1, 7, 1_000_000] {
                core.handle_datagram(now, meta_to(index, len), &mut j.clone(), &mut tx);
            }
            let mut m = meta_to(1, len);
            m.dst_ip = None;
            core.handle_datagram(now, m, &mut j, &mut tx);
        }
        while tx.pop_pending(|_, _| ()).is_some() {}
        core.handle_command(now, LoadCommand::Finish, &mut tx);
        let mut report = None;
        while let Some(ev) = core.poll_event() {
            if let LoadEvent::Final(r) = ev {
                report = Some(r);
            }
        }
        let r = report.expect("final report");
        assert_eq!(r.subscribers.len(), 1);
        let s = r.subscribers[0];
        assert!(s.expected > 10, "{s:?}");
        assert_eq!(s.delivered, s.expected, "{s:?}");
        assert!(r.latency.count() >= s.expected);
        assert_eq!(r.sent_packets, s.expected);
        assert!(r.unknown > 0);
    }

    /// A server's connectivity check to a client that knows its password gets a signed
    /// success response naming the request's source; a check signed with another password,
    /// or to a client without one (a ringsfu run), gets nothing.
    #[test]
    fn server_checks_are_answered_when_signed_with_our_password() {
        let t0 = Instant::now();
        let mut core = LoadCore::new(settings(1), t0);
        let mut tx = TxQueue::new(64);
        let server: SocketAddr = "10.99.0.1:20000".parse().unwrap();
        for (index, pwd) in [(0u32, "client-password-0123456789"), (1, "")] {
            let spec = ClientSpec {
                index,
                session: 0,
                server,
                publish: None,
                source: Some(7),
                secure: Some(SecureSpec {
                    local_ufrag: "cli".into(),
                    remote_ufrag: "srv".into(),
                    remote_pwd: "server-password-012345678".into(),
                    remote_fingerprint: Fingerprint::sha256(&[0; 32]).unwrap(),
                    local_pwd: pwd.into(),
                }),
                cap_bps: None,
                twcc_ext: 0,
            };
            core.handle_command(t0, LoadCommand::Add(Box::new(spec)), &mut tx);
        }
        // The clients' own checks.
        while tx.pop_pending(|_, _| ()).is_some() {}
        let check = |pwd: &str, txid: TransactionId| {
            let mut b = vec![0u8; 256];
            let mut w =
                StunWriter::new(&mut b, StunClass::Request, Method::BINDING, &txid).unwrap();
            w.username("cli:srv")
                .unwrap()
                .priority(1)
                .unwrap()
                .ice_controlled(5)
                .unwrap()
                .message_integrity(&IntegrityKey::short_term(pwd.as_bytes()))
                .unwrap()
                .fingerprint()
                .unwrap();
            let n = w.finish();
            b.truncate(n);
            b
        };
        let meta = |index: u32, len: usize| RecvMeta { src: server, ..meta_to(index, len) };
        let txid: TransactionId = rand::random();
        let mut req = check("client-password-0123456789", txid);
        core.handle_datagram(t0, meta(0, req.len()), &mut req, &mut tx);
        let (dst, src, resp) =
            tx.pop_pending(|m, b| (m.dst, m.src, b.to_vec())).expect("an answer");
        assert_eq!((dst, src), (server, Some(IpAddr::V4(client_ip(0)))));
        let v = StunView::parse(&resp).expect("parses");
        assert_eq!(v.class(), StunClass::SuccessResponse);
        assert_eq!(v.transaction_id(), &txid);
        assert_eq!(v.xor_mapped_address().unwrap(), Some(server));
        let key = IntegrityKey::short_term(b"client-password-0123456789");
        assert!(v.verify_integrity(&key).is_ok());
        assert!(v.verify_fingerprint().is_ok());
        assert!(tx.pop_pending(|_, _| ()).is_none());
        // Wrong password; a client that answers nothing.
        let mut bad = check("another-password-0123456", rand::random());
        core.handle_datagram(t0, meta(0, bad.len()), &mut bad, &mut tx);
        let mut to_ringsfu_client = check("client-password-0123456789", rand::random());
        core.handle_datagram(t0, meta(1, to_ringsfu_client.len()), &mut to_ringsfu_client, &mut tx);
        assert!(tx.pop_pending(|_, _| ()).is_none());
    }

    /// Several windows on the same clients, the media changed between them (a saturation
    /// search): each window counts only its own packets, all delivered; media goes on after
    /// `EndWindow` and stops at `StopMedia`.
    #[test]
    fn windows_one_after_another_with_new_media() {
        let t0 = Instant::now();
        let mut core = LoadCore::new(settings(1), t0);
        let mut tx = TxQueue::new(4096);
        let server: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (index, publish, source) in [(0, Some((11, 12)), None), (1, None, Some(0))] {
            let spec = ClientSpec {
                index,
                session: 0,
                server,
                publish,
                source,
                secure: None,
                cap_bps: None,
                twcc_ext: 0,
            };
            core.handle_command(t0, LoadCommand::Add(Box::new(spec)), &mut tx);
        }
        let mut now = t0;
        // Runs `ticks` of 10 ms, looping every packet back to subscriber 1; returns how many.
        let mut run = |core: &mut LoadCore, tx: &mut TxQueue, ticks: u32| {
            let mut n = 0;
            for _ in 0..ticks {
                now += Duration::from_millis(10);
                core.handle_timeout(now, tx);
                let mut sent = Vec::new();
                while let Some(p) = tx.pop_pending(|_, b| b.to_vec()) {
                    sent.push(p);
                }
                for mut p in sent {
                    n += 1;
                    let len = p.len();
                    core.handle_datagram(now, meta_to(1, len), &mut p, tx);
                }
            }
            n
        };
        let report = |core: &mut LoadCore, tx: &mut TxQueue| {
            core.handle_command(t0, LoadCommand::Finish, tx);
            let mut r = None;
            while let Some(ev) = core.poll_event() {
                if let LoadEvent::Final(f) = ev {
                    r = Some(*f);
                }
            }
            r.expect("final report")
        };
        run(&mut core, &mut tx, 20);
        core.handle_command(t0, LoadCommand::StartWindow, &mut tx);
        run(&mut core, &mut tx, 100);
        core.handle_command(t0, LoadCommand::EndWindow, &mut tx);
        assert!(run(&mut core, &mut tx, 20) > 0, "media goes on after EndWindow");
        let first = report(&mut core, &mut tx);
        let mut faster = settings(1).media;
        faster.video_bitrate *= 4;
        core.handle_command(t0, LoadCommand::SetMedia(faster), &mut tx);
        run(&mut core, &mut tx, 20);
        core.handle_command(t0, LoadCommand::StartWindow, &mut tx);
        run(&mut core, &mut tx, 100);
        core.handle_command(t0, LoadCommand::StopMedia, &mut tx);
        run(&mut core, &mut tx, 5);
        assert_eq!(run(&mut core, &mut tx, 20), 0, "no media after StopMedia");
        let second = report(&mut core, &mut tx);
        for r in [&first, &second] {
            let s = r.subscribers[0];
            assert!(s.expected > 0 && s.delivered == s.expected, "{s:?}");
            assert_eq!(r.sent_packets, s.expected);
            assert_eq!(r.recv_packets, s.expected);
            assert!(r.latency.count() == s.expected);
            assert_eq!(r.tx_full, 0);
        }
        // Four times the video bitrate over the same number of ticks: more packets.
        assert!(
            second.sent_packets > first.sent_packets,
            "{} {}",
            second.sent_packets,
            first.sent_packets
        );
    }

    /// What a simulcast SFU does for one leg, by hand: forward one layer (`pick`) under one
    /// SSRC with continuous sequence numbers; returns how many it forwarded.
    struct Sfu {
        seq: u16,
        forwarded: u64,
    }

    impl Sfu {
        fn forward(
            &mut self,
            core: &mut LoadCore,
            now: Instant,
            tx: &mut TxQueue,
            pick: Option<u8>,
        ) {
            let mut sent = Vec::new();
            while let Some(p) = tx.pop_pending(|_, b| b.to_vec()) {
                sent.push(p);
            }
            for mut p in sent {
                let Ok(v) = crate::wire::RtpView::parse(&p) else { continue };
                let hl = v.header_len();
                let rid = v.extension(EXT_RID).map(<[u8]>::to_vec);
                if v.payload_type() == VP8_PT {
                    let layer =
                        simulcast::RIDS.iter().position(|r| rid.as_deref() == Some(r.as_bytes()));
                    assert!(layer.is_some(), "every video packet names its rid");
                    assert!(hl > RTP_HEADER, "extensions");
                    if layer.map(|l| l as u8) != pick {
                        continue;
                    }
                    p[2..4].copy_from_slice(&self.seq.to_be_bytes());
                    p[8..12].copy_from_slice(&0xABCu32.to_be_bytes());
                    self.seq = self.seq.wrapping_add(1);
                    self.forwarded += 1;
                    if self.forwarded.is_multiple_of(50) {
                        // A padding-only packet on the leg's SSRC (probing), in sequence.
                        let mut pad = vec![0u8; 12 + 200];
                        pad[0] = 0xA0;
                        pad[1] = VP8_PT;
                        pad[2..4].copy_from_slice(&self.seq.to_be_bytes());
                        pad[8..12].copy_from_slice(&0xABCu32.to_be_bytes());
                        pad[211] = 200;
                        self.seq = self.seq.wrapping_add(1);
                        core.handle_datagram(now, meta_to(1, pad.len()), &mut pad, tx);
                    }
                }
                let len = p.len();
                core.handle_datagram(now, meta_to(1, len), &mut p, tx);
            }
        }
    }

    fn sim_core(cap_bps: Option<u64>) -> (LoadCore, TxQueue, Instant) {
        sim_core_with(cap_bps, 0)
    }

    fn sim_core_with(cap_bps: Option<u64>, twcc_ext: u8) -> (LoadCore, TxQueue, Instant) {
        let t0 = Instant::now();
        let mut s = settings(1);
        s.simulcast = true;
        s.media.video_bitrate = 900_000;
        s.media.fps = 20;
        s.media.keyframe_every = 0;
        let mut core = LoadCore::new(s, t0);
        let mut tx = TxQueue::new(4096);
        let server: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (index, publish, source, cap) in
            [(0, Some((11, 12)), None, None), (1, None, Some(0), cap_bps)]
        {
            let spec = ClientSpec {
                index,
                session: 0,
                server,
                publish,
                source,
                secure: None,
                cap_bps: cap,
                twcc_ext: if source.is_some() { twcc_ext } else { 0 },
            };
            core.handle_command(t0, LoadCommand::Add(Box::new(spec)), &mut tx);
        }
        (core, tx, t0)
    }

    fn final_of(core: &mut LoadCore, now: Instant, tx: &mut TxQueue) -> CoreReport {
        core.handle_command(now, LoadCommand::Finish, tx);
        let mut r = None;
        while let Some(ev) = core.poll_event() {
            if let LoadEvent::Final(f) = ev {
                r = Some(*f);
            }
        }
        r.expect("final report")
    }

    /// Simulcast: three layers leave with rids; the leg follows the forwarded layer across a
    /// switch (one switch, no loss, frames of both layers), a second without forwarding is a
    /// freeze; a PLI naming the top layer's SSRC brings a keyframe of that layer only.
    #[test]
    fn simulcast_leg_follows_layers_and_counts_freezes() {
        let (mut core, mut tx, t0) = sim_core(None);
        let mut sfu = Sfu { seq: 65_500, forwarded: 0 };
        let mut now = t0;
        let mut tick = |core: &mut LoadCore, tx: &mut TxQueue, sfu: &mut Sfu, n: u32, pick| {
            for _ in 0..n {
                now += Duration::from_millis(10);
                core.handle_timeout(now, tx);
                sfu.forward(core, now, tx, pick);
            }
            now
        };
        let start = tick(&mut core, &mut tx, &mut sfu, 20, Some(0));
        core.handle_command(start, LoadCommand::StartWindow, &mut tx);
        tick(&mut core, &mut tx, &mut sfu, 100, Some(0));
        tick(&mut core, &mut tx, &mut sfu, 100, Some(2));
        // A second with nothing forwarded, then the top layer again.
        tick(&mut core, &mut tx, &mut sfu, 100, None);
        let end = tick(&mut core, &mut tx, &mut sfu, 100, Some(2));
        core.handle_command(end, LoadCommand::StopMedia, &mut tx);
        let r = final_of(&mut core, end, &mut tx);
        assert_eq!(r.sim.len(), 1);
        let l = &r.sim[0];
        assert_eq!(l.cap_bps, None);
        assert_eq!(l.layer, Some(2), "{l:?}");
        assert_eq!(l.last_layer, Some(2));
        assert!(l.layer_packets[0] > 0 && l.layer_packets[1] == 0, "{l:?}");
        assert_eq!(l.switches, 1, "{l:?}");
        assert_eq!(l.tids, 0b111, "three temporal layers: {l:?}");
        assert_eq!(l.video_delivered, l.video_expected, "{l:?}");
        assert!(l.padding > 0 && r.padding_in >= l.padding, "{l:?}");
        // 4 s of (simulated) window: what the publisher sent is what publisher_pps says.
        let want = simulcast::publisher_pps(&core.s.media) * 4.0;
        let sent = r.sent_packets as f64;
        assert!((sent - want).abs() <= want * 0.05, "sent {sent}, publisher_pps x 4 s = {want}");
        assert_eq!(l.freezes, 1, "{l:?}");
        assert!(l.freeze_total >= Duration::from_millis(900), "{l:?}");
        assert!(l.frames > 40, "{l:?}");
        assert_eq!(r.verify_failures, 0);
        let s = r.subscribers[0];
        assert_eq!(s.delivered, s.expected, "{s:?}");
        // The SFU asks the top layer for a keyframe: one PLI, one layer's keyframe.
        let mut pli = [0u8; 12];
        let top = core.clients[0].as_ref().and_then(|c| c.publisher.as_ref()).map(|p| p.ssrc[3]);
        crate::wire::rtcp::pli::write(&mut pli, 1, top.expect("publisher")).expect("pli");
        let mut d = pli.to_vec();
        core.handle_datagram(end, meta_to(0, d.len()), &mut d, &mut tx);
        let p = core.clients[0].as_ref().and_then(|c| c.publisher.as_ref()).expect("publisher");
        assert_eq!(p.force_key, [false, false, true]);
        // A NACK of the middle layer's second-to-last packet: one RTX packet on that layer's
        // RTX SSRC with repaired-rid, the OSN and the original's stamp; a NACK of a packet
        // never sent, or of an SSRC that is no layer, brings nothing.
        let (mid_ssrc, sent_seq) = (p.ssrc[2], p.seq[2] - 2);
        let rtx_ssrc = p.rtx.as_ref().map(|r| r.ssrc[1]).expect("rtx");
        while tx.pop_pending(|_, _| ()).is_some() {}
        let mut nack = [0u8; 64];
        for (media, seq) in
            [(mid_ssrc, sent_seq as u16), (mid_ssrc, (sent_seq + 50) as u16), (77, 1)]
        {
            let n = crate::wire::rtcp::nack::write(&mut nack, 1, media, &[(seq, 0)]).expect("nack");
            let mut d = nack[..n].to_vec();
            core.handle_datagram(end, meta_to(0, d.len()), &mut d, &mut tx);
        }
        let mut out = Vec::new();
        while let Some(p) = tx.pop_pending(|_, b| b.to_vec()) {
            out.push(p);
        }
        assert_eq!(out.len(), 1, "one retransmission");
        let v = crate::wire::RtpView::parse(&out[0]).expect("rtp");
        assert_eq!((v.payload_type(), v.ssrc()), (simulcast::RTX_PT, rtx_ssrc));
        assert_eq!(v.extension(simulcast::EXT_REPAIRED_RID), Some(&b"rdiv2"[..]));
        assert_eq!(v.extension(EXT_RID), None);
        let pl = v.payload();
        assert_eq!(u16::from_be_bytes([pl[0], pl[1]]), sent_seq as u16, "OSN");
        let st = read_stamp_at(&pl[2..], SIM_STAMP_OFFSET).expect("stamp");
        assert_eq!((st.seq, st.layer[0]), (sent_seq, 2));
    }

    /// A capped leg receiving the top layer: the policer drops what exceeds the cap, the leg
    /// sees the loss and its frames freeze; what it passes stays within the cap.
    #[test]
    fn simulcast_capped_leg_drops_over_its_rate() {
        let (mut core, mut tx, t0) = sim_core(Some(200_000));
        let mut sfu = Sfu { seq: 1, forwarded: 0 };
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_millis(10);
            core.handle_timeout(now, &mut tx);
            sfu.forward(&mut core, now, &mut tx, Some(2));
        }
        core.handle_command(now, LoadCommand::StartWindow, &mut tx);
        for _ in 0..300 {
            now += Duration::from_millis(10);
            core.handle_timeout(now, &mut tx);
            sfu.forward(&mut core, now, &mut tx, Some(2));
        }
        core.handle_command(now, LoadCommand::StopMedia, &mut tx);
        let r = final_of(&mut core, now, &mut tx);
        let l = &r.sim[0];
        assert_eq!(l.cap_bps, Some(200_000));
        assert!(l.cap_drops > 0, "{l:?}");
        assert!(l.video_loss() > 0.5, "900 kbit/s through 200: {l:?}");
        assert!(l.video_bps < 200_000.0, "{l:?}");
        assert!(l.freezes > 0 || l.frames < 10, "{l:?}");
    }

    /// The subscriber's TWCC feedback (raw mode: plain RTCP) reports every transport-wide
    /// sequence number it received as received, once, and the ones the SFU did not forward
    /// (the other layers) as not received; REMB carries the cap.
    #[test]
    fn simulcast_subscriber_feedback_reports_what_arrived() {
        let (mut core, mut tx, t0) = sim_core_with(Some(5_000_000), EXT_TWCC);
        core.s.remb = true;
        let mut now = t0;
        let mut arrived = std::collections::BTreeSet::new();
        let (mut reported, mut missing, mut fbs, mut rembs) =
            (std::collections::BTreeSet::new(), 0u64, 0u64, 0u64);
        for _ in 0..300 {
            now += Duration::from_millis(10);
            core.handle_timeout(now, &mut tx);
            let mut sent = Vec::new();
            while let Some(p) = tx.pop_pending(|m, b| (m.src, b.to_vec())) {
                sent.push(p);
            }
            for (src, mut p) in sent {
                if src == Some(IpAddr::V4(client_ip(1))) {
                    // The subscriber's feedback.
                    let c = RtcpCompound::parse(&p).expect("rtcp");
                    for pkt in c.packets() {
                        match pkt.expect("typed") {
                            RtcpPacket::TransportCc(fb) => {
                                fbs += 1;
                                for st in fb.packets() {
                                    if st.delta.is_some() {
                                        assert!(reported.insert(st.seq), "{} twice", st.seq);
                                    } else {
                                        missing += 1;
                                    }
                                }
                            }
                            RtcpPacket::Remb(r) => {
                                assert_eq!(r.bitrate(), 5_000_000);
                                rembs += 1;
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    continue;
                }
                let Ok(v) = crate::wire::RtpView::parse(&p) else { continue };
                // The SFU forwards audio and the lowest layer only.
                if v.payload_type() == VP8_PT
                    && v.extension(EXT_RID) != Some(simulcast::RIDS[0].as_bytes())
                {
                    continue;
                }
                arrived.insert(v.transport_cc(EXT_TWCC).expect("twcc seq"));
                let len = p.len();
                core.handle_datagram(now, meta_to(1, len), &mut p, &mut tx);
            }
        }
        assert!(fbs >= 40, "a feedback every 50 ms: {fbs}");
        assert!(rembs >= 2, "{rembs}");
        assert!(missing > 0, "the other layers' sequence numbers are reported missing");
        // Everything reported arrived; what arrived was reported, but for the last 50 ms.
        assert!(reported.is_subset(&arrived));
        assert!(arrived.len() - reported.len() < 40, "{} of {}", reported.len(), arrived.len());
    }

    #[test]
    fn client_addresses_roundtrip() {
        for i in [0u32, 1, 253, 254, 255, 1000, 65_000, 254 * 256, 200_000] {
            let ip = client_ip(i);
            assert_eq!(client_index(IpAddr::V4(ip)), Some(i), "{ip}");
            assert_ne!(ip.octets()[3], 0);
            assert_ne!(ip.octets()[3], 255);
        }
        assert_eq!(client_index("127.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn unwrap_crosses_wraps() {
        assert_eq!(unwrap_seq(65_535, 0), 65_536);
        assert_eq!(unwrap_seq(65_536, 65_535), 65_535);
        assert_eq!(unwrap_seq(10, 12), 12);
        assert_eq!(unwrap_seq(3, 65_530), 65_530);
    }

    #[test]
    fn frame_sizes() {
        let m = MediaProfile {
            video_bitrate: 1_000_000,
            video_packet: 1000,
            fps: 25,
            keyframe_every: 50,
            keyframe_factor: 4,
            audio_packet: 100,
        };
        // 5000 bytes per frame = 5 packets; keyframes 20.
        assert_eq!(m.packets_of_frame(1), 5);
        assert_eq!(m.packets_of_frame(0), 20);
        assert_eq!(m.packets_of_frame(50), 20);
        let pps = m.packets_per_second();
        assert!((pps - (50.0 + (49.0 * 5.0 + 20.0) / 50.0 * 25.0)).abs() < 1e-9, "{pps}");
    }

    #[test]
    fn stamp_roundtrip_and_garbage() {
        let mut tx = TxQueue::new(4);
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let out = RtpOut {
            pt: VP8_PT,
            marker: true,
            seq: 70_000,
            ts: 5,
            ssrc: 9,
            ext: &[],
            codec_hdr: &VP8_KEY_HEADER,
            publisher: 3,
            track: 1,
            layer: [0; 3],
            send_ns: 123,
            size: 100,
            rtx_seq: None,
        };
        assert!(send_rtp(&mut tx, dst, IpAddr::V4(client_ip(3)), None, out));
        tx.pop_pending(|m, b| {
            assert_eq!(m.len as usize, 112);
            let s = read_stamp(&b[12..]).expect("stamp");
            assert_eq!(
                s,
                Stamp { publisher: 3, track: 1, layer: [0; 3], seq: 70_000, send_ns: 123 }
            );
        });
        assert_eq!(read_stamp(&[0u8; 10]), None);
        assert_eq!(read_stamp(&[0u8; 64]), None);
    }
}
