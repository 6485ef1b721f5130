//! Liveness, pure: the silence watchdog that tells a live server from a
//! dead or unreachable one (PROTOCOL.md §7.3), and the reconnect backoff.
//! Instants and random numbers in, decisions out; the client does the
//! sending, the waiting and the clock reads.
//!
//! Invariants of [`Watchdog`]:
//! - A session is declared silent only after it was asked to speak: a
//!   `Ping` went out since the server was last heard, at least three
//!   quarters of the window ago, and nothing came back for the whole
//!   window. So a caller that did not read for a while (and so sent no
//!   keep-alive pings) is not mistaken for a dead server.
//! - While the server is quiet, a `Ping` is due a quarter of the window
//!   after the later of the last thing heard and the last `Ping` sent: a
//!   live server is asked to answer three times before the window ends, so
//!   one or two lost datagrams do not end a session.

use std::time::Duration;

use tokio::time::Instant;

/// Silence after which a session is treated as dropped (PROTOCOL.md §7.3).
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(2);

/// What the client should do next about liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send a keep-alive `Ping` now.
    Ping,
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// The server has been silent for the window: treat it as a drop.
    Silent,
}

/// The silence watchdog of one session.
#[derive(Debug, Clone)]
pub struct Watchdog {
    window: Duration,
    /// When the server was last heard (anything at all).
    heard: Instant,
    /// When the last `Ping` went out (or the session began).
    pinged: Instant,
    /// The first `Ping` sent since `heard`: the server owes an answer since.
    asked: Option<Instant>,
}

impl Watchdog {
    /// A watchdog for a session that was welcomed at `now`.
    pub fn new(window: Duration, now: Instant) -> Watchdog {
        Watchdog {
            window,
            heard: now,
            pinged: now,
            asked: None,
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Something arrived from the server.
    pub fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.asked = None;
    }

    /// A `Ping` went out (the watchdog's or the caller's).
    pub fn pinged(&mut self, now: Instant) {
        self.pinged = now;
        self.asked.get_or_insert(now);
    }

    fn ping_every(&self) -> Duration {
        self.window / 4
    }

    /// When silence will be declared if the server stays quiet (`None`
    /// until a `Ping` has asked it to speak).
    pub fn deadline(&self) -> Option<Instant> {
        let asked = self.asked?;
        Some((self.heard + self.window).max(asked + self.window * 3 / 4))
    }

    pub fn next(&self, now: Instant) -> Next {
        let silent_at = self.deadline();
        if silent_at.is_some_and(|t| now >= t) {
            return Next::Silent;
        }
        let ping_at = self.heard.max(self.pinged) + self.ping_every();
        if now >= ping_at {
            return Next::Ping;
        }
        Next::WaitUntil(silent_at.map_or(ping_at, |s| s.min(ping_at)))
    }
}

/// Capped, jittered exponential backoff between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay; each next attempt doubles it.
    pub base: Duration,
    /// No delay is longer.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based): `min(max, base ×
    /// 2^(attempt-1))` scaled by a factor in [0.5, 1] from `unit` (a random
    /// number in [0, 1)), so clients dropped together do not come back
    /// together.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << doublings).min(self.max);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the watchdog as the client does, against a dead server, and
    /// returns the pings' offsets and when silence was declared.
    fn run_dead(w: &mut Watchdog, t0: Instant, from: Instant) -> (Vec<Duration>, Duration) {
        let mut now = from;
        let mut pings = Vec::new();
        loop {
            match w.next(now) {
                Next::Ping => {
                    pings.push(now - t0);
                    w.pinged(now);
                }
                Next::WaitUntil(t) => {
                    assert!(t > now, "a wait that ends in the past spins");
                    now = t;
                }
                Next::Silent => return (pings, now - t0),
            }
        }
    }

    #[test]
    fn a_dead_server_is_silent_after_the_window_with_three_pings_asked() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(W, t0);
        let (pings, silent) = run_dead(&mut w, t0, t0);
        assert_eq!(pings, vec![ms(500), ms(1000), ms(1500)]);
        assert_eq!(silent, W);
    }

    #[test]
    fn traffic_resets_the_window_and_no_ping_is_sent_while_it_flows() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(W, t0);
        // Snapshots every 100 ms for 10 s: never a ping, never silent.
        for i in 1..=100 {
            let now = t0 + ms(100 * i);
            assert!(matches!(w.next(now), Next::WaitUntil(_)), "at {i}");
            w.heard(now);
        }
        let last = t0 + ms(10_000);
        assert_eq!(w.next(last + ms(499)), Next::WaitUntil(last + ms(500)));
        assert_eq!(w.next(last + ms(500)), Next::Ping);
    }

    #[test]
    fn an_answered_ping_keeps_a_quiet_session_alive() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(W, t0);
        let mut now = t0;
        let mut pings = 0;
        // A game with no snapshots: only the pongs speak, 20 ms after each ping.
        while now < t0 + ms(20_000) {
            match w.next(now) {
                Next::Ping => {
                    w.pinged(now);
                    pings += 1;
                    now += ms(20);
                    w.heard(now);
                }
                Next::WaitUntil(t) => now = t,
                Next::Silent => panic!("silent at {:?}", now - t0),
            }
        }
        // One ping per quarter window of quiet.
        assert!((38..=40).contains(&pings), "{pings}");
    }

    #[test]
    fn the_callers_own_pings_replace_the_watchdogs_but_do_not_delay_the_verdict() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(W, t0);
        // The caller pings every 100 ms; the server died at t0.
        for i in 1..=25 {
            let now = t0 + ms(100 * i);
            if now >= t0 + W {
                break;
            }
            assert_ne!(w.next(now), Next::Ping, "at {i}");
            w.pinged(now);
        }
        assert_eq!(w.next(t0 + W - ms(1)), Next::WaitUntil(t0 + W));
        assert_eq!(w.next(t0 + W), Next::Silent);
    }

    #[test]
    fn a_caller_that_did_not_read_gets_three_quarters_of_a_window_after_asking() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(W, t0);
        // No recv (so no ping) for 5 s; then the server is dead.
        let back = t0 + ms(5000);
        assert_eq!(w.next(back), Next::Ping);
        let (pings, silent) = run_dead(&mut w, t0, back);
        assert_eq!(pings, vec![ms(5000), ms(5500), ms(6000)]);
        assert_eq!(silent, ms(6500));
    }

    #[test]
    fn backoff_doubles_from_the_base_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::default();
        let lo: Vec<u128> = (1..=8).map(|a| b.delay(a, 0.0).as_millis()).collect();
        let hi: Vec<u128> = (1..=8).map(|a| b.delay(a, 1.0).as_millis()).collect();
        assert_eq!(lo, vec![125, 250, 500, 1000, 2000, 2500, 2500, 2500]);
        assert_eq!(hi, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(3750));
        let flat = Backoff {
            base: ms(900),
            max: ms(300),
        };
        assert_eq!(flat.delay(1, 1.0), ms(300));
    }
}
