//! Connection tracking: once a connection is admitted, its later packets are
//! decided here, in both directions, without the classifier.
//!
//! Design (measurements in `docs/benchmarks.md`, reasoning in
//! `docs/architecture.md`):
//! - **Sharded open-addressing table** (`slots`): fixed arrays of 112-byte
//!   slots, split into shards that lock independently; a key's shard is
//!   chosen by its hash. Workers and the control plane contend only when
//!   they touch the same shard at the same instant; there is no global
//!   lock. A lookup that misses and opens a connection does both under one
//!   shard lock.
//! - **Batches**: `prepare`, `prefetch_home`, `prefetch_lookups` (tags
//!   and slot of the keys not at home), then `track_prepared` per packet
//!   (or `track_batch`): a batch's cache misses overlap before any lock is
//!   taken.
//! - **No I/O, no clock**: `now` (ns, monotonic) is an argument.
//! - **Capacity is a hard limit**: an insert first reserves a slot. Under
//!   pressure: sweep expired entries from a few shards, then early-drop an
//!   unreplied (embryonic) entry, as Linux does; else refuse and count. A
//!   shard that fills before the table (uneven hashing past its headroom)
//!   does the same within itself.
//! - **Per-source quotas**: an originating address may hold at most
//!   `per_source_limit` entries, so one flooding workload cannot fill the
//!   table for the others.
//! - **Events**: creation and end of connections go to a bounded lock-free
//!   queue; when it is full the event is dropped and counted, never waited
//!   for.
//! - **Expiry**: `sweep` visits a bounded number of shards per call, and
//!   reads only each entry's hot line; `sweep_paced` spreads one pass over
//!   the table across `sweep_pass`, whatever its size.
//!
//! Never blocks on anything but a shard's short critical section, never
//! allocates per packet (sweeps and early drop reuse nothing per packet),
//! never panics on input.

mod entry;
mod hash;
mod key;
mod slots;
mod stats;
mod tcp;

#[cfg(test)]
mod tests;

pub use entry::{ConnEntry, ConnState, TcpDirection, Timeouts};
pub use key::{ConnKey, Endpoint};
pub use stats::{ConntrackStats, InvalidReason, RefuseReason, StatsSnapshot};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::packet::{proto, AddrFamily, FlowKey, TcpSegment};
use crate::sharded::ShardedTable;
use entry::{ProtoClass, StoredEntry, COUNTED_WORDS, ENTRY_WORDS};
use key::KEY_WORDS;
use slots::{HotFields, Place, Probe, ShardGuard, SlotTable};
use tcp::{event_of, in_window, track_segment, transition, TcpEvent, Transition};

/// Most entries per shard at capacity. Small enough that a sweep step or an
/// early-drop scan is short, large enough that shards fill evenly (spread
/// about 1%).
const SHARD_CAPACITY: usize = 7_168;

/// Fewest shards, whatever the capacity: below this, workers on different
/// cores would queue on the same few locks.
const MIN_SHARDS: usize = 64;

/// Packets a batch prefetches ahead of tracking them (an AF_XDP rx batch).
pub const BATCH: usize = 64;

/// Pass as `max_shards` to `sweep` to visit every shard.
pub const ALL_SHARDS: usize = usize::MAX;

/// Quota shards (a power of two).
const QUOTA_SHARDS: usize = 256;

/// Default `ConntrackConfig::sweep_pass`: 5 s. A sweep reads every
/// entry's hot line, so housekeeping costs the table's size over this
/// (docs/performance-notes.md, "Sweeping by time"); Linux's conntrack
/// garbage collector lets a large table go up to 60 s between visits.
pub const DEFAULT_SWEEP_PASS: u64 = 5_000_000_000;

/// Fewest shards one `sweep_paced` call may visit. The bound is the
/// larger of this and a 32nd of the table, so that callers every 100 ms
/// (idle workers) keep the pace with any table size, while a caller that
/// comes late takes a bounded step and leaves the rest to its next calls.
/// With up to 512 shards (3.5M entries) such a step is at most 16 full
/// shards of ~7,000 entries at ~7.5 ns each, about 0.9 ms, after a stall
/// only.
const MIN_PACED_SHARDS_PER_CALL: u64 = 16;

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
    /// Nanoseconds in which housekeeping (`sweep_paced`) visits every
    /// shard once, whatever the table's size: an expired entry is removed
    /// (and its end reported) at most about this long after it expired.
    /// Until then its next packet finds it ended, and a pressure sweep may
    /// reclaim it.
    pub sweep_pass: u64,
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
            sweep_pass: DEFAULT_SWEEP_PASS,
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

/// A packet's connection key, sender and place in the table, computed once
/// (`ConntrackTable::prepare`) so that a batch can prefetch before it
/// tracks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prepared {
    /// The key as stored (`ConnKey::encode`): compared by the probe.
    words: [u64; KEY_WORDS],
    sender: Endpoint,
    place: Place,
}

/// The packets of a batch that followed its first packet of the same
/// connection, sent by the same end, of a protocol without a state
/// machine (`Pipeline`'s grouping, docs/architecture.md). The first
/// packet's hit counts them too, in the same write, if its entry was
/// admitted by `generation`: each of them would have found the same live
/// entry and changed it only by a packet, its bytes and the same `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Followers {
    pub packets: u32,
    pub bytes: u64,
    pub generation: u32,
}

/// What applying a packet to its stored entry did.
enum Applied {
    /// The packet was applied; the outcome is written. `followers_counted`:
    /// the `Followers` were counted with it.
    Live { followers_counted: bool },
    /// The entry had ended and was removed; the packet may open it again.
    Ended,
}

impl Applied {
    /// Applied, with no followers counted (TCP, whose hits are each judged
    /// by their own segment).
    const ALONE: Applied = Applied::Live {
        followers_counted: false,
    };
}

/// The connection table.
#[derive(Debug)]
pub struct ConntrackTable {
    table: SlotTable,
    /// Entries each source holds, for the quota.
    sources: ShardedTable<(SourceKey, u32)>,
    config: ConntrackConfig,
    entries: AtomicUsize,
    sweep_cursor: AtomicUsize,
    /// Shards `sweep_paced` has claimed since the clock's zero.
    paced_shards: AtomicU64,
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
        let shards = config.max_entries.div_ceil(SHARD_CAPACITY).max(MIN_SHARDS);
        let per_shard = config.max_entries.div_ceil(shards);
        Self {
            table: SlotTable::new(shards, per_shard),
            sources: ShardedTable::new(QUOTA_SHARDS, 0),
            entries: AtomicUsize::new(0),
            sweep_cursor: AtomicUsize::new(0),
            paced_shards: AtomicU64::new(0),
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

    /// When the entry of a slot whose hot line holds `hot` expires.
    fn expires_at(&self, hot: &HotFields) -> u64 {
        let class = Self::class(hot.proto(), hot.family());
        self.expiry_in(class, hot.state(), hot.last_seen())
    }

    /// When a connection of `key` in `state`, last seen at `last_seen`,
    /// expires.
    fn expiry(&self, key: &ConnKey, state: ConnState, last_seen: u64) -> u64 {
        self.expiry_in(Self::class(key.proto, key.family), state, last_seen)
    }

    fn expiry_in(&self, class: ProtoClass, state: ConnState, last_seen: u64) -> u64 {
        let timeout = self.config.timeouts.for_state(class, state);
        last_seen.saturating_add(timeout)
    }

    /// Lowers the expiry bound of `shard` to the expiry of the entry of
    /// `key` just written there, so that sweeps, which skip a shard until
    /// its bound, find the entry once it expires (a TCP close shortens the
    /// timeout, for one).
    #[inline]
    fn note_expiry(&self, shard: &ShardGuard<'_>, key: &ConnKey, state: ConnState, last_seen: u64) {
        shard.note_expiry(self.expiry(key, state, last_seen));
    }

    /// Writes the entry of `key` back into `slot`, noting its expiry
    /// (`note_expiry`): every update of an existing entry goes through
    /// this or `write_stored`.
    #[inline]
    fn write_entry(&self, shard: &ShardGuard<'_>, slot: usize, key: &ConnKey, entry: &ConnEntry) {
        shard.set_entry(slot, entry);
        self.note_expiry(shard, key, entry.state, entry.last_seen);
    }

    /// `write_entry` for an entry updated on its stored words.
    #[inline]
    fn write_stored<const N: usize>(
        &self,
        shard: &ShardGuard<'_>,
        slot: usize,
        key: &ConnKey,
        stored: &StoredEntry<N>,
    ) {
        shard.set_entry_words(slot, &stored.0);
        self.note_expiry(shard, key, stored.state(), stored.last_seen());
    }

    /// Where `key` lives, with its stored words.
    fn locate(&self, key: &ConnKey) -> (Place, [u64; KEY_WORDS]) {
        let words = key.encode();
        (self.table.place(self.table.hash(&words)), words)
    }

    /// A copy of the entry for `key`, if tracked (control plane: explain).
    pub fn get(&self, key: &ConnKey) -> Option<ConnEntry> {
        let (place, words) = self.locate(key);
        let shard = self.table.lock(place.shard);
        match shard.probe(&words, &place) {
            Probe::Found(slot) => Some(shard.entry(slot)),
            Probe::Vacant(_) => None,
        }
    }

    /// Visits every entry, one shard at a time, with that shard locked
    /// (control plane: listing). `visit` must not call back into the table.
    pub fn for_each(&self, mut visit: impl FnMut(&ConnKey, &ConnEntry)) {
        for index in 0..self.table.shard_count() {
            let shard = self.table.lock(index);
            for slot in shard.occupied() {
                visit(&shard.key(slot), &shard.entry(slot));
            }
        }
    }

    /// Updates the admission of a connection after a policy change
    /// re-check; false if it is gone.
    pub fn readmit(&self, key: &ConnKey, generation: u32, rule_id: u32) -> bool {
        self.modify(key, |entry| {
            entry.generation = generation;
            entry.rule_id = rule_id;
        })
    }

    /// Counts into its connection what the XDP fast path forwarded of
    /// `flow` (one direction, in `zone`): `packets` frames of `bytes` in
    /// all, the last at `last_seen`. For TCP the window tracking starts
    /// over, as Linux does for a flow its flowtable gives back: the
    /// sequence numbers moved on unseen, and the next segment userspace
    /// sees sets them again. False if the connection is no longer tracked.
    pub fn refresh_offloaded(
        &self,
        flow: &FlowKey,
        zone: u16,
        packets: u64,
        bytes: u64,
        last_seen: u64,
    ) -> bool {
        let (key, sender) = ConnKey::from_flow(flow, zone);
        let side = usize::from(sender & 1);
        self.modify(&key, |entry| {
            let packets = u32::try_from(packets).unwrap_or(u32::MAX);
            entry.packets[side] = entry.packets[side].saturating_add(packets);
            entry.bytes[side] = entry.bytes[side].saturating_add(bytes);
            entry.last_seen = entry.last_seen.max(last_seen);
            restart_window(entry);
        })
    }

    /// Stops checking the TCP window of `flow`'s connection until the next
    /// segment userspace sees sets it again. For a connection handed to
    /// the XDP fast path, whose segments conntrack no longer sees: without
    /// this, its FIN (always given back to userspace) would be out of
    /// window. False if the connection is not tracked.
    pub fn restart_window(&self, flow: &FlowKey, zone: u16) -> bool {
        let (key, _) = ConnKey::from_flow(flow, zone);
        self.modify(&key, restart_window)
    }

    /// Changes the entry of `key` in place; false if it is not tracked.
    fn modify(&self, key: &ConnKey, change: impl FnOnce(&mut ConnEntry)) -> bool {
        let (place, words) = self.locate(key);
        let shard = self.table.lock(place.shard);
        match shard.probe(&words, &place) {
            Probe::Found(slot) => {
                let mut entry = shard.entry(slot);
                change(&mut entry);
                self.write_entry(&shard, slot, key, &entry);
                true
            }
            Probe::Vacant(_) => false,
        }
    }

    /// Removes a connection (cut by policy, or by the caller).
    pub fn remove(&self, key: &ConnKey, reason: EndReason) -> Option<ConnEntry> {
        let (place, words) = self.locate(key);
        let removed = {
            let shard = self.table.lock(place.shard);
            match shard.probe(&words, &place) {
                Probe::Found(slot) => Some(shard.remove(slot).1),
                Probe::Vacant(_) => None,
            }
        };
        if let Some(entry) = removed {
            self.forget(key, &entry, reason);
        }
        removed
    }

    /// Bookkeeping after an entry left the table. Takes only the quota
    /// lock, which is never held while taking a shard lock.
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
        let prepared = self.prepare(&packet.flow, packet.zone);
        self.track_prepared(packet, &prepared, now, admit)
    }

    /// The key, sender and place of a packet of `flow` in `zone`: the first
    /// step of tracking a batch.
    pub fn prepare(&self, flow: &FlowKey, zone: u16) -> Prepared {
        let (key, sender) = ConnKey::from_flow(flow, zone);
        let (place, words) = self.locate(&key);
        Prepared {
            words,
            sender,
            place,
        }
    }

    /// Second step of a batch: prefetch every packet's home slot, where
    /// most connections live (about three in four at half load).
    pub fn prefetch_home(&self, prepared: &Prepared) {
        self.table.prefetch_home(&prepared.place);
    }

    /// Third step, after every packet's `prefetch_home`, for up to `BATCH`
    /// lookups: those whose connection is not found at home (a packed key
    /// read without the lock: a hint) get their tags prefetched, then,
    /// once all tags are asked for, the slot their probe will stop at. A
    /// connection found at home costs its lookup one line, not two; a TCP
    /// one found there gets its home slot's cold part prefetched, since a
    /// TCP hit reads the windows there.
    pub fn prefetch_lookups<'a>(&self, lookups: impl Iterator<Item = &'a Prepared> + Clone) {
        const { assert!(BATCH <= u64::BITS as usize) };
        let is_tcp = |lookup: &Prepared| ConnKey::proto_of(&lookup.words) == proto::TCP;
        let mut away = 0u64;
        for (index, lookup) in lookups.clone().take(BATCH).enumerate() {
            if !self.table.home_holds(&lookup.place, &lookup.words) {
                away |= 1 << index;
                self.table.prefetch_tags(&lookup.place);
            } else if is_tcp(lookup) {
                self.table.prefetch_home_cold(&lookup.place);
            }
        }
        for (index, lookup) in lookups.take(BATCH).enumerate() {
            if away & (1 << index) != 0 {
                self.table
                    .prefetch_slot(&lookup.place, &lookup.words, is_tcp(lookup));
            }
        }
    }

    /// Tracks every packet of `packets` in batches of `BATCH`, prefetching
    /// each batch first; `out[i]` is for `packets[i]`, `admit(i)` is asked
    /// for a packet that would open a connection.
    pub fn track_batch(
        &self,
        packets: &[TrackPacket],
        now: u64,
        mut admit: impl FnMut(usize) -> Admission,
        out: &mut [TrackOutcome],
    ) {
        let mut prepared = [Prepared::default(); BATCH];
        for (batch, (packets, out)) in packets.chunks(BATCH).zip(out.chunks_mut(BATCH)).enumerate()
        {
            for (packet, prepared) in packets.iter().zip(prepared.iter_mut()) {
                *prepared = self.prepare(&packet.flow, packet.zone);
                self.prefetch_home(prepared);
            }
            self.prefetch_lookups(prepared[..packets.len()].iter());
            for (index, ((packet, prepared), out)) in packets
                .iter()
                .zip(&prepared)
                .zip(out.iter_mut())
                .enumerate()
            {
                self.track_prepared_into(
                    packet,
                    prepared,
                    now,
                    || admit(batch * BATCH + index),
                    &Followers::default(),
                    out,
                );
            }
        }
    }

    /// Decides one packet whose key `prepare` computed. A lookup that
    /// misses and opens a connection does both under one shard lock.
    pub fn track_prepared(
        &self,
        packet: &TrackPacket,
        prepared: &Prepared,
        now: u64,
        admit: impl FnOnce() -> Admission,
    ) -> TrackOutcome {
        let mut outcome = TrackOutcome::Denied;
        let none = Followers::default();
        self.track_prepared_into(packet, prepared, now, admit, &none, &mut outcome);
        outcome
    }

    /// `track_prepared`, writing the outcome into `out`, for the first
    /// packet of a batch's group: its hit also counts its `followers`, and
    /// the result says whether it did (only on a hit on a live entry of a
    /// protocol without a state machine, admitted by
    /// `followers.generation`). A hit writes its outcome's fields in place:
    /// returning it by value went through a stack copy that read the fields
    /// back as one wider load before their stores had retired, a failed
    /// store-to-load forward that was about a sixth of a hot batched hit
    /// (`docs/performance-notes.md`).
    pub fn track_prepared_into(
        &self,
        packet: &TrackPacket,
        prepared: &Prepared,
        now: u64,
        admit: impl FnOnce() -> Admission,
        followers: &Followers,
        out: &mut TrackOutcome,
    ) -> bool {
        if let Some(quoted) = &packet.quoted {
            *out = self.track_related(quoted, packet.zone);
            return false;
        }
        let shard = self.table.lock(prepared.place.shard);
        let vacant = match shard.probe(&prepared.words, &prepared.place) {
            Probe::Vacant(slot) => slot,
            Probe::Found(slot) => {
                match self.update_existing(&shard, slot, prepared, packet, now, followers, out) {
                    Applied::Live { followers_counted } => return followers_counted,
                    Applied::Ended => {}
                }
                // It ended; this packet may open it again.
                match shard.probe(&prepared.words, &prepared.place) {
                    Probe::Vacant(slot) => slot,
                    Probe::Found(_) => {
                        *out = TrackOutcome::Refused(RefuseReason::Raced);
                        return false;
                    }
                }
            }
        };
        *out = self.open(shard, vacant, prepared, packet, now, admit);
        false
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

    /// Applies a packet (and, without a state machine, its `followers`)
    /// to its live entry in `slot` and writes the outcome into `out`;
    /// `Ended` (and `out` untouched) if the entry had ended (expired, or a
    /// SYN reopening a closed connection) and was removed.
    #[allow(clippy::too_many_arguments)]
    fn update_existing(
        &self,
        shard: &ShardGuard<'_>,
        slot: usize,
        prepared: &Prepared,
        packet: &TrackPacket,
        now: u64,
        followers: &Followers,
        out: &mut TrackOutcome,
    ) -> Applied {
        if ConnKey::proto_of(&prepared.words) != proto::TCP {
            return self.update_stateless(shard, slot, prepared, packet, now, followers, out);
        }
        let (key, sender) = (&ConnKey::decode(&prepared.words), prepared.sender);
        let mut stored = StoredEntry::new(shard.entry_words::<ENTRY_WORDS>(slot));
        let live = now < self.expiry(key, stored.state(), stored.last_seen());
        let segment = packet.tcp.unwrap_or_default();
        if live
            && stored.established_ack(
                sender,
                &segment,
                packet.flow.tcp_flags,
                packet.bytes,
                packet.workload,
                now,
            )
        {
            self.write_stored(shard, slot, key, &stored);
            Self::hit(sender, &stored, out);
            return Applied::ALONE;
        }
        let mut entry = ConnEntry::decode(&stored.0);
        let ended = if !live {
            Some(end_reason_at_expiry(entry.state))
        } else {
            match self.tcp_step(&entry, sender, packet) {
                Ok(Transition::Reopen) => Some(EndReason::Removed),
                Ok(Transition::To(_)) => None,
                Err(reason) => {
                    *out = self.invalid(reason);
                    return Applied::ALONE;
                }
            }
        };
        if let Some(reason) = ended {
            let (_, entry) = shard.remove(slot);
            self.forget(key, &entry, reason);
            return Applied::Ended;
        }
        self.apply(&mut entry, sender, packet, now);
        // A reset ends the connection now: the RST itself is forwarded, and
        // stray segments after it find no connection.
        if entry.state == ConnState::TcpClose {
            shard.remove(slot);
            self.forget(key, &entry, EndReason::Reset);
        } else {
            self.write_entry(shard, slot, key, &entry);
        }
        *out = TrackOutcome::Tracked {
            direction: Self::direction(sender, entry.originator),
            state: entry.state,
            generation: entry.generation,
            rule_id: entry.rule_id,
            created: false,
        };
        Applied::ALONE
    }

    /// Which way a packet from `sender` goes on a connection `originator`
    /// opened.
    fn direction(sender: Endpoint, originator: Endpoint) -> Direction {
        if sender == originator {
            Direction::Original
        } else {
            Direction::Reply
        }
    }

    /// `update_existing` for protocols without a state machine (UDP, ICMP,
    /// others), on the stored words: a hit only counts, stamps the time and
    /// marks the reply; it counts the `followers` too if the entry was
    /// admitted by their generation.
    #[allow(clippy::too_many_arguments)]
    fn update_stateless(
        &self,
        shard: &ShardGuard<'_>,
        slot: usize,
        prepared: &Prepared,
        packet: &TrackPacket,
        now: u64,
        followers: &Followers,
        out: &mut TrackOutcome,
    ) -> Applied {
        let (key, sender) = (&ConnKey::decode(&prepared.words), prepared.sender);
        let mut stored = StoredEntry::new(shard.entry_words::<COUNTED_WORDS>(slot));
        if now >= self.expiry(key, stored.state(), stored.last_seen()) {
            let (_, entry) = shard.remove(slot);
            self.forget(key, &entry, end_reason_at_expiry(entry.state));
            return Applied::Ended;
        }
        stored.count_stateless(sender, packet.bytes, now);
        let followers_counted =
            followers.packets > 0 && stored.generation() == followers.generation;
        if followers_counted {
            stored.count_more(sender, followers.packets, followers.bytes);
        }
        self.write_stored(shard, slot, key, &stored);
        // The workloads word is in the slot's cold part: touched only when
        // the packet names its sender's workload.
        if packet.workload != 0 {
            shard.note_workload(slot, sender, packet.workload);
        }
        Self::hit(sender, &stored, out);
        Applied::Live { followers_counted }
    }

    /// Writes the outcome of a hit from `sender` that left the entry
    /// `stored` into `out`.
    fn hit<const N: usize>(sender: Endpoint, stored: &StoredEntry<N>, out: &mut TrackOutcome) {
        *out = TrackOutcome::Tracked {
            direction: Self::direction(sender, stored.originator()),
            state: stored.state(),
            generation: stored.generation(),
            rule_id: stored.rule_id(),
            created: false,
        };
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

    /// Opens a new connection for a packet with no live entry; `vacant` is
    /// where the probe under `shard`'s lock ended.
    fn open(
        &self,
        shard: ShardGuard<'_>,
        vacant: usize,
        prepared: &Prepared,
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
        let (key, sender) = (&ConnKey::decode(&prepared.words), prepared.sender);
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
        let (shard, vacant) = if !shard.is_full() && self.try_reserve() {
            (shard, vacant)
        } else {
            // Reclaiming locks other shards: not while holding this one.
            drop(shard);
            if let Err(reason) = self.reserve_slot(now) {
                return self.refuse(reason);
            }
            match self.relock_for_insert(prepared, packet, now) {
                Ok(locked) => locked,
                Err(Some(slot_taken)) => {
                    // Another worker opened it meanwhile: this packet is
                    // part of that connection.
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    return slot_taken;
                }
                Err(None) => {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    return self.refuse(RefuseReason::TableFull);
                }
            }
        };
        if let Err(reason) = self.take_quota(key, sender) {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            return self.refuse(reason);
        }
        shard.insert(vacant, &prepared.place, &prepared.words, &entry);
        self.note_expiry(&shard, key, entry.state, entry.last_seen);
        drop(shard);
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

    /// After reserving capacity without a lock: locks the packet's shard
    /// again and finds its vacant slot. A full shard first reclaims its
    /// expired entries, then early-drops its oldest unreplied one: the
    /// table as a whole has room (the reservation), and a shard fills
    /// before it only when hashing is uneven past its headroom. (If the
    /// table was full too, `reserve_slot` has already early-dropped an
    /// entry elsewhere: two go for one, in that rare coincidence.)
    /// `Err(Some(outcome))`: another worker opened the connection
    /// meanwhile, and the packet was applied to it; `Err(None)`: the shard
    /// stayed full (none of the entries the early drop looked at was
    /// unreplied).
    fn relock_for_insert(
        &self,
        prepared: &Prepared,
        packet: &TrackPacket,
        now: u64,
    ) -> Result<(ShardGuard<'_>, usize), Option<TrackOutcome>> {
        let shard = self.table.lock(prepared.place.shard);
        let mut probe = shard.probe(&prepared.words, &prepared.place);
        if let Probe::Found(slot) = probe {
            let mut outcome = TrackOutcome::Denied;
            let none = Followers::default();
            if let Applied::Live { .. } =
                self.update_existing(&shard, slot, prepared, packet, now, &none, &mut outcome)
            {
                return Err(Some(outcome));
            }
            probe = shard.probe(&prepared.words, &prepared.place);
        }
        // Room is made only for a connection that is really new here.
        if shard.is_full() {
            self.reclaim_expired(&shard, now);
            if shard.is_full() {
                self.early_drop_in(&shard);
            }
            // Removals shift runs back: the vacant slot may have moved.
            probe = shard.probe(&prepared.words, &prepared.place);
        }
        match probe {
            Probe::Vacant(slot) if !shard.is_full() => Ok((shard, slot)),
            _ => Err(None),
        }
    }

    /// Removes the expired entries of a locked shard; returns how many.
    /// A shard whose expiry bound is still ahead is skipped without reading
    /// an entry; a scan sets the bound to the earliest expiry it kept.
    fn reclaim_expired(&self, shard: &ShardGuard<'_>, now: u64) -> usize {
        if now < shard.expiry_bound() {
            self.stats.count_sweep_skipped();
            return 0;
        }
        self.stats.count_sweep_scanned();
        let mut expired = Vec::new();
        let mut earliest = u64::MAX;
        shard.retain(
            |hot| {
                let at = self.expires_at(hot);
                let live = now < at;
                if live {
                    earliest = earliest.min(at);
                }
                live
            },
            &mut expired,
        );
        shard.set_expiry_bound(earliest);
        for (key, entry) in &expired {
            self.forget(key, entry, end_reason_at_expiry(entry.state));
        }
        expired.len()
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
        let mut oldest: Option<(u64, ConnKey)> = None;
        let shards = self.table.shard_count();
        for offset in 0..shards {
            if examined >= self.config.early_drop_scan {
                break;
            }
            let shard = self.table.lock((start + offset) % shards);
            let limit = self.config.early_drop_scan - examined;
            examined += limit.min(shard.len());
            if let Some((seen, slot)) = oldest_embryonic(&shard, limit) {
                if oldest.is_none_or(|(oldest_seen, _)| seen < oldest_seen) {
                    oldest = Some((seen, shard.key(slot)));
                }
            }
        }
        let Some((_, key)) = oldest else {
            return false;
        };
        let (place, words) = self.locate(&key);
        let victim = {
            let shard = self.table.lock(place.shard);
            // It may have been answered or removed since the scan.
            match shard.probe(&words, &place) {
                Probe::Found(slot) if shard.entry(slot).state.is_embryonic() => {
                    Some(shard.remove(slot))
                }
                _ => None,
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

    /// Early drop inside the locked, full `shard`: removes the oldest
    /// unreplied entry among its first `early_drop_scan`, if any.
    fn early_drop_in(&self, shard: &ShardGuard<'_>) {
        if let Some((_, slot)) = oldest_embryonic(shard, self.config.early_drop_scan) {
            let (key, entry) = shard.remove(slot);
            self.forget(&key, &entry, EndReason::EarlyDrop);
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
        let shards = self.table.shard_count();
        (0..max_shards.min(shards))
            .map(|_| {
                let index = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) % shards;
                self.reclaim_expired(&self.table.lock(index), now)
            })
            .sum()
    }

    /// Housekeeping's sweep: visits the shards due by `now` (ns from the
    /// callers' common clock zero) so that every shard is visited once per
    /// `config.sweep_pass`, at most `MIN_PACED_SHARDS_PER_CALL` or a 32nd
    /// of the shards per call, whichever is more; returns
    /// the entries removed. Callers may be several workers: each due shard
    /// is claimed by one of them. A backlog beyond one pass (callers that
    /// stopped calling) is skipped, since one pass visits everything.
    pub fn sweep_paced(&self, now: u64) -> usize {
        let shards = self.table.shard_count() as u64;
        let pass = u128::from(self.config.sweep_pass.max(1));
        let due = (u128::from(now) * u128::from(shards) / pass).min(u128::from(u64::MAX)) as u64;
        let mut claimed = self.paced_shards.load(Ordering::Relaxed);
        loop {
            let from = claimed.max(due.saturating_sub(shards));
            let count = due
                .saturating_sub(from)
                .min(MIN_PACED_SHARDS_PER_CALL.max(shards / 32));
            if count == 0 {
                return 0;
            }
            match self.paced_shards.compare_exchange_weak(
                claimed,
                from + count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return self.sweep(now, count as usize),
                Err(seen) => claimed = seen,
            }
        }
    }
}

/// The oldest unreplied (embryonic) entry among the first `limit`
/// occupied slots of a locked shard, as (last seen, slot).
fn oldest_embryonic(shard: &ShardGuard<'_>, limit: usize) -> Option<(u64, usize)> {
    let mut oldest: Option<(u64, usize)> = None;
    for slot in shard.occupied().take(limit) {
        let hot = shard.hot_fields(slot);
        let older = oldest.is_none_or(|(seen, _)| hot.last_seen() < seen);
        if hot.state().is_embryonic() && older {
            oldest = Some((hot.last_seen(), slot));
        }
    }
    oldest
}

/// Forgets what the window tracking learned (`tcp::in_window` checks
/// nothing until both sides are seen again).
fn restart_window(entry: &mut ConnEntry) {
    for direction in &mut entry.tcp {
        direction.seen = false;
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
