//! Rate limiting for logs a guest can trigger at will.

use std::time::{Duration, Instant};

/// Lets through at most [`LogLimiter::BURST`] messages per second and counts the rest, so a
/// hostile guest cannot flood the log. One per queue pair, used only on error paths.
#[derive(Debug, Default)]
pub struct LogLimiter {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub const BURST: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(1);

    /// `Some(n)` when this message may be logged, `n` being how many were suppressed since the
    /// last one that was; `None` when it must be dropped.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Self::WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window >= Self::BURST {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_and_report() {
        let mut l = LogLimiter::default();
        for _ in 0..LogLimiter::BURST {
            assert_eq!(l.allow(), Some(0));
        }
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.window_start = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(l.allow(), Some(2));
    }
}
