//! [`SrtpContext`]: one direction's keys plus per-SSRC rollover and replay state.

use std::fmt;

use crate::dtls::SrtpKeyMaterial;

use super::cipher::{Cipher, RTCP_HEADER_LEN, SRTCP_E_FLAG, SRTCP_INDEX_LEN};
use super::error::SrtpError;
use super::keys::{DtlsRole, MasterKey, split_keying_material};
use super::profile::SrtpProfile;
use super::replay::{ReplayWindow, Rollover};
use super::table::SsrcTable;

/// SSRCs a context tracks unless told otherwise: audio, video with three simulcast
/// layers and their RTX streams fit with room to spare.
pub const DEFAULT_MAX_SSRCS: usize = 32;

/// The fixed RTP header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
const RTP_FIXED_HEADER: usize = 12;

/// The largest SRTCP index (31 bits); the next one would need a new master key.
const MAX_SRTCP_INDEX: u32 = 0x7FFF_FFFF;

/// SRTP/SRTCP state for **one direction** of one DTLS-SRTP association.
///
/// Use one context to protect what we send (keyed with the local master key) and
/// another to unprotect what we receive (keyed with the remote one); mixing both uses in
/// one context would share rollover state between the two directions.
/// [`SrtpContext::from_dtls_keys`] builds the pair from what DTLS reported
/// ([`SrtpContext::from_dtls`] from raw exported bytes).
///
/// Per-SSRC state lives in a table sized at construction ([`DEFAULT_MAX_SSRCS`] or
/// [`SrtpContext::with_max_ssrcs`]) and never grows: no call after construction
/// allocates. A packet from an SSRC the table has no room for fails with
/// [`SrtpError::NoContext`]; [`SrtpContext::remove_ssrc`] frees a slot. On the receive
/// side state is created only once a packet has authenticated, so forged packets with
/// random SSRCs cannot fill the table.
pub struct SrtpContext {
    profile: SrtpProfile,
    cipher: Cipher,
    streams: SsrcTable,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("ssrcs", &self.streams.len())
            .field("max_ssrcs", &self.streams.max())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context keyed with `master`, tracking up to [`DEFAULT_MAX_SSRCS`] SSRCs.
    pub fn new(master: &MasterKey) -> Result<SrtpContext, SrtpError> {
        SrtpContext::with_max_ssrcs(master, DEFAULT_MAX_SSRCS)
    }

    /// A context keyed with `master`, tracking up to `max_ssrcs` SSRCs (at least 1).
    /// Memory is about 128 bytes per SSRC, allocated here once.
    pub fn with_max_ssrcs(master: &MasterKey, max_ssrcs: usize) -> Result<SrtpContext, SrtpError> {
        Ok(SrtpContext {
            profile: master.profile(),
            cipher: Cipher::new(master)?,
            streams: SsrcTable::new(max_ssrcs),
        })
    }

    /// The `(outbound, inbound)` contexts of a DTLS-SRTP association, straight from the
    /// keys of [`DtlsEvent::Connected`](crate::dtls::DtlsEvent::Connected) and our role
    /// (the SFU is always [`DtlsRole::Server`]): outbound protects with our half of the
    /// keys, inbound unprotects with the peer's.
    ///
    /// ```ignore
    /// DtlsEvent::Connected { keying_material, .. } => {
    ///     let (tx, rx) = SrtpContext::from_dtls_keys(&keying_material, DtlsRole::Server)?;
    /// }
    /// ```
    pub fn from_dtls_keys(
        keys: &SrtpKeyMaterial,
        role: DtlsRole,
    ) -> Result<(SrtpContext, SrtpContext), SrtpError> {
        SrtpContext::from_dtls_keys_with_max_ssrcs(keys, role, DEFAULT_MAX_SSRCS)
    }

    /// [`SrtpContext::from_dtls_keys`] with an explicit per-direction SSRC limit.
    pub fn from_dtls_keys_with_max_ssrcs(
        keys: &SrtpKeyMaterial,
        role: DtlsRole,
        max_ssrcs: usize,
    ) -> Result<(SrtpContext, SrtpContext), SrtpError> {
        let (key, salt) = keys.outbound(role);
        let local = MasterKey::new(keys.profile, key, salt)?;
        let (key, salt) = keys.inbound(role);
        let remote = MasterKey::new(keys.profile, key, salt)?;
        Ok((
            SrtpContext::with_max_ssrcs(&local, max_ssrcs)?,
            SrtpContext::with_max_ssrcs(&remote, max_ssrcs)?,
        ))
    }

    /// The `(outbound, inbound)` contexts of a DTLS-SRTP association, from the keying
    /// material DTLS exported with the label `EXTRACTOR-dtls_srtp`
    /// ([`SrtpProfile::keying_material_len`] bytes) and our handshake role.
    pub fn from_dtls(
        profile: SrtpProfile,
        keying_material: &[u8],
        role: DtlsRole,
    ) -> Result<(SrtpContext, SrtpContext), SrtpError> {
        SrtpContext::from_dtls_with_max_ssrcs(profile, keying_material, role, DEFAULT_MAX_SSRCS)
    }

    /// [`SrtpContext::from_dtls`] with an explicit per-direction SSRC limit.
    pub fn from_dtls_with_max_ssrcs(
        profile: SrtpProfile,
        keying_material: &[u8],
        role: DtlsRole,
        max_ssrcs: usize,
    ) -> Result<(SrtpContext, SrtpContext), SrtpError> {
        let (local, remote) = split_keying_material(profile, keying_material, role)?;
        Ok((
            SrtpContext::with_max_ssrcs(&local, max_ssrcs)?,
            SrtpContext::with_max_ssrcs(&remote, max_ssrcs)?,
        ))
    }

    /// The profile this context was keyed for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// How many SSRCs have state now.
    pub fn ssrc_count(&self) -> usize {
        self.streams.len()
    }

    /// How many SSRCs this context can track.
    pub fn max_ssrcs(&self) -> usize {
        self.streams.max()
    }

    /// The SRTP rollover counter of `ssrc` (of the highest index sent or received).
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.streams.get(ssrc).map(|s| s.rtp.roc())
    }

    /// Forget the state of `ssrc` (a track ended), freeing its slot. A later packet of
    /// the same SSRC starts afresh at ROC 0, which is only safe for a new stream.
    pub fn remove_ssrc(&mut self, ssrc: u32) -> bool {
        self.streams.remove(ssrc)
    }

    /// Protect the RTP packet `buf[..len]` in place: encrypt the payload after
    /// `header_len` bytes (fixed header, CSRCs and header extension) and append the tag.
    /// `buf` must have [`SrtpProfile::rtp_overhead`] bytes of room past `len`.
    /// Returns the SRTP packet length.
    pub fn protect_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
    ) -> Result<usize, SrtpError> {
        if header_len < RTP_FIXED_HEADER || header_len > len {
            return Err(SrtpError::BadHeaderLen);
        }
        if buf.len() < len + self.profile.rtp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let (ssrc, seq) = rtp_ids(buf);
        let stream = self.streams.get_or_insert(ssrc).ok_or(SrtpError::NoContext)?;
        let index = stream.rtp.estimate(seq)?;
        let out = self.cipher.seal_rtp(buf, len, header_len, ssrc, index)?;
        stream.rtp.update(index);
        Ok(out)
    }

    /// Fused copy and protect for forwarding: copy the header `src[..header_len]` to
    /// `dst`, then encrypt the payload from `src` straight into `dst` (one pass over the
    /// payload) and append the tag. Returns the SRTP packet length in `dst`.
    ///
    /// To rewrite header fields (SSRC, sequence number, timestamp, extensions) copy
    /// and patch the header into `dst` yourself and call
    /// [`SrtpContext::protect_rtp_payload_into`] instead.
    pub fn protect_rtp_into(
        &mut self,
        src_plain_packet: &[u8],
        header_len: usize,
        dst: &mut [u8],
    ) -> Result<usize, SrtpError> {
        if header_len < RTP_FIXED_HEADER || header_len > src_plain_packet.len() {
            return Err(SrtpError::BadHeaderLen);
        }
        if dst.len() < src_plain_packet.len() + self.profile.rtp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let (header, payload) = src_plain_packet.split_at(header_len);
        dst[..header_len].copy_from_slice(header);
        self.protect_rtp_payload_into(dst, header_len, payload)
    }

    /// The router's entry point: `dst[..header_len]` already holds the (rewritten)
    /// plaintext RTP header; encrypt `payload` from the source packet into
    /// `dst[header_len..]` while copying it, and append the tag. The SSRC and sequence
    /// number are read from the header in `dst`, so the rewritten values are the ones
    /// protected. `dst` needs `header_len + payload.len() + rtp_overhead` bytes.
    /// Returns the SRTP packet length in `dst`.
    pub fn protect_rtp_payload_into(
        &mut self,
        dst: &mut [u8],
        header_len: usize,
        payload: &[u8],
    ) -> Result<usize, SrtpError> {
        if header_len < RTP_FIXED_HEADER || header_len > dst.len() {
            return Err(SrtpError::BadHeaderLen);
        }
        if dst.len() < header_len + payload.len() + self.profile.rtp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let (ssrc, seq) = rtp_ids(dst);
        let stream = self.streams.get_or_insert(ssrc).ok_or(SrtpError::NoContext)?;
        let index = stream.rtp.estimate(seq)?;
        let out = self.cipher.seal_rtp_from(dst, header_len, payload, ssrc, index)?;
        stream.rtp.update(index);
        Ok(out)
    }

    /// Unprotect the SRTP packet `buf` (the whole datagram) in place: estimate the
    /// index, check the replay window, verify the tag (constant time), decrypt. Only
    /// after all of that succeeded are the rollover counter and the replay window
    /// advanced. Returns the plaintext RTP length, `buf[..n]`.
    ///
    /// `header_len` is the RTP header length (fixed header, CSRCs, extension) as the
    /// RTP parser read it from `buf`.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], header_len: usize) -> Result<usize, SrtpError> {
        if header_len < RTP_FIXED_HEADER {
            return Err(SrtpError::BadHeaderLen);
        }
        if buf.len() < header_len + self.profile.tag_len() {
            return Err(SrtpError::TooShort);
        }
        let (ssrc, seq) = rtp_ids(buf);
        let found = self.streams.find(ssrc);
        let (rollover, replay) = match found {
            Ok(slot) => {
                let s = self.streams.at(slot);
                (s.rtp, s.rtp_replay)
            }
            Err(_) if !self.streams.has_room() => return Err(SrtpError::NoContext),
            Err(_) => (Rollover::ZERO, ReplayWindow::ZERO),
        };
        let index = rollover.estimate(seq)?;
        replay.check(index)?;
        let plain = self.cipher.open_rtp(buf, header_len, ssrc, index)?;
        // Room was checked above and nothing changed the table since.
        let stream = self.streams.claim(found, ssrc).ok_or(SrtpError::NoContext)?;
        stream.rtp.update(index);
        stream.rtp_replay.accept(index);
        Ok(plain)
    }

    /// Protect the RTCP packet (or compound) `buf[..len]` in place: encrypt after the
    /// first 8 bytes with the sender SSRC's next SRTCP index (the first is 1), append the
    /// E flag and index, and the tag. `buf` needs [`SrtpProfile::rtcp_overhead`] bytes of
    /// room past `len`. Returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < RTCP_HEADER_LEN {
            return Err(SrtpError::TooShort);
        }
        if buf.len() < len + self.profile.rtcp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = rtcp_ssrc(buf);
        let stream = self.streams.get_or_insert(ssrc).ok_or(SrtpError::NoContext)?;
        if stream.rtcp_sent >= MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let index = stream.rtcp_sent + 1;
        let out = self.cipher.seal_rtcp(buf, len, ssrc, index)?;
        stream.rtcp_sent = index;
        Ok(out)
    }

    /// Unprotect the SRTCP packet `buf` (the whole datagram) in place: read the E flag
    /// and SRTCP index, check the replay window, verify the tag, decrypt when the E flag
    /// is set. The replay window advances only after the tag verified. Returns the RTCP
    /// length, `buf[..n]`.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let tag_len = self.profile.tag_len();
        if len < RTCP_HEADER_LEN + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::TooShort);
        }
        // AES-CM: ... | E+index | tag ;  AES-GCM: ... | tag | E+index.
        let at = if self.profile.is_aead() {
            len - SRTCP_INDEX_LEN
        } else {
            len - tag_len - SRTCP_INDEX_LEN
        };
        let word = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let index = word & !SRTCP_E_FLAG;
        let ssrc = rtcp_ssrc(buf);
        let found = self.streams.find(ssrc);
        let replay = match found {
            Ok(slot) => self.streams.at(slot).rtcp_replay,
            Err(_) if !self.streams.has_room() => return Err(SrtpError::NoContext),
            Err(_) => ReplayWindow::ZERO,
        };
        replay.check(u64::from(index))?;
        let plain = self.cipher.open_rtcp(buf, ssrc, word)?;
        let stream = self.streams.claim(found, ssrc).ok_or(SrtpError::NoContext)?;
        stream.rtcp_replay.accept(u64::from(index));
        Ok(plain)
    }
}

/// SSRC and sequence number of an RTP header; the caller checked `buf.len() >= 12`.
#[inline]
fn rtp_ids(buf: &[u8]) -> (u32, u16) {
    let seq = u16::from_be_bytes([buf[2], buf[3]]);
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    (ssrc, seq)
}

/// Sender SSRC of an RTCP packet; the caller checked `buf.len() >= 8`.
#[inline]
fn rtcp_ssrc(buf: &[u8]) -> u32 {
    u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_can_move_to_a_shard_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SrtpContext>();
        assert_send::<SrtpError>();
    }

    #[test]
    fn context_is_small_enough_to_keep_per_peer() {
        // Two contexts per peer live in the shard's peer slab; keys are boxed or owned
        // by aws-lc, the SSRC table is a boxed slice.
        assert!(std::mem::size_of::<SrtpContext>() <= 256);
    }
}
