use super::*;

const PUBLISH: &str = include_str!("../../tests/data/sdp/chrome156_publish_offer.sdp");
const SUBSCRIBE: &str = include_str!("../../tests/data/sdp/chrome156_subscribe_offer.sdp");

fn local() -> LocalTransport {
    LocalTransport {
        ice_ufrag: "rsfu".into(),
        ice_pwd: "0123456789abcdef01234567".into(),
        fingerprint_sha256: (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":"),
        candidates: vec!["127.0.0.1:40000".parse().unwrap(), "[::1]:40000".parse().unwrap()],
        session_id: 42,
        session_version: 2,
    }
}

#[test]
fn parses_a_chrome_publish_offer() {
    let o = parse(PUBLISH).unwrap();
    assert_eq!(o.ice_ufrag, "8yQv");
    assert_eq!(o.fingerprint.len(), 32);
    assert_eq!(o.setup, Setup::ActPass);
    assert_eq!(o.bundle, vec!["0", "1"]);
    assert_eq!(o.media.len(), 2);
    let (a, v) = (&o.media[0], &o.media[1]);
    assert_eq!(
        (a.kind, a.direction, a.mid.as_str()),
        (Some(MediaKind::Audio), Direction::SendOnly, "0")
    );
    assert_eq!(v.kind, Some(MediaKind::Video));
    assert!(a.rtcp_mux && a.rtcp_rsize);
    let opus = a.codecs.iter().find(|c| c.is("opus")).unwrap();
    assert_eq!((opus.pt, opus.clock_rate, opus.channels), (111, 48000, Some(2)));
    assert_eq!(opus.fmtp, "minptime=10;useinbandfec=1");
    let vp8 = v.codecs.iter().find(|c| c.is("VP8")).unwrap();
    assert_eq!(vp8.rtx_pt, Some(97));
    assert!(vp8.rtcp_fb.iter().any(|f| f == "nack pli"));
    assert_eq!(v.ssrcs.len(), 2, "primary and RTX");
    assert_eq!(v.rtx_pairs.len(), 1);
    assert!(o.candidates.iter().any(|c| c.addr.to_string() == "127.0.0.1:49393" && c.udp));
}

#[test]
fn publish_answer_prefers_vp8_and_roundtrips() {
    let o = parse(PUBLISH).unwrap();
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    assert_eq!(n.media.len(), 2);
    let v = &n.media[1];
    assert!(v.codec.is("VP8"));
    assert_eq!(v.rtx_pt, Some(97));
    assert_eq!(v.ssrc, o.media[1].ssrcs.first().copied());
    assert_eq!(v.rtx_ssrc, Some(o.media[1].rtx_pairs[0].1));
    assert!(v.nack && v.pli && v.transport_cc);
    assert_eq!(v.ext.twcc, 3);
    assert_eq!(v.ext.mid, 4);
    assert_eq!(n.media[0].ext.audio_level, 1);
    // The answer is itself valid SDP with what we meant to say.
    let back = parse(&n.sdp).unwrap();
    assert_eq!(back.setup, Setup::Passive);
    assert_eq!(back.ice_ufrag, "rsfu");
    assert_eq!(back.media[1].direction, Direction::RecvOnly);
    assert_eq!(back.media[1].codecs.len(), 1);
    assert!(n.sdp.contains("a=ice-lite\r\n"));
    assert!(n.sdp.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"));
    assert!(n.sdp.contains("a=group:BUNDLE 0 1\r\n"));
    assert!(!n.sdp.contains("video-timing"), "unsupported extensions are not answered");
}

#[test]
fn forced_codecs() {
    let o = parse(PUBLISH).unwrap();
    for (policy, name) in [
        (VideoCodecPolicy::H264, "H264"),
        (VideoCodecPolicy::Vp9, "VP9"),
        (VideoCodecPolicy::Av1, "AV1"),
        (VideoCodecPolicy::None, "VP8"),
    ] {
        let n = answer_publish(&o, &local(), policy).unwrap();
        assert!(n.media[1].codec.is(name), "{policy:?} -> {}", n.media[1].codec.name);
    }
    let h = answer_publish(&o, &local(), VideoCodecPolicy::H264).unwrap();
    assert_eq!(h.media[1].codec.fmtp_param("packetization-mode"), Some("1"));
    assert!(h.media[1].codec.fmtp_param("profile-level-id").unwrap().starts_with("42e0"));
    // A forced codec the browser does not offer is refused with a clear reason.
    let no_h264: String =
        PUBLISH.lines().filter(|l| !l.contains("H264")).map(|l| format!("{l}\r\n")).collect();
    let err =
        answer_publish(&parse(&no_h264).unwrap(), &local(), VideoCodecPolicy::H264).unwrap_err();
    assert!(err.to_string().contains("H264"), "{err}");
}

fn tracks_from(n: &Negotiated) -> Vec<OutgoingTrack> {
    n.media
        .iter()
        .enumerate()
        .map(|(i, m)| OutgoingTrack {
            kind: m.kind,
            codec: m.codec.clone(),
            ssrc: 1000 + i as u32,
            rtx_ssrc: 2000 + i as u32,
            cname: "ringsfu".into(),
            stream_id: "str_CAM_Abcd_con_X".into(),
            track_id: format!("{}-{i}", m.kind.as_str()),
        })
        .collect()
}

#[test]
fn subscribe_answer_maps_tracks_onto_the_subscriber_offer() {
    let published =
        answer_publish(&parse(PUBLISH).unwrap(), &local(), VideoCodecPolicy::H264).unwrap();
    let tracks = tracks_from(&published);
    let sub = parse(SUBSCRIBE).unwrap();
    assert!(sub.media.iter().all(|m| m.direction == Direction::RecvOnly));
    let n = answer_subscribe(&sub, &local(), &tracks).unwrap();
    assert_eq!(n.media.len(), 2);
    let v = &n.media[1];
    assert!(v.codec.same_format(&tracks[1].codec));
    assert_eq!(v.ssrc, Some(1001));
    assert_eq!(v.rtx_ssrc, Some(2001));
    let back = parse(&n.sdp).unwrap();
    assert_eq!(back.media[1].direction, Direction::SendOnly);
    assert_eq!(back.media[1].ssrcs, vec![1001, 2001]);
    assert_eq!(back.media[1].rtx_pairs, vec![(1001, 2001)]);
    assert!(n.sdp.contains("a=msid:str_CAM_Abcd_con_X video-1\r\n"));
}

#[test]
fn server_offer_and_answer() {
    let published =
        answer_publish(&parse(PUBLISH).unwrap(), &local(), VideoCodecPolicy::Vp8).unwrap();
    let offer = offer_subscribe(&local(), &tracks_from(&published));
    let parsed = parse(&offer.sdp).unwrap();
    assert_eq!(parsed.setup, Setup::ActPass);
    assert_eq!(parsed.media.len(), 2);
    // A browser-like answer: active, recvonly, same pts.
    let answer = offer
        .sdp
        .replace("a=setup:actpass", "a=setup:active")
        .replace("a=sendonly", "a=recvonly")
        .replace("a=ice-lite\r\n", "");
    let agreed = accept_subscribe_answer(&offer, &parse(&answer).unwrap()).unwrap();
    assert_eq!(agreed.len(), 2);
    assert_eq!(agreed[1].rtx_pt, Some(97));
    let passive =
        offer.sdp.replace("a=setup:actpass", "a=setup:passive").replace("a=sendonly", "a=recvonly");
    assert_eq!(accept_subscribe_answer(&offer, &parse(&passive).unwrap()).unwrap().len(), 2);
    let actpass = offer.sdp.replace("a=sendonly", "a=recvonly");
    assert!(accept_subscribe_answer(&offer, &parse(&actpass).unwrap()).is_err());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for bad in ["", "v=0", "garbage\r\nm=audio x", &PUBLISH[..PUBLISH.len() / 2]] {
        let _ = parse(bad)
            .and_then(|o| answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred));
    }
    let no_fp: String = PUBLISH
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert_eq!(parse(&no_fp).unwrap_err(), SdpError::Missing("a=fingerprint:sha-256"));
    // An audio or video m-line without a mid (found by the `sdp` fuzz target): refused, not
    // answered with an empty `a=mid:`.
    let no_mid: String =
        PUBLISH.lines().filter(|l| !l.starts_with("a=mid:")).map(|l| format!("{l}\r\n")).collect();
    let offer = parse(&no_mid).unwrap();
    assert_eq!(
        answer_publish(&offer, &local(), VideoCodecPolicy::Vp8).unwrap_err(),
        SdpError::Missing("a=mid")
    );
    // An RTX payload type named only by `a=fmtp` (no `a=rtpmap ... rtx`), here one above 127
    // (found by the `sdp` fuzz target): no RTX, rather than an answer with `a=rtpmap:181`.
    let vp8 = parse(PUBLISH).unwrap().media[1].codecs.iter().find(|c| c.name == "VP8").unwrap().pt;
    let rtx_line = |l: &str| l.starts_with("a=rtpmap:") && l.contains(" rtx/");
    let fmtp_only: String = PUBLISH
        .lines()
        .filter(|l| !rtx_line(l))
        .map(|l| format!("{l}\r\n"))
        .chain(std::iter::once(format!("a=fmtp:181 apt={vp8}\r\n")))
        .collect();
    let offer = parse(&fmtp_only).unwrap();
    assert!(offer.media[1].codecs.iter().all(|c| c.rtx_pt.is_none()), "{:?}", offer.media[1]);
    let answer = answer_publish(&offer, &local(), VideoCodecPolicy::Vp8).unwrap();
    assert!(!answer.sdp.contains(" rtx/"), "{}", answer.sdp);
    let passive = PUBLISH.replace("a=setup:actpass", "a=setup:passive");
    assert!(answer_publish(&parse(&passive).unwrap(), &local(), VideoCodecPolicy::Vp8).is_err());
    // Every prefix of a real offer: no panic.
    for cut in (0..PUBLISH.len()).step_by(7) {
        if PUBLISH.is_char_boundary(cut) {
            let _ = parse(&PUBLISH[..cut]);
        }
    }
}

#[test]
fn trickled_candidates() {
    let c = parse_candidate("candidate:1547411195 1 udp 2122194687 127.0.0.1 49393 typ host generation 0 ufrag 8yQv network-id 3").unwrap();
    assert_eq!(c.addr.to_string(), "127.0.0.1:49393");
    assert!(parse_candidate("candidate:1 1 udp 1 abc.local 9 typ host").is_err());
    assert!(parse_candidate("nonsense").is_err());
}

/// The Chromium 156 publish offer above as Chromium writes it for a video transceiver added
/// with three `sendEncodings` with rids (openvidu-browser 2.32 with `mediaServer: "mediasoup"`):
/// no `a=ssrc` lines for video, `a=rid:<id> send` per encoding, `a=simulcast:send`, and the
/// dependency descriptor offered. Written from the capture by those rules, not captured.
const SIMULCAST: &str = include_str!("../../tests/data/sdp/chrome156_simulcast_publish_offer.sdp");

fn ids(v: &[SimulcastStream]) -> Vec<Vec<&str>> {
    v.iter().map(|s| s.rids.iter().map(String::as_str).collect()).collect()
}

#[test]
fn parses_a_chrome_simulcast_offer() {
    let o = parse(SIMULCAST).unwrap();
    let v = &o.media[1];
    assert!(v.ssrcs.is_empty());
    assert_eq!(v.rids, vec!["r0", "r1", "r2"]);
    assert!(v.rid_specs.iter().all(|r| r.send && r.pts.is_empty() && r.max_width.is_none()));
    let sc = v.simulcast.as_ref().unwrap();
    assert_eq!(ids(&sc.send), vec![vec!["r0"], vec!["r1"], vec!["r2"]]);
    assert!(sc.recv.is_empty() && sc.send.iter().all(|s| !s.paused));
}

#[test]
fn simulcast_answer_receives_every_layer() {
    let o = parse(SIMULCAST).unwrap();
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    let v = &n.media[1];
    assert!(v.codec.is("VP8"));
    assert_eq!(ids(&v.simulcast), vec![vec!["r0"], vec!["r1"], vec!["r2"]]);
    assert_eq!(v.rids, vec!["r0", "r1", "r2"]);
    assert_eq!((v.ext.rid, v.ext.repaired_rid, v.ext.mid), (10, 11, 4));
    assert_eq!(v.ext.dependency_descriptor, 9);
    assert_eq!((v.ssrc, v.rtx_ssrc), (None, None));
    assert!(n.sdp.contains("a=rid:r0 recv\r\na=rid:r1 recv\r\na=rid:r2 recv\r\n"));
    assert!(n.sdp.contains("a=simulcast:recv r0;r1;r2\r\n"));
    assert!(n.sdp.contains(ext::DEPENDENCY_DESCRIPTOR));
    // Audio gets no simulcast lines, and the answer parses back with them.
    assert!(n.media[0].simulcast.is_empty());
    let back = parse(&n.sdp).unwrap();
    let bv = &back.media[1];
    assert_eq!(ids(&bv.simulcast.as_ref().unwrap().recv), vec![vec!["r0"], vec!["r1"], vec!["r2"]]);
    assert!(bv.rid_specs.iter().all(|r| !r.send));
    assert_eq!(back.media[0].simulcast, None);
}

#[test]
fn simulcast_alternatives_paused_and_restrictions() {
    let offer = SIMULCAST.replace(
        "a=rid:r0 send\r\na=rid:r1 send\r\na=rid:r2 send\r\na=simulcast:send r0;r1;r2",
        "a=rid:r0 send pt=96;max-width=320;max-height=180\r\na=rid:r1 send pt=98\r\n\
             a=rid:r2 send max-width=1280;max-fps=30\r\na=rid:r3 send\r\n\
             a=simulcast:send r0;r1;~r2,r3",
    );
    let o = parse(&offer).unwrap();
    let v = &o.media[1];
    let r0 = &v.rid_specs[0];
    assert_eq!(
        (r0.pts.as_slice(), r0.max_width, r0.max_height),
        (&[96u8][..], Some(320), Some(180))
    );
    assert_eq!(v.rid_specs[2].max_fps, Some(30));
    let sc = v.simulcast.as_ref().unwrap();
    assert_eq!(ids(&sc.send), vec![vec!["r0"], vec!["r1"], vec!["r2", "r3"]]);
    assert!(sc.send[2].paused && !sc.send[0].paused);
    // VP8 (96) chosen: r1 is VP9-only, so its stream goes. (A stream naming an undefined RID
    // does not get this far: webrtc-sdp refuses the offer.)
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    let m = &n.media[1];
    assert_eq!(ids(&m.simulcast), vec![vec!["r0"], vec!["r2", "r3"]]);
    assert_eq!(m.rids, vec!["r0", "r2", "r3"]);
    assert_eq!(m.rid_specs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r0", "r2", "r3"]);
    assert!(n.sdp.contains("a=simulcast:recv r0;~r2,r3\r\n"));
    assert!(!n.sdp.contains("a=rid:r1"));
    assert!(parse(&n.sdp).is_ok());
}

#[test]
fn legacy_ssrc_group_sim() {
    let offer = PUBLISH.replace(
        "a=ssrc-group:FID 450690666 1216971044\r\n",
        "a=ssrc-group:SIM 450690666 450690667 450690668\r\n\
         a=ssrc-group:FID 450690666 1216971044\r\n\
         a=ssrc-group:FID 450690667 1216971045\r\n\
         a=ssrc-group:FID 450690668 1216971046\r\n\
         a=ssrc:450690667 cname:xe3pNa/F12E4oClJ\r\n\
         a=ssrc:450690668 cname:xe3pNa/F12E4oClJ\r\n\
         a=ssrc:1216971045 cname:xe3pNa/F12E4oClJ\r\n\
         a=ssrc:1216971046 cname:xe3pNa/F12E4oClJ\r\n",
    );
    let o = parse(&offer).unwrap();
    assert_eq!(o.media[1].sim_ssrcs, vec![450690666, 450690667, 450690668]);
    assert_eq!(o.media[1].rtx_pairs.len(), 3);
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    assert_eq!(n.media[1].sim_ssrcs, vec![450690666, 450690667, 450690668]);
    assert_eq!(n.media[1].ssrc, Some(450690666));
    assert!(n.media[1].simulcast.is_empty());
    assert!(!n.sdp.contains("a=simulcast"));
}

#[test]
fn rtcp_xr_receiver_rtt_is_negotiated() {
    // Chromium's offers carry `a=rtcp-xr:rcvr-rtt=all` on both m-lines.
    let o = parse(PUBLISH).unwrap();
    assert!(o.media.iter().all(|m| m.rcvr_rtt));
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    assert!(n.media.iter().all(|m| m.rcvr_rtt));
    assert_eq!(n.sdp.matches("a=rtcp-xr:rcvr-rtt=all\r\n").count(), 2, "{}", n.sdp);
    assert!(parse(&n.sdp).unwrap().media.iter().all(|m| m.rcvr_rtt), "our answer reads back");
    // An offer without it gets an answer without it.
    let plain: String =
        PUBLISH.split_inclusive('\n').filter(|l| !l.starts_with("a=rtcp-xr")).collect();
    let o = parse(&plain).unwrap();
    assert!(o.media.iter().all(|m| !m.rcvr_rtt));
    let n = answer_publish(&o, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    assert!(!n.sdp.contains("a=rtcp-xr") && n.media.iter().all(|m| !m.rcvr_rtt));
    // The subscriber side: a client offer and a server offer both agree to it.
    let s = parse(SUBSCRIBE).unwrap();
    let pubn =
        answer_publish(&parse(PUBLISH).unwrap(), &local(), VideoCodecPolicy::MediaServerPreferred)
            .unwrap();
    let a = answer_subscribe(&s, &local(), &tracks_from(&pubn)).unwrap();
    assert!(a.sdp.contains("a=rtcp-xr:rcvr-rtt=all\r\n"));
    let offer = offer_subscribe(&local(), &tracks_from(&pubn));
    assert!(offer.sdp.contains("a=rtcp-xr:rcvr-rtt=all\r\n"));
}

/// The Dependency Descriptor reaches subscribers of AV1 only, and only with
/// `a=extmap-allow-mixed` (its structure needs two-byte elements): in ringsfu's offers, in its
/// answers to a subscriber's offer, and in what a subscriber's answer keeps.
#[test]
fn dependency_descriptor_for_av1_subscribers_with_allow_mixed() {
    let dd_line = format!("a=extmap:9 {}\r\n", ext::DEPENDENCY_DESCRIPTOR);
    let with_dd = |sdp: &str| sdp.replacen("a=extmap:14 ", &format!("{dd_line}a=extmap:14 "), 1);
    let publish = parse(&with_dd(PUBLISH)).unwrap();
    assert!(publish.extmap_allow_mixed);
    let av1 = answer_publish(&publish, &local(), VideoCodecPolicy::Av1).unwrap();
    assert!(av1.media[1].codec.is("AV1"));
    assert_eq!(av1.media[1].ext.dependency_descriptor, 9);
    assert!(av1.sdp.contains("a=extmap-allow-mixed\r\n"), "echoed to the publisher");
    let vp8 = answer_publish(&publish, &local(), VideoCodecPolicy::Vp8).unwrap();

    // Server offers: allow-mixed always, the descriptor on an AV1 m-line only.
    let offer = offer_subscribe(&local(), &tracks_from(&av1));
    assert!(offer.sdp.contains("a=extmap-allow-mixed\r\n"));
    assert_eq!(offer.media[1].ext.dependency_descriptor, DD_OFFER_ID);
    assert_eq!(offer.media[0].ext.dependency_descriptor, 0);
    let back = parse(&offer.sdp).unwrap();
    assert!(back.extmap_allow_mixed);
    assert!(back.media[1].extmaps.iter().any(|e| e.uri == ext::DEPENDENCY_DESCRIPTOR));
    let offer_vp8 = offer_subscribe(&local(), &tracks_from(&vp8));
    assert_eq!(offer_vp8.media[1].ext.dependency_descriptor, 0);
    assert!(!offer_vp8.sdp.contains(ext::DEPENDENCY_DESCRIPTOR));
    // A browser's answer: kept with allow-mixed, dropped without it.
    let answer = |mixed: bool| {
        let mut s = offer.sdp.replace("a=setup:actpass", "a=setup:active");
        s = s.replace("a=sendonly", "a=recvonly").replace("a=ice-lite\r\n", "");
        if !mixed {
            s = s.replace("a=extmap-allow-mixed\r\n", "");
        }
        parse(&s).unwrap()
    };
    let kept = accept_subscribe_answer(&offer, &answer(true)).unwrap();
    assert_eq!(kept[1].ext.dependency_descriptor, DD_OFFER_ID);
    let dropped = accept_subscribe_answer(&offer, &answer(false)).unwrap();
    assert_eq!(dropped[1].ext.dependency_descriptor, 0);

    // Answers to a subscriber's offer: the same rules.
    let sub = with_dd(SUBSCRIBE);
    let a = answer_subscribe(&parse(&sub).unwrap(), &local(), &tracks_from(&av1)).unwrap();
    assert_eq!(a.media[1].ext.dependency_descriptor, 9);
    assert!(
        a.sdp.contains("a=extmap-allow-mixed\r\n") && a.sdp.contains(ext::DEPENDENCY_DESCRIPTOR)
    );
    let plain = sub.replace("a=extmap-allow-mixed\r\n", "");
    let a = answer_subscribe(&parse(&plain).unwrap(), &local(), &tracks_from(&av1)).unwrap();
    assert_eq!(a.media[1].ext.dependency_descriptor, 0);
    assert!(!a.sdp.contains("allow-mixed") && !a.sdp.contains(ext::DEPENDENCY_DESCRIPTOR));
    let a = answer_subscribe(&parse(&sub).unwrap(), &local(), &tracks_from(&vp8)).unwrap();
    assert_eq!(a.media[1].ext.dependency_descriptor, 0);
}

/// An m-line webrtc-sdp skips (an unknown transport) would shift every later section's own
/// lines (formats, fmtp, rtcp-xr) onto the section before it: refused instead (found by the
/// `sdp` fuzz target: the answer echoed another section's formats and did not parse).
#[test]
fn an_m_line_the_parser_skips_is_refused() {
    let video = PUBLISH.find("m=video").unwrap();
    let odd = "m=video 9 UDP/FOO/BAR 96\r\na=mid:9\r\n";
    let sdp = format!("{}{odd}{}", &PUBLISH[..video], &PUBLISH[video..]);
    match parse(&sdp) {
        Err(SdpError::Syntax(e)) => assert!(e.contains("3 m-lines, of which 2"), "{e}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(parse(PUBLISH).is_ok());
}

/// Found by the `sdp` fuzz target: whitespace between `m=` and the media type (a lone CR there,
/// refused now, below; a tab here, which webrtc-sdp trims as well) made the format list start at
/// the transport, and the answer carried `UDP/TLS/RTP/SAVPF` among its payload types.
#[test]
fn an_m_line_with_whitespace_after_the_type_keeps_its_formats() {
    let plain = parse(PUBLISH).unwrap();
    let text = PUBLISH.replace("m=video ", "m=\tvideo ");
    assert_ne!(text, PUBLISH);
    let odd = parse(&text).unwrap();
    let formats =
        |s: &RemoteDescription| s.media.iter().map(|m| m.formats.clone()).collect::<Vec<_>>();
    assert_eq!(formats(&odd), formats(&plain));
    assert!(formats(&odd)[1].iter().all(|f| f.parse::<u8>().is_ok()));
    let n = answer_publish(&odd, &local(), VideoCodecPolicy::MediaServerPreferred).unwrap();
    parse(&n.sdp).unwrap();
}

#[test]
fn a_nul_or_a_lone_cr_is_refused() {
    for (from, to) in
        [("m=video ", "m=\rvideo "), ("a=rtcp-mux", "a=rtcp-mux\0"), ("\r\n", "\r\r\n")]
    {
        let text = PUBLISH.replacen(from, to, 1);
        assert_ne!(text, PUBLISH);
        match parse(&text) {
            Err(SdpError::Syntax(e)) => assert!(e.contains("a NUL or a CR"), "{e}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
    // A file with LF endings only is fine.
    parse(&PUBLISH.replace("\r\n", "\n")).unwrap();
}

/// Found by the `sdp` fuzz campaign: webrtc-sdp reads a parameter name with a leading tab as an
/// unknown parameter, so the offer parsed; ringsfu trims the parameters it keeps, and the answer's
/// `a=fmtp` then named level-asymmetry-allowed with a value that is not a number.
#[test]
fn an_fmtp_that_would_not_parse_as_written_is_refused() {
    let from = "a=fmtp:102 level-asymmetry-allowed=1;";
    let text = PUBLISH.replacen(from, "a=fmtp:102 \tlevel-asymmetry-allowed=13", 1);
    assert_ne!(text, PUBLISH);
    match parse(&text) {
        Err(SdpError::Syntax(e)) => assert!(e.contains("a=fmtp:102 does not parse"), "{e}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}
