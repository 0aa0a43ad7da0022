//! Conntrack counters: every packet conntrack refuses or drops is counted
//! by reason, as is every connection created and ended.
//!
//! Plain relaxed atomics shared by all workers; per-worker counters come
//! with the worker stats (issue 5).

use std::sync::atomic::{AtomicU64, Ordering};

use super::EndReason;

/// Why a packet is invalid for conntrack (it is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InvalidReason {
    /// Not a connection opener and no connection: mid-stream ACK or data,
    /// an RST or FIN with nothing to close, an echo reply with no request.
    NoConnection,
    /// SYN+FIN, SYN+RST, FIN without ACK, no flags at all.
    BadTcpFlags,
    /// A SYN on an established connection.
    SynOnEstablished,
    /// Any other segment the state machine does not expect now.
    TcpOutOfState,
    /// A segment outside the receiver's window.
    OutOfWindow,
    /// An RST outside the receiver's window (blind reset).
    RstOutOfWindow,
    /// An ICMP error quoting no tracked connection.
    UnrelatedIcmpError,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 7] = [
        InvalidReason::NoConnection,
        InvalidReason::BadTcpFlags,
        InvalidReason::SynOnEstablished,
        InvalidReason::TcpOutOfState,
        InvalidReason::OutOfWindow,
        InvalidReason::RstOutOfWindow,
        InvalidReason::UnrelatedIcmpError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            InvalidReason::NoConnection => "no_connection",
            InvalidReason::BadTcpFlags => "bad_tcp_flags",
            InvalidReason::SynOnEstablished => "syn_on_established",
            InvalidReason::TcpOutOfState => "tcp_out_of_state",
            InvalidReason::OutOfWindow => "out_of_window",
            InvalidReason::RstOutOfWindow => "rst_out_of_window",
            InvalidReason::UnrelatedIcmpError => "unrelated_icmp_error",
        }
    }
}

/// Why an allowed new connection was not tracked (it is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefuseReason {
    /// At capacity, and nothing expired or embryonic to reclaim.
    TableFull,
    /// The originating address holds its quota of entries.
    SourceQuota,
    /// Another worker inserted the same connection and then lost it in the
    /// same instant (only under extreme churn).
    Raced,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 3] = [
        RefuseReason::TableFull,
        RefuseReason::SourceQuota,
        RefuseReason::Raced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::TableFull => "table_full",
            RefuseReason::SourceQuota => "source_quota",
            RefuseReason::Raced => "raced",
        }
    }
}

const END_REASONS: usize = 5;

fn end_index(reason: EndReason) -> usize {
    match reason {
        EndReason::Expired => 0,
        EndReason::Closed => 1,
        EndReason::Reset => 2,
        EndReason::Removed => 3,
        EndReason::EarlyDrop => 4,
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub struct ConntrackStats {
    created: AtomicU64,
    denied: AtomicU64,
    related: AtomicU64,
    events_dropped: AtomicU64,
    sweep_scanned: AtomicU64,
    sweep_skipped: AtomicU64,
    invalid: [AtomicU64; InvalidReason::ALL.len()],
    refused: [AtomicU64; RefuseReason::ALL.len()],
    ended: [AtomicU64; END_REASONS],
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub created: u64,
    pub denied: u64,
    pub related: u64,
    pub events_dropped: u64,
    /// Shards a sweep read entry by entry, because one of their entries
    /// could have expired.
    pub sweep_scanned: u64,
    /// Shards a sweep passed over without reading an entry: none of them
    /// could have expired yet (the shard's expiry bound).
    pub sweep_skipped: u64,
    /// Indexed like `InvalidReason::ALL`.
    pub invalid: [u64; InvalidReason::ALL.len()],
    /// Indexed like `RefuseReason::ALL`.
    pub refused: [u64; RefuseReason::ALL.len()],
    /// Expired, closed, reset, removed, early-dropped.
    pub ended: [u64; END_REASONS],
}

impl StatsSnapshot {
    pub fn invalid(&self, reason: InvalidReason) -> u64 {
        self.invalid[reason as usize]
    }

    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused[reason as usize]
    }

    pub fn ended(&self, reason: EndReason) -> u64 {
        self.ended[end_index(reason)]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ConntrackStats {
    pub(crate) fn count_created(&self) {
        bump(&self.created);
    }

    pub(crate) fn count_denied(&self) {
        bump(&self.denied);
    }

    pub(crate) fn count_related(&self) {
        bump(&self.related);
    }

    pub(crate) fn count_event_dropped(&self) {
        bump(&self.events_dropped);
    }

    pub(crate) fn count_sweep_scanned(&self) {
        bump(&self.sweep_scanned);
    }

    pub(crate) fn count_sweep_skipped(&self) {
        bump(&self.sweep_skipped);
    }

    pub(crate) fn count_invalid(&self, reason: InvalidReason) {
        bump(&self.invalid[reason as usize]);
    }

    pub(crate) fn count_refused(&self, reason: RefuseReason) {
        bump(&self.refused[reason as usize]);
    }

    pub(crate) fn count_ended(&self, reason: EndReason) {
        bump(&self.ended[end_index(reason)]);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            created: load(&self.created),
            denied: load(&self.denied),
            related: load(&self.related),
            events_dropped: load(&self.events_dropped),
            sweep_scanned: load(&self.sweep_scanned),
            sweep_skipped: load(&self.sweep_skipped),
            invalid: self.invalid.each_ref().map(load),
            refused: self.refused.each_ref().map(load),
            ended: self.ended.each_ref().map(load),
        }
    }
}
