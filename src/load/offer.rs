//! Browser-like SDP offers written by the load generator (what Chromium sends, trimmed to what
//! a synthetic client needs): one BUNDLE group, rtcp-mux, Opus on `mid 0` and VP8 on `mid 1`,
//! `a=ssrc` lines for a publisher, the client's ICE credentials and certificate fingerprint,
//! `a=setup:actpass`. No header extensions and no RTX, so the SFU never retransmits and every
//! packet a subscriber counts is one the publisher sent once.

use std::fmt::Write as _;
use std::net::SocketAddr;

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
    for (mid, kind) in [(0, "audio"), (1, "video")] {
        let pt = if kind == "audio" { OPUS_PT } else { VP8_PT };
        let _ = write!(
            s,
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
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
        if p.send_ssrcs.is_some() {
            let _ = write!(s, "a=msid:load {kind}\r\n");
        }
        s.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
        if kind == "audio" {
            let _ = write!(
                s,
                "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} minptime=10;useinbandfec=1\r\n"
            );
        } else {
            let _ = write!(
                s,
                "a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack pli\r\n"
            );
        }
        if let Some((a, v)) = p.send_ssrcs {
            let ssrc = if kind == "audio" { a } else { v };
            let _ = write!(s, "a=ssrc:{ssrc} cname:load\r\na=ssrc:{ssrc} msid:load {kind}\r\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp;

    fn params(send: Option<(u32, u32)>) -> String {
        write_offer(&OfferParams {
            ice_ufrag: "abcd",
            ice_pwd: "0123456789abcdefghijklmn",
            fingerprint: &(0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":"),
            candidate: "127.0.0.1:5000".parse().expect("addr"),
            send_ssrcs: send,
            session_id: 7,
        })
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
        let local = sdp::LocalTransport {
            ice_ufrag: "srv1".into(),
            ice_pwd: "0123456789abcdef01234567".into(),
            fingerprint_sha256: (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":"),
            candidates: vec!["127.0.0.1:40000".parse().expect("addr")],
            session_id: 1,
            session_version: 2,
        };
        let n = sdp::answer_publish(&o, &local, sdp::VideoCodecPolicy::MediaServerPreferred)
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
