//! The send history of one transport, keyed by transport-wide sequence number, and the
//! matching of transport-wide CC feedback (`wire::rtcp::twcc`) against it.
//!
//! 1. The caller stamps each egress packet with the next transport-wide sequence number and
//!    calls [`SendHistory::on_sent`] (16-bit on the wire, extended to 64 bits here).
//! 2. For each feedback, [`SendHistory::on_feedback`] returns one [`PacketResult`] per packet
//!    of ours it reports for the first time (send time, receive time on the receiver's clock,
//!    size, probe cluster) and a [`FeedbackSummary`] (newly received, newly lost, recovered).
//!
//! The history is a ring sized at construction; nothing allocates per packet or per feedback.
//! Receive times are microseconds on the receiver's clock, continuous across feedbacks: the
//! 24-bit reference time (64 ms units) is unwrapped against the previous feedback's.

use std::time::Instant;

use super::probe::ClusterId;
use crate::router::SeqExtender;
use crate::wire::rtcp::twcc::TransportCc;

/// What the feedback said of a packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    InFlight,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    sent_at: Instant,
    size: u32,
    cluster: Option<ClusterId>,
    rtx: bool,
    fate: Fate,
}

/// One packet of ours as a feedback reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketResult {
    /// Extended transport-wide sequence number.
    pub seq: u64,
    pub sent_at: Instant,
    /// Bytes on the wire as the caller counted them.
    pub size: u32,
    pub cluster: Option<ClusterId>,
    pub rtx: bool,
    /// Receive time in µs on the receiver's clock (`None`: reported not received).
    pub recv_us: Option<i64>,
}

/// Counts of one feedback (only packets reported for the first time, or recovered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackSummary {
    pub received: u32,
    pub lost: u32,
    /// Packets an earlier feedback reported lost and this one received.
    pub recovered: u32,
    /// Send time of the newest packet this feedback reports received (an RTT sample with the
    /// feedback's own delay in it).
    pub newest_received_sent_at: Option<Instant>,
}

/// Packets sent on one transport, by transport-wide sequence number.
#[derive(Debug)]
pub struct SendHistory {
    ring: Box<[Option<Slot>]>,
    seq: SeqExtender,
    /// Unwrapped reference time (64 ms units) of the last feedback and its raw value.
    reference: Option<(i32, i64)>,
    results: Vec<PacketResult>,
}

/// Default number of packets remembered: ~8 s at 1,000 packets/s.
pub const DEFAULT_HISTORY: usize = 8192;

/// Packets of one feedback passed on with their timing, at most: a feedback covers the packets
/// since the previous one (every 50-100 ms from browsers), far fewer than the history holds;
/// the rest of a larger one is counted, not timed.
pub const MAX_RESULTS: usize = 384;

impl SendHistory {
    /// A history of `capacity` packets (at least 64).
    pub fn new(capacity: usize) -> SendHistory {
        let capacity = capacity.max(64);
        SendHistory {
            ring: vec![None; capacity].into_boxed_slice(),
            seq: SeqExtender::default(),
            reference: None,
            results: Vec::with_capacity(capacity.min(MAX_RESULTS)),
        }
    }

    /// Records a packet stamped with transport-wide sequence `twcc_seq`; returns its extended
    /// number.
    pub fn on_sent(
        &mut self,
        now: Instant,
        twcc_seq: u16,
        size_bytes: usize,
        cluster: Option<ClusterId>,
        is_rtx: bool,
    ) -> u64 {
        let seq = self.seq.extend(twcc_seq);
        let cap = self.ring.len() as u64;
        if let Some(slot) = self.ring.get_mut((seq % cap) as usize) {
            *slot = Some(Slot {
                seq,
                sent_at: now,
                size: u32::try_from(size_bytes).unwrap_or(u32::MAX),
                cluster,
                rtx: is_rtx,
                fate: Fate::InFlight,
            });
        }
        seq
    }

    /// The extended sequence number of the newest packet sent.
    pub fn highest(&self) -> Option<u64> {
        self.seq.highest()
    }

    /// Matches a feedback against the history. The results (in sequence order) borrow the
    /// history until the next call.
    pub fn on_feedback(&mut self, fb: &TransportCc<'_>) -> (FeedbackSummary, &[PacketResult]) {
        self.results.clear();
        let mut summary = FeedbackSummary::default();
        let Some(highest) = self.seq.highest() else {
            return (summary, &self.results);
        };
        // Unwrap the 24-bit reference time against the previous feedback's.
        let raw = fb.reference_time;
        let reference = match self.reference {
            None => raw as i64,
            Some((last_raw, last)) => {
                let d = ((raw.wrapping_sub(last_raw)) << 8) >> 8;
                last + d as i64
            }
        };
        self.reference = Some((raw, reference));
        let mut recv_us = reference.saturating_mul(64_000);
        let base = SeqExtender::nearest(highest, fb.base_seq);
        let cap = self.ring.len() as u64;
        for (i, p) in fb.packets().enumerate() {
            if let Some(d) = p.delta {
                recv_us = recv_us.saturating_add(d as i64 * 250);
            }
            let seq = base.saturating_add(i as u64);
            if seq > highest {
                // Not sent by us (yet): nothing further can match either.
                break;
            }
            let Some(Some(slot)) = self.ring.get_mut((seq % cap) as usize) else { continue };
            if slot.seq != seq {
                continue;
            }
            let recv = p.delta.map(|_| recv_us);
            match (slot.fate, recv) {
                (Fate::Received, _) => continue,
                (Fate::Lost, None) => continue,
                (Fate::Lost, Some(_)) => summary.recovered += 1,
                (Fate::InFlight, None) => summary.lost += 1,
                (Fate::InFlight, Some(_)) => {}
            }
            if recv.is_some() {
                slot.fate = Fate::Received;
                summary.received += 1;
                summary.newest_received_sent_at = Some(slot.sent_at);
            } else {
                slot.fate = Fate::Lost;
            }
            if self.results.len() < self.results.capacity() {
                self.results.push(PacketResult {
                    seq,
                    sent_at: slot.sent_at,
                    size: slot.size,
                    cluster: slot.cluster,
                    rtx: slot.rtx,
                    recv_us: recv,
                });
            }
        }
        (summary, &self.results)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::rtcp::twcc::{TwccHeader, write};
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    fn feedback(buf: &mut [u8], base: u16, reference: i32, deltas: &[Option<i16>]) -> usize {
        let h = TwccHeader { base_seq: base, reference_time: reference, ..Default::default() };
        write(buf, &h, deltas).unwrap()
    }

    fn with_fb<R>(buf: &[u8], f: impl FnOnce(&TransportCc<'_>) -> R) -> R {
        let c = RtcpCompound::parse(buf).unwrap();
        match c.packets().next() {
            Some(Ok(RtcpPacket::TransportCc(t))) => f(&t),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matches_receive_times_losses_and_recovery() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(128);
        for i in 0..6u16 {
            h.on_sent(
                t0 + Duration::from_millis(i as u64),
                65533u16.wrapping_add(i),
                1000,
                None,
                i == 5,
            );
        }
        let mut buf = [0u8; 128];
        // 65533 at ref+1 ms, 65534 lost, 65535 at +2 ms, 0 at +3 ms (wraps), 1 lost.
        let n = feedback(&mut buf, 65533, 10, &[Some(4), None, Some(4), Some(4), None]);
        let (s, r) = with_fb(&buf[..n], |fb| {
            let (s, r) = h.on_feedback(fb);
            (s, r.to_vec())
        });
        assert_eq!((s.received, s.lost, s.recovered), (3, 2, 0));
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].recv_us, Some(640_000 + 1_000));
        assert_eq!(r[1].recv_us, None);
        assert_eq!(r[3].recv_us, Some(640_000 + 3_000));
        assert_eq!(r[3].seq, r[0].seq + 3);
        assert_eq!(s.newest_received_sent_at, Some(t0 + Duration::from_millis(3)));
        // The next feedback repeats two, recovers 65534 and 1 late, and reports 2 (an RTX).
        let n = feedback(&mut buf, 65534, 11, &[Some(0), None, None, Some(1), Some(1)]);
        let (s, r) = with_fb(&buf[..n], |fb| {
            let (s, r) = h.on_feedback(fb);
            (s, r.to_vec())
        });
        assert_eq!((s.received, s.lost, s.recovered), (3, 0, 2));
        assert_eq!(r.len(), 3);
        assert!(r[2].rtx && r[2].recv_us == Some(704_000 + 500));
    }

    #[test]
    fn reference_time_unwraps_and_unknown_seqs_are_ignored() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(64);
        let mut buf = [0u8; 64];
        // No packet sent yet: nothing matches.
        let n = feedback(&mut buf, 0, 0, &[Some(1)]);
        with_fb(&buf[..n], |fb| assert!(h.on_feedback(fb).1.is_empty()));
        h.on_sent(t0, 7, 100, None, false);
        h.on_sent(t0, 8, 100, None, false);
        let n = feedback(&mut buf, 7, (1 << 23) - 1, &[Some(0)]);
        let a = with_fb(&buf[..n], |fb| h.on_feedback(fb).1[0].recv_us.unwrap());
        // The 24-bit field wraps to the most negative value: still one step (64 ms) later.
        let n = feedback(&mut buf, 8, -(1 << 23), &[Some(0), Some(0), Some(0)]);
        let r = with_fb(&buf[..n], |fb| h.on_feedback(fb).1.to_vec());
        assert_eq!(r.len(), 1, "seqs 9 and 10 were never sent");
        assert_eq!(r[0].recv_us.unwrap() - a, 64_000);
    }
}
