//! Browser-like SDP offers written by the load generator (what Chromium sends, trimmed to what
//! a synthetic client needs): one BUNDLE group, rtcp-mux, Opus on `mid 0` and VP8 on `mid 1`,
//! `a=ssrc` lines for a publisher, the client's ICE credentials and certificate fingerprint,
//! `a=setup:actpass`. No header extensions and no RTX, so the SFU never retransmits and every
//! packet a subscriber counts is one the publisher sent once.
//!
//! `--simulcast` offers (see [`super::simulcast`]) add what Chromium offers with
//! openvidu-browser in mediasoup mode: the `mid`, transport-wide sequence number, `rid` and
//! `repaired-rid` extensions, `transport-cc` and `goog-remb` feedback, RTX for VP8; a
//! publisher's video m-line has `a=rid:<rid> send` per layer and `a=simulcast:send
//! rdiv4;rdiv2;rdiv1` and no video `a=ssrc` (its SSRCs are learnt from the rid extension). A
//! subscriber offers no RTX (it never NACKs, as without simulcast).

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::simulcast::{EXT_MID, EXT_REPAIRED_RID, EXT_RID, EXT_TWCC, RIDS, RTX_PT};
use crate::sdp::ext;

/// Payload type of VP8 in our offers (Chromium's).
pub const VP8_PT: u8 = 96;
/// Payload type of Opus in our offers (Chromium's).
pub const OPUS_PT: u8 = 111;

/// What goes into one offer.
#[derive(Debug, Clone)]
pub struct OfferParams<'a> {
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// `sha-256` fingerprint as written after `a=fingerprint:sha-256 `.
    pub fingerprint: &'a str,
    /// The client's host candidate.
    pub candidate: SocketAddr,
    /// Publisher: `Some((audio_ssrc, video_ssrc))`, m-lines `sendonly`. Subscriber: `None`,
    /// m-lines `recvonly`.
    pub send_ssrcs: Option<(u32, u32)>,
    /// A random session id for the `o=` line.
    pub session_id: u64,
    /// A `--simulcast` offer (see the module docs).
    pub simulcast: bool,
}

/// Writes the offer (CRLF line endings, as browsers do).
pub fn write_offer(p: &OfferParams<'_>) -> String {
    let mut s = String::with_capacity(2048);
    let dir = if p.send_ssrcs.is_some() { "sendonly" } else { "recvonly" };
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=msid-semantic: WMS load\r\n",
        p.session_id
    );
    let sim = p.simulcast;
    for (mid, kind) in [(0, "audio"), (1, "video")] {
        let pt = if kind == "audio" { OPUS_PT } else { VP8_PT };
        let pts = if sim && kind == "video" { format!("{pt} {RTX_PT}") } else { pt.to_string() };
        let _ = write!(
            s,
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:{mid}\r\na={dir}\r\n",
            p.ice_ufrag, p.ice_pwd, p.fingerprint
        );
        if mid == 0 {
            let _ = write!(
                s,
                "a=candidate:1 1 udp 2122260223 {} {} typ host generation 0\r\n",
                p.candidate.ip(),
                p.candidate.port()
            );
        }
        if sim {
            let _ = write!(
                s,
                "a=extmap:{EXT_TWCC} {}\r\na=extmap:{EXT_MID} {}\r\n",
                ext::TWCC,
                ext::MID
            );
            if kind == "video" {
                let _ = write!(
                    s,
                    "a=extmap:{EXT_RID} {}\r\na=extmap:{EXT_REPAIRED_RID} {}\r\n",
                    ext::RID,
                    ext::REPAIRED_RID
                );
            }
        }
        if p.send_ssrcs.is_some() {
            let _ = write!(s, "a=msid:load {kind}\r\n");
        }
        s.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
        if kind == "audio" {
            let _ = write!(
                s,
                "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} minptime=10;useinbandfec=1\r\n"
            );
            if sim {
                let _ = write!(s, "a=rtcp-fb:{pt} transport-cc\r\n");
            }
        } else {
            let _ = write!(s, "a=rtpmap:{pt} VP8/90000\r\n");
            if sim {
                let _ = write!(
                    s,
                    "a=rtcp-fb:{pt} goog-remb\r\na=rtcp-fb:{pt} transport-cc\r\na=rtcp-fb:{pt} nack\r\n"
                );
            }
            let _ = write!(s, "a=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack pli\r\n");
            if sim {
                let _ = write!(s, "a=rtpmap:{RTX_PT} rtx/90000\r\na=fmtp:{RTX_PT} apt={pt}\r\n");
            }
        }
        match p.send_ssrcs {
            Some((_, _)) if sim && kind == "video" => {
                for rid in RIDS {
                    let _ = write!(s, "a=rid:{rid} send\r\n");
                }
                let _ = write!(s, "a=simulcast:send {}\r\n", RIDS.join(";"));
            }
            Some((a, v)) => {
                let ssrc = if kind == "audio" { a } else { v };
                let _ = write!(s, "a=ssrc:{ssrc} cname:load\r\na=ssrc:{ssrc} msid:load {kind}\r\n");
            }
            None => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp;

    fn params(send: Option<(u32, u32)>) -> String {
        params_sim(send, false)
    }

    fn params_sim(send: Option<(u32, u32)>, simulcast: bool) -> String {
        write_offer(&OfferParams {
            ice_ufrag: "abcd",
            ice_pwd: "0123456789abcdefghijklmn",
            fingerprint: &(0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":"),
            candidate: "127.0.0.1:5000".parse().expect("addr"),
            send_ssrcs: send,
            session_id: 7,
            simulcast,
        })
    }

    fn local() -> sdp::LocalTransport {
        sdp::LocalTransport {
            ice_ufrag: "srv1".into(),
            ice_pwd: "0123456789abcdef01234567".into(),
            fingerprint_sha256: (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":"),
            candidates: vec!["127.0.0.1:40000".parse().expect("addr")],
            session_id: 1,
            session_version: 2,
        }
    }

    /// A simulcast publish offer parses as Chromium's does (three rids, simulcast, the
    /// extensions, RTX) and ringsfu's answer agrees to receive the three layers; a simulcast
    /// subscribe offer gets transport-wide sequence numbers.
    #[test]
    fn simulcast_offers_are_answered() {
        let o = sdp::parse(&params_sim(Some((11, 22)), true)).expect("parses");
        let v = &o.media[1];
        assert_eq!(v.rids, RIDS);
        assert!(v.ssrcs.is_empty(), "no video a=ssrc with rids");
        assert_eq!(o.media[0].ssrcs, vec![11]);
        let uris: Vec<&str> = v.extmaps.iter().map(|e| e.uri.as_str()).collect();
        for u in [ext::MID, ext::RID, ext::REPAIRED_RID, ext::TWCC] {
            assert!(uris.contains(&u), "{u}");
        }
        let n = sdp::answer_publish(&o, &local(), sdp::VideoCodecPolicy::MediaServerPreferred)
            .expect("answered");
        let nv = &n.media[1];
        assert_eq!(nv.rids, RIDS);
        assert_eq!(nv.simulcast.len(), 3);
        assert_eq!(nv.rtx_pt, Some(RTX_PT));
        assert_eq!((nv.ext.rid, nv.ext.mid, nv.ext.twcc), (EXT_RID, EXT_MID, EXT_TWCC));
        assert!(n.sdp.contains("a=simulcast:recv rdiv4;rdiv2;rdiv1"), "{}", n.sdp);
        let sub = sdp::parse(&params_sim(None, true)).expect("parses");
        assert!(sub.media.iter().all(|m| m.rids.is_empty()));
        assert!(sub.media[1].extmaps.iter().any(|e| e.uri == ext::TWCC && e.id == EXT_TWCC));
    }

    #[test]
    fn publish_offer_parses_and_is_answered() {
        let o = sdp::parse(&params(Some((11, 22)))).expect("parses");
        assert_eq!(o.bundle, vec!["0", "1"]);
        assert_eq!(o.media[0].ssrcs, vec![11]);
        assert_eq!(o.media[1].ssrcs, vec![22]);
        assert!(o.media.iter().all(|m| m.rtcp_mux));
        assert_eq!(o.setup, sdp::Setup::ActPass);
        assert_eq!(o.candidates.len(), 1);
        let n = sdp::answer_publish(&o, &local(), sdp::VideoCodecPolicy::MediaServerPreferred)
            .expect("ringsfu answers it");
        assert_eq!(n.media.len(), 2);
        assert_eq!(n.media[0].codec.pt, OPUS_PT);
        assert_eq!(n.media[1].codec.pt, VP8_PT);
        assert_eq!(n.media[1].ssrc, Some(22));
    }

    #[test]
    fn subscribe_offer_parses() {
        let o = sdp::parse(&params(None)).expect("parses");
        assert_eq!(o.media.len(), 2);
        assert!(o.media.iter().all(|m| m.direction == sdp::Direction::RecvOnly));
    }
}
