#![no_main]
//! Differential target: ringsfu::wire vs the webrtc-rs `rtp` crate (bodies in ../differential.rs,
//! shared with tests/wire_corpus.rs).
#[path = "../differential.rs"]
mod differential;
libfuzzer_sys::fuzz_target!(|data: &[u8]| differential::rtp(data));
