#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringsfu::fuzzing::rtp_rewrite(data));
