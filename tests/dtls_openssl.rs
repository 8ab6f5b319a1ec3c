//! Interop with an independent DTLS client: the OpenSSL command line (`openssl s_client`)
//! against a `DtlsEndpoint` driven by a tiny UDP loop on loopback.
//!
//! Checks the handshake, the negotiated SRTP profile and that the `EXTRACTOR-dtls_srtp`
//! export OpenSSL prints equals ours. Also checks our SDP fingerprint against
//! `openssl x509 -fingerprint`. Skips (loudly) when no `openssl` binary is installed, or
//! fails then under `RINGSFU_REQUIRE_TOOLS` (as `tools/test.sh` runs it).

mod common;
mod dtls_common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringsfu::dtls::{
    DtlsCert, DtlsConfig, DtlsContext, DtlsEvent, DtlsFailure, DtlsStats, Fingerprint,
    FingerprintAlg, SrtpProfile,
};

fn have_openssl() -> bool {
    common::tools_present(&["openssl"], "apt-get install openssl")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ringsfu-dtls-{tag}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) -> String {
    let out =
        Command::new("openssl").args(args).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl x509 -fingerprint -sha256` output ("sha256 Fingerprint=AB:..") as a Fingerprint.
fn openssl_fingerprint(cert: &Path, inform: &str) -> Fingerprint {
    let out = openssl(&[
        "x509",
        "-inform",
        inform,
        "-in",
        cert.to_str().expect("utf8 path"),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let hex = out.trim().split_once('=').expect("Fingerprint=...").1.to_string();
    Fingerprint::parse_sdp(&format!("sha-256 {hex}")).expect("parse openssl fingerprint")
}

/// A client certificate made by OpenSSL itself (ECDSA P-256), with its fingerprint.
fn openssl_client_cert(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let cert = dir.join("client.pem");
    let key = dir.join("client.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=openssl-client",
        "-keyout",
        key.to_str().expect("utf8"),
        "-out",
        cert.to_str().expect("utf8"),
    ]);
    let fp = openssl_fingerprint(&cert, "PEM");
    (cert, key, fp)
}

struct ClientRun {
    stdout: String,
    events: Vec<DtlsEvent>,
    stats: DtlsStats,
}

/// Runs `openssl s_client` against a fresh endpoint of `ctx`.
fn run_s_client(
    ctx: &DtlsContext,
    (cert, key): (&Path, &Path),
    expected_client_fp: Fingerprint,
    srtp: &str,
    keymatlen: usize,
) -> ClientRun {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    let ep = ctx.server(Instant::now(), expected_client_fp);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let server = {
        let (stop, failed) = (stop.clone(), failed.clone());
        thread::spawn(move || dtls_common::serve(sock, ep, stop, Some(failed), false))
    };
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-cert",
            cert.to_str().expect("utf8"),
            "-key",
            key.to_str().expect("utf8"),
            "-use_srtp",
            srtp,
            "-keymatexport",
            "EXTRACTOR-dtls_srtp",
            "-keymatexportlen",
            &keymatlen.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    // s_client exits by itself after the handshake (stdin is at EOF); if the handshake
    // cannot finish it would retransmit for a long time, so stop it once the server failed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none()
        && Instant::now() < deadline
        && !failed.load(Ordering::Relaxed)
    {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    // Let the server process the client's close_notify.
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (events, stats) = server.join().expect("server thread");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if events.is_empty() || !stdout.contains("Keying material") {
        eprintln!("s_client stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    ClientRun { stdout, events, stats }
}

fn keying_material_hex(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Keying material: "))
        .expect("s_client printed keying material")
        .trim()
        .to_ascii_uppercase()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn server_ctx() -> DtlsContext {
    DtlsContext::new(DtlsCert::generate().expect("cert"), &DtlsConfig::default()).expect("ctx")
}

fn check_profile(srtp_offer: &str, expect: SrtpProfile) {
    let dir = TempDir::new(expect.as_str());
    let ctx = server_ctx();
    // The client's certificate fingerprint, as its SDP would carry it, computed by OpenSSL.
    let (cert, key, fp) = openssl_client_cert(&dir.0);
    let run = run_s_client(&ctx, (&cert, &key), fp, srtp_offer, expect.keying_material_len());
    let km = match run.events.first() {
        Some(DtlsEvent::Connected { profile, keying_material }) => {
            assert_eq!(*profile, expect);
            keying_material.clone()
        }
        other => panic!("expected Connected, got {other:?} (all: {:?})", run.events),
    };
    assert!(
        run.stdout.contains(&format!("SRTP Extension negotiated, profile={}", expect.name())),
        "{}",
        run.stdout
    );
    let mut ours = [0u8; 88];
    let n = km.write_exported(&mut ours).expect("fits");
    assert_eq!(n, expect.keying_material_len());
    assert_eq!(keying_material_hex(&run.stdout), hex(&ours[..n]));
    // s_client closes with close_notify when stdin hits EOF.
    assert_eq!(run.events.get(1), Some(&DtlsEvent::Closed), "{:?}", run.events);
    assert_eq!(run.stats.dropped, [0; ringsfu::dtls::DropReason::COUNT]);
}

#[test]
fn openssl_gcm_preferred() {
    if !have_openssl() {
        return;
    }
    check_profile("SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80", SrtpProfile::AeadAes128Gcm);
}

/// A browser-like offer (AES-256-GCM first): the server's preference wins, AES-128-GCM.
#[test]
fn openssl_browser_like_offer_gets_gcm128() {
    if !have_openssl() {
        return;
    }
    check_profile(
        "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80",
        SrtpProfile::AeadAes128Gcm,
    );
}

/// AES-256-GCM when the client offers no AES-128-GCM.
#[test]
fn openssl_gcm256_when_offered_alone_with_cm80() {
    if !have_openssl() {
        return;
    }
    check_profile("SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80", SrtpProfile::AeadAes256Gcm);
}

#[test]
fn openssl_cm80_only() {
    if !have_openssl() {
        return;
    }
    check_profile("SRTP_AES128_CM_SHA1_80", SrtpProfile::Aes128CmSha1_80);
}

#[test]
fn openssl_fingerprint_mismatch_fails() {
    if !have_openssl() {
        return;
    }
    let dir = TempDir::new("mismatch");
    let ctx = server_ctx();
    let wrong = Fingerprint::of_der(FingerprintAlg::Sha256, b"some other certificate");
    let (cert, key, _) = openssl_client_cert(&dir.0);
    let run = run_s_client(
        &ctx,
        (&cert, &key),
        wrong,
        "SRTP_AEAD_AES_128_GCM",
        SrtpProfile::AeadAes128Gcm.keying_material_len(),
    );
    assert_eq!(run.events, vec![DtlsEvent::Failed(DtlsFailure::FingerprintMismatch)]);
    assert!(!run.stdout.contains("Keying material"));
}

#[test]
fn sdp_fingerprint_matches_openssl() {
    if !have_openssl() {
        return;
    }
    let dir = TempDir::new("fp");
    let cert = DtlsCert::generate().expect("cert");
    let der = dir.0.join("server.der");
    std::fs::write(&der, cert.certificate_der()).expect("write");
    let theirs = openssl_fingerprint(&der, "DER");
    assert_eq!(&theirs, cert.fingerprint());
    assert_eq!(theirs.to_string(), cert.sdp_fingerprint());
    // And OpenSSL can parse our certificate as ECDSA P-256.
    let text =
        openssl(&["x509", "-inform", "DER", "-in", der.to_str().expect("utf8"), "-noout", "-text"]);
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
}
