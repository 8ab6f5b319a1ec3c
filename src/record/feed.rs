//! The COMPOSED feed, ringsfu's side of a composer process (`ringsfu-composer`): the process
//! launched with one end of a `SOCK_SEQPACKET` socket pair as fd 3, and one thread per
//! composition that drains the recorder rings of the recorded streams into that socket as
//! [`compose_wire`] frames, passes the composer's keyframe requests back to the shards, and
//! watches the process.
//!
//! The shard never waits on the composer: it pushes into a recorder ring ([`writer::ring`]), a
//! full ring drops and counts; this thread sends with `MSG_DONTWAIT`, and a full socket (a slow
//! composer) drops the packet and counts it here. Control frames (a stream added or removed,
//! the end) are queued instead and go first. A stream leaves when the shard lets go of its ring
//! (detached, or the publisher left): the composer is told and re-lays the grid.
//!
//! Outcome ([`FeedEvent`]): `Finished` only when the composer said `Done` and exited with
//! status 0; a composer that exits otherwise, is killed, reports an error (disk full) or does
//! not finish within [`STOP_TIMEOUT`] of the end gives `Failed` with the reason, and its
//! half-written file is never reported.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::Thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::compose_wire::{Frame, MAX_FRAME, RtpHeader, TrackKind, write_rtp};
use super::mkv::TrackKind as RingTrack;
use super::writer::{RecorderInput, Request, RingItem, RingReader, ring};

/// How long the composer may take to finish its file after the end (the encoder's queue, the
/// muxer's index, the thumbnail).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the feed thread looks at its rings when nobody wakes it.
const POLL: Duration = Duration::from_millis(5);
/// Messages drained per ring per turn.
const BATCH: usize = 256;
/// The composer's socket send buffer asked for (the kernel may cap it).
const SNDBUF: usize = 4 << 20;

/// A composer process waiting for its [`Frame::Start`] (launched ahead for
/// COMPOSED_QUICK_START, or just before the composition).
pub struct Composer {
    child: Child,
    sock: OwnedFd,
}

impl Composer {
    /// Launches `program` with the socket as fd 3 (`--fd 3`).
    pub fn launch(program: &Path) -> io::Result<Composer> {
        let (ours, theirs) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
        let _ = ours.set_send_buffer_size(SNDBUF);
        ours.set_nonblocking(true)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.arg("--fd").arg("3");
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        Ok(Composer { child, sock: ours.into() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends a composer never used.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to compose.
#[derive(Clone, Debug)]
pub struct StartParams {
    pub width: u16,
    pub height: u16,
    pub fps: u16,
    pub has_audio: bool,
    pub has_video: bool,
    /// `<dir>/<name>.mp4` or `.webm`.
    pub path: PathBuf,
    /// `<dir>/<id>.jpg`, with video.
    pub thumbnail: Option<PathBuf>,
}

/// One track of a recorded stream as negotiated.
#[derive(Clone, Debug)]
pub struct TrackSpec {
    pub pt: u8,
    pub clock_rate: u32,
    /// SDP name (`VP8`, `H264`, `opus`, …).
    pub codec: String,
}

/// How a composition ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedEvent {
    /// The file is complete.
    Finished {
        size: u64,
        duration_ms: u64,
        /// When the composer started (its file's time 0) and ended, by the system clock.
        started: std::time::SystemTime,
        ended: std::time::SystemTime,
    },
    Failed {
        reason: String,
    },
}

enum Cmd {
    Add(Box<Stream>),
    Stop,
}

/// The control plane's end of a composition.
pub struct FeedHandle {
    tx: mpsc::Sender<Cmd>,
    thread: Thread,
    next_stream: Arc<AtomicU16>,
}

impl FeedHandle {
    /// Adds a stream (its audio and/or video track): the input goes to the publisher's shard.
    pub fn add_stream(
        &self,
        audio: Option<TrackSpec>,
        video: Option<TrackSpec>,
        ring_slots: usize,
    ) -> RecorderInput {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (input, reader) = ring(ring_slots, self.thread.clone());
        let s = Stream { id, ring: reader, audio, video, announced: false };
        let _ = self.tx.send(Cmd::Add(Box::new(s)));
        self.thread.unpark();
        input
    }

    /// Finishes the file; the [`FeedEvent`] follows.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
        self.thread.unpark();
    }
}

struct Stream {
    id: u16,
    ring: RingReader,
    audio: Option<TrackSpec>,
    video: Option<TrackSpec>,
    announced: bool,
}

impl Stream {
    fn track_id(&self, kind: TrackKind) -> u16 {
        self.id.wrapping_mul(2).wrapping_add(u16::from(kind == TrackKind::Video))
    }
}

/// Starts the composition on `composer`; `on_event` runs on the feed thread, once.
pub fn spawn(
    composer: Composer,
    start: StartParams,
    on_event: impl FnOnce(FeedEvent) + Send + 'static,
) -> io::Result<FeedHandle> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new().name("ringsfu-compose".into()).spawn(move || {
        let mut f = Feed {
            composer,
            rx,
            streams: Vec::new(),
            control: std::collections::VecDeque::new(),
            buf: Vec::with_capacity(MAX_FRAME),
            ready: false,
            gone: false,
            stopping: None,
            done: None,
            error: None,
            dropped: 0,
            started: std::time::SystemTime::now(),
        };
        let ev = f.run(&start);
        if f.dropped > 0 {
            tracing::warn!(dropped = f.dropped, "composer feed: packets dropped (composer slow)");
        }
        on_event(ev);
    })?;
    let thread = thread.thread().clone();
    Ok(FeedHandle { tx, thread, next_stream: Arc::new(AtomicU16::new(0)) })
}

enum Sent {
    Ok,
    Full,
    Gone,
}

struct Feed {
    composer: Composer,
    rx: mpsc::Receiver<Cmd>,
    streams: Vec<Stream>,
    control: std::collections::VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    ready: bool,
    gone: bool,
    stopping: Option<Instant>,
    done: Option<(u64, u64)>,
    error: Option<String>,
    dropped: u64,
    started: std::time::SystemTime,
}

fn send(fd: &OwnedFd, b: &[u8]) -> Sent {
    // SAFETY: `b` is a valid slice for the duration of the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Sent::Ok;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Sent::Full,
        Some(libc::EINTR) => Sent::Full,
        _ => Sent::Gone,
    }
}

fn exit_reason(s: ExitStatus) -> String {
    match s.signal() {
        Some(sig) => format!("the composer was killed (signal {sig})"),
        None => format!("the composer exited with status {}", s.code().unwrap_or(-1)),
    }
}

impl Feed {
    fn queue(&mut self, f: Frame<'_>) {
        let mut b = Vec::new();
        f.write(&mut b);
        self.control.push_back(b);
    }

    fn announce(&mut self, i: usize) {
        let Some(s) = self.streams.get_mut(i) else { return };
        if s.announced {
            return;
        }
        s.announced = true;
        let (id, audio, video) = (s.id, s.audio.clone(), s.video.clone());
        let ta = s.track_id(TrackKind::Audio);
        let tv = s.track_id(TrackKind::Video);
        for (kind, t, tid) in [(TrackKind::Audio, audio, ta), (TrackKind::Video, video, tv)] {
            if let Some(t) = t {
                self.queue(Frame::StreamAdded {
                    track: tid,
                    stream: id,
                    kind,
                    pt: t.pt,
                    clock_rate: t.clock_rate,
                    codec: &t.codec,
                });
            }
        }
        if let Some(s) = self.streams.get_mut(i)
            && s.video.is_some()
        {
            s.ring.request(Request::Pli);
        }
    }

    fn run(&mut self, start: &StartParams) -> FeedEvent {
        let path = start.path.to_string_lossy().into_owned();
        let thumb =
            start.thumbnail.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        self.queue(Frame::Start {
            width: start.width,
            height: start.height,
            fps: start.fps,
            has_audio: start.has_audio,
            has_video: start.has_video,
            path: &path,
            thumbnail: &thumb,
        });
        self.started = std::time::SystemTime::now();
        loop {
            let mut busy = false;
            while let Ok(cmd) = self.rx.try_recv() {
                match cmd {
                    Cmd::Add(s) => {
                        self.streams.push(*s);
                        if self.ready {
                            self.announce(self.streams.len() - 1);
                        }
                    }
                    Cmd::Stop => {
                        if self.stopping.is_none() {
                            self.stopping = Some(Instant::now());
                            self.queue(Frame::End);
                        }
                    }
                }
            }
            self.receive();
            self.flush_control();
            busy |= self.pump();
            match self.composer.child.try_wait() {
                Ok(Some(status)) => return self.outcome(status),
                Ok(None) => {}
                Err(e) => return FeedEvent::Failed { reason: format!("composer: {e}") },
            }
            if self.gone {
                // The socket is closed: the process is ending; its status says how.
                return match self.composer.child.wait() {
                    Ok(s) => self.outcome(s),
                    Err(e) => FeedEvent::Failed { reason: format!("composer: {e}") },
                };
            }
            if self.stopping.is_some_and(|t| t.elapsed() > STOP_TIMEOUT) {
                let _ = self.composer.child.kill();
                let _ = self.composer.child.wait();
                return FeedEvent::Failed {
                    reason: "the composer did not finish the file in time".into(),
                };
            }
            if !busy {
                std::thread::park_timeout(POLL);
            }
        }
    }

    fn outcome(&self, status: ExitStatus) -> FeedEvent {
        match (self.done, &self.error) {
            (Some((size, duration_ms)), None) if status.success() => FeedEvent::Finished {
                size,
                duration_ms,
                started: self.started,
                ended: std::time::SystemTime::now(),
            },
            (_, Some(e)) => FeedEvent::Failed { reason: e.clone() },
            _ if self.stopping.is_none() => {
                FeedEvent::Failed { reason: format!("{} while recording", exit_reason(status)) }
            }
            _ => FeedEvent::Failed { reason: exit_reason(status) },
        }
    }

    /// The composer's messages.
    fn receive(&mut self) {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.composer.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 {
                self.gone = true;
                return;
            }
            if n < 0 {
                let e = io::Error::last_os_error().raw_os_error();
                if !matches!(e, Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    self.gone = true;
                }
                return;
            }
            let msg = buf.get(..n as usize).unwrap_or(&[]);
            match Frame::parse(msg) {
                Ok(Frame::Ready) => {
                    self.ready = true;
                    for i in 0..self.streams.len() {
                        self.announce(i);
                    }
                }
                Ok(Frame::Keyframe { track }) => {
                    if let Some(s) = self.streams.iter_mut().find(|s| s.id == track / 2) {
                        s.ring.request(Request::Pli);
                    }
                }
                Ok(Frame::Done { size, duration_ms }) => self.done = Some((size, duration_ms)),
                Ok(Frame::Error { reason }) => {
                    tracing::warn!(%reason, "composer error");
                    self.error.get_or_insert_with(|| reason.to_string());
                }
                Ok(f) => tracing::debug!(?f, "composer: unexpected frame"),
                Err(e) => tracing::warn!(error = %e, "composer: malformed frame"),
            }
        }
    }

    fn flush_control(&mut self) {
        while let Some(b) = self.control.front() {
            match send(&self.composer.sock, b) {
                Sent::Ok => {
                    self.control.pop_front();
                }
                Sent::Full => return,
                Sent::Gone => {
                    self.gone = true;
                    return;
                }
            }
        }
    }

    /// Drains every ring into the socket; true if anything was there. Streams whose ring the
    /// shard let go are removed (the composer re-lays the grid).
    fn pump(&mut self) -> bool {
        let mut any = false;
        let forward = self.ready && self.stopping.is_none();
        let mut i = 0;
        while i < self.streams.len() {
            let Feed { streams, buf, composer, control, dropped, gone, .. } = self;
            let s = &mut streams[i];
            let (id, apt, vpt) =
                (s.id, s.audio.as_ref().map(|t| t.pt), s.video.as_ref().map(|t| t.pt));
            for _ in 0..BATCH {
                let popped = s.ring.pop(|item| {
                    let RingItem::Rtp { track, seq, timestamp, marker, payload } = item else {
                        return;
                    };
                    let (kind, pt) = match track {
                        RingTrack::Audio => (TrackKind::Audio, apt),
                        RingTrack::Video => (TrackKind::Video, vpt),
                    };
                    let Some(pt) = pt else { return };
                    if !forward || !control.is_empty() {
                        *dropped += u64::from(forward);
                        return;
                    }
                    let tid = id.wrapping_mul(2).wrapping_add(u16::from(kind == TrackKind::Video));
                    let h = RtpHeader { pt, marker, seq, timestamp, ssrc: u32::from(tid) + 1 };
                    write_rtp(buf, tid, h, payload);
                    match send(&composer.sock, buf) {
                        Sent::Ok => {}
                        Sent::Full => *dropped += 1,
                        Sent::Gone => *gone = true,
                    }
                });
                if !popped {
                    break;
                }
                any = true;
            }
            if s.ring.is_finished() {
                let s = self.streams.remove(i);
                if s.announced {
                    for (t, k) in [(&s.audio, TrackKind::Audio), (&s.video, TrackKind::Video)] {
                        if t.is_some() {
                            self.queue(Frame::StreamRemoved { track: s.track_id(k) });
                        }
                    }
                }
                continue;
            }
            i += 1;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in composer: a shell script.
    fn script(tag: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringsfu-feed-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("composer");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn run(program: &Path) -> FeedEvent {
        let c = Composer::launch(program).unwrap();
        let start = StartParams {
            width: 640,
            height: 360,
            fps: 25,
            has_audio: true,
            has_video: true,
            path: PathBuf::from("/nonexistent/x.mp4"),
            thumbnail: None,
        };
        let (tx, rx) = mpsc::channel();
        let h = spawn(c, start, move |e| tx.send(e).unwrap()).unwrap();
        let _input = h.add_stream(
            None,
            Some(TrackSpec { pt: 96, clock_rate: 90000, codec: "VP8".into() }),
            64,
        );
        rx.recv_timeout(Duration::from_secs(20)).unwrap()
    }

    #[test]
    fn a_composer_that_exits_fails_the_composition_with_its_status() {
        let p = script("exit", "exit 3");
        let ev = run(&p);
        assert_eq!(
            ev,
            FeedEvent::Failed {
                reason: "the composer exited with status 3 while recording".into()
            }
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_killed_composer_is_reported_killed() {
        let p = script("kill", "kill -9 $$");
        let ev = run(&p);
        assert_eq!(
            ev,
            FeedEvent::Failed {
                reason: "the composer was killed (signal 9) while recording".into()
            }
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_missing_composer_cannot_launch() {
        assert!(Composer::launch(Path::new("/nonexistent/ringsfu-composer")).is_err());
    }

    #[test]
    fn the_socket_is_fd_3_in_the_composer() {
        // The script checks fd 3 is a socket and exits 0 only then; a clean exit without `Done`
        // is still a failure (nothing was finished).
        let p = script("fd3", "[ -S /proc/self/fd/3 ] || exit 7; exit 0");
        let ev = run(&p);
        assert_eq!(
            ev,
            FeedEvent::Failed {
                reason: "the composer exited with status 0 while recording".into()
            }
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}
