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

use super::eventfd::EventFd;

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
    /// A handle that wakes this shard (for other shards' mesh writers).
    pub fn shard_wake(&self) -> super::mesh::ShardWake {
        super::mesh::ShardWake(self.wake.clone())
    }

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
    /// The queue's eventfd, registered with tokio on the first [`EventReceiver::recv`].
    waker: EventWaker,
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
            self.waker.wake.wait_readable(ms);
            self.waker.wake.drain();
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
            if tokio::runtime::Handle::try_current().is_err() {
                tracing::error!("EventReceiver::recv called outside a tokio runtime");
                return None;
            }
            if let Err(e) = self.waker.register() {
                tracing::error!(error = %e, "cannot register the shard event eventfd with tokio");
                return None;
            }
            std::future::poll_fn(|cx| self.waker.poll_wake(cx)).await.ok()?;
        }
    }
}

/// A second handle on a shard's event eventfd, to await it inside tokio without holding the
/// shard's [`EventReceiver`] (the control plane keeps the receivers behind a mutex it must not
/// hold across an await): wake, then `try_recv` the queues.
pub struct EventWaker {
    wake: Arc<EventFd>,
    afd: Option<AsyncFd<WakeFd>>,
}

impl fmt::Debug for EventWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWaker").field("fd", &self.wake.as_raw_fd()).finish()
    }
}

impl EventWaker {
    /// Registers the eventfd with the current tokio runtime (which needs `enable_io`).
    pub fn register(&mut self) -> std::io::Result<()> {
        if self.afd.is_none() {
            // SAFETY: `WakeFd` holds an `Arc` of the eventfd, so the descriptor stays open and
            // the same for the whole life of the `AsyncFd`.
            self.afd = Some(unsafe {
                AsyncFd::register_with_interest(WakeFd(self.wake.clone()), Interest::READABLE)
            }?);
        }
        Ok(())
    }

    /// Ready when the shard has written its eventfd since the last time (the count is
    /// consumed: queue first, then wake, on the shard's side; wake first, then read the queue,
    /// here, so no event is left waiting), or with the reactor's error. Pending for ever when
    /// not registered.
    pub fn poll_wake(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Some(afd) = self.afd.as_ref() else { return std::task::Poll::Pending };
        afd.poll_read_ready(cx).map_ok(|mut guard| {
            self.wake.drain();
            guard.clear_ready();
        })
    }
}

/// Ready when any of `wakers` was woken (every ready one is consumed, so one wake covers all).
pub async fn any_wake(wakers: &mut [EventWaker]) {
    std::future::poll_fn(|cx| {
        let mut woke = false;
        for w in wakers.iter_mut() {
            // A reactor error counts as no wake: stay quiet rather than spin.
            woke |= matches!(w.poll_wake(cx), std::task::Poll::Ready(Ok(())));
        }
        if woke { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await
}

impl<E> EventReceiver<E> {
    /// A waker on this receiver's eventfd ([`EventWaker`]), not yet registered.
    pub fn waker(&self) -> EventWaker {
        EventWaker { wake: self.waker.wake.clone(), afd: None }
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
        EventReceiver { rx: erx, waker: EventWaker { wake: ewake, afd: None } },
    ))
}

impl<T> CommandSender<T> {
    /// Wake the shard without a command (shutdown).
    pub(crate) fn wake(&self) {
        self.wake.notify();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// The control plane's event task sleeps until a shard's eventfd is written, and one wake
    /// consumes it: nothing is polled on a timer.
    #[test]
    fn wakers_wake_on_the_eventfd_and_only_then() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_c, _q, mut ev_a, mut rx_a) = channel_pair::<(), u32>(4, 4).unwrap();
            let (_c2, _q2, mut ev_b, mut rx_b) = channel_pair::<(), u32>(4, 4).unwrap();
            let mut wakers = vec![rx_a.waker(), rx_b.waker()];
            for w in &mut wakers {
                w.register().unwrap();
            }
            tokio::task::yield_now().await;
            assert!(any_wake(&mut wakers).now_or_never().is_none(), "woke with nothing queued");
            assert!(ev_b.push(7));
            ev_b.flush_wake();
            tokio::time::timeout(Duration::from_secs(5), any_wake(&mut wakers))
                .await
                .expect("a wake for the queued event");
            assert_eq!((rx_a.try_recv(), rx_b.try_recv()), (None, Some(7)));
            // Consumed: no second wake for the same write.
            tokio::task::yield_now().await;
            assert!(any_wake(&mut wakers).now_or_never().is_none(), "woke twice");
            // Both shards at once: one wake covers both.
            assert!(ev_a.push(1) && ev_b.push(2));
            ev_a.flush_wake();
            ev_b.flush_wake();
            tokio::time::timeout(Duration::from_secs(5), any_wake(&mut wakers)).await.unwrap();
            tokio::task::yield_now().await;
            assert!(any_wake(&mut wakers).now_or_never().is_none(), "a stale wake");
            assert_eq!((rx_a.try_recv(), rx_b.try_recv()), (Some(1), Some(2)));
        });
    }
}
