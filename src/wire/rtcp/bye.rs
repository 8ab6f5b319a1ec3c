//! Goodbye (RFC 3550 §6.6): SC SSRCs and an optional reason.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, write_header};
use crate::wire::error::{WireError, WireResult};

/// A BYE view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    /// The reason for leaving, if present.
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    /// Parses the body of a BYE.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<Bye<'a>> {
        let n = h.count as usize * 4;
        let ssrcs = body.get(..n).ok_or(WireError::Truncated("rtcp bye: ssrc list"))?;
        let rest = &body[n..];
        let reason = match rest.first() {
            None => None,
            Some(&l) => {
                Some(rest.get(1..1 + l as usize).ok_or(WireError::Truncated("rtcp bye: reason"))?)
            }
        };
        Ok(Bye { ssrcs, reason })
    }

    /// The SSRCs/CSRCs leaving.
    pub fn ssrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Writes a BYE and returns its length.
pub fn write(buf: &mut [u8], ssrcs: &[u32], reason: Option<&[u8]>) -> WireResult<usize> {
    if ssrcs.len() > 31 {
        return Err(WireError::InvalidArgument("rtcp bye: more than 31 ssrcs"));
    }
    let rlen = match reason {
        Some(r) if r.len() > 255 => {
            return Err(WireError::InvalidArgument("rtcp bye: reason over 255 bytes"));
        }
        Some(r) => (1 + r.len()).div_ceil(4) * 4,
        None => 0,
    };
    let len = HEADER_LEN + ssrcs.len() * 4 + rlen;
    need(buf, len, "rtcp bye")?;
    write_header(buf, ssrcs.len() as u8, packet_type::BYE, len)?;
    let mut p = HEADER_LEN;
    for s in ssrcs {
        buf[p..p + 4].copy_from_slice(&s.to_be_bytes());
        p += 4;
    }
    if let Some(r) = reason {
        buf[p] = r.len() as u8;
        buf[p + 1..p + 1 + r.len()].copy_from_slice(r);
        buf[p + 1 + r.len()..len].fill(0);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 64];
        let n = write(&mut buf, &[1, 2], Some(b"bye now")).unwrap();
        assert_eq!(n, 4 + 8 + 8);
        let c = RtcpCompound::parse(&buf[..n]).unwrap();
        let Some(Ok(RtcpPacket::Bye(b))) = c.packets().next() else { panic!() };
        assert_eq!(b.ssrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.reason, Some(&b"bye now"[..]));
    }
}
