//! Interop with a second independent DTLS client: `webrtc-dtls` (webrtc-rs) in-process on a
//! tokio runtime, against a `DtlsEndpoint` driven by a std UDP loop on loopback.
//!
//! Both sides check each other's certificate fingerprint; the keying material webrtc-dtls
//! exports must equal ours, and SRTP contexts built from each side's export (for each of
//! the three profiles) must unprotect what the other side protects.

mod dtls_common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringsfu::dtls::{
    DtlsCert, DtlsConfig, DtlsContext, DtlsEvent, DtlsFailure, Fingerprint, FingerprintAlg,
    SrtpKeyMaterial, SrtpProfile,
};
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_dtls::crypto::Certificate;
use webrtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use webrtc_util::{Conn, KeyingMaterialExporter};

struct Outcome {
    server_events: Vec<DtlsEvent>,
    /// Profile and export as webrtc-dtls saw them, or its error.
    client: Result<(SrtpProtectionProfile, Vec<u8>), String>,
}

/// Which side is told a wrong fingerprint for its peer.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    ClientFpAtServer,
    ServerFpAtClient,
}

fn run(offer: Vec<SrtpProtectionProfile>, export_len: usize, tamper: Tamper) -> Outcome {
    // webrtc-dtls turns on rustls' `ring` feature next to our `aws_lc_rs`; with both, rustls
    // cannot pick a process default, so pick the one the application uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server_cert = DtlsCert::generate().expect("server cert");
    let mut server_fp = *server_cert.fingerprint();
    if tamper == Tamper::ServerFpAtClient {
        server_fp = Fingerprint::of_der(FingerprintAlg::Sha256, b"someone else");
    }
    let ctx = DtlsContext::new(server_cert, &DtlsConfig::default()).expect("ctx");

    let client_cert =
        Certificate::generate_self_signed(vec!["webrtc-dtls".to_owned()]).expect("client cert");
    let mut client_fp = Fingerprint::of_der(FingerprintAlg::Sha256, &client_cert.certificate[0]);
    if tamper == Tamper::ClientFpAtServer {
        client_fp = Fingerprint::of_der(FingerprintAlg::Sha256, b"someone else");
    }

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    let ep = ctx.server(Instant::now(), client_fp);
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || dtls_common::serve(sock, ep, stop, None, true).0)
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = rt.block_on(async move {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        sock.connect(addr).await.map_err(|e| e.to_string())?;
        let conn: Arc<dyn Conn + Send + Sync> = Arc::new(sock);
        let config = Config {
            certificates: vec![client_cert],
            srtp_protection_profiles: offer,
            extended_master_secret: ExtendedMasterSecretType::Require,
            // WebRTC checks the SDP fingerprint instead of a CA chain.
            insecure_skip_verify: true,
            verify_peer_certificate: Some(Arc::new(move |certs: &[Vec<u8>], _| {
                match certs.first() {
                    Some(der) if server_fp.matches_der(der) => Ok(()),
                    _ => Err(webrtc_dtls::Error::Other("fingerprint mismatch".into())),
                }
            })),
            ..Config::default()
        };
        let dtls =
            tokio::time::timeout(Duration::from_secs(5), DTLSConn::new(conn, config, true, None))
                .await
                .map_err(|_| "handshake timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        let profile = dtls.selected_srtpprotection_profile();
        let state = dtls.connection_state().await;
        let km = state
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], export_len)
            .await
            .map_err(|e| e.to_string())?;
        let _ = dtls.close().await;
        Ok::<_, String>((profile, km))
    });

    // Give the server a moment to see close_notify, then stop it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let server_events = server.join().expect("server thread");
    Outcome { server_events, client }
}

fn expect_connected(events: &[DtlsEvent], profile: SrtpProfile) -> SrtpKeyMaterial {
    match events.first() {
        Some(DtlsEvent::Connected { profile: p, keying_material }) => {
            assert_eq!(*p, profile);
            keying_material.clone()
        }
        other => panic!("expected Connected, got {other:?} (all {events:?})"),
    }
}

/// webrtc-dtls as the client offering `offered` (in that order): the server settles on
/// `want`, both sides export the same keys, and SRTP keyed from each export interoperates.
fn check_profile(offered: Vec<SrtpProtectionProfile>, want: SrtpProfile) {
    let out = run(offered, want.keying_material_len(), Tamper::None);
    let (profile, theirs) = out.client.expect("webrtc-dtls handshake");
    let theirs_profile = match want {
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProfile::AeadAes256Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        SrtpProfile::Aes128CmSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    };
    assert_eq!(profile, theirs_profile);
    let km = expect_connected(&out.server_events, want);
    let mut ours = [0u8; 88];
    let n = km.write_exported(&mut ours).expect("fits");
    assert_eq!(&ours[..n], &theirs[..]);
    // The hand-off: our SRTP keyed from our export (server) and from webrtc-dtls's
    // export (client) talk to each other.
    let client_km = SrtpKeyMaterial::from_exported(want, &theirs).expect("export length");
    dtls_common::check_srtp_handoff(&km, &client_km);
    assert_eq!(out.server_events.get(1), Some(&DtlsEvent::Closed));
}

#[test]
fn webrtc_dtls_gcm128() {
    check_profile(
        vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ],
        SrtpProfile::AeadAes128Gcm,
    );
}

#[test]
fn webrtc_dtls_cm80() {
    check_profile(
        vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
        SrtpProfile::Aes128CmSha1_80,
    );
}

/// AES-256-GCM when the client offers no AES-128-GCM.
#[test]
fn webrtc_dtls_gcm256() {
    check_profile(
        vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ],
        SrtpProfile::AeadAes256Gcm,
    );
}

/// A browser-like offer (AES-256-GCM first): the server's preference wins, AES-128-GCM.
#[test]
fn webrtc_dtls_browser_like_offer_gets_gcm128() {
    check_profile(
        vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ],
        SrtpProfile::AeadAes128Gcm,
    );
}

#[test]
fn webrtc_dtls_fingerprint_mismatch() {
    let out = run(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm], 56, Tamper::ClientFpAtServer);
    assert_eq!(out.server_events, vec![DtlsEvent::Failed(DtlsFailure::FingerprintMismatch)]);
    assert!(out.client.is_err());
}

/// webrtc-dtls rejects our certificate and sends a fatal alert: the server reports it.
#[test]
fn webrtc_dtls_rejects_server_alert_reported() {
    let out = run(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm], 56, Tamper::ServerFpAtClient);
    assert!(out.client.is_err());
    match out.server_events.as_slice() {
        [DtlsEvent::Failed(DtlsFailure::PeerAlert(_))] => {}
        other => panic!("expected a peer alert failure, got {other:?}"),
    }
}
