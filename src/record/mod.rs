//! INDIVIDUAL recording, natively: RTP of one published stream into a WebM / Matroska file
//! without transcoding.
//!
//! Layers, bottom up (all sans-IO but [`writer`]):
//! - [`ebml`], [`mkv`]: the Matroska / WebM writer (appends to a `Vec<u8>`, returns patches);
//! - [`bits`]: keyframe headers (H.264 SPS, AV1 sequence header, VP8/VP9) for dimensions and
//!   CodecPrivate;
//! - [`reorder`], [`depack`]: per track, RTP packets in sequence order into whole frames;
//! - [`recorder`]: [`recorder::RecorderCore`], one recording (a video and/or an audio track):
//!   keyframe first, NACK / PLI requests, one timeline, the muxer;
//! - [`writer`]: the recorder thread: a ring from the shard, the file, `fsync`, the outcome.
//!
//! COMPOSED recording (a separate GStreamer process, `ringsfu-composer`): [`compose_wire`] the
//! framing of its socket, [`grid`] the BEST_FIT tiles, [`feed`] the thread in ringsfu that
//! drains the recorder rings into the composer's socket and supervises the process.

pub mod bits;
pub mod compose_wire;
pub mod depack;
pub mod ebml;
pub mod feed;
pub mod grid;
pub mod mkv;
pub mod recorder;
pub mod reorder;
pub mod writer;
