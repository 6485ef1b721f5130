//! Per-session message rate limit: a token bucket that may go into debt.
//!
//! Pure: the caller passes `now`. Within the burst every message passes;
//! past it messages are dropped while the debt grows, and a peer that runs
//! up a debt of a whole extra burst (it kept sending at well over the rate)
//! is closed.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Drop,
    Close,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate_per_sec.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn take(&mut self, now: Instant) -> Verdict {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allow
        } else if self.tokens > -self.burst {
            Verdict::Drop
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steady_rate_within_limit_always_passes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 10, t0);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 1_000_000 / 60);
            assert_eq!(b.take(now), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn a_burst_passes_then_excess_drops_then_a_flood_closes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 5, t0);
        let verdicts: Vec<_> = (0..11).map(|_| b.take(t0)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..9], &[Verdict::Drop; 4]);
        assert_eq!(verdicts[9], Verdict::Close);
    }

    #[test]
    fn debt_is_repaid_over_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 4, t0);
        for _ in 0..6 {
            b.take(t0);
        }
        // Two tokens of debt plus one to spend: 0.3 s at 10/s.
        assert_eq!(b.take(t0 + Duration::from_millis(310)), Verdict::Allow);
    }
}
