//! Shared by the DTLS tests: a UDP loop serving one endpoint, and the DTLS -> SRTP hand-off
//! check.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringsfu::dtls::{DtlsEndpoint, DtlsEvent, DtlsRole, DtlsStats, SrtpKeyMaterial};
use ringsfu::srtp::{SrtpContext, SrtpError};

/// Serves `ep` on `sock` (answering whoever sent last) until `stop` is set, or, with
/// `until_terminal`, until the endpoint fails or closes. Sets `failed` when it fails. Returns
/// the endpoint's events and counters.
pub fn serve(
    sock: UdpSocket,
    mut ep: DtlsEndpoint,
    stop: Arc<AtomicBool>,
    failed: Option<Arc<AtomicBool>>,
    until_terminal: bool,
) -> (Vec<DtlsEvent>, DtlsStats) {
    let mut events = Vec::new();
    let mut rx = [0u8; 2048];
    let mut tx = [0u8; 1500];
    let mut peer: Option<SocketAddr> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = ep
            .poll_timeout()
            .map_or(Duration::from_millis(20), |t| t.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        sock.set_read_timeout(Some(wait)).expect("timeout");
        match sock.recv_from(&mut rx) {
            Ok((n, from)) => {
                peer = Some(from);
                ep.handle_packet(Instant::now(), &rx[..n]);
            }
            Err(_) => ep.handle_timeout(Instant::now()),
        }
        while let Some(n) = ep.poll_transmit(&mut tx) {
            if let Some(p) = peer {
                sock.send_to(&tx[..n], p).expect("send");
            }
        }
        while let Some(e) = ep.poll_event() {
            if matches!(e, DtlsEvent::Failed(_))
                && let Some(f) = &failed
            {
                f.store(true, Ordering::Relaxed);
            }
            let terminal = matches!(e, DtlsEvent::Failed(_) | DtlsEvent::Closed);
            events.push(e);
            if terminal && until_terminal {
                return (events, *ep.stats());
            }
        }
    }
    (events, *ep.stats())
}

/// A plaintext RTP packet: 12-byte header (PT 96, `seq`, `ssrc`) and `payload` bytes.
fn rtp(ssrc: u32, seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload).map(|i| (i * 31 + usize::from(seq)) as u8));
    p
}

/// A plaintext RTCP receiver report (sender SSRC `ssrc`, one report block).
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24u8).map(|i| i.wrapping_mul(7)));
    p
}

fn send_rtp(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + tx.profile().rtp_overhead(), 0);
    let n = tx.protect_rtp(&mut buf, plain.len(), 12).expect("protect rtp");
    buf.truncate(n);
    buf
}

fn send_rtcp(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + tx.profile().rtcp_overhead(), 0);
    let n = tx.protect_rtcp(&mut buf, plain.len()).expect("protect rtcp");
    buf.truncate(n);
    buf
}

fn recv_rtp(rx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtp.to_vec();
    let n = rx.unprotect_rtp(&mut buf, 12)?;
    buf.truncate(n);
    Ok(buf)
}

fn recv_rtcp(rx: &mut SrtpContext, srtcp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtcp.to_vec();
    let n = rx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Builds SRTP contexts on both ends of a finished handshake from the keys each end
/// exported (`server` from the DTLS server, `client` from the DTLS client) with
/// `SrtpContext::from_dtls_keys`, and checks that SRTP and SRTCP protected by one side
/// unprotect on the other, in both directions, and not on the sender's own inbound side.
pub fn check_srtp_handoff(server: &SrtpKeyMaterial, client: &SrtpKeyMaterial) {
    assert_eq!(server.profile, client.profile);
    let profile = server.profile;
    let (mut s_tx, mut s_rx) =
        SrtpContext::from_dtls_keys(server, DtlsRole::Server).expect("server contexts");
    let (mut c_tx, mut c_rx) =
        SrtpContext::from_dtls_keys(client, DtlsRole::Client).expect("client contexts");
    for ctx in [&s_tx, &s_rx, &c_tx, &c_rx] {
        assert_eq!(ctx.profile(), profile);
    }

    for seq in [65533u16, 65534, 65535, 0, 1] {
        // Browser (client) -> SFU (server): RTP and RTCP.
        let plain = rtp(0xb00b_0001, seq, 900);
        let srtp = send_rtp(&mut c_tx, &plain);
        assert_ne!(&srtp[12..plain.len()], &plain[12..], "{profile}: payload encrypted");
        assert_eq!(recv_rtp(&mut s_rx, &srtp).as_deref(), Ok(&plain[..]), "{profile} c->s");
        assert_eq!(recv_rtp(&mut c_rx, &srtp), Err(SrtpError::AuthFailed), "{profile}");
        let plain = rtcp(0xb00b_0001);
        let srtcp = send_rtcp(&mut c_tx, &plain);
        assert_eq!(recv_rtcp(&mut s_rx, &srtcp).as_deref(), Ok(&plain[..]), "{profile} c->s");
        assert_eq!(recv_rtcp(&mut c_rx, &srtcp), Err(SrtpError::AuthFailed), "{profile}");

        // SFU (server) -> browser (client): RTP through the fused forwarding path, RTCP.
        let plain = rtp(0x5f0_0002, seq, 1100);
        let mut dst = vec![0u8; 1500];
        let n = s_tx.protect_rtp_into(&plain, 12, &mut dst).expect("protect into");
        assert_eq!(recv_rtp(&mut c_rx, &dst[..n]).as_deref(), Ok(&plain[..]), "{profile} s->c");
        assert_eq!(recv_rtp(&mut s_rx, &dst[..n]), Err(SrtpError::AuthFailed), "{profile}");
        let plain = rtcp(0x5f0_0002);
        let srtcp = send_rtcp(&mut s_tx, &plain);
        assert_eq!(recv_rtcp(&mut c_rx, &srtcp).as_deref(), Ok(&plain[..]), "{profile} s->c");
        assert_eq!(recv_rtcp(&mut s_rx, &srtcp), Err(SrtpError::AuthFailed), "{profile}");
    }
    assert_eq!(s_rx.roc(0xb00b_0001), Some(1), "{profile}: crossed the sequence wrap");
    assert_eq!(c_rx.roc(0x5f0_0002), Some(1));

    // The raw-export path agrees with the key-material path.
    let mut exported = [0u8; 88];
    let n = server.write_exported(&mut exported).expect("fits");
    let (mut raw_tx, _) =
        SrtpContext::from_dtls(profile, &exported[..n], DtlsRole::Server).expect("raw");
    let plain = rtp(0x5f0_0003, 9, 300);
    let (mut s_tx, _) = SrtpContext::from_dtls_keys(server, DtlsRole::Server).expect("server");
    assert_eq!(send_rtp(&mut raw_tx, &plain), send_rtp(&mut s_tx, &plain));
}
