//! The bounded table of token buckets, one per client key, as GCRA: each key
//! holds one `u64`, its theoretical arrival time (TAT). A key whose TAT has
//! passed has a full bucket, the same as an absent key, so it can be evicted
//! at any time without changing a decision. The table is sharded behind
//! mutexes; a shard sweeps its idle keys now and then when it gains a key, and
//! when full evicts the idle keys, then the one closest to idle.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;

/// Shards of the table: enough that 4 to 16 threads rarely meet on one lock.
const SHARDS: usize = 64;

/// How often, at most, a shard that gains keys sweeps out its idle ones.
const SWEEP_INTERVAL_NS: u64 = 10_000_000_000;

/// The cell rate: how long one event uses up and how far ahead a key may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds per event (`unit / count`).
    pub interval_ns: u64,
    /// How far the TAT may run ahead of now: `interval_ns * burst`.
    pub tolerance_ns: u64,
}

impl Gcra {
    /// The new TAT if an event at `now` conforms, from the key's TAT (`None`: fresh key).
    fn next(self, tat: Option<u64>, now: u64) -> Option<u64> {
        let next = tat
            .map_or(now, |t| t.max(now))
            .saturating_add(self.interval_ns);
        (next - now <= self.tolerance_ns).then_some(next)
    }
}

/// Keys are already keyed hashes: the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<KeyHasher>>,
    next_sweep: u64,
}

/// A bounded map from client key to TAT.
pub struct KeyTable {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    tracked: Gauge,
}

impl KeyTable {
    /// A table of at most `cap` keys (rounded up to a multiple of the shard
    /// count), counting its keys in `tracked`.
    pub fn new(cap: usize, tracked: Gauge) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_cap: cap.div_ceil(SHARDS).max(1),
            tracked,
        }
    }

    /// Whether an event for `key` at `now` (nanoseconds on the caller's
    /// clock) conforms to `gcra`; if so, it is counted.
    pub fn admit(&self, key: u64, now: u64, gcra: Gcra) -> bool {
        // The middle bits pick the shard; the map uses the low and top ones.
        let index = (key >> 32) as usize % SHARDS;
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.tats.get_mut(&key) {
            return match gcra.next(Some(*tat), now) {
                Some(next) => {
                    *tat = next;
                    true
                }
                None => false,
            };
        }
        let Some(next) = gcra.next(None, now) else {
            return false;
        };
        if now >= shard.next_sweep || shard.tats.len() >= self.shard_cap {
            self.sweep(&mut shard, now);
        }
        if shard.tats.len() >= self.shard_cap {
            // Every key is busy: drop the one whose bucket refills first.
            let oldest = shard
                .tats
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                shard.tats.remove(&oldest);
                self.tracked.dec();
            }
        }
        shard.tats.insert(key, next);
        self.tracked.inc();
        true
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let before = shard.tats.len();
        shard.tats.retain(|_, tat| *tat > now);
        let removed = before - shard.tats.len();
        self.tracked
            .dec_by(i64::try_from(removed).unwrap_or(i64::MAX));
        shard.next_sweep = now.saturating_add(SWEEP_INTERVAL_NS);
    }

    /// The keys held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    /// The most keys the table holds.
    #[cfg(test)]
    pub fn cap(&self) -> usize {
        self.shard_cap * SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn per_second(count: u64, burst: u64) -> Gcra {
        Gcra {
            interval_ns: SECOND / count,
            tolerance_ns: SECOND / count * burst,
        }
    }

    fn key(n: u64) -> u64 {
        use std::hash::BuildHasher;
        std::hash::RandomState::new().hash_one(n)
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let table = KeyTable::new(100, Gauge::default());
        let gcra = per_second(10, 5);
        let now = SECOND;
        assert!((0..5).all(|_| table.admit(1, now, gcra)));
        assert!(
            !table.admit(1, now, gcra),
            "the sixth at once is over the burst"
        );
        // Another key is unaffected.
        assert!(table.admit(2, now, gcra));
        // One interval later, one more.
        assert!(table.admit(1, now + SECOND / 10, gcra));
        assert!(!table.admit(1, now + SECOND / 10, gcra));
        // A full second later, the burst is back.
        let later = now + 2 * SECOND;
        assert!((0..5).all(|_| table.admit(1, later, gcra)));
        assert!(!table.admit(1, later, gcra));
    }

    #[test]
    fn a_steady_client_at_its_rate_is_never_refused() {
        let table = KeyTable::new(100, Gauge::default());
        let gcra = per_second(50, 50);
        assert!((0..1000).all(|i| table.admit(7, SECOND + i * SECOND / 50, gcra)));
    }

    #[test]
    fn a_hundred_thousand_busy_keys_stay_within_the_cap() {
        let tracked = Gauge::default();
        let table = KeyTable::new(10_000, tracked.clone());
        let gcra = per_second(1, 1);
        // All at the same instant: none is idle, so the oldest go.
        for n in 0..100_000 {
            assert!(table.admit(key(n), SECOND, gcra));
        }
        assert!(table.len() <= table.cap(), "{} keys", table.len());
        assert!(table.cap() < 10_100);
        assert!(table.len() > 9_000, "a full table keeps most of its cap");
        assert_eq!(tracked.get(), i64::try_from(table.len()).expect("len"));
    }

    #[test]
    fn idle_keys_are_swept_once_their_buckets_refill() {
        let tracked = Gauge::default();
        let table = KeyTable::new(100_000, tracked.clone());
        let gcra = per_second(1, 1);
        for n in 0..100_000 {
            table.admit(key(n), SECOND, gcra);
        }
        assert!(table.len() <= 100_000);
        // Much later, new keys sweep the idle ones from every shard they land in.
        let later = 100 * SECOND;
        for n in 0..1_000 {
            table.admit(key(1_000_000 + n), later, gcra);
        }
        assert!(table.len() <= 1_000, "{} keys left", table.len());
        assert_eq!(tracked.get(), i64::try_from(table.len()).expect("len"));
    }
}
