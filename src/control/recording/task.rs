//! The recording task: the backend's events, the autostop and completion timers, and the
//! layout writer (on the blocking pool), each applied under the control plane's state lock.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    BackendEvent, Effect, autostop_fired, finalized, layout, on_backend_event, watch_expired,
};
use crate::control::Inner;

/// How long a stopped recording waits for its recorders' completion before it is `failed`.
pub(super) const COMPLETION_TIMEOUT: Duration = Duration::from_secs(60);

/// The recording task: backend events, timers and the layout writer, each applied under the
/// state lock. Ends when the control plane is dropped.
pub(crate) async fn run(
    weak: std::sync::Weak<Inner>,
    mut events: mpsc::Receiver<BackendEvent>,
    mut effects: mpsc::UnboundedReceiver<Effect>,
) {
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                let Some(inner) = weak.upgrade() else { return };
                inner.with(|st| on_backend_event(&inner, st, ev));
            }
            e = effects.recv() => {
                let Some(e) = e else { return };
                let weak = weak.clone();
                match e {
                    Effect::Autostop { session, epoch, after } => {
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let Some(inner) = weak.upgrade() else { return };
                            inner.with(|st| autostop_fired(&inner, st, &session, epoch));
                        });
                    }
                    Effect::Watch { id } => {
                        tokio::spawn(async move {
                            tokio::time::sleep(COMPLETION_TIMEOUT).await;
                            let Some(inner) = weak.upgrade() else { return };
                            inner.with(|st| watch_expired(&inner, st, &id));
                        });
                    }
                    Effect::Finalize(job) => {
                        tokio::spawn(async move {
                            let id = job.rec.id.clone();
                            let out = tokio::task::spawn_blocking(move || layout::finalize(&job))
                                .await
                                .unwrap_or_else(|e| layout::Outcome::Failed(format!("layout writer: {e}")));
                            let Some(inner) = weak.upgrade() else { return };
                            inner.with(|st| finalized(&inner, st, &id, out));
                        });
                    }
                }
            }
        }
    }
}
