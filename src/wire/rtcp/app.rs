//! Application-defined packet (RFC 3550 §6.7): kept opaque (subtype, SSRC, name, data).

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// An APP view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<'a> {
    pub subtype: u8,
    pub ssrc: u32,
    pub name: [u8; 4],
    pub data: &'a [u8],
}

impl<'a> App<'a> {
    /// Parses the body of an APP packet.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<App<'a>> {
        if body.len() < 8 {
            return Err(WireError::Truncated("rtcp app: ssrc and name"));
        }
        Ok(App {
            subtype: h.count,
            ssrc: u32_at(body, 0),
            name: [body[4], body[5], body[6], body[7]],
            data: &body[8..],
        })
    }
}

/// Writes an APP packet; `data` must be a multiple of 4 bytes.
pub fn write(
    buf: &mut [u8],
    subtype: u8,
    ssrc: u32,
    name: [u8; 4],
    data: &[u8],
) -> WireResult<usize> {
    if !data.len().is_multiple_of(4) {
        return Err(WireError::InvalidArgument("rtcp app: data not a multiple of 4"));
    }
    let len = HEADER_LEN + 8 + data.len();
    need(buf, len, "rtcp app")?;
    write_header(buf, subtype, packet_type::APP, len)?;
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    buf[8..12].copy_from_slice(&name);
    buf[12..len].copy_from_slice(data);
    Ok(len)
}
