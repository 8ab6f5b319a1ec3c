//! Bitstream headers the muxer needs from a keyframe: an MSB-first bit reader, the H.264
//! SPS (dimensions, `avcC`), the AV1 sequence header (dimensions, `av1C`) and the VP8 / VP9
//! keyframe headers (dimensions). Bounded reads only; a short or odd header is an error.

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The header ended before the named field.
    Truncated(&'static str),
    /// The named field has a value the format forbids or we do not support.
    Malformed(&'static str),
}

/// An MSB-first bit reader over a byte slice.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// One bit.
    pub fn bit(&mut self, what: &'static str) -> Result<bool, HeaderError> {
        let byte = self.data.get(self.pos / 8).ok_or(HeaderError::Truncated(what))?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(b == 1)
    }

    /// `n` bits (at most 64) as an unsigned number.
    pub fn bits(&mut self, n: u32, what: &'static str) -> Result<u64, HeaderError> {
        let mut v = 0u64;
        for _ in 0..n.min(64) {
            v = (v << 1) | u64::from(self.bit(what)?);
        }
        Ok(v)
    }

    /// An Exp-Golomb unsigned number (H.264 `ue(v)`).
    pub fn ue(&mut self, what: &'static str) -> Result<u64, HeaderError> {
        let mut zeros = 0;
        while !self.bit(what)? {
            zeros += 1;
            if zeros > 32 {
                return Err(HeaderError::Malformed(what));
            }
        }
        Ok((1u64 << zeros) - 1 + self.bits(zeros, what)?)
    }

    /// An Exp-Golomb signed number (H.264 `se(v)`).
    pub fn se(&mut self, what: &'static str) -> Result<i64, HeaderError> {
        let k = self.ue(what)? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1 `uvlc()`.
    pub fn uvlc(&mut self, what: &'static str) -> Result<u64, HeaderError> {
        let mut zeros = 0;
        while !self.bit(what)? {
            zeros += 1;
            if zeros >= 32 {
                return Err(HeaderError::Malformed(what));
            }
        }
        Ok((1u64 << zeros) - 1 + self.bits(zeros, what)?)
    }
}

/// The H.264 RBSP of a NAL unit (emulation-prevention bytes removed, header byte skipped).
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// What the muxer takes from an H.264 sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// Cropped picture width.
    pub width: u32,
    /// Cropped picture height.
    pub height: u32,
    /// profile_idc.
    pub profile_idc: u8,
    /// chroma_format_idc (1 when the profile does not code it).
    pub chroma_format_idc: u8,
    /// bit_depth_luma_minus8.
    pub bit_depth_luma_minus8: u8,
    /// bit_depth_chroma_minus8.
    pub bit_depth_chroma_minus8: u8,
}

/// Reads width and height from an SPS NAL unit (header byte included).
pub fn h264_sps(nal: &[u8]) -> Result<SpsInfo, HeaderError> {
    let data = rbsp(nal);
    let mut r = BitReader::new(&data);
    let profile = r.bits(8, "profile_idc")?;
    r.bits(16, "constraint/level")?;
    r.ue("seq_parameter_set_id")?;
    let mut chroma = 1;
    let (mut depth_luma, mut depth_chroma) = (0, 0);
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma = r.ue("chroma_format_idc")?;
        if chroma > 3 {
            return Err(HeaderError::Malformed("chroma_format_idc"));
        }
        if chroma == 3 {
            r.bit("separate_colour_plane_flag")?;
        }
        depth_luma = r.ue("bit_depth_luma")?.min(7) as u8;
        depth_chroma = r.ue("bit_depth_chroma")?.min(7) as u8;
        r.bit("qpprime_y_zero_transform_bypass")?;
        if r.bit("seq_scaling_matrix_present")? {
            let lists = if chroma == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit("seq_scaling_list_present")? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            let delta = r.se("delta_scale")?;
                            next = (last + delta).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue("log2_max_frame_num")?;
    match r.ue("pic_order_cnt_type")? {
        0 => {
            r.ue("log2_max_pic_order_cnt_lsb")?;
        }
        1 => {
            r.bit("delta_pic_order_always_zero")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let n = r.ue("num_ref_frames_in_pic_order_cnt_cycle")?;
            if n > 255 {
                return Err(HeaderError::Malformed("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..n {
                r.se("offset_for_ref_frame")?;
            }
        }
        2 => {}
        _ => return Err(HeaderError::Malformed("pic_order_cnt_type")),
    }
    r.ue("max_num_ref_frames")?;
    r.bit("gaps_in_frame_num_value_allowed")?;
    let w_mbs = r.ue("pic_width_in_mbs_minus1")? + 1;
    let h_units = r.ue("pic_height_in_map_units_minus1")? + 1;
    let frame_mbs_only = r.bit("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.bit("mb_adaptive_frame_field")?;
    }
    r.bit("direct_8x8_inference")?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit("frame_cropping_flag")? {
        cl = r.ue("frame_crop_left")?;
        cr = r.ue("frame_crop_right")?;
        ct = r.ue("frame_crop_top")?;
        cb = r.ue("frame_crop_bottom")?;
    }
    let fm = if frame_mbs_only { 1 } else { 2 };
    let (cx, cy) = match chroma {
        0 => (1, fm),
        1 => (2, 2 * fm),
        2 => (2, fm),
        _ => (1, fm),
    };
    let width = (w_mbs * 16).checked_sub(cx * (cl + cr)).ok_or(HeaderError::Malformed("crop"))?;
    let height =
        (fm * h_units * 16).checked_sub(cy * (ct + cb)).ok_or(HeaderError::Malformed("crop"))?;
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(HeaderError::Malformed("picture size"));
    }
    Ok(SpsInfo {
        width: width as u32,
        height: height as u32,
        profile_idc: profile as u8,
        chroma_format_idc: chroma as u8,
        bit_depth_luma_minus8: depth_luma,
        bit_depth_chroma_minus8: depth_chroma,
    })
}

/// The `avcC` record (ISO/IEC 14496-15 §5.3.3.1) for one SPS and one PPS, 4-byte lengths;
/// for the High profiles (100, 110, 122, 144) with the chroma format and bit depths after.
pub fn avcc(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, HeaderError> {
    let info = h264_sps(sps)?;
    if sps.len() < 4 {
        return Err(HeaderError::Truncated("sps"));
    }
    let len = |n: &[u8], what| u16::try_from(n.len()).map_err(|_| HeaderError::Malformed(what));
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
    v.extend_from_slice(&len(sps, "sps length")?.to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&len(pps, "pps length")?.to_be_bytes());
    v.extend_from_slice(pps);
    if matches!(info.profile_idc, 100 | 110 | 122 | 144) {
        v.push(0xFC | (info.chroma_format_idc & 3));
        v.push(0xF8 | (info.bit_depth_luma_minus8 & 7));
        v.push(0xF8 | (info.bit_depth_chroma_minus8 & 7));
        v.push(0);
    }
    Ok(v)
}

/// What the muxer takes from an AV1 sequence header OBU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1SeqInfo {
    /// max_frame_width_minus_1 + 1.
    pub width: u32,
    /// max_frame_height_minus_1 + 1.
    pub height: u32,
    /// The four fixed bytes of `av1C` (marker, version, profile, level, tier, colour).
    pub av1c: [u8; 4],
    /// reduced_still_picture_header (frame headers then have no show_existing/frame_type).
    pub reduced_still_picture_header: bool,
}

/// Reads a sequence header OBU's payload (after the OBU header and size field).
pub fn av1_sequence_header(payload: &[u8]) -> Result<Av1SeqInfo, HeaderError> {
    let mut r = BitReader::new(payload);
    let profile = r.bits(3, "seq_profile")? as u8;
    if profile > 2 {
        return Err(HeaderError::Malformed("seq_profile"));
    }
    r.bit("still_picture")?;
    let reduced = r.bit("reduced_still_picture_header")?;
    let (level0, tier0);
    if reduced {
        level0 = r.bits(5, "seq_level_idx")? as u8;
        tier0 = 0;
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_len = 0;
        if r.bit("timing_info_present_flag")? {
            r.bits(64, "timing_info")?;
            if r.bit("equal_picture_interval")? {
                r.uvlc("num_ticks_per_picture_minus_1")?;
            }
            decoder_model_info_present = r.bit("decoder_model_info_present_flag")?;
            if decoder_model_info_present {
                buffer_delay_len = r.bits(5, "buffer_delay_length_minus_1")? as u32 + 1;
                r.bits(32, "num_units_in_decoding_tick")?;
                r.bits(10, "removal/presentation lengths")?;
            }
        }
        let initial_display_delay_present = r.bit("initial_display_delay_present_flag")?;
        let ops = r.bits(5, "operating_points_cnt_minus_1")? + 1;
        let (mut l0, mut t0) = (0u8, 0u8);
        for i in 0..ops {
            r.bits(12, "operating_point_idc")?;
            let level = r.bits(5, "seq_level_idx")? as u8;
            let tier = if level > 7 { r.bit("seq_tier")? as u8 } else { 0 };
            if i == 0 {
                (l0, t0) = (level, tier);
            }
            if decoder_model_info_present && r.bit("decoder_model_present_for_this_op")? {
                r.bits(2 * buffer_delay_len + 1, "operating_parameters_info")?;
            }
            if initial_display_delay_present
                && r.bit("initial_display_delay_present_for_this_op")?
            {
                r.bits(4, "initial_display_delay_minus_1")?;
            }
        }
        level0 = l0;
        tier0 = t0;
    }
    let wb = r.bits(4, "frame_width_bits_minus_1")? as u32 + 1;
    let hb = r.bits(4, "frame_height_bits_minus_1")? as u32 + 1;
    let width = r.bits(wb, "max_frame_width_minus_1")? as u32 + 1;
    let height = r.bits(hb, "max_frame_height_minus_1")? as u32 + 1;
    if !reduced && r.bit("frame_id_numbers_present_flag")? {
        r.bits(7, "frame id lengths")?;
    }
    r.bits(3, "superblock/filter_intra/intra_edge")?;
    if !reduced {
        r.bits(4, "interintra/masked/warped/dual_filter")?;
        let order_hint = r.bit("enable_order_hint")?;
        if order_hint {
            r.bits(2, "jnt_comp/ref_frame_mvs")?;
        }
        let force_sct = if r.bit("seq_choose_screen_content_tools")? {
            2
        } else {
            r.bits(1, "seq_force_screen_content_tools")?
        };
        if force_sct > 0 && !r.bit("seq_choose_integer_mv")? {
            r.bit("seq_force_integer_mv")?;
        }
        if order_hint {
            r.bits(3, "order_hint_bits_minus_1")?;
        }
    }
    r.bits(3, "superres/cdef/restoration")?;
    // color_config()
    let high_bitdepth = r.bit("high_bitdepth")?;
    let twelve_bit = profile == 2 && high_bitdepth && r.bit("twelve_bit")?;
    let mono = profile != 1 && r.bit("mono_chrome")?;
    let (mut cp, mut tc, mut mc) = (2, 2, 2);
    if r.bit("color_description_present_flag")? {
        cp = r.bits(8, "color_primaries")?;
        tc = r.bits(8, "transfer_characteristics")?;
        mc = r.bits(8, "matrix_coefficients")?;
    }
    let (ssx, ssy, mut csp) = if mono {
        r.bit("color_range")?;
        (true, true, 0)
    } else if cp == 1 && tc == 13 && mc == 0 {
        (false, false, 0)
    } else {
        r.bit("color_range")?;
        match profile {
            0 => (true, true, 0),
            1 => (false, false, 0),
            _ if twelve_bit => {
                let x = r.bit("subsampling_x")?;
                let y = x && r.bit("subsampling_y")?;
                (x, y, 0)
            }
            _ => (true, false, 0),
        }
    };
    if !mono && ssx && ssy && !(cp == 1 && tc == 13 && mc == 0) {
        csp = r.bits(2, "chroma_sample_position")? as u8;
    }
    let b = |v: bool, s: u8| u8::from(v) << s;
    let av1c = [
        0x81,
        (profile << 5) | (level0 & 0x1F),
        b(tier0 == 1, 7)
            | b(high_bitdepth, 6)
            | b(twelve_bit, 5)
            | b(mono, 4)
            | b(ssx, 3)
            | b(ssy, 2)
            | (csp & 3),
        0,
    ];
    Ok(Av1SeqInfo { width, height, av1c, reduced_still_picture_header: reduced })
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1), `None` for an interframe.
pub fn vp8_keyframe_size(frame: &[u8]) -> Result<Option<(u32, u32)>, HeaderError> {
    let first = *frame.first().ok_or(HeaderError::Truncated("frame tag"))?;
    if first & 1 != 0 {
        return Ok(None);
    }
    let hdr = frame.get(3..10).ok_or(HeaderError::Truncated("keyframe header"))?;
    if hdr[..3] != [0x9D, 0x01, 0x2A] {
        return Err(HeaderError::Malformed("start code"));
    }
    let w = u32::from(u16::from_le_bytes([hdr[3], hdr[4]]) & 0x3FFF);
    let h = u32::from(u16::from_le_bytes([hdr[5], hdr[6]]) & 0x3FFF);
    Ok(Some((w, h)))
}

/// Width and height of a VP9 keyframe's uncompressed header, `None` for another frame.
pub fn vp9_keyframe_size(frame: &[u8]) -> Result<Option<(u32, u32)>, HeaderError> {
    let mut r = BitReader::new(frame);
    if r.bits(2, "frame_marker")? != 2 {
        return Err(HeaderError::Malformed("frame_marker"));
    }
    let lo = r.bit("profile_low_bit")? as u8;
    let hi = r.bit("profile_high_bit")? as u8;
    let profile = (hi << 1) | lo;
    if profile == 3 {
        r.bit("reserved_zero")?;
    }
    if r.bit("show_existing_frame")? {
        return Ok(None);
    }
    if r.bit("frame_type")? {
        return Ok(None);
    }
    r.bits(2, "show_frame/error_resilient")?;
    if r.bits(24, "frame_sync_code")? != 0x49_8342 {
        return Err(HeaderError::Malformed("frame_sync_code"));
    }
    if profile >= 2 {
        r.bit("ten_or_twelve_bit")?;
    }
    let cs = r.bits(3, "color_space")?;
    if cs != 7 {
        r.bit("color_range")?;
        if profile == 1 || profile == 3 {
            r.bits(3, "subsampling/reserved")?;
        }
    } else if profile == 1 || profile == 3 {
        r.bit("reserved_zero")?;
    }
    let w = r.bits(16, "frame_width_minus_1")? as u32 + 1;
    let h = r.bits(16, "frame_height_minus_1")? as u32 + 1;
    Ok(Some((w, h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 -> 0, 1, 2, 3
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.ue("a").unwrap(), 0);
        assert_eq!(r.ue("b").unwrap(), 1);
        assert_eq!(r.ue("c").unwrap(), 2);
        assert_eq!(r.ue("d").unwrap(), 3);
        assert!(r.ue("e").is_err());
    }

    #[test]
    fn sps_baseline_320x240() {
        // x264 baseline 320x240 SPS.
        let sps = [
            0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x01, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
            0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0xA4, 0x80,
        ];
        let info = h264_sps(&sps).unwrap();
        assert_eq!((info.width, info.height, info.profile_idc), (320, 240, 66));
        let avcc = avcc(&sps, &[0x68, 0xCE, 0x3C, 0x80]).unwrap();
        assert_eq!(avcc.len(), 6 + 2 + sps.len() + 1 + 2 + 4, "no High-profile extension");
    }

    #[test]
    fn vp8_key() {
        let f = [0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00];
        assert_eq!(vp8_keyframe_size(&f).unwrap(), Some((320, 240)));
        assert_eq!(vp8_keyframe_size(&[0x11]).unwrap(), None);
    }
}
