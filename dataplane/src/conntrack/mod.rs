//! Connection tracking: once a connection is admitted, its later packets are
//! decided here, in both directions, without the classifier.
//!
//! Design (measurements in `docs/benchmarks.md`, reasoning in
//! `docs/architecture.md`):
//! - **Sharded table** (`crate::sharded`): independently locked `hashbrown`
//!   tables, a key's shard chosen by its hash. Their number is derived from
//!   the capacity so each shard's power-of-two bucket array fills to at most
//!   7/8 at capacity (with 5% headroom for uneven hashing): a fixed count
//!   can leave every shard just past a power of two and double memory. Workers and the control plane
//!   contend only when they touch the same shard at the same instant; there
//!   is no global lock. This is dashmap's design; dashmap itself exposes
//!   per-shard iteration only through `unsafe` raw tables, and the
//!   incremental sweep and early drop need exactly that.
//! - **No I/O, no clock**: `now` (ns, monotonic) is an argument.
//! - **Capacity is a hard limit**: an insert first reserves a slot. Under
//!   pressure: sweep expired entries from a few shards, then early-drop an
//!   unreplied (embryonic) entry, as Linux does; else refuse and count.
//! - **Per-source quotas**: an originating address may hold at most
//!   `per_source_limit` entries, so one flooding workload cannot fill the
//!   table for the others.
//! - **Events**: creation and end of connections go to a bounded lock-free
//!   queue; when it is full the event is dropped and counted, never waited
//!   for.
//! - **Expiry**: `sweep` visits a bounded number of shards per call.
//!
//! Never blocks on anything but a shard's short critical section, never
//! allocates per packet (sweeps and early drop reuse nothing per packet),
//! never panics on input.

mod entry;
mod key;
mod stats;
mod tcp;

#[cfg(test)]
mod tests;

pub use entry::{ConnEntry, ConnState, TcpDirection, Timeouts};
pub use key::{ConnKey, Endpoint};
pub use stats::{ConntrackStats, InvalidReason, RefuseReason, StatsSnapshot};

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::packet::{proto, AddrFamily, FlowKey, TcpSegment};
use crate::sharded::ShardedTable;
use entry::ProtoClass;
use tcp::{event_of, in_window, track_segment, transition, TcpEvent, Transition};

/// Entries per shard at capacity: 7/8 of 8,192 buckets. Small enough that
/// a sweep step or an early-drop scan is short.
const SHARD_CAPACITY: usize = 7_168;

/// Fewest shards, whatever the capacity: below this, workers on different
/// cores would queue on the same few locks.
const MIN_SHARDS: usize = 64;

/// Pass as `max_shards` to `sweep` to visit every shard.
pub const ALL_SHARDS: usize = usize::MAX;

/// Quota shards (a power of two).
const QUOTA_SHARDS: usize = 256;

/// Limits and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Hard maximum of entries.
    pub max_entries: usize,
    /// Most entries one originating address (per zone) may hold.
    pub per_source_limit: u32,
    /// Capacity of the flow event queue.
    pub event_capacity: usize,
    /// Shards a pressure sweep visits before early drop.
    pub pressure_sweep_shards: usize,
    /// Entries an early-drop scan examines per shard.
    pub early_drop_scan: usize,
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_entries: 1 << 20,
            per_source_limit: 1 << 17,
            event_capacity: 1 << 16,
            pressure_sweep_shards: 2,
            early_drop_scan: 64,
            timeouts: Timeouts::default(),
        }
    }
}

/// The policy's answer for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allow { generation: u32, rule_id: u32 },
    Deny,
}

/// One packet as conntrack needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackPacket {
    pub flow: FlowKey,
    pub zone: u16,
    /// TCP sequence fields (from the parser).
    pub tcp: Option<TcpSegment>,
    /// Frame length, for the byte counters.
    pub bytes: u32,
    /// For an ICMP error: the key of the packet it quotes.
    pub quoted: Option<FlowKey>,
    /// Workload identity of the sender, when known.
    pub workload: u32,
}

/// Original or reply direction of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Original,
    Reply,
}

/// What conntrack decided for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackOutcome {
    /// Part of a tracked connection (`created`: this packet opened it).
    Tracked {
        direction: Direction,
        state: ConnState,
        generation: u32,
        rule_id: u32,
        created: bool,
    },
    /// An ICMP error about a tracked connection.
    Related { generation: u32, rule_id: u32 },
    /// No connection, and the policy denied a new one.
    Denied,
    /// Out of state or malformed for conntrack: drop.
    Invalid(InvalidReason),
    /// A new connection the policy allowed but the table refused.
    Refused(RefuseReason),
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Idle past its state's timeout.
    Expired,
    /// Closed by FIN (its TIME_WAIT or LAST_ACK ran out).
    Closed,
    Reset,
    /// Closed by FIN and reopened, or cut by the control plane.
    Removed,
    EarlyDrop,
}

/// A flow event for the control plane (flow records, alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    Created {
        key: ConnKey,
        entry: ConnEntry,
    },
    Ended {
        key: ConnKey,
        entry: ConnEntry,
        reason: EndReason,
    },
}

/// The connection table.
#[derive(Debug)]
pub struct ConntrackTable {
    table: ShardedTable<(ConnKey, ConnEntry)>,
    /// Entries each source holds, for the quota.
    sources: ShardedTable<(SourceKey, u32)>,
    config: ConntrackConfig,
    entries: AtomicUsize,
    sweep_cursor: AtomicUsize,
    events: ArrayQueue<FlowEvent>,
    stats: ConntrackStats,
}

/// Quota key: zone and originating address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SourceKey {
    zone: u16,
    family: AddrFamily,
    addr: u128,
}

impl ConntrackTable {
    pub fn new(config: ConntrackConfig) -> Self {
        let with_headroom = config.max_entries.saturating_add(config.max_entries / 20);
        let shards = with_headroom.div_ceil(SHARD_CAPACITY).max(MIN_SHARDS);
        let per_shard = with_headroom.div_ceil(shards);
        Self {
            table: ShardedTable::new(shards, per_shard),
            sources: ShardedTable::new(QUOTA_SHARDS, 0),
            entries: AtomicUsize::new(0),
            sweep_cursor: AtomicUsize::new(0),
            events: ArrayQueue::new(config.event_capacity.max(1)),
            stats: ConntrackStats::default(),
            config,
        }
    }

    pub fn config(&self) -> &ConntrackConfig {
        &self.config
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters, by reason.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The flow event queue (the control plane pops from it).
    pub fn events(&self) -> &ArrayQueue<FlowEvent> {
        &self.events
    }

    fn hash(&self, key: &ConnKey) -> u64 {
        self.table.hash(key)
    }

    fn emit(&self, event: FlowEvent) {
        if self.events.push(event).is_err() {
            self.stats.count_event_dropped();
        }
    }

    fn class(key_proto: u8, family: AddrFamily) -> ProtoClass {
        match (key_proto, family) {
            (proto::TCP, _) => ProtoClass::Tcp,
            (proto::UDP | proto::UDPLITE, _) => ProtoClass::Udp,
            (proto::ICMP, AddrFamily::V4) | (proto::ICMPV6, AddrFamily::V6) => ProtoClass::Icmp,
            _ => ProtoClass::Other,
        }
    }

    fn expires_at(&self, key: &ConnKey, entry: &ConnEntry) -> u64 {
        let timeout = self
            .config
            .timeouts
            .for_state(Self::class(key.proto, key.family), entry.state);
        entry.last_seen.saturating_add(timeout)
    }

    /// A copy of the entry for `key`, if tracked (control plane: explain).
    pub fn get(&self, key: &ConnKey) -> Option<ConnEntry> {
        let hash = self.hash(key);
        let shard = self.table.lock_for(hash);
        shard.find(hash, |(k, _)| k == key).map(|(_, e)| *e)
    }

    /// Visits every entry, one shard at a time (control plane: listing).
    pub fn for_each(&self, mut visit: impl FnMut(&ConnKey, &ConnEntry)) {
        for index in 0..self.table.shard_count() {
            let shard = self.table.lock_shard(index);
            for (key, entry) in shard.iter() {
                visit(key, entry);
            }
        }
    }

    /// Updates the admission of a connection after a policy change
    /// re-check; false if it is gone.
    pub fn readmit(&self, key: &ConnKey, generation: u32, rule_id: u32) -> bool {
        let hash = self.hash(key);
        let mut shard = self.table.lock_for(hash);
        match shard.find_mut(hash, |(k, _)| k == key) {
            Some((_, entry)) => {
                entry.generation = generation;
                entry.rule_id = rule_id;
                true
            }
            None => false,
        }
    }

    /// Removes a connection (cut by policy, or by the caller).
    pub fn remove(&self, key: &ConnKey, reason: EndReason) -> Option<ConnEntry> {
        let hash = self.hash(key);
        let removed = {
            let mut shard = self.table.lock_for(hash);
            match shard.find_entry(hash, |(k, _)| k == key) {
                Ok(occupied) => Some(occupied.remove().0 .1),
                Err(_) => None,
            }
        };
        if let Some(entry) = removed {
            self.forget(key, &entry, reason);
        }
        removed
    }

    /// Bookkeeping after an entry left the table (no shard lock held).
    fn forget(&self, key: &ConnKey, entry: &ConnEntry, reason: EndReason) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.release_quota(key, entry.originator);
        self.stats.count_ended(reason);
        self.emit(FlowEvent::Ended {
            key: *key,
            entry: *entry,
            reason,
        });
    }

    /// Decides one packet. `admit` is asked only for a packet that would
    /// open a new connection.
    pub fn track(
        &self,
        packet: &TrackPacket,
        now: u64,
        admit: impl FnOnce() -> Admission,
    ) -> TrackOutcome {
        if let Some(quoted) = &packet.quoted {
            return self.track_related(quoted, packet.zone);
        }
        let (key, sender) = ConnKey::from_flow(&packet.flow, packet.zone);
        let hash = self.hash(&key);
        match self.update_existing(&key, hash, sender, packet, now) {
            Existing::Done(outcome) => return outcome,
            Existing::Absent => {}
        }
        self.open(&key, hash, sender, packet, now, admit)
    }

    fn track_related(&self, quoted: &FlowKey, zone: u16) -> TrackOutcome {
        let (key, _) = ConnKey::from_flow(quoted, zone);
        match self.get(&key) {
            Some(entry) => {
                self.stats.count_related();
                TrackOutcome::Related {
                    generation: entry.generation,
                    rule_id: entry.rule_id,
                }
            }
            None => self.invalid(InvalidReason::UnrelatedIcmpError),
        }
    }

    fn invalid(&self, reason: InvalidReason) -> TrackOutcome {
        self.stats.count_invalid(reason);
        TrackOutcome::Invalid(reason)
    }

    /// Applies a packet to its existing entry, if there is a live one.
    fn update_existing(
        &self,
        key: &ConnKey,
        hash: u64,
        sender: Endpoint,
        packet: &TrackPacket,
        now: u64,
    ) -> Existing {
        let mut shard = self.table.lock_for(hash);
        let Ok(occupied) = shard.find_entry(hash, |(k, _)| k == key) else {
            return Existing::Absent;
        };
        let entry = occupied.get().1;
        let ended = if now >= self.expires_at(key, &entry) {
            Some(end_reason_at_expiry(entry.state))
        } else if key.proto == proto::TCP {
            match self.tcp_step(&entry, sender, packet) {
                Ok(Transition::Reopen) => Some(EndReason::Removed),
                Ok(Transition::To(_)) => None,
                Err(reason) => return Existing::Done(self.invalid(reason)),
            }
        } else {
            None
        };
        if let Some(reason) = ended {
            let (_, entry) = occupied.remove().0;
            drop(shard);
            self.forget(key, &entry, reason);
            return Existing::Absent;
        }
        let (_, entry) = occupied.into_mut();
        self.apply(entry, sender, packet, now);
        let direction = if sender == entry.originator {
            Direction::Original
        } else {
            Direction::Reply
        };
        let outcome = TrackOutcome::Tracked {
            direction,
            state: entry.state,
            generation: entry.generation,
            rule_id: entry.rule_id,
            created: false,
        };
        // A reset ends the connection now: the RST itself is forwarded, and
        // stray segments after it find no connection.
        if entry.state == ConnState::TcpClose {
            if let Ok(occupied) = shard.find_entry(hash, |(k, _)| k == key) {
                let (_, entry) = occupied.remove().0;
                drop(shard);
                self.forget(key, &entry, EndReason::Reset);
            }
        }
        Existing::Done(outcome)
    }

    /// Validates a TCP segment against an entry: flags, window, transition.
    fn tcp_step(
        &self,
        entry: &ConnEntry,
        sender: Endpoint,
        packet: &TrackPacket,
    ) -> Result<Transition, InvalidReason> {
        let flags = packet.flow.tcp_flags;
        let event = event_of(flags)?;
        let segment = packet.tcp.unwrap_or_default();
        if !in_window(entry, sender, &segment, flags) {
            return Err(if event == TcpEvent::Rst {
                InvalidReason::RstOutOfWindow
            } else {
                InvalidReason::OutOfWindow
            });
        }
        transition(entry, sender, event)
    }

    /// Updates counters and state of a live entry for an accepted packet.
    fn apply(&self, entry: &mut ConnEntry, sender: Endpoint, packet: &TrackPacket, now: u64) {
        let side = usize::from(sender & 1);
        entry.packets[side] = entry.packets[side].saturating_add(1);
        entry.bytes[side] = entry.bytes[side].saturating_add(u64::from(packet.bytes));
        entry.last_seen = now;
        if packet.workload != 0 {
            entry.workloads[side] = packet.workload;
        }
        let flags = packet.flow.tcp_flags;
        if packet.flow.proto == proto::TCP {
            if let Ok(Transition::To(state)) =
                event_of(flags).and_then(|event| transition(entry, sender, event))
            {
                if state == ConnState::TcpFinWait && entry.state != ConnState::TcpFinWait {
                    entry.closer = sender;
                }
                entry.state = state;
            }
            entry.flags_seen[side] |= flags;
            track_segment(entry, sender, &packet.tcp.unwrap_or_default(), flags);
        } else if sender != entry.originator {
            entry.state = ConnState::Established;
        }
    }

    /// Opens a new connection for a packet with no live entry.
    fn open(
        &self,
        key: &ConnKey,
        hash: u64,
        sender: Endpoint,
        packet: &TrackPacket,
        now: u64,
        admit: impl FnOnce() -> Admission,
    ) -> TrackOutcome {
        if let Err(reason) = Self::can_open(packet) {
            return self.invalid(reason);
        }
        let (generation, rule_id) = match admit() {
            Admission::Allow {
                generation,
                rule_id,
            } => (generation, rule_id),
            Admission::Deny => {
                self.stats.count_denied();
                return TrackOutcome::Denied;
            }
        };
        if let Err(reason) = self.reserve_slot(now) {
            return self.refuse(reason);
        }
        if let Err(reason) = self.take_quota(key, sender) {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            return self.refuse(reason);
        }
        let mut entry = ConnEntry {
            state: if key.proto == proto::TCP {
                ConnState::TcpSynSent
            } else {
                ConnState::New
            },
            originator: sender,
            closer: sender,
            generation,
            rule_id,
            first_seen: now,
            last_seen: now,
            ..ConnEntry::default()
        };
        self.apply(&mut entry, sender, packet, now);
        let inserted = {
            let mut shard = self.table.lock_for(hash);
            match shard.entry(hash, |(k, _)| k == key, |(k, _)| self.hash(k)) {
                hashbrown::hash_table::Entry::Vacant(vacant) => {
                    vacant.insert((*key, entry));
                    true
                }
                // Another worker opened it first.
                hashbrown::hash_table::Entry::Occupied(_) => false,
            }
        };
        if !inserted {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.release_quota(key, sender);
            return self
                .update_existing(key, hash, sender, packet, now)
                .into_outcome();
        }
        self.stats.count_created();
        self.emit(FlowEvent::Created { key: *key, entry });
        TrackOutcome::Tracked {
            direction: Direction::Original,
            state: entry.state,
            generation,
            rule_id,
            created: true,
        }
    }

    /// Only a SYN opens TCP; an ICMP echo reply, or any ICMP error, never
    /// opens anything (errors are matched as related).
    fn can_open(packet: &TrackPacket) -> Result<(), InvalidReason> {
        let flow = &packet.flow;
        if flow.proto == proto::TCP {
            return match event_of(flow.tcp_flags)? {
                TcpEvent::Syn => Ok(()),
                _ => Err(InvalidReason::NoConnection),
            };
        }
        let icmp_reply = match (flow.family, flow.proto) {
            (AddrFamily::V4, proto::ICMP) => matches!(flow.icmp_type(), Some(0 | 14 | 16 | 18)),
            (AddrFamily::V6, proto::ICMPV6) => flow.icmp_type() == Some(129),
            _ => false,
        };
        if icmp_reply {
            return Err(InvalidReason::NoConnection);
        }
        Ok(())
    }

    fn refuse(&self, reason: RefuseReason) -> TrackOutcome {
        self.stats.count_refused(reason);
        TrackOutcome::Refused(reason)
    }

    /// Reserves one entry of capacity, reclaiming under pressure.
    fn reserve_slot(&self, now: u64) -> Result<(), RefuseReason> {
        if self.try_reserve() {
            return Ok(());
        }
        self.sweep(now, self.config.pressure_sweep_shards);
        if self.try_reserve() {
            return Ok(());
        }
        if self.early_drop() && self.try_reserve() {
            return Ok(());
        }
        Err(RefuseReason::TableFull)
    }

    fn try_reserve(&self) -> bool {
        self.entries
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.config.max_entries).then_some(n + 1)
            })
            .is_ok()
    }

    /// Drops the oldest unreplied entry among the first `early_drop_scan`
    /// entries met walking the shards from the sweep cursor (bounded work:
    /// at most that many entries, and each shard locked at most once);
    /// true if one was dropped.
    fn early_drop(&self) -> bool {
        let start = self.sweep_cursor.load(Ordering::Relaxed);
        let mut examined = 0;
        let mut oldest: Option<(u64, usize, ConnKey)> = None;
        let shards = self.table.shard_count();
        for offset in 0..shards {
            if examined >= self.config.early_drop_scan {
                break;
            }
            let index = (start + offset) % shards;
            let shard = self.table.lock_shard(index);
            for (key, entry) in shard.iter().take(self.config.early_drop_scan - examined) {
                examined += 1;
                let older = oldest.is_none_or(|(seen, _, _)| entry.last_seen < seen);
                if entry.state.is_embryonic() && older {
                    oldest = Some((entry.last_seen, index, *key));
                }
            }
        }
        let Some((_, index, key)) = oldest else {
            return false;
        };
        let hash = self.hash(&key);
        let victim = {
            let mut shard = self.table.lock_shard(index);
            // It may have been answered or removed since the scan.
            match shard.find_entry(hash, |(k, e)| *k == key && e.state.is_embryonic()) {
                Ok(occupied) => Some(occupied.remove().0),
                Err(_) => None,
            }
        };
        match victim {
            Some((key, entry)) => {
                self.forget(&key, &entry, EndReason::EarlyDrop);
                true
            }
            None => false,
        }
    }

    fn source_of(key: &ConnKey, originator: Endpoint) -> SourceKey {
        SourceKey {
            zone: key.zone,
            family: key.family,
            addr: key.addr(originator),
        }
    }

    fn take_quota(&self, key: &ConnKey, originator: Endpoint) -> Result<(), RefuseReason> {
        let source = Self::source_of(key, originator);
        let hash = self.sources.hash(&source);
        let mut quotas = self.sources.lock_for(hash);
        match quotas.find_mut(hash, |(s, _)| *s == source) {
            Some((_, count)) if *count >= self.config.per_source_limit => {
                Err(RefuseReason::SourceQuota)
            }
            Some((_, count)) => {
                *count += 1;
                Ok(())
            }
            None => {
                quotas.insert_unique(hash, (source, 1), |(s, _)| self.sources.hash(s));
                Ok(())
            }
        }
    }

    fn release_quota(&self, key: &ConnKey, originator: Endpoint) {
        let source = Self::source_of(key, originator);
        let hash = self.sources.hash(&source);
        let mut quotas = self.sources.lock_for(hash);
        if let Ok(mut slot) = quotas.find_entry(hash, |(s, _)| *s == source) {
            let count = &mut slot.get_mut().1;
            *count = count.saturating_sub(1);
            if *count == 0 {
                slot.remove();
            }
        }
    }

    /// Entries `source` (as a zone and address) holds against its quota.
    pub fn source_count(&self, zone: u16, family: AddrFamily, addr: u128) -> u32 {
        let source = SourceKey { zone, family, addr };
        let hash = self.sources.hash(&source);
        let quotas = self.sources.lock_for(hash);
        quotas
            .find(hash, |(s, _)| *s == source)
            .map_or(0, |(_, c)| *c)
    }

    /// Removes expired entries from the next `max_shards` shards; returns
    /// how many. Bounded work per call: never a full-table pause.
    pub fn sweep(&self, now: u64, max_shards: usize) -> usize {
        let mut removed = 0;
        let mut expired: Vec<(ConnKey, ConnEntry)> = Vec::new();
        let shards = self.table.shard_count();
        for _ in 0..max_shards.min(shards) {
            let index = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) % shards;
            {
                let mut shard = self.table.lock_shard(index);
                shard.retain(|(key, entry)| {
                    let live = now < self.expires_at(key, entry);
                    if !live {
                        expired.push((*key, *entry));
                    }
                    live
                });
            }
            removed += expired.len();
            for (key, entry) in expired.drain(..) {
                self.forget(&key, &entry, end_reason_at_expiry(entry.state));
            }
        }
        removed
    }
}

/// Why an entry that timed out ended: FIN-closed connections closed,
/// everything else expired.
fn end_reason_at_expiry(state: ConnState) -> EndReason {
    match state {
        ConnState::TcpTimeWait | ConnState::TcpLastAck | ConnState::TcpClose => EndReason::Closed,
        _ => EndReason::Expired,
    }
}

/// Result of looking for a live entry.
enum Existing {
    Done(TrackOutcome),
    Absent,
}

impl Existing {
    /// A packet that raced with another worker's insert: the entry is
    /// there now, so it is never absent here.
    fn into_outcome(self) -> TrackOutcome {
        match self {
            Existing::Done(outcome) => outcome,
            Existing::Absent => TrackOutcome::Refused(RefuseReason::Raced),
        }
    }
}
