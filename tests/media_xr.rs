//! RTCP XR receiver RTT (RFC 3611 RRTR/DLRR) through a `MediaCore`, on a virtual clock, with
//! peers connected the real way (ICE check, DTLS, SRTP; `core_peer`):
//! - a subscriber's RRTR is answered at once with a DLRR echoing its timestamp;
//! - the core's receiver reports to a publisher carry an RRTR; the publisher's DLRR gives the
//!   core the RTT, and from then on the core's NACK retries to it follow that RTT (200 ms: the
//!   second NACK of a packet no sooner than 255 ms after the first) instead of the fixed 40 ms;
//! - a subscriber's NACK of a packet the core never received renews the core's NACK to the
//!   publisher once the core's own tries are spent.

mod core_peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_peer::{connect, meta, peer_addr};
use ringsfu::media::{CoreSettings, MediaCore, MediaStats};
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::rtcp::xr::{self, DlrrItem, XrBlock};
use ringsfu::wire::rtcp::{self, RtcpCompound, RtcpPacket};

const PUB_SSRC: u32 = 1111;

fn server() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn rtp(seq: u16, out: &mut SrtpContext) -> Vec<u8> {
    let mut b = vec![0u8; 200];
    b[0] = 0x80;
    b[1] = 96;
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    b[8..12].copy_from_slice(&PUB_SSRC.to_be_bytes());
    let n = out.protect_rtp(&mut b, 12 + 100, 12).expect("protect");
    b.truncate(n);
    b
}

/// What the core sent to `to`, decrypted: (RTCP compounds' bytes).
fn rtcp_to(tx: &mut TxQueue, to: SocketAddr, inb: &mut SrtpContext) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(d) = tx.pop_pending(|m, b| (m.dst == to).then(|| b.to_vec())) {
        let Some(mut d) = d else { continue };
        // RTCP: second byte 192..=223 (RFC 5761).
        if d.len() > 1 && (192..=223).contains(&d[1]) {
            let n = inb.unprotect_rtcp(&mut d).expect("our RTCP decrypts");
            d.truncate(n);
            out.push(d);
        }
    }
    out
}

fn xr_blocks(compound: &[u8]) -> Vec<(u32, Vec<XrBlock<'_>>)> {
    let c = RtcpCompound::parse_relaxed(compound).expect("our RTCP frames");
    c.raw_packets()
        .filter(|p| p.header.packet_type == rtcp::packet_type::XR)
        .map(|p| {
            let x = xr::Xr::parse(p.header, p.body).expect("our XR parses");
            (x.sender_ssrc, x.blocks().collect())
        })
        .collect()
}

/// Sequence numbers NACKed in `compound`.
fn nacked(compound: &[u8]) -> Vec<u16> {
    let c = RtcpCompound::parse_relaxed(compound).expect("frames");
    c.packets()
        .filter_map(|p| match p {
            Ok(RtcpPacket::Nack(n)) => Some(n.lost().collect::<Vec<u16>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A core with a connected publisher of a NACKing video track (peer 1) and a connected
/// subscriber of it (peer 2, SSRC 5555), every queue emptied.
struct OneCore {
    core: MediaCore,
    tx: TxQueue,
    stats: Arc<MediaStats>,
    pub_out: SrtpContext,
    pub_in: SrtpContext,
    sub_out: SrtpContext,
    sub_in: SrtpContext,
}

fn one_core() -> OneCore {
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let stats = Arc::new(MediaStats::default());
    let settings = CoreSettings::default();
    let mut core = MediaCore::new(server(), server_ctx, settings, stats.clone(), Instant::now());
    let mut tx = TxQueue::new(256);
    let mut track = core_peer::video_track(PUB_SSRC);
    track.nack = true;
    core_peer::add_publisher(&mut core, Instant::now(), &mut tx, 1, client_fp, vec![track]);
    let (pub_out, pub_in) = connect(&mut core, server(), &mut tx, &client_ctx, server_fp, 1);
    let leg = vec![core_peer::video_leg(5555)];
    core_peer::add_subscriber(&mut core, Instant::now(), &mut tx, 2, 1, client_fp, leg, None);
    let (sub_out, sub_in) = connect(&mut core, server(), &mut tx, &client_ctx, server_fp, 2);
    while tx.pop_pending(|_, _| ()).is_some() {}
    OneCore { core, tx, stats, pub_out, pub_in, sub_out, sub_in }
}

#[test]
fn rrtr_answered_and_nack_retries_timed_by_the_measured_rtt() {
    let OneCore { mut core, mut tx, mut pub_out, mut pub_in, mut sub_out, mut sub_in, .. } =
        one_core();
    let t0 = Instant::now();
    let (pa, sa) = (peer_addr(1), peer_addr(2));

    // 1. The subscriber's RRTR comes back as a DLRR at once (delay 0).
    let mut b = vec![0u8; 256];
    let n = xr::write_rrtr(&mut b, 0x77, 0x0000_0005_8000_0000).unwrap();
    let n = sub_out.protect_rtcp(&mut b, n).unwrap();
    core.handle_datagram(t0, meta(sa, server(), n), &mut b[..n], &mut tx);
    let answers = rtcp_to(&mut tx, sa, &mut sub_in);
    let dlrr: Vec<DlrrItem> = answers
        .iter()
        .flat_map(|c| xr_blocks(c))
        .flat_map(|(_, blocks)| blocks)
        .filter_map(|b| match b {
            XrBlock::Dlrr(body) => Some(xr::dlrr_items(body).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(dlrr, vec![DlrrItem { ssrc: 0x77, last_rr: 0x0005_8000, delay: 0 }]);

    // 2. Publisher RTP with a gap; NACK times of one missing packet, and the core's RRTR.
    let mut now = t0;
    let mut nacks: Vec<(u16, Duration)> = Vec::new();
    let mut rrtr: Option<(u32, u64, Instant)> = None;
    let mut step = |core: &mut MediaCore,
                    tx: &mut TxQueue,
                    now: Instant,
                    nacks: &mut Vec<(u16, Duration)>,
                    rrtr: &mut Option<(u32, u64, Instant)>| {
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, tx);
        }
        for c in rtcp_to(tx, pa, &mut pub_in) {
            for s in nacked(&c) {
                nacks.push((s, now - t0));
            }
            for (sender, blocks) in xr_blocks(&c) {
                for b in blocks {
                    if let XrBlock::Rrtr { ntp } = b
                        && rrtr.is_none()
                    {
                        *rrtr = Some((sender, ntp, now));
                    }
                }
            }
        }
    };
    for seq in [1u16, 2, 5] {
        let mut p = rtp(seq, &mut pub_out);
        let len = p.len();
        core.handle_datagram(now, meta(pa, server(), len), &mut p, &mut tx);
    }
    // 1.2 s of timer runs, 5 ms apart.
    for _ in 0..240 {
        step(&mut core, &mut tx, now, &mut nacks, &mut rrtr);
        now += Duration::from_millis(5);
    }
    let first: Vec<Duration> = nacks.iter().filter(|(s, _)| *s == 3).map(|(_, t)| *t).collect();
    assert_eq!(first.len(), 3, "three NACKs of a missing packet before any RTT: {nacks:?}");
    assert!(first[1] - first[0] <= Duration::from_millis(60), "fixed ~40 ms retry: {first:?}");
    let (server_ssrc, ntp, sent_at) = rrtr.expect("an RRTR in the receiver report");

    // 3. The publisher's DLRR: held 100 ms, back 300 ms after the RRTR left: RTT 200 ms.
    let answer_at = sent_at + Duration::from_millis(300);
    while now < answer_at {
        step(&mut core, &mut tx, now, &mut nacks, &mut rrtr);
        now += Duration::from_millis(5);
    }
    let item = DlrrItem {
        ssrc: server_ssrc,
        last_rr: xr::compact_ntp(ntp),
        delay: xr::to_compact(Duration::from_millis(100)),
    };
    let n = xr::write_dlrr(&mut b, PUB_SSRC, &[item]).unwrap();
    let n = pub_out.protect_rtcp(&mut b, n).unwrap();
    core.handle_datagram(answer_at, meta(pa, server(), n), &mut b[..n], &mut tx);

    // 4. A new gap: its NACKs now 255 ms apart (one RTT, a quarter and 5 ms).
    nacks.clear();
    for seq in [6u16, 9] {
        let mut p = rtp(seq, &mut pub_out);
        let len = p.len();
        core.handle_datagram(now, meta(pa, server(), len), &mut p, &mut tx);
    }
    for _ in 0..200 {
        step(&mut core, &mut tx, now, &mut nacks, &mut rrtr);
        now += Duration::from_millis(5);
    }
    let again: Vec<Duration> = nacks.iter().filter(|(s, _)| *s == 7).map(|(_, t)| *t).collect();
    assert!(again.len() >= 2, "{nacks:?}");
    let gap = again[1] - again[0];
    assert!(
        gap >= Duration::from_millis(250) && gap <= Duration::from_millis(300),
        "retry after the measured RTT, not 40 ms: {again:?}"
    );
}

/// What the core sent: the sequence numbers NACKed to the publisher (`pa`, decrypted with
/// `pub_in`) and those of the RTP packets sent to the subscriber (`sa`; SRTP leaves the
/// header in the clear).
struct Sent {
    nacked: Vec<u16>,
    forwarded: Vec<u16>,
}

fn sent(tx: &mut TxQueue, (pa, pub_in): (SocketAddr, &mut SrtpContext), sa: SocketAddr) -> Sent {
    let mut out = Sent { nacked: Vec::new(), forwarded: Vec::new() };
    while let Some((dst, mut d)) = tx.pop_pending(|m, b| (m.dst, b.to_vec())) {
        let rtcp = d.len() > 1 && (192..=223).contains(&d[1]);
        if dst == pa && rtcp {
            let n = pub_in.unprotect_rtcp(&mut d).expect("our RTCP decrypts");
            out.nacked.extend(nacked(&d[..n]));
        } else if dst == sa && !rtcp && d.len() >= 12 {
            out.forwarded.push(u16::from_be_bytes([d[2], d[3]]));
        }
    }
    out
}

/// A packet lost on the publisher's link whose NACKs (three, 40 ms apart) brought nothing is
/// asked for again when a subscriber NACKs it: once per subscriber NACK, no sooner than a
/// retry interval after the last, and not once ringsfu has forgotten it (1 s after its last
/// NACK). A retransmission that comes after ringsfu's own tries is still forwarded.
#[test]
fn a_subscribers_nack_renews_the_nack_of_a_packet_never_received() {
    let OneCore { mut core, mut tx, stats, mut pub_out, mut pub_in, mut sub_out, .. } = one_core();
    let (pa, sa) = (peer_addr(1), peer_addr(2));
    let mut now = Instant::now();
    // One step: publisher packets `rtp`, then the subscriber's NACK of `nack` (its numbers),
    // then the timer if due; what the core sent.
    let mut step = |core: &mut MediaCore, now: Instant, rtp_seqs: &[u16], nack: &[u16]| {
        for &seq in rtp_seqs {
            let mut p = rtp(seq, &mut pub_out);
            let len = p.len();
            core.handle_datagram(now, meta(pa, server(), len), &mut p, &mut tx);
        }
        if !nack.is_empty() {
            let mut b = vec![0u8; 256];
            let n = rtcp::nack::write_lost(&mut b, 0x77, 5555, nack.iter().copied()).unwrap();
            let n = sub_out.protect_rtcp(&mut b, n).unwrap();
            core.handle_datagram(now, meta(sa, server(), n), &mut b[..n], &mut tx);
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, &mut tx);
        }
        sent(&mut tx, (pa, &mut pub_in), sa)
    };
    // Packets 3 and 4 lost on the publisher's link.
    let first = step(&mut core, now, &[1, 2, 5], &[]);
    assert_eq!(first.forwarded.len(), 3, "{:?}", first.forwarded);
    // The subscriber's numbers for the publisher's 3 and 4.
    let (out3, out4) = (first.forwarded[1].wrapping_add(1), first.forwarded[1].wrapping_add(2));
    // ringsfu's own three NACKs of each (40 ms apart: no RTT measured), then nothing.
    let mut to_publisher = first.nacked;
    for _ in 0..60 {
        now += Duration::from_millis(5);
        to_publisher.extend(step(&mut core, now, &[], &[]).nacked);
    }
    assert_eq!(to_publisher.iter().filter(|&&s| s == 3).count(), 3, "{to_publisher:?}");
    assert_eq!(to_publisher.iter().filter(|&&s| s == 4).count(), 3, "{to_publisher:?}");

    // 300 ms after the loss, the subscriber asks for 3: ringsfu asks the publisher again.
    assert_eq!(step(&mut core, now, &[], &[out3]).nacked, [3]);
    assert_eq!(stats.snapshot().nacks_renewed, 1);
    // Asked again at once (another subscriber, or a repeat): not before a retry interval.
    assert_eq!(step(&mut core, now, &[], &[out3]).nacked, Vec::<u16>::new());
    now += Duration::from_millis(40);
    assert_eq!(step(&mut core, now, &[], &[out3, out4]).nacked, [3, 4]);
    assert_eq!(stats.snapshot().nacks_renewed, 3);

    // The publisher's retransmission of 3 comes now: forwarded as the subscriber's `out3`.
    assert_eq!(step(&mut core, now, &[3], &[]).forwarded, [out3]);
    // Once it arrived, a NACK of it is answered from the ring, not renewed.
    now += Duration::from_millis(50);
    let again = step(&mut core, now, &[], &[out3]);
    assert_eq!((again.nacked, again.forwarded), (vec![], vec![out3]));

    // More than a second after its last NACK, 4 is forgotten: the subscriber's NACK of it is
    // not passed on.
    now += Duration::from_millis(1100);
    step(&mut core, now, &[6], &[]);
    assert_eq!(step(&mut core, now, &[], &[out4]).nacked, Vec::<u16>::new());
    assert_eq!(stats.snapshot().nacks_renewed, 3);
}
