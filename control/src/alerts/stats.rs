//! What alert delivery has done, per sink, for `/metrics` and the API:
//! counters the delivery threads bump without locks, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// A snapshot of every sink's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts held back by the rate limit (over all keys).
    pub suppressed: u64,
    pub sinks: Vec<SinkStats>,
}

/// One sink's counters. Every alert submitted while the sink runs ends as
/// exactly one of `sent`, `failed` or `dropped` (or is still `queued`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// `syslog udp 127.0.0.1:514`, `file /var/log/…`, `webhook http://…`.
    pub name: String,
    /// Delivered (for UDP syslog: sent without a local error).
    pub sent: u64,
    /// Given up on after every attempt failed.
    pub failed: u64,
    /// Never attempted: the queue was full, or the hub shut down first.
    pub dropped: u64,
    /// Attempts after the first, over all alerts.
    pub retries: u64,
    /// Waiting in the queue now.
    pub queued: usize,
    /// The latest failure, for an operator.
    pub last_error: Option<String>,
}

/// The live counters behind a `SinkStats`.
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SinkCounters {
    pub(crate) fn count_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self, alerts: u64) {
        self.dropped.fetch_add(alerts, Ordering::Relaxed);
    }

    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    pub(crate) fn snapshot(&self, name: &str, queued: usize) -> SinkStats {
        SinkStats {
            name: name.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            queued,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}
