//! Synthetic frame builders for tests, benchmarks and fuzz seed corpora.
//!
//! They allocate freely and are never used on the packet path. Headers come
//! from etherparse's builders; the few things etherparse will not build
//! (IPv6 extension header chains with illegal orders, lying length fields) are
//! written byte by byte so tests can produce every malformed case.

use etherparse::{IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, TcpHeader};

use crate::packet::{AddrFamily, FlowKey};

/// Source MAC used by default in built frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC used by default in built frames.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The parsed key of an IPv4 frame from `src:src_port` to `dst:dst_port`
/// (no TCP flags, not fragmented): what the parser makes of the frames
/// built here, for tests that check keys.
pub fn flow_v4(src: [u8; 4], dst: [u8; 4], proto: u8, src_port: u16, dst_port: u16) -> FlowKey {
    FlowKey {
        family: AddrFamily::V4,
        src: u128::from(u32::from_be_bytes(src)),
        dst: u128::from(u32::from_be_bytes(dst)),
        proto,
        src_port,
        dst_port,
        ..FlowKey::default()
    }
}

/// An Ethernet frame around `l3`, with VLAN tags outermost first (the outer
/// of two uses the 802.1ad TPID, every other tag 802.1Q).
pub fn ethernet(vlans: &[u16], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 4 * vlans.len() + l3.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if vlans.len() > 1 && i == 0 {
            0x88a8
        } else {
            0x8100
        };
        frame.extend_from_slice(&tpid.to_be_bytes());
        // TCI: priority 0, DEI 0, the VID.
        frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(l3);
    frame
}

/// An IPv4 packet (no options, not fragmented) carrying `l4` as `proto`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_fragment(src, dst, proto, 0x1234, 0, false, l4)
}

/// An IPv4 fragment: `offset_units` in 8-byte units, `more` the MF flag.
pub fn ipv4_fragment(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    offset_units: u16,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut header = Ipv4Header::new(0, 64, IpNumber(proto), src, dst).expect("static header");
    header.total_len = u16::try_from(20 + data.len()).expect("test packet under 64 KiB");
    header.identification = id;
    header.more_fragments = more;
    header.fragment_offset = IpFragOffset::try_new(offset_units).expect("offset fits 13 bits");
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(data);
    packet
}

/// An IPv4 header with options (`options` length a multiple of 4).
pub fn ipv4_with_options(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    l4: &[u8],
) -> Vec<u8> {
    let mut header = Ipv4Header::new(0, 64, IpNumber(proto), src, dst).expect("static header");
    header.options = options.try_into().expect("options of a valid length");
    header.total_len = u16::try_from(header.header_len() + l4.len()).expect("under 64 KiB");
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(l4);
    packet
}

/// One IPv6 extension header for [`ipv6`].
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOptions,
    Fragment {
        offset_units: u16,
        more: bool,
        id: u32,
    },
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::DestOptions => 60,
            Ext::Fragment { .. } => 44,
        }
    }

    fn bytes(self, next: u8) -> [u8; 8] {
        match self {
            Ext::Fragment {
                offset_units,
                more,
                id,
            } => Ipv6FragmentHeader::new(
                IpNumber(next),
                IpFragOffset::try_new(offset_units).expect("offset fits 13 bits"),
                more,
                id,
            )
            .to_bytes(),
            // Length 0 (8 bytes); options are PadN filling the rest. A
            // routing header of type 0 with segments left 0 is ignored by
            // receivers.
            Ext::HopByHop | Ext::DestOptions => [next, 0, 1, 4, 0, 0, 0, 0],
            Ext::Routing => [next, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

/// An IPv6 packet: the extension chain in order, then `l4` as `proto`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], chain: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, ext) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(proto, |e| e.number());
        body.extend_from_slice(&ext.bytes(next));
    }
    body.extend_from_slice(l4);
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(body.len()).expect("under 64 KiB"),
        next_header: IpNumber(chain.first().map_or(proto, |e| e.number())),
        hop_limit: 64,
        source: src,
        destination: dst,
    };
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A 20-byte TCP header with the given flags byte and `payload` bytes of
/// zeros after it.
pub fn tcp(src_port: u16, dst_port: u16, flags: u8, payload: usize) -> Vec<u8> {
    let header = TcpHeader::new(src_port, dst_port, 1000, 64240);
    let mut bytes = header.to_bytes().to_vec();
    bytes[13] = flags;
    bytes.resize(bytes.len() + payload, 0);
    bytes
}

/// A UDP header with a correct length field and `payload` zero bytes.
pub fn udp(src_port: u16, dst_port: u16, payload: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload).expect("under 64 KiB");
    let mut bytes = Vec::with_capacity(usize::from(len));
    for field in [src_port, dst_port, len, 0] {
        bytes.extend_from_slice(&field.to_be_bytes());
    }
    bytes.resize(usize::from(len), 0);
    bytes
}

/// An ICMP or ICMPv6 header: type, code, and the 4 "rest of header" bytes
/// (identifier and sequence for echo), then `payload`.
pub fn icmp(icmp_type: u8, code: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![icmp_type, code, 0, 0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// An Ethernet/IPv4 ARP packet (operation 1 request, 2 reply).
pub fn arp(operation: u16, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut bytes = vec![0, 1, 0x08, 0x00, 6, 4];
    bytes.extend_from_slice(&operation.to_be_bytes());
    bytes.extend_from_slice(&SRC_MAC);
    bytes.extend_from_slice(&sender_ip);
    bytes.extend_from_slice(&[0; 6]);
    bytes.extend_from_slice(&target_ip);
    bytes
}

/// A whole Ethernet/IPv4/TCP frame, untagged.
pub fn tcp_v4(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    ethernet(
        &[],
        0x0800,
        &ipv4(src, dst, 6, &tcp(src_port, dst_port, flags, 0)),
    )
}

/// A TCP SYN (sequence 1000, window 64240) between two IPv4 hosts, each
/// with its own MAC, 02:00:00:00:00:NN where NN is its address's last
/// octet: what a switch sees from distinct hosts.
pub fn tcp_syn_between(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> Vec<u8> {
    let builder =
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, src[3]], [2, 0, 0, 0, 0, dst[3]])
            .ipv4(src, dst, 64)
            .tcp(src_port, dst_port, 1000, 64240)
            .syn();
    let mut frame = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut frame, &[])
        .expect("writing to a Vec cannot fail");
    frame
}

/// A whole Ethernet/IPv4/UDP frame, untagged.
pub fn udp_v4(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16, payload: usize) -> Vec<u8> {
    ethernet(
        &[],
        0x0800,
        &ipv4(src, dst, 17, &udp(src_port, dst_port, payload)),
    )
}

/// A whole Ethernet/IPv6/TCP frame, untagged, no extension headers.
pub fn tcp_v6(src: [u8; 16], dst: [u8; 16], src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    ethernet(
        &[],
        0x86dd,
        &ipv6(src, dst, &[], 6, &tcp(src_port, dst_port, flags, 0)),
    )
}

/// A whole Ethernet/IPv6/UDP frame, untagged, no extension headers.
pub fn udp_v6(
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    payload: usize,
) -> Vec<u8> {
    ethernet(
        &[],
        0x86dd,
        &ipv6(src, dst, &[], 17, &udp(src_port, dst_port, payload)),
    )
}

/// A realistic mix of frames for the parser benchmark and fuzz seeds: mostly
/// TCP and UDP over IPv4 and IPv6, some VLAN-tagged, ICMP, ARP, a fragment.
pub fn realistic_mix() -> Vec<Vec<u8>> {
    let a4 = [10, 0, 0, 1];
    let b4 = [10, 0, 0, 2];
    let a6 = [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    vec![
        tcp_v4(a4, b4, 40000, 443, 0x10),
        tcp_v4(a4, b4, 40001, 8080, 0x18),
        tcp_v4(b4, a4, 443, 40000, 0x10),
        tcp_v4(a4, b4, 40002, 22, 0x02),
        udp_v4(a4, b4, 5353, 53, 40),
        udp_v4(a4, b4, 40003, 4789, 1200),
        tcp_v6(a6, b6, 40000, 443, 0x10),
        tcp_v6(b6, a6, 443, 40000, 0x18),
        udp_v6(a6, b6, 40004, 53, 40),
        ethernet(&[100], 0x0800, &ipv4(a4, b4, 6, &tcp(40005, 80, 0x10, 64))),
        ethernet(&[10, 200], 0x86dd, &ipv6(a6, b6, &[], 17, &udp(1, 2, 16))),
        ethernet(&[], 0x0800, &ipv4(a4, b4, 1, &icmp(8, 0, 7, 1, &[0; 56]))),
        ethernet(
            &[],
            0x86dd,
            &ipv6(a6, b6, &[], 58, &icmp(128, 0, 7, 1, &[0; 56])),
        ),
        ethernet(&[], 0x0806, &arp(1, a4, b4)),
        ethernet(
            &[],
            0x86dd,
            &ipv6(
                a6,
                b6,
                &[Ext::HopByHop, Ext::DestOptions],
                6,
                &tcp(1, 2, 0x10, 0),
            ),
        ),
        ethernet(
            &[],
            0x0800,
            &ipv4_fragment(a4, b4, 17, 9, 0, true, &udp(1, 2, 64)),
        ),
    ]
}

/// `frame` with its Ethernet source and destination MACs replaced.
pub fn with_macs(mut frame: Vec<u8>, src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    if frame.len() >= 12 {
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&src);
    }
    frame
}
