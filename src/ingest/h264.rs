//! H.264 from an IP camera to WebRTC subscribers, without transcoding: access units (as the
//! RTSP depacketizer hands them over, NAL units with 4-byte big-endian length prefixes) become
//! RTP payloads in packetization-mode 1 (RFC 6184 §5.6-5.8: single NAL unit packets, STAP-A
//! aggregates of small NAL units, FU-A fragments of large ones), and the camera's SPS says
//! which `profile-level-id` to offer subscribers.
//!
//! Written by hand: the RTSP crate (retina) depacketizes but does not packetize, and the
//! WebRTC crates' packetizers allocate per packet and do not re-insert parameter sets.
//!
//! - SPS and PPS go before every IDR: those the access unit carries are remembered (and
//!   replace the out-of-band ones from the SDP), those it lacks are inserted from memory, so a
//!   subscriber that joins at any keyframe can decode.
//! - NAL units that have no place on a WebRTC stream are dropped: access unit delimiters (9),
//!   filler data (12), types 0 and 24-31 (unspecified, or RTP aggregation types that cannot
//!   occur in a byte stream) and units with the forbidden bit set.
//! - The marker bit is set on the access unit's last packet.
//!
//! No allocation per packet: the packetizer keeps one payload buffer and one NAL list.

use std::fmt;

/// Largest RTP payload written (leaves room for the SRTP tag, header extensions and a TURN
/// or IPv6 header within a 1280-byte path MTU).
pub const MAX_PAYLOAD: usize = 1160;

/// Why an access unit or SPS was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Error {
    /// A length prefix runs past the end of the access unit.
    Truncated,
    /// The SPS is shorter than its profile and level bytes, or is not an SPS.
    NotSps,
    /// The payload size limit cannot hold one FU-A fragment.
    PayloadTooSmall,
}

impl fmt::Display for H264Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            H264Error::Truncated => "NAL unit length past the end of the access unit",
            H264Error::NotSps => "not an H.264 sequence parameter set",
            H264Error::PayloadTooSmall => "payload limit below 3 bytes",
        })
    }
}

/// NAL unit types (the low five bits of the header byte).
pub mod nal {
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
    pub const FILLER: u8 = 12;
    pub const STAP_A: u8 = 24;
    pub const FU_A: u8 = 28;
}

/// Whether a NAL unit of header byte `h` is sent to subscribers (see the module docs).
pub fn forwarded(h: u8) -> bool {
    h & 0x80 == 0 && !matches!(h & 0x1F, 0 | nal::AUD | nal::FILLER | 24..=31)
}

/// The profiles browsers name in `profile-level-id` (RFC 6184 §8.1, as libwebrtc matches them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    /// Anything else (Extended, High 10, 4:2:2, 4:4:4 ...): `profile_idc`.
    Other(u8),
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::ConstrainedBaseline => "Constrained Baseline",
            Profile::Baseline => "Baseline",
            Profile::Main => "Main",
            Profile::ConstrainedHigh => "Constrained High",
            Profile::High => "High",
            Profile::Other(_) => "unusual",
        }
    }

    /// Decoded by every WebRTC browser (the profiles the WebRTC specification mandates).
    pub fn browser_safe(self) -> bool {
        matches!(self, Profile::ConstrainedBaseline | Profile::Baseline)
    }
}

/// The first bytes of an SPS: profile, constraint flags and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsProfile {
    pub profile_idc: u8,
    /// constraint_set0..5 flags (high bits first) and the two reserved bits.
    pub constraints: u8,
    pub level_idc: u8,
}

impl SpsProfile {
    /// From an SPS NAL unit, header byte included.
    pub fn parse(sps: &[u8]) -> Result<SpsProfile, H264Error> {
        match sps {
            [h, p, c, l, ..] if h & 0x1F == nal::SPS => {
                Ok(SpsProfile { profile_idc: *p, constraints: *c, level_idc: *l })
            }
            _ => Err(H264Error::NotSps),
        }
    }

    pub fn profile(&self) -> Profile {
        let set = |i: u8| self.constraints & (0x80 >> i) != 0;
        match self.profile_idc {
            66 if set(1) => Profile::ConstrainedBaseline,
            66 => Profile::Baseline,
            77 if set(0) && set(1) => Profile::ConstrainedBaseline,
            77 => Profile::Main,
            88 if set(0) && set(1) => Profile::ConstrainedBaseline,
            100 if set(4) && set(5) => Profile::ConstrainedHigh,
            100 => Profile::High,
            p => Profile::Other(p),
        }
    }

    /// `profile-level-id` as browsers write it for this profile (so an offer's format
    /// matches: cameras set constraint flags, e.g. `42c0`, that name the same profile as a
    /// browser's `42e0`), with the camera's level. Unusual profiles keep their own bytes.
    pub fn profile_level_id(&self) -> String {
        let (p, c) = match self.profile() {
            Profile::ConstrainedBaseline => (0x42, 0xE0),
            Profile::Baseline => (0x42, 0x00),
            Profile::Main => (0x4D, 0x00),
            Profile::ConstrainedHigh => (0x64, 0x0C),
            Profile::High => (0x64, 0x00),
            Profile::Other(p) => (p, self.constraints),
        };
        format!("{p:02x}{c:02x}{:02x}", self.level_idc)
    }
}

/// Splits a length-prefixed (4-byte) access unit into its NAL units; zero-length units are
/// skipped.
pub fn nal_units(au: &[u8]) -> impl Iterator<Item = Result<&[u8], H264Error>> {
    let mut rest = au;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                rest = &[];
                return Some(Err(H264Error::Truncated));
            };
            let len = u32::from_be_bytes(*len) as usize;
            let Some((nal, tail)) = tail.split_at_checked(len) else {
                rest = &[];
                return Some(Err(H264Error::Truncated));
            };
            rest = tail;
            if !nal.is_empty() {
                return Some(Ok(nal));
            }
        }
    })
}

/// Where one NAL unit to send lives.
#[derive(Debug, Clone, Copy)]
enum NalRef {
    Sps,
    Pps,
    /// A range of the access unit.
    Au(usize, usize),
}

/// The packetizer of one video track. See the module docs.
#[derive(Debug)]
pub struct Packetizer {
    max_payload: usize,
    sps: Vec<u8>,
    pps: Vec<u8>,
    list: Vec<NalRef>,
    buf: Vec<u8>,
}

impl Packetizer {
    /// A packetizer writing payloads of at most `max_payload` bytes (at least 3).
    pub fn new(max_payload: usize) -> Result<Packetizer, H264Error> {
        if max_payload < 3 {
            return Err(H264Error::PayloadTooSmall);
        }
        Ok(Packetizer {
            max_payload,
            sps: Vec::new(),
            pps: Vec::new(),
            list: Vec::with_capacity(16),
            buf: Vec::with_capacity(max_payload),
        })
    }

    /// The parameter sets known out of band (the SDP's `sprop-parameter-sets`).
    pub fn set_parameter_sets(&mut self, sps: &[u8], pps: &[u8]) {
        if SpsProfile::parse(sps).is_ok() {
            replace(&mut self.sps, sps);
        }
        if pps.first().is_some_and(|h| h & 0x1F == nal::PPS) {
            replace(&mut self.pps, pps);
        }
    }

    /// The SPS in use (the last one seen), if any.
    pub fn sps(&self) -> Option<&[u8]> {
        (!self.sps.is_empty()).then_some(self.sps.as_slice())
    }

    /// Packetizes access unit `au` (length-prefixed NAL units): `emit(payload, marker)` once
    /// per RTP payload, in order. Returns the number of payloads; an access unit with nothing
    /// to send gives none. A malformed one is refused whole (nothing emitted).
    pub fn packetize(
        &mut self,
        au: &[u8],
        mut emit: impl FnMut(&[u8], bool),
    ) -> Result<usize, H264Error> {
        self.list.clear();
        let mut idr = false;
        // The last SPS and PPS of the access unit, remembered only once all of it parsed.
        let (mut sps, mut pps) = (None, None);
        for n in nal_units(au) {
            let n = n?;
            let Some(&h) = n.first() else { continue };
            if !forwarded(h) {
                continue;
            }
            let start = n.as_ptr() as usize - au.as_ptr() as usize;
            let at = (start, start + n.len());
            match h & 0x1F {
                nal::IDR => idr = true,
                nal::SPS if SpsProfile::parse(n).is_ok() => sps = Some(at),
                nal::PPS => pps = Some(at),
                _ => {}
            }
            self.list.push(NalRef::Au(at.0, at.1));
        }
        let (has_sps, has_pps) = (sps.is_some(), pps.is_some());
        if let Some(n) = sps.and_then(|(s, e)| au.get(s..e)) {
            replace(&mut self.sps, n);
        }
        if let Some(n) = pps.and_then(|(s, e)| au.get(s..e)) {
            replace(&mut self.pps, n);
        }
        if idr {
            // Parameter sets first: the decoder needs them before the slice.
            if !has_pps && !self.pps.is_empty() {
                self.list.insert(0, NalRef::Pps);
            }
            if !has_sps && !self.sps.is_empty() {
                self.list.insert(0, NalRef::Sps);
            }
        }
        let list = std::mem::take(&mut self.list);
        let n = self.emit_all(au, &list, &mut emit);
        self.list = list;
        Ok(n)
    }

    fn emit_all(
        &mut self,
        au: &[u8],
        list: &[NalRef],
        emit: &mut impl FnMut(&[u8], bool),
    ) -> usize {
        let Packetizer { max_payload, sps, pps, buf, .. } = self;
        let max = *max_payload;
        let get = |r: NalRef| -> &[u8] {
            match r {
                NalRef::Sps => sps,
                NalRef::Pps => pps,
                NalRef::Au(s, e) => au.get(s..e).unwrap_or_default(),
            }
        };
        let mut count = 0;
        let mut i = 0;
        while let Some(&r) = list.get(i) {
            let first = get(r);
            if first.len() > max {
                count += fu_a(buf, max, first, i + 1 == list.len(), emit);
                i += 1;
                continue;
            }
            // As many following units as fit one STAP-A with this one.
            let mut size = 1 + 2 + first.len();
            let mut j = i + 1;
            while let Some(&next) = list.get(j) {
                let n = get(next).len();
                if size + 2 + n > max {
                    break;
                }
                size += 2 + n;
                j += 1;
            }
            let last = j == list.len();
            if j == i + 1 {
                emit(first, last);
            } else {
                buf.clear();
                buf.push(0);
                let (mut f, mut nri) = (0u8, 0u8);
                for &r in list.get(i..j).unwrap_or_default() {
                    let n = get(r);
                    let h = n.first().copied().unwrap_or(0);
                    f |= h & 0x80;
                    nri = nri.max(h & 0x60);
                    buf.extend_from_slice(&(n.len() as u16).to_be_bytes());
                    buf.extend_from_slice(n);
                }
                buf[0] = f | nri | nal::STAP_A;
                emit(buf, last);
            }
            count += 1;
            i = j;
        }
        count
    }
}

/// FU-A fragments of NAL unit `n` (longer than the payload limit `max`), built in `buf`.
fn fu_a(
    buf: &mut Vec<u8>,
    max: usize,
    n: &[u8],
    last_nal: bool,
    emit: &mut impl FnMut(&[u8], bool),
) -> usize {
    let Some((&h, body)) = n.split_first() else { return 0 };
    let room = max - 2;
    let chunks = body.len().div_ceil(room);
    for (k, chunk) in body.chunks(room).enumerate() {
        let end = k + 1 == chunks;
        buf.clear();
        buf.push((h & 0xE0) | nal::FU_A);
        buf.push(if k == 0 { 0x80 } else { 0 } | if end { 0x40 } else { 0 } | (h & 0x1F));
        buf.extend_from_slice(chunk);
        emit(buf, end && last_nal);
    }
    chunks
}

/// `dst = src`, reusing `dst`'s allocation (and not touching it when equal).
fn replace(dst: &mut Vec<u8>, src: &[u8]) {
    if dst.as_slice() != src {
        dst.clear();
        dst.extend_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn run(p: &mut Packetizer, a: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        p.packetize(a, |b, m| out.push((b.to_vec(), m))).unwrap();
        out
    }

    #[test]
    fn camera_profiles_are_named_as_browsers_name_them() {
        // x264's baseline sets constraint_set0 and set1: Constrained Baseline, level 3.1.
        let p = SpsProfile::parse(&[0x67, 0x42, 0xC0, 0x1F]).unwrap();
        assert_eq!(p.profile(), Profile::ConstrainedBaseline);
        assert_eq!(p.profile_level_id(), "42e01f");
        let high = SpsProfile::parse(&[0x67, 0x64, 0x00, 0x28]).unwrap();
        assert_eq!(high.profile(), Profile::High);
        assert_eq!(high.profile_level_id(), "640028");
        assert!(!high.profile().browser_safe());
        assert_eq!(SpsProfile::parse(&[0x68, 0x42, 0, 0]), Err(H264Error::NotSps));
        assert_eq!(SpsProfile::parse(&[0x67, 0x42]), Err(H264Error::NotSps));
    }

    #[test]
    fn small_units_aggregate_and_a_keyframe_gets_its_parameter_sets() {
        let mut p = Packetizer::new(100).unwrap();
        p.set_parameter_sets(&[0x67, 0x42, 0xC0, 0x1F, 1], &[0x68, 0xCE, 0x3C, 0x80]);
        // An IDR without parameter sets and with an AUD: STAP-A(SPS, PPS, IDR).
        let out = run(&mut p, &au(&[&[0x09, 0xF0], &[0x65, 1, 2, 3]]));
        assert_eq!(out.len(), 1);
        let (b, m) = &out[0];
        assert!(*m);
        assert_eq!(b[0] & 0x1F, nal::STAP_A);
        assert_eq!(&b[1..3], &[0, 5]);
        assert_eq!(b[3], 0x67);
        // A non-IDR slice alone: a single NAL unit packet.
        let out = run(&mut p, &au(&[&[0x41, 9, 9]]));
        assert_eq!(out, vec![(vec![0x41, 9, 9], true)]);
    }

    #[test]
    fn large_units_fragment_with_start_and_end_bits() {
        let mut p = Packetizer::new(10).unwrap();
        let mut slice = vec![0x65];
        slice.extend(0..25u8);
        let out = run(&mut p, &au(&[&slice]));
        assert_eq!(out.len(), 4, "25 bytes in 8-byte fragments");
        assert_eq!(out[0].0[..2], [0x60 | nal::FU_A, 0x80 | 5]);
        assert_eq!(out[3].0[1], 0x40 | 5);
        assert!(out[3].1 && !out[0].1);
        assert!(out.iter().all(|(b, _)| b.len() <= 10));
        let body: Vec<u8> = out.iter().flat_map(|(b, _)| b[2..].to_vec()).collect();
        assert_eq!(body, slice[1..]);
    }

    #[test]
    fn a_truncated_access_unit_is_refused_whole() {
        let mut p = Packetizer::new(100).unwrap();
        let mut a = au(&[&[0x41, 1]]);
        a.extend_from_slice(&[0, 0, 0, 9, 0x41]);
        let mut n = 0;
        assert_eq!(p.packetize(&a, |_, _| n += 1), Err(H264Error::Truncated));
        assert_eq!(n, 0);
        // Nor is its SPS remembered.
        let mut b = au(&[&[0x67, 0x42, 0xC0, 0x1F]]);
        b.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(p.packetize(&b, |_, _| n += 1), Err(H264Error::Truncated));
        assert_eq!(p.sps(), None);
    }
}
