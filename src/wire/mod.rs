//! Zero-copy wire codecs (sans-IO): the RFC 7983 demux, STUN and TURN attributes, TURN
//! ChannelData, RTP with header extensions, RTCP compound packets, the DTLS record header.
//! Views borrow the datagram; writers fill a caller-lent buffer; nothing allocates.
//!
//! Every byte from the network goes through here first, so the rules are strict:
//!
//! 1. No input can panic, loop forever or read out of bounds: reads go through a bounded
//!    cursor ([`cursor`] is private) or checked `get`s; loops advance on every turn.
//! 2. No allocation on any parse or write path (`tests/wire_alloc.rs` proves it with a
//!    counting global allocator).
//! 3. Errors are one small `Copy` enum, [`WireError`], naming the failed rule.
//! 4. One file per format: a cheap `is_*` check, a view, a writer, RFC vectors as unit tests.
//!
//! The fuzz targets under `fuzz/` call the bodies in `crate::fuzzing`; `tests/wire_corpus.rs`
//! replays the committed corpora on stable Rust.

mod cursor;

pub mod channel_data;
pub mod codec;
pub mod demux;
pub mod dtls_record;
pub mod error;
pub mod rtcp;
pub mod rtp;
pub mod rtp_write;
pub mod stun;
pub mod stun_integrity;
pub mod turn_attr;

pub use channel_data::{ChannelDataView, StreamFrame, stream_frame_len};
pub use demux::{Datagram, demux};
pub use dtls_record::{DtlsRecord, Record, records};
pub use error::{WireError, WireResult};
pub use rtcp::{RtcpCompound, RtcpPacket};
pub use rtp::{RtpRewriter, RtpView};
pub use stun::{Authenticated, Class, Method, StunView, StunWriter};
pub use stun_integrity::IntegrityKey;
