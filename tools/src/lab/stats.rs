//! Measurement arithmetic: pure. Sample trackers fed with timestamps the
//! caller read, and summaries of sample sets. No clock reads here.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

/// A distribution summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Dist {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: usize,
}

/// Nearest-rank percentile of sorted samples (0 for none).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The tiny relative slack keeps float error (99.9% of 1000 computing
    // as 999.0000000000001) from moving the rank up by one.
    let x = p / 100.0 * sorted.len() as f64;
    let rank = (x - x * 1e-12).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Dist {
    /// Summarises microsecond samples as milliseconds. Sorts `us`.
    pub fn from_us(us: &mut [u64]) -> Dist {
        us.sort_unstable();
        let ms = |v: u64| v as f64 / 1000.0;
        let mean = if us.is_empty() {
            0.0
        } else {
            us.iter().map(|v| *v as f64).sum::<f64>() / us.len() as f64 / 1000.0
        };
        Dist {
            p50: ms(percentile(us, 50.0)),
            p90: ms(percentile(us, 90.0)),
            p99: ms(percentile(us, 99.0)),
            p999: ms(percentile(us, 99.9)),
            max: ms(us.last().copied().unwrap_or(0)),
            mean,
            samples: us.len(),
        }
    }
}

/// At most `points` (value in ms, cumulative fraction) pairs of the
/// empirical CDF of sorted microsecond samples; always keeps the maximum.
pub fn cdf_points(sorted_us: &[u64], points: usize) -> Vec<(f64, f64)> {
    let n = sorted_us.len();
    if n == 0 || points == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(points).max(1);
    let mut out: Vec<(f64, f64)> = (step - 1..n)
        .step_by(step)
        .map(|i| (sorted_us[i] as f64 / 1000.0, (i + 1) as f64 / n as f64))
        .collect();
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((sorted_us[n - 1] as f64 / 1000.0, 1.0));
    }
    out
}

/// The largest value per time bin of `(t µs, value µs)` samples, in ms:
/// bins of `bin_us` cover `[0, span_us)` (a sample at or past the end
/// counts in the last bin); `None` where no sample fell. What the
/// staleness timeline keeps of one client's arrivals: a head-of-line stall
/// shows as bins with nothing, then one with the stalled snapshots' age.
pub fn timeline_bins(samples: &[(u64, u64)], bin_us: u64, span_us: u64) -> Vec<Option<f64>> {
    let bin_us = bin_us.max(1);
    let n = span_us.div_ceil(bin_us).max(1) as usize;
    let mut out: Vec<Option<f64>> = vec![None; n];
    for &(t, v) in samples {
        let i = ((t / bin_us) as usize).min(n - 1);
        let ms = v as f64 / 1000.0;
        out[i] = Some(out[i].map_or(ms, |m: f64| m.max(ms)));
    }
    out
}

/// Input→acknowledgement round trips: input `s` sent at `t0`; the first
/// snapshot with `ack_seq ≥ s` arrives at `t1`; the sample is `t1 − t0`.
#[derive(Debug, Default)]
pub struct AckTracker {
    pending: VecDeque<(u32, u64)>,
}

impl AckTracker {
    /// Bound on inputs awaiting an ack (a minute at 240 Hz); older ones
    /// are forgotten rather than grow without limit if acks stop.
    const MAX_PENDING: usize = 14_400;

    pub fn sent(&mut self, seq: u32, at_us: u64) {
        if self.pending.len() == Self::MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((seq, at_us));
    }

    /// A snapshot acknowledging up to `ack_seq` arrived at `at_us`: pushes
    /// one RTT sample per input it acknowledges for the first time.
    pub fn acked(&mut self, ack_seq: u32, at_us: u64, out: &mut Vec<u64>) {
        while let Some(&(seq, sent)) = self.pending.front() {
            if seq > ack_seq {
                break;
            }
            out.push(at_us.saturating_sub(sent));
            self.pending.pop_front();
        }
    }
}

/// Transit-time variation between consecutive arrivals (RFC 3550 §6.4.1):
/// `D(i,j) = (Rj − Ri) − (Sj − Si)` with S the snapshot's server time and R
/// its arrival time, both on the same host clock. Keeps the samples |D| and
/// the smoothed estimate `J += (|D| − J) / 16`.
#[derive(Debug, Default)]
pub struct TransitJitter {
    last: Option<(u64, u64)>,
    j_us: f64,
}

impl TransitJitter {
    /// Returns |D| in µs for every arrival after the first.
    pub fn arrival(&mut self, sent_us: u64, arrived_us: u64) -> Option<u64> {
        let prev = self.last.replace((sent_us, arrived_us));
        let (s0, r0) = prev?;
        let d = (arrived_us as i64 - r0 as i64) - (sent_us as i64 - s0 as i64);
        let d = d.unsigned_abs();
        self.j_us += (d as f64 - self.j_us) / 16.0;
        Some(d)
    }

    /// The RFC 3550 smoothed jitter, µs.
    pub fn smoothed_us(&self) -> f64 {
        self.j_us
    }
}

/// Which snapshot ticks arrived, to count what was sent and not received.
#[derive(Debug, Default)]
pub struct TickCoverage {
    ticks: BTreeSet<u32>,
    newest: Option<u32>,
    out_of_order: u64,
}

impl TickCoverage {
    pub fn arrival(&mut self, tick: u32) {
        if self.newest.is_some_and(|n| tick < n) {
            self.out_of_order += 1;
        }
        self.newest = Some(self.newest.map_or(tick, |n| n.max(tick)));
        self.ticks.insert(tick);
    }

    /// Distinct ticks received.
    pub fn received(&self) -> u64 {
        self.ticks.len() as u64
    }

    /// Snapshots the server sent between the first and last tick received:
    /// `(last − first) / snapshot_every + 1`.
    pub fn expected(&self, snapshot_every: u16) -> u64 {
        match (self.ticks.first(), self.ticks.last()) {
            (Some(a), Some(b)) => ((b - a) / snapshot_every.max(1) as u32) as u64 + 1,
            _ => 0,
        }
    }

    /// Arrivals older than one already received (reordered).
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn dist_is_in_milliseconds() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let d = Dist::from_us(&mut v);
        assert_eq!(d.p50, 500.0);
        assert_eq!(d.p90, 900.0);
        assert_eq!(d.p99, 990.0);
        assert_eq!(d.p999, 999.0);
        assert_eq!(d.max, 1000.0);
        assert_eq!(d.mean, 500.5);
        assert_eq!(d.samples, 1000);
        assert_eq!(Dist::from_us(&mut []), Dist::default());
    }

    #[test]
    fn cdf_is_bounded_monotone_and_ends_at_one() {
        let v: Vec<u64> = (0..10_001).collect();
        let c = cdf_points(&v, 100);
        assert!(c.len() <= 102);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(*c.last().unwrap(), (10.0, 1.0));
        assert_eq!(cdf_points(&[5], 100), vec![(0.005, 1.0)]);
        assert!(cdf_points(&[], 100).is_empty());
    }

    #[test]
    fn timeline_bins_keep_each_bins_largest_and_show_gaps() {
        let samples = [
            (0, 20_000),
            (10_000, 25_000),
            (120_000, 180_000),
            (999_999, 1),
        ];
        let bins = timeline_bins(&samples, 50_000, 200_000);
        assert_eq!(bins, vec![Some(25.0), None, Some(180.0), Some(0.001)]);
        assert_eq!(timeline_bins(&[], 50_000, 0), vec![None]);
    }

    #[test]
    fn an_ack_answers_every_input_up_to_it_once() {
        let mut t = AckTracker::default();
        let mut out = Vec::new();
        t.sent(1, 1_000);
        t.sent(2, 2_000);
        t.sent(3, 3_000);
        t.acked(0, 4_000, &mut out);
        assert!(out.is_empty());
        t.acked(2, 10_000, &mut out);
        assert_eq!(out, vec![9_000, 8_000]);
        t.acked(2, 11_000, &mut out);
        assert_eq!(out.len(), 2, "a repeated ack adds nothing");
        t.acked(5, 12_000, &mut out);
        assert_eq!(out, vec![9_000, 8_000, 9_000]);
    }

    #[test]
    fn transit_jitter_is_zero_for_a_steady_path_and_sees_variation() {
        let mut j = TransitJitter::default();
        assert_eq!(j.arrival(0, 5_000), None);
        for i in 1..100u64 {
            assert_eq!(j.arrival(i * 16_667, i * 16_667 + 5_000), Some(0));
        }
        assert_eq!(j.smoothed_us(), 0.0);
        // One packet 30 ms late: |D| = 30 ms, then 30 ms back.
        assert_eq!(j.arrival(100 * 16_667, 100 * 16_667 + 35_000), Some(30_000));
        assert_eq!(j.arrival(101 * 16_667, 101 * 16_667 + 5_000), Some(30_000));
        assert!(j.smoothed_us() > 3_000.0);
    }

    #[test]
    fn tick_coverage_counts_gaps_and_reordering() {
        let mut c = TickCoverage::default();
        for t in [10, 11, 13, 12, 14, 14, 16] {
            c.arrival(t);
        }
        assert_eq!(c.received(), 6);
        assert_eq!(c.expected(1), 7);
        assert_eq!(c.out_of_order(), 1);
        let mut c = TickCoverage::default();
        for t in [4, 8, 16] {
            c.arrival(t);
        }
        assert_eq!(c.expected(2), 7);
        assert_eq!(TickCoverage::default().expected(1), 0);
    }
}
