//! Shared helpers of the SRTP integration tests: a deterministic PRNG and RTP/RTCP
//! packet builders covering CSRCs, both header extension forms, and padding.
#![allow(dead_code)]

/// xorshift64*: deterministic, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// A plaintext RTP packet with random CSRCs (0..=3), an optional one-byte or two-byte
/// header extension (RFC 8285, minimally padded), optional RTP padding, and a payload of
/// up to `max_payload` bytes. Returns the packet and its header length.
pub fn rtp_packet(rng: &mut Rng, ssrc: u32, seq: u16, max_payload: usize) -> (Vec<u8>, usize) {
    let cc = rng.below(4) as u8;
    let ext = rng.below(3);
    let padded = rng.below(4) == 0;
    let mut p = Vec::with_capacity(1500);
    let mut b0 = 0x80 | cc;
    if ext != 0 {
        b0 |= 0x10;
    }
    if padded {
        b0 |= 0x20;
    }
    p.push(b0);
    p.push(((rng.below(2) as u8) << 7) | (96 + rng.below(32) as u8));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&rng.u32().to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..cc {
        p.extend_from_slice(&rng.u32().to_be_bytes());
    }
    if ext != 0 {
        let mut body = Vec::new();
        let elements = 1 + rng.below(3);
        for n in 0..elements {
            if ext == 1 {
                // One-byte form: id 1..=14, 1..=8 data bytes.
                let len = 1 + rng.below(8) as usize;
                body.push(((n as u8 + 1) << 4) | (len as u8 - 1));
                body.extend(rng.bytes(len));
            } else {
                // Two-byte form: id, length (1..=12), data.
                let len = 1 + rng.below(12) as usize;
                body.push(n as u8 + 1);
                body.push(len as u8);
                body.extend(rng.bytes(len));
            }
        }
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let profile: u16 = if ext == 1 { 0xBEDE } else { 0x1000 };
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend(body);
    }
    let header_len = p.len();
    let payload = rng.below(max_payload as u64 + 1) as usize;
    p.extend(rng.bytes(payload));
    if padded {
        let pad = 1 + rng.below(8) as usize;
        p.extend(std::iter::repeat_n(0u8, pad - 1));
        p.push(pad as u8);
    }
    (p, header_len)
}

/// A plaintext RTCP sender or receiver report of `words` 32-bit words after the first
/// (so `4 + 4 * words` bytes), with sender SSRC `ssrc` and random report blocks.
pub fn rtcp_packet(rng: &mut Rng, ssrc: u32, words: usize) -> Vec<u8> {
    let words = words.max(1);
    let mut p = Vec::with_capacity(4 + 4 * words);
    p.push(0x80 | rng.below(4) as u8);
    p.push(if rng.below(2) == 0 { 200 } else { 201 });
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(rng.bytes(4 * (words - 1)));
    p
}

/// A send order that is mostly sequential with occasional local swaps (distance up to
/// `max_shift`), to exercise out-of-order protect and unprotect inside the window.
pub fn jittered_order(rng: &mut Rng, n: usize, max_shift: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut i = 0;
    while i + max_shift < n {
        if rng.below(8) == 0 {
            let j = i + 1 + rng.below(max_shift as u64) as usize;
            order.swap(i, j);
        }
        i += 1;
    }
    order
}
