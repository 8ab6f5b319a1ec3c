use super::*;

fn t0() -> Instant {
    Instant::now()
}

#[test]
fn seq_extension_handles_wrap_and_reorder() {
    let mut e = SeqExtender::default();
    let a = e.extend(65534);
    assert_eq!(e.extend(65535), a + 1);
    assert_eq!(e.extend(0), a + 2, "wraps forward");
    assert_eq!(e.extend(65535), a + 1, "late packet maps back before the wrap");
    assert_eq!(e.highest(), Some(a + 2));
    assert_eq!(e.extend(100), a + 102);
}

#[test]
fn rewriter_worked_example_from_the_module_docs() {
    let now = t0();
    let mut r = StreamRewriter::new(0xAAAA, 90_000, 4990, 90000 - 10 * 3000);
    // First source: 11 packets, seq 100.., ts step 3000.
    let mut last = None;
    for i in 0..11u16 {
        last = r.rewrite(
            now + Duration::from_millis(33 * i as u64),
            1,
            100 + i,
            5000 + 3000 * i as u32,
        );
    }
    let last = last.unwrap();
    assert_eq!((last.seq, last.ts), (5000, 90000));
    assert_eq!(last.ssrc, 0xAAAA);
    // The publisher restarts 40 ms later with new bases.
    let at = now + Duration::from_millis(330 + 40);
    let first = r.rewrite(at, 2, 17, 123456).unwrap();
    assert_eq!(first.seq, 5001);
    assert_eq!(first.ts, 90000 + 40 * 90);
    let next = r.rewrite(at + Duration::from_millis(33), 2, 18, 123456 + 3000).unwrap();
    assert_eq!((next.seq, next.ts), (5002, 90000 + 3600 + 3000));
    assert_eq!(r.source_seq(5002), 18);
}

#[test]
fn rewriter_first_packet_uses_the_initial_values_and_wraps() {
    let now = t0();
    let mut r = StreamRewriter::new(7, 48_000, 65535, u32::MAX);
    let a = r.rewrite(now, 9, 1000, 0).unwrap();
    assert_eq!((a.seq, a.ts), (65535, u32::MAX));
    let b = r.rewrite(now, 9, 1001, 960).unwrap();
    assert_eq!((b.seq, b.ts), (0, 959));
    // Reordered older packet keeps its relative position and does not move the anchor.
    let c = r.rewrite(now, 9, 999, 0u32.wrapping_sub(960)).unwrap();
    assert_eq!(c.seq, 65534);
    let d = r.rewrite(now, 9, 1002, 1920).unwrap();
    assert_eq!(d.seq, 1);
}

#[test]
fn ring_keeps_recent_packets_only() {
    let now = t0();
    let mut ring = RtxRing::new(4, 32);
    for s in 0..6u16 {
        assert!(ring.store(now, 1, s, &[s as u8; 12]));
    }
    assert_eq!(ring.get(now, 1, 5, Duration::from_secs(1)), Some(&[5u8; 12][..]));
    assert_eq!(ring.get(now, 1, 1, Duration::from_secs(1)), None, "overwritten");
    assert_eq!(ring.get(now, 2, 5, Duration::from_secs(1)), None, "other ssrc");
    assert_eq!(
        ring.get(now + Duration::from_secs(2), 1, 5, Duration::from_secs(1)),
        None,
        "too old"
    );
    assert!(!ring.store(now, 1, 9, &[0; 33]), "larger than a slot");
}

#[test]
fn keyframe_requests_are_throttled() {
    let now = t0();
    let mut k = KeyframeLimiter::new(Duration::from_millis(500));
    assert!(k.allow(now));
    assert!(!k.allow(now + Duration::from_millis(100)));
    assert!(!k.allow(now + Duration::from_millis(499)));
    assert!(k.allow(now + Duration::from_millis(500)));
    assert_eq!(k.suppressed, 2);
    assert_eq!(k.next_fir_seq(), 1);
    assert_eq!(k.next_fir_seq(), 2);
}

fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload");
    p
}

fn sp(
    out_ssrc: u32,
    pt: u8,
    rtx: Option<(u8, u32)>,
    initial_seq: u16,
    initial_ts: u32,
) -> SubscribeParams {
    SubscribeParams { out_ssrc, pt, rtx, initial_seq, initial_ts }
}

#[test]
fn fanout_nack_and_rtx() {
    let now = t0();
    let mut router = Router::new(RouterConfig::default());
    let video = router.add_track(90_000, 0x1111, true);
    router.subscribe(video, LegId(1), sp(0xA1, 96, None, 1000, 50_000)).unwrap();
    router.subscribe(video, LegId(2), sp(0xA2, 100, Some((101, 0xB2)), 7, 0)).unwrap();
    assert_eq!(
        router.subscribe(video, LegId(2), sp(1, 1, None, 0, 0)),
        Err(RouterError::AlreadySubscribed)
    );
    let mut out = Vec::new();
    for i in 0..5u16 {
        let p = packet(300 + i, 9000 + 3000 * i as u32, 0x1111);
        let n = router
            .on_publisher_rtp(
                now,
                video,
                RtpFields { ssrc: 0x1111, seq: 300 + i, ts: 9000 + 3000 * i as u32 },
                &p,
                |f| out.push(f),
            )
            .unwrap();
        assert_eq!(n, 2);
    }
    assert_eq!(out.len(), 10);
    assert_eq!(out[0], Forward { leg: LegId(1), ssrc: 0xA1, seq: 1000, ts: 50_000, pt: 96 });
    assert_eq!(out[1], Forward { leg: LegId(2), ssrc: 0xA2, seq: 7, ts: 0, pt: 100 });
    assert_eq!(out[9].seq, 11);

    // Leg 1 lost its seq 1002 (publisher 302): retransmitted with the same SSRC and seq.
    let mut rtx = Vec::new();
    let mut not_stored = Vec::new();
    let missing = router
        .on_nack(
            now,
            video,
            LegId(1),
            [1002, 999],
            |r| rtx.push((r.ssrc, r.seq, r.ts, r.pt, r.osn, r.packet.to_vec())),
            |seq| not_stored.push(seq),
        )
        .unwrap();
    assert_eq!(missing, 1, "999 was never sent");
    // Leg 1's 999 is the publisher's 299 (its offset is 700).
    assert_eq!(not_stored, [299]);
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].0, 0xA1);
    assert_eq!(rtx[0].1, 1002);
    assert_eq!(rtx[0].2, 50_000 + 6000);
    assert_eq!(rtx[0].5, packet(302, 15000, 0x1111));
    // Leg 2 negotiated RTX: RTX SSRC, own sequence space, original seq carried as OSN.
    rtx.clear();
    router
        .on_nack(
            now,
            video,
            LegId(2),
            [9, 10],
            |r| rtx.push((r.ssrc, r.seq, r.ts, r.pt, r.osn, vec![])),
            |_| {},
        )
        .unwrap();
    assert_eq!(rtx.len(), 2);
    assert_eq!((rtx[0].0, rtx[0].3, rtx[0].4), (0xB2, 101, Some(9)));
    assert_eq!(rtx[1].1, rtx[0].1.wrapping_add(1));
    assert_eq!(
        router.on_nack(now, video, LegId(9), [1], |_| {}, |_| {}),
        Err(RouterError::NotSubscribed)
    );

    // Keyframe requests from both legs: one reaches the publisher.
    assert!(router.on_keyframe_request(now, video).unwrap());
    assert!(!router.on_keyframe_request(now, video).unwrap());

    router.unsubscribe(video, LegId(1)).unwrap();
    assert_eq!(router.subscribers(video).count(), 1);
    assert_eq!(router.remove_track(video), vec![LegId(2)]);
    assert!(router.track(video).is_none());
    let again = router.add_track(48_000, 5, false);
    assert_eq!(again, video, "slots are reused");
}
