//! TURN ChannelData messages (RFC 8656 §12.4, §12.5) and the stream framing of TURN over TCP
//! and TLS (RFC 8656 §12.5, RFC 6062).
//!
//! Header: channel number (2 bytes, [`CHANNELS`]), length of the application data (2 bytes),
//! then the data. Over UDP the datagram may carry up to 3 bytes of padding after the data (it
//! is ignored); over TCP/TLS every ChannelData message is padded to a multiple of 4 bytes.

use super::error::{WireError, WireResult};

/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// Channel numbers accepted: RFC 5766's 0x4000..=0x7FFF. RFC 8656 narrowed the range to
/// 0x4000..=0x4FFF (so RFC 7983 can demultiplex TURN channels with media on one port), but
/// coturn's clients (`turnutils_uclient`) still pick numbers from the whole old range; a
/// dedicated TURN port has nothing else to tell them from. The RFC 7983 media demux
/// (`wire::demux`) keeps 64..=79.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// Cheap check: first byte 0x40..=0x7F (see [`CHANNELS`]) and a full header.
#[inline]
pub fn is_channel_data(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && (0x40..=0x7F).contains(&buf[0])
}

/// A ChannelData message borrowing its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelDataView<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelDataView<'a> {
    /// Parses a ChannelData datagram: header, `length` data bytes, at most 3 padding bytes.
    pub fn parse(buf: &'a [u8]) -> WireResult<ChannelDataView<'a>> {
        let [a, b, c, d] =
            *buf.first_chunk::<4>().ok_or(WireError::Truncated("channel-data: header"))?;
        let channel = u16::from_be_bytes([a, b]);
        if !CHANNELS.contains(&channel) {
            return Err(WireError::Malformed("channel-data: channel outside 0x4000..=0x7FFF"));
        }
        let len = u16::from_be_bytes([c, d]) as usize;
        let data = buf
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(WireError::Truncated("channel-data: data shorter than length"))?;
        if buf.len() - HEADER_LEN - len > 3 {
            return Err(WireError::Malformed("channel-data: more than 3 padding bytes"));
        }
        Ok(ChannelDataView { channel, data })
    }

    /// The channel number.
    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// The application data (without padding).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Writes the 4-byte header for `channel` and `data_len` at the start of `buf` (for relaying in
/// place: receive the peer's datagram at offset 4 of the send buffer, then write the header).
pub fn write_header(buf: &mut [u8], channel: u16, data_len: usize) -> WireResult<()> {
    if !CHANNELS.contains(&channel) {
        return Err(WireError::InvalidArgument("channel-data: channel outside 0x4000..=0x7FFF"));
    }
    let len = u16::try_from(data_len)
        .map_err(|_| WireError::InvalidArgument("channel-data: data over 65535 bytes"))?;
    let h = buf.first_chunk_mut::<4>().ok_or(WireError::BufferTooSmall("channel-data: header"))?;
    h[..2].copy_from_slice(&channel.to_be_bytes());
    h[2..].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes a whole ChannelData message into `buf` and returns its length; `pad` adds the
/// zero padding to a multiple of 4 that TCP/TLS framing requires.
pub fn write(buf: &mut [u8], channel: u16, data: &[u8], pad: bool) -> WireResult<usize> {
    let padding = if pad { (4 - data.len() % 4) % 4 } else { 0 };
    let total = HEADER_LEN + data.len() + padding;
    if buf.len() < total {
        return Err(WireError::BufferTooSmall("channel-data: message"));
    }
    write_header(buf, channel, data.len())?;
    buf[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
    buf[HEADER_LEN + data.len()..total].fill(0);
    Ok(total)
}

/// What the next frame on a TURN TCP/TLS stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// A STUN message of `len` bytes (20 + length field).
    Stun { len: usize },
    /// A ChannelData message: `len` bytes to consume (header, data, padding to 4), of which
    /// `data_len` are application data.
    ChannelData { len: usize, data_len: usize },
}

impl StreamFrame {
    /// Bytes the frame occupies on the stream.
    pub fn len(&self) -> usize {
        match *self {
            StreamFrame::Stun { len } | StreamFrame::ChannelData { len, .. } => len,
        }
    }

    /// Never true: every frame has a header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Tells how long the next frame at the start of a TURN stream buffer is.
///
/// `Ok(None)`: fewer than 4 bytes buffered, read more. `Ok(Some(f))`: the frame is `f.len()`
/// bytes; it is complete when the buffer holds that many. `Err`: the stream is out of sync
/// (first two bits neither 00 = STUN nor 01 = ChannelData, or a bad STUN length); close it.
/// After an RFC 6062 ConnectionBind succeeds the data connection carries raw peer bytes and
/// this function must no longer be used on it.
pub fn stream_frame_len(buf: &[u8]) -> WireResult<Option<StreamFrame>> {
    let Some(&[a, b, c, d]) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([c, d]) as usize;
    match a >> 6 {
        0b00 => {
            if !len.is_multiple_of(4) {
                return Err(WireError::Malformed("stream: STUN length not a multiple of 4"));
            }
            Ok(Some(StreamFrame::Stun { len: super::stun::HEADER_LEN + len }))
        }
        0b01 => {
            let channel = u16::from_be_bytes([a, b]);
            if !CHANNELS.contains(&channel) {
                return Err(WireError::Malformed("stream: channel outside 0x4000..=0x7FFF"));
            }
            Ok(Some(StreamFrame::ChannelData {
                len: HEADER_LEN + len + (4 - len % 4) % 4,
                data_len: len,
            }))
        }
        _ => Err(WireError::Malformed("stream: neither STUN nor ChannelData")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_write() {
        let mut buf = [0u8; 16];
        let n = write(&mut buf, 0x4001, b"hello", false).unwrap();
        assert_eq!(n, 9);
        assert_eq!(&buf[..4], &[0x40, 0x01, 0x00, 0x05]);
        let v = ChannelDataView::parse(&buf[..n]).unwrap();
        assert_eq!((v.channel(), v.data()), (0x4001, &b"hello"[..]));
        let n = write(&mut buf, 0x4FFF, b"hello", true).unwrap();
        assert_eq!(n, 12);
        let v = ChannelDataView::parse(&buf[..n]).unwrap();
        assert_eq!(v.data(), b"hello");
        assert!(ChannelDataView::parse(&buf[..8]).is_err());
        assert!(ChannelDataView::parse(&[0x56, 0xd8, 0, 0]).is_ok(), "coturn's clients use it");
        assert!(ChannelDataView::parse(&[0x80, 0, 0, 0]).is_err());
        assert!(ChannelDataView::parse(&[0x40, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(write(&mut buf, 0x3FFF, b"", false).is_err());
        assert!(write(&mut buf[..5], 0x4000, b"xx", false).is_err());
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00]), Ok(None));
        assert_eq!(
            stream_frame_len(&[0x40, 0x00, 0x00, 0x05]),
            Ok(Some(StreamFrame::ChannelData { len: 12, data_len: 5 }))
        );
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x08]),
            Ok(Some(StreamFrame::Stun { len: 28 }))
        );
        assert!(stream_frame_len(&[0x00, 0x01, 0x00, 0x07]).is_err());
        assert!(stream_frame_len(&[0x80, 0x01, 0x00, 0x08]).is_err());
    }
}
