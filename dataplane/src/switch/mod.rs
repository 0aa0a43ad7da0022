//! The L2 learning switch: from which port a frame leaves.
//!
//! Learns (VLAN, source MAC) -> ingress port from every frame, ages entries
//! out, and forwards a frame to the port its destination was learned on;
//! broadcast, multicast and unknown unicast are flooded to every other port
//! of the VLAN. VLAN-aware: the same MAC on two VLANs is two stations.
//!
//! No I/O and no clock (`now` is an argument); shared by all workers
//! through `stations::Stations`, so learning on one core is seen on the
//! others. A frame from a known station on its usual port, to a known
//! destination, takes no lock and writes nothing: the station's time is
//! refreshed under a lock at most every `refresh` (a 64th of the aging
//! time, at most a second). Never panics on input, never allocates per
//! frame.

mod memo;
mod stations;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use memo::{SwitchKey, SwitchMemo};
use stations::{station_key, Stations, Stored};

/// Limits of the MAC table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Most stations learned; past it, new ones are flooded to, not learned.
    pub max_entries: usize,
    /// Idle time after which a station is forgotten (ns); Linux bridges use
    /// 300 s.
    pub aging: u64,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            max_entries: 1 << 16,
            aging: 300 * 1_000_000_000,
        }
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Out of this one port.
    Port(u16),
    /// Out of every port of the VLAN except the ingress port.
    Flood,
    /// Nowhere, for a counted reason.
    Drop(SwitchDrop),
}

/// Why the switch drops a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchDrop {
    /// A multicast or all-zero source MAC: no station sends from one.
    InvalidSourceMac,
    /// The destination was learned on the port the frame came in by.
    SamePort,
}

impl SwitchDrop {
    pub fn name(self) -> &'static str {
        match self {
            SwitchDrop::InvalidSourceMac => "invalid_source_mac",
            SwitchDrop::SamePort => "same_port",
        }
    }
}

/// Counters of the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    pub learned: u64,
    /// A station seen on a different port than before.
    pub moved: u64,
    /// Stations not learned because the table was full.
    pub table_full: u64,
    pub aged_out: u64,
}

/// The MAC table.
#[derive(Debug)]
pub struct MacTable {
    stations: Stations,
    config: SwitchConfig,
    /// A known station's time is rewritten only when older than this.
    refresh: u64,
    entries: AtomicUsize,
    learned: AtomicU64,
    moved: AtomicU64,
    table_full: AtomicU64,
    aged_out: AtomicU64,
}

/// Shards of the MAC table: enough that two workers rarely meet.
const SHARDS: usize = 64;

/// Longest a known station's time may lag behind its latest frame.
const MAX_REFRESH: u64 = 1_000_000_000;

fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

impl MacTable {
    pub fn new(config: SwitchConfig) -> Self {
        Self {
            stations: Stations::new(SHARDS, config.max_entries),
            config,
            refresh: (config.aging / 64).min(MAX_REFRESH),
            entries: AtomicUsize::new(0),
            learned: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            table_full: AtomicU64::new(0),
            aged_out: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> SwitchStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SwitchStats {
            learned: load(&self.learned),
            moved: load(&self.moved),
            table_full: load(&self.table_full),
            aged_out: load(&self.aged_out),
        }
    }

    /// Learns the source of a frame and decides where it goes.
    pub fn switch(
        &self,
        ingress: u16,
        vlan: u16,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        now: u64,
    ) -> Forward {
        if is_multicast(&src_mac) || src_mac == [0; 6] {
            return Forward::Drop(SwitchDrop::InvalidSourceMac);
        }
        self.learn(vlan, src_mac, ingress, now);
        if is_multicast(&dst_mac) {
            return Forward::Flood; // broadcast is multicast too
        }
        match self.lookup(vlan, dst_mac, now) {
            Some(port) if port == ingress => Forward::Drop(SwitchDrop::SamePort),
            Some(port) => Forward::Port(port),
            None => Forward::Flood,
        }
    }

    /// The port `mac` on `vlan` was learned on, unless aged out.
    pub fn lookup(&self, vlan: u16, mac: [u8; 6], now: u64) -> Option<u16> {
        self.stations
            .get(station_key(vlan, mac))
            .filter(|learned| now < learned.last_seen.saturating_add(self.config.aging))
            .map(|learned| learned.port)
    }

    fn learn(&self, vlan: u16, mac: [u8; 6], port: u16, now: u64) {
        let key = station_key(vlan, mac);
        if let Some(learned) = self.stations.get(key) {
            if learned.port == port && now.saturating_sub(learned.last_seen) < self.refresh {
                return;
            }
        }
        let reserve = || {
            self.entries
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < self.config.max_entries).then_some(n + 1)
                })
                .is_ok()
        };
        let counter = match self.stations.store(key, port, now, reserve) {
            Stored::Inserted => &self.learned,
            Stored::Moved => &self.moved,
            Stored::Refreshed => return,
            Stored::ShardFull => &self.table_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets stations idle past the aging time, in `max_shards` shards
    /// from where the last call stopped; returns how many.
    pub fn age(&self, now: u64, cursor: &mut usize, max_shards: usize) -> usize {
        let shards = self.stations.shard_count();
        let mut removed = 0;
        for _ in 0..max_shards.min(shards) {
            let shard = *cursor % shards;
            *cursor = (shard + 1) % shards;
            removed += self.stations.retain(shard, |_, learned| {
                now < learned.last_seen.saturating_add(self.config.aging)
            });
        }
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        self.aged_out.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Forgets every station learned on `port` (the port went down).
    pub fn flush_port(&self, port: u16) -> usize {
        let removed: usize = (0..self.stations.shard_count())
            .map(|shard| {
                self.stations
                    .retain(shard, |_, learned| learned.port != port)
            })
            .sum();
        self.entries.fetch_sub(removed, Ordering::Relaxed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const BROADCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn unknown_destination_floods_then_learned_one_is_switched() {
        let table = MacTable::new(SwitchConfig::default());
        assert_eq!(table.switch(1, 0, A, B, 0), Forward::Flood);
        assert_eq!(table.switch(2, 0, B, A, S), Forward::Port(1));
        assert_eq!(table.switch(1, 0, A, B, 2 * S), Forward::Port(2));
        assert_eq!(table.len(), 2);
        assert_eq!(table.stats().learned, 2);
    }

    #[test]
    fn broadcast_and_multicast_flood() {
        let table = MacTable::new(SwitchConfig::default());
        assert_eq!(table.switch(1, 0, A, BROADCAST, 0), Forward::Flood);
        let ipv6_all_nodes = [0x33, 0x33, 0, 0, 0, 1];
        assert_eq!(table.switch(1, 0, A, ipv6_all_nodes, 0), Forward::Flood);
    }

    #[test]
    fn vlans_are_separate_tables() {
        let table = MacTable::new(SwitchConfig::default());
        table.switch(1, 10, B, A, 0);
        assert_eq!(table.switch(2, 10, A, B, 0), Forward::Port(1));
        assert_eq!(
            table.switch(2, 20, A, B, 0),
            Forward::Flood,
            "B is unknown on VLAN 20"
        );
    }

    #[test]
    fn invalid_sources_and_same_port_are_dropped() {
        let table = MacTable::new(SwitchConfig::default());
        assert_eq!(
            table.switch(1, 0, BROADCAST, A, 0),
            Forward::Drop(SwitchDrop::InvalidSourceMac)
        );
        assert_eq!(
            table.switch(1, 0, [0; 6], A, 0),
            Forward::Drop(SwitchDrop::InvalidSourceMac)
        );
        assert!(table.is_empty(), "nothing learned from invalid sources");
        table.switch(1, 0, B, BROADCAST, 0);
        assert_eq!(
            table.switch(1, 0, A, B, 0),
            Forward::Drop(SwitchDrop::SamePort)
        );
    }

    #[test]
    fn stations_move_and_age_out() {
        let table = MacTable::new(SwitchConfig {
            aging: 10 * S,
            ..SwitchConfig::default()
        });
        table.switch(1, 0, A, BROADCAST, 0);
        table.switch(3, 0, A, BROADCAST, S);
        assert_eq!(table.lookup(0, A, S), Some(3));
        assert_eq!(table.stats().moved, 1);
        // Stale entries are not used even before the aging sweep runs.
        assert_eq!(table.lookup(0, A, 12 * S), None);
        let mut cursor = 0;
        assert_eq!(table.age(12 * S, &mut cursor, usize::MAX), 1);
        assert!(table.is_empty());
        assert_eq!(table.stats().aged_out, 1);
    }

    #[test]
    fn a_full_table_floods_new_stations_instead_of_learning() {
        let table = MacTable::new(SwitchConfig {
            max_entries: 2,
            ..SwitchConfig::default()
        });
        table.switch(1, 0, A, BROADCAST, 0);
        table.switch(2, 0, B, BROADCAST, 0);
        let c = [0x02, 0, 0, 0, 0, 0x0c];
        table.switch(3, 0, c, BROADCAST, 0);
        assert_eq!(table.len(), 2);
        assert_eq!(table.stats().table_full, 1);
        assert_eq!(table.switch(1, 0, A, c, 0), Forward::Flood);
    }

    #[test]
    fn flushing_a_port_forgets_its_stations() {
        let table = MacTable::new(SwitchConfig::default());
        table.switch(1, 0, A, BROADCAST, 0);
        table.switch(2, 0, B, BROADCAST, 0);
        assert_eq!(table.flush_port(1), 1);
        assert_eq!(table.lookup(0, A, 0), None);
        assert_eq!(table.lookup(0, B, 0), Some(2));
    }
}
