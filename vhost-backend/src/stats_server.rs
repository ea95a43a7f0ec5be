//! Runtime counters over a unix socket: connect, read one JSON document, done.
//!
//! `socat - UNIX-CONNECT:/run/knic/vm1.sock.stats` (or `nc -U`) prints
//! `{"queue_pairs":[{"queue_pair":0,"tx_packets":...,"drops":{"rx_buffer_too_small":0,...}}]}`.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use crate::backend::NetBackend;
use crate::ctrl::CtrlState;
use crate::front_door::FrontDoorSnapshot;
use crate::stats::QueuePairSnapshot;

/// The document served.
#[derive(Debug, Serialize)]
pub struct StatsDocument {
    pub queue_pairs: Vec<QueuePairSnapshot>,
    /// Pairs carrying traffic (changed only by a frontend passing the control queue through).
    pub active_queue_pairs: usize,
    /// The control queue's acknowledged state and command counts.
    pub control: CtrlState,
    /// What the vhost-user front door refused or survived (`front_door`).
    pub front_door: FrontDoorSnapshot,
}

/// Renders the current counters as JSON.
pub fn render(backend: &NetBackend) -> String {
    let (control, active_queue_pairs) = backend.control_state();
    let doc = StatsDocument {
        queue_pairs: backend.stats(),
        active_queue_pairs,
        control,
        front_door: backend.front_door_stats().snapshot(),
    };
    serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Binds `path` (replacing a stale socket) and answers every connection on a thread named
/// `knic-stats`.
pub fn spawn(backend: Arc<NetBackend>, path: &Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("knic-stats".to_string())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(mut s) => {
                        let body = render(&backend);
                        if let Err(e) = s
                            .write_all(body.as_bytes())
                            .and_then(|()| s.write_all(b"\n"))
                        {
                            warn!("stats reader went away: {e}");
                        }
                    }
                    Err(e) => warn!("stats socket accept failed: {e}"),
                }
            }
        })?;
    Ok(path.to_path_buf())
}
