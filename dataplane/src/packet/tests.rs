//! Parser tests: every protocol, every malformed case, and no panics on
//! arbitrary bytes. Frames come from `crate::frames` (etherparse builders).

use super::*;
use crate::frames::{self, ethernet, icmp, ipv4, ipv4_fragment, ipv6, tcp, udp, Ext};
use proptest::prelude::*;
use std::net::IpAddr;

const A4: [u8; 4] = [10, 1, 0, 1];
const B4: [u8; 4] = [10, 1, 0, 2];
const A6: [u8; 16] = [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
const B6: [u8; 16] = [0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b];
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

fn key_of(frame: &[u8]) -> FlowKey {
    let parsed = parse_frame(frame, 3).expect("frame parses");
    *parsed.flow_key().expect("an IP frame")
}

fn drop_of(frame: &[u8]) -> DropReason {
    parse_frame(frame, 3).expect_err("frame must be dropped")
}

// ---- well-formed frames -------------------------------------------------

#[test]
fn tcp_over_ipv4_fills_the_whole_key() {
    let frame = frames::tcp_v4(A4, B4, 40000, 443, tcp_flags::SYN | tcp_flags::ACK);
    let parsed = parse_frame(&frame, 7).expect("parses");
    let key = parsed.flow_key().expect("ip");
    assert_eq!(key.ingress_port, 7);
    assert_eq!(key.family, AddrFamily::V4);
    assert_eq!(key.src_ip(), IpAddr::from(A4));
    assert_eq!(key.dst_ip(), IpAddr::from(B4));
    assert_eq!(
        (key.proto, key.src_port, key.dst_port),
        (proto::TCP, 40000, 443)
    );
    assert_eq!(key.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(key.fragment.kind, FragmentKind::Whole);
    assert_eq!(key.vlan, VlanTags::default());
    assert_eq!(parsed.src_mac, frames::SRC_MAC);
    assert_eq!(parsed.dst_mac, frames::DST_MAC);
    assert_eq!(parsed.ethertype, ETH_IPV4);
    assert_eq!((parsed.l3_offset, parsed.l4_offset), (14, Some(34)));
    assert_eq!(usize::from(parsed.l3_end), frame.len());
}

#[test]
fn udp_over_ipv4_and_ipv6() {
    let v4 = key_of(&frames::udp_v4(A4, B4, 5353, 53, 10));
    assert_eq!((v4.proto, v4.src_port, v4.dst_port), (proto::UDP, 5353, 53));
    let v6 = key_of(&frames::udp_v6(A6, B6, 5353, 53, 10));
    assert_eq!(v6.family, AddrFamily::V6);
    assert_eq!(v6.src_ip(), IpAddr::from(A6));
    assert_eq!(v6.dst_ip(), IpAddr::from(B6));
    assert_eq!((v6.proto, v6.src_port, v6.dst_port), (proto::UDP, 5353, 53));
}

#[test]
fn tcp_over_ipv6_has_offsets_after_the_fixed_header() {
    let frame = frames::tcp_v6(A6, B6, 1, 22, tcp_flags::SYN);
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(parsed.l4_offset, Some(54));
    let key = parsed.flow_key().expect("ip");
    assert_eq!(
        (key.proto, key.dst_port, key.tcp_flags),
        (proto::TCP, 22, tcp_flags::SYN)
    );
}

#[test]
fn icmp_echo_carries_id_and_type_code() {
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::ICMP, &icmp(8, 0, 0x4242, 1, &[0; 8])),
    );
    let key = key_of(&frame);
    assert_eq!(key.src_port, 0x4242);
    assert_eq!(key.dst_port, 8 << 8);
    assert_eq!((key.icmp_type(), key.icmp_code()), (Some(8), Some(0)));
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(parsed.icmp_error_quote, None);
}

#[test]
fn icmpv6_echo_carries_id_and_type_code() {
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::ICMPV6, &icmp(129, 0, 9, 1, &[])),
    );
    let key = key_of(&frame);
    assert_eq!((key.src_port, key.dst_port), (9, 129 << 8));
    assert_eq!(key.icmp_type(), Some(129));
}

#[test]
fn icmp_errors_point_at_the_quoted_packet() {
    let quoted = ipv4(B4, A4, proto::UDP, &udp(53, 5353, 0));
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::ICMP, &icmp(3, 3, 0, 0, &quoted)),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    let key = parsed.flow_key().expect("ip");
    assert_eq!(
        (key.icmp_type(), key.icmp_code(), key.src_port),
        (Some(3), Some(3), 0)
    );
    let at = usize::from(parsed.icmp_error_quote.expect("an error quotes"));
    assert_eq!(&frame[at..at + quoted.len()], &quoted[..]);

    let quoted6 = ipv6(B6, A6, &[], proto::TCP, &tcp(443, 1, 0, 0));
    let frame6 = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::ICMPV6, &icmp(1, 4, 0, 0, &quoted6)),
    );
    let parsed6 = parse_frame(&frame6, 0).expect("parses");
    let at6 = usize::from(parsed6.icmp_error_quote.expect("an error quotes"));
    assert_eq!(&frame6[at6..], &quoted6[..]);
}

#[test]
fn neighbour_discovery_parses_without_an_id() {
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(
            A6,
            B6,
            &[],
            proto::ICMPV6,
            &icmp(135, 0, 0xffff, 0, &[0; 16]),
        ),
    );
    let key = key_of(&frame);
    assert_eq!((key.src_port, key.icmp_type()), (0, Some(135)));
}

#[test]
fn single_vlan_tag() {
    let frame = ethernet(
        &[100],
        ETH_IPV4,
        &ipv4(A4, B4, proto::TCP, &tcp(1, 2, 0, 0)),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(
        parsed.vlan,
        VlanTags {
            outer: 0,
            inner: 100
        }
    );
    assert_eq!(parsed.flow_key().expect("ip").vlan.inner, 100);
    assert_eq!((parsed.l3_offset, parsed.l4_offset), (18, Some(38)));
}

#[test]
fn qinq_double_tag() {
    let frame = ethernet(
        &[10, 200],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::UDP, &udp(1, 2, 0)),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(
        parsed.vlan,
        VlanTags {
            outer: 10,
            inner: 200
        }
    );
    assert_eq!(parsed.l3_offset, 22);
    assert_eq!(parsed.ethertype, ETH_IPV6);
}

#[test]
fn third_vlan_tag_is_dropped() {
    let frame = ethernet(
        &[1, 2, 3],
        ETH_IPV4,
        &ipv4(A4, B4, proto::TCP, &tcp(1, 2, 0, 0)),
    );
    assert_eq!(drop_of(&frame), DropReason::TooManyVlanTags);
}

#[test]
fn arp_is_its_own_kind() {
    let frame = ethernet(&[], 0x0806, &frames::arp(1, A4, B4));
    let parsed = parse_frame(&frame, 0).expect("parses");
    match parsed.kind {
        FrameKind::Arp(arp) => {
            assert_eq!(arp.operation, 1);
            assert_eq!(arp.sender_ip, Some(A4.into()));
            assert_eq!(arp.target_ip, Some(B4.into()));
        }
        other => panic!("expected ARP, got {other:?}"),
    }
}

#[test]
fn unknown_ethertype_is_other_not_dropped() {
    let frame = ethernet(&[], 0x88cc, &[0; 46]);
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(parsed.kind, FrameKind::Other);
    assert_eq!(parsed.ethertype, 0x88cc);
}

#[test]
fn ipv4_options_move_the_l4_offset() {
    let options = [1, 1, 1, 0]; // NOP NOP NOP EOL
    let l3 = frames::ipv4_with_options(A4, B4, proto::UDP, &options, &udp(7, 9, 4));
    let parsed = parse_frame(&ethernet(&[], ETH_IPV4, &l3), 0).expect("parses");
    assert_eq!(parsed.l4_offset, Some(14 + 24));
    assert_eq!(parsed.flow_key().expect("ip").dst_port, 9);
}

#[test]
fn ethernet_padding_is_excluded_from_the_ip_packet() {
    let mut frame = frames::udp_v4(A4, B4, 1, 2, 0);
    let ip_end = frame.len();
    frame.resize(60, 0);
    let parsed = parse_frame(&frame, 0).expect("padding is fine");
    assert_eq!(usize::from(parsed.l3_end), ip_end);
}

#[test]
fn sctp_ports_are_read() {
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::SCTP, &[0, 7, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    let key = key_of(&frame);
    assert_eq!((key.src_port, key.dst_port), (7, 9));
    let short = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::SCTP, &[0, 7]));
    assert_eq!(drop_of(&short), DropReason::TruncatedL4Ports);
}

#[test]
fn unknown_upper_layer_has_no_ports() {
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, 47, &[0; 8])); // GRE
    let parsed = parse_frame(&frame, 0).expect("parses");
    let key = parsed.flow_key().expect("ip");
    assert_eq!((key.proto, key.src_port, key.dst_port), (47, 0, 0));
    assert_eq!(parsed.l4_offset, None);
}

// ---- fragments ------------------------------------------------------------

#[test]
fn ipv4_first_fragment_keeps_ports() {
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4_fragment(A4, B4, proto::UDP, 77, 0, true, &udp(1, 53, 64)),
    );
    let key = key_of(&frame);
    assert_eq!(key.fragment.kind, FragmentKind::First);
    assert_eq!((key.fragment.id, key.fragment.more), (77, true));
    assert_eq!(key.dst_port, 53);
}

#[test]
fn ipv4_later_fragment_has_no_ports() {
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4_fragment(A4, B4, proto::UDP, 77, 9, false, &[0; 40]),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    let key = parsed.flow_key().expect("ip");
    assert_eq!(key.fragment.kind, FragmentKind::Later);
    assert_eq!((key.fragment.offset_bytes, key.fragment.id), (72, 77));
    assert_eq!((key.src_port, key.dst_port), (0, 0));
    assert_eq!(parsed.l4_offset, None);
}

#[test]
fn ipv4_tiny_first_fragment_is_dropped() {
    // 8 bytes of TCP in the first fragment: the flags sit in the next one.
    let first = &tcp(1, 22, tcp_flags::SYN, 0)[..8];
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4_fragment(A4, B4, proto::TCP, 5, 0, true, first),
    );
    assert_eq!(drop_of(&frame), DropReason::TinyFragment);
}

#[test]
fn fragment_overlapping_the_tcp_header_is_dropped() {
    // RFC 1858: offset 1 (8 bytes) rewrites the TCP flags; offset 2 (16 bytes)
    // still lands inside a 20-byte header; offset 3 (24 bytes) does not.
    for units in [1, 2] {
        let frame = ethernet(
            &[],
            ETH_IPV4,
            &ipv4_fragment(A4, B4, proto::TCP, 5, units, false, &[0; 16]),
        );
        assert_eq!(
            drop_of(&frame),
            DropReason::OverlappingFragment,
            "offset {units}"
        );
    }
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4_fragment(A4, B4, proto::TCP, 5, 3, false, &[0; 16]),
    );
    assert_eq!(key_of(&frame).fragment.kind, FragmentKind::Later);
}

#[test]
fn ipv6_fragments_first_later_and_atomic() {
    let first = Ext::Fragment {
        offset_units: 0,
        more: true,
        id: 0xabcdef,
    };
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[first], proto::UDP, &udp(9, 53, 32)),
    );
    let key = key_of(&frame);
    assert_eq!(
        (key.fragment.kind, key.fragment.id, key.dst_port),
        (FragmentKind::First, 0xabcdef, 53)
    );

    let later = Ext::Fragment {
        offset_units: 5,
        more: false,
        id: 0xabcdef,
    };
    let frame = ethernet(&[], ETH_IPV6, &ipv6(A6, B6, &[later], proto::UDP, &[0; 24]));
    let parsed = parse_frame(&frame, 0).expect("parses");
    let key = parsed.flow_key().expect("ip");
    assert_eq!(
        (key.fragment.kind, key.proto, key.dst_port),
        (FragmentKind::Later, proto::UDP, 0)
    );
    assert_eq!(parsed.l4_offset, None);

    let atomic = Ext::Fragment {
        offset_units: 0,
        more: false,
        id: 1,
    };
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[atomic], proto::TCP, &tcp(1, 80, 0, 0)),
    );
    let key = key_of(&frame);
    assert_eq!((key.fragment.kind, key.dst_port), (FragmentKind::Whole, 80));
}

#[test]
fn ipv6_first_fragment_without_the_whole_header_chain_is_tiny() {
    // RFC 7112: the first fragment must carry the upper-layer header.
    let first = Ext::Fragment {
        offset_units: 0,
        more: true,
        id: 3,
    };
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[first], proto::TCP, &tcp(1, 80, 0, 0)[..12]),
    );
    assert_eq!(drop_of(&frame), DropReason::TinyFragment);
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[first, Ext::DestOptions], proto::TCP, &[]),
    );
    // The chain itself is complete; the TCP header after it is missing.
    assert_eq!(drop_of(&frame), DropReason::TinyFragment);
}

// ---- IPv6 extension headers ------------------------------------------------

#[test]
fn ipv6_extension_chain_is_walked_to_the_upper_layer() {
    let chain = [
        Ext::HopByHop,
        Ext::DestOptions,
        Ext::Routing,
        Ext::DestOptions,
    ];
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &chain, proto::TCP, &tcp(5, 443, 0, 0)),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    assert_eq!(parsed.l4_offset, Some(14 + 40 + 32));
    let key = parsed.flow_key().expect("ip");
    assert_eq!((key.proto, key.dst_port), (proto::TCP, 443));
}

#[test]
fn hop_by_hop_not_first_is_dropped() {
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(
            A6,
            B6,
            &[Ext::DestOptions, Ext::HopByHop],
            proto::TCP,
            &tcp(1, 2, 0, 0),
        ),
    );
    assert_eq!(drop_of(&frame), DropReason::BadIpv6ExtHeaderOrder);
}

#[test]
fn repeated_extension_headers_end_the_walk() {
    let looped = [Ext::DestOptions; 3];
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &looped, proto::TCP, &tcp(1, 2, 0, 0)),
    );
    assert_eq!(drop_of(&frame), DropReason::BadIpv6ExtHeaderOrder);
    let twice = [Ext::Routing, Ext::Routing];
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &twice, proto::TCP, &tcp(1, 2, 0, 0)),
    );
    assert_eq!(drop_of(&frame), DropReason::BadIpv6ExtHeaderOrder);
    // A long chain of distinct headers is capped by the same rule.
    let many = [Ext::DestOptions; 40];
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &many, proto::TCP, &tcp(1, 2, 0, 0)),
    );
    assert_eq!(drop_of(&frame), DropReason::BadIpv6ExtHeaderOrder);
}

#[test]
fn truncated_extension_header_is_dropped() {
    let mut l3 = ipv6(A6, B6, &[Ext::Routing], proto::TCP, &[]);
    l3.truncate(40 + 4);
    l3[4..6].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV6, &l3)),
        DropReason::TruncatedIpv6ExtHeader
    );
}

#[test]
fn authentication_header_is_walked_and_checked() {
    // AH: next header TCP, payload length 4 (24 bytes: 12 fixed + 12 ICV).
    let mut ah = vec![proto::TCP, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
    ah.extend_from_slice(&[0; 12]);
    let mut l4 = ah.clone();
    l4.extend_from_slice(&tcp(1, 443, 0, 0));
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::AH, &l4));
    let key = key_of(&frame);
    assert_eq!((key.proto, key.dst_port), (proto::TCP, 443));

    let frame6 = ethernet(&[], ETH_IPV6, &ipv6(A6, B6, &[], proto::AH, &l4));
    assert_eq!(key_of(&frame6).dst_port, 443);

    let mut bad = l4.clone();
    bad[1] = 0; // payload length 0: shorter than the fixed part
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::AH, &bad));
    assert_eq!(drop_of(&frame), DropReason::BadAuthHeader);
}

// ---- malformed frames, layer by layer -------------------------------------

#[test]
fn every_truncation_of_a_tcp_frame_is_dropped_with_the_right_layer() {
    let frame = frames::tcp_v4(A4, B4, 1, 2, 0);
    for cut in 0..frame.len() {
        let reason = drop_of(&frame[..cut]);
        let expected = match cut {
            0..=13 => DropReason::TruncatedEthernet,
            14..=33 => DropReason::TruncatedIpv4,
            // The IPv4 total length now claims more than the frame has.
            _ => DropReason::BadIpv4TotalLength,
        };
        assert_eq!(reason, expected, "cut at {cut}");
    }
}

#[test]
fn every_truncation_of_an_ipv6_frame_is_dropped() {
    let frame = frames::tcp_v6(A6, B6, 1, 2, 0);
    for cut in 0..frame.len() {
        let expected = match cut {
            0..=13 => DropReason::TruncatedEthernet,
            14..=53 => DropReason::TruncatedIpv6,
            _ => DropReason::BadIpv6PayloadLength,
        };
        assert_eq!(drop_of(&frame[..cut]), expected, "cut at {cut}");
    }
}

#[test]
fn truncated_vlan_tag_and_arp() {
    let frame = ethernet(&[5], ETH_IPV4, &[]);
    assert_eq!(drop_of(&frame[..16]), DropReason::TruncatedVlan);
    let arp = ethernet(&[], 0x0806, &frames::arp(1, A4, B4));
    assert_eq!(drop_of(&arp[..14 + 20]), DropReason::TruncatedArp);
}

#[test]
fn bad_ipv4_header_fields() {
    let good = ipv4(A4, B4, proto::UDP, &udp(1, 2, 0));

    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV4, &bad_ihl)),
        DropReason::BadIpv4HeaderLength
    );

    let mut bad_version = good.clone();
    bad_version[0] = 0x65;
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV4, &bad_version)),
        DropReason::BadIpv4Version
    );

    let mut short_total = good.clone();
    short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    fix_ipv4_checksum(&mut short_total);
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV4, &short_total)),
        DropReason::BadIpv4TotalLength
    );

    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0xff;
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV4, &bad_sum)),
        DropReason::BadIpv4Checksum
    );

    // IHL beyond the bytes present.
    let mut long_ihl = good[..24].to_vec();
    long_ihl[0] = 0x4f;
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV4, &long_ihl)),
        DropReason::TruncatedIpv4
    );
}

fn fix_ipv4_checksum(header: &mut [u8]) {
    header[10..12].copy_from_slice(&[0, 0]);
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let mut sum: u32 = header[..ihl]
        .chunks_exact(2)
        .map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    header[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn bad_ipv6_header_fields() {
    let good = ipv6(A6, B6, &[], proto::UDP, &udp(1, 2, 0));

    let mut bad_version = good.clone();
    bad_version[0] = 0x45;
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV6, &bad_version)),
        DropReason::BadIpv6Version
    );

    let mut too_long = good.clone();
    too_long[4..6].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV6, &too_long)),
        DropReason::BadIpv6PayloadLength
    );

    let mut jumbo = ipv6(A6, B6, &[Ext::HopByHop], proto::UDP, &udp(1, 2, 0));
    jumbo[4..6].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        drop_of(&ethernet(&[], ETH_IPV6, &jumbo)),
        DropReason::BadIpv6PayloadLength
    );
}

#[test]
fn bad_tcp_headers() {
    let mut zero_offset = tcp(1, 2, 0, 0);
    zero_offset[12] = 0x00;
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::TCP, &zero_offset));
    assert_eq!(drop_of(&frame), DropReason::BadTcpDataOffset);

    let mut long_offset = tcp(1, 2, 0, 0);
    long_offset[12] = 0xf0; // 60 bytes claimed, 20 present
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::TCP, &long_offset));
    assert_eq!(drop_of(&frame), DropReason::TruncatedTcp);

    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::TCP, &tcp(1, 2, 0, 0)[..19]),
    );
    assert_eq!(drop_of(&frame), DropReason::TruncatedTcp);
}

#[test]
fn bad_udp_headers() {
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::UDP, &[0, 1, 0, 2]));
    assert_eq!(drop_of(&frame), DropReason::TruncatedUdp);

    let mut short_len = udp(1, 2, 4);
    short_len[4..6].copy_from_slice(&7u16.to_be_bytes());
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::UDP, &short_len));
    assert_eq!(drop_of(&frame), DropReason::BadUdpLength);

    let mut long_len = udp(1, 2, 4);
    long_len[4..6].copy_from_slice(&100u16.to_be_bytes());
    let frame = ethernet(&[], ETH_IPV6, &ipv6(A6, B6, &[], proto::UDP, &long_len));
    assert_eq!(drop_of(&frame), DropReason::BadUdpLength);
}

#[test]
fn bad_icmp_headers() {
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::ICMP, &[8, 0, 0, 0]));
    assert_eq!(drop_of(&frame), DropReason::TruncatedIcmp);
    let frame = ethernet(&[], ETH_IPV6, &ipv6(A6, B6, &[], proto::ICMPV6, &[128, 0]));
    assert_eq!(drop_of(&frame), DropReason::TruncatedIcmp);
    let frame = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::ICMP, &icmp(8, 0, 1, 1, &[])),
    );
    assert_eq!(drop_of(&frame), DropReason::IcmpFamilyMismatch);
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::ICMPV6, &icmp(128, 0, 1, 1, &[])),
    );
    assert_eq!(drop_of(&frame), DropReason::IcmpFamilyMismatch);
}

#[test]
fn drop_reason_names_are_unique_and_indexed() {
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT);
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*reason as usize, i);
    }
}

// ---- no panics on anything --------------------------------------------------

#[test]
fn every_prefix_of_every_mixed_frame_parses_or_drops() {
    for frame in frames::realistic_mix() {
        for cut in 0..=frame.len() {
            let _ = parse_frame(&frame[..cut], 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_frame(&bytes, 0);
    }

    #[test]
    fn corrupted_real_frames_never_panic(
        pick in 0usize..16,
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6),
    ) {
        let mix = frames::realistic_mix();
        let mut frame = mix[pick % mix.len()].clone();
        for (at, value) in flips {
            let len = frame.len();
            frame[at % len] = value;
        }
        if let Ok(parsed) = parse_frame(&frame, 0) {
            // Offsets the pipeline will use stay inside the frame.
            prop_assert!(usize::from(parsed.l3_end) <= frame.len());
            if let Some(l4) = parsed.l4_offset {
                prop_assert!(l4 <= parsed.l3_end);
            }
        }
    }
}

// ---- fields for conntrack ------------------------------------------------------

#[test]
fn tcp_segment_fields_and_window_scale() {
    let mut l4 = tcp(1, 80, tcp_flags::SYN, 0);
    // Data offset 7 (28 bytes): options MSS (4 bytes), NOP, window scale 7.
    l4[12] = 7 << 4;
    l4.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
    l4.extend_from_slice(&[0; 10]); // payload
    let frame = ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::TCP, &l4));
    let parsed = parse_frame(&frame, 0).expect("parses");
    let segment = parsed.tcp.expect("TCP fields");
    assert_eq!(segment.seq, 1000);
    assert_eq!(segment.window, 64240);
    assert_eq!(segment.window_scale, Some(7));
    assert_eq!(segment.payload_len, 10);

    // Window scale is only read from SYNs; malformed options yield none.
    let mut ack = l4.clone();
    ack[13] = tcp_flags::ACK;
    let parsed =
        parse_frame(&ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::TCP, &ack)), 0).expect("parses");
    assert_eq!(parsed.tcp.expect("TCP").window_scale, None);
    let mut bad = l4.clone();
    bad[20..28].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]); // option length 0
    let parsed =
        parse_frame(&ethernet(&[], ETH_IPV4, &ipv4(A4, B4, proto::TCP, &bad)), 0).expect("parses");
    assert_eq!(parsed.tcp.expect("TCP").window_scale, None);
}

#[test]
fn quoted_packets_of_icmp_errors_parse_to_their_connection() {
    // The quote is truncated to 8 bytes of UDP: its total length lies.
    let original = ipv4(B4, A4, proto::UDP, &udp(53, 5353, 200));
    let quoted = &original[..28];
    let frame = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::ICMP, &icmp(3, 3, 0, 0, quoted)),
    );
    let parsed = parse_frame(&frame, 0).expect("parses");
    let key = parse_quoted(
        &frame,
        parsed.icmp_error_quote.expect("quote"),
        AddrFamily::V4,
    )
    .expect("key");
    assert_eq!(
        (key.src_ip(), key.dst_ip()),
        (IpAddr::from(B4), IpAddr::from(A4))
    );
    assert_eq!(
        (key.proto, key.src_port, key.dst_port),
        (proto::UDP, 53, 5353)
    );

    let original6 = ipv6(
        B6,
        A6,
        &[Ext::DestOptions],
        proto::ICMPV6,
        &icmp(128, 0, 77, 1, &[0; 32]),
    );
    let frame6 = ethernet(
        &[],
        ETH_IPV6,
        &ipv6(A6, B6, &[], proto::ICMPV6, &icmp(1, 4, 0, 0, &original6)),
    );
    let parsed6 = parse_frame(&frame6, 0).expect("parses");
    let key6 = parse_quoted(
        &frame6,
        parsed6.icmp_error_quote.expect("quote"),
        AddrFamily::V6,
    )
    .expect("key");
    assert_eq!(
        (key6.proto, key6.src_port, key6.icmp_type()),
        (proto::ICMPV6, 77, Some(128))
    );

    // Too short to name a connection.
    let stub = ethernet(
        &[],
        ETH_IPV4,
        &ipv4(A4, B4, proto::ICMP, &icmp(3, 3, 0, 0, &original[..22])),
    );
    let parsed = parse_frame(&stub, 0).expect("parses");
    assert_eq!(
        parse_quoted(
            &stub,
            parsed.icmp_error_quote.expect("quote"),
            AddrFamily::V4
        ),
        None
    );
}
