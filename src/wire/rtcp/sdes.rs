//! Source Description (RFC 3550 §6.5): chunks of (SSRC, items), each item (type, length, text),
//! a chunk ending with a null item and zero padding to a 32-bit boundary.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// SDES item types.
pub mod item {
    pub const CNAME: u8 = 1;
    pub const NAME: u8 = 2;
    pub const EMAIL: u8 = 3;
    pub const PHONE: u8 = 4;
    pub const LOC: u8 = 5;
    pub const TOOL: u8 = 6;
    pub const NOTE: u8 = 7;
    pub const PRIV: u8 = 8;
}

/// An SDES view (validated: SC chunks, every item inside its chunk, every chunk terminated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    body: &'a [u8],
    count: u8,
}

/// Walks one chunk starting at `at`: returns the end of the items (the null item) and the end
/// of the chunk (aligned).
fn walk_chunk(body: &[u8], at: usize) -> WireResult<(usize, usize)> {
    let mut p = at + 4;
    if p > body.len() {
        return Err(WireError::Truncated("rtcp sdes: chunk ssrc"));
    }
    loop {
        let t = *body.get(p).ok_or(WireError::Truncated("rtcp sdes: missing null item"))?;
        if t == 0 {
            let items_end = p;
            // The null item plus padding up to the next multiple of 4 (relative to the body,
            // which starts aligned).
            let end = (p + 1).div_ceil(4) * 4;
            if end > body.len() {
                return Err(WireError::Truncated("rtcp sdes: chunk padding"));
            }
            return Ok((items_end, end));
        }
        let l = *body.get(p + 1).ok_or(WireError::Truncated("rtcp sdes: item length"))? as usize;
        p += 2 + l;
        if p > body.len() {
            return Err(WireError::Truncated("rtcp sdes: item text"));
        }
    }
}

impl<'a> Sdes<'a> {
    /// Parses and validates the body of an SDES packet.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<Sdes<'a>> {
        let mut at = 0;
        for _ in 0..h.count {
            at = walk_chunk(body, at)?.1;
        }
        Ok(Sdes { body, count: h.count })
    }

    /// Iterates the chunks.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks { body: self.body, at: 0, left: self.count }
    }
}

/// One chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// Iterates (type, text) items.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The CNAME item, if any.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items().find(|i| i.0 == item::CNAME).map(|i| i.1)
    }
}

/// Iterator over chunks.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    at: usize,
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated by parse; an error here ends the walk instead of panicking.
        let (items_end, end) = walk_chunk(self.body, self.at).ok()?;
        let c = SdesChunk {
            ssrc: u32_at(self.body, self.at),
            items: &self.body[self.at + 4..items_end],
        };
        self.at = end;
        Some(c)
    }
}

/// Iterator over (type, text) items of a chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let [t, l, ..] = *self.rest else {
            return None;
        };
        let text = self.rest.get(2..2 + l as usize)?;
        self.rest = &self.rest[2 + l as usize..];
        Some((t, text))
    }
}

/// A chunk to write: SSRC and (type, text) items (type 1..=255, text at most 255 bytes).
pub type ChunkSpec<'s> = (u32, &'s [(u8, &'s [u8])]);

/// Writes an SDES packet with `chunks` (at most 31) and returns its length.
pub fn write(buf: &mut [u8], chunks: &[ChunkSpec<'_>]) -> WireResult<usize> {
    if chunks.len() > 31 {
        return Err(WireError::InvalidArgument("rtcp sdes: more than 31 chunks"));
    }
    let mut len = HEADER_LEN;
    for (_, items) in chunks {
        let mut c = 4;
        for (t, text) in *items {
            if *t == 0 || text.len() > 255 {
                return Err(WireError::InvalidArgument("rtcp sdes: item type 0 or text > 255"));
            }
            c += 2 + text.len();
        }
        len += (c + 1).div_ceil(4) * 4;
    }
    need(buf, len, "rtcp sdes")?;
    write_header(buf, chunks.len() as u8, packet_type::SDES, len)?;
    let mut p = HEADER_LEN;
    for (ssrc, items) in chunks {
        let start = p;
        buf[p..p + 4].copy_from_slice(&ssrc.to_be_bytes());
        p += 4;
        for (t, text) in *items {
            buf[p] = *t;
            buf[p + 1] = text.len() as u8;
            buf[p + 2..p + 2 + text.len()].copy_from_slice(text);
            p += 2 + text.len();
        }
        let end = start + (p - start + 1).div_ceil(4) * 4;
        buf[p..end].fill(0);
        p = end;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 128];
        let n = write(
            &mut buf,
            &[
                (0x11111111, &[(item::CNAME, &b"abcd"[..])]),
                (0x22, &[(item::CNAME, &b"xyz"[..]), (item::TOOL, &b"ringsfu"[..])]),
                (0x33, &[]),
            ],
        )
        .unwrap();
        let c = RtcpCompound::parse(&buf[..n]).unwrap();
        let Some(Ok(RtcpPacket::Sdes(s))) = c.packets().next() else { panic!() };
        let chunks: Vec<_> = s.chunks().collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].cname(), Some(&b"abcd"[..]));
        assert_eq!(chunks[1].ssrc, 0x22);
        assert_eq!(
            chunks[1].items().collect::<Vec<_>>(),
            vec![(1, &b"xyz"[..]), (6, &b"ringsfu"[..])]
        );
        assert_eq!(chunks[2].items().count(), 0);
        // Chunk 1 of "abcd": 4 + 2 + 4 + null = 11 -> 12 bytes.
        assert_eq!(&buf[4..16], &[0x11, 0x11, 0x11, 0x11, 1, 4, b'a', b'b', b'c', b'd', 0, 0]);
    }
}
