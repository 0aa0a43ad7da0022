//! The per-packet logic of the switch, with no I/O: frames and `now` in,
//! one action per frame out. The AF_XDP workers (issue 5) call `process`
//! on each rx batch; tests call it on synthetic frames, without root.
//!
//! For each frame: parse → (ARP, neighbour discovery, other ethertypes:
//! L2 policy) → conntrack → on a new flow, classify with the policy
//! snapshot → verdict → L2 switch. Details:
//! - One `ArcSwap` load per batch: every packet of a batch is judged by
//!   exactly one policy generation (DESIGN invariant 2).
//! - A batch is parsed first, and every IP frame's conntrack lookup
//!   prefetched, before any frame is judged: the lookups' cache misses
//!   overlap (`conntrack::ConntrackTable::prepare`).
//! - Packets of a protocol without a state machine that follow the batch's
//!   first of the same connection and sender are counted by its hit and
//!   not looked up again (`group`).
//! - A connection admitted under an older generation is re-checked on its
//!   next packet, in its original direction; if the new policy denies it,
//!   it is cut: the entry is removed and the packet dropped (invariant 3).
//! - Monitor mode: would-deny flows pass and are reported.
//! - Every drop has a counted cause; denied, would-deny and cut flows
//!   become events on a bounded queue (losses counted, never blocking).
//! - Later IP fragments are dropped (`later_fragment`): they carry no
//!   ports to judge. Tiny and overlapping fragments never get this far.
//! - Only frames that pass are learned by the switch, so a denied host
//!   cannot steer the MAC table. Consecutive frames of a batch between the
//!   same two stations reuse its decision (`switch::SwitchMemo`).
//! - With the XDP fast path on (`with_offload`), forwarded frames of
//!   admitted connections offer their direction to it, and FIN, RST and
//!   cuts revoke it (`offload`).

mod cell;
mod group;
mod offload;
mod policy;
mod stats;

#[cfg(test)]
mod tests;

pub use cell::{PolicyCell, WatchId};
use group::BatchGroups;
pub use offload::{OffloadOffer, OffloadQueue, OffloadRequest};
pub use policy::{Action, Decision, L2Policy, Mode, PolicySnapshot, RuleVerdict, DEFAULT_RULE_ID};
use stats::BatchTally;
pub use stats::{DropCause, PipelineStats, StatsSnapshot};

use std::cell::Cell;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::conntrack::{
    Admission, ConnKey, ConnState, ConntrackTable, Direction, EndReason, Followers, InvalidReason,
    Prepared, TrackOutcome, TrackPacket, BATCH,
};
use crate::packet::{
    parse_frame, parse_quoted, proto, AddrFamily, DropReason, FlowKey, FragmentKind, FrameKind,
    ParsedFrame,
};
use crate::switch::{Forward, MacTable, SwitchKey, SwitchMemo};

/// One received frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub port: u16,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAction {
    /// Transmit: out of one port, or flooded to every other port.
    Forward(Forward),
    Drop(DropCause),
}

/// What every frame of one batch is judged with: one policy generation
/// (DESIGN invariant 2), one `now`, and the batch's switching memo.
struct Batch<'p> {
    policy: &'p PolicySnapshot,
    now: u64,
    memo: SwitchMemo,
}

/// A policy event for the control plane (alerts, flow records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictEvent {
    pub kind: VerdictKind,
    pub flow: FlowKey,
    pub generation: u32,
    pub rule_id: u32,
    pub time: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictKind {
    /// A new flow denied.
    Denied,
    /// A new flow a monitor-mode rule would have denied; it passed.
    WouldDeny,
    /// An established connection the new policy denies; it was cut.
    Cut,
}

/// The pipeline: shared state for all workers.
#[derive(Debug)]
pub struct Pipeline {
    policy: Arc<PolicyCell>,
    conntrack: Arc<ConntrackTable>,
    switch: Arc<MacTable>,
    events: ArrayQueue<VerdictEvent>,
    stats: PipelineStats,
    /// Requests to the XDP fast path, when it is on.
    offload: Option<Arc<OffloadQueue>>,
}

impl Pipeline {
    pub fn new(
        policy: Arc<PolicyCell>,
        conntrack: Arc<ConntrackTable>,
        switch: Arc<MacTable>,
        event_capacity: usize,
    ) -> Self {
        Self {
            policy,
            conntrack,
            switch,
            events: ArrayQueue::new(event_capacity.max(1)),
            stats: PipelineStats::default(),
            offload: None,
        }
    }

    /// Turns the fast path's requests on: they go to `queue`.
    pub fn with_offload(mut self, queue: Arc<OffloadQueue>) -> Self {
        self.offload = Some(queue);
        self
    }

    /// The fast path's request queue, if it is on.
    pub fn offload(&self) -> Option<&Arc<OffloadQueue>> {
        self.offload.as_ref()
    }

    pub fn events(&self) -> &ArrayQueue<VerdictEvent> {
        &self.events
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn conntrack(&self) -> &ConntrackTable {
        &self.conntrack
    }

    /// The MAC table.
    pub fn mac_table(&self) -> &MacTable {
        &self.switch
    }

    /// Decides every frame of a batch; `out[i]` is for `frames[i]` (extra
    /// entries of either are left alone).
    pub fn process(&self, frames: &[Frame<'_>], now: u64, out: &mut [FrameAction]) {
        let policy = self.policy.load();
        for (frames, out) in frames.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            self.process_batch(&policy, frames, now, out);
        }
    }

    /// Parses a batch, groups its packets by connection (`group`) and
    /// prefetches the lookups of each group's first, then judges each frame.
    fn process_batch(
        &self,
        policy: &PolicySnapshot,
        frames: &[Frame<'_>],
        now: u64,
        out: &mut [FrameAction],
    ) {
        let mut parsed = [Err(DropReason::TruncatedEthernet); BATCH];
        let mut prepared: [Option<Prepared>; BATCH] = [None; BATCH];
        let mut groups = BatchGroups::new(policy.generation);
        for (index, frame) in frames.iter().enumerate() {
            // The key is read from the parser's result before it is stored
            // in the batch's array: read back from the array, its fields
            // waited on their own stores (docs/performance-notes.md, "On
            // an Intel machine").
            let result = parse_frame(frame.data, frame.port);
            if let Ok(frame_parsed) = &result {
                if let FrameKind::Ip(key) = &frame_parsed.kind {
                    let zone = frame_parsed.vlan.inner;
                    let follows = is_groupable(frame_parsed, key)
                        && groups.join(index, key, zone, frame_bytes(frame), &parsed);
                    if !follows {
                        let lookup = self.conntrack.prepare(key, zone);
                        self.conntrack.prefetch_home(&lookup);
                        prepared[index] = Some(lookup);
                    }
                }
            }
            parsed[index] = result;
        }
        self.conntrack.prefetch_lookups(prepared.iter().flatten());
        let mut tally = BatchTally::new();
        let batch = Batch {
            policy,
            now,
            memo: SwitchMemo::new(),
        };
        for (index, ((frame, parsed), action)) in
            frames.iter().zip(&parsed).zip(out.iter_mut()).enumerate()
        {
            *action = match parsed {
                Ok(parsed) => {
                    self.process_member(&batch, &mut groups, index, frame, parsed, &prepared)
                }
                Err(reason) => FrameAction::Drop(DropCause::Parse(*reason)),
            };
            tally.count(action);
        }
        self.stats.add(&tally);
    }

    /// Decides packet `index` of a batch: a follower its group's first
    /// counted is switched as a packet of that connection; any other is
    /// judged, counting its followers if it has any.
    fn process_member(
        &self,
        batch: &Batch<'_>,
        groups: &mut BatchGroups,
        index: usize,
        frame: &Frame<'_>,
        parsed: &ParsedFrame,
        prepared: &[Option<Prepared>; BATCH],
    ) -> FrameAction {
        if let (Some(state), FrameKind::Ip(key)) = (groups.counted_for(index), &parsed.kind) {
            return self.forward_tracked(batch, parsed, key, state);
        }
        let followers = groups.followers_of(index);
        let (action, counted) =
            self.process_parsed(batch, frame, parsed, prepared[index].as_ref(), &followers);
        if let Some(state) = counted {
            groups.set_counted(index, state);
        }
        action
    }

    /// Decides one parsed frame, whose lookup `prepared` holds if the batch
    /// prepared it; with the state its connection was found in if its hit
    /// counted its `followers` too.
    fn process_parsed(
        &self,
        batch: &Batch<'_>,
        frame: &Frame<'_>,
        parsed: &ParsedFrame,
        prepared: Option<&Prepared>,
        followers: &Followers,
    ) -> (FrameAction, Option<ConnState>) {
        let l2 = &batch.policy.l2;
        let action = match parsed.kind {
            FrameKind::Arp(_) if l2.switch_arp => self.switch(batch, parsed),
            FrameKind::Arp(_) => FrameAction::Drop(DropCause::ArpBlocked),
            FrameKind::Other if l2.switch_other_ethertypes => self.switch(batch, parsed),
            FrameKind::Other => FrameAction::Drop(DropCause::Ethertype),
            FrameKind::Ip(key) if is_neighbour_discovery(&key) && l2.switch_neighbour_discovery => {
                self.switch(batch, parsed)
            }
            FrameKind::Ip(key) if key.fragment.kind == FragmentKind::Later => {
                FrameAction::Drop(DropCause::LaterFragment)
            }
            FrameKind::Ip(key) => {
                return self.judge(batch, frame, parsed, &key, prepared, followers);
            }
        };
        (action, None)
    }

    /// Switches a frame through the batch's memo (`switch::memo`).
    fn switch(&self, batch: &Batch<'_>, parsed: &ParsedFrame) -> FrameAction {
        let key = SwitchKey {
            ingress: parsed.ingress_port,
            vlan: parsed.vlan.inner,
            src_mac: parsed.src_mac,
            dst_mac: parsed.dst_mac,
        };
        match batch.memo.switch(&self.switch, key, batch.now) {
            Forward::Drop(reason) => FrameAction::Drop(DropCause::Switch(reason)),
            forward => FrameAction::Forward(forward),
        }
    }

    /// Conntrack, policy for new flows, re-check for stale ones.
    /// `prepared`: the frame's conntrack lookup, if the batch prepared it.
    /// With the connection's state if its hit counted `followers` too.
    fn judge(
        &self,
        batch: &Batch<'_>,
        frame: &Frame<'_>,
        parsed: &ParsedFrame,
        key: &FlowKey,
        prepared: Option<&Prepared>,
        followers: &Followers,
    ) -> (FrameAction, Option<ConnState>) {
        let (policy, now) = (batch.policy, batch.now);
        let quoted = match parsed.icmp_error_quote {
            Some(at) => match parse_quoted(frame.data, at, key.family) {
                Some(quoted) => Some(quoted),
                None => {
                    let unrelated = DropCause::Conntrack(InvalidReason::UnrelatedIcmpError);
                    return (FrameAction::Drop(unrelated), None);
                }
            },
            None => None,
        };
        let packet = TrackPacket {
            flow: *key,
            zone: parsed.vlan.inner,
            tcp: parsed.tcp,
            bytes: frame_bytes(frame),
            quoted,
            workload: 0,
        };
        let decided: Cell<Option<Decision>> = Cell::new(None);
        let prepared = match prepared {
            Some(prepared) => *prepared,
            None => self.conntrack.prepare(key, packet.zone),
        };
        let admit = || {
            let decision = policy.decide(key);
            decided.set(Some(decision));
            if decision.pass {
                Admission::Allow {
                    generation: policy.generation,
                    rule_id: decision.rule_id,
                }
            } else {
                Admission::Deny
            }
        };
        let mut outcome = TrackOutcome::Denied;
        let followers_counted = self.conntrack.track_prepared_into(
            &packet,
            &prepared,
            now,
            admit,
            followers,
            &mut outcome,
        );
        if let Some(decision) = decided.get() {
            if decision.would_deny {
                self.emit(
                    VerdictKind::WouldDeny,
                    key,
                    policy.generation,
                    decision.rule_id,
                    now,
                );
            }
        }
        let action = match outcome {
            TrackOutcome::Tracked {
                generation,
                direction,
                state,
                ..
            } if generation != policy.generation => {
                self.recheck(batch, parsed, key, direction, state)
            }
            TrackOutcome::Tracked { state, .. } => {
                let action = self.forward_tracked(batch, parsed, key, state);
                // Counted only on an entry the batch's generation admitted.
                return (action, followers_counted.then_some(state));
            }
            TrackOutcome::Related { .. } => self.switch(batch, parsed),
            TrackOutcome::Denied => {
                let rule_id = decided.get().map_or(DEFAULT_RULE_ID, |d| d.rule_id);
                self.emit(VerdictKind::Denied, key, policy.generation, rule_id, now);
                FrameAction::Drop(DropCause::Policy)
            }
            TrackOutcome::Invalid(reason) => FrameAction::Drop(DropCause::Conntrack(reason)),
            TrackOutcome::Refused(reason) => FrameAction::Drop(DropCause::Refused(reason)),
        };
        (action, None)
    }

    /// Switches a frame of a connection in `state` admitted by the
    /// generation in force, and tells the fast path (when on) whether it
    /// may take the frame's direction or must give the connection back.
    fn forward_tracked(
        &self,
        batch: &Batch<'_>,
        parsed: &ParsedFrame,
        key: &FlowKey,
        state: ConnState,
    ) -> FrameAction {
        let generation = batch.policy.generation;
        let action = self.switch(batch, parsed);
        if let Some(queue) = &self.offload {
            if offload::ends_offload(key) {
                queue.push(OffloadRequest::Revoke { flow: *key });
            } else if let FrameAction::Forward(Forward::Port(egress)) = action {
                if let Some(offer) = offload::offer_for(parsed, key, state, generation, egress) {
                    // From now on its segments may pass in XDP, unseen:
                    // the next one userspace sees (a FIN at the latest)
                    // must not be judged by a window they moved past.
                    if key.proto == proto::TCP {
                        self.conntrack.restart_window(key, parsed.vlan.inner);
                    }
                    queue.push(OffloadRequest::Install(offer));
                }
            }
        }
        action
    }

    /// A connection admitted by an older generation: judge it again, in its
    /// original direction; keep it (with the new admission) or cut it.
    fn recheck(
        &self,
        batch: &Batch<'_>,
        parsed: &ParsedFrame,
        key: &FlowKey,
        direction: Direction,
        state: ConnState,
    ) -> FrameAction {
        let (policy, now) = (batch.policy, batch.now);
        let original = original_direction(key, direction);
        let decision = policy.decide(&original);
        let (conn, _) = ConnKey::from_flow(key, parsed.vlan.inner);
        if decision.pass {
            self.conntrack
                .readmit(&conn, policy.generation, decision.rule_id);
            if decision.would_deny {
                self.emit(
                    VerdictKind::WouldDeny,
                    &original,
                    policy.generation,
                    decision.rule_id,
                    now,
                );
            }
            return self.forward_tracked(batch, parsed, key, state);
        }
        self.conntrack.remove(&conn, EndReason::Removed);
        if let Some(queue) = &self.offload {
            queue.push(OffloadRequest::Revoke { flow: *key });
        }
        self.emit(
            VerdictKind::Cut,
            &original,
            policy.generation,
            decision.rule_id,
            now,
        );
        FrameAction::Drop(DropCause::PolicyCut)
    }

    fn emit(&self, kind: VerdictKind, flow: &FlowKey, generation: u32, rule_id: u32, time: u64) {
        let event = VerdictEvent {
            kind,
            flow: *flow,
            generation,
            rule_id,
            time,
        };
        if self.events.push(event).is_err() {
            self.stats.count_event_dropped();
        }
    }
}

/// Can this IP packet join a group of its batch (`group`): one whose
/// conntrack hit only counts (not TCP), with no ICMP error's quote to judge
/// it by, looked up at all (not a later fragment, not neighbour discovery,
/// whichever way the L2 policy treats that).
fn is_groupable(parsed: &ParsedFrame, key: &FlowKey) -> bool {
    key.proto != proto::TCP
        && parsed.icmp_error_quote.is_none()
        && key.fragment.kind != FragmentKind::Later
        && !is_neighbour_discovery(key)
}

/// A frame's length as conntrack counts it.
fn frame_bytes(frame: &Frame<'_>) -> u32 {
    u32::try_from(frame.data.len()).unwrap_or(u32::MAX)
}

/// IPv6's link-local control: neighbour discovery (ICMPv6 133–137), and
/// multicast listener discovery (130–132, 143) to a multicast group, which
/// every IPv6 host sends when an interface comes up. Neither is traffic
/// between workloads; judging it would only fill the flow records with
/// denials of link-local chatter.
fn is_neighbour_discovery(key: &FlowKey) -> bool {
    const MULTICAST: u128 = 0xff << 120;
    key.family == AddrFamily::V6
        && key.proto == proto::ICMPV6
        && match key.icmp_type() {
            Some(133..=137) => true,
            Some(130..=132 | 143) => key.dst & MULTICAST == MULTICAST,
            _ => false,
        }
}

/// The key of a packet as its connection's opener sent it: a reply's
/// addresses and ports swapped, and for ICMP echo-like replies the request
/// type (the policy speaks of `icmp/8`, not of its replies).
fn original_direction(key: &FlowKey, direction: Direction) -> FlowKey {
    if direction == Direction::Original {
        return *key;
    }
    let mut original = *key;
    std::mem::swap(&mut original.src, &mut original.dst);
    let icmp_request = match (key.family, key.proto, key.icmp_type()) {
        (AddrFamily::V4, proto::ICMP, Some(reply @ (0 | 14 | 16 | 18))) => {
            Some(if reply == 0 { 8 } else { reply - 1 })
        }
        (AddrFamily::V6, proto::ICMPV6, Some(129)) => Some(128),
        _ => None,
    };
    match icmp_request {
        Some(request) => original.dst_port = u16::from(request) << 8,
        None => std::mem::swap(&mut original.src_port, &mut original.dst_port),
    }
    original
}
