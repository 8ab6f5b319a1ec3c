//! Generic NACK (RFC 4585 §6.2.1): RTPFB FMT 1, FCI entries of (PID, BLP). PID is a lost
//! sequence number; bit i of BLP (LSB = bit 0) reports PID + i + 1 lost too.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Feedback message type of generic NACK.
pub const FMT: u8 = 1;

/// A NACK view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    fci: &'a [u8],
}

impl<'a> Nack<'a> {
    /// Parses the body of a NACK.
    pub fn parse(_h: RtcpHeader, body: &'a [u8]) -> WireResult<Nack<'a>> {
        if body.len() < 8 {
            return Err(WireError::Truncated("rtcp nack: ssrcs"));
        }
        let fci = &body[8..];
        if !fci.len().is_multiple_of(4) {
            return Err(WireError::Malformed("rtcp nack: FCI not a multiple of 4"));
        }
        Ok(Nack { sender_ssrc: u32_at(body, 0), media_ssrc: u32_at(body, 4), fci })
    }

    /// The (PID, BLP) pairs as sent.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (u16, u16)> + 'a {
        self.fci
            .chunks_exact(4)
            .map(|c| (u16::from_be_bytes([c[0], c[1]]), u16::from_be_bytes([c[2], c[3]])))
    }

    /// Every lost sequence number, PID then its BLP bits, in order (wrapping at 65535).
    pub fn lost(&self) -> LostIter<'a> {
        LostIter { fci: self.fci, pid: 0, blp: 0, bit: 16 }
    }
}

/// Expands (PID, BLP) pairs into sequence numbers without allocating.
#[derive(Debug, Clone)]
pub struct LostIter<'a> {
    fci: &'a [u8],
    pid: u16,
    blp: u16,
    /// 0..=15 = next BLP bit to test, 16 = load the next pair.
    bit: u8,
}

impl Iterator for LostIter<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            if self.bit >= 16 {
                let [a, b, c, d, ..] = *self.fci else {
                    return None;
                };
                self.fci = &self.fci[4..];
                self.pid = u16::from_be_bytes([a, b]);
                self.blp = u16::from_be_bytes([c, d]);
                self.bit = 0;
                return Some(self.pid);
            }
            let i = self.bit;
            self.bit += 1;
            if self.blp & (1 << i) != 0 {
                return Some(self.pid.wrapping_add(i as u16 + 1));
            }
        }
    }
}

/// Writes a NACK from (PID, BLP) pairs and returns its length.
pub fn write(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    pairs: &[(u16, u16)],
) -> WireResult<usize> {
    let len = HEADER_LEN + 8 + pairs.len() * 4;
    need(buf, len, "rtcp nack")?;
    write_header(buf, FMT, packet_type::RTPFB, len)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    buf[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    for (i, (pid, blp)) in pairs.iter().enumerate() {
        let p = 12 + i * 4;
        buf[p..p + 2].copy_from_slice(&pid.to_be_bytes());
        buf[p + 2..p + 4].copy_from_slice(&blp.to_be_bytes());
    }
    Ok(len)
}

/// Writes a NACK for lost sequence numbers given in ascending order (wrapping allowed),
/// packing each run of up to 17 into one (PID, BLP) pair; returns the length.
pub fn write_lost(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: impl IntoIterator<Item = u16>,
) -> WireResult<usize> {
    need(buf, HEADER_LEN + 8, "rtcp nack")?;
    let mut p = HEADER_LEN + 8;
    let mut cur: Option<(u16, u16)> = None;
    for seq in lost {
        match cur {
            Some((pid, ref mut blp)) => {
                let d = seq.wrapping_sub(pid);
                if (1..=16).contains(&d) {
                    *blp |= 1 << (d - 1);
                    continue;
                }
                if d == 0 {
                    continue;
                }
                put_pair(buf, &mut p, pid, *blp)?;
                cur = Some((seq, 0));
            }
            None => cur = Some((seq, 0)),
        }
    }
    if let Some((pid, blp)) = cur {
        put_pair(buf, &mut p, pid, blp)?;
    }
    write_header(buf, FMT, packet_type::RTPFB, p)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    buf[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    Ok(p)
}

fn put_pair(buf: &mut [u8], p: &mut usize, pid: u16, blp: u16) -> WireResult<()> {
    let dst = buf.get_mut(*p..*p + 4).ok_or(WireError::BufferTooSmall("rtcp nack: FCI"))?;
    dst[..2].copy_from_slice(&pid.to_be_bytes());
    dst[2..].copy_from_slice(&blp.to_be_bytes());
    *p += 4;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn expand_and_pack() {
        let mut b = [0u8; 64];
        let n = write(&mut b, 1, 2, &[(65534, 0b1000_0000_0000_0101), (100, 0)]).unwrap();
        let c = RtcpCompound::parse(&b[..n]).unwrap();
        let Some(Ok(RtcpPacket::Nack(k))) = c.packets().next() else { panic!() };
        let lost: Vec<u16> = k.lost().collect();
        assert_eq!(lost, vec![65534, 65535, 1, 14, 100]);
        let mut b2 = [0u8; 64];
        let n2 = write_lost(&mut b2, 1, 2, lost.iter().copied()).unwrap();
        assert_eq!(&b2[..n2], &b[..n]);
        assert_eq!(write_lost(&mut b2, 1, 2, []).unwrap(), 12);
    }
}
