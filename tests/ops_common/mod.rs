//! Helpers for the tests that run the real `ringsfu` binary as systemd would: a notification
//! socket owned by the test, the child process with its stderr collected, signals, and a TLS
//! client that reports the served certificate. A crate that includes this module includes
//! `common` too (`mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpStream, UnixDatagram};

/// Upper bound for any awaited outcome (never asserted as a duration).
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringsfu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback TCP port (bound then released; the server binds it right after), never one
/// handed out before in this process (`common::free_port`: a test crate using these helpers
/// includes `common` too, so one registry of handed-out ports serves both).
pub fn free_port() -> u16 {
    crate::common::free_port()
}

/// A free loopback UDP port (for `media.port_base` with one shard, its TURN port right after),
/// never one handed out before in this process.
pub fn free_udp_port() -> u16 {
    crate::common::free_udp_run()
}

/// The systemd side of `$NOTIFY_SOCKET`: every datagram received so far, and those no
/// [`NotifySocket::wait`] has taken yet.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    pub seen: Vec<String>,
    pending: std::collections::VecDeque<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        NotifySocket {
            sock,
            path: path.to_path_buf(),
            seen: Vec::new(),
            pending: Default::default(),
        }
    }

    /// Forgets the datagrams not taken yet (later waits only see what arrives from now on).
    pub fn forget(&mut self) {
        self.pending.clear();
    }

    /// Every datagram that arrives within `window` (from now on; those not taken yet are kept
    /// for later waits too). For checking that something is NOT sent while a condition holds.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + window;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Bounded by `window`, and by a count in case of a flood.
        for _ in 0..100_000 {
            let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => break,
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(m.clone());
            self.pending.push_back(m.clone());
            got.push(m);
        }
        got
    }

    /// Takes the oldest datagram not taken yet that matches `pred`, waiting for it within WAIT.
    /// Panics naming `what` when none arrives.
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.pending.iter().position(|m| pred(m)) {
            return self.pending.remove(i).expect("index in range");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => panic!("no {what} notification; seen: {:?}", self.seen),
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(m.clone());
            if pred(&m) {
                return m;
            }
            self.pending.push_back(m);
        }
    }
}

/// The running server; killed on drop if still running.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with `args` and `envs` on a clean environment; stderr is collected.
    pub fn spawn(port: u16, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
        c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        // One media shard on a free UDP port, so tests running in parallel do not collide.
        let media = format!("media.port_base={}", free_udp_port());
        c.args(["--port", &port.to_string(), "--set", "media.shards=1", "--set", &media]);
        // The TURN server runs too: its own free port (UDP and TCP) for the same reason.
        let turn = format!("turn.port={}", free_port());
        c.args(["--set", &turn]);
        c.args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn ringsfu");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Server { child, port, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (bounded by WAIT) for the process to exit; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(tokio::time::Instant::now() < deadline, "ringsfu did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A certificate verifier that accepts any server certificate (the test compares the
/// certificate itself) but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects with TLS to the loopback port; returns the stream and the SHA-256 of the served
/// end-entity certificate.
pub async fn tls_connect(port: u16) -> (TlsStream, [u8; 32]) {
    use sha2::Digest;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().expect("peer certificates")[0].clone();
    let fp: [u8; 32] = sha2::Sha256::digest(cert.as_ref()).into();
    (tls, fp)
}

/// SHA-256 of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &str) -> [u8; 32] {
    use base64::Engine;
    use sha2::Digest;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).expect("PEM base64");
    sha2::Sha256::digest(&der).into()
}

/// One HTTP/1.1 request (`Connection: close`) over any stream; returns status and body.
pub async fn http_request<S>(
    mut s: S,
    method: &str,
    path: &str,
    secret: &str,
    body: &str,
) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("OPENVIDUAPP:{secret}"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await.expect("response in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, b)) if head.to_ascii_lowercase().contains("transfer-encoding: chunked") => {
            dechunk(b)
        }
        Some((_, b)) => b.to_string(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = b.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}
