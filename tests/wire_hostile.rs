//! Hostile datagrams through every wire entry point on stable Rust: deterministic mutations
//! (bit flips, byte overwrites, truncations, length-field bumps, splices) of the seed corpus,
//! each run through all `ringsfu::fuzzing` bodies and the differential bodies. A cheap,
//! always-on complement to the cargo-fuzz runs.

#[path = "../fuzz/differential.rs"]
mod differential;

use std::path::Path;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut out = Vec::new();
    for t in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(t.path()).unwrap().flatten() {
            out.push(std::fs::read(f.path()).unwrap());
        }
    }
    out.sort();
    out.dedup();
    out
}

fn mutate(rng: &mut XorShift, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(d.len() + 1);
                d.truncate(n);
            }
            3 if d.len() >= 4 => {
                // Bump a 16-bit big-endian field (lengths, counts) by a small amount.
                let i = rng.below(d.len() - 1);
                let v = u16::from_be_bytes([d[i], d[i + 1]]).wrapping_add(rng.below(9) as u16);
                d[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 => {
                let at = rng.below(d.len() + 1);
                let from = rng.below(other.len() + 1);
                d.splice(at..at, other[from..].iter().copied().take(32));
            }
            5 => d.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
            _ => {
                if d.len() > 1 {
                    let i = rng.below(d.len());
                    d.remove(i);
                }
            }
        }
    }
    d
}

#[test]
fn mutated_seeds_never_panic_and_keep_invariants() {
    let seeds = seeds();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let rounds = 40_000;
    for _ in 0..rounds {
        let s = &seeds[rng.below(seeds.len())];
        let o = &seeds[rng.below(seeds.len())];
        let d = mutate(&mut rng, s, o);
        let r = std::panic::catch_unwind(|| {
            ringsfu::fuzzing::all(&d);
            ringsfu::fuzzing::stun_roundtrip(&d);
            ringsfu::fuzzing::rtp_rewrite(&d);
            ringsfu::fuzzing::rtcp_roundtrip(&d);
            differential::stun(&d);
            differential::rtp(&d);
            differential::rtcp(&d);
            ringsfu::fuzzing::record_depack(&d);
            differential::mkv_roundtrip(&d);
        });
        if r.is_err() {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            panic!("failing input ({} bytes): {hex}", d.len());
        }
    }
}

#[test]
fn short_and_empty_inputs() {
    let mut d = Vec::new();
    for len in 0..64 {
        for fill in [0x00u8, 0x01, 0x16, 0x40, 0x80, 0xBE, 0xC8, 0xFF] {
            d.clear();
            d.resize(len, fill);
            ringsfu::fuzzing::all(&d);
            ringsfu::fuzzing::stun_roundtrip(&d);
            ringsfu::fuzzing::rtp_rewrite(&d);
            ringsfu::fuzzing::rtcp_roundtrip(&d);
        }
    }
}

/// The layer-switching simulation (`fuzzing::layer_switch`) under deterministic random
/// operation sequences: packet orders, losses, late packets, time steps and target changes.
#[test]
fn layer_switch_random_operations() {
    let mut rng = XorShift(0x0DDB_1A5E_5BAD_5EED);
    for round in 0..3000 {
        let len = 16 + rng.below(if round % 10 == 0 { 2000 } else { 300 });
        let d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let r = std::panic::catch_unwind(|| ringsfu::fuzzing::layer_switch(&d));
        if r.is_err() {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            panic!("failing input ({} bytes): {hex}", d.len());
        }
    }
}
