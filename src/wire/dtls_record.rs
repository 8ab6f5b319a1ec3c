//! DTLS record headers (RFC 6347 §4.1 for DTLS 1.0/1.2; RFC 9147 §4 unified header of DTLS 1.3)
//! and an iterator over the records of one datagram.
//!
//! DTLSPlaintext/DTLSCiphertext of 1.2: content type (1), version (2), epoch (2), sequence
//! number (6), length (2), fragment. The DTLS 1.3 unified header (first byte 0b001CSLEE) is
//! walked when it carries no connection id (C=0); with C=1 the CID length is not self-describing
//! and the rest of the datagram is yielded as one opaque record, ending the walk.

use super::cursor::Reader;
use super::error::{WireError, WireResult};

/// Size of the DTLS 1.2 record header.
pub const HEADER_LEN: usize = 13;

/// Content types.
pub mod content_type {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
    pub const HEARTBEAT: u8 = 24;
    pub const TLS12_CID: u8 = 25;
    pub const ACK: u8 = 26;
}

/// DTLS 1.0 wire version.
pub const DTLS_1_0: u16 = 0xFEFF;
/// DTLS 1.2 wire version (also the legacy version of DTLS 1.3 plaintext records).
pub const DTLS_1_2: u16 = 0xFEFD;

/// A DTLS 1.0/1.2 record (or a DTLS 1.3 plaintext record, which uses the same header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsRecord<'a> {
    pub content_type: u8,
    pub version: u16,
    pub epoch: u16,
    /// 48-bit sequence number.
    pub sequence: u64,
    pub fragment: &'a [u8],
}

impl<'a> DtlsRecord<'a> {
    /// Parses one record at the start of `buf`; returns it and the bytes after it.
    pub fn parse(buf: &'a [u8]) -> WireResult<(DtlsRecord<'a>, &'a [u8])> {
        let mut r = Reader::new(buf);
        let content_type = r.u8("dtls: content type")?;
        let version = r.u16("dtls: version")?;
        let epoch = r.u16("dtls: epoch")?;
        let sequence = r.u48("dtls: sequence number")?;
        let len = r.u16("dtls: length")? as usize;
        let fragment = r.bytes(len, "dtls: fragment shorter than length")?;
        if !(20..=63).contains(&content_type) {
            return Err(WireError::Malformed("dtls: content type outside 20..=63"));
        }
        if version >> 8 != 0xFE {
            return Err(WireError::Unsupported("dtls: version not DTLS"));
        }
        Ok((DtlsRecord { content_type, version, epoch, sequence, fragment }, r.rest()))
    }

    /// Length of the fragment.
    pub fn length(&self) -> usize {
        self.fragment.len()
    }
}

/// A DTLS 1.3 ciphertext record with a unified header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnifiedRecord<'a> {
    /// The first byte (0b001CSLEE).
    pub flags: u8,
    /// Low two bits of the epoch.
    pub epoch_bits: u8,
    /// The (encrypted) 8- or 16-bit sequence number bits.
    pub sequence_bits: u16,
    /// The header bytes (needed as AAD).
    pub header: &'a [u8],
    /// The encrypted record.
    pub ciphertext: &'a [u8],
}

/// One item of a datagram walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A record with the 13-byte header.
    Plain(DtlsRecord<'a>),
    /// A DTLS 1.3 unified-header record without connection id.
    Unified(UnifiedRecord<'a>),
    /// A DTLS 1.3 unified-header record with a connection id: the rest of the datagram, opaque.
    UnifiedWithCid(&'a [u8]),
}

fn parse_unified(buf: &[u8]) -> WireResult<(UnifiedRecord<'_>, &[u8])> {
    let mut r = Reader::new(buf);
    let flags = r.u8("dtls13: unified header")?;
    let sequence_bits = if flags & 0x08 != 0 {
        r.u16("dtls13: sequence")?
    } else {
        r.u8("dtls13: sequence")? as u16
    };
    let ciphertext = if flags & 0x04 != 0 {
        let len = r.u16("dtls13: length")? as usize;
        r.bytes(len, "dtls13: record shorter than length")?
    } else {
        r.rest()
    };
    let hlen = buf.len() - r.remaining() - ciphertext.len();
    Ok((
        UnifiedRecord {
            flags,
            epoch_bits: flags & 0x03,
            sequence_bits,
            header: &buf[..hlen],
            ciphertext,
        },
        r.rest(),
    ))
}

/// Iterates the records of a datagram; yields an error once and stops on a malformed record.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

/// Walks the records of `datagram`.
pub fn records(datagram: &[u8]) -> Records<'_> {
    Records { rest: datagram }
}

impl<'a> Iterator for Records<'a> {
    type Item = WireResult<Record<'a>>;

    fn next(&mut self) -> Option<WireResult<Record<'a>>> {
        let &first = self.rest.first()?;
        let res = if first & 0xE0 == 0x20 {
            if first & 0x10 != 0 {
                let all = self.rest;
                self.rest = &[];
                return Some(Ok(Record::UnifiedWithCid(all)));
            }
            parse_unified(self.rest).map(|(u, rest)| (Record::Unified(u), rest))
        } else {
            DtlsRecord::parse(self.rest).map(|(p, rest)| (Record::Plain(p), rest))
        };
        match res {
            Ok((rec, rest)) => {
                self.rest = rest;
                Some(Ok(rec))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Writes a 13-byte record header into `buf`.
pub fn write_header(
    buf: &mut [u8],
    content_type: u8,
    version: u16,
    epoch: u16,
    sequence: u64,
    length: usize,
) -> WireResult<usize> {
    if sequence >> 48 != 0 {
        return Err(WireError::InvalidArgument("dtls: sequence over 48 bits"));
    }
    let len = u16::try_from(length)
        .map_err(|_| WireError::InvalidArgument("dtls: fragment over 65535 bytes"))?;
    let h = buf
        .first_chunk_mut::<HEADER_LEN>()
        .ok_or(WireError::BufferTooSmall("dtls: record header"))?;
    h[0] = content_type;
    h[1..3].copy_from_slice(&version.to_be_bytes());
    h[3..5].copy_from_slice(&epoch.to_be_bytes());
    h[5..11].copy_from_slice(&sequence.to_be_bytes()[2..]);
    h[11..13].copy_from_slice(&len.to_be_bytes());
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_records() {
        let mut d = vec![];
        let mut h = [0u8; 13];
        write_header(&mut h, 22, DTLS_1_0, 0, 0x0000_0102_0304, 3).unwrap();
        d.extend_from_slice(&h);
        d.extend_from_slice(&[1, 2, 3]);
        write_header(&mut h, 20, DTLS_1_2, 1, 0xFFFF_FFFF_FFFF, 1).unwrap();
        d.extend_from_slice(&h);
        d.push(1);
        let v: Vec<_> = records(&d).collect();
        assert_eq!(v.len(), 2);
        let Ok(Record::Plain(a)) = v[0] else { panic!() };
        assert_eq!((a.content_type, a.version, a.epoch), (22, DTLS_1_0, 0));
        assert_eq!(a.sequence, 0x0102_0304);
        assert_eq!(a.fragment, &[1, 2, 3]);
        let Ok(Record::Plain(b)) = v[1] else { panic!() };
        assert_eq!(b.sequence, 0xFFFF_FFFF_FFFF);
        assert_eq!(b.epoch, 1);
        // Truncated second record: an error, then the end.
        let v: Vec<_> = records(&d[..d.len() - 1]).collect();
        assert_eq!(v.len(), 2);
        assert!(v[1].is_err());
        assert!(write_header(&mut h, 22, DTLS_1_2, 0, 1 << 48, 0).is_err());
    }

    #[test]
    fn unified() {
        // 0b0010_1101: C=0, S=1, L=1, epoch 1; seq 0x1234; length 2.
        let d = [0x2D, 0x12, 0x34, 0x00, 0x02, 0xAA, 0xBB, 0x2D];
        let v: Vec<_> = records(&d).collect();
        let Ok(Record::Unified(u)) = v[0] else { panic!() };
        assert_eq!((u.epoch_bits, u.sequence_bits), (1, 0x1234));
        assert_eq!(u.header, &d[..5]);
        assert_eq!(u.ciphertext, &[0xAA, 0xBB]);
        assert!(v[1].is_err());
        let d = [0x31, 0x00];
        assert_eq!(records(&d).next(), Some(Ok(Record::UnifiedWithCid(&d[..]))));
    }
}
