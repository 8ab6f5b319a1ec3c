//! The AV1 Dependency Descriptor RTP header extension (AV1 RTP specification, Appendix A;
//! URI `https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension`).
//!
//! Every packet carries the mandatory fields (start/end of frame, template id, frame number).
//! Some packets (keyframes, in practice) carry the template dependency structure; the caller
//! keeps the last one ([`DdStructure`], per incoming stream) and passes it to [`parse`] for
//! the packets that do not. A frame's spatial and temporal id come from its template.
//!
//! Fixed capacity, no allocation: at most [`MAX_TEMPLATES`] templates (the 6-bit id space),
//! [`MAX_DECODE_TARGETS`] decode targets and as many chains, [`MAX_SPATIAL`] spatial and
//! [`MAX_TEMPORAL`] temporal layers (the OBU extension header's ranges), [`MAX_FDIFFS`] frame
//! diffs per template or frame; beyond these the descriptor is refused as `Unsupported`.
//! Written by hand (a bit reader over the slice): no crate parses the descriptor without
//! allocating.

use super::{CodecError, PacketInfo};

/// Template ids are 6 bits.
pub const MAX_TEMPLATES: usize = 64;
/// `dt_cnt_minus_one` is 5 bits.
pub const MAX_DECODE_TARGETS: usize = 32;
/// AV1 spatial ids are 2 bits.
pub const MAX_SPATIAL: usize = 4;
/// AV1 temporal ids are 3 bits.
pub const MAX_TEMPORAL: usize = 8;
/// Frame diffs kept per template or per frame.
pub const MAX_FDIFFS: usize = 16;

/// Decode target indication (Table A.1): how a frame matters to a decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dti {
    NotPresent,
    Discardable,
    Switch,
    Required,
}

impl Dti {
    fn from_bits(v: u64) -> Dti {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// The template dependency structure: parsed from a packet that carries it, kept by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdStructure {
    template_id_offset: u8,
    dt_cnt: u8,
    template_cnt: u8,
    chain_cnt: u8,
    max_spatial_id: u8,
    template_sid: [u8; MAX_TEMPLATES],
    template_tid: [u8; MAX_TEMPLATES],
    /// Two bits per decode target.
    template_dtis: [u64; MAX_TEMPLATES],
    template_fdiff_cnt: [u8; MAX_TEMPLATES],
    template_fdiffs: [[u8; MAX_FDIFFS]; MAX_TEMPLATES],
    /// Four bits per chain.
    template_chain_fdiffs: [u128; MAX_TEMPLATES],
    protected_by: [u8; MAX_DECODE_TARGETS],
    dt_max_sid: [u8; MAX_DECODE_TARGETS],
    dt_max_tid: [u8; MAX_DECODE_TARGETS],
    resolutions: Option<[(u16, u16); MAX_SPATIAL]>,
}

impl DdStructure {
    /// The decode targets (bit `d` for target `d`) that need no layer above `spatial` and
    /// `temporal`: what a forwarder sending those layers keeps active.
    pub fn targets_upto(&self, spatial: u8, temporal: u8) -> u32 {
        (0..self.dt_cnt as usize)
            .filter(|&d| self.dt_max_sid[d] <= spatial && self.dt_max_tid[d] <= temporal)
            .fold(0, |m, d| m | (1 << d))
    }
    /// Every decode target of the structure.
    pub fn all_targets(&self) -> u32 {
        mask(self.dt_cnt)
    }
    pub fn template_id_offset(&self) -> u8 {
        self.template_id_offset
    }
    pub fn decode_target_count(&self) -> usize {
        self.dt_cnt as usize
    }
    pub fn template_count(&self) -> usize {
        self.template_cnt as usize
    }
    pub fn chain_count(&self) -> usize {
        self.chain_cnt as usize
    }
    pub fn max_spatial_id(&self) -> u8 {
        self.max_spatial_id
    }
    pub fn max_temporal_id(&self) -> u8 {
        self.template_tid[..self.template_cnt as usize].iter().copied().max().unwrap_or(0)
    }
    /// The highest `(spatial, temporal)` id a decode target needs.
    pub fn decode_target_layers(&self, dt: usize) -> Option<(u8, u8)> {
        (dt < self.dt_cnt as usize).then(|| (self.dt_max_sid[dt], self.dt_max_tid[dt]))
    }
    /// The chain protecting a decode target (meaningless when there are no chains).
    pub fn protected_by(&self, dt: usize) -> Option<u8> {
        (dt < self.dt_cnt as usize && self.chain_cnt > 0).then(|| self.protected_by[dt])
    }
    /// `(width, height)` of a spatial layer when the structure carries render resolutions.
    pub fn resolution(&self, sid: u8) -> Option<(u16, u16)> {
        let r = self.resolutions?;
        (sid <= self.max_spatial_id).then(|| r.get(sid as usize).copied()).flatten()
    }
    /// The `(spatial, temporal)` id of a template id, if the structure defines it.
    pub fn template_layers(&self, template_id: u8) -> Option<(u8, u8)> {
        let idx = self.index(template_id)?;
        Some((self.template_sid[idx], self.template_tid[idx]))
    }
    fn index(&self, template_id: u8) -> Option<usize> {
        let idx = (usize::from(template_id & 63) + 64 - usize::from(self.template_id_offset)) % 64;
        (idx < self.template_cnt as usize).then_some(idx)
    }
}

/// What one descriptor says about its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdPacket {
    pub start_of_frame: bool,
    pub end_of_frame: bool,
    pub template_id: u8,
    pub frame_number: u16,
    /// From the frame's template; `None` when no structure is known for it.
    pub spatial_id: Option<u8>,
    pub temporal_id: Option<u8>,
    /// The active decode targets bitmask, when this packet sets it (or a new structure resets
    /// it to all targets).
    pub active_decode_targets: Option<u32>,
    /// The frame's decode target indications, two bits per target (template's or custom).
    dtis: u64,
    dt_cnt: u8,
    /// The frame's diffs (template's or custom), `fdiff_cnt` of them.
    pub fdiffs: [u16; MAX_FDIFFS],
    pub fdiff_cnt: u8,
    /// The frame's chain diffs (template's or custom), `chain_cnt` of them.
    pub chain_fdiffs: [u8; MAX_DECODE_TARGETS],
    pub chain_cnt: u8,
    /// The structure this packet carries: store it and pass it for the following packets.
    pub new_structure: Option<DdStructure>,
    /// Where the active decode targets bitmask is (or would go: right after the structure),
    /// in bits from the start, and its length there (0: absent).
    active_at: u16,
    active_len: u8,
    /// Bits the descriptor uses (what follows is zero padding).
    end_bit: u16,
}

impl DdPacket {
    /// The frame's indication for decode target `dt`.
    pub fn dti(&self, dt: usize) -> Option<Dti> {
        (dt < self.dt_cnt as usize).then(|| Dti::from_bits(self.dtis >> (2 * dt)))
    }

    /// The highest temporal id of a decode target (of structure `s`) this frame is a switch
    /// point for, if any. In Chromium's L3T3_KEY a T2 frame is a switch point for nothing, a T1
    /// frame for its spatial layer's T2 target: a consumer on T1 goes up at the next T1 frame.
    pub fn switch_temporal(&self, s: &DdStructure) -> Option<u8> {
        (0..(self.dt_cnt as usize).min(MAX_DECODE_TARGETS))
            .filter(|&d| self.dti(d) == Some(Dti::Switch))
            .map(|d| s.dt_max_tid[d])
            .max()
    }

    /// Puts what the descriptor says into the payload's [`PacketInfo`] for the layer logic
    /// (AV1 SVC, or any codec sent with the descriptor): spatial and temporal id (when a
    /// structure gave them), start and end of frame (of the layer frame), layer sync when the
    /// frame is a switch point (DTI `Switch`) of some decode target, and a keyframe where a
    /// base-layer frame starts without references (no frame diffs). A frame with diffs counts
    /// as inter-predicted (the descriptor does not tell inter-layer from inter-picture).
    pub fn apply_to(&self, info: &mut PacketInfo) {
        if self.spatial_id.is_some() {
            info.spatial_id = self.spatial_id;
            info.temporal_id = self.temporal_id;
            info.layer_sync = (0..self.dt_cnt as usize).any(|d| self.dti(d) == Some(Dti::Switch));
            info.inter_predicted = self.fdiff_cnt > 0;
            info.keyframe |=
                self.start_of_frame && self.fdiff_cnt == 0 && self.spatial_id == Some(0);
        }
        info.frame_start = self.start_of_frame;
        info.frame_end = self.end_of_frame;
    }
}

/// A bounded MSB-first bit reader.
struct Bits<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn f(&mut self, n: u32, ctx: &'static str) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        let mut v: u32 = 0;
        for _ in 0..n {
            let byte = *self.buf.get(self.pos / 8).ok_or(CodecError::Truncated(ctx))?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }
    fn flag(&mut self, ctx: &'static str) -> Result<bool, CodecError> {
        Ok(self.f(1, ctx)? == 1)
    }
    /// `ns(n)`: a non-symmetric unsigned value in `0..n` (AV1 §4.10.7).
    fn ns(&mut self, n: u32, ctx: &'static str) -> Result<u32, CodecError> {
        let w = 32 - n.leading_zeros();
        if w == 0 {
            return Ok(0);
        }
        let m = (1u32 << w) - n;
        let v = self.f(w - 1, ctx)?;
        if v < m {
            return Ok(v);
        }
        let extra = self.f(1, ctx)?;
        Ok((v << 1) - m + extra)
    }
}

fn structure(b: &mut Bits<'_>) -> Result<DdStructure, CodecError> {
    let mut s = DdStructure {
        template_id_offset: b.f(6, "av1 dd: template_id_offset")? as u8,
        dt_cnt: b.f(5, "av1 dd: dt_cnt_minus_one")? as u8 + 1,
        template_cnt: 0,
        chain_cnt: 0,
        max_spatial_id: 0,
        template_sid: [0; MAX_TEMPLATES],
        template_tid: [0; MAX_TEMPLATES],
        template_dtis: [0; MAX_TEMPLATES],
        template_fdiff_cnt: [0; MAX_TEMPLATES],
        template_fdiffs: [[0; MAX_FDIFFS]; MAX_TEMPLATES],
        template_chain_fdiffs: [0; MAX_TEMPLATES],
        protected_by: [0; MAX_DECODE_TARGETS],
        dt_max_sid: [0; MAX_DECODE_TARGETS],
        dt_max_tid: [0; MAX_DECODE_TARGETS],
        resolutions: None,
    };
    // template_layers()
    let (mut sid, mut tid) = (0u8, 0u8);
    let mut cnt = 0usize;
    loop {
        if cnt == MAX_TEMPLATES {
            return Err(CodecError::Unsupported("av1 dd: more than 64 templates"));
        }
        s.template_sid[cnt] = sid;
        s.template_tid[cnt] = tid;
        cnt += 1;
        match b.f(2, "av1 dd: next_layer_idc")? {
            0 => {}
            1 => {
                tid += 1;
                if usize::from(tid) >= MAX_TEMPORAL {
                    return Err(CodecError::Unsupported("av1 dd: temporal id above 7"));
                }
            }
            2 => {
                tid = 0;
                sid += 1;
                if usize::from(sid) >= MAX_SPATIAL {
                    return Err(CodecError::Unsupported("av1 dd: spatial id above 3"));
                }
            }
            _ => break,
        }
    }
    s.template_cnt = cnt as u8;
    s.max_spatial_id = sid;
    let dt = s.dt_cnt as usize;
    for t in 0..cnt {
        let mut v = 0u64;
        for d in 0..dt {
            v |= u64::from(b.f(2, "av1 dd: template_dti")?) << (2 * d);
        }
        s.template_dtis[t] = v;
    }
    for t in 0..cnt {
        let mut n = 0usize;
        while b.flag("av1 dd: fdiff_follows_flag")? {
            if n == MAX_FDIFFS {
                return Err(CodecError::Unsupported("av1 dd: more than 16 fdiffs in a template"));
            }
            s.template_fdiffs[t][n] = b.f(4, "av1 dd: template fdiff_minus_one")? as u8 + 1;
            n += 1;
        }
        s.template_fdiff_cnt[t] = n as u8;
    }
    // template_chains()
    s.chain_cnt = b.ns(dt as u32 + 1, "av1 dd: chain_cnt")? as u8;
    if s.chain_cnt > 0 {
        for d in 0..dt {
            s.protected_by[d] =
                b.ns(u32::from(s.chain_cnt), "av1 dd: decode_target_protected_by")? as u8;
        }
        for t in 0..cnt {
            let mut v = 0u128;
            for c in 0..s.chain_cnt as usize {
                v |= u128::from(b.f(4, "av1 dd: template_chain_fdiff")?) << (4 * c);
            }
            s.template_chain_fdiffs[t] = v;
        }
    }
    // decode_target_layers()
    for d in 0..dt {
        let (mut ms, mut mt) = (0u8, 0u8);
        for t in 0..cnt {
            if (s.template_dtis[t] >> (2 * d)) & 3 != 0 {
                ms = ms.max(s.template_sid[t]);
                mt = mt.max(s.template_tid[t]);
            }
        }
        s.dt_max_sid[d] = ms;
        s.dt_max_tid[d] = mt;
    }
    if b.flag("av1 dd: resolutions_present_flag")? {
        let mut r = [(0u16, 0u16); MAX_SPATIAL];
        for res in r.iter_mut().take(s.max_spatial_id as usize + 1) {
            let w = b.f(16, "av1 dd: render_width_minus_1")? as u16;
            let h = b.f(16, "av1 dd: render_height_minus_1")? as u16;
            *res = (w.wrapping_add(1), h.wrapping_add(1));
        }
        s.resolutions = Some(r);
    }
    Ok(s)
}

/// Parses one descriptor (the extension element's value). `structure` is the last structure
/// the caller kept for this stream; a structure in the packet itself takes precedence and is
/// returned in [`DdPacket::new_structure`]. Without any structure, a 3-byte descriptor still
/// gives the mandatory fields (ids `None`); an extended one that needs it is refused.
pub fn parse(ext: &[u8], structure_in: Option<&DdStructure>) -> Result<DdPacket, CodecError> {
    let mut b = Bits { buf: ext, pos: 0 };
    let start_of_frame = b.flag("av1 dd: mandatory fields")?;
    let end_of_frame = b.flag("av1 dd: mandatory fields")?;
    let template_id = b.f(6, "av1 dd: mandatory fields")? as u8;
    let frame_number = b.f(16, "av1 dd: mandatory fields")? as u16;
    let mut out = DdPacket {
        start_of_frame,
        end_of_frame,
        template_id,
        frame_number,
        spatial_id: None,
        temporal_id: None,
        active_decode_targets: None,
        dtis: 0,
        dt_cnt: 0,
        fdiffs: [0; MAX_FDIFFS],
        fdiff_cnt: 0,
        chain_fdiffs: [0; MAX_DECODE_TARGETS],
        chain_cnt: 0,
        new_structure: None,
        active_at: 24,
        active_len: 0,
        end_bit: 24,
    };
    let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
    let mut active_present = false;
    if ext.len() > 3 {
        let has_structure = b.flag("av1 dd: extended fields")?;
        active_present = b.flag("av1 dd: extended fields")?;
        custom_dtis = b.flag("av1 dd: extended fields")?;
        custom_fdiffs = b.flag("av1 dd: extended fields")?;
        custom_chains = b.flag("av1 dd: extended fields")?;
        if has_structure {
            let s = structure(&mut b)?;
            out.active_decode_targets = Some(mask(s.dt_cnt));
            out.new_structure = Some(s);
        }
        out.active_at = b.pos as u16;
    }
    let Some(s) = out.new_structure.as_ref().or(structure_in) else {
        if active_present || custom_dtis || custom_fdiffs || custom_chains {
            return Err(CodecError::InvalidArgument("av1 dd: extended fields need a structure"));
        }
        return Ok(out);
    };
    if active_present {
        out.active_decode_targets =
            Some(b.f(u32::from(s.dt_cnt), "av1 dd: active_decode_targets_bitmask")?);
        out.active_len = s.dt_cnt;
    }
    let idx = s
        .index(template_id)
        .ok_or(CodecError::Malformed("av1 dd: template id outside the structure"))?;
    out.spatial_id = Some(s.template_sid[idx]);
    out.temporal_id = Some(s.template_tid[idx]);
    out.dt_cnt = s.dt_cnt;
    out.chain_cnt = s.chain_cnt;
    if custom_dtis {
        for d in 0..s.dt_cnt as usize {
            out.dtis |= u64::from(b.f(2, "av1 dd: frame_dti")?) << (2 * d);
        }
    } else {
        out.dtis = s.template_dtis[idx];
    }
    if custom_fdiffs {
        let mut n = 0usize;
        loop {
            let size = b.f(2, "av1 dd: next_fdiff_size")?;
            if size == 0 {
                break;
            }
            if n == MAX_FDIFFS {
                return Err(CodecError::Unsupported("av1 dd: more than 16 frame fdiffs"));
            }
            out.fdiffs[n] = b.f(4 * size, "av1 dd: frame fdiff_minus_one")? as u16 + 1;
            n += 1;
        }
        out.fdiff_cnt = n as u8;
    } else {
        let n = s.template_fdiff_cnt[idx] as usize;
        for (d, v) in out.fdiffs.iter_mut().zip(&s.template_fdiffs[idx][..n]) {
            *d = u16::from(*v);
        }
        out.fdiff_cnt = n as u8;
    }
    for c in 0..s.chain_cnt as usize {
        out.chain_fdiffs[c] = if custom_chains {
            b.f(8, "av1 dd: frame_chain_fdiff")? as u8
        } else {
            ((s.template_chain_fdiffs[idx] >> (4 * c)) & 0x0F) as u8
        };
    }
    if b.pos > ext.len() * 8 {
        return Err(CodecError::Truncated("av1 dd: descriptor"));
    }
    out.end_bit = b.pos as u16;
    Ok(out)
}

/// Longest descriptor [`with_active_decode_targets`] writes: a two-byte-form element's value.
pub const MAX_DESCRIPTOR_LEN: usize = 255;

/// Rewrites descriptor `ext` (parsed as `p`, whose structure is `s`: the one it carries or the
/// stream's) into `out` with its active decode targets bitmask set to `active` (the targets a
/// forwarding SFU still sends, AV1 RTP spec A.8.2.2 / A.8.3.3): the mandatory fields as they
/// are, the flags with `active_decode_targets_present_flag` set (a three-byte descriptor gains
/// the extended fields), the structure and custom fields copied bit for bit around the new
/// bitmask. Returns the length written, or `InvalidArgument` when `out` is too short or the
/// result would exceed [`MAX_DESCRIPTOR_LEN`].
pub fn with_active_decode_targets(
    ext: &[u8],
    p: &DdPacket,
    s: &DdStructure,
    active: u32,
    out: &mut [u8],
) -> Result<usize, CodecError> {
    if p.spatial_id.is_none() || p.dt_cnt != s.dt_cnt {
        return Err(CodecError::InvalidArgument("av1 dd: rewrite needs the packet's structure"));
    }
    let n = u32::from(s.dt_cnt);
    let extended = ext.len() > 3;
    let old = if extended { usize::from(p.end_bit) } else { 24 };
    let added = if p.active_len > 0 { 0 } else { n as usize + if extended { 0 } else { 5 } };
    let bits = old + added;
    let len = bits.div_ceil(8);
    if len > out.len().min(MAX_DESCRIPTOR_LEN) {
        return Err(CodecError::InvalidArgument("av1 dd: rewritten descriptor too long"));
    }
    let mut r = Bits { buf: ext, pos: 0 };
    let mut w = SliceBits { buf: &mut out[..len], pos: 0 };
    w.buf.fill(0);
    w.put(24, r.f(24, "av1 dd: mandatory fields")?);
    if !extended {
        // No structure, active targets present, no custom fields.
        w.put(5, 0b01000);
        w.put(n, active & mask(s.dt_cnt));
        return Ok(len);
    }
    w.put(1, r.f(1, "av1 dd: extended fields")?);
    r.f(1, "av1 dd: extended fields")?;
    w.put(1, 1);
    w.put(3, r.f(3, "av1 dd: extended fields")?);
    copy_bits(&mut r, &mut w, usize::from(p.active_at))?;
    w.put(n, active & mask(s.dt_cnt));
    if p.active_len > 0 {
        r.f(u32::from(p.active_len), "av1 dd: active_decode_targets_bitmask")?;
    }
    copy_bits(&mut r, &mut w, old)?;
    debug_assert_eq!(w.pos, bits);
    Ok(len)
}

/// Copies bits from `r` to `w` until `r` reaches bit `end`.
fn copy_bits(r: &mut Bits<'_>, w: &mut SliceBits<'_>, end: usize) -> Result<(), CodecError> {
    while r.pos < end {
        let k = (end - r.pos).min(32) as u32;
        w.put(k, r.f(k, "av1 dd: descriptor")?);
    }
    Ok(())
}

/// A bounded MSB-first bit writer over a zeroed slice (bits past its end are dropped; the
/// caller sizes it).
struct SliceBits<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl SliceBits<'_> {
    fn put(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            let bit = ((v >> i) & 1) as u8;
            if let Some(byte) = self.buf.get_mut(self.pos / 8) {
                *byte |= bit << (7 - (self.pos % 8));
            }
            self.pos += 1;
        }
    }
}

fn mask(dt_cnt: u8) -> u32 {
    if dt_cnt >= 32 { u32::MAX } else { (1u32 << dt_cnt) - 1 }
}

/// A bit writer for tests and fuzz seeds (not a full descriptor writer).
#[doc(hidden)]
#[derive(Debug)]
pub struct BitWriter {
    pub bytes: [u8; 512],
    pub bits: usize,
}

impl Default for BitWriter {
    fn default() -> Self {
        BitWriter { bytes: [0; 512], bits: 0 }
    }
}

impl BitWriter {
    /// Appends the low `n` bits of `v`, MSB first; bits past the buffer are dropped.
    pub fn put(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            let bit = ((v >> i) & 1) as u8;
            if let Some(byte) = self.bytes.get_mut(self.bits / 8) {
                *byte |= bit << (7 - (self.bits % 8));
            }
            self.bits += 1;
        }
    }
    /// The bytes written, zero-padded to a whole byte.
    pub fn finish(&self) -> &[u8] {
        &self.bytes[..self.bits.div_ceil(8).min(self.bytes.len())]
    }
}

/// An L1T3-like descriptor carrying its structure (for tests and fuzz seeds): 4 templates
/// (T0 key, T0, T2, T1, T2 ...), 3 decode targets, one chain, resolution 1280x720.
#[doc(hidden)]
pub fn sample_l1t3_with_structure(w: &mut BitWriter, template_id: u8, frame_number: u16) {
    w.put(1, 1); // start_of_frame
    w.put(1, 1); // end_of_frame
    w.put(6, u32::from(template_id));
    w.put(16, u32::from(frame_number));
    w.put(5, 0b10000); // structure present, nothing else custom
    w.put(6, 0); // template_id_offset
    w.put(5, 2); // 3 decode targets
    // templates: (0,0) (0,0) (0,1) (0,2) (0,2)
    for idc in [0, 1, 1, 0, 3] {
        w.put(2, idc);
    }
    // DTIs per template for DT0..DT2 (S=2, R=3, D=1, -=0)
    for dtis in [[2, 2, 2], [3, 3, 3], [0, 2, 2], [0, 0, 1], [0, 0, 1]] {
        for d in dtis {
            w.put(2, d);
        }
    }
    // fdiffs: key none; T0 refs 4; T1 refs 2; T2 refs 1; T2 refs 1
    for f in [None, Some(4), Some(2), Some(1), Some(1)] {
        if let Some(f) = f {
            w.put(1, 1);
            w.put(4, f - 1);
        }
        w.put(1, 0);
    }
    // chain_cnt = ns(4) = 1: w=3, m=4, v=f(2)=1 < 4
    w.put(2, 1);
    // protected_by for 3 targets: ns(1) reads nothing
    for c in [0, 4, 2, 1, 1] {
        w.put(4, c);
    }
    w.put(1, 1); // resolutions present
    w.put(16, 1279);
    w.put(16, 719);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_then_template_only() {
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 100);
        let p = parse(w.finish(), None).unwrap();
        assert!(p.start_of_frame && p.end_of_frame);
        assert_eq!(p.frame_number, 100);
        assert_eq!((p.spatial_id, p.temporal_id), (Some(0), Some(0)));
        assert_eq!(p.active_decode_targets, Some(0b111));
        assert_eq!(p.dti(0), Some(Dti::Switch));
        let s = p.new_structure.unwrap();
        assert_eq!((s.template_count(), s.decode_target_count(), s.chain_count()), (5, 3, 1));
        assert_eq!(s.decode_target_layers(0), Some((0, 0)));
        assert_eq!(s.decode_target_layers(1), Some((0, 1)));
        assert_eq!(s.decode_target_layers(2), Some((0, 2)));
        assert_eq!(s.resolution(0), Some((1280, 720)));
        assert_eq!(s.max_temporal_id(), 2);
        // A 3-byte descriptor: template 3 (T2), not start, end.
        let p = parse(&[0x43, 0x00, 0x65], Some(&s)).unwrap();
        assert!(!p.start_of_frame && p.end_of_frame);
        assert_eq!((p.spatial_id, p.temporal_id), (Some(0), Some(2)));
        assert_eq!((p.fdiff_cnt, p.fdiffs[0], p.chain_fdiffs[0]), (1, 1, 1));
        assert_eq!(p.dti(2), Some(Dti::Discardable));
        // Without a structure only the mandatory fields.
        let p = parse(&[0x43, 0x00, 0x65], None).unwrap();
        assert_eq!(p.spatial_id, None);
        // Template id outside the structure.
        assert!(matches!(parse(&[0x07, 0, 1], Some(&s)), Err(CodecError::Malformed(_))));
        // Into a PacketInfo: the key template (no diffs, DTI Switch) starts a keyframe.
        let mut info = PacketInfo::default();
        parse(&[0x80, 0x00, 0x66], Some(&s)).unwrap().apply_to(&mut info);
        assert!(info.keyframe && info.frame_start && !info.frame_end && info.layer_sync);
        assert_eq!((info.spatial_id, info.temporal_id), (Some(0), Some(0)));
        let mut info = PacketInfo::default();
        parse(&[0xC3, 0x00, 0x67], Some(&s)).unwrap().apply_to(&mut info);
        assert!(!info.keyframe && info.inter_predicted && !info.layer_sync);
        assert_eq!(info.temporal_id, Some(2));
    }

    #[test]
    fn custom_fields_and_errors() {
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 1);
        let s = parse(w.finish(), None).unwrap().new_structure.unwrap();
        // Extended: active targets + custom dtis + custom fdiffs + custom chains.
        let mut w = BitWriter::default();
        w.put(1, 1);
        w.put(1, 0);
        w.put(6, 2);
        w.put(16, 7);
        w.put(5, 0b01111);
        w.put(3, 0b011); // active targets
        for d in [0, 3, 3] {
            w.put(2, d);
        }
        w.put(2, 2); // fdiff of 8 bits
        w.put(8, 199);
        w.put(2, 0);
        w.put(8, 9); // chain fdiff
        let p = parse(w.finish(), Some(&s)).unwrap();
        assert_eq!(p.active_decode_targets, Some(0b011));
        assert_eq!(
            (p.temporal_id, p.dti(0), p.dti(1)),
            (Some(1), Some(Dti::NotPresent), Some(Dti::Required))
        );
        assert_eq!((p.fdiff_cnt, p.fdiffs[0], p.chain_fdiffs[0]), (1, 200, 9));
        assert!(matches!(parse(w.finish(), None), Err(CodecError::InvalidArgument(_))));
        assert_eq!(parse(&[0x80, 0], None), Err(CodecError::Truncated("av1 dd: mandatory fields")));
        // A structure cut short.
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 1);
        assert!(matches!(parse(&w.finish()[..8], None), Err(CodecError::Truncated(_))));
    }

    /// The active decode targets rewrite keeps everything else of the descriptor: a structure
    /// packet, a three-byte one (which gains the extended fields) and one with custom fields
    /// and a bitmask already.
    #[test]
    fn active_decode_targets_rewrite() {
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 300);
        let key = w.finish().to_vec();
        let p = parse(&key, None).unwrap();
        let s = p.new_structure.clone().unwrap();
        assert_eq!(
            (s.targets_upto(0, 1), s.targets_upto(3, 7), s.all_targets()),
            (0b011, 0b111, 0b111)
        );
        let mut out = [0u8; MAX_DESCRIPTOR_LEN];
        let n = with_active_decode_targets(&key, &p, &s, 0b011, &mut out).unwrap();
        assert_eq!(n, (usize::from(p.end_bit) + 3).div_ceil(8), "three bits more");
        let q = parse(&out[..n], None).unwrap();
        assert_eq!(q.active_decode_targets, Some(0b011));
        assert_eq!(q.new_structure.as_ref(), Some(&s));
        assert_eq!((q.frame_number, q.template_id, q.start_of_frame), (300, 0, true));
        // A three-byte descriptor (T1 frame): 24 + 5 flags + 3 mask bits = 4 bytes.
        let t1 = [0x42, 0x01, 0x2D];
        let p = parse(&t1, Some(&s)).unwrap();
        let n = with_active_decode_targets(&t1, &p, &s, 0b001, &mut out).unwrap();
        assert_eq!(&out[..n], &[0x42, 0x01, 0x2D, 0b0100_0001]);
        let q = parse(&out[..n], Some(&s)).unwrap();
        assert_eq!(q.active_decode_targets, Some(0b001));
        assert_eq!((q.temporal_id, q.frame_number, q.end_of_frame), (Some(1), 301, true));
        assert_eq!((q.dti(1), q.dti(2)), (Some(Dti::Switch), Some(Dti::Switch)));
        // Custom fields and a bitmask already there: replaced, the rest kept.
        let mut w = BitWriter::default();
        for (n, v) in [(1, 1), (1, 0), (6, 2), (16, 7), (5, 0b01111), (3, 0b011)] {
            w.put(n, v);
        }
        for (n, v) in [(2, 0), (2, 3), (2, 3), (2, 2), (8, 199), (2, 0), (8, 9)] {
            w.put(n, v);
        }
        let custom = w.finish().to_vec();
        let p = parse(&custom, Some(&s)).unwrap();
        let n = with_active_decode_targets(&custom, &p, &s, 0b111, &mut out).unwrap();
        assert_eq!(n, custom.len());
        let q = parse(&out[..n], Some(&s)).unwrap();
        assert_eq!(q.active_decode_targets, Some(0b111));
        assert_eq!(
            (q.dti(0), q.dti(1), q.fdiffs[0], q.chain_fdiffs[0]),
            (Some(Dti::NotPresent), Some(Dti::Required), 200, 9)
        );
        // Too small an output, or a packet parsed without its structure: refused.
        assert!(with_active_decode_targets(&custom, &p, &s, 1, &mut out[..2]).is_err());
        let bare = parse(&t1, None).unwrap();
        assert!(with_active_decode_targets(&t1, &bare, &s, 1, &mut out).is_err());
    }
}
