//! The offloader against fake maps: what it installs, counts back into
//! conntrack and removes, through a real pipeline.

use std::sync::Mutex;

use super::*;
use crate::classifier::{IpPrefix, PortRange, Rule};
use crate::conntrack::{ConntrackConfig, ConntrackTable};
use crate::frames::{ethernet, ipv4, udp, with_macs};
use crate::packet::{proto, AddrFamily};
use crate::pipeline::{
    Action, Frame, FrameAction, L2Policy, Mode, PolicyCell, PolicySnapshot, RuleVerdict,
};
use crate::switch::{MacTable, SwitchConfig};

const S: u64 = 1_000_000_000;
/// The program's clock at the workers' time zero.
const OFFSET: u64 = 1_000 * S;
const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// A port's `fast` map, as a hash map the test can count into.
#[derive(Debug, Default, Clone)]
struct FakeMaps {
    flows: Arc<Mutex<HashMap<FastKey, (FastRoute, FastCounters)>>>,
    refuse_installs: Arc<AtomicBool>,
    /// A flow that finds no room: a batch holding it fails after the
    /// flows before it went in.
    no_room_for: Arc<Mutex<Option<FastKey>>>,
}

impl FakeMaps {
    fn flows(&self) -> std::sync::MutexGuard<'_, HashMap<FastKey, (FastRoute, FastCounters)>> {
        self.flows.lock().expect("not poisoned")
    }

    /// The program forwarding `packets` frames of `bytes` each, the last
    /// at `at` (workers' time).
    fn forward(&self, flow: &FlowKey, packets: u64, bytes: u64, at: u64) {
        let mut flows = self.flows();
        let (_, counters) = flows.get_mut(&FastKey::of(flow)).expect("installed");
        counters.packets += packets;
        counters.bytes += packets * bytes;
        counters.last_seen = OFFSET + at;
    }
}

impl FastMaps for FakeMaps {
    fn install(&self, flows: &[(FastKey, FastRoute)]) -> Result<(), BpfError> {
        if self.refuse_installs.load(Ordering::Relaxed) {
            // Partly done, as a batch update or the IPv4 table can leave
            // it: the first flow in, then the error.
            if let Some((key, route)) = flows.first() {
                self.flows().insert(*key, (*route, FastCounters::default()));
            }
            return Err(BpfError::FastPath(libbpf_rs::Error::from(
                std::io::Error::from_raw_os_error(7),
            )));
        }
        let no_room_for = *self.no_room_for.lock().expect("not poisoned");
        let mut map = self.flows();
        for (key, route) in flows {
            if Some(*key) == no_room_for {
                return Err(BpfError::FastPath(libbpf_rs::Error::from(
                    std::io::Error::from_raw_os_error(7),
                )));
            }
            map.insert(*key, (*route, FastCounters::default()));
        }
        Ok(())
    }

    fn remove(&self, key: &FastKey) -> Result<(), BpfError> {
        self.flows().remove(key);
        Ok(())
    }

    fn read(&self, key: &FastKey) -> Result<Option<FastCounters>, BpfError> {
        Ok(self.flows().get(key).map(|(_, counters)| *counters))
    }

    fn read_all(&self, out: &mut Vec<(FastKey, FastCounters)>) -> Result<(), BpfError> {
        out.clear();
        out.extend(
            self.flows()
                .iter()
                .map(|(key, (_, counters))| (*key, *counters)),
        );
        Ok(())
    }
}

struct Bed {
    policy: Arc<PolicyCell>,
    pipeline: Arc<Pipeline>,
    ports: Vec<FakeMaps>,
    offloader: Offloader<FakeMaps>,
}

fn allow_dns(generation: u32) -> Arc<PolicySnapshot> {
    let rule = Rule {
        id: 5,
        src: IpPrefix::any(AddrFamily::V4),
        dst: IpPrefix::any(AddrFamily::V4),
        src_ports: PortRange::ANY,
        dst_ports: PortRange::single(53),
        proto: Some(proto::UDP),
        action: RuleVerdict {
            action: Action::Allow,
            mode: Mode::Enforce,
            rule_id: 5,
        },
    };
    Arc::new(
        PolicySnapshot::build(generation, vec![rule], Action::Deny, L2Policy::default())
            .expect("policy builds"),
    )
}

/// A's DNS query from `client_port`, and B's answer to it.
fn query_from(client_port: u16) -> Vec<u8> {
    with_macs(
        ethernet(
            &[],
            0x0800,
            &ipv4(A, B, proto::UDP, &udp(client_port, 53, 20)),
        ),
        MAC_A,
        MAC_B,
    )
}

fn answer_to(client_port: u16) -> Vec<u8> {
    with_macs(
        ethernet(
            &[],
            0x0800,
            &ipv4(B, A, proto::UDP, &udp(53, client_port, 20)),
        ),
        MAC_B,
        MAC_A,
    )
}

fn query() -> Vec<u8> {
    query_from(5000)
}

fn answer() -> Vec<u8> {
    answer_to(5000)
}

fn query_flow_from(client_port: u16) -> FlowKey {
    crate::frames::flow_v4(A, B, proto::UDP, client_port, 53)
}

fn query_flow() -> FlowKey {
    query_flow_from(5000)
}

fn answer_flow() -> FlowKey {
    FlowKey {
        src: query_flow().dst,
        dst: query_flow().src,
        src_port: 53,
        dst_port: 5000,
        ..query_flow()
    }
}

impl Bed {
    fn new() -> Self {
        let policy = Arc::new(PolicyCell::new(allow_dns(1)));
        let queue = Arc::new(OffloadQueue::new(1024));
        let pipeline = Arc::new(
            Pipeline::new(
                Arc::clone(&policy),
                Arc::new(ConntrackTable::new(ConntrackConfig::default())),
                Arc::new(MacTable::new(SwitchConfig::default())),
                16,
            )
            .with_offload(Arc::clone(&queue)),
        );
        let ports = vec![FakeMaps::default(), FakeMaps::default()];
        let offloader = Offloader::new(ports.clone(), Arc::clone(&pipeline), queue, OFFSET);
        Self {
            policy,
            pipeline,
            ports,
            offloader,
        }
    }

    fn send(&self, port: u16, frame: &[u8], now: u64) -> FrameAction {
        let mut out = [FrameAction::Drop(crate::pipeline::DropCause::Policy)];
        self.pipeline
            .process(&[Frame { data: frame, port }], now, &mut out);
        out[0]
    }

    /// Query (flooded), answer, query: both directions offered, then
    /// installed by one step.
    fn offload_both_ways(&mut self) {
        self.send(0, &query(), S);
        self.send(1, &answer(), S);
        self.send(0, &query(), S);
        self.offloader.step();
    }

    fn entry(&self) -> crate::conntrack::ConnEntry {
        let (key, _) = ConnKey::from_flow(&query_flow(), 0);
        self.pipeline.conntrack().get(&key).expect("tracked")
    }
}

#[test]
fn offered_directions_are_installed_once_on_their_ingress_port() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    let on_a = bed.ports[0].flows();
    let (route, _) = on_a
        .get(&FastKey::of(&query_flow()))
        .expect("A's direction");
    assert_eq!(
        *route,
        FastRoute {
            egress: 1,
            generation: 1,
            src_mac: MAC_A,
            dst_mac: MAC_B
        }
    );
    assert!(bed.ports[1]
        .flows()
        .contains_key(&FastKey::of(&answer_flow())));
    assert_eq!(on_a.len(), 1);
    drop(on_a);
    // The same offer again installs nothing.
    bed.send(0, &query(), S);
    bed.offloader.step();
    let stats = bed.offloader.stats().snapshot();
    assert_eq!((stats.installs, stats.installed), (2, 2));
}

#[test]
fn a_sync_counts_the_programs_frames_into_conntrack() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    let before = bed.entry();
    bed.ports[0].forward(&query_flow(), 10, 62, 50 * S);
    bed.ports[1].forward(&answer_flow(), 3, 62, 40 * S);
    bed.offloader.sync();
    let after = bed.entry();
    let (_, sender) = ConnKey::from_flow(&query_flow(), 0);
    let (client, server) = (usize::from(sender), usize::from(1 - sender));
    assert_eq!(after.packets[client], before.packets[client] + 10);
    assert_eq!(after.packets[server], before.packets[server] + 3);
    assert_eq!(after.bytes[client], before.bytes[client] + 620);
    assert_eq!(after.last_seen, 50 * S);
    // Counted once: a second sync with nothing new adds nothing, and the
    // live connection keeps its fast path.
    bed.offloader.sync();
    assert_eq!(bed.entry().packets, after.packets);
    assert_eq!(bed.offloader.len(), 2);
    assert_eq!(bed.offloader.stats().snapshot().synced_packets, 13);
}

#[test]
fn a_connection_that_ended_loses_its_fast_path() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    bed.offloader.sync();
    // Expired (UDP: 120 s replied) and swept.
    bed.pipeline
        .conntrack()
        .sweep(200 * S, crate::conntrack::ALL_SHARDS);
    // A direction that still forwards goes at the next sync...
    bed.ports[0].forward(&query_flow(), 1, 62, 201 * S);
    bed.offloader.sync();
    assert!(bed.ports[0].flows().is_empty());
    assert_eq!(bed.offloader.len(), 1);
    // ...an idle one within IDLE_CHECK_EVERY syncs.
    for _ in 0..IDLE_CHECK_EVERY {
        bed.offloader.sync();
    }
    assert!(bed.ports[1].flows().is_empty());
    assert!(bed.offloader.is_empty());
    assert_eq!(bed.offloader.stats().snapshot().removals, 2);
}

#[test]
fn syncs_come_less_often_with_many_flows_but_within_the_cap() {
    let bed = Bed::new();
    assert_eq!(bed.offloader.sync_period(), SYNC_EVERY);
    let mut offloader = bed.offloader.with_max_sync_period(Duration::from_secs(10));
    let flow = query_flow();
    for n in 0..1_000_000u32 {
        let mut flow = flow;
        flow.src_port = n as u16;
        flow.src = u128::from(n >> 16);
        offloader.installed.insert(
            (0, FastKey::of(&flow)),
            Installed {
                flow,
                ingress: 0,
                route: FastRoute {
                    egress: 1,
                    generation: 1,
                    src_mac: MAC_A,
                    dst_mac: MAC_B,
                },
                counted: FastCounters::default(),
            },
        );
    }
    assert_eq!(offloader.sync_period(), Duration::from_secs(4));
    let capped = offloader.with_max_sync_period(Duration::from_secs(2));
    assert_eq!(capped.sync_period(), Duration::from_secs(2));
}

#[test]
fn frames_forwarded_in_xdp_keep_their_connection_from_expiring() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    bed.ports[0].forward(&query_flow(), 1, 62, 100 * S);
    bed.offloader.sync();
    // 120 s after the last frame userspace saw, 20 after the last one the
    // program forwarded: alive.
    bed.pipeline
        .conntrack()
        .sweep(121 * S, crate::conntrack::ALL_SHARDS);
    bed.offloader.sync();
    assert_eq!(bed.offloader.len(), 2);
    assert_eq!(bed.entry().last_seen, 100 * S);
}

#[test]
fn a_revoked_connection_goes_back_to_userspace_with_its_last_counts() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    bed.ports[0].forward(&query_flow(), 4, 62, 2 * S);
    let before = bed.entry();
    bed.pipeline
        .offload()
        .expect("on")
        .push(OffloadRequest::Revoke {
            flow: answer_flow(),
        });
    bed.offloader.step();
    assert!(bed.ports.iter().all(|port| port.flows().is_empty()));
    assert_eq!(
        bed.entry().packets.iter().sum::<u32>(),
        before.packets.iter().sum::<u32>() + 4
    );
}

#[test]
fn a_destination_that_moved_port_loses_its_fast_path() {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    bed.ports[0].forward(&query_flow(), 1, 62, 2 * S);
    // B now sends from port 0: the MAC table moves it.
    bed.pipeline.mac_table().switch(0, 0, MAC_B, MAC_A, 3 * S);
    bed.offloader.sync();
    assert!(!bed.ports[0]
        .flows()
        .contains_key(&FastKey::of(&query_flow())));
}

/// Seven frames forwarded in XDP, then the query offered again under each
/// of `generations` in turn, all before one step of the offloader: the
/// route and counters installed, and the client's packets added to its
/// connection since the frames.
fn offered_again_under(generations: &[u32]) -> (FastRoute, FastCounters, u32) {
    let mut bed = Bed::new();
    bed.offload_both_ways();
    bed.ports[0].forward(&query_flow(), 7, 62, 2 * S);
    let before = bed.entry();
    for (at, &generation) in (3..).zip(generations) {
        bed.policy.store(allow_dns(generation));
        bed.send(0, &query(), at * S);
    }
    bed.offloader.step();
    let (route, counters) = bed.ports[0].flows()[&FastKey::of(&query_flow())];
    let client = usize::from(ConnKey::from_flow(&query_flow(), 0).1);
    let added = bed.entry().packets[client] - before.packets[client];
    (route, counters, added)
}

#[test]
fn a_new_generation_reinstalls_after_counting_the_old_entry() {
    // Re-checked and kept: installed with generation 2, from zero; the 7
    // forwarded in XDP counted, then the re-checked query itself.
    let (route, counters, added) = offered_again_under(&[2]);
    assert_eq!((route.generation, counters.packets, added), (2, 0, 7 + 1));
}

#[test]
fn a_refused_install_is_counted_and_retried_with_the_next_offer() {
    let mut bed = Bed::new();
    bed.ports[0].refuse_installs.store(true, Ordering::Relaxed);
    bed.offload_both_ways();
    assert!(
        bed.ports[0].flows().is_empty(),
        "what a failed install left is taken out again"
    );
    // The batch, then its one flow tried alone.
    assert_eq!(bed.offloader.stats().snapshot().errors, 2);
    bed.ports[0].refuse_installs.store(false, Ordering::Relaxed);
    bed.send(0, &query(), S);
    bed.offloader.step();
    assert_eq!(bed.ports[0].flows().len(), 1);
}

#[test]
fn a_flow_with_no_room_does_not_keep_its_batch_out() {
    let mut bed = Bed::new();
    *bed.ports[0].no_room_for.lock().expect("not poisoned") =
        Some(FastKey::of(&query_flow_from(5000)));
    // Two connections from A, offered on port 0 in one step: the first
    // finds no room, which fails the batch.
    for client_port in [5000, 5001] {
        bed.send(0, &query_from(client_port), S);
        bed.send(1, &answer_to(client_port), S);
        bed.send(0, &query_from(client_port), S);
    }
    bed.offloader.step();
    let on_a = bed.ports[0].flows();
    assert!(on_a.contains_key(&FastKey::of(&query_flow_from(5001))));
    assert!(!on_a.contains_key(&FastKey::of(&query_flow_from(5000))));
    drop(on_a);
    let stats = bed.offloader.stats().snapshot();
    // Port 1's batch, then port 0's second flow alone.
    assert_eq!(stats.installs, 3);
    assert_eq!(stats.installed, 3, "the refused flow is forgotten");
}

#[test]
fn a_revocation_after_an_offer_in_the_same_step_leaves_nothing_in_xdp() {
    let mut bed = Bed::new();
    // Offered, then revoked (a RST, say) before the offloader's step.
    bed.send(0, &query(), S);
    bed.send(1, &answer(), S);
    bed.send(0, &query(), S);
    bed.pipeline
        .offload()
        .expect("on")
        .push(OffloadRequest::Revoke { flow: query_flow() });
    bed.offloader.step();
    assert!(bed.ports.iter().all(|port| port.flows().is_empty()));
    assert!(bed.offloader.is_empty());
}

#[test]
fn two_new_generations_in_one_step_count_the_old_entry_once() {
    // The second replacement finds the first staged, not installed: the 7
    // are counted once, with the two re-checked queries.
    let (route, _, added) = offered_again_under(&[2, 3]);
    assert_eq!((route.generation, added), (3, 7 + 2));
}
