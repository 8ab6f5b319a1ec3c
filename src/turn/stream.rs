//! TURN over TCP and TLS (RFC 8656 over a stream, RFC 6062 framing: STUN messages and padded
//! ChannelData back to back), served by one thread running a tokio current-thread runtime.
//!
//! This is the fallback path for clients that cannot use UDP, not the scale path: it drives its
//! own [`TurnServer`] (relaying from its own slice of the relay port range, to UDP peers), with
//! one task per connection, one per relay socket and a one-second timer, all on one thread
//! sharing the server through a `RefCell` (no lock, never borrowed across an await). Frames
//! going to a client are owned buffers queued to that connection's writer (bounded; a full
//! queue drops and counts).
//!
//! An allocation made over a connection ends with the connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::server::{FromClient, FromPeer, PEER_HEADROOM};
use super::{FiveTuple, Now, Transport, TurnEvent, TurnServer};
use crate::wire::channel_data::{StreamFrame, stream_frame_len};

/// Frames queued to one client before new ones are dropped.
const WRITE_QUEUE: usize = 1024;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports an Allocate tries before its connection is closed (each port found taken by another
/// socket is set aside, so the next try gets another).
const ALLOCATE_TRIES: u32 = 16;
/// Largest frame: a STUN message or ChannelData of 65535 bytes plus header and padding.
const MAX_FRAME: usize = 65535 + 24;

/// The running TCP/TLS listener thread.
pub(crate) struct StreamServer {
    tcp: SocketAddr,
    tls: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StreamServer {
    /// Binds the listeners (errors name the address) and starts the thread.
    pub fn start(
        server: TurnServer,
        mut reload: super::serve::ReloadHook,
        tcp: SocketAddr,
        tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
        anchor: Instant,
        anchor_unix: u64,
        turns: Arc<crate::shard::ShardStats>,
    ) -> Result<StreamServer, (SocketAddr, io::Error)> {
        let bind = |a: SocketAddr| -> Result<std::net::TcpListener, (SocketAddr, io::Error)> {
            let l = std::net::TcpListener::bind(a).map_err(|e| (a, e))?;
            l.set_nonblocking(true).map_err(|e| (a, e))?;
            Ok(l)
        };
        let tcp_l = bind(tcp)?;
        let tcp = tcp_l.local_addr().map_err(|e| (tcp, e))?;
        let tls_l = match tls {
            Some((a, cfg)) => {
                let l = bind(a)?;
                Some((l.local_addr().map_err(|e| (a, e))?, l, cfg))
            }
            None => None,
        };
        let tls_addr = tls_l.as_ref().map(|(a, _, _)| *a);
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("turn-stream".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "TURN TCP/TLS runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                let shared = Rc::new(Shared {
                    server: RefCell::new(server),
                    relays: RefCell::new(HashMap::new()),
                    conns: RefCell::new(HashMap::new()),
                    anchor,
                    anchor_unix,
                });
                let reload = Box::new(move |s: &mut TurnServer| reload(s));
                local.block_on(&rt, run(shared, reload, tcp_l, tls_l, stop_rx, turns));
            })
            .map_err(|e| (tcp, e))?;
        Ok(StreamServer { tcp, tls: tls_addr, stop, thread: Some(thread) })
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// Stops the thread (connections are dropped) and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Relay {
    socket: Rc<UdpSocket>,
    task: JoinHandle<()>,
}

struct Shared {
    server: RefCell<TurnServer>,
    relays: RefCell<HashMap<SocketAddr, Relay>>,
    conns: RefCell<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    anchor: Instant,
    anchor_unix: u64,
}

impl Shared {
    fn now(&self) -> Now {
        let mono = Instant::now();
        Now { mono, unix: self.anchor_unix + mono.saturating_duration_since(self.anchor).as_secs() }
    }

    /// Relayed addresses opened or closed by the server -> relay sockets and their tasks.
    /// False if a relay socket could not be opened (its allocation is gone again).
    fn drain_events(self: &Rc<Self>) -> bool {
        let mut all_opened = true;
        // Bounded: each event is consumed; a failed bind removes one allocation, which queues
        // one more event (a close) that is then consumed.
        loop {
            let Some(ev) = self.server.borrow_mut().poll_event() else { break };
            match ev {
                TurnEvent::RelayOpened(addr) => match open_relay(addr) {
                    Ok(socket) => {
                        let socket = Rc::new(socket);
                        let task = tokio::task::spawn_local(relay_task(
                            self.clone(),
                            addr,
                            socket.clone(),
                        ));
                        self.relays.borrow_mut().insert(addr, Relay { socket, task });
                    }
                    Err(e) => {
                        tracing::debug!(relay = %addr, error = %e, "cannot open a TURN relay socket");
                        self.server.borrow_mut().relay_port_taken(addr);
                        all_opened = false;
                    }
                },
                TurnEvent::RelayClosed(addr) => {
                    if let Some(r) = self.relays.borrow_mut().remove(&addr) {
                        r.task.abort();
                    }
                }
                // Only servers with in-process delivery probe; this one has none.
                TurnEvent::RelayProbe(_) => {}
            }
        }
        all_opened
    }

    fn send_to_client(&self, five: &FiveTuple, bytes: &[u8]) {
        if let Some(tx) = self.conns.borrow().get(five) {
            let _ = tx.try_send(bytes.to_vec());
        }
    }
}

fn open_relay(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = StdUdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

async fn relay_task(sh: Rc<Shared>, relay: SocketAddr, socket: Rc<UdpSocket>) {
    let mut buf = vec![0u8; PEER_HEADROOM + 65536 + 4];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf[PEER_HEADROOM..PEER_HEADROOM + 65536]).await
        {
            Ok(r) => r,
            // ICMP errors reported on the socket: keep receiving.
            Err(_) => continue,
        };
        let now = sh.now();
        let r = sh.server.borrow_mut().handle_peer(
            now,
            relay,
            peer,
            &mut buf,
            PEER_HEADROOM..PEER_HEADROOM + n,
        );
        if let FromPeer::ToClient { five, range } = r {
            sh.send_to_client(&five, &buf[range]);
        }
    }
}

async fn run(
    sh: Rc<Shared>,
    mut reload: super::serve::ReloadHook,
    tcp: std::net::TcpListener,
    tls: Option<(SocketAddr, std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    mut stop: watch::Receiver<bool>,
    turns: Arc<crate::shard::ShardStats>,
) {
    let timer = {
        let sh = sh.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                // The watchdog's sign of life: one turn per timer tick (a second). A thread
                // stuck in a handler stops it like a stuck shard's loop.
                turns.turn(0, false);
                let now = sh.now();
                sh.server.borrow_mut().handle_timeout(now);
                reload(&mut sh.server.borrow_mut());
                n += 1;
                if n.is_multiple_of(60) {
                    sh.server.borrow_mut().compact_users();
                }
                let _ = sh.drain_events();
            }
        }
    };
    let plain = accept_loop(sh.clone(), tcp, None);
    let secure = async {
        match tls {
            Some((_, l, cfg)) => accept_loop(sh.clone(), l, Some(cfg)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = timer => {}
        _ = plain => {}
        _ = secure => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    for (_, r) in sh.relays.borrow_mut().drain() {
        r.task.abort();
    }
}

async fn accept_loop(
    sh: Rc<Shared>,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "TURN TCP listener");
            return;
        }
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::debug!(error = %e, "TURN TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = stream.local_addr().unwrap_or(client);
        let sh = sh.clone();
        match &acceptor {
            None => {
                let five = FiveTuple { client, server, transport: Transport::Tcp };
                tokio::task::spawn_local(connection(sh, stream, five));
            }
            Some(acc) => {
                let acc = acc.clone();
                tokio::task::spawn_local(async move {
                    let five = FiveTuple { client, server, transport: Transport::Tls };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                        Ok(Ok(tls)) => connection(sh, tls, five).await,
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TURN TLS handshake"),
                        Err(_) => tracing::debug!(%client, "TURN TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// One client connection: frames in, replies and relayed data out, allocation gone at the end.
async fn connection<S>(sh: Rc<Shared>, stream: S, five: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    sh.conns.borrow_mut().insert(five, tx.clone());
    let writer = tokio::task::spawn_local(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 2 * MAX_FRAME];
    let mut out = vec![0u8; 1500];
    let mut have = 0;
    'conn: loop {
        let mut off = 0;
        loop {
            let frame = match stream_frame_len(&buf[off..have]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = %five.client, error = %e, "TURN stream out of sync");
                    break 'conn;
                }
            };
            if off + frame.len() > have {
                break;
            }
            // ChannelData without its stream padding (the core reads the length field).
            let body = match frame {
                StreamFrame::ChannelData { data_len, .. } => &buf[off..off + 4 + data_len],
                StreamFrame::Stun { len } => &buf[off..off + len],
            };
            let now = sh.now();
            let mut r = sh.server.borrow_mut().handle_client(now, five, body, &mut out);
            // Relay sockets first. An Allocate whose port another socket holds is gone again
            // (the port sits out a while): over UDP the client's retransmission gets another
            // port, but over a stream the client never retransmits, so the request is handled
            // again here, each time with another port (bounded; an empty pool answers 508).
            let mut tries = 1;
            while !sh.drain_events() {
                if tries == ALLOCATE_TRIES {
                    tracing::debug!(client = %five.client, "no TURN relay port would open");
                    break 'conn;
                }
                tries += 1;
                r = sh.server.borrow_mut().handle_client(now, five, body, &mut out);
            }
            match r {
                FromClient::Reply { len } => {
                    if tx.try_send(out[..len].to_vec()).is_err() {
                        break 'conn;
                    }
                }
                FromClient::Relay { relay, peer, range } => {
                    let socket = sh.relays.borrow().get(&relay).map(|r| r.socket.clone());
                    if let Some(s) = socket {
                        let _ = s.try_send_to(&body[range], peer);
                    }
                }
                FromClient::Drop(_) => {}
            }
            off += frame.len();
        }
        buf.copy_within(off..have, 0);
        have -= off;
        match rd.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    sh.conns.borrow_mut().remove(&five);
    sh.server.borrow_mut().remove_allocation(&five);
    let _ = sh.drain_events();
    drop(tx);
    let _ = writer.await;
}
