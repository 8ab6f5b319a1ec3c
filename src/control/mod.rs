//! The control plane: one thread running a tokio current-thread runtime that serves the OpenVidu
//! REST API and WebSocket signaling and owns the session registry.

use std::sync::Arc;

use axum::Router;

use crate::config::Config;

/// Handle to the control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    cfg: Arc<Config>,
}

impl ControlPlane {
    pub fn new(cfg: Arc<Config>) -> ControlPlane {
        ControlPlane { cfg }
    }

    /// Every HTTP route the server answers.
    pub fn router(&self) -> Router {
        let _ = &self.cfg;
        Router::new()
    }

    /// Graceful shutdown: tell participants and stop accepting joins.
    pub async fn shutdown(&self) {}
}
