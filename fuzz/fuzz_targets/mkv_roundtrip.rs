#![no_main]
//! Differential target: ringsfu::record::mkv vs the `matroska-demuxer` crate (body in
//! ../differential.rs, shared with tests/wire_corpus.rs).
#[path = "../differential.rs"]
mod differential;
libfuzzer_sys::fuzz_target!(|data: &[u8]| differential::mkv_roundtrip(data));
