//! The bounded in-memory store of flow records, with a live feed.
//!
//! The newest `capacity` records are kept; older ones are evicted and
//! counted. Queries filter by endpoint (workload name, address or CIDR),
//! verdict and time. Live subscribers get every new record through a
//! bounded broadcast channel; a subscriber that falls behind loses the
//! oldest records, and the loss is counted here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use microseg_dataplane::classifier::IpPrefix;
use microseg_dataplane::packet::ip_to_u128;
use serde::Serialize;
use tokio::sync::broadcast;

use super::record::{Endpoint, FlowRecord, Verdict};
use crate::syntax::{parse_cidr, AddressMatch};

/// Records a live subscriber may fall behind by before it loses some.
const LIVE_BACKLOG: usize = 4096;

/// Most records one query returns.
pub const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 100;

/// A bad query parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct QueryError {
    pub parameter: String,
    pub message: String,
}

fn bad(parameter: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter: parameter.into(),
        message: message.into(),
    }
}

/// A `since` parameter: Unix seconds (fractions allowed), as milliseconds.
pub fn parse_since(value: &str) -> Result<u64, QueryError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|seconds| (seconds * 1000.0) as u64)
        .ok_or_else(|| bad("since", format!("`{value}` is not a Unix time in seconds")))
}

/// Which endpoints a filter takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointFilter {
    Workload(String),
    Prefix(IpPrefix),
}

impl EndpointFilter {
    /// An address or CIDR, else a workload name.
    pub fn parse(text: &str) -> Self {
        match parse_cidr(text) {
            Ok(AddressMatch::Prefix(prefix)) => EndpointFilter::Prefix(prefix),
            _ => EndpointFilter::Workload(text.trim().to_string()),
        }
    }

    pub fn matches(&self, endpoint: &Endpoint) -> bool {
        match self {
            EndpointFilter::Workload(name) => endpoint.workload.as_deref() == Some(name),
            EndpointFilter::Prefix(prefix) => endpoint
                .address
                .parse()
                .map(ip_to_u128)
                .is_ok_and(|(family, addr)| family == prefix.family() && prefix.contains(addr)),
        }
    }
}

/// A query: every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub src: Option<EndpointFilter>,
    pub dst: Option<EndpointFilter>,
    pub verdict: Option<Verdict>,
    /// Records at or after this Unix time (milliseconds).
    pub since_ms: Option<u64>,
    /// Most records returned (the newest).
    pub limit: usize,
}

impl FlowFilter {
    /// From query parameters `src`, `dst` (workload, address or CIDR),
    /// `verdict` (allowed, denied, would_deny, cut), `since` (Unix
    /// seconds) and `limit` (1 to 10,000; default 100). Anything else is
    /// an error that names the parameter.
    pub fn from_query(params: &HashMap<String, String>) -> Result<Self, QueryError> {
        let mut filter = FlowFilter {
            limit: DEFAULT_LIMIT,
            ..FlowFilter::default()
        };
        for (name, value) in params {
            match name.as_str() {
                "src" => filter.src = Some(EndpointFilter::parse(value)),
                "dst" => filter.dst = Some(EndpointFilter::parse(value)),
                "verdict" => {
                    filter.verdict = Some(Verdict::parse(value).ok_or_else(|| {
                        bad(
                            "verdict",
                            format!("`{value}` is not one of allowed, denied, would_deny, cut"),
                        )
                    })?)
                }
                "since" => filter.since_ms = Some(parse_since(value)?),
                "limit" => {
                    filter.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            bad(
                                "limit",
                                format!("`{value}` is not a number from 1 to {MAX_LIMIT}"),
                            )
                        })?
                }
                other => {
                    return Err(bad(
                        other,
                        "unknown parameter (src, dst, verdict, since, limit)",
                    ))
                }
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, record: &FlowRecord) -> bool {
        self.src.as_ref().is_none_or(|f| f.matches(&record.src))
            && self.dst.as_ref().is_none_or(|f| f.matches(&record.dst))
            && self.verdict.is_none_or(|v| v == record.verdict)
            && self.since_ms.is_none_or(|since| record.time_ms >= since)
    }
}

/// What the store has seen and lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowStoreStats {
    pub recorded: u64,
    pub held: usize,
    pub capacity: usize,
    /// Records pushed out by newer ones.
    pub evicted: u64,
    /// Records live subscribers missed because they fell behind.
    pub stream_lost: u64,
}

#[derive(Debug)]
struct Held {
    records: VecDeque<Arc<FlowRecord>>,
    next_id: u64,
}

/// The store.
#[derive(Debug)]
pub struct FlowStore {
    held: Mutex<Held>,
    capacity: usize,
    /// None once closed (live subscribers see the end of the feed).
    live: Mutex<Option<broadcast::Sender<Arc<FlowRecord>>>>,
    evicted: AtomicU64,
    stream_lost: AtomicU64,
}

impl FlowStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            held: Mutex::new(Held {
                records: VecDeque::with_capacity(capacity.min(1 << 16)),
                next_id: 1,
            }),
            capacity: capacity.max(1),
            live: Mutex::new(Some(broadcast::channel(LIVE_BACKLOG).0)),
            evicted: AtomicU64::new(0),
            stream_lost: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a record (its id assigned here) and feeds it live.
    pub fn push(&self, mut record: FlowRecord) -> Arc<FlowRecord> {
        let record = {
            let mut held = self.lock();
            record.id = held.next_id;
            held.next_id += 1;
            let record = Arc::new(record);
            if held.records.len() == self.capacity {
                held.records.pop_front();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            held.records.push_back(Arc::clone(&record));
            record
        };
        if let Some(live) = self.live_sender() {
            // No subscriber is not an error.
            let _ = live.send(Arc::clone(&record));
        }
        record
    }

    /// The newest `filter.limit` matching records, oldest first.
    pub fn query(&self, filter: &FlowFilter) -> Vec<Arc<FlowRecord>> {
        let held = self.lock();
        let mut found: Vec<Arc<FlowRecord>> = held
            .records
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(filter.limit)
            .cloned()
            .collect();
        found.reverse();
        found
    }

    /// The record with id `id`, if still held.
    pub fn find(&self, id: u64) -> Option<Arc<FlowRecord>> {
        let held = self.lock();
        let oldest = held.records.front()?.id;
        let record = held
            .records
            .get(usize::try_from(id.checked_sub(oldest)?).ok()?)?;
        (record.id == id).then(|| Arc::clone(record))
    }

    /// Every record held, oldest first (map, impact, recommendations).
    pub fn all(&self) -> Vec<Arc<FlowRecord>> {
        self.lock().records.iter().cloned().collect()
    }

    fn live_sender(&self) -> Option<broadcast::Sender<Arc<FlowRecord>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A live feed of new records (already ended if the store is closed).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FlowRecord>> {
        match self.live_sender() {
            Some(live) => live.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Ends every live feed (the appliance is stopping).
    pub fn close(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Counts records a live subscriber missed.
    pub fn count_stream_lost(&self, records: u64) {
        self.stream_lost.fetch_add(records, Ordering::Relaxed);
    }

    pub fn stats(&self) -> FlowStoreStats {
        let held = self.lock();
        FlowStoreStats {
            recorded: held.next_id - 1,
            held: held.records.len(),
            capacity: self.capacity,
            evicted: self.evicted.load(Ordering::Relaxed),
            stream_lost: self.stream_lost.load(Ordering::Relaxed),
        }
    }
}
