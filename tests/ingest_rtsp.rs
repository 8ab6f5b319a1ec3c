//! The IP camera ingest against a real RTSP server: GStreamer's (tests/js/lib/rtsp_camera.py,
//! H.264 Constrained Baseline + PCMU) on loopback, read by the ingest thread
//! (`ingest::rtsp::IngestService`) into a camera ring, whose packets are read back here: video
//! depacketized by the recorder's independent depacketizer (every keyframe has its SPS and PPS
//! before the IDR), PCMU passed through, sequence numbers continuous. Then the camera is
//! stopped and the RTSP session ends at the server.
//!
//! Skipped (with a note) when Debian's python3 lacks the GStreamer RTSP bindings, unless
//! RINGSFU_REQUIRE_TOOLS=1 (tools/test.sh installs them).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use ringsfu::ingest::rtsp::{CameraConfig, CameraEvent, IngestCommand, IngestService};
use ringsfu::ingest::{AudioCodec, pt};
use ringsfu::record::depack::{Codec, Depacketizer};
use ringsfu::wire::rtp::RtpView;

const PY: &str = "/usr/bin/python3";

fn have_gst() -> bool {
    Command::new(PY)
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0')"])
        .status()
        .is_ok_and(|s| s.success())
}

struct Camera {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    port: u16,
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Camera {
    fn start() -> Camera {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/lib/rtsp_camera.py");
        let mut child = Command::new(PY)
            .args([script, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut cam = Camera { child, lines, port };
        cam.wait_line("READY");
        cam
    }

    /// The next line starting with `prefix` (bounded: 20 s).
    fn wait_line(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("camera: no {prefix} line ({e})"),
            }
        }
    }
}

#[test]
fn a_camera_is_read_into_its_ring_with_parameter_sets_before_each_idr() {
    if !have_gst() {
        assert!(
            std::env::var("RINGSFU_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "python3-gi with GstRtspServer is required"
        );
        eprintln!("skipped: {PY} lacks GStreamer's RTSP server bindings");
        return;
    }
    let mut cam = Camera::start();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let service = IngestService::start(tx).unwrap();
    let camera = CameraConfig {
        rtsp_uri: format!("rtsp://127.0.0.1:{}/cam", cam.port),
        only_play_with_subscribers: false,
        network_cache: Duration::from_millis(500),
        adaptative_bitrate: true,
    };
    service.send(IngestCommand::Start { key: 7, camera, wake: None });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (layout, ssrcs, feed) = loop {
        assert!(Instant::now() < deadline, "no Ready event");
        match events.try_recv() {
            Ok(CameraEvent::Ready { key, layout, ssrcs, feed }) => {
                assert_eq!(key, 7);
                break (layout, ssrcs, feed);
            }
            Ok(CameraEvent::Lost { error, .. }) => panic!("camera lost: {error}"),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(layout.video.as_deref().is_some_and(|v| v.starts_with("42e0")), "{layout:?}");
    assert_eq!(layout.audio, Some(AudioCodec::Pcmu));
    assert!(layout.notes.is_empty(), "{:?}", layout.notes);
    assert_eq!(ssrcs.len(), 2);
    cam.wait_line("SESSION-START");

    let mut reader = feed.into_reader().unwrap();
    let mut depack = Depacketizer::new(Codec::H264);
    let (mut keyframes, mut frames, mut audio) = (0, 0, 0);
    let mut last_seq: [Option<u16>; 2] = [None, None];
    let until = Instant::now() + Duration::from_secs(30);
    while keyframes < 3 && Instant::now() < until {
        let Some(p) = reader.pop() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let v = RtpView::parse(&p).expect("an RTP packet");
        let track = usize::from(v.ssrc() != ssrcs[0]);
        if let Some(prev) = last_seq[track] {
            assert_eq!(v.sequence_number(), prev.wrapping_add(1), "continuous sequence numbers");
        }
        last_seq[track] = Some(v.sequence_number());
        if track == 1 {
            assert_eq!((v.ssrc(), v.payload_type()), (ssrcs[1], pt::PCMU));
            assert!(!v.payload().is_empty());
            audio += 1;
            continue;
        }
        assert_eq!(v.payload_type(), pt::H264);
        assert!(p.len() <= 12 + ringsfu::ingest::h264::MAX_PAYLOAD);
        depack.push(v.timestamp(), v.marker(), v.payload(), false);
        while let Some(f) = depack.poll_frame() {
            frames += 1;
            let mut types = Vec::new();
            let mut at = 0;
            while let Some(len) = f.data.get(at..at + 4) {
                let n = u32::from_be_bytes(len.try_into().unwrap()) as usize;
                types.push(f.data[at + 4] & 0x1F);
                at += 4 + n;
            }
            if let Some(idr) = types.iter().position(|&t| t == 5) {
                keyframes += 1;
                let sps = types.iter().position(|&t| t == 7);
                let pps = types.iter().position(|&t| t == 8);
                assert!(sps.is_some_and(|s| s < idr) && pps.is_some_and(|p| p < idr), "{types:?}");
            }
            assert!(!types.contains(&9), "access unit delimiters are dropped");
        }
    }
    assert!(keyframes >= 3, "keyframes {keyframes}, frames {frames}");
    assert!(frames > keyframes && audio > 10, "frames {frames}, audio packets {audio}");

    service.send(IngestCommand::Stop { key: 7 });
    cam.wait_line("SESSION-END");
}
