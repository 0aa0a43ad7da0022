//! The connection key: a packet's 5-tuple plus zone, normalized so that
//! both directions of a connection find the same entry.

use crate::packet::{proto, AddrFamily, FlowKey};

/// Direction-normalized connection identity. `addrs[0], ports[0]` is the
/// endpoint that sorts first; which endpoint opened the connection is
/// recorded in the entry, not the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnKey {
    /// Isolation domain (VLAN or port group): equal 5-tuples in different
    /// zones are different connections.
    pub zone: u16,
    pub family: AddrFamily,
    pub proto: u8,
    /// Ports; for ICMP echo-like messages both are the identifier, so that
    /// request and reply normalize alike.
    pub ports: [u16; 2],
    /// The endpoints' addresses as (high, low) 64-bit halves: `u128` would
    /// force 16-byte alignment and pad every entry by 16 bytes.
    addrs: [[u64; 2]; 2],
}

/// Hashed as its five stored words instead of the derived field-by-field
/// hash (which also hashes array lengths), for maps keyed by connection
/// (the offloader's). The table itself hashes the words with its own
/// `KeyHasher`.
impl std::hash::Hash for ConnKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for word in self.encode() {
            state.write_u64(word);
        }
    }
}

/// Words a key takes in the table's slots.
pub(crate) const KEY_WORDS: usize = 5;

fn split(addr: u128) -> [u64; 2] {
    [(addr >> 64) as u64, addr as u64]
}

/// Which endpoint of a `ConnKey` sent a packet (0 or 1).
pub type Endpoint = u8;

impl ConnKey {
    /// The key of `flow` in `zone`, and which endpoint sent it.
    pub fn from_flow(flow: &FlowKey, zone: u16) -> (Self, Endpoint) {
        let (src_port, dst_port) = conn_ports(flow);
        let a = (flow.src, src_port);
        let b = (flow.dst, dst_port);
        let (first, second, sender) = if a <= b { (a, b, 0) } else { (b, a, 1) };
        let key = ConnKey {
            zone,
            family: flow.family,
            proto: flow.proto,
            addrs: [split(first.0), split(second.0)],
            ports: [first.1, second.1],
        };
        (key, sender)
    }

    /// The key as the table stores it: zone, family, protocol and ports in
    /// one word, then the addresses.
    #[inline]
    pub(crate) fn encode(&self) -> [u64; KEY_WORDS] {
        let [[a0, a1], [b0, b1]] = self.addrs;
        [
            u64::from(self.zone)
                | u64::from(self.family as u8) << 16
                | u64::from(self.proto) << 24
                | u64::from(self.ports[0]) << 32
                | u64::from(self.ports[1]) << 48,
            a0,
            a1,
            b0,
            b1,
        ]
    }

    /// The protocol of a key `encode` stored, without decoding the rest.
    #[inline]
    pub(crate) fn proto_of(words: &[u64; KEY_WORDS]) -> u8 {
        Self::proto_of_head(words[0])
    }

    /// The protocol, from the first word `encode` stored.
    #[inline]
    pub(crate) fn proto_of_head(head: u64) -> u8 {
        (head >> 24) as u8
    }

    /// The address family, from the first word `encode` stored.
    #[inline]
    pub(crate) fn family_of_head(head: u64) -> AddrFamily {
        if (head >> 16) as u8 == AddrFamily::V6 as u8 {
            AddrFamily::V6
        } else {
            AddrFamily::V4
        }
    }

    /// The key `encode` stored.
    #[inline]
    pub(crate) fn decode(words: &[u64; KEY_WORDS]) -> Self {
        let meta = words[0];
        ConnKey {
            zone: meta as u16,
            family: Self::family_of_head(meta),
            proto: Self::proto_of(words),
            ports: [(meta >> 32) as u16, (meta >> 48) as u16],
            addrs: [[words[1], words[2]], [words[3], words[4]]],
        }
    }

    /// The address of endpoint `which`.
    pub fn addr(&self, which: Endpoint) -> u128 {
        let [high, low] = self.addrs[usize::from(which & 1)];
        (u128::from(high) << 64) | u128::from(low)
    }
}

/// Ports as conntrack sees them: ICMP echo-like messages use the identifier
/// on both sides; other ICMP (informational, not errors) have none.
fn conn_ports(flow: &FlowKey) -> (u16, u16) {
    match (flow.family, flow.proto) {
        (AddrFamily::V4, proto::ICMP) | (AddrFamily::V6, proto::ICMPV6) => {
            (flow.src_port, flow.src_port)
        }
        _ => (flow.src_port, flow.dst_port),
    }
}
