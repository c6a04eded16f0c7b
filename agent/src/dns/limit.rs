//! Per-source rate limiting for forwarded queries: a token bucket per asker, in a table of
//! bounded size. Pure: the caller passes the time, so tests need no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A refill rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds: the queries a quiet source may send at once.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket's tokens at `now`.
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }
}

/// Token buckets by source, at most `capacity` of them. When the table is full, a source that has
/// been quiet long enough for its bucket to refill is forgotten first (forgetting it changes
/// nothing: a new bucket starts full); failing that, the source seen least recently is.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate, capacity: usize) -> Self {
        Self {
            rate,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `source` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, source: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(source) && self.buckets.len() >= self.capacity {
            self.evict(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(source.clone()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let tokens = bucket.refilled(rate, now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            true
        } else {
            bucket.tokens = tokens;
            false
        }
    }

    /// How many sources the table holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    fn evict(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets
            .retain(|_, b| b.refilled(rate, now) < rate.burst);
        if self.buckets.len() < self.capacity {
            return;
        }
        let oldest = self
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.buckets.remove(&oldest);
        }
    }
}

/// Allows a log line at most once per `interval`, counting what it held back.
#[derive(Debug)]
pub struct LogGate {
    interval: Duration,
    last: Option<Instant>,
    held: u64,
}

impl LogGate {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged at `now`.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut buckets = Buckets::new(RATE, 8);
        let allowed = (0..20).filter(|_| buckets.allow(&"a", start)).count();
        assert_eq!(allowed, 5, "the burst");
        // 10 per second: one more every 100 ms.
        assert!(!buckets.allow(&"a", start + Duration::from_millis(50)));
        assert!(buckets.allow(&"a", start + Duration::from_millis(160)));
        assert!(!buckets.allow(&"a", start + Duration::from_millis(170)));
        // Another source is not held back by the first.
        assert!(buckets.allow(&"b", start + Duration::from_millis(170)));
        // A long pause refills to the burst, no more.
        let later = start + Duration::from_secs(60);
        let allowed = (0..20).filter(|_| buckets.allow(&"a", later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_refilled_sources_first() {
        let start = Instant::now();
        let mut buckets = Buckets::new(RATE, 3);
        // "busy" drains its bucket; "idle" takes one token and is refilled 100 ms later.
        for _ in 0..5 {
            buckets.allow(&"busy", start);
        }
        buckets.allow(&"idle", start);
        buckets.allow(&"recent", start + Duration::from_millis(100));
        let now = start + Duration::from_millis(150);
        // Full: the refilled "idle" goes, and "busy" keeps its empty bucket.
        assert!(buckets.allow(&"new", now));
        assert_eq!(buckets.len(), 3);
        // 1.5 tokens refilled: one query, then none; a renewed bucket would allow five.
        assert!(buckets.allow(&"busy", now));
        assert!(!buckets.allow(&"busy", now), "its bucket was kept");
        // Full of active sources: the least recently seen goes, one per newcomer.
        for (i, source) in ["x", "y", "z"].into_iter().enumerate() {
            buckets.allow(&source, now + Duration::from_millis(1 + i as u64));
            assert_eq!(buckets.len(), 3);
        }
        let later = now + Duration::from_millis(4);
        let allowed = (0..5).filter(|_| buckets.allow(&"busy", later)).count();
        assert_eq!(allowed, 5, "forgotten, so a full bucket afresh");
    }

    #[test]
    fn the_log_gate_lets_one_line_through_per_interval() {
        let start = Instant::now();
        let mut gate = LogGate::new(Duration::from_secs(10));
        assert_eq!(gate.admit(start), Some(0));
        for i in 1..=7 {
            assert_eq!(gate.admit(start + Duration::from_secs(i)), None);
        }
        assert_eq!(gate.admit(start + Duration::from_secs(10)), Some(7));
        assert_eq!(gate.admit(start + Duration::from_secs(11)), None);
    }
}
