#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringsfu::fuzzing::av1_dd(data));
