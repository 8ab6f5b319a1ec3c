//! RTCP (RFC 3550 §6, RFC 4585, RFC 5104, RFC 5506): the compound walker and one file per
//! packet format, each with a zero-copy view and a writer.
//!
//! A compound is a run of RTCP packets, each with the 4-byte common header (V=2, P, count/FMT,
//! packet type, length in 32-bit words minus one). [`RtcpCompound::parse`] checks the framing of
//! every packet once; [`RtcpCompound::packets`] then yields typed views.
//!
//! Rules of [`RtcpCompound::parse`] (strict): every packet version 2 and inside the datagram;
//! padding (P=1) only on the last packet, its count at least 1 and within the packet; a compound
//! of two or more packets starts with SR or RR (RFC 3550 §6.1); a datagram holding a single
//! packet of any type is accepted as reduced-size RTCP (RFC 5506 §3). libwebrtc in reduced-size
//! mode may bundle several feedback packets without a report first, and pads TWCC: use
//! [`RtcpCompound::parse_relaxed`] on the receive path, which drops the first-packet and
//! padding-position rules and keeps every bounds rule.

pub mod app;
pub mod bye;
pub mod fir;
pub mod nack;
pub mod pli;
pub mod remb;
pub mod rr;
pub mod sdes;
pub mod sr;
pub mod twcc;
pub mod xr;

use super::error::{WireError, WireResult};

/// RTCP packet types.
pub mod packet_type {
    pub const SR: u8 = 200;
    pub const RR: u8 = 201;
    pub const SDES: u8 = 202;
    pub const BYE: u8 = 203;
    pub const APP: u8 = 204;
    pub const RTPFB: u8 = 205;
    pub const PSFB: u8 = 206;
    pub const XR: u8 = 207;
}

/// Size of the common header.
pub const HEADER_LEN: usize = 4;

/// Cheap check: version 2 and a packet type in 192..=223.
#[inline]
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// The common header of one RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpHeader {
    /// P bit.
    pub padding: bool,
    /// Report count, source count, subtype or FMT (5 bits).
    pub count: u8,
    /// Packet type.
    pub packet_type: u8,
    /// Total packet length in bytes (header included, padding included).
    pub len: usize,
}

impl RtcpHeader {
    /// Reads the header at the start of `buf` (does not check that the packet fits).
    pub fn parse(buf: &[u8]) -> WireResult<RtcpHeader> {
        let &[b0, pt, l0, l1] =
            buf.first_chunk::<4>().ok_or(WireError::Truncated("rtcp: common header"))?;
        if b0 >> 6 != 2 {
            return Err(WireError::Unsupported("rtcp: version not 2"));
        }
        Ok(RtcpHeader {
            padding: b0 & 0x20 != 0,
            count: b0 & 0x1F,
            packet_type: pt,
            len: (u16::from_be_bytes([l0, l1]) as usize + 1) * 4,
        })
    }
}

/// One framed packet: its header and its body (after the 4-byte header, padding removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPacket<'a> {
    pub header: RtcpHeader,
    pub body: &'a [u8],
    /// The whole packet, header and padding included.
    pub bytes: &'a [u8],
}

/// Frames the packet at the start of `buf`: returns it and the bytes after it.
pub fn frame(buf: &[u8]) -> WireResult<(RawPacket<'_>, &[u8])> {
    let header = RtcpHeader::parse(buf)?;
    let bytes =
        buf.get(..header.len).ok_or(WireError::Truncated("rtcp: packet shorter than length"))?;
    let mut body = &bytes[HEADER_LEN..];
    if header.padding {
        let pad =
            *body.last().ok_or(WireError::Malformed("rtcp: padding in empty packet"))? as usize;
        if pad == 0 || pad > body.len() {
            return Err(WireError::Malformed("rtcp: padding count"));
        }
        body = &body[..body.len() - pad];
    }
    Ok((RawPacket { header, body, bytes }, &buf[header.len..]))
}

/// A framed RTCP compound (or reduced-size packet) borrowing its datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    buf: &'a [u8],
    count: usize,
}

impl<'a> RtcpCompound<'a> {
    /// Strict framing check (see the module docs).
    pub fn parse(buf: &'a [u8]) -> WireResult<RtcpCompound<'a>> {
        Self::check(buf, true)
    }

    /// Framing check without the first-packet and padding-position rules.
    pub fn parse_relaxed(buf: &'a [u8]) -> WireResult<RtcpCompound<'a>> {
        Self::check(buf, false)
    }

    fn check(buf: &'a [u8], strict: bool) -> WireResult<RtcpCompound<'a>> {
        if buf.is_empty() {
            return Err(WireError::Truncated("rtcp: empty compound"));
        }
        let mut rest = buf;
        let mut count = 0usize;
        let mut first_type = 0u8;
        while !rest.is_empty() {
            let (p, next) = frame(rest)?;
            if count == 0 {
                first_type = p.header.packet_type;
            }
            if strict && p.header.padding && !next.is_empty() {
                return Err(WireError::Malformed("rtcp: padding before the last packet"));
            }
            count += 1;
            rest = next;
        }
        if strict && count > 1 && first_type != packet_type::SR && first_type != packet_type::RR {
            return Err(WireError::Malformed("rtcp: compound does not start with SR/RR"));
        }
        Ok(RtcpCompound { buf, count })
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true: parse rejects an empty datagram.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates the framed packets.
    pub fn raw_packets(&self) -> RawPackets<'a> {
        RawPackets { rest: self.buf }
    }

    /// Iterates typed packets; a packet whose body is malformed yields `Err` and the walk goes
    /// on with the next packet (framing was already checked).
    pub fn packets(&self) -> Packets<'a> {
        Packets { raw: self.raw_packets() }
    }
}

/// Iterator over framed packets.
#[derive(Debug, Clone)]
pub struct RawPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawPackets<'a> {
    type Item = RawPacket<'a>;

    fn next(&mut self) -> Option<RawPacket<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        match frame(self.rest) {
            Ok((p, rest)) => {
                self.rest = rest;
                Some(p)
            }
            Err(_) => {
                // Unreachable after a successful parse; end the walk rather than panic.
                self.rest = &[];
                None
            }
        }
    }
}

/// A typed RTCP packet.
#[derive(Debug, Clone, Copy)]
pub enum RtcpPacket<'a> {
    SenderReport(sr::SenderReport<'a>),
    ReceiverReport(rr::ReceiverReport<'a>),
    Sdes(sdes::Sdes<'a>),
    Bye(bye::Bye<'a>),
    App(app::App<'a>),
    Pli(pli::Pli),
    Fir(fir::Fir<'a>),
    Nack(nack::Nack<'a>),
    Remb(remb::Remb<'a>),
    TransportCc(twcc::TransportCc<'a>),
    /// Any other type or feedback format (SLI, RPSI, other AFB...), opaque; XR is here too,
    /// read with [`xr::Xr::parse`] by who needs it.
    Other(RawPacket<'a>),
}

impl<'a> RtcpPacket<'a> {
    /// Parses the body of a framed packet into its typed view.
    pub fn parse(p: RawPacket<'a>) -> WireResult<RtcpPacket<'a>> {
        use packet_type::*;
        let h = p.header;
        Ok(match (h.packet_type, h.count) {
            (SR, _) => RtcpPacket::SenderReport(sr::SenderReport::parse(h, p.body)?),
            (RR, _) => RtcpPacket::ReceiverReport(rr::ReceiverReport::parse(h, p.body)?),
            (SDES, _) => RtcpPacket::Sdes(sdes::Sdes::parse(h, p.body)?),
            (BYE, _) => RtcpPacket::Bye(bye::Bye::parse(h, p.body)?),
            (APP, _) => RtcpPacket::App(app::App::parse(h, p.body)?),
            (PSFB, pli::FMT) => RtcpPacket::Pli(pli::Pli::parse(h, p.body)?),
            (PSFB, fir::FMT) => RtcpPacket::Fir(fir::Fir::parse(h, p.body)?),
            (PSFB, remb::FMT) if remb::is_remb(p.body) => {
                RtcpPacket::Remb(remb::Remb::parse(h, p.body)?)
            }
            (RTPFB, nack::FMT) => RtcpPacket::Nack(nack::Nack::parse(h, p.body)?),
            (RTPFB, twcc::FMT) => RtcpPacket::TransportCc(twcc::TransportCc::parse(h, p.body)?),
            _ => RtcpPacket::Other(p),
        })
    }
}

/// Iterator over typed packets.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    raw: RawPackets<'a>,
}

impl<'a> Iterator for Packets<'a> {
    type Item = WireResult<RtcpPacket<'a>>;

    fn next(&mut self) -> Option<WireResult<RtcpPacket<'a>>> {
        self.raw.next().map(RtcpPacket::parse)
    }
}

/// Writes a common header at the start of `buf` for a packet of `total_len` bytes (a multiple
/// of 4, header included).
pub(crate) fn write_header(
    buf: &mut [u8],
    count: u8,
    packet_type: u8,
    total_len: usize,
) -> WireResult<()> {
    if count > 31 {
        return Err(WireError::InvalidArgument("rtcp: count over 31"));
    }
    if !total_len.is_multiple_of(4) || !(4..=4 * 65536).contains(&total_len) {
        return Err(WireError::InvalidArgument("rtcp: packet length"));
    }
    let h = buf.first_chunk_mut::<4>().ok_or(WireError::BufferTooSmall("rtcp: header"))?;
    h[0] = 0x80 | count;
    h[1] = packet_type;
    h[2..4].copy_from_slice(&((total_len / 4 - 1) as u16).to_be_bytes());
    Ok(())
}

/// Checks that `buf` can hold `len` bytes.
pub(crate) fn need(buf: &[u8], len: usize, ctx: &'static str) -> WireResult<()> {
    if buf.len() < len { Err(WireError::BufferTooSmall(ctx)) } else { Ok(()) }
}

/// Reads a big-endian u32 at `at` of a body already checked long enough.
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_rules() {
        let mut buf = [0u8; 64];
        let n1 = rr::write(&mut buf, 1, &[]).unwrap();
        let n2 = pli::write(&mut buf[n1..], 1, 2).unwrap();
        let c = RtcpCompound::parse(&buf[..n1 + n2]).unwrap();
        assert_eq!(c.len(), 2);
        let v: Vec<_> = c.packets().collect();
        assert!(matches!(v[0], Ok(RtcpPacket::ReceiverReport(_))));
        assert!(matches!(v[1], Ok(RtcpPacket::Pli(_))));
        // PLI first and something after: strict rejects, relaxed accepts.
        let mut b2 = [0u8; 64];
        let m1 = pli::write(&mut b2, 1, 2).unwrap();
        let m2 = rr::write(&mut b2[m1..], 1, &[]).unwrap();
        assert!(RtcpCompound::parse(&b2[..m1 + m2]).is_err());
        assert!(RtcpCompound::parse_relaxed(&b2[..m1 + m2]).is_ok());
        // Reduced size: a lone PLI.
        assert!(RtcpCompound::parse(&b2[..m1]).is_ok());
        // Truncated.
        assert!(RtcpCompound::parse(&b2[..m1 - 1]).is_err());
        assert!(RtcpCompound::parse(&[]).is_err());
    }
}
