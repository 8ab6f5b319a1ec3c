//! STUN messages (RFC 8489): a zero-copy view, an attribute iterator, typed accessors for the
//! ICE attributes (RFC 8445), and a writer into a caller-lent buffer.
//!
//! Implemented: the 20-byte header with the magic cookie (RFC 3489 messages without it are
//! `Unsupported`), class and method, attribute walk with 4-byte padding, MAPPED-ADDRESS and
//! XOR-MAPPED-ADDRESS (IPv4 and IPv6), USERNAME, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING,
//! ICE-CONTROLLED, ERROR-CODE, SOFTWARE, and the integrity attributes (see
//! [`super::stun_integrity`]). TURN attributes live in [`super::turn_attr`].
//!
//! Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and
//! attributes after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are ignored as RFC 8489
//! §14.5/§14.6 require: [`StunView::attributes`] never yields them, so no accessor can read an
//! unauthenticated value appended behind the MAC. Anything after FINGERPRINT is `Malformed`.
//!
//! Not implemented: SASLprep/OpaqueString of passwords (callers pass the bytes), USERHASH,
//! PASSWORD-ALGORITHMS negotiation, ALTERNATE-SERVER (readable as a raw attribute).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::cursor::{Reader, Writer, be16};
use super::error::{WireError, WireResult};
use super::stun_integrity::{self, IntegrityKey};

/// The fixed magic cookie of RFC 5389/8489.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// STUN attribute types used by ringsfu (RFC 8489, RFC 8445, RFC 8656).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// STUN message class (the C1/C0 bits of the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::SuccessResponse => 0x0100,
            Class::ErrorResponse => 0x0110,
        }
    }

    fn from_type(t: u16) -> Class {
        match t & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// STUN method (12 bits), a newtype so any registered or unknown method round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    pub const CONNECT: Method = Method(0x00A);
    pub const CONNECTION_BIND: Method = Method(0x00B);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    fn from_type(t: u16) -> Method {
        Method((t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2))
    }

    fn type_bits(self) -> u16 {
        let m = self.0;
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2)
    }
}

/// Composes the 14-bit message type from class and method; `None` if the method exceeds 12 bits.
pub fn message_type(class: Class, method: Method) -> Option<u16> {
    if method.0 > 0x0FFF {
        return None;
    }
    Some(method.type_bits() | class.bits())
}

/// The 96-bit transaction id.
pub type TransactionId = [u8; 12];

/// Cheap check used before the full parse: top two bits zero, magic cookie, length multiple of 4.
#[inline]
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] & 0xC0 == 0
        && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
        && buf[3] & 3 == 0
}

/// One attribute: type and value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub typ: u16,
    pub value: &'a [u8],
}

/// A validated STUN message borrowing its datagram.
///
/// Construction walks every attribute once and records where MESSAGE-INTEGRITY,
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are, so checks do not walk again.
#[derive(Debug, Clone, Copy)]
pub struct StunView<'a> {
    buf: &'a [u8],
    /// End of the attributes that count (the rest after the integrity attributes is ignored).
    attrs_end: usize,
    integrity: Option<u16>,
    integrity_sha256: Option<u16>,
    fingerprint: Option<u16>,
}

impl<'a> StunView<'a> {
    /// Parses a whole STUN message; `buf` must be exactly one message (20 + length bytes).
    pub fn parse(buf: &'a [u8]) -> WireResult<StunView<'a>> {
        let mut r = Reader::new(buf);
        let typ = r.u16("stun: message type")?;
        let len = r.u16("stun: message length")? as usize;
        let cookie = r.u32("stun: magic cookie")?;
        r.skip(12, "stun: transaction id")?;
        if typ & 0xC000 != 0 {
            return Err(WireError::Malformed("stun: top two bits of type not zero"));
        }
        if cookie != MAGIC_COOKIE {
            return Err(WireError::Unsupported("stun: no magic cookie (RFC 3489)"));
        }
        if !len.is_multiple_of(4) {
            return Err(WireError::Malformed("stun: length not a multiple of 4"));
        }
        if buf.len() < HEADER_LEN + len {
            return Err(WireError::Truncated("stun: attributes shorter than length"));
        }
        if buf.len() > HEADER_LEN + len {
            return Err(WireError::Malformed("stun: bytes after message length"));
        }
        let mut view = StunView {
            buf,
            attrs_end: buf.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut ignoring = false;
        let mut counted_end = HEADER_LEN;
        while !r.is_empty() {
            let at = r.pos();
            let t = r.u16("stun: attribute type")?;
            let l = r.u16("stun: attribute length")? as usize;
            r.skip(l, "stun: attribute value")?;
            r.skip(pad4(l), "stun: attribute padding")?;
            if view.fingerprint.is_some() {
                return Err(WireError::Malformed("stun: attribute after FINGERPRINT"));
            }
            // `at - 20` < length field <= 65535, so the offset fits a u16.
            let off = (at - HEADER_LEN) as u16;
            match t {
                attr::MESSAGE_INTEGRITY
                    if view.integrity.is_none() && view.integrity_sha256.is_none() =>
                {
                    if l != 20 {
                        return Err(WireError::Malformed("stun: MESSAGE-INTEGRITY length"));
                    }
                    view.integrity = Some(off);
                    counted_end = r.pos();
                    ignoring = true;
                }
                attr::MESSAGE_INTEGRITY_SHA256 if view.integrity_sha256.is_none() => {
                    if !(16..=32).contains(&l) || !l.is_multiple_of(4) {
                        return Err(WireError::Malformed("stun: MESSAGE-INTEGRITY-SHA256 length"));
                    }
                    view.integrity_sha256 = Some(off);
                    counted_end = r.pos();
                    ignoring = true;
                }
                attr::FINGERPRINT => {
                    if l != 4 {
                        return Err(WireError::Malformed("stun: FINGERPRINT length"));
                    }
                    view.fingerprint = Some(off);
                    if !ignoring {
                        counted_end = at;
                    }
                }
                _ => {
                    if !ignoring {
                        counted_end = r.pos();
                    }
                }
            }
        }
        view.attrs_end = counted_end;
        Ok(view)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The 14-bit message type.
    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.buf[0], self.buf[1]])
    }

    /// Message class.
    pub fn class(&self) -> Class {
        Class::from_type(self.message_type())
    }

    /// Message method.
    pub fn method(&self) -> Method {
        Method::from_type(self.message_type())
    }

    /// The length field (bytes after the header).
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> &'a TransactionId {
        // Invariant: parse checked buf.len() >= 20, so 8..20 is 12 bytes.
        self.buf[8..20].try_into().expect("12-byte transaction id")
    }

    /// Iterates the attributes that count: up to and including the integrity attributes, then
    /// FINGERPRINT; ignored trailing attributes are not yielded.
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf,
            pos: HEADER_LEN,
            end: self.attrs_end,
            fingerprint: self.fingerprint.map(|o| o as usize + HEADER_LEN),
        }
    }

    /// The value of the first attribute of type `typ`.
    pub fn attribute(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.typ == typ).map(|a| a.value)
    }

    /// Comprehension-required attribute types (0x0000..=0x7FFF) that ringsfu does not know,
    /// for a 420 (Unknown Attribute) answer; returns the first one.
    pub fn first_unknown_comprehension_required(&self) -> Option<u16> {
        self.attributes().map(|a| a.typ).find(|&t| t < 0x8000 && !is_known_attribute(t))
    }

    /// USERNAME (UTF-8, at most 513 bytes).
    pub fn username(&self) -> WireResult<Option<&'a str>> {
        self.text(attr::USERNAME, 513, "stun: USERNAME")
    }

    /// SOFTWARE (UTF-8, at most 763 bytes).
    pub fn software(&self) -> WireResult<Option<&'a str>> {
        self.text(attr::SOFTWARE, 763, "stun: SOFTWARE")
    }

    /// PRIORITY.
    pub fn priority(&self) -> WireResult<Option<u32>> {
        self.u32_attr(attr::PRIORITY, "stun: PRIORITY length")
    }

    /// USE-CANDIDATE present.
    pub fn use_candidate(&self) -> WireResult<bool> {
        match self.attribute(attr::USE_CANDIDATE) {
            None => Ok(false),
            Some([]) => Ok(true),
            Some(_) => Err(WireError::Malformed("stun: USE-CANDIDATE length")),
        }
    }

    /// ICE-CONTROLLING tie-breaker.
    pub fn ice_controlling(&self) -> WireResult<Option<u64>> {
        self.u64_attr(attr::ICE_CONTROLLING, "stun: ICE-CONTROLLING length")
    }

    /// ICE-CONTROLLED tie-breaker.
    pub fn ice_controlled(&self) -> WireResult<Option<u64>> {
        self.u64_attr(attr::ICE_CONTROLLED, "stun: ICE-CONTROLLED length")
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&self) -> WireResult<Option<SocketAddr>> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS)
    }

    /// MAPPED-ADDRESS (plain, legacy servers).
    pub fn mapped_address(&self) -> WireResult<Option<SocketAddr>> {
        self.attribute(attr::MAPPED_ADDRESS).map(|v| decode_address(v, None)).transpose()
    }

    /// ERROR-CODE: (code 300..=699, reason phrase).
    pub fn error_code(&self) -> WireResult<Option<(u16, &'a str)>> {
        let Some(v) = self.attribute(attr::ERROR_CODE) else {
            return Ok(None);
        };
        let mut r = Reader::new(v);
        let head = r.u32("stun: ERROR-CODE header")?;
        let class = (head >> 8) & 0x7;
        let number = head & 0xFF;
        if !(3..=6).contains(&class) || number > 99 {
            return Err(WireError::Malformed("stun: ERROR-CODE class/number"));
        }
        let reason = core::str::from_utf8(r.rest())
            .map_err(|_| WireError::Malformed("stun: ERROR-CODE reason not UTF-8"))?;
        Ok(Some(((class * 100 + number) as u16, reason)))
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`; on success returns the proof value
    /// that later steps (nomination, allocation) require.
    pub fn verify_integrity(&self, key: &IntegrityKey) -> WireResult<Authenticated<'a>> {
        let off = self.integrity.ok_or(WireError::CheckFailed("stun: no MESSAGE-INTEGRITY"))?
            as usize
            + HEADER_LEN;
        stun_integrity::verify_sha1(self.buf, off, key)?;
        Ok(Authenticated(*self))
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key`.
    pub fn verify_integrity_sha256(&self, key: &IntegrityKey) -> WireResult<Authenticated<'a>> {
        let off = self
            .integrity_sha256
            .ok_or(WireError::CheckFailed("stun: no MESSAGE-INTEGRITY-SHA256"))?
            as usize
            + HEADER_LEN;
        stun_integrity::verify_sha256(self.buf, off, key)?;
        Ok(Authenticated(*self))
    }

    /// Checks whichever integrity attribute is present, preferring MESSAGE-INTEGRITY-SHA256.
    pub fn verify_any_integrity(&self, key: &IntegrityKey) -> WireResult<Authenticated<'a>> {
        if self.integrity_sha256.is_some() {
            self.verify_integrity_sha256(key)
        } else {
            self.verify_integrity(key)
        }
    }

    /// Checks FINGERPRINT (CRC-32 of the message before it, XOR 0x5354554e).
    pub fn verify_fingerprint(&self) -> WireResult<()> {
        let off = self.fingerprint.ok_or(WireError::CheckFailed("stun: no FINGERPRINT"))? as usize
            + HEADER_LEN;
        let want = stun_integrity::fingerprint(&self.buf[..off]);
        let got = super::cursor::be32(self.buf, off + 4)
            .ok_or(WireError::Truncated("stun: FINGERPRINT value"))?;
        if want != got {
            return Err(WireError::CheckFailed("stun: FINGERPRINT mismatch"));
        }
        Ok(())
    }

    pub(crate) fn text(
        &self,
        typ: u16,
        max: usize,
        ctx: &'static str,
    ) -> WireResult<Option<&'a str>> {
        let Some(v) = self.attribute(typ) else {
            return Ok(None);
        };
        if v.len() > max {
            return Err(WireError::Malformed(ctx));
        }
        core::str::from_utf8(v).map(Some).map_err(|_| WireError::Malformed(ctx))
    }

    pub(crate) fn u32_attr(&self, typ: u16, ctx: &'static str) -> WireResult<Option<u32>> {
        match self.attribute(typ) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(u32::from_be_bytes([a, b, c, d]))),
            Some(_) => Err(WireError::Malformed(ctx)),
        }
    }

    pub(crate) fn u64_attr(&self, typ: u16, ctx: &'static str) -> WireResult<Option<u64>> {
        match self.attribute(typ) {
            None => Ok(None),
            Some(v) => {
                let a: [u8; 8] = v.try_into().map_err(|_| WireError::Malformed(ctx))?;
                Ok(Some(u64::from_be_bytes(a)))
            }
        }
    }

    pub(crate) fn xor_address(&self, typ: u16) -> WireResult<Option<SocketAddr>> {
        self.attribute(typ).map(|v| decode_address(v, Some(self.transaction_id()))).transpose()
    }
}

/// A STUN message whose MESSAGE-INTEGRITY (or -SHA256) was verified: the proof value that
/// steps which must not run on unauthenticated input take as an argument.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated<'a>(StunView<'a>);

impl<'a> core::ops::Deref for Authenticated<'a> {
    type Target = StunView<'a>;
    fn deref(&self) -> &StunView<'a> {
        &self.0
    }
}

/// Iterator over the attributes of a [`StunView`].
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    fingerprint: Option<usize>,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        if self.pos >= self.end {
            // Counted attributes done; FINGERPRINT, if any, comes last.
            let fp = self.fingerprint.take()?;
            let value = self.buf.get(fp + 4..fp + 8)?;
            return Some(RawAttribute { typ: attr::FINGERPRINT, value });
        }
        // Invariant: parse validated every attribute header and value inside buf; the `?`s
        // below only guard against a logic error, never panic.
        let typ = be16(self.buf, self.pos)?;
        let len = be16(self.buf, self.pos + 2)? as usize;
        let value = self.buf.get(self.pos + 4..self.pos + 4 + len)?;
        self.pos += 4 + len + pad4(len);
        if typ == attr::FINGERPRINT {
            // Reached in-order; do not yield it twice.
            self.fingerprint = None;
        }
        Some(RawAttribute { typ, value })
    }
}

/// Padding needed to bring `len` to a multiple of 4.
#[inline]
pub(crate) fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn is_known_attribute(t: u16) -> bool {
    use attr::*;
    matches!(
        t,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
    )
}

/// Decodes a (XOR-)MAPPED-ADDRESS family value; `txid` set means XOR-encoded.
pub(crate) fn decode_address(v: &[u8], txid: Option<&TransactionId>) -> WireResult<SocketAddr> {
    let mut r = Reader::new(v);
    let _reserved = r.u8("stun: address reserved byte")?;
    let family = r.u8("stun: address family")?;
    let mut port = r.u16("stun: address port")?;
    if txid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        0x01 => {
            let mut a: [u8; 4] = r.array("stun: IPv4 address")?;
            if txid.is_some() {
                xor_in_place(&mut a, &MAGIC_COOKIE.to_be_bytes());
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        0x02 => {
            let mut a: [u8; 16] = r.array("stun: IPv6 address")?;
            if let Some(t) = txid {
                xor_in_place(&mut a, &xor_mask(t));
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(WireError::Malformed("stun: address family")),
    };
    if !r.is_empty() {
        return Err(WireError::Malformed("stun: address length"));
    }
    Ok(SocketAddr::new(ip, port))
}

fn xor_mask(txid: &TransactionId) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[4..].copy_from_slice(txid);
    m
}

fn xor_in_place(a: &mut [u8], mask: &[u8]) {
    for (x, m) in a.iter_mut().zip(mask) {
        *x ^= m;
    }
}

/// Encodes an address value (8 or 20 bytes) into `out`, returning its length.
pub(crate) fn encode_address(
    addr: SocketAddr,
    txid: Option<&TransactionId>,
    out: &mut [u8; 20],
) -> usize {
    let mut port = addr.port();
    if txid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            let mut a = ip.octets();
            if txid.is_some() {
                xor_in_place(&mut a, &MAGIC_COOKIE.to_be_bytes());
            }
            out[4..8].copy_from_slice(&a);
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            let mut a = ip.octets();
            if let Some(t) = txid {
                xor_in_place(&mut a, &xor_mask(t));
            }
            out[4..20].copy_from_slice(&a);
            20
        }
    }
}

/// Builds a STUN message into a caller-lent buffer.
///
/// Add attributes in order, then optionally MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT (in that order), then [`StunWriter::finish`] for the length. The header length
/// field is kept current after every attribute.
#[derive(Debug)]
pub struct StunWriter<'a> {
    w: Writer<'a>,
    txid: TransactionId,
    /// 0 = attributes, 1 = after MI, 2 = after MI-SHA256, 3 = after FINGERPRINT.
    stage: u8,
}

impl<'a> StunWriter<'a> {
    /// Starts a message of `class`/`method` with `txid`.
    pub fn new(
        buf: &'a mut [u8],
        class: Class,
        method: Method,
        txid: &TransactionId,
    ) -> WireResult<StunWriter<'a>> {
        let t = message_type(class, method)
            .ok_or(WireError::InvalidArgument("stun: method over 12 bits"))?;
        let mut w = Writer::new(buf);
        w.u16(t, "stun: header")?;
        w.u16(0, "stun: header")?;
        w.u32(MAGIC_COOKIE, "stun: header")?;
        w.put(txid, "stun: header")?;
        Ok(StunWriter { w, txid: *txid, stage: 0 })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.w.pos()
    }

    /// Always false: the header is written by `new`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.txid
    }

    fn raw(&mut self, typ: u16, value: &[u8]) -> WireResult<()> {
        if value.len() > 0xFFFF - 4 {
            return Err(WireError::InvalidArgument("stun: attribute value too long"));
        }
        let new_len = self.w.pos() - HEADER_LEN + 4 + value.len() + pad4(value.len());
        if new_len > 0xFFFC {
            return Err(WireError::InvalidArgument("stun: message too long"));
        }
        self.w.u16(typ, "stun: attribute header")?;
        self.w.u16(value.len() as u16, "stun: attribute header")?;
        self.w.put(value, "stun: attribute value")?;
        self.w.zeros(pad4(value.len()), "stun: attribute padding")?;
        self.w.patch_u16(2, new_len as u16, "stun: length")
    }

    /// Appends any attribute (value unpadded; padding is added).
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> WireResult<&mut Self> {
        if self.stage != 0 {
            return Err(WireError::InvalidArgument(
                "stun: attribute after MESSAGE-INTEGRITY/FINGERPRINT",
            ));
        }
        self.raw(typ, value)?;
        Ok(self)
    }

    /// USERNAME.
    pub fn username(&mut self, v: &str) -> WireResult<&mut Self> {
        self.attribute(attr::USERNAME, v.as_bytes())
    }

    /// SOFTWARE.
    pub fn software(&mut self, v: &str) -> WireResult<&mut Self> {
        self.attribute(attr::SOFTWARE, v.as_bytes())
    }

    /// PRIORITY.
    pub fn priority(&mut self, v: u32) -> WireResult<&mut Self> {
        self.attribute(attr::PRIORITY, &v.to_be_bytes())
    }

    /// USE-CANDIDATE.
    pub fn use_candidate(&mut self) -> WireResult<&mut Self> {
        self.attribute(attr::USE_CANDIDATE, &[])
    }

    /// ICE-CONTROLLING.
    pub fn ice_controlling(&mut self, tie_breaker: u64) -> WireResult<&mut Self> {
        self.attribute(attr::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// ICE-CONTROLLED.
    pub fn ice_controlled(&mut self, tie_breaker: u64) -> WireResult<&mut Self> {
        self.attribute(attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&mut self, a: SocketAddr) -> WireResult<&mut Self> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS, a)
    }

    /// MAPPED-ADDRESS.
    pub fn mapped_address(&mut self, a: SocketAddr) -> WireResult<&mut Self> {
        let mut v = [0u8; 20];
        let n = encode_address(a, None, &mut v);
        self.attribute(attr::MAPPED_ADDRESS, &v[..n])
    }

    pub(crate) fn xor_address(&mut self, typ: u16, a: SocketAddr) -> WireResult<&mut Self> {
        let mut v = [0u8; 20];
        let txid = self.txid;
        let n = encode_address(a, Some(&txid), &mut v);
        self.attribute(typ, &v[..n])
    }

    /// ERROR-CODE (300..=699) with a reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> WireResult<&mut Self> {
        if !(300..=699).contains(&code) {
            return Err(WireError::InvalidArgument("stun: ERROR-CODE out of 300..=699"));
        }
        if reason.len() > 763 {
            return Err(WireError::InvalidArgument("stun: ERROR-CODE reason too long"));
        }
        let mut v = [0u8; 4 + 763];
        v[2] = (code / 100) as u8;
        v[3] = (code % 100) as u8;
        v[4..4 + reason.len()].copy_from_slice(reason.as_bytes());
        self.attribute(attr::ERROR_CODE, &v[..4 + reason.len()])
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn message_integrity(&mut self, key: &IntegrityKey) -> WireResult<&mut Self> {
        if self.stage != 0 {
            return Err(WireError::InvalidArgument("stun: MESSAGE-INTEGRITY out of order"));
        }
        let start = self.w.pos();
        self.raw(attr::MESSAGE_INTEGRITY, &[0u8; 20])?;
        let mac = {
            let buf = self.written();
            stun_integrity::mac_sha1(&buf[..start], key)
        };
        self.patch(start + 4, &mac)?;
        self.stage = 1;
        Ok(self)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn message_integrity_sha256(&mut self, key: &IntegrityKey) -> WireResult<&mut Self> {
        if self.stage > 1 {
            return Err(WireError::InvalidArgument("stun: MESSAGE-INTEGRITY-SHA256 out of order"));
        }
        let start = self.w.pos();
        self.raw(attr::MESSAGE_INTEGRITY_SHA256, &[0u8; 32])?;
        let mac = {
            let buf = self.written();
            stun_integrity::mac_sha256(&buf[..start], key)
        };
        self.patch(start + 4, &mac)?;
        self.stage = 2;
        Ok(self)
    }

    /// Appends FINGERPRINT; nothing may follow.
    pub fn fingerprint(&mut self) -> WireResult<&mut Self> {
        if self.stage > 2 {
            return Err(WireError::InvalidArgument("stun: second FINGERPRINT"));
        }
        let start = self.w.pos();
        self.raw(attr::FINGERPRINT, &[0u8; 4])?;
        let crc = stun_integrity::fingerprint(&self.written()[..start]);
        self.patch(start + 4, &crc.to_be_bytes())?;
        self.stage = 3;
        Ok(self)
    }

    /// Finishes the message and returns its length.
    pub fn finish(self) -> usize {
        self.w.pos()
    }

    fn written(&mut self) -> &[u8] {
        self.w.written()
    }

    fn patch(&mut self, at: usize, data: &[u8]) -> WireResult<()> {
        self.w.patch(at, data, "stun: patch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_bits_round_trip() {
        for m in 0..=0x0FFFu16 {
            for c in
                [Class::Request, Class::Indication, Class::SuccessResponse, Class::ErrorResponse]
            {
                let t = message_type(c, Method(m)).unwrap();
                assert_eq!(Method::from_type(t), Method(m));
                assert_eq!(Class::from_type(t), c);
            }
        }
        assert_eq!(message_type(Class::Request, Method::BINDING), Some(0x0001));
        assert_eq!(message_type(Class::SuccessResponse, Method::BINDING), Some(0x0101));
        assert_eq!(message_type(Class::ErrorResponse, Method::ALLOCATE), Some(0x0113));
        assert_eq!(message_type(Class::Indication, Method::SEND), Some(0x0016));
    }

    #[test]
    fn writer_view_round_trip_with_ignored_tail() {
        let key = IntegrityKey::short_term(b"pass");
        let mut buf = [0u8; 256];
        let txid = [7u8; 12];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &txid).unwrap();
        w.username("a:b").unwrap().priority(99).unwrap();
        w.use_candidate().unwrap();
        w.ice_controlling(0x0102030405060708).unwrap();
        w.xor_mapped_address("[2001:db8::1]:4000".parse().unwrap()).unwrap();
        w.message_integrity(&key).unwrap();
        assert!(w.username("x").is_err());
        w.fingerprint().unwrap();
        let n = w.finish();
        let v = StunView::parse(&buf[..n]).unwrap();
        assert_eq!(v.username().unwrap(), Some("a:b"));
        assert_eq!(v.priority().unwrap(), Some(99));
        assert!(v.use_candidate().unwrap());
        assert_eq!(v.ice_controlling().unwrap(), Some(0x0102030405060708));
        assert_eq!(v.xor_mapped_address().unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        v.verify_integrity(&key).unwrap();
        v.verify_fingerprint().unwrap();
        assert!(v.verify_integrity(&IntegrityKey::short_term(b"nope")).is_err());
        assert_eq!(v.attributes().count(), 7);
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let key = IntegrityKey::short_term(b"pass");
        let mut buf = [0u8; 256];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[1; 12]).unwrap();
        w.message_integrity(&key).unwrap();
        let n = w.finish();
        // Append a USERNAME after MI by hand and fix the length: it must be invisible.
        buf[n..n + 8].copy_from_slice(&[0x00, 0x06, 0x00, 0x03, b'e', b'v', b'e', 0]);
        let len = (n + 8 - 20) as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        let v = StunView::parse(&buf[..n + 8]).unwrap();
        assert_eq!(v.username().unwrap(), None);
        // MI was computed with the shorter length: still verifies (length adjustment).
        v.verify_integrity(&key).unwrap();
    }

    #[test]
    fn rejects_garbage() {
        assert!(StunView::parse(&[0u8; 19]).is_err());
        let mut h = [0u8; 20];
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(StunView::parse(&h).is_ok());
        h[3] = 4;
        assert_eq!(
            StunView::parse(&h).unwrap_err(),
            WireError::Truncated("stun: attributes shorter than length")
        );
        h[3] = 0;
        h[0] = 0x40;
        assert!(StunView::parse(&h).is_err());
    }
}
