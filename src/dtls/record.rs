//! A cheap structural check of a DTLS 1.2 datagram (RFC 6347 §4.1) before it reaches dimpl.
//!
//! dimpl discards malformed input silently; checking the record framing here lets the
//! endpoint count garbage by reason (practice 6: hostile input moves a counter, never panics).
//! Only the plaintext record headers are read; contents stay dimpl's business.

/// DTLS record header length: type(1) version(2) epoch(2) sequence(6) length(2).
pub(crate) const RECORD_HEADER_LEN: usize = 13;

/// Why a datagram was not handed to the DTLS engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingError {
    /// Shorter than one record header, or first byte outside the RFC 7983 DTLS range.
    NotDtls,
    /// A record's content type or version is not DTLS 1.0/1.2 (20..=23, 0xFEFF/0xFEFD).
    BadRecordHeader,
    /// A record's length runs past the end of the datagram.
    Truncated,
}

/// Checks that `datagram` is a sequence of whole DTLS 1.0/1.2 records.
pub(crate) fn check_datagram(datagram: &[u8]) -> Result<(), FramingError> {
    match datagram.first() {
        Some(20..=63) if datagram.len() >= RECORD_HEADER_LEN => {}
        _ => return Err(FramingError::NotDtls),
    }
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Err(FramingError::Truncated);
        };
        // 20 change_cipher_spec, 21 alert, 22 handshake, 23 application_data.
        if !(20..=23).contains(&header[0]) {
            return Err(FramingError::BadRecordHeader);
        }
        // DTLS 1.2 is 0xFEFD; a ClientHello record may say DTLS 1.0 (0xFEFF).
        if header[1] != 0xFE || !(header[2] == 0xFD || header[2] == 0xFF) {
            return Err(FramingError::BadRecordHeader);
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let end = RECORD_HEADER_LEN + len;
        if rest.len() < end {
            return Err(FramingError::Truncated);
        }
        rest = &rest[end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ct: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ct, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn accepts_whole_records() {
        let mut d = record(22, &[1, 2, 3]);
        d.extend(record(20, &[1]));
        d.extend(record(23, &[]));
        assert_eq!(check_datagram(&d), Ok(()));
        let mut hello = record(22, &[0; 10]);
        hello[2] = 0xFF;
        assert_eq!(check_datagram(&hello), Ok(()));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(check_datagram(&[]), Err(FramingError::NotDtls));
        assert_eq!(check_datagram(&[22; 5]), Err(FramingError::NotDtls));
        assert_eq!(check_datagram(&[0x80; 40]), Err(FramingError::NotDtls));
        assert_eq!(check_datagram(&record(24, &[])), Err(FramingError::BadRecordHeader));
        let mut v = record(22, &[1, 2]);
        v[2] = 0xFC;
        assert_eq!(check_datagram(&v), Err(FramingError::BadRecordHeader));
        let v = record(22, &[1, 2, 3]);
        assert_eq!(check_datagram(&v[..v.len() - 1]), Err(FramingError::Truncated));
        let mut v = record(22, &[1]);
        v.extend_from_slice(&[22, 0xFE]);
        assert_eq!(check_datagram(&v), Err(FramingError::Truncated));
    }
}
