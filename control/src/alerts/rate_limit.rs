//! Keeps a flood of identical alerts (a scan hitting one deny rule, a
//! misconfigured client retrying) from drowning the receivers: a token
//! bucket per (kind, rule, source address). Alerts over the limit are
//! suppressed and counted, and the next alert of that key that passes
//! carries the count (`suppressed`), so nothing is hidden silently.
//!
//! It never reads a clock: callers pass `now_ms` (any monotonic
//! millisecond count), so tests are exact. Its memory is bounded: at most
//! `max_keys` buckets; a new key when full evicts the key seen longest
//! ago, so a flood of spoofed source addresses cannot grow it.

use std::collections::{BTreeMap, HashMap};

use super::config::RateLimitConfig;
use super::{Alert, AlertKind};

/// Buckets kept by default.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// Bucket credit is kept in 1/60000 of a token, so that one millisecond
/// at `per_minute` tokens a minute adds exactly `per_minute` units and
/// the arithmetic stays in integers.
const UNITS_PER_TOKEN: u64 = 60_000;

/// What alerts are rate-limited together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub rule: Option<String>,
    pub src_addr: Option<String>,
}

impl AlertKey {
    pub fn of(alert: &Alert) -> Self {
        Self {
            kind: alert.kind,
            rule: alert.rule.clone(),
            src_addr: alert.src_addr.clone(),
        }
    }
}

/// The limiter's answer for one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send it; `suppressed` alerts of its key were held back since the
    /// last one sent.
    Pass { suppressed: u64 },
    /// Over the limit: held back and counted.
    Suppressed,
}

#[derive(Debug)]
struct Bucket {
    credit: u64,
    refilled_at_ms: u64,
    suppressed: u64,
    /// Its entry in `RateLimiter::by_recency`.
    recency: (u64, u64),
}

/// Token buckets per key.
#[derive(Debug)]
pub struct RateLimiter {
    refill_per_ms: u64,
    capacity: u64,
    max_keys: usize,
    buckets: HashMap<AlertKey, Bucket>,
    /// (last seen ms, sequence) → key: the eviction order.
    by_recency: BTreeMap<(u64, u64), AlertKey>,
    sequence: u64,
    total_suppressed: u64,
    evicted: u64,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig, max_keys: usize) -> Self {
        Self {
            refill_per_ms: u64::from(config.per_minute),
            capacity: u64::from(config.burst.max(1)) * UNITS_PER_TOKEN,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            by_recency: BTreeMap::new(),
            sequence: 0,
            total_suppressed: 0,
            evicted: 0,
        }
    }

    /// The alert, carrying the count held back before it, if it may go.
    pub fn admit_alert(&mut self, mut alert: Alert, now_ms: u64) -> Option<Alert> {
        match self.admit(AlertKey::of(&alert), now_ms) {
            Admission::Pass { suppressed } => {
                alert.suppressed = alert.suppressed.saturating_add(suppressed);
                Some(alert)
            }
            Admission::Suppressed => None,
        }
    }

    /// Takes a token from `key`'s bucket if it has one.
    pub fn admit(&mut self, key: AlertKey, now_ms: u64) -> Admission {
        let recency = self.next_recency(now_ms);
        let admission = match self.buckets.get_mut(&key) {
            Some(bucket) => {
                self.by_recency.remove(&bucket.recency);
                bucket.recency = recency;
                take_token(bucket, self.refill_per_ms, self.capacity, now_ms)
            }
            None => {
                if self.buckets.len() >= self.max_keys {
                    self.evict_least_recent();
                }
                let mut bucket = Bucket {
                    credit: self.capacity,
                    refilled_at_ms: now_ms,
                    suppressed: 0,
                    recency,
                };
                let admission = take_token(&mut bucket, self.refill_per_ms, self.capacity, now_ms);
                self.buckets.insert(key.clone(), bucket);
                admission
            }
        };
        self.by_recency.insert(recency, key);
        if admission == Admission::Suppressed {
            self.total_suppressed += 1;
        }
        admission
    }

    /// Alerts held back since the start.
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed
    }

    /// Keys forgotten to make room for new ones.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }

    fn next_recency(&mut self, now_ms: u64) -> (u64, u64) {
        self.sequence += 1;
        (now_ms, self.sequence)
    }

    fn evict_least_recent(&mut self) {
        if let Some((_, key)) = self.by_recency.pop_first() {
            self.buckets.remove(&key);
            self.evicted += 1;
        }
    }
}

fn take_token(bucket: &mut Bucket, refill_per_ms: u64, capacity: u64, now_ms: u64) -> Admission {
    let elapsed_ms = now_ms.saturating_sub(bucket.refilled_at_ms);
    bucket.credit = bucket
        .credit
        .saturating_add(elapsed_ms.saturating_mul(refill_per_ms))
        .min(capacity);
    bucket.refilled_at_ms = bucket.refilled_at_ms.max(now_ms);
    if bucket.credit >= UNITS_PER_TOKEN {
        bucket.credit -= UNITS_PER_TOKEN;
        Admission::Pass {
            suppressed: std::mem::take(&mut bucket.suppressed),
        }
    } else {
        bucket.suppressed += 1;
        Admission::Suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32, max_keys: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { per_minute, burst }, max_keys)
    }

    fn key(src: &str) -> AlertKey {
        AlertKey {
            kind: AlertKind::Denied,
            rule: Some("shop/deny-all".into()),
            src_addr: Some(src.into()),
        }
    }

    const PASS: Admission = Admission::Pass { suppressed: 0 };

    #[test]
    fn a_burst_passes_then_the_rest_is_suppressed() {
        let mut limiter = limiter(60, 3, 100);
        let answers: Vec<_> = (0..5).map(|_| limiter.admit(key("a"), 1000)).collect();
        assert_eq!(
            answers,
            [
                PASS,
                PASS,
                PASS,
                Admission::Suppressed,
                Admission::Suppressed
            ]
        );
        assert_eq!(limiter.total_suppressed(), 2);
    }

    #[test]
    fn tokens_refill_at_the_rate_and_the_next_pass_carries_the_count() {
        // 60 a minute: one token a second.
        let mut limiter = limiter(60, 1, 100);
        assert_eq!(limiter.admit(key("a"), 0), PASS);
        assert_eq!(limiter.admit(key("a"), 500), Admission::Suppressed);
        assert_eq!(limiter.admit(key("a"), 999), Admission::Suppressed);
        assert_eq!(
            limiter.admit(key("a"), 1000),
            Admission::Pass { suppressed: 2 }
        );
        // The count was handed over: the next one carries nothing.
        assert_eq!(limiter.admit(key("a"), 2000), PASS);
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let mut limiter = limiter(600, 2, 100);
        assert_eq!(limiter.admit(key("a"), 0), PASS);
        // An hour idle refills to 2 tokens, not 36000.
        let later = 3_600_000;
        assert_eq!(limiter.admit(key("a"), later), PASS);
        assert_eq!(limiter.admit(key("a"), later), PASS);
        assert_eq!(limiter.admit(key("a"), later), Admission::Suppressed);
    }

    #[test]
    fn slow_rates_refill_fractions_of_a_token() {
        // One a minute: after 30 s half a token, after 60 s a whole one.
        let mut limiter = limiter(1, 1, 100);
        assert_eq!(limiter.admit(key("a"), 0), PASS);
        assert_eq!(limiter.admit(key("a"), 30_000), Admission::Suppressed);
        assert_eq!(
            limiter.admit(key("a"), 60_000),
            Admission::Pass { suppressed: 1 }
        );
    }

    #[test]
    fn keys_are_limited_separately() {
        let mut limiter = limiter(60, 1, 100);
        assert_eq!(limiter.admit(key("a"), 0), PASS);
        assert_eq!(limiter.admit(key("b"), 0), PASS);
        let other_kind = AlertKey {
            kind: AlertKind::WouldDeny,
            ..key("a")
        };
        assert_eq!(limiter.admit(other_kind, 0), PASS);
        assert_eq!(limiter.admit(key("a"), 0), Admission::Suppressed);
    }

    #[test]
    fn a_full_table_evicts_the_key_seen_longest_ago() {
        let mut limiter = limiter(60, 1, 2);
        assert_eq!(limiter.admit(key("a"), 0), PASS);
        assert_eq!(limiter.admit(key("b"), 1), PASS);
        assert_eq!(limiter.admit(key("a"), 2), Admission::Suppressed); // a is now the newer
        assert_eq!(limiter.admit(key("c"), 3), PASS); // evicts b
        assert_eq!(limiter.keys(), 2);
        assert_eq!(limiter.evicted(), 1);
        // a kept its (empty) bucket; b starts afresh with a full one.
        assert_eq!(limiter.admit(key("a"), 4), Admission::Suppressed);
        assert_eq!(limiter.admit(key("b"), 5), PASS); // evicts c
        assert_eq!(limiter.evicted(), 2);
    }

    #[test]
    fn a_flood_of_sources_stays_within_the_key_bound() {
        let mut limiter = limiter(60, 1, DEFAULT_MAX_KEYS);
        for n in 0..50_000u32 {
            limiter.admit(
                key(&format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)),
                7,
            );
        }
        assert_eq!(limiter.keys(), DEFAULT_MAX_KEYS);
        assert_eq!(limiter.by_recency.len(), DEFAULT_MAX_KEYS);
        assert_eq!(limiter.evicted(), 40_000);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut limiter = limiter(60, 1, 10);
        assert_eq!(limiter.admit(key("a"), 10_000), PASS);
        assert_eq!(limiter.admit(key("a"), 0), Admission::Suppressed);
        assert_eq!(
            limiter.admit(key("a"), 11_000),
            Admission::Pass { suppressed: 1 }
        );
    }

    #[test]
    fn admitted_alerts_carry_the_suppressed_count() {
        let mut limiter = limiter(60, 1, 10);
        let alert = Alert {
            time_ms: 0,
            rule: Some("shop/deny-all".into()),
            src_addr: Some("10.0.0.1".into()),
            ..Alert::now(AlertKind::Denied, 4, "denied".into())
        };
        assert!(limiter.admit_alert(alert.clone(), 0).is_some());
        assert!(limiter.admit_alert(alert.clone(), 10).is_none());
        assert!(limiter.admit_alert(alert.clone(), 20).is_none());
        let passed = limiter.admit_alert(alert, 1000).expect("refilled");
        assert_eq!(passed.suppressed, 2);
    }
}
