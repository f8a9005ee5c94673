//! [`Histogram`]: RPC latencies in microseconds, in log-linear buckets (under
//! 1.6% error), so a long run at tens of thousands of RPCs per second keeps a
//! fixed, small footprint. The maximum is kept exactly.

/// Values below this are their own bucket.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above [`LINEAR`] (up to 2^64 µs).
const OCTAVES: usize = 64 - 7;
const BUCKETS: usize = LINEAR as usize + OCTAVES * SUB as usize;

/// Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros(); // >= 7
    let sub = (value >> (octave - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (octave as usize - 7) * SUB as usize + sub as usize
}

/// The middle of bucket `index`.
fn value_of(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let rest = index - LINEAR as usize;
    let octave = (rest / SUB as usize) as u32 + 7;
    let sub = (rest % SUB as usize) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    (1u64 << octave) + sub * width + width / 2
}

impl Histogram {
    /// Records one latency, in microseconds.
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact); 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0 to 1.0), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(value_of(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_close_to_the_value() {
        for value in [
            0,
            1,
            127,
            128,
            129,
            1000,
            4095,
            65_537,
            10_000_000,
            u64::MAX / 3,
        ] {
            let back = value_of(index(value));
            let error = back.abs_diff(value) as f64 / value.max(1) as f64;
            assert!(error < 0.016, "{value} -> {back}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut histogram = Histogram::default();
        for value in 1..=10_000 {
            histogram.record(value);
        }
        let p50 = histogram.quantile(0.5).expect("values");
        let p99 = histogram.quantile(0.99).expect("values");
        assert!((4900..=5100).contains(&p50), "{p50}");
        assert!((9800..=10_000).contains(&p99), "{p99}");
        assert_eq!(histogram.max(), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut merged = Histogram::default();
        merged.merge(&histogram);
        merged.merge(&histogram);
        assert_eq!(merged.count(), 20_000);
    }
}
