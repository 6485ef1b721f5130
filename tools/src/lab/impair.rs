//! Packet impairment decisions: pure. A packet's length and `now` go in; a
//! drop or a release time comes out. No sockets, no clock reads, no
//! spawning: the TUN forwarder (`forward.rs`) does the I/O around it.
//!
//! The model, per direction, in the order netem applies it:
//!
//! 1. **loss**: each packet is dropped with probability `loss`
//!    (independent, Bernoulli);
//! 2. **rate**: with a rate limit, a packet occupies the link for
//!    `8 × len / rate` seconds after the previous one (serialization delay,
//!    FIFO); a packet that would wait more than `queue_limit` is dropped
//!    (drop-tail), so the queue is bounded;
//! 3. **delay and jitter**: the packet is released `delay + U(−jitter,
//!    +jitter)` after it leaves the link (never earlier than that), so
//!    jitter reorders packets whose spacing is below it;
//! 4. **reorder**: with probability `reorder` a packet skips the delay and
//!    overtakes the ones in flight (netem's `reorder`).
//!
//! Every packet consumes exactly three draws from the direction's seeded
//! RNG whatever the settings, so the decision for the k-th packet depends
//! only on the seed and k.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Impairment of one direction of the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpairConfig {
    /// Probability in `[0, 1]` that a packet is lost.
    pub loss: f64,
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Half-width of the uniform variation around `delay`.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a packet skips the delay.
    pub reorder: f64,
    /// Link rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Longest a packet may wait for the rate-limited link before it is
    /// dropped instead.
    pub queue_limit: Duration,
}

impl Default for ImpairConfig {
    fn default() -> Self {
        ImpairConfig {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            rate_bps: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// Default drop-tail bound of the rate limiter's queue.
pub const DEFAULT_QUEUE_LIMIT: Duration = Duration::from_millis(200);

impl ImpairConfig {
    /// True when packets pass untouched.
    pub fn is_clean(&self) -> bool {
        self.loss == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.reorder == 0.0
            && self.rate_bps.is_none()
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The random loss process.
    Loss,
    /// The rate limiter's queue was full.
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop(DropReason),
    /// Hand the packet on at this instant.
    Deliver(Instant),
}

/// The decision process for one direction.
#[derive(Debug)]
pub struct Impairer {
    cfg: ImpairConfig,
    rng: ChaCha8Rng,
    /// When the rate-limited link finishes sending what it already has.
    link_free_at: Option<Instant>,
}

impl Impairer {
    pub fn new(cfg: ImpairConfig, seed: u64) -> Self {
        Impairer {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            link_free_at: None,
        }
    }

    pub fn config(&self) -> &ImpairConfig {
        &self.cfg
    }

    /// Decides the fate of a packet of `len` bytes that arrived at `now`.
    pub fn decide(&mut self, len: usize, now: Instant) -> Verdict {
        // Three draws per packet, always, so decisions depend on (seed, k).
        let lose: f64 = self.rng.random();
        let jitter_draw: f64 = self.rng.random();
        let reorder: f64 = self.rng.random();

        if lose < self.cfg.loss {
            return Verdict::Drop(DropReason::Loss);
        }
        let mut left_link = now;
        if let Some(rate) = self.cfg.rate_bps.filter(|r| *r > 0) {
            let start = self.link_free_at.map_or(now, |t| t.max(now));
            if start - now > self.cfg.queue_limit {
                return Verdict::Drop(DropReason::Queue);
            }
            let serialization = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / rate);
            left_link = start + serialization;
            self.link_free_at = Some(left_link);
        }
        if reorder < self.cfg.reorder {
            return Verdict::Deliver(left_link);
        }
        // delay + U(−jitter, +jitter), never below zero.
        let j = self.cfg.jitter.as_secs_f64();
        let extra = self.cfg.delay.as_secs_f64() + (2.0 * jitter_draw - 1.0) * j;
        Verdict::Deliver(left_link + Duration::from_secs_f64(extra.max(0.0)))
    }
}

/// Packets waiting for their release time; pops them in release order
/// (ties in arrival order).
#[derive(Debug)]
pub struct DelayLine<P> {
    heap: BinaryHeap<Reverse<(Instant, u64, Slot<P>)>>,
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
}

/// Wrapper that keeps the payload out of the heap's ordering.
#[derive(Debug)]
struct Slot<P>(P);

impl<P> PartialEq for Slot<P> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<P> Eq for Slot<P> {}
impl<P> PartialOrd for Slot<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Slot<P> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<P: AsRef<[u8]>> DelayLine<P> {
    /// A line holding at most `max_bytes` of packets; `push` refuses more.
    pub fn new(max_bytes: usize) -> Self {
        DelayLine {
            heap: BinaryHeap::new(),
            next_seq: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Queues `packet` for release at `at`. Returns false (and drops the
    /// packet) when the line is full.
    pub fn push(&mut self, at: Instant, packet: P) -> bool {
        let len = packet.as_ref().len();
        if self.bytes + len > self.max_bytes {
            return false;
        }
        self.bytes += len;
        self.heap.push(Reverse((at, self.next_seq, Slot(packet))));
        self.next_seq += 1;
        true
    }

    /// The earliest release time waiting, if any.
    pub fn next_release(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next packet due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        if self.next_release()? > now {
            return None;
        }
        let Reverse((_, _, Slot(p))) = self.heap.pop()?;
        self.bytes -= p.as_ref().len();
        Some(p)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: ImpairConfig, seed: u64, n: usize) -> Vec<Verdict> {
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, seed);
        (0..n)
            .map(|i| imp.decide(100, t0 + Duration::from_millis(i as u64)))
            .collect()
    }

    #[test]
    fn clean_link_delivers_at_once() {
        let t0 = Instant::now();
        let mut imp = Impairer::new(ImpairConfig::default(), 1);
        for i in 0..100 {
            let now = t0 + Duration::from_micros(i * 7);
            assert_eq!(imp.decide(1500, now), Verdict::Deliver(now));
        }
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let cfg = ImpairConfig {
            loss: 0.1,
            ..Default::default()
        };
        let n = 100_000;
        let dropped = run(cfg, 7, n)
            .iter()
            .filter(|v| matches!(v, Verdict::Drop(DropReason::Loss)))
            .count();
        // Binomial: mean 10 000, sigma ≈ 95; 5 sigma.
        assert!((dropped as i64 - 10_000).abs() < 475, "dropped {dropped}");
    }

    #[test]
    fn same_seed_same_decisions_other_seed_differs() {
        let cfg = ImpairConfig {
            loss: 0.2,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            ..Default::default()
        };
        let t0 = Instant::now();
        let decide_all = |seed| {
            let mut imp = Impairer::new(cfg, seed);
            (0..1000)
                .map(|i| imp.decide(100, t0 + Duration::from_millis(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(decide_all(3), decide_all(3));
        assert_ne!(decide_all(3), decide_all(4));
    }

    #[test]
    fn delay_and_jitter_stay_in_their_band() {
        let delay = Duration::from_millis(20);
        let jitter = Duration::from_millis(5);
        let cfg = ImpairConfig {
            delay,
            jitter,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, 9);
        let (mut below, mut above) = (false, false);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            let Verdict::Deliver(at) = imp.decide(100, now) else {
                panic!("no loss configured");
            };
            let d = at - now;
            assert!(d >= delay - jitter && d <= delay + jitter, "{d:?}");
            below |= d < delay - Duration::from_millis(4);
            above |= d > delay + Duration::from_millis(4);
        }
        assert!(below && above, "jitter spans its whole band");
    }

    #[test]
    fn jitter_larger_than_delay_never_goes_back_in_time() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(10),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, 5);
        for _ in 0..1000 {
            match imp.decide(100, t0) {
                Verdict::Deliver(at) => assert!(at >= t0),
                Verdict::Drop(_) => panic!("no loss configured"),
            }
        }
    }

    #[test]
    fn rate_limit_serializes_by_size_and_bounds_the_queue() {
        // 1 Mbit/s: 1250 bytes take 10 ms.
        let cfg = ImpairConfig {
            rate_bps: Some(1_000_000),
            queue_limit: Duration::from_millis(35),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, 1);
        let ms = Duration::from_millis;
        // A burst of five at t0: 10, 20, 30, 40 ms; the fifth would wait
        // 40 ms > 35 ms and is dropped.
        assert_eq!(imp.decide(1250, t0), Verdict::Deliver(t0 + ms(10)));
        assert_eq!(imp.decide(1250, t0), Verdict::Deliver(t0 + ms(20)));
        assert_eq!(imp.decide(1250, t0), Verdict::Deliver(t0 + ms(30)));
        assert_eq!(imp.decide(1250, t0), Verdict::Deliver(t0 + ms(40)));
        assert_eq!(imp.decide(1250, t0), Verdict::Drop(DropReason::Queue));
        // Once the link is idle again a packet goes straight through.
        let later = t0 + ms(100);
        assert_eq!(imp.decide(125, later), Verdict::Deliver(later + ms(1)));
    }

    #[test]
    fn rate_and_delay_add_up() {
        let cfg = ImpairConfig {
            rate_bps: Some(8_000_000),
            delay: Duration::from_millis(20),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, 1);
        // 1000 bytes at 8 Mbit/s = 1 ms on the link, then 20 ms of delay.
        assert_eq!(
            imp.decide(1000, t0),
            Verdict::Deliver(t0 + Duration::from_millis(21))
        );
    }

    #[test]
    fn reorder_lets_packets_skip_the_delay() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(50),
            reorder: 0.25,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut imp = Impairer::new(cfg, 11);
        let n = 20_000;
        let skipped = (0..n)
            .filter(|_| imp.decide(100, t0) == Verdict::Deliver(t0))
            .count();
        // mean 5000, sigma ≈ 61.
        assert!((skipped as i64 - 5000).abs() < 310, "skipped {skipped}");
    }

    #[test]
    fn delay_line_releases_in_time_order_and_ties_in_arrival_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut line = DelayLine::new(1 << 20);
        assert!(line.push(t0 + ms(30), vec![1u8]));
        assert!(line.push(t0 + ms(10), vec![2u8]));
        assert!(line.push(t0 + ms(10), vec![3u8]));
        assert!(line.push(t0 + ms(20), vec![4u8]));
        assert_eq!(line.next_release(), Some(t0 + ms(10)));
        assert_eq!(line.pop_due(t0 + ms(5)), None);
        assert_eq!(line.pop_due(t0 + ms(15)), Some(vec![2]));
        assert_eq!(line.pop_due(t0 + ms(15)), Some(vec![3]));
        assert_eq!(line.pop_due(t0 + ms(15)), None);
        assert_eq!(line.pop_due(t0 + ms(100)), Some(vec![4]));
        assert_eq!(line.pop_due(t0 + ms(100)), Some(vec![1]));
        assert!(line.is_empty());
    }

    #[test]
    fn delay_line_is_bounded_in_bytes() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(250);
        assert!(line.push(t0, vec![0u8; 100]));
        assert!(line.push(t0, vec![0u8; 100]));
        assert!(!line.push(t0, vec![0u8; 100]));
        assert_eq!(line.len(), 2);
        assert!(line.pop_due(t0).is_some());
        assert!(line.push(t0, vec![0u8; 100]));
    }
}
