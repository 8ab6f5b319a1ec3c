//! SDP offer/answer (JSEP, RFC 8829) for the OpenVidu publish and subscribe flows.
//!
//! ringsfu is always ICE-lite and the DTLS server (`a=setup:passive` in answers, `actpass` in the
//! offers it makes, which browsers answer with `active`), bundles everything on one transport
//! (RFC 8843) and requires rtcp-mux. The flows:
//!
//! 1. **Publish** (`publishVideo`): the browser offers `sendonly` audio/video;
//!    [`answer_publish`] picks one codec per m-line (plus its RTX), keeps the header extensions
//!    the router understands and answers `recvonly`.
//! 2. **Subscribe, client offer** (`receiveVideoFrom` with `sdpOffer`, the flow openvidu-browser
//!    uses unless the server says `mediaServer: "mediasoup"`): the browser offers `recvonly`;
//!    [`answer_subscribe`] maps each published track onto the subscriber's payload types and
//!    answers `sendonly` with the SSRCs ringsfu will send.
//! 3. **Subscribe, server offer** (`prepareReceiveVideoFrom` then `receiveVideoFrom` with
//!    `sdpAnswer`): [`offer_subscribe`] writes the offer and [`accept_subscribe_answer`] checks
//!    the browser's answer.
//!
//! Parsing uses `webrtc-sdp` for the typed attributes; `a=fmtp` lines are kept verbatim (the
//! answer must repeat exactly what the offerer wrote). Nothing here does I/O.

use std::fmt::Write as _;
use std::net::SocketAddr;

use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeFingerprintHashType, SdpAttributeGroupSemantic,
    SdpAttributePayloadType, SdpAttributeSetup, SdpSingleDirection, SdpSsrcGroupSemantic,
};
use webrtc_sdp::media_type::SdpMediaValue;

#[cfg(test)]
mod tests;

/// Why an SDP was refused; the message goes back to the client in the JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP does not parse: {0}")]
    Syntax(String),
    #[error("SDP lacks {0}")]
    Missing(&'static str),
    #[error("SDP not acceptable: {0}")]
    Unacceptable(String),
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// Media direction of an m-line, from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One payload format of an m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    /// Encoding name as written (`VP8`, `H264`, `opus`, ...).
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u32>,
    /// The `a=fmtp` parameters verbatim, empty when none.
    pub fmtp: String,
    /// `a=rtcp-fb` values (`nack`, `nack pli`, `ccm fir`, `goog-remb`, `transport-cc`).
    pub rtcp_fb: Vec<String>,
    /// Payload type of the RTX format protecting this one (`apt=`), if offered.
    pub rtx_pt: Option<u8>,
}

/// A codec's `a=fmtp` line as ringsfu writes it (without the line end): one writer for the
/// SDPs and for the check in [`parse`] that what is copied parses as written.
struct FmtpLine<'a>(&'a Codec);

impl std::fmt::Display for FmtpLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a=fmtp:{} {}", self.0.pt, self.0.fmtp)
    }
}

impl Codec {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
        })
    }

    /// Whether `other` carries the same bitstream format, so packets of one can be sent as the
    /// other (name, clock rate, channels and, for H.264, profile and packetization mode).
    pub fn same_format(&self, other: &Codec) -> bool {
        if !self.name.eq_ignore_ascii_case(&other.name) || self.clock_rate != other.clock_rate {
            return false;
        }
        if self.channels.unwrap_or(1) != other.channels.unwrap_or(1) {
            return false;
        }
        if self.is("H264") {
            let pm = |c: &Codec| c.fmtp_param("packetization-mode").unwrap_or("0").to_string();
            // profile_idc + profile-iop (the first 4 hex digits); the level may differ.
            let profile = |c: &Codec| {
                c.fmtp_param("profile-level-id")
                    .map(|p| p.get(..4).unwrap_or(p).to_ascii_lowercase())
                    .unwrap_or_else(|| "42e0".into())
            };
            return pm(self) == pm(other) && profile(self) == profile(other);
        }
        if self.is("VP9") {
            let prof = |c: &Codec| c.fmtp_param("profile-id").unwrap_or("0").to_string();
            return prof(self) == prof(other);
        }
        if self.is("AV1") {
            let prof = |c: &Codec| c.fmtp_param("profile").unwrap_or("0").to_string();
            return prof(self) == prof(other);
        }
        true
    }
}

/// `a=extmap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extmap {
    pub id: u8,
    pub uri: String,
}

/// Header extensions the router reads or rewrites; others are not negotiated.
pub mod ext {
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    pub const TWCC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// The AV1 RTP spec's Dependency Descriptor (SVC layer ids for AV1, and VP8/VP9 from Chrome).
    pub const DEPENDENCY_DESCRIPTOR: &str =
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

    /// Extensions accepted per kind.
    pub fn supported(kind: super::MediaKind, uri: &str) -> bool {
        match kind {
            super::MediaKind::Audio => matches!(uri, MID | ABS_SEND_TIME | TWCC | AUDIO_LEVEL),
            super::MediaKind::Video => {
                matches!(
                    uri,
                    MID | ABS_SEND_TIME
                        | TWCC
                        | VIDEO_ORIENTATION
                        | RID
                        | REPAIRED_RID
                        | DEPENDENCY_DESCRIPTOR
                )
            }
        }
    }
}

/// A remote ICE candidate from the SDP (`a=candidate`) or trickled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCandidate {
    pub addr: SocketAddr,
    pub udp: bool,
    pub priority: u64,
}

/// One simulcast stream of `a=simulcast` (RFC 8853): its RID alternatives, preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastStream {
    pub rids: Vec<String>,
    /// Written with `~`: the stream exists but is paused (the first alternative's mark).
    pub paused: bool,
}

/// `a=simulcast` of an m-line: the streams offered in each direction, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simulcast {
    pub send: Vec<SimulcastStream>,
    pub recv: Vec<SimulcastStream>,
}

/// An `a=rid` line (RFC 8851) with the restrictions ringsfu reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RidSpec {
    pub id: String,
    /// True for `send`, false for `recv`.
    pub send: bool,
    /// `pt=` payload types the RID may use (empty: any).
    pub pts: Vec<u8>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub max_fps: Option<u32>,
    pub max_br: Option<u32>,
}

/// One m-line of a remote description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: Option<MediaKind>,
    /// The m-line's media token as written (`audio`, `video`, `application`).
    pub media: String,
    pub proto: String,
    /// The format list as written (kept to reject an m-line with a valid answer).
    pub formats: Vec<String>,
    pub port: u32,
    pub mid: String,
    pub direction: Direction,
    pub codecs: Vec<Codec>,
    pub extmaps: Vec<Extmap>,
    /// Media SSRCs in order of appearance (first is the primary).
    pub ssrcs: Vec<u32>,
    /// `a=ssrc-group:FID primary rtx` pairs.
    pub rtx_pairs: Vec<(u32, u32)>,
    pub cname: Option<String>,
    /// `a=msid` stream id and track id.
    pub msid: Option<(String, String)>,
    /// RIDs offered for simulcast (`a=rid:<id> send`).
    pub rids: Vec<String>,
    /// Every `a=rid` line with its direction and restrictions.
    pub rid_specs: Vec<RidSpec>,
    /// `a=simulcast` (RFC 8853), if present.
    pub simulcast: Option<Simulcast>,
    /// `a=ssrc-group:SIM` SSRCs, lowest layer first (legacy simulcast some clients signal).
    pub sim_ssrcs: Vec<u32>,
    pub rtcp_mux: bool,
    pub rtcp_rsize: bool,
    /// `a=rtcp-xr:rcvr-rtt=all` (RFC 3611 §5.1): the peer sends and answers receiver
    /// reference times (XR RRTR and DLRR) to measure its round-trip time as a receiver.
    pub rcvr_rtt: bool,
}

impl MediaSection {
    fn rejected(&self) -> bool {
        self.port == 0
    }
}

/// The parts of a remote offer or answer that ringsfu acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDescription {
    /// The `o=` line's sess-id: a peer connection keeps it across renegotiations, a new one
    /// picks another (RFC 3264 §5, JSEP §5.2.1).
    pub origin_session: u64,
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// `sha-256` fingerprint bytes of the remote DTLS certificate.
    pub fingerprint: Vec<u8>,
    pub setup: Setup,
    pub bundle: Vec<String>,
    pub media: Vec<MediaSection>,
    pub candidates: Vec<RemoteCandidate>,
    /// `a=extmap-allow-mixed` (RFC 8285 §6, session or media level): the peer takes one-byte
    /// and two-byte header extensions, so an element over 16 bytes (the Dependency Descriptor
    /// with its structure) can be sent.
    pub extmap_allow_mixed: bool,
}

/// DTLS role attribute (RFC 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

/// Parses a remote SDP. Requires ICE credentials and a SHA-256 fingerprint (at session or media
/// level, identical across bundled m-lines as browsers write them).
pub fn parse(sdp: &str) -> Result<RemoteDescription, SdpError> {
    // RFC 8866 §9: no field may hold a NUL or a CR, and CR only ends a line before LF. ringsfu
    // copies some values verbatim (`a=fmtp`) into other participants' SDPs, so such a byte is
    // refused here rather than passed on to browsers that may split lines at it.
    let bytes = sdp.as_bytes();
    if let Some(i) = (0..bytes.len())
        .find(|&i| bytes[i] == 0 || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
    {
        return Err(SdpError::Syntax(format!(
            "a NUL or a CR that does not end a line, at byte {i}"
        )));
    }
    // `a=rtcp-xr` (RFC 3611 §5.1, in every Chromium offer) is unknown to webrtc-sdp, which
    // would log it as a warning: it is read from the text of each m-section instead.
    let hidden;
    let for_parser = if sdp.contains("a=rtcp-xr") {
        hidden =
            sdp.split_inclusive('\n').filter(|l| !l.starts_with("a=rtcp-xr")).collect::<String>();
        hidden.as_str()
    } else {
        sdp
    };
    let session = webrtc_sdp::parse_sdp(for_parser, false)
        .map_err(|e| SdpError::Syntax(one_line(&e.to_string())))?;
    let mut ufrag = None;
    let mut pwd = None;
    let mut fingerprint = None;
    let mut setup = None;
    let mut bundle = Vec::new();
    let mut candidates = Vec::new();
    let mut allow_mixed = false;
    let mut take_common = |a: &SdpAttribute| match a {
        SdpAttribute::ExtmapAllowMixed => allow_mixed = true,
        SdpAttribute::IceUfrag(u) if ufrag.is_none() => ufrag = Some(u.clone()),
        SdpAttribute::IcePwd(p) if pwd.is_none() => pwd = Some(p.clone()),
        SdpAttribute::Fingerprint(f)
            if fingerprint.is_none()
                && matches!(f.hash_algorithm, SdpAttributeFingerprintHashType::Sha256) =>
        {
            fingerprint = Some(f.fingerprint.clone())
        }
        SdpAttribute::Setup(s) if setup.is_none() => {
            setup = Some(match s {
                SdpAttributeSetup::Active => Setup::Active,
                SdpAttributeSetup::Passive => Setup::Passive,
                SdpAttributeSetup::Actpass => Setup::ActPass,
                SdpAttributeSetup::Holdconn => Setup::HoldConn,
            })
        }
        SdpAttribute::Group(g) if matches!(g.semantics, SdpAttributeGroupSemantic::Bundle) => {
            bundle = g.tags.clone()
        }
        SdpAttribute::Candidate(c) => {
            if let Some(addr) = candidate_addr(c) {
                candidates.push(addr);
            }
        }
        _ => {}
    };
    for a in &session.attribute {
        take_common(a);
    }
    let raw_sections = split_media_sections(sdp);
    // webrtc-sdp skips an m-line it does not support (a warning, e.g. an unknown transport),
    // and the lines after it then belong to the m-line before. Each section's own lines (its
    // format list, `a=fmtp`, `a=rtcp-xr`) are read from the text by position, so the two views
    // must agree m-line for m-line; otherwise one section would be answered with another's.
    if raw_sections.len() != session.media.len() {
        return Err(SdpError::Syntax(format!(
            "{} m-lines, of which {} could be parsed",
            raw_sections.len(),
            session.media.len()
        )));
    }
    let mut media = Vec::with_capacity(session.media.len());
    for (i, m) in session.media.iter().enumerate() {
        for a in m.get_attributes() {
            take_common(a);
        }
        let kind = match m.get_type() {
            SdpMediaValue::Audio => Some(MediaKind::Audio),
            SdpMediaValue::Video => Some(MediaKind::Video),
            _ => None,
        };
        let raw = raw_sections.get(i).copied().unwrap_or("");
        let section = media_section(m, kind, raw);
        // `a=fmtp` parameters are kept as text (trimmed) and written into answers and into
        // other participants' offers: the line as ringsfu would write it must parse as it did
        // here. (webrtc-sdp reads `a=fmtp:108 <TAB>level-asymmetry-allowed=1x` as an unknown
        // parameter; trimmed, the same text is a level-asymmetry-allowed that is not a number.)
        for c in section.codecs.iter().filter(|c| !c.fmtp.is_empty()) {
            if let Err(e) = webrtc_sdp::parse_sdp_line(&FmtpLine(c).to_string(), 0) {
                return Err(SdpError::Syntax(format!(
                    "a=fmtp:{} does not parse once trimmed: {}",
                    c.pt,
                    one_line(&e.to_string())
                )));
            }
        }
        media.push(section);
    }
    let ice_ufrag = ufrag.ok_or(SdpError::Missing("a=ice-ufrag"))?;
    let ice_pwd = pwd.ok_or(SdpError::Missing("a=ice-pwd"))?;
    let fingerprint = fingerprint.ok_or(SdpError::Missing("a=fingerprint:sha-256"))?;
    Ok(RemoteDescription {
        origin_session: session.origin.session_id,
        ice_ufrag,
        ice_pwd,
        fingerprint,
        setup: setup.unwrap_or(Setup::ActPass),
        bundle,
        media,
        candidates,
        extmap_allow_mixed: allow_mixed,
    })
}

fn candidate_addr(
    c: &webrtc_sdp::attribute_type::SdpAttributeCandidate,
) -> Option<RemoteCandidate> {
    use webrtc_sdp::address::Address;
    use webrtc_sdp::attribute_type::SdpAttributeCandidateTransport;
    let ip = match &c.address {
        Address::Ip(ip) => *ip,
        Address::Fqdn(_) => return None, // mDNS names cannot be resolved here.
    };
    let port = u16::try_from(c.port).ok()?;
    Some(RemoteCandidate {
        addr: SocketAddr::new(ip, port),
        udp: matches!(c.transport, SdpAttributeCandidateTransport::Udp),
        priority: c.priority,
    })
}

/// Parses one trickled candidate line (`candidate:...` as browsers send in `onIceCandidate`).
pub fn parse_candidate(line: &str) -> Result<RemoteCandidate, SdpError> {
    let text = line.trim().trim_start_matches("a=");
    let parsed = webrtc_sdp::parse_sdp_line(&format!("a={text}"), 0)
        .map_err(|e| SdpError::Syntax(one_line(&e.to_string())))?;
    match parsed.sdp_type {
        webrtc_sdp::SdpType::Attribute(SdpAttribute::Candidate(c)) => candidate_addr(&c)
            .ok_or_else(|| SdpError::Unacceptable("candidate address is not an IP".into())),
        _ => Err(SdpError::Syntax("not a candidate line".into())),
    }
}

/// The text of each m-section (from its `m=` line to the next), in order.
fn split_media_sections(sdp: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut pos = 0;
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            starts.push(pos);
        }
        pos += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| &sdp[s..starts.get(i + 1).copied().unwrap_or(sdp.len())])
        .collect()
}

/// The format tokens of an `m=` line, split as webrtc-sdp splits them: the value after the
/// first `=`, trimmed, cut at the first three single whitespace characters, and the rest split on
/// whitespace. (Splitting the whole line on whitespace counts `m=` as a token of its own when
/// whitespace, such as a lone CR, follows it, and the list then starts at the transport.)
fn media_line_formats(line: &str) -> Vec<String> {
    line.split_once('=')
        .and_then(|(_, value)| value.trim().splitn(4, char::is_whitespace).nth(3))
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn media_section(
    m: &webrtc_sdp::media_type::SdpMedia,
    kind: Option<MediaKind>,
    raw: &str,
) -> MediaSection {
    let mut codecs: Vec<Codec> = Vec::new();
    let mut rtx_apt: Vec<(u8, u8)> = Vec::new(); // (rtx pt, apt)
    // Payload types with an `a=rtpmap:<pt> rtx/...` (the parser keeps rtpmap types <= 127; an
    // `a=fmtp` line alone may name any byte, which no answer could carry).
    let mut rtx_declared: Vec<u8> = Vec::new();
    let mut fmtp_raw: Vec<(u8, String)> = Vec::new();
    for line in raw.lines() {
        let parsed = line
            .trim_end()
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(pt, params)| Some((pt.parse::<u8>().ok()?, params.trim().to_string())));
        if let Some(entry) = parsed {
            fmtp_raw.push(entry);
        }
    }
    let mut s = MediaSection {
        kind,
        media: m.get_type().to_string(),
        proto: m.get_proto().to_string(),
        formats: raw.lines().next().map(media_line_formats).unwrap_or_default(),
        port: m.get_port(),
        mid: String::new(),
        direction: Direction::SendRecv,
        codecs: Vec::new(),
        extmaps: Vec::new(),
        ssrcs: Vec::new(),
        rtx_pairs: Vec::new(),
        cname: None,
        msid: None,
        rids: Vec::new(),
        rid_specs: Vec::new(),
        simulcast: None,
        sim_ssrcs: Vec::new(),
        rtcp_mux: false,
        rtcp_rsize: false,
        // webrtc-sdp does not know `a=rtcp-xr` ([`parse`] hides it from it): read the text.
        rcvr_rtt: raw.lines().any(|l| {
            l.trim_end()
                .strip_prefix("a=rtcp-xr:")
                .is_some_and(|v| v.split_whitespace().any(|x| x.starts_with("rcvr-rtt=")))
        }),
    };
    for a in m.get_attributes() {
        match a {
            SdpAttribute::Mid(mid) => s.mid = mid.clone(),
            SdpAttribute::Sendonly => s.direction = Direction::SendOnly,
            SdpAttribute::Recvonly => s.direction = Direction::RecvOnly,
            SdpAttribute::Sendrecv => s.direction = Direction::SendRecv,
            SdpAttribute::Inactive => s.direction = Direction::Inactive,
            SdpAttribute::RtcpMux => s.rtcp_mux = true,
            SdpAttribute::RtcpRsize => s.rtcp_rsize = true,
            SdpAttribute::Rtpmap(r) => {
                if r.codec_name.eq_ignore_ascii_case("rtx") {
                    rtx_declared.push(r.payload_type);
                    continue;
                }
                codecs.push(Codec {
                    pt: r.payload_type,
                    name: r.codec_name.clone(),
                    clock_rate: r.frequency,
                    channels: r.channels,
                    fmtp: String::new(),
                    rtcp_fb: Vec::new(),
                    rtx_pt: None,
                });
            }
            SdpAttribute::Fmtp(f) => {
                if let Some(rtx) = &f.parameters.rtx {
                    rtx_apt.push((f.payload_type, rtx.apt));
                }
            }
            SdpAttribute::Extmap(e) => {
                if let Ok(id) = u8::try_from(e.id) {
                    s.extmaps.push(Extmap { id, uri: e.url.clone() });
                }
            }
            SdpAttribute::Ssrc(x) => {
                if !s.ssrcs.contains(&x.id) {
                    s.ssrcs.push(x.id);
                }
                if x.attribute.as_deref() == Some("cname") && s.cname.is_none() {
                    s.cname = x.value.clone();
                }
            }
            SdpAttribute::SsrcGroup(SdpSsrcGroupSemantic::FlowIdentification, v)
                if v.len() == 2 =>
            {
                s.rtx_pairs.push((v[0].id, v[1].id));
            }
            SdpAttribute::Msid(msid) => {
                s.msid = Some((msid.id.clone(), msid.appdata.clone().unwrap_or_default()));
            }
            SdpAttribute::Rid(r) => {
                s.rids.push(r.id.clone());
                let nz = |v: u32| (v != 0).then_some(v);
                s.rid_specs.push(RidSpec {
                    id: r.id.clone(),
                    send: matches!(r.direction, SdpSingleDirection::Send),
                    pts: r.formats.iter().filter_map(|f| u8::try_from(*f).ok()).collect(),
                    max_width: nz(r.params.max_width),
                    max_height: nz(r.params.max_height),
                    max_fps: nz(r.params.max_fps),
                    max_br: nz(r.params.max_br),
                });
            }
            SdpAttribute::Simulcast(sc) => {
                let streams = |v: &[webrtc_sdp::attribute_type::SdpAttributeSimulcastVersion]| {
                    v.iter()
                        .filter(|alt| !alt.ids.is_empty())
                        .map(|alt| SimulcastStream {
                            rids: alt.ids.iter().map(|i| i.id.clone()).collect(),
                            paused: alt.ids.first().is_some_and(|i| i.paused),
                        })
                        .collect()
                };
                s.simulcast =
                    Some(Simulcast { send: streams(&sc.send), recv: streams(&sc.receive) });
            }
            SdpAttribute::SsrcGroup(SdpSsrcGroupSemantic::Sim, v) => {
                s.sim_ssrcs = v.iter().map(|x| x.id).collect();
            }
            _ => {}
        }
    }
    // rtcp-fb after all rtpmaps are known (it may precede them in the text).
    for a in m.get_attributes() {
        if let SdpAttribute::Rtcpfb(fb) = a {
            let text = fb.to_string();
            let value = text.split_once(' ').map(|(_, v)| v.trim().to_string()).unwrap_or_default();
            for c in codecs.iter_mut() {
                let applies = match fb.payload_type {
                    SdpAttributePayloadType::PayloadType(pt) => pt == c.pt,
                    SdpAttributePayloadType::Wildcard => true,
                };
                if applies && !c.rtcp_fb.contains(&value) {
                    c.rtcp_fb.push(value.clone());
                }
            }
        }
    }
    for c in codecs.iter_mut() {
        if let Some((_, p)) = fmtp_raw.iter().find(|(pt, _)| *pt == c.pt) {
            c.fmtp = p.clone();
        }
        c.rtx_pt = rtx_apt
            .iter()
            .find(|(rtx, apt)| *apt == c.pt && rtx_declared.contains(rtx))
            .map(|(rtx, _)| *rtx);
    }
    // Codecs that are really FEC/RED/CN/DTMF are kept but never chosen as the primary.
    s.codecs = codecs;
    s
}

/// ringsfu's side of the transport, the same for every m-line of a bundle.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// `AB:CD:...` SHA-256 fingerprint of ringsfu's DTLS certificate.
    pub fingerprint_sha256: String,
    /// Host candidates: the shard's media port on each public address, in preference order.
    pub candidates: Vec<SocketAddr>,
    /// The `o=` session id (stable for one peer connection; the version increments).
    pub session_id: u64,
    pub session_version: u64,
}

/// The session's `forcedVideoCodec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodecPolicy {
    /// Prefer VP8, then H.264, VP9, AV1 (what Kurento prefers).
    MediaServerPreferred,
    /// The browser's first offered codec.
    None,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl VideoCodecPolicy {
    /// From the REST `forcedVideoCodec` string.
    pub fn from_openvidu(s: &str) -> Option<VideoCodecPolicy> {
        Some(match s {
            "MEDIA_SERVER_PREFERRED" => VideoCodecPolicy::MediaServerPreferred,
            "NONE" => VideoCodecPolicy::None,
            "VP8" => VideoCodecPolicy::Vp8,
            "VP9" => VideoCodecPolicy::Vp9,
            "H264" => VideoCodecPolicy::H264,
            "AV1" => VideoCodecPolicy::Av1,
            _ => return None,
        })
    }
}

const MEDIA_CODECS: &[&str] = &["VP8", "VP9", "H264", "AV1", "opus"];

fn choose_codec(section: &MediaSection, policy: VideoCodecPolicy) -> Option<&Codec> {
    let usable = |c: &&Codec| MEDIA_CODECS.iter().any(|n| c.is(n));
    match section.kind? {
        MediaKind::Audio => section.codecs.iter().find(|c| c.is("opus") && c.clock_rate == 48000),
        MediaKind::Video => {
            let pick = |name: &str| -> Option<&Codec> {
                let mut candidates = section.codecs.iter().filter(|c| c.is(name));
                if name == "H264" {
                    // Constrained baseline with packetization-mode=1 decodes everywhere.
                    let all: Vec<&Codec> = candidates.collect();
                    all.iter()
                        .copied()
                        .find(|c| {
                            c.fmtp_param("packetization-mode") == Some("1")
                                && c.fmtp_param("profile-level-id")
                                    .is_some_and(|p| p.to_ascii_lowercase().starts_with("42e0"))
                        })
                        .or_else(|| all.first().copied())
                } else {
                    candidates.next()
                }
            };
            match policy {
                VideoCodecPolicy::Vp8 => pick("VP8"),
                VideoCodecPolicy::Vp9 => pick("VP9"),
                VideoCodecPolicy::H264 => pick("H264"),
                VideoCodecPolicy::Av1 => pick("AV1"),
                VideoCodecPolicy::None => section.codecs.iter().find(usable),
                VideoCodecPolicy::MediaServerPreferred => pick("VP8")
                    .or_else(|| pick("H264"))
                    .or_else(|| pick("VP9"))
                    .or_else(|| pick("AV1")),
            }
        }
    }
}

/// Header extension ids negotiated for one m-line (0 = not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtIds {
    pub mid: u8,
    pub abs_send_time: u8,
    pub twcc: u8,
    pub audio_level: u8,
    pub video_orientation: u8,
    pub rid: u8,
    pub repaired_rid: u8,
    pub dependency_descriptor: u8,
}

impl ExtIds {
    fn from_extmaps(maps: &[Extmap]) -> ExtIds {
        let mut e = ExtIds::default();
        for m in maps {
            match m.uri.as_str() {
                ext::MID => e.mid = m.id,
                ext::ABS_SEND_TIME => e.abs_send_time = m.id,
                ext::TWCC => e.twcc = m.id,
                ext::AUDIO_LEVEL => e.audio_level = m.id,
                ext::VIDEO_ORIENTATION => e.video_orientation = m.id,
                ext::RID => e.rid = m.id,
                ext::REPAIRED_RID => e.repaired_rid = m.id,
                ext::DEPENDENCY_DESCRIPTOR => e.dependency_descriptor = m.id,
                _ => {}
            }
        }
        e
    }
}

/// What was agreed for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    pub mid: String,
    pub kind: MediaKind,
    /// The codec with the payload type used on this leg.
    pub codec: Codec,
    /// RTX payload type on this leg, if negotiated (video with nack).
    pub rtx_pt: Option<u8>,
    pub ext: ExtIds,
    /// SSRCs the remote announced (publish) or ringsfu will send (subscribe).
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    /// Simulcast RIDs the publisher will send, in offer order (with `a=simulcast`: those of
    /// the accepted streams, every alternative).
    pub rids: Vec<String>,
    /// RFC 8853 simulcast streams ringsfu agreed to receive, in the publisher's order (the
    /// encoding index of a RID is its stream's position here); empty without `a=simulcast`.
    pub simulcast: Vec<SimulcastStream>,
    /// The restrictions of each accepted RID (`a=rid:<id> send ...`).
    pub rid_specs: Vec<RidSpec>,
    /// Legacy `a=ssrc-group:SIM` SSRCs (lowest layer first), empty if none.
    pub sim_ssrcs: Vec<u32>,
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
    pub transport_cc: bool,
    /// RFC 3611 receiver RTT agreed (`a=rtcp-xr:rcvr-rtt=all` both ways): ringsfu answers the
    /// peer's RRTRs with DLRR and, to a publisher, sends RRTRs whose DLRR give it the RTT.
    pub rcvr_rtt: bool,
}

/// An answer (or offer) ringsfu wrote, with what it agreed to.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub sdp: String,
    pub media: Vec<NegotiatedMedia>,
}

fn fb_flags(c: &Codec) -> (bool, bool, bool, bool, bool) {
    let has = |v: &str| c.rtcp_fb.iter().any(|f| f == v);
    (has("nack"), has("nack pli"), has("ccm fir"), has("goog-remb"), has("transport-cc"))
}

/// rtcp-fb values ringsfu supports (it answers with the intersection).
const SUPPORTED_FB: &[&str] = &["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"];

/// The session lines; `allow_mixed` writes `a=extmap-allow-mixed` (RFC 8285 §6).
fn write_session_header(
    out: &mut String,
    local: &LocalTransport,
    mids: &[&str],
    allow_mixed: bool,
) {
    let _ = write!(
        out,
        "v=0\r\no=- {} {} IN IP4 0.0.0.0\r\ns=ringsfu\r\nt=0 0\r\na=ice-lite\r\n",
        local.session_id, local.session_version
    );
    if !mids.is_empty() {
        let _ = write!(out, "a=group:BUNDLE {}\r\n", mids.join(" "));
    }
    if allow_mixed {
        out.push_str("a=extmap-allow-mixed\r\n");
    }
    out.push_str("a=msid-semantic: WMS *\r\n");
}

fn candidate_priority(index: usize) -> u32 {
    // RFC 8445 §5.1.2.1: type preference 126 (host), local preference descending, component 1.
    let local_pref = 65535u32.saturating_sub(index as u32);
    (126 << 24) | (local_pref << 8) | 255
}

fn write_transport(out: &mut String, local: &LocalTransport, setup: &str) {
    let _ = write!(out, "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", local.ice_ufrag, local.ice_pwd);
    out.push_str("a=ice-options:trickle\r\n");
    let _ =
        write!(out, "a=fingerprint:sha-256 {}\r\na=setup:{setup}\r\n", local.fingerprint_sha256);
    for (i, c) in local.candidates.iter().enumerate() {
        let _ = write!(
            out,
            "a=candidate:{} 1 udp {} {} {} typ host generation 0\r\n",
            i + 1,
            candidate_priority(i),
            c.ip(),
            c.port()
        );
    }
    out.push_str("a=end-of-candidates\r\n");
}

fn connection_line(local: &LocalTransport) -> (u16, String) {
    match local.candidates.first() {
        Some(SocketAddr::V4(a)) => (a.port(), format!("c=IN IP4 {}\r\n", a.ip())),
        Some(SocketAddr::V6(a)) => (a.port(), format!("c=IN IP6 {}\r\n", a.ip())),
        None => (9, "c=IN IP4 0.0.0.0\r\n".into()),
    }
}

fn write_rejected(out: &mut String, m: &MediaSection) {
    let fmt = if m.formats.is_empty() { "0".to_string() } else { m.formats.join(" ") };
    let _ = write!(out, "m={} 0 {} {}\r\nc=IN IP4 0.0.0.0\r\n", m.media, m.proto, fmt);
    if !m.mid.is_empty() {
        let _ = write!(out, "a=mid:{}\r\n", m.mid);
    }
    out.push_str("a=inactive\r\n");
}

struct Section<'a> {
    kind: MediaKind,
    mid: &'a str,
    proto: &'a str,
    direction: Direction,
    codec: &'a Codec,
    rtx_pt: Option<u8>,
    extmaps: Vec<Extmap>,
    rtcp_rsize: bool,
    /// Writes `a=rtcp-xr:rcvr-rtt=all`.
    rcvr_rtt: bool,
    send: Option<(&'a OutgoingTrack, u32, Option<u32>)>,
    /// Simulcast streams to receive: `a=rid:<id> recv` and `a=simulcast:recv` lines.
    recv_simulcast: Vec<SimulcastStream>,
}

fn write_section(out: &mut String, local: &LocalTransport, setup: &str, s: &Section<'_>) {
    let (port, cline) = connection_line(local);
    let mut fmts = s.codec.pt.to_string();
    if let Some(rtx) = s.rtx_pt {
        let _ = write!(fmts, " {rtx}");
    }
    let _ = write!(out, "m={} {port} {} {fmts}\r\n{cline}", s.kind.as_str(), s.proto);
    out.push_str("a=rtcp:9 IN IP4 0.0.0.0\r\n");
    write_transport(out, local, setup);
    let _ = write!(out, "a=mid:{}\r\n", s.mid);
    for e in &s.extmaps {
        let _ = write!(out, "a=extmap:{} {}\r\n", e.id, e.uri);
    }
    let _ = write!(out, "a={}\r\na=rtcp-mux\r\n", s.direction.as_str());
    if s.rtcp_rsize {
        out.push_str("a=rtcp-rsize\r\n");
    }
    if s.rcvr_rtt {
        out.push_str("a=rtcp-xr:rcvr-rtt=all\r\n");
    }
    let c = s.codec;
    match c.channels {
        Some(ch) => {
            let _ = write!(out, "a=rtpmap:{} {}/{}/{ch}\r\n", c.pt, c.name, c.clock_rate);
        }
        None => {
            let _ = write!(out, "a=rtpmap:{} {}/{}\r\n", c.pt, c.name, c.clock_rate);
        }
    }
    for fb in c.rtcp_fb.iter().filter(|f| SUPPORTED_FB.contains(&f.as_str())) {
        let _ = write!(out, "a=rtcp-fb:{} {fb}\r\n", c.pt);
    }
    if !c.fmtp.is_empty() {
        let _ = write!(out, "{}\r\n", FmtpLine(c));
    }
    if let Some(rtx) = s.rtx_pt {
        let _ = write!(out, "a=rtpmap:{rtx} rtx/{}\r\na=fmtp:{rtx} apt={}\r\n", c.clock_rate, c.pt);
    }
    write_recv_simulcast(out, &s.recv_simulcast);
    if let Some((track, ssrc, rtx_ssrc)) = s.send {
        let _ = write!(out, "a=msid:{} {}\r\n", track.stream_id, track.track_id);
        if let Some(rtx) = rtx_ssrc {
            let _ = write!(out, "a=ssrc-group:FID {ssrc} {rtx}\r\n");
        }
        let _ = write!(out, "a=ssrc:{ssrc} cname:{}\r\n", track.cname);
        let _ = write!(out, "a=ssrc:{ssrc} msid:{} {}\r\n", track.stream_id, track.track_id);
        if let Some(rtx) = rtx_ssrc {
            let _ = write!(out, "a=ssrc:{rtx} cname:{}\r\n", track.cname);
            let _ = write!(out, "a=ssrc:{rtx} msid:{} {}\r\n", track.stream_id, track.track_id);
        }
    }
}

/// `a=rid:<id> recv` per RID, then `a=simulcast:recv` with the streams in order (`;`) and their
/// alternatives (`,`); a paused stream keeps `~` on its first alternative (RFC 8853 §5.3; a
/// pause mark on a later alternative is not kept).
fn write_recv_simulcast(out: &mut String, streams: &[SimulcastStream]) {
    if streams.is_empty() {
        return;
    }
    for id in streams.iter().flat_map(|st| &st.rids) {
        let _ = write!(out, "a=rid:{id} recv\r\n");
    }
    out.push_str("a=simulcast:recv ");
    for (i, st) in streams.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        for (j, id) in st.rids.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            if st.paused && j == 0 {
                out.push('~');
            }
            out.push_str(id);
        }
    }
    out.push_str("\r\n");
}

/// The simulcast streams of an offer ringsfu accepts to receive with `codec`: each offered
/// `send` stream keeps the alternatives declared by an `a=rid:<id> send` line whose `pt=` list
/// (if any) has the codec and whose id keeps to RFC 8851's syntax (letters, digits, `-`, `_`);
/// a stream left without alternatives is dropped (RFC 8851 §5, RFC 8853 §5.3).
fn accepted_simulcast(m: &MediaSection, codec: &Codec) -> Vec<SimulcastStream> {
    let Some(sc) = &m.simulcast else {
        return Vec::new();
    };
    sc.send
        .iter()
        .filter_map(|st| {
            let rids: Vec<String> = st
                .rids
                .iter()
                .filter(|id| {
                    id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .filter(|id| {
                    m.rid_specs.iter().any(|r| {
                        &r.id == *id && r.send && (r.pts.is_empty() || r.pts.contains(&codec.pt))
                    })
                })
                .cloned()
                .collect();
            (!rids.is_empty()).then_some(SimulcastStream { rids, paused: st.paused })
        })
        .collect()
}

fn check_transport(offer: &RemoteDescription) -> Result<(), SdpError> {
    if offer.setup == Setup::Passive {
        return Err(SdpError::Unacceptable(
            "a=setup:passive (ringsfu is always the DTLS server)".into(),
        ));
    }
    if offer.fingerprint.len() != 32 {
        return Err(SdpError::Missing("a=fingerprint:sha-256"));
    }
    Ok(())
}

fn supported_extmaps(kind: MediaKind, maps: &[Extmap]) -> Vec<Extmap> {
    maps.iter().filter(|e| ext::supported(kind, &e.uri)).cloned().collect()
}

/// What one accepted m-line contributes: the agreement and the section to write.
type Accepted<'a> = (NegotiatedMedia, Section<'a>);

/// The frame both answers share: walks the offer's m-lines, rejects those that are not
/// audio/video, are already rejected or have the wrong direction, requires rtcp-mux, lets
/// `accept` decide the rest (None = reject this m-line), and writes the answer.
fn answer_with<'a>(
    offer: &'a RemoteDescription,
    local: &LocalTransport,
    wanted: fn(Direction) -> bool,
    mut accept: impl FnMut(MediaKind, &'a MediaSection) -> Result<Option<Accepted<'a>>, SdpError>,
    none_accepted: &str,
) -> Result<Negotiated, SdpError> {
    check_transport(offer)?;
    let mut accepted = Vec::new();
    let mut sections: Vec<Result<Section<'a>, &'a MediaSection>> = Vec::new();
    for m in &offer.media {
        let Some(kind) = m.kind.filter(|_| !m.rejected() && wanted(m.direction)) else {
            sections.push(Err(m));
            continue;
        };
        if !m.rtcp_mux {
            return Err(SdpError::Unacceptable(format!("m-line {} without a=rtcp-mux", m.mid)));
        }
        // BUNDLE names every m-line by its mid (JSEP §5.2.1: browsers always write one); an
        // answer to a section without one would carry an empty `a=mid:` no parser accepts.
        if m.mid.is_empty() {
            return Err(SdpError::Missing("a=mid"));
        }
        match accept(kind, m)? {
            Some((n, section)) => {
                accepted.push(n);
                sections.push(Ok(section));
            }
            None => sections.push(Err(m)),
        }
    }
    if accepted.is_empty() {
        return Err(SdpError::Unacceptable(none_accepted.into()));
    }
    let mids: Vec<&str> = accepted.iter().map(|n: &NegotiatedMedia| n.mid.as_str()).collect();
    let mut out = String::with_capacity(2048);
    write_session_header(&mut out, local, &mids, offer.extmap_allow_mixed);
    for s in &sections {
        match s {
            Ok(s) => write_section(&mut out, local, "passive", s),
            Err(m) => write_rejected(&mut out, m),
        }
    }
    Ok(Negotiated { sdp: out, media: accepted })
}

/// The agreement for one m-line, its feedback flags read off the chosen codec.
fn agreed(
    m: &MediaSection,
    kind: MediaKind,
    codec: &Codec,
    rtx_pt: Option<u8>,
    extmaps: &[Extmap],
    ssrcs: (Option<u32>, Option<u32>),
) -> NegotiatedMedia {
    let (nack, pli, fir, remb, transport_cc) = fb_flags(codec);
    NegotiatedMedia {
        mid: m.mid.clone(),
        kind,
        codec: codec.clone(),
        rtx_pt,
        ext: ExtIds::from_extmaps(extmaps),
        ssrc: ssrcs.0,
        rtx_ssrc: ssrcs.1,
        rids: Vec::new(),
        simulcast: Vec::new(),
        rid_specs: Vec::new(),
        sim_ssrcs: Vec::new(),
        nack,
        pli,
        fir,
        remb,
        transport_cc,
        rcvr_rtt: m.rcvr_rtt,
    }
}

/// Answers a publisher's offer (`publishVideo`): one codec per audio/video m-line (the session's
/// policy for video), RTX when the publisher offered it with NACK, the supported header
/// extensions, `recvonly`.
pub fn answer_publish<'a>(
    offer: &'a RemoteDescription,
    local: &LocalTransport,
    policy: VideoCodecPolicy,
) -> Result<Negotiated, SdpError> {
    let accept = |kind: MediaKind, m: &'a MediaSection| -> Result<Option<Accepted<'a>>, SdpError> {
        let Some(codec) = choose_codec(m, policy) else {
            if kind == MediaKind::Video && policy != VideoCodecPolicy::MediaServerPreferred {
                return Err(SdpError::Unacceptable(format!(
                    "the session forces video codec {policy:?}, which the offer lacks"
                )));
            }
            return Ok(None);
        };
        let rtx_pt = if fb_flags(codec).0 { codec.rtx_pt } else { None };
        let extmaps = supported_extmaps(kind, &m.extmaps);
        // Legacy simulcast: the SIM group's first SSRC (the lowest layer) is the primary.
        let primary = m.sim_ssrcs.first().or(m.ssrcs.first()).copied();
        let rtx_ssrc = primary
            .and_then(|p| m.rtx_pairs.iter().find(|(a, _)| *a == p))
            .map(|(_, r)| *r)
            .filter(|_| rtx_pt.is_some());
        let mut n = agreed(m, kind, codec, rtx_pt, &extmaps, (primary, rtx_ssrc));
        let recv_simulcast =
            if kind == MediaKind::Video { accepted_simulcast(m, codec) } else { Vec::new() };
        if m.simulcast.is_some() {
            n.rids = recv_simulcast.iter().flat_map(|st| st.rids.iter().cloned()).collect();
            n.rid_specs =
                m.rid_specs.iter().filter(|r| r.send && n.rids.contains(&r.id)).cloned().collect();
        } else {
            n.rids = m.rids.clone();
        }
        n.simulcast = recv_simulcast.clone();
        n.sim_ssrcs = m.sim_ssrcs.clone();
        let section = Section {
            kind,
            mid: &m.mid,
            proto: &m.proto,
            direction: Direction::RecvOnly,
            codec,
            rtx_pt,
            extmaps,
            rtcp_rsize: m.rtcp_rsize,
            rcvr_rtt: m.rcvr_rtt,
            send: None,
            recv_simulcast,
        };
        Ok(Some((n, section)))
    };
    answer_with(
        offer,
        local,
        Direction::sends,
        accept,
        "no audio or video m-line ringsfu can receive",
    )
}

/// A published track as a subscriber will receive it.
#[derive(Debug, Clone)]
pub struct OutgoingTrack {
    pub kind: MediaKind,
    /// The publisher's negotiated codec (its payload type is remapped per subscriber).
    pub codec: Codec,
    /// Whether the publisher's track has RTX (ringsfu answers NACKs itself either way).
    pub ssrc: u32,
    pub rtx_ssrc: u32,
    pub cname: String,
    pub stream_id: String,
    pub track_id: String,
}

/// Answers a subscriber's `recvonly` offer (`receiveVideoFrom` with `sdpOffer`): each
/// audio/video m-line gets the published track of its kind, with the subscriber's payload type
/// for the same format; m-lines with no track, or whose codecs cannot carry it, are rejected.
pub fn answer_subscribe<'a>(
    offer: &'a RemoteDescription,
    local: &LocalTransport,
    tracks: &'a [OutgoingTrack],
) -> Result<Negotiated, SdpError> {
    let mut used = vec![false; tracks.len()];
    let accept = |kind: MediaKind, m: &'a MediaSection| -> Result<Option<Accepted<'a>>, SdpError> {
        let found = tracks.iter().enumerate().find_map(|(i, t)| {
            if used[i] || t.kind != kind {
                return None;
            }
            m.codecs.iter().find(|c| c.same_format(&t.codec)).map(|c| (i, t, c))
        });
        let Some((i, track, codec)) = found else { return Ok(None) };
        used[i] = true;
        let rtx_pt =
            if fb_flags(codec).0 && kind == MediaKind::Video { codec.rtx_pt } else { None };
        let rtx_ssrc = rtx_pt.map(|_| track.rtx_ssrc);
        // The Dependency Descriptor only with two-byte elements allowed: with its structure
        // (every keyframe) it is longer than the one-byte form's 16 bytes.
        let extmaps = supported_extmaps(kind, &m.extmaps)
            .into_iter()
            .filter(|e| e.uri != ext::RID && e.uri != ext::REPAIRED_RID)
            .filter(|e| {
                e.uri != ext::DEPENDENCY_DESCRIPTOR
                    || (offer.extmap_allow_mixed && forwards_dd(&track.codec))
            })
            .collect::<Vec<_>>();
        let n = agreed(m, kind, codec, rtx_pt, &extmaps, (Some(track.ssrc), rtx_ssrc));
        let section = Section {
            kind,
            mid: &m.mid,
            proto: &m.proto,
            direction: Direction::SendOnly,
            codec,
            rtx_pt,
            extmaps,
            rtcp_rsize: m.rtcp_rsize,
            rcvr_rtt: m.rcvr_rtt,
            send: Some((track, track.ssrc, rtx_ssrc)),
            recv_simulcast: Vec::new(),
        };
        Ok(Some((n, section)))
    };
    answer_with(
        offer,
        local,
        Direction::receives,
        accept,
        "the offer cannot receive any track of this stream",
    )
}

/// Payload types ringsfu uses in its own offers (Chrome's defaults, so a browser's answer keeps
/// them).
fn offer_pts(kind: MediaKind, codec: &Codec) -> (u8, Option<u8>) {
    match kind {
        MediaKind::Audio => (111, None),
        MediaKind::Video if codec.is("VP8") => (96, Some(97)),
        MediaKind::Video if codec.is("VP9") => (98, Some(99)),
        MediaKind::Video if codec.is("AV1") => (45, Some(46)),
        MediaKind::Video => (102, Some(103)),
    }
}

/// Whether subscribers get the Dependency Descriptor of a track in `codec`: AV1 only, whose
/// SVC frames Chromium assembles from it. A VP8/VP9 publisher's descriptor stays behind: their
/// payload descriptors carry the layers, and the frame numbers of simulcast encodings switched
/// into one stream would go backwards (Chromium drops such frames).
fn forwards_dd(codec: &Codec) -> bool {
    codec.is("AV1")
}

/// The Dependency Descriptor's id in ringsfu's offers (one-byte range; the packets that carry
/// its structure use the two-byte form, `a=extmap-allow-mixed`).
const DD_OFFER_ID: u8 = 11;

/// Writes the server offer for a subscriber (`prepareReceiveVideoFrom`, mediasoup flow): one
/// `sendonly` m-line per track (mids `0`, `1`, ...), `a=setup:actpass`, `a=extmap-allow-mixed`
/// and, for video, the Dependency Descriptor (forwarded when the publisher sends it).
pub fn offer_subscribe(local: &LocalTransport, tracks: &[OutgoingTrack]) -> Negotiated {
    let mut media = Vec::new();
    let mut codecs = Vec::new();
    for (i, t) in tracks.iter().enumerate() {
        let (pt, rtx) = offer_pts(t.kind, &t.codec);
        let mut codec = t.codec.clone();
        codec.pt = pt;
        codec.rtx_pt = rtx;
        codec.rtcp_fb = match t.kind {
            MediaKind::Audio => vec!["transport-cc".into()],
            MediaKind::Video => ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let extmaps: Vec<Extmap> = match t.kind {
            MediaKind::Audio => vec![
                Extmap { id: 1, uri: ext::AUDIO_LEVEL.into() },
                Extmap { id: 2, uri: ext::ABS_SEND_TIME.into() },
                Extmap { id: 3, uri: ext::TWCC.into() },
                Extmap { id: 4, uri: ext::MID.into() },
            ],
            MediaKind::Video => {
                let mut v = vec![
                    Extmap { id: 2, uri: ext::ABS_SEND_TIME.into() },
                    Extmap { id: 3, uri: ext::TWCC.into() },
                    Extmap { id: 4, uri: ext::MID.into() },
                    Extmap { id: 13, uri: ext::VIDEO_ORIENTATION.into() },
                ];
                if forwards_dd(&t.codec) {
                    v.push(Extmap { id: DD_OFFER_ID, uri: ext::DEPENDENCY_DESCRIPTOR.into() });
                }
                v
            }
        };
        let (nack, pli, fir, remb, twcc) = fb_flags(&codec);
        media.push(NegotiatedMedia {
            mid: i.to_string(),
            kind: t.kind,
            codec: codec.clone(),
            rtx_pt: rtx,
            ext: ExtIds::from_extmaps(&extmaps),
            ssrc: Some(t.ssrc),
            rtx_ssrc: rtx.map(|_| t.rtx_ssrc),
            rids: Vec::new(),
            simulcast: Vec::new(),
            rid_specs: Vec::new(),
            sim_ssrcs: Vec::new(),
            nack,
            pli,
            fir,
            remb,
            transport_cc: twcc,
            rcvr_rtt: true,
        });
        codecs.push((codec, extmaps));
    }
    let mids: Vec<String> = media.iter().map(|m| m.mid.clone()).collect();
    let mid_refs: Vec<&str> = mids.iter().map(String::as_str).collect();
    let mut out = String::with_capacity(2048);
    write_session_header(&mut out, local, &mid_refs, true);
    for (i, t) in tracks.iter().enumerate() {
        let (codec, extmaps) = &codecs[i];
        write_section(
            &mut out,
            local,
            "actpass",
            &Section {
                kind: t.kind,
                mid: &mids[i],
                proto: "UDP/TLS/RTP/SAVPF",
                direction: Direction::SendOnly,
                codec,
                rtx_pt: codec.rtx_pt,
                extmaps: extmaps.clone(),
                rtcp_rsize: true,
                rcvr_rtt: true,
                send: Some((t, t.ssrc, media[i].rtx_ssrc)),
                recv_simulcast: Vec::new(),
            },
        );
    }
    Negotiated { sdp: out, media }
}

/// Checks a subscriber's answer to [`offer_subscribe`] and narrows what was agreed to what the
/// answer accepted (rejected m-lines dropped, rtcp-fb and extensions intersected).
pub fn accept_subscribe_answer(
    offered: &Negotiated,
    answer: &RemoteDescription,
) -> Result<Vec<NegotiatedMedia>, SdpError> {
    // Browsers answer `active` (ringsfu is the DTLS server); other stacks may answer
    // `passive`, and then ringsfu connects as the DTLS client.
    if !matches!(answer.setup, Setup::Active | Setup::Passive) {
        return Err(SdpError::Unacceptable(
            "the answer must take a=setup:active or passive".into(),
        ));
    }
    if answer.fingerprint.len() != 32 {
        return Err(SdpError::Missing("a=fingerprint:sha-256"));
    }
    let mut out = Vec::new();
    for n in &offered.media {
        let Some(m) = answer.media.iter().find(|m| m.mid == n.mid) else {
            return Err(SdpError::Unacceptable(format!("the answer lacks mid {}", n.mid)));
        };
        if m.rejected() || !m.direction.receives() {
            continue;
        }
        let Some(codec) = m.codecs.iter().find(|c| c.pt == n.codec.pt) else {
            continue;
        };
        let (nack, pli, fir, remb, twcc) = fb_flags(codec);
        let mut n = n.clone();
        n.ext = ExtIds::from_extmaps(&m.extmaps);
        if !answer.extmap_allow_mixed {
            // Without two-byte elements the descriptor's structure cannot be sent.
            n.ext.dependency_descriptor = 0;
        }
        n.nack = nack;
        n.pli = pli;
        n.fir = fir;
        n.remb = remb;
        n.transport_cc = twcc;
        n.rcvr_rtt = m.rcvr_rtt;
        let rtx_kept = n.rtx_pt.is_some_and(|rtx| m.formats.iter().any(|f| f.parse() == Ok(rtx)));
        if !rtx_kept {
            n.rtx_pt = None;
            n.rtx_ssrc = None;
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(SdpError::Unacceptable("the answer accepts no track".into()));
    }
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
