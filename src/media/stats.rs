//! Per-shard media counters: written by the shard's core only (single writer, relaxed
//! load + store, no locked instruction), read by the control plane for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the media core dropped a datagram or a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum MediaDrop {
    /// Not STUN/DTLS/RTP/RTCP by its first byte, or shorter than its header.
    Unclassified = 0,
    /// A STUN message that does not parse or names no peer of this shard.
    StunUnknown,
    /// A STUN check the ICE agent refused (bad credentials, integrity, role...).
    StunRejected,
    /// DTLS/RTP/RTCP from an address no authenticated STUN check came from.
    UnknownSource,
    /// RTP/RTCP before the DTLS handshake produced keys.
    NotConnected,
    /// SRTP/SRTCP authentication, replay or decryption failure.
    SrtpFailed,
    /// RTP header or RTCP compound that does not parse.
    Malformed,
    /// RTP of an SSRC/payload type no negotiated track has, or RTP from a subscriber.
    UnknownTrack,
    /// A send slot could not be had (pool exhausted) or the packet did not fit.
    TxFull,
    /// The shard mesh's ring to another shard was full (that shard is behind).
    MeshFull,
    /// A publisher's retransmission (RTX) of a packet already received: its uplink probe,
    /// not a repair.
    Duplicate,
    /// RTP/RTCP from another node's relay address with an SSRC no relay leg here has.
    UnknownRelaySsrc,
}

impl MediaDrop {
    pub const ALL: [MediaDrop; 12] = [
        MediaDrop::Unclassified,
        MediaDrop::StunUnknown,
        MediaDrop::StunRejected,
        MediaDrop::UnknownSource,
        MediaDrop::NotConnected,
        MediaDrop::SrtpFailed,
        MediaDrop::Malformed,
        MediaDrop::UnknownTrack,
        MediaDrop::TxFull,
        MediaDrop::MeshFull,
        MediaDrop::Duplicate,
        MediaDrop::UnknownRelaySsrc,
    ];

    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaDrop::Unclassified => "unclassified",
            MediaDrop::StunUnknown => "stun_unknown",
            MediaDrop::StunRejected => "stun_rejected",
            MediaDrop::UnknownSource => "unknown_source",
            MediaDrop::NotConnected => "not_connected",
            MediaDrop::SrtpFailed => "srtp_failed",
            MediaDrop::Malformed => "malformed",
            MediaDrop::UnknownTrack => "unknown_track",
            MediaDrop::TxFull => "tx_full",
            MediaDrop::MeshFull => "mesh_full",
            MediaDrop::Duplicate => "duplicate",
            MediaDrop::UnknownRelaySsrc => "unknown_relay_ssrc",
        }
    }
}

const N: usize = MediaDrop::ALL.len();

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// The live counters of one shard's media core.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct MediaStats {
            $($(#[$m])* pub(crate) $name: AtomicU64,)*
            drops: [AtomicU64; N],
        }

        /// A copy of [`MediaStats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct MediaStatsSnapshot {
            $($(#[$m])* pub $name: u64,)*
            /// Indexed by `MediaDrop as usize`.
            pub drops: [u64; N],
        }

        impl MediaStats {
            pub fn snapshot(&self) -> MediaStatsSnapshot {
                let mut drops = [0; N];
                for (d, c) in drops.iter_mut().zip(&self.drops) {
                    *d = c.load(Relaxed);
                }
                MediaStatsSnapshot { $($name: self.$name.load(Relaxed),)* drops }
            }
        }

        impl MediaStatsSnapshot {
            /// Sum over shards.
            pub fn add(&mut self, o: &MediaStatsSnapshot) {
                $(self.$name += o.$name;)*
                for (a, b) in self.drops.iter_mut().zip(o.drops) {
                    *a += b;
                }
            }
        }
    };
}

counters! {
    /// Publisher peers on the shard now.
    publishers,
    /// Subscriber peers on the shard now.
    subscribers,
    /// Peers whose DTLS handshake completed.
    dtls_handshakes,
    /// DTLS handshakes that failed.
    dtls_failures,
    /// Peers removed because ICE consent expired.
    ice_consent_expired,
    /// ICE restarts: a renegotiation with new ICE credentials on a DTLS association that
    /// stays.
    ice_restarts,
    /// STUN binding checks answered with success.
    stun_checks,
    /// RTP packets received from publishers (decrypted).
    rtp_in,
    /// RTP packets sent to subscribers (forwarded, not retransmissions).
    rtp_out,
    /// Payload bytes forwarded.
    rtp_out_bytes,
    /// Retransmissions sent in answer to subscribers' NACKs.
    rtx_out,
    /// NACKed packets no longer in the ring.
    rtx_missing,
    /// NACKed packets not resent: the subscriber's retransmission budget (a share of its
    /// bandwidth estimate) was spent.
    rtx_over_budget,
    /// NACKed packets not resent: first sent too long ago to arrive in time.
    rtx_too_old,
    /// Padding packets sent to probe a subscriber's bandwidth.
    probe_packets,
    /// Layer switches of consumers choosing simulcast / SVC layers.
    layer_switches,
    /// NACK packets received from subscribers.
    nacks_in,
    /// NACK packets sent to publishers.
    nacks_out,
    /// Publisher packets asked for again because a subscriber NACKed them after ringsfu's own
    /// tries were spent (the packet never arrived).
    nacks_renewed,
    /// Keyframe requests (PLI) sent to publishers.
    pli_out,
    /// RTCP compounds received.
    rtcp_in,
    /// RTCP packets sent (reports, feedback).
    rtcp_out,
    /// Producers of other shards mirrored on this shard now (they have consumers here).
    mirrors,
    /// Messages this shard wrote to other shards (publisher packets, sender reports,
    /// keyframe requests).
    mesh_out,
    /// Messages read from other shards.
    mesh_in,
    /// Recorders attached on this shard now (INDIVIDUAL recording).
    recorders,
    /// Publisher packets a recorder's ring had no room for (dropped for that recorder).
    recorder_dropped,
    /// Relay legs to or from other nodes on the shard now (not counted as publishers or
    /// subscribers).
    relay_legs,
    /// Relay RTP packets received from other nodes (accepted by a relay producer).
    relay_in,
    /// Relay RTP packets sent to other nodes (forwarded and retransmitted).
    relay_out,
}

impl MediaStats {
    /// Drops for one reason.
    pub fn drops(&self, r: MediaDrop) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }

    pub(crate) fn count_drop(&self, r: MediaDrop) {
        bump(&self.drops[r as usize], 1);
    }
}

impl MediaStatsSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, r: MediaDrop) -> u64 {
        self.drops[r as usize]
    }
}

/// The shard counters' single-writer increment (relaxed load + store).
pub(crate) use crate::shard::stats::bump;

#[inline]
pub(crate) fn set(c: &AtomicU64, v: u64) {
    c.store(v, Relaxed);
}

/// Field access for the core (the fields stay private to keep writes in one place).
macro_rules! stat {
    ($s:expr, $f:ident) => {
        $crate::media::stats::bump(&$s.$f, 1)
    };
    ($s:expr, $f:ident, $n:expr) => {
        $crate::media::stats::bump(&$s.$f, $n)
    };
}
pub(crate) use stat;

impl MediaStats {
    pub(crate) fn set_peers(&self, publishers: u64, subscribers: u64) {
        set(&self.publishers, publishers);
        set(&self.subscribers, subscribers);
    }
}
