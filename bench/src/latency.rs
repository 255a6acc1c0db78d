//! Edit latencies: a clock the editors stamp into their changes, and lock-free log-bucketed histograms, one per
//! window of sending time, so that drift over a run shows.
//!
//! Every editor writes the moment it makes a keystroke into the Automerge change itself (the change's `time`
//! field, in microseconds of the run's [`Clock`]); every viewer reads it back from each change it receives. So no
//! table of "who sent what when" is shared between a thousand tasks, and the figure is exactly "editor's commit →
//! viewer holds the change", whatever route the change took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The run's time base: microseconds since the run started, shared by every peer in the process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When the run started.
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Microseconds since the run started.
    pub fn micros(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

/// Sub-buckets per power of two: 64 keeps every bucket within 1.6% of the value it stands for.
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
const SUB: usize = 1 << SUB_BITS;
/// Powers of two covered: up to 2^40 µs (12 days); longer latencies land in the last bucket.
const OCTAVES: usize = 40;
/// Buckets in one histogram.
const BUCKETS: usize = (OCTAVES + 1) * SUB;

/// A histogram of microsecond values in log-linear buckets (the HdrHistogram layout with 64 sub-buckets),
/// recorded with relaxed atomic increments so that any number of tasks share one.
pub struct Histogram {
    /// Count per bucket; see [`bucket`].
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `micros`: exact below 64 µs, then 64 buckets per power of two.
fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros();
    let shift = octave - SUB_BITS;
    let sub = (micros >> shift) as usize - SUB;
    ((shift as usize + 1) * SUB + sub).min(BUCKETS - 1)
}

/// The middle of bucket `index`, in microseconds: what a percentile falling into it reports.
fn bucket_value(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = (index / SUB - 1) as u32;
    let low = ((index % SUB + SUB) as u64) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    /// Counts one value.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Adds every count of `other` into this one.
    fn add(&self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// The value at quantile `q` (0..=1) by nearest rank, or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Duration::from_micros(bucket_value(index)));
            }
        }
        None
    }

    /// The largest value's bucket.
    pub fn max(&self) -> Option<Duration> {
        self.counts
            .iter()
            .rposition(|c| c.load(Ordering::Relaxed) > 0)
            .map(|index| Duration::from_micros(bucket_value(index)))
    }

    /// The usual summary.
    pub fn summary(&self) -> Summary {
        let ms = |q: f64| self.quantile(q).map_or(0.0, millis);
        Summary {
            count: self.count(),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.max().map_or(0.0, millis),
        }
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest (its bucket's middle).
    pub max_ms: f64,
}

/// Milliseconds as a float, for reports.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Latencies of one run, bucketed by when the edit was sent, so drift over the run shows.
pub struct Latencies {
    /// The clock the editors stamp changes with.
    clock: Clock,
    /// Length of one window of sending time.
    window: Duration,
    /// One histogram per window; an edit sent after the last window counts in the last.
    windows: Vec<Histogram>,
}

/// One window's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowSummary {
    /// Seconds from the run's start to the window's start.
    pub from_s: f64,
    /// The window's latencies.
    pub latency: Summary,
}

impl Latencies {
    /// Windows of `window` covering `span` of sending time.
    pub fn new(clock: Clock, window: Duration, span: Duration) -> Latencies {
        let window = window.max(Duration::from_millis(100));
        let count = (span.as_secs_f64() / window.as_secs_f64()).ceil().max(1.0) as usize;
        Latencies {
            clock,
            window,
            windows: (0..count).map(|_| Histogram::default()).collect(),
        }
    }

    /// Records an edit stamped `sent_micros` (the run's clock) that arrived now; returns the latency.
    pub fn arrived(&self, sent_micros: i64) -> Duration {
        let now = self.clock.micros();
        let latency = Duration::from_micros(u64::try_from(now - sent_micros).unwrap_or(0));
        let sent = Duration::from_micros(u64::try_from(sent_micros).unwrap_or(0));
        let index =
            ((sent.as_secs_f64() / self.window.as_secs_f64()) as usize).min(self.windows.len() - 1);
        self.windows[index].record(latency);
        latency
    }

    /// Every window merged.
    pub fn total(&self) -> Histogram {
        let total = Histogram::default();
        for window in &self.windows {
            total.add(window);
        }
        total
    }

    /// Each window that saw edits, in order.
    pub fn windows(&self) -> Vec<WindowSummary> {
        self.windows
            .iter()
            .enumerate()
            .filter(|(_, h)| h.count() > 0)
            .map(|(i, h)| WindowSummary {
                from_s: self.window.as_secs_f64() * i as f64,
                latency: h.summary(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_within_two_percent_and_in_order() {
        let mut last = 0;
        for micros in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            12_345,
            1_000_000,
            987_654_321,
        ] {
            let index = bucket(micros);
            assert!(index >= last, "buckets are ordered");
            last = index;
            let value = bucket_value(index) as f64;
            let error = (value - micros as f64).abs() / (micros as f64).max(1.0);
            assert!(error <= 0.02, "{micros} µs reads as {value}");
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).map(millis).unwrap_or_default();
        let p99 = h.quantile(0.99).map(millis).unwrap_or_default();
        assert!((p50 - 50.0).abs() < 1.0, "p50 {p50}");
        assert!((p99 - 99.0).abs() < 2.0, "p99 {p99}");
        assert_eq!(h.count(), 100);
    }
}
