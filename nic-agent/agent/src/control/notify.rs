//! systemd's readiness protocol (sd_notify(3)) for `Type=notify` units, spoken directly: one
//! datagram per state change to the unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`). Nothing is sent when the variable is unset, so the
//! agent run by hand or by a test is unchanged.
//!
//! * `READY=1` once the API socket listens and every configured port and uplink is up;
//! * `WATCHDOG=1` from the control loop at half of `WATCHDOG_USEC` (when set and meant for
//!   this process, `WATCHDOG_PID`), so a wedged control loop gets the unit restarted;
//! * `STOPPING=1` when a termination signal arrived.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use tracing::warn;

/// The service manager's notification socket, if this process has one.
pub(super) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half the watchdog period, when the manager asked for keep-alives.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` / `WATCHDOG_USEC` / `WATCHDOG_PID`; None when not run by a
    /// service manager (or its socket name is unusable, which is logged).
    pub(super) fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy();
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
            None => SocketAddr::from_pathname(name.as_ref()),
        };
        let (addr, socket) = match addr.and_then(|a| UnixDatagram::unbound().map(|s| (a, s))) {
            Ok(pair) => pair,
            Err(e) => {
                warn!(
                    "NOTIFY_SOCKET={name} is unusable ({e}); systemd will not hear from the agent"
                );
                return None;
            }
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .map(|p| p.trim() == std::process::id().to_string())
            .unwrap_or(true);
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Some(Notifier {
            socket,
            addr,
            watchdog,
            last_ping: Instant::now(),
        })
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            warn!("telling systemd {state:?} failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub(super) fn ready(&mut self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
        self.last_ping = Instant::now();
    }

    /// `STOPPING=1`.
    pub(super) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// How long the control loop may sleep before the next keep-alive is due.
    pub(super) fn timeout_ms(&self) -> i32 {
        match self.watchdog {
            Some(period) => {
                let left = period.saturating_sub(self.last_ping.elapsed());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
            }
            None => -1,
        }
    }

    /// `WATCHDOG=1` when half the period has passed since the last one.
    pub(super) fn keep_alive(&mut self) {
        let due = self.watchdog.is_some_and(|p| self.last_ping.elapsed() >= p);
        if due {
            self.send("WATCHDOG=1");
            self.last_ping = Instant::now();
        }
    }
}
