//! TURN attributes (RFC 8656 §18, RFC 6062) as typed accessors on [`StunView`] and adders on
//! [`StunWriter`]: REQUESTED-TRANSPORT, LIFETIME, XOR-RELAYED-ADDRESS, XOR-PEER-ADDRESS (may
//! repeat), CHANNEL-NUMBER, DATA, NONCE, REALM, REQUESTED-ADDRESS-FAMILY, EVEN-PORT,
//! DONT-FRAGMENT, RESERVATION-TOKEN.

use core::net::SocketAddr;

use super::error::{WireError, WireResult};
use super::stun::{AttrIter, StunView, StunWriter, TransactionId, attr, decode_address};

/// IANA protocol number of UDP for REQUESTED-TRANSPORT.
pub const TRANSPORT_UDP: u8 = 17;
/// IANA protocol number of TCP (RFC 6062).
pub const TRANSPORT_TCP: u8 = 6;

/// Address family of REQUESTED-ADDRESS-FAMILY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    V4,
    V6,
}

impl<'a> StunView<'a> {
    /// REQUESTED-TRANSPORT protocol number (17 = UDP).
    pub fn requested_transport(&self) -> WireResult<Option<u8>> {
        match self.attribute(attr::REQUESTED_TRANSPORT) {
            None => Ok(None),
            Some(&[p, _, _, _]) => Ok(Some(p)),
            Some(_) => Err(WireError::Malformed("turn: REQUESTED-TRANSPORT length")),
        }
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> WireResult<Option<u32>> {
        self.u32_attr(attr::LIFETIME, "turn: LIFETIME length")
    }

    /// XOR-RELAYED-ADDRESS.
    pub fn xor_relayed_address(&self) -> WireResult<Option<SocketAddr>> {
        self.xor_address(attr::XOR_RELAYED_ADDRESS)
    }

    /// The first XOR-PEER-ADDRESS.
    pub fn xor_peer_address(&self) -> WireResult<Option<SocketAddr>> {
        self.xor_address(attr::XOR_PEER_ADDRESS)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> PeerAddresses<'a> {
        PeerAddresses { attrs: self.attributes(), txid: self.transaction_id() }
    }

    /// CHANNEL-NUMBER (the RFFU half must be zero; range check is the caller's, `channel_data::CHANNELS`).
    pub fn channel_number(&self) -> WireResult<Option<u16>> {
        match self.attribute(attr::CHANNEL_NUMBER) {
            None => Ok(None),
            Some(&[a, b, _, _]) => Ok(Some(u16::from_be_bytes([a, b]))),
            Some(_) => Err(WireError::Malformed("turn: CHANNEL-NUMBER length")),
        }
    }

    /// DATA.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.attribute(attr::DATA)
    }

    /// NONCE (at most 763 bytes).
    pub fn nonce(&self) -> WireResult<Option<&'a str>> {
        self.text(attr::NONCE, 763, "turn: NONCE")
    }

    /// REALM (at most 763 bytes).
    pub fn realm(&self) -> WireResult<Option<&'a str>> {
        self.text(attr::REALM, 763, "turn: REALM")
    }

    /// REQUESTED-ADDRESS-FAMILY.
    pub fn requested_address_family(&self) -> WireResult<Option<AddressFamily>> {
        match self.attribute(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Ok(None),
            Some(&[0x01, _, _, _]) => Ok(Some(AddressFamily::V4)),
            Some(&[0x02, _, _, _]) => Ok(Some(AddressFamily::V6)),
            Some(_) => Err(WireError::Malformed("turn: REQUESTED-ADDRESS-FAMILY")),
        }
    }

    /// EVEN-PORT: `Some(reserve_next)` when present.
    pub fn even_port(&self) -> WireResult<Option<bool>> {
        match self.attribute(attr::EVEN_PORT) {
            None => Ok(None),
            Some(&[b]) => Ok(Some(b & 0x80 != 0)),
            Some(_) => Err(WireError::Malformed("turn: EVEN-PORT length")),
        }
    }

    /// DONT-FRAGMENT present.
    pub fn dont_fragment(&self) -> WireResult<bool> {
        match self.attribute(attr::DONT_FRAGMENT) {
            None => Ok(false),
            Some([]) => Ok(true),
            Some(_) => Err(WireError::Malformed("turn: DONT-FRAGMENT length")),
        }
    }

    /// RESERVATION-TOKEN (8 bytes).
    pub fn reservation_token(&self) -> WireResult<Option<[u8; 8]>> {
        match self.attribute(attr::RESERVATION_TOKEN) {
            None => Ok(None),
            Some(v) => v
                .try_into()
                .map(Some)
                .map_err(|_| WireError::Malformed("turn: RESERVATION-TOKEN length")),
        }
    }
}

/// Iterator over every XOR-PEER-ADDRESS of a message.
#[derive(Debug, Clone)]
pub struct PeerAddresses<'a> {
    attrs: AttrIter<'a>,
    txid: &'a TransactionId,
}

impl Iterator for PeerAddresses<'_> {
    type Item = WireResult<SocketAddr>;

    fn next(&mut self) -> Option<WireResult<SocketAddr>> {
        let a = self.attrs.by_ref().find(|a| a.typ == attr::XOR_PEER_ADDRESS)?;
        Some(decode_address(a.value, Some(self.txid)))
    }
}

impl<'a> StunWriter<'a> {
    /// REQUESTED-TRANSPORT.
    pub fn requested_transport(&mut self, protocol: u8) -> WireResult<&mut Self> {
        self.attribute(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// LIFETIME.
    pub fn lifetime(&mut self, seconds: u32) -> WireResult<&mut Self> {
        self.attribute(attr::LIFETIME, &seconds.to_be_bytes())
    }

    /// XOR-RELAYED-ADDRESS.
    pub fn xor_relayed_address(&mut self, a: SocketAddr) -> WireResult<&mut Self> {
        self.xor_address(attr::XOR_RELAYED_ADDRESS, a)
    }

    /// XOR-PEER-ADDRESS.
    pub fn xor_peer_address(&mut self, a: SocketAddr) -> WireResult<&mut Self> {
        self.xor_address(attr::XOR_PEER_ADDRESS, a)
    }

    /// CHANNEL-NUMBER (`channel_data::CHANNELS`).
    pub fn channel_number(&mut self, channel: u16) -> WireResult<&mut Self> {
        if !super::channel_data::CHANNELS.contains(&channel) {
            return Err(WireError::InvalidArgument("turn: channel outside 0x4000..=0x7FFF"));
        }
        let c = channel.to_be_bytes();
        self.attribute(attr::CHANNEL_NUMBER, &[c[0], c[1], 0, 0])
    }

    /// DATA.
    pub fn data(&mut self, data: &[u8]) -> WireResult<&mut Self> {
        self.attribute(attr::DATA, data)
    }

    /// NONCE.
    pub fn nonce(&mut self, nonce: &str) -> WireResult<&mut Self> {
        self.attribute(attr::NONCE, nonce.as_bytes())
    }

    /// REALM.
    pub fn realm(&mut self, realm: &str) -> WireResult<&mut Self> {
        self.attribute(attr::REALM, realm.as_bytes())
    }

    /// REQUESTED-ADDRESS-FAMILY.
    pub fn requested_address_family(&mut self, f: AddressFamily) -> WireResult<&mut Self> {
        let b = match f {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        };
        self.attribute(attr::REQUESTED_ADDRESS_FAMILY, &[b, 0, 0, 0])
    }

    /// EVEN-PORT with the R (reserve next port) bit.
    pub fn even_port(&mut self, reserve_next: bool) -> WireResult<&mut Self> {
        self.attribute(attr::EVEN_PORT, &[if reserve_next { 0x80 } else { 0 }])
    }

    /// DONT-FRAGMENT.
    pub fn dont_fragment(&mut self) -> WireResult<&mut Self> {
        self.attribute(attr::DONT_FRAGMENT, &[])
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(&mut self, token: &[u8; 8]) -> WireResult<&mut Self> {
        self.attribute(attr::RESERVATION_TOKEN, token)
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::{Class, Method};
    use super::super::stun_integrity::IntegrityKey;
    use super::*;

    #[test]
    fn allocate_round_trip() {
        let key = IntegrityKey::long_term(b"user", b"realm", b"pass");
        let mut buf = [0u8; 512];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &[9; 12]).unwrap();
        w.requested_transport(TRANSPORT_UDP).unwrap();
        w.lifetime(600).unwrap();
        w.requested_address_family(AddressFamily::V6).unwrap();
        w.even_port(true).unwrap();
        w.dont_fragment().unwrap();
        w.username("user").unwrap().realm("realm").unwrap();
        w.nonce("abcd").unwrap();
        w.xor_peer_address("10.0.0.1:5000".parse().unwrap()).unwrap();
        w.xor_peer_address("[::1]:6000".parse().unwrap()).unwrap();
        w.channel_number(0x4001).unwrap();
        w.reservation_token(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        w.data(b"hello").unwrap();
        w.xor_relayed_address("192.0.2.15:50000".parse().unwrap()).unwrap();
        w.message_integrity(&key).unwrap();
        w.message_integrity_sha256(&key).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        let v = StunView::parse(&buf[..n]).unwrap();
        assert_eq!(v.method(), Method::ALLOCATE);
        assert_eq!(v.requested_transport().unwrap(), Some(17));
        assert_eq!(v.lifetime().unwrap(), Some(600));
        assert_eq!(v.requested_address_family().unwrap(), Some(AddressFamily::V6));
        assert_eq!(v.even_port().unwrap(), Some(true));
        assert!(v.dont_fragment().unwrap());
        assert_eq!(v.realm().unwrap(), Some("realm"));
        assert_eq!(v.nonce().unwrap(), Some("abcd"));
        let peers: Vec<_> = v.xor_peer_addresses().map(|a| a.unwrap()).collect();
        assert_eq!(peers, vec!["10.0.0.1:5000".parse().unwrap(), "[::1]:6000".parse().unwrap()]);
        assert_eq!(v.channel_number().unwrap(), Some(0x4001));
        assert_eq!(v.reservation_token().unwrap(), Some([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(v.data(), Some(&b"hello"[..]));
        assert_eq!(v.xor_relayed_address().unwrap(), Some("192.0.2.15:50000".parse().unwrap()));
        v.verify_integrity(&key).unwrap();
        v.verify_integrity_sha256(&key).unwrap();
        v.verify_fingerprint().unwrap();
    }
}
