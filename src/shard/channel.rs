//! Control plane <-> shard queues: bounded wait-free SPSC rings (`rtrb`) plus an eventfd wake.
//!
//! Commands: the control plane pushes, then writes the shard's command eventfd; the shard's
//! backend has that eventfd in its ring (io_uring READ) or its epoll set, and drains the queue
//! with a per-turn budget.
//!
//! Events: the shard pushes while draining [`crate::shard::ShardCore::poll_event`] and writes
//! the event eventfd at most once per loop turn. The control plane awaits it with
//! [`EventReceiver::recv`] (the eventfd registered in tokio's reactor through `AsyncFd`, no extra
//! thread and no tokio type on the shard side), or polls it with [`EventReceiver::try_recv`] /
//! [`EventReceiver::recv_timeout`] outside tokio.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, RingBuffer};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::io::sys::EventFd;

/// Why a command was not queued; the command is handed back.
pub enum SendError<T> {
    /// The queue is full (the shard is behind); retry later or shed load.
    Full(T),
    /// The shard has stopped.
    Closed(T),
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "shard command queue full",
            SendError::Closed(_) => "shard stopped",
        })
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The control plane's end of one shard's command queue.
pub struct CommandSender<T> {
    tx: Producer<T>,
    wake: Arc<EventFd>,
}

impl<T> fmt::Debug for CommandSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSender").field("free", &self.tx.slots()).finish()
    }
}

impl<T> CommandSender<T> {
    /// Queue a command and wake the shard. Never blocks.
    pub fn send(&mut self, cmd: T) -> Result<(), SendError<T>> {
        if self.tx.is_abandoned() {
            return Err(SendError::Closed(cmd));
        }
        match self.tx.push(cmd) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(rtrb::PushError::Full(cmd)) => Err(SendError::Full(cmd)),
        }
    }

    /// Free places in the queue.
    pub fn free(&self) -> usize {
        self.tx.slots()
    }
}

/// The shard's end of its command queue.
pub(crate) struct CommandQueue<T> {
    rx: Consumer<T>,
    wake: Arc<EventFd>,
}

impl<T> CommandQueue<T> {
    pub fn pop(&mut self) -> Option<T> {
        self.rx.pop().ok()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Consume the eventfd counter (epoll backend; io_uring reads it with a READ op).
    pub fn clear_wake(&self) {
        self.wake.drain();
    }
}

/// The shard's end of its event queue.
pub(crate) struct EventQueue<E> {
    tx: Producer<E>,
    wake: Arc<EventFd>,
    pushed: bool,
}

impl<E> EventQueue<E> {
    /// Queue an event; `false` when the queue is full (the caller counts the drop).
    pub fn push(&mut self, e: E) -> bool {
        match self.tx.push(e) {
            Ok(()) => {
                self.pushed = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Wake the control plane if anything was queued since the last call (once per turn).
    pub fn flush_wake(&mut self) {
        if self.pushed {
            self.pushed = false;
            self.wake.notify();
        }
    }
}

impl<E> Drop for EventQueue<E> {
    fn drop(&mut self) {
        // Let a waiting receiver observe that the shard is gone.
        self.wake.notify();
    }
}

struct WakeFd(Arc<EventFd>);

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The control plane's end of one shard's event queue.
pub struct EventReceiver<E> {
    rx: Consumer<E>,
    wake: Arc<EventFd>,
    afd: Option<AsyncFd<WakeFd>>,
}

impl<E> fmt::Debug for EventReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver").field("queued", &self.rx.slots()).finish()
    }
}

impl<E> EventReceiver<E> {
    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<E> {
        self.rx.pop().ok()
    }

    /// Whether the shard has stopped (its queue may still hold events).
    pub fn is_closed(&self) -> bool {
        self.rx.is_abandoned()
    }

    /// Block the calling (non-async) thread until an event arrives or `timeout` passes.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<E> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(e) = self.rx.pop() {
                return Some(e);
            }
            let now = Instant::now();
            if now >= deadline || self.rx.is_abandoned() {
                return self.rx.pop().ok();
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            self.wake.wait_readable(ms);
            self.wake.drain();
        }
    }

    /// Await the next event inside a tokio runtime with I/O enabled (`enable_io`; a runtime
    /// without a reactor panics in tokio). `None` once the shard has stopped and its queue is
    /// empty, or if the eventfd cannot be registered.
    pub async fn recv(&mut self) -> Option<E> {
        loop {
            if let Ok(e) = self.rx.pop() {
                return Some(e);
            }
            if self.rx.is_abandoned() {
                return self.rx.pop().ok();
            }
            if self.afd.is_none() {
                if tokio::runtime::Handle::try_current().is_err() {
                    tracing::error!("EventReceiver::recv called outside a tokio runtime");
                    return None;
                }
                let fd = WakeFd(self.wake.clone());
                // SAFETY: `WakeFd` holds an `Arc` of the eventfd, so the descriptor stays open and
                // the same for the whole life of the `AsyncFd`.
                match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                    Ok(a) => self.afd = Some(a),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register the shard event eventfd with tokio");
                        return None;
                    }
                }
            }
            let afd = self.afd.as_ref()?;
            let mut guard = afd.readable().await.ok()?;
            self.wake.drain();
            guard.clear_ready();
        }
    }
}

/// Build one command queue and one event queue with their eventfds.
#[allow(clippy::type_complexity)]
pub(crate) fn channel_pair<C, E>(
    commands: usize,
    events: usize,
) -> std::io::Result<(CommandSender<C>, CommandQueue<C>, EventQueue<E>, EventReceiver<E>)> {
    let cwake = Arc::new(EventFd::new()?);
    let ewake = Arc::new(EventFd::new()?);
    let (ctx, crx) = RingBuffer::new(commands.max(1));
    let (etx, erx) = RingBuffer::new(events.max(1));
    Ok((
        CommandSender { tx: ctx, wake: cwake.clone() },
        CommandQueue { rx: crx, wake: cwake },
        EventQueue { tx: etx, wake: ewake.clone(), pushed: false },
        EventReceiver { rx: erx, wake: ewake, afd: None },
    ))
}

impl<T> CommandSender<T> {
    /// Wake the shard without a command (shutdown).
    pub(crate) fn wake(&self) {
        self.wake.notify();
    }
}
