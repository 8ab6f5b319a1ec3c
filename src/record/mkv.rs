//! A sans-IO Matroska / WebM writer for one recording: an EBML header, a Segment of unknown
//! size while writing, SeekHead, Info, Tracks (one video and/or one Opus track), Clusters of
//! SimpleBlocks, and at the end Cues and the patches that make the file final.
//!
//! Use:
//! 1. [`MkvMuxer::new`] appends the header to the caller's `Vec<u8>`;
//! 2. [`MkvMuxer::write_frame`] appends a SimpleBlock (and a Cluster header before it when a
//!    cluster starts) for each frame, in time order per track;
//! 3. after every call drain [`MkvMuxer::poll_patch`]: each [`Patch`] overwrites bytes already
//!    appended at an absolute offset (a finished cluster's size) and is applied with a
//!    positioned write;
//! 4. [`MkvMuxer::finish`] appends the Cues and leaves the final patches (Segment size, Info
//!    Duration, the SeekHead entry for the Cues).
//!
//! Clusters start at video keyframes (with a video track) or every [`AUDIO_CLUSTER_MS`] /
//! [`AUDIO_CLUSTER_BYTES`] (audio only), and never span more than a SimpleBlock's signed 16-bit
//! relative time allows. Each cluster that starts with a keyframe gets one CuePoint. A file cut
//! short (a crash before `finish`) is still readable: the Segment is "unknown size" and every
//! closed cluster has its real size.
//!
//! Why by hand: the crates that write Matroska are `webm` (bindings to the C++ libwebm,
//! which does its own file I/O) and `webm-iterable`/`ebml-iterable` (a generic tag serialiser
//! without clusters, cues or patching, which is the part that needs writing anyway). EBML
//! output is a few dozen lines ([`super::ebml`]); the Matroska logic is what is here.

use super::ebml::{
    UNKNOWN_SIZE, put_bytes, put_float, put_id, put_master, put_size, put_uint, put_uint8,
    put_void, size8,
};

/// Audio-only clusters close after this much time.
pub const AUDIO_CLUSTER_MS: u64 = 5_000;
/// Audio-only clusters close after this many bytes.
pub const AUDIO_CLUSTER_BYTES: u64 = 5 * 1024 * 1024;
/// Any cluster closes before a block's relative time could overflow its i16.
const MAX_CLUSTER_SPAN_MS: u64 = 30_000;

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const DURATION: u32 = 0x4489;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// The four video codecs a recording can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (`V_VP8`, WebM).
    Vp8,
    /// VP9 (`V_VP9`, WebM).
    Vp9,
    /// AV1 (`V_AV1`, WebM, `av1C` CodecPrivate).
    Av1,
    /// H.264 (`V_MPEG4/ISO/AVC`, Matroska, `avcC` CodecPrivate).
    H264,
}

impl VideoCodec {
    /// The Matroska CodecID.
    pub fn codec_id(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "V_VP8",
            VideoCodec::Vp9 => "V_VP9",
            VideoCodec::Av1 => "V_AV1",
            VideoCodec::H264 => "V_MPEG4/ISO/AVC",
        }
    }

    /// WebM holds VP8, VP9 and AV1; H.264 needs Matroska.
    pub fn doc_type(self) -> &'static str {
        match self {
            VideoCodec::H264 => "matroska",
            _ => "webm",
        }
    }
}

/// The video track of a file, known once the first keyframe arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// Codec.
    pub codec: VideoCodec,
    /// PixelWidth.
    pub width: u32,
    /// PixelHeight.
    pub height: u32,
    /// CodecPrivate (`avcC`, `av1C`), empty for VP8/VP9.
    pub codec_private: Vec<u8>,
}

/// The Opus track of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusTrack {
    /// Channels in the OpusHead.
    pub channels: u8,
    /// Pre-skip in 48 kHz samples (CodecDelay).
    pub pre_skip: u16,
}

impl OpusTrack {
    /// WebRTC's Opus: two channels signalled, libopus' usual 312-sample pre-skip.
    pub const WEBRTC: OpusTrack = OpusTrack { channels: 2, pre_skip: 312 };

    /// The OpusHead identification header (RFC 7845 §5.1), the track's CodecPrivate.
    pub fn opus_head(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(19);
        h.extend_from_slice(b"OpusHead");
        h.push(1);
        h.push(self.channels.max(1));
        h.extend_from_slice(&self.pre_skip.to_le_bytes());
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&0i16.to_le_bytes());
        h.push(0);
        h
    }
}

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

/// Bytes to overwrite at an absolute offset of what was appended so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch {
    /// Absolute offset from the start of the file.
    pub offset: u64,
    len: u8,
    buf: [u8; 24],
}

impl Patch {
    fn new(offset: u64, bytes: &[u8]) -> Patch {
        let mut buf = [0u8; 24];
        let len = bytes.len().min(24);
        buf[..len].copy_from_slice(&bytes[..len]);
        Patch { offset, len: len as u8, buf }
    }

    /// The bytes to write at [`Patch::offset`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len).min(24)]
    }

    /// Applies the patch to an in-memory copy of the file (tests, fuzzing); false when the
    /// offset lies outside `file`.
    pub fn apply(&self, file: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(self.offset) else { return false };
        match file.get_mut(start..start + self.bytes().len()) {
            Some(dst) => {
                dst.copy_from_slice(self.bytes());
                true
            }
            None => false,
        }
    }
}

/// Caller misuse of the muxer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxError {
    /// The file has no track of this kind.
    NoSuchTrack,
    /// A frame larger than a block can sensibly hold (over 64 MiB).
    FrameTooLarge,
    /// `finish` was already called.
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Cluster {
    size_at: u64,
    data_start: u64,
    time: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct TrackState {
    number: u8,
    last: Option<u64>,
    last_delta: u64,
}

/// A Matroska / WebM writer; see the module docs for the call order.
#[derive(Debug)]
pub struct MkvMuxer {
    written: u64,
    segment_size_at: u64,
    segment_data: u64,
    seek_void_at: u64,
    duration_at: u64,
    cluster: Option<Cluster>,
    cues: Vec<(u64, u8, u64)>,
    video: Option<TrackState>,
    audio: Option<TrackState>,
    end_ms: u64,
    frames: u64,
    patches: Vec<Patch>,
    finished: bool,
}

const SEEK_ENTRY_LEN: usize = 21;

fn seek_entry(out: &mut Vec<u8>, target: u32, pos: u64) {
    let mut body = Vec::with_capacity(18);
    put_bytes(&mut body, id::SEEK_ID, &target.to_be_bytes());
    put_uint8(&mut body, id::SEEK_POSITION, pos);
    put_master(out, id::SEEK, &body);
}

impl MkvMuxer {
    /// Starts a file: appends the EBML header, the Segment start, SeekHead, Info and Tracks to
    /// `out` (the first bytes of the file). With neither track the file holds no media.
    pub fn new(
        video: Option<&VideoTrack>,
        audio: Option<OpusTrack>,
        out: &mut Vec<u8>,
    ) -> MkvMuxer {
        let start = out.len();
        let doc = video.map_or("webm", |v| v.codec.doc_type());
        let mut h = Vec::new();
        put_uint(&mut h, id::EBML_VERSION, 1);
        put_uint(&mut h, id::EBML_READ_VERSION, 1);
        put_uint(&mut h, id::EBML_MAX_ID_LENGTH, 4);
        put_uint(&mut h, id::EBML_MAX_SIZE_LENGTH, 8);
        put_bytes(&mut h, id::DOC_TYPE, doc.as_bytes());
        put_uint(&mut h, id::DOC_TYPE_VERSION, 4);
        put_uint(&mut h, id::DOC_TYPE_READ_VERSION, 2);
        put_master(out, id::EBML, &h);

        put_id(out, id::SEGMENT);
        let segment_size_at = (out.len() - start) as u64;
        out.extend_from_slice(&UNKNOWN_SIZE);
        let segment_data = (out.len() - start) as u64;

        // Info.
        let mut info = Vec::new();
        put_uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
        put_bytes(&mut info, id::MUXING_APP, b"ringsfu");
        put_bytes(&mut info, id::WRITING_APP, b"ringsfu");
        let duration_in_info = info.len() as u64 + 3;
        put_float(&mut info, id::DURATION, 0.0);
        let mut info_el = Vec::new();
        put_master(&mut info_el, id::INFO, &info);
        let info_header = (info_el.len() - info.len()) as u64;

        // Tracks.
        let mut next = 1u8;
        let mut video_state = None;
        let mut audio_state = None;
        let mut tracks = Vec::new();
        if let Some(v) = video {
            let mut e = Vec::new();
            put_uint(&mut e, id::TRACK_NUMBER, u64::from(next));
            put_uint(&mut e, id::TRACK_UID, u64::from(next));
            put_uint(&mut e, id::TRACK_TYPE, 1);
            put_uint(&mut e, id::FLAG_LACING, 0);
            put_bytes(&mut e, id::CODEC_ID, v.codec.codec_id().as_bytes());
            if !v.codec_private.is_empty() {
                put_bytes(&mut e, id::CODEC_PRIVATE, &v.codec_private);
            }
            let mut vid = Vec::new();
            put_uint(&mut vid, id::PIXEL_WIDTH, u64::from(v.width));
            put_uint(&mut vid, id::PIXEL_HEIGHT, u64::from(v.height));
            put_master(&mut e, id::VIDEO, &vid);
            put_master(&mut tracks, id::TRACK_ENTRY, &e);
            video_state = Some(TrackState { number: next, ..TrackState::default() });
            next += 1;
        }
        if let Some(a) = audio {
            let mut e = Vec::new();
            put_uint(&mut e, id::TRACK_NUMBER, u64::from(next));
            put_uint(&mut e, id::TRACK_UID, u64::from(next));
            put_uint(&mut e, id::TRACK_TYPE, 2);
            put_uint(&mut e, id::FLAG_LACING, 0);
            put_bytes(&mut e, id::CODEC_ID, b"A_OPUS");
            put_bytes(&mut e, id::CODEC_PRIVATE, &a.opus_head());
            put_uint(&mut e, id::CODEC_DELAY, u64::from(a.pre_skip) * 1_000_000_000 / 48_000);
            put_uint(&mut e, id::SEEK_PRE_ROLL, 80_000_000);
            let mut aud = Vec::new();
            put_float(&mut aud, id::SAMPLING_FREQUENCY, 48_000.0);
            put_uint(&mut aud, id::CHANNELS, u64::from(a.channels.max(1)));
            put_master(&mut e, id::AUDIO, &aud);
            put_master(&mut tracks, id::TRACK_ENTRY, &e);
            audio_state = Some(TrackState { number: next, ..TrackState::default() });
        }
        let mut tracks_el = Vec::new();
        put_master(&mut tracks_el, id::TRACKS, &tracks);

        // SeekHead: fixed size (8-byte positions), Info and Tracks, then room for Cues.
        let seek_body_len = 3 * SEEK_ENTRY_LEN;
        let seek_head_len = 4 + 1 + seek_body_len as u64;
        let info_pos = seek_head_len;
        let tracks_pos = info_pos + info_el.len() as u64;
        let mut sh = Vec::with_capacity(seek_body_len);
        seek_entry(&mut sh, id::INFO, info_pos);
        seek_entry(&mut sh, id::TRACKS, tracks_pos);
        let void_in_body = sh.len() as u64;
        put_void(&mut sh, SEEK_ENTRY_LEN);
        put_id(out, id::SEEK_HEAD);
        put_size(out, sh.len() as u64);
        out.extend_from_slice(&sh);
        let seek_void_at = segment_data + 5 + void_in_body;
        let duration_at = segment_data + info_pos + info_header + duration_in_info;
        out.extend_from_slice(&info_el);
        out.extend_from_slice(&tracks_el);

        MkvMuxer {
            written: (out.len() - start) as u64,
            segment_size_at,
            segment_data,
            seek_void_at,
            duration_at,
            cluster: None,
            cues: Vec::new(),
            video: video_state,
            audio: audio_state,
            end_ms: 0,
            frames: 0,
            patches: Vec::new(),
            finished: false,
        }
    }

    /// Bytes appended so far (the file's length once every append is written).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The Duration the file will carry: the end of the last frame, in ms.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms
    }

    /// Whether the file has a track of this kind.
    pub fn has_track(&self, kind: TrackKind) -> bool {
        match kind {
            TrackKind::Video => self.video.is_some(),
            TrackKind::Audio => self.audio.is_some(),
        }
    }

    /// The next patch to apply (drain after every call).
    pub fn poll_patch(&mut self) -> Option<Patch> {
        self.patches.pop()
    }

    fn close_cluster(&mut self) {
        if let Some(c) = self.cluster.take() {
            let size = self.written - c.data_start;
            self.patches.push(Patch::new(c.size_at, &size8(size)));
        }
    }

    /// Appends one frame at `time_ms` (from the start of the file) to `out`. Times go forward
    /// per track (an earlier time is raised to the track's last one). Audio frames are always
    /// keyframes.
    pub fn write_frame(
        &mut self,
        kind: TrackKind,
        time_ms: u64,
        keyframe: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        if self.finished {
            return Err(MuxError::Finished);
        }
        if data.len() > 64 << 20 {
            return Err(MuxError::FrameTooLarge);
        }
        let has_video = self.video.is_some();
        let state = match kind {
            TrackKind::Video => self.video.as_mut(),
            TrackKind::Audio => self.audio.as_mut(),
        }
        .ok_or(MuxError::NoSuchTrack)?;
        let time = state.last.map_or(time_ms, |l| time_ms.max(l));
        if let Some(l) = state.last {
            if time > l {
                state.last_delta = time - l;
            }
        } else if kind == TrackKind::Audio {
            state.last_delta = 20;
        }
        state.last = Some(time);
        let number = state.number;
        let end = time + state.last_delta;
        let keyframe = keyframe || kind == TrackKind::Audio;

        let new_cluster = match self.cluster {
            None => true,
            Some(c) => {
                let span = time.saturating_sub(c.time);
                let early = time < c.time;
                let cut = if has_video {
                    kind == TrackKind::Video && keyframe
                } else {
                    span >= AUDIO_CLUSTER_MS || c.bytes >= AUDIO_CLUSTER_BYTES
                };
                cut || span >= MAX_CLUSTER_SPAN_MS || (early && c.time - time > 30_000)
            }
        };
        let start = out.len();
        if new_cluster {
            self.close_cluster();
            put_id(out, id::CLUSTER);
            let size_at = self.written + (out.len() - start) as u64;
            out.extend_from_slice(&UNKNOWN_SIZE);
            let data_start = self.written + (out.len() - start) as u64;
            put_uint(out, id::TIMESTAMP, time);
            let cluster_pos = self.written - self.segment_data;
            if keyframe && (kind == TrackKind::Video || !has_video) {
                self.cues.push((time, number, cluster_pos));
            }
            self.cluster = Some(Cluster { size_at, data_start, time, bytes: 0 });
        }
        let ctime = self.cluster.map_or(time, |c| c.time);
        let rel =
            (time as i64 - ctime as i64).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
        put_id(out, id::SIMPLE_BLOCK);
        put_size(out, 4 + data.len() as u64);
        out.push(0x80 | number);
        out.extend_from_slice(&rel.to_be_bytes());
        out.push(if keyframe { 0x80 } else { 0 });
        out.extend_from_slice(data);
        let added = (out.len() - start) as u64;
        self.written += added;
        if let Some(c) = self.cluster.as_mut() {
            c.bytes += added;
        }
        self.end_ms = self.end_ms.max(end);
        self.frames += 1;
        Ok(())
    }

    /// Ends the file: closes the last cluster, appends the Cues to `out` and queues the final
    /// patches (drain [`MkvMuxer::poll_patch`] afterwards). Later writes fail.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.close_cluster();
        let start = out.len();
        if !self.cues.is_empty() {
            let cues_pos = self.written - self.segment_data;
            let mut body = Vec::new();
            for &(time, track, pos) in &self.cues {
                let mut tp = Vec::new();
                put_uint(&mut tp, id::CUE_TRACK, u64::from(track));
                put_uint(&mut tp, id::CUE_CLUSTER_POSITION, pos);
                let mut cp = Vec::new();
                put_uint(&mut cp, id::CUE_TIME, time);
                put_master(&mut cp, id::CUE_TRACK_POSITIONS, &tp);
                put_master(&mut body, id::CUE_POINT, &cp);
            }
            put_master(out, id::CUES, &body);
            let mut entry = Vec::with_capacity(SEEK_ENTRY_LEN);
            seek_entry(&mut entry, id::CUES, cues_pos);
            self.patches.push(Patch::new(self.seek_void_at, &entry));
        }
        self.written += (out.len() - start) as u64;
        self.patches.push(Patch::new(self.duration_at, &(self.end_ms as f64).to_be_bytes()));
        let seg = self.written - self.segment_data;
        self.patches.push(Patch::new(self.segment_size_at, &size8(seg)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(frames: &[(TrackKind, u64, bool, &[u8])]) -> Vec<u8> {
        let v =
            VideoTrack { codec: VideoCodec::Vp8, width: 320, height: 240, codec_private: vec![] };
        let mut file = Vec::new();
        let mut m = MkvMuxer::new(Some(&v), Some(OpusTrack::WEBRTC), &mut file);
        let mut patches = Vec::new();
        for &(k, t, key, d) in frames {
            m.write_frame(k, t, key, d, &mut file).unwrap();
            while let Some(p) = m.poll_patch() {
                patches.push(p);
            }
        }
        m.finish(&mut file);
        while let Some(p) = m.poll_patch() {
            patches.push(p);
        }
        assert_eq!(m.written(), file.len() as u64);
        for p in patches {
            assert!(p.apply(&mut file));
        }
        file
    }

    #[test]
    fn header_patches_land_on_their_fields() {
        let file = build(&[
            (TrackKind::Video, 0, true, b"k1"),
            (TrackKind::Audio, 5, true, b"a"),
            (TrackKind::Video, 33, false, b"d"),
            (TrackKind::Video, 66, true, b"k2"),
        ]);
        // The seek entry for Cues replaced the Void, Duration is 66 + 33.
        let text = file.windows(4).position(|w| w == [0x1C, 0x53, 0xBB, 0x6B]);
        assert!(text.is_some(), "Cues ID present");
        let d = file.windows(2).position(|w| w == [0x44, 0x89]).unwrap();
        let mut f = [0u8; 8];
        f.copy_from_slice(&file[d + 3..d + 11]);
        assert_eq!(f64::from_be_bytes(f), 99.0);
        // Three Seek entries (Info, Tracks, and Cues where the Void was).
        assert_eq!(file.windows(2).filter(|w| *w == [0x4D, 0xBB]).count(), 3);
    }
}
