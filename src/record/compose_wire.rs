//! The framing between ringsfu and its composer process (`ringsfu-composer`), one frame per
//! `SOCK_SEQPACKET` message (the socket keeps the boundaries, so a frame carries no length of
//! its own). Sans-IO: [`Frame::parse`] reads a message, [`Frame::write`] appends one.
//!
//! ringsfu → composer: [`Frame::Start`] (output file, size, rate, tracks), [`Frame::StreamAdded`]
//! / [`Frame::StreamRemoved`] (a published stream's track: codec, clock rate, payload type),
//! [`Frame::Rtp`] (one RTP packet of a track, header rebuilt by ringsfu), [`Frame::End`].
//! composer → ringsfu: [`Frame::Ready`], [`Frame::Keyframe`] (a decoder wants a keyframe),
//! [`Frame::Done`] (the file is complete), [`Frame::Error`] (the composition failed).
//!
//! Layout: one type byte, then big-endian fields; strings are a u16 length and UTF-8. Hand
//! written: a dozen fixed fields do not need a serialization crate, and the parser must be
//! bounded and fuzzable (`fuzzing::compose_wire`).

use std::fmt;

/// Largest frame either side sends (an RTP packet of 1500 bytes plus the header, or a start
/// frame with two paths).
pub const MAX_FRAME: usize = 9000;

/// A track kind in [`Frame::StreamAdded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

/// One message of the composer socket; borrowed from the message it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Begin the composition (once, first).
    Start {
        width: u16,
        height: u16,
        fps: u16,
        has_audio: bool,
        has_video: bool,
        /// The output file (`.mp4`, or `.webm` audio-only).
        path: &'a str,
        /// The thumbnail (`.jpg`); empty: none.
        thumbnail: &'a str,
    },
    /// Track `track` joined: RTP with payload type `pt` of `codec` (SDP name) at `clock_rate`.
    /// Tracks with the same `stream` are one tile (video) of the grid.
    StreamAdded {
        track: u16,
        stream: u16,
        kind: TrackKind,
        pt: u8,
        clock_rate: u32,
        codec: &'a str,
    },
    /// Track `track` left.
    StreamRemoved { track: u16 },
    /// An RTP packet (header and payload) of `track`.
    Rtp { track: u16, packet: &'a [u8] },
    /// Finish the file and exit.
    End,
    /// The composer's pipeline runs.
    Ready,
    /// The composer wants a keyframe of `track`.
    Keyframe { track: u16 },
    /// The file is complete: `size` bytes, `duration_ms` long.
    Done { size: u64, duration_ms: u64 },
    /// The composition failed.
    Error { reason: &'a str },
}

/// Which rule a message broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Empty,
    UnknownType(u8),
    /// Shorter than its fields.
    Truncated(&'static str),
    /// Bytes after the last field.
    Trailing,
    /// A string that is not UTF-8.
    NotUtf8(&'static str),
    /// A field out of its range.
    Invalid(&'static str),
    TooLarge,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

const START: u8 = 1;
const ADDED: u8 = 2;
const REMOVED: u8 = 3;
const RTP: u8 = 4;
const END: u8 = 5;
const READY: u8 = 0x81;
const KEYFRAME: u8 = 0x82;
const DONE: u8 = 0x83;
const ERROR: u8 = 0x84;

/// A bounded reader over one message.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.b.len() < n {
            return Err(FrameError::Truncated(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let hi = u64::from(self.u32(what)?);
        Ok(hi << 32 | u64::from(self.u32(what)?))
    }
    fn str(&mut self, what: &'static str) -> Result<&'a str, FrameError> {
        let n = usize::from(self.u16(what)?);
        std::str::from_utf8(self.take(n, what)?).map_err(|_| FrameError::NotUtf8(what))
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.b.is_empty() { Ok(()) } else { Err(FrameError::Trailing) }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Whether an RTP packet is at least a fixed header of version 2.
fn is_rtp(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] >> 6 == 2
}

impl<'a> Frame<'a> {
    /// Parses one message.
    pub fn parse(m: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if m.len() > MAX_FRAME {
            return Err(FrameError::TooLarge);
        }
        let (&ty, rest) = m.split_first().ok_or(FrameError::Empty)?;
        let mut c = Cursor { b: rest };
        let f = match ty {
            START => {
                let width = c.u16("width")?;
                let height = c.u16("height")?;
                let fps = c.u16("fps")?;
                let flags = c.u8("flags")?;
                if flags & !3 != 0 || flags == 0 {
                    return Err(FrameError::Invalid("flags"));
                }
                let path = c.str("path")?;
                let thumbnail = c.str("thumbnail")?;
                if flags & 2 != 0 && (width == 0 || height == 0 || fps == 0) {
                    return Err(FrameError::Invalid("video size"));
                }
                if path.is_empty() {
                    return Err(FrameError::Invalid("path"));
                }
                Frame::Start {
                    width,
                    height,
                    fps,
                    has_audio: flags & 1 != 0,
                    has_video: flags & 2 != 0,
                    path,
                    thumbnail,
                }
            }
            ADDED => {
                let track = c.u16("track")?;
                let stream = c.u16("stream")?;
                let kind = match c.u8("kind")? {
                    0 => TrackKind::Audio,
                    1 => TrackKind::Video,
                    _ => return Err(FrameError::Invalid("kind")),
                };
                let pt = c.u8("payload type")?;
                if pt > 127 {
                    return Err(FrameError::Invalid("payload type"));
                }
                let clock_rate = c.u32("clock rate")?;
                if clock_rate == 0 {
                    return Err(FrameError::Invalid("clock rate"));
                }
                let codec = c.str("codec")?;
                if codec.is_empty() || !codec.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(FrameError::Invalid("codec"));
                }
                Frame::StreamAdded { track, stream, kind, pt, clock_rate, codec }
            }
            REMOVED => Frame::StreamRemoved { track: c.u16("track")? },
            RTP => {
                let track = c.u16("track")?;
                let packet = std::mem::take(&mut c.b);
                if !is_rtp(packet) {
                    return Err(FrameError::Invalid("rtp"));
                }
                Frame::Rtp { track, packet }
            }
            END => Frame::End,
            READY => Frame::Ready,
            KEYFRAME => Frame::Keyframe { track: c.u16("track")? },
            DONE => Frame::Done { size: c.u64("size")?, duration_ms: c.u64("duration")? },
            ERROR => Frame::Error { reason: c.str("reason")? },
            t => return Err(FrameError::UnknownType(t)),
        };
        c.end()?;
        Ok(f)
    }

    /// Appends this frame to `out` (cleared first).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        match *self {
            Frame::Start { width, height, fps, has_audio, has_video, path, thumbnail } => {
                out.push(START);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
                out.extend_from_slice(&fps.to_be_bytes());
                out.push(u8::from(has_audio) | u8::from(has_video) << 1);
                put_str(out, path);
                put_str(out, thumbnail);
            }
            Frame::StreamAdded { track, stream, kind, pt, clock_rate, codec } => {
                out.push(ADDED);
                out.extend_from_slice(&track.to_be_bytes());
                out.extend_from_slice(&stream.to_be_bytes());
                out.push(u8::from(kind == TrackKind::Video));
                out.push(pt);
                out.extend_from_slice(&clock_rate.to_be_bytes());
                put_str(out, codec);
            }
            Frame::StreamRemoved { track } => {
                out.push(REMOVED);
                out.extend_from_slice(&track.to_be_bytes());
            }
            Frame::Rtp { track, packet } => {
                out.push(RTP);
                out.extend_from_slice(&track.to_be_bytes());
                out.extend_from_slice(packet);
            }
            Frame::End => out.push(END),
            Frame::Ready => out.push(READY),
            Frame::Keyframe { track } => {
                out.push(KEYFRAME);
                out.extend_from_slice(&track.to_be_bytes());
            }
            Frame::Done { size, duration_ms } => {
                out.push(DONE);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&duration_ms.to_be_bytes());
            }
            Frame::Error { reason } => {
                out.push(ERROR);
                put_str(out, reason);
            }
        }
    }
}

/// The RTP header fields [`write_rtp`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes an RTP frame for `track` straight from the recorder ring's fields: a 12-byte RTP
/// header (version 2, no CSRC, no extension) and the payload.
pub fn write_rtp(out: &mut Vec<u8>, track: u16, h: RtpHeader, payload: &[u8]) {
    out.clear();
    out.push(RTP);
    out.extend_from_slice(&track.to_be_bytes());
    out.push(0x80);
    out.push(u8::from(h.marker) << 7 | (h.pt & 0x7f));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame<'_>) {
        let mut out = Vec::new();
        f.write(&mut out);
        assert_eq!(Frame::parse(&out), Ok(f));
    }

    #[test]
    fn every_frame_round_trips() {
        roundtrip(Frame::Start {
            width: 1280,
            height: 720,
            fps: 25,
            has_audio: true,
            has_video: true,
            path: "/rec/s/s.mp4",
            thumbnail: "/rec/s/s.jpg",
        });
        roundtrip(Frame::Start {
            width: 0,
            height: 0,
            fps: 0,
            has_audio: true,
            has_video: false,
            path: "/rec/s/s.webm",
            thumbnail: "",
        });
        roundtrip(Frame::StreamAdded {
            track: 3,
            stream: 1,
            kind: TrackKind::Video,
            pt: 96,
            clock_rate: 90000,
            codec: "VP8",
        });
        roundtrip(Frame::StreamRemoved { track: 3 });
        roundtrip(Frame::Rtp { track: 7, packet: &[0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9] });
        roundtrip(Frame::End);
        roundtrip(Frame::Ready);
        roundtrip(Frame::Keyframe { track: 2 });
        roundtrip(Frame::Done { size: 1 << 40, duration_ms: 12345 });
        roundtrip(Frame::Error { reason: "disk full" });
    }

    #[test]
    fn rtp_written_from_fields_parses() {
        let mut out = Vec::new();
        let h = RtpHeader { pt: 111, marker: true, seq: 0xfffe, timestamp: 0xdead_beef, ssrc: 4 };
        write_rtp(&mut out, 4, h, b"opus");
        let Ok(Frame::Rtp { track, packet }) = Frame::parse(&out) else { panic!("{out:?}") };
        assert_eq!(track, 4);
        assert_eq!(packet[1], 0x80 | 111);
        assert_eq!(&packet[2..4], &[0xff, 0xfe]);
        assert_eq!(&packet[12..], b"opus");
    }

    #[test]
    fn broken_frames_name_the_rule() {
        assert_eq!(Frame::parse(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::parse(&[9]), Err(FrameError::UnknownType(9)));
        assert_eq!(Frame::parse(&[REMOVED, 0]), Err(FrameError::Truncated("track")));
        assert_eq!(Frame::parse(&[REMOVED, 0, 1, 2]), Err(FrameError::Trailing));
        assert_eq!(Frame::parse(&[RTP, 0, 1, 0x80]), Err(FrameError::Invalid("rtp")));
        assert_eq!(
            Frame::parse(&[ADDED, 0, 1, 0, 1, 1, 200, 0, 0, 0, 1, 0, 1, b'x']),
            Err(FrameError::Invalid("payload type"))
        );
        assert_eq!(Frame::parse(&[ERROR, 0, 2, 0xff, 0xfe]), Err(FrameError::NotUtf8("reason")));
        assert_eq!(Frame::parse(&vec![RTP; MAX_FRAME + 1]), Err(FrameError::TooLarge));
    }
}
