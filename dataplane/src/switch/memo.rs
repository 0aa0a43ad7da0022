//! The last switching decision of a batch, reused for the frames right
//! after it that have the same ingress port, VLAN and MAC pair.
//!
//! A batch holds runs of frames between the same two stations (a burst of
//! one connection, or many connections between two hosts), and each frame
//! otherwise costs the MAC table two lookups: its source (learning) and
//! its destination. A repeat within one batch, at one `now`, decides the
//! same: the first frame of the run has learned its source already and
//! nothing this worker did since could change the destination's entry,
//! because any frame with another key in between replaces the memo. Only
//! another worker's or the control plane's change in the same batch could
//! differ, which is a race either way.
//!
//! One memo lives for one `Pipeline` batch on one worker's stack: no
//! sharing, no lock, no clock.

use std::cell::Cell;

use super::{Forward, MacTable};

/// What a switching decision depends on, besides the table and `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchKey {
    pub ingress: u16,
    pub vlan: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// The batch's last decision (see the module header).
#[derive(Debug, Default)]
pub struct SwitchMemo {
    last: Cell<Option<(SwitchKey, Forward)>>,
}

impl SwitchMemo {
    pub fn new() -> Self {
        Self::default()
    }

    /// `table.switch` for a frame of `key`, or the last decision when it
    /// was for the same key. One memo must only ever see one `now` and one
    /// table.
    pub fn switch(&self, table: &MacTable, key: SwitchKey, now: u64) -> Forward {
        if let Some((last, forward)) = self.last.get() {
            if last == key {
                return forward;
            }
        }
        let forward = table.switch(key.ingress, key.vlan, key.src_mac, key.dst_mac, now);
        self.last.set(Some((key, forward)));
        forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{SwitchConfig, SwitchDrop};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const NOW: u64 = 1_000;

    fn table() -> MacTable {
        MacTable::new(SwitchConfig::default())
    }

    fn key(ingress: u16, vlan: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> SwitchKey {
        SwitchKey {
            ingress,
            vlan,
            src_mac,
            dst_mac,
        }
    }

    /// A repeat is answered from the memo: the table sees one learning.
    #[test]
    fn a_repeat_is_not_looked_up_again() {
        let (table, memo) = (table(), SwitchMemo::new());
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Flood);
        table.flush_port(1);
        // Forgotten by the table, still the memo's decision.
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Flood);
        assert!(table.is_empty());
    }

    /// A frame with another key in between replaces the memo, so a
    /// destination learned from it is used by the next frame: the memo
    /// never hides what this worker's own frames taught the table.
    #[test]
    fn a_station_learned_in_between_is_used() {
        let (table, memo) = (table(), SwitchMemo::new());
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Flood);
        assert_eq!(memo.switch(&table, key(2, 0, B, A), NOW), Forward::Port(1));
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Port(2));
    }

    /// A frame differing from the last in any one part of the key is
    /// decided again: each step below differs from the one before in one
    /// part, and its decision from the memo's.
    #[test]
    fn each_part_of_the_key_counts() {
        const MULTICAST: [u8; 6] = [1, 0, 0, 0, 0, 0xc];
        const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
        let (table, memo) = (table(), SwitchMemo::new());
        table.switch(2, 0, B, A, NOW);
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Port(2));
        // Ingress: B is on port 2 itself.
        assert_eq!(
            memo.switch(&table, key(2, 0, A, B), NOW),
            Forward::Drop(SwitchDrop::SamePort)
        );
        // VLAN: B is unknown on VLAN 7.
        assert_eq!(memo.switch(&table, key(2, 7, A, B), NOW), Forward::Flood);
        // Back on VLAN 0, from port 1: to B's port.
        assert_eq!(memo.switch(&table, key(1, 0, A, B), NOW), Forward::Port(2));
        // Destination: C is unknown.
        assert_eq!(memo.switch(&table, key(1, 0, A, C), NOW), Forward::Flood);
        // Source: no station sends from a multicast address.
        assert_eq!(
            memo.switch(&table, key(1, 0, MULTICAST, C), NOW),
            Forward::Drop(SwitchDrop::InvalidSourceMac)
        );
    }
}
