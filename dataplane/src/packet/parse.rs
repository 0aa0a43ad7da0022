//! Layer-by-layer parse of one Ethernet frame (see the module header in
//! `packet/mod.rs` for the decisions it makes).
//!
//! Every slice is taken with `get(..)`, never indexing, so a frame that lies
//! about its lengths ends in a [`DropReason`], not a panic.

use std::net::Ipv4Addr;

use etherparse::{
    err, EtherType, Ethernet2HeaderSlice, IpAuthHeaderSlice, Ipv4HeaderSlice,
    Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice,
    TcpHeaderSlice, UdpHeaderSlice,
};

use super::key::{AddrFamily, FlowKey, FragmentInfo, FragmentKind, VlanTags};
use super::proto;
use super::DropReason;

/// The most IPv6 extension headers a valid chain holds: RFC 8200 4.1 allows
/// each kind once and destination options twice (hop-by-hop, destination
/// options, routing, fragment, authentication, destination options). The
/// per-kind limits enforce it, so a chain that repeats itself (the "loop"
/// attack) ends at its first repeat.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

const ETHERNET_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const IPV6_HEADER_LEN: usize = 40;
const ICMP_HEADER_LEN: usize = 8;

/// What kind of frame this is, with what the next stage needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// An IPv4 or IPv6 packet: judged by policy.
    Ip(FlowKey),
    /// ARP: switched, not judged (configurable in the pipeline).
    Arp(ArpInfo),
    /// Any other ethertype; the pipeline decides (drop by default).
    Other,
}

/// The fields of an ARP packet the switch and quarantine need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpInfo {
    pub operation: u16,
    /// Sender and target IPv4 addresses, when it is Ethernet/IPv4 ARP.
    pub sender_ip: Option<Ipv4Addr>,
    pub target_ip: Option<Ipv4Addr>,
}

/// A parsed frame: L2 addressing, the frame kind, and byte offsets into the
/// frame for the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    pub ingress_port: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: VlanTags,
    /// The ethertype after any VLAN tags.
    pub ethertype: u16,
    /// Offset of the L3 header (after Ethernet and VLAN tags).
    pub l3_offset: u16,
    /// End of the IP packet: bytes beyond it are Ethernet padding.
    pub l3_end: u16,
    /// Offset of the L4 header; `None` where there is none to read (a later
    /// fragment, or an upper layer whose header the parser does not know).
    pub l4_offset: Option<u16>,
    /// For ICMP/ICMPv6 error messages: offset of the quoted IP header that
    /// conntrack matches the error against.
    pub icmp_error_quote: Option<u16>,
    /// TCP sequence fields, for conntrack's window checks.
    pub tcp: Option<TcpSegment>,
    pub kind: FrameKind,
}

/// The TCP fields conntrack tracks, besides flags (which are in the key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSegment {
    pub seq: u32,
    pub ack: u32,
    /// The raw (unscaled) window field.
    pub window: u16,
    /// The window scale option, when a SYN carries one.
    pub window_scale: Option<u8>,
    /// Bytes of TCP payload.
    pub payload_len: u16,
}

impl ParsedFrame {
    /// The flow key, for IP frames.
    pub fn flow_key(&self) -> Option<&FlowKey> {
        match &self.kind {
            FrameKind::Ip(key) => Some(key),
            _ => None,
        }
    }
}

/// Parses one Ethernet frame received on `ingress_port`.
pub fn parse_frame(frame: &[u8], ingress_port: u16) -> Result<ParsedFrame, DropReason> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| DropReason::TruncatedEthernet)?;
    let (vlan, ethertype, l3_offset) = parse_vlan_tags(frame, eth.ether_type())?;
    let l3 = frame.get(l3_offset..).unwrap_or_default();

    let mut parsed = ParsedFrame {
        ingress_port,
        dst_mac: eth.destination(),
        src_mac: eth.source(),
        vlan,
        ethertype: ethertype.0,
        l3_offset: offset_u16(l3_offset),
        l3_end: offset_u16(frame.len()),
        l4_offset: None,
        icmp_error_quote: None,
        tcp: None,
        kind: FrameKind::Other,
    };

    let ip = match ethertype {
        EtherType::IPV4 => parse_ipv4(l3)?,
        EtherType::IPV6 => parse_ipv6(l3)?,
        EtherType::ARP => {
            parsed.kind = FrameKind::Arp(parse_arp(l3)?);
            return Ok(parsed);
        }
        _ => return Ok(parsed),
    };

    let mut key = FlowKey {
        ingress_port,
        vlan,
        family: ip.family,
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        fragment: ip.fragment,
        ..FlowKey::default()
    };
    let l4_data = l3.get(ip.l4_start..ip.l3_len).unwrap_or_default();
    let l4 = parse_l4(&mut key, l4_data)?;
    parsed.l3_end = offset_u16(l3_offset + ip.l3_len);
    parsed.l4_offset = l4.has_header.then(|| offset_u16(l3_offset + ip.l4_start));
    parsed.icmp_error_quote = l4
        .quote_at
        .map(|at| offset_u16(l3_offset + ip.l4_start + at));
    parsed.tcp = l4.tcp;
    parsed.kind = FrameKind::Ip(key);
    Ok(parsed)
}

/// Parses the packet an ICMP or ICMPv6 error quotes (at `offset` in
/// `frame`, as `ParsedFrame::icmp_error_quote` gives it) into the key of the
/// connection it belongs to, as that packet was sent. Lengths are not
/// checked against the quote (it is a truncated copy), only bounds: `None`
/// when not even the IP header and 4 bytes of ports are there.
pub fn parse_quoted(frame: &[u8], offset: u16, family: AddrFamily) -> Option<FlowKey> {
    let quote = frame.get(usize::from(offset)..)?;
    let layer = match family {
        AddrFamily::V4 => {
            let header = Ipv4HeaderSlice::from_slice(quote).ok()?;
            IpLayer {
                family,
                src: u128::from(u32::from_be_bytes(header.source())),
                dst: u128::from(u32::from_be_bytes(header.destination())),
                proto: header.protocol().0,
                fragment: FragmentInfo::default(),
                l4_start: header.slice().len(),
                l3_len: quote.len(),
            }
        }
        AddrFamily::V6 => {
            let header = Ipv6HeaderSlice::from_slice(quote).ok()?;
            let mut layer = IpLayer {
                family,
                src: u128::from_be_bytes(header.source()),
                dst: u128::from_be_bytes(header.destination()),
                proto: header.next_header().0,
                fragment: FragmentInfo::default(),
                l4_start: IPV6_HEADER_LEN,
                l3_len: quote.len(),
            };
            walk_ipv6_ext_headers(quote, &mut layer).ok()?;
            layer
        }
    };
    let l4 = quote.get(layer.l4_start..)?;
    let word = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut key = FlowKey {
        family,
        src: layer.src,
        dst: layer.dst,
        proto: layer.proto,
        ..FlowKey::default()
    };
    match (layer.proto, family) {
        (proto::ICMP, AddrFamily::V4) | (proto::ICMPV6, AddrFamily::V6) => {
            let (&icmp_type, &code) = (l4.first()?, l4.get(1)?);
            let carries_id = if family == AddrFamily::V4 {
                icmpv4_class(icmp_type).0
            } else {
                icmpv6_class(icmp_type).0
            };
            key.dst_port = u16::from_be_bytes([icmp_type, code]);
            if carries_id {
                key.src_port = word(4)?;
            }
        }
        (proto::TCP | proto::UDP | proto::SCTP | proto::DCCP | proto::UDPLITE, _) => {
            key.src_port = word(0)?;
            key.dst_port = word(2)?;
        }
        _ => {}
    }
    Some(key)
}

/// Frames are at most 64 KiB here (AF_XDP frames are 4 KiB), so every
/// offset fits; saturate rather than wrap if that ever changes.
fn offset_u16(offset: usize) -> u16 {
    u16::try_from(offset).unwrap_or(u16::MAX)
}

fn is_vlan_tpid(ethertype: EtherType) -> bool {
    matches!(
        ethertype,
        EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME
    )
}

/// Walks up to two VLAN tags; returns the tags, the inner ethertype and the
/// L3 offset.
fn parse_vlan_tags(
    frame: &[u8],
    mut ethertype: EtherType,
) -> Result<(VlanTags, EtherType, usize), DropReason> {
    let mut vlan = VlanTags::default();
    let mut offset = ETHERNET_HEADER_LEN;
    let mut tags = 0;
    while is_vlan_tpid(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(DropReason::TooManyVlanTags);
        }
        let rest = frame.get(offset..).unwrap_or_default();
        let tag = SingleVlanHeaderSlice::from_slice(rest).map_err(|_| DropReason::TruncatedVlan)?;
        // The first tag seen is the outermost: shift it out when a second
        // (customer) tag follows.
        vlan.outer = vlan.inner;
        vlan.inner = tag.vlan_identifier().value();
        ethertype = tag.ether_type();
        offset += VLAN_TAG_LEN;
        tags += 1;
    }
    Ok((vlan, ethertype, offset))
}

fn parse_arp(l3: &[u8]) -> Result<ArpInfo, DropReason> {
    let arp = etherparse::ArpPacketSlice::from_slice(l3).map_err(|_| DropReason::TruncatedArp)?;
    let as_ipv4 = |bytes: &[u8]| -> Option<Ipv4Addr> {
        let octets: [u8; 4] = bytes.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    };
    let is_ipv4 = arp.proto_addr_type() == EtherType::IPV4;
    Ok(ArpInfo {
        operation: arp.operation().0,
        sender_ip: is_ipv4
            .then(|| as_ipv4(arp.sender_protocol_addr()))
            .flatten(),
        target_ip: is_ipv4
            .then(|| as_ipv4(arp.target_protocol_addr()))
            .flatten(),
    })
}

/// The IP layer's contribution to the key, with positions relative to the
/// start of the IP header.
struct IpLayer {
    family: AddrFamily,
    src: u128,
    dst: u128,
    proto: u8,
    fragment: FragmentInfo,
    /// Where the upper-layer header (or fragment data) starts.
    l4_start: usize,
    /// Length of the IP packet, excluding Ethernet padding.
    l3_len: usize,
}

fn fragment_info(id: u32, offset_bytes: u16, more: bool) -> FragmentInfo {
    let kind = match (offset_bytes, more) {
        (0, false) => FragmentKind::Whole,
        (0, true) => FragmentKind::First,
        _ => FragmentKind::Later,
    };
    FragmentInfo {
        kind,
        id,
        offset_bytes,
        more,
    }
}

fn parse_ipv4(l3: &[u8]) -> Result<IpLayer, DropReason> {
    let header = Ipv4HeaderSlice::from_slice(l3).map_err(|e| match e {
        err::ipv4::HeaderSliceError::Len(_) => DropReason::TruncatedIpv4,
        err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::UnexpectedVersion {
            ..
        }) => DropReason::BadIpv4Version,
        err::ipv4::HeaderSliceError::Content(
            err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { .. },
        ) => DropReason::BadIpv4HeaderLength,
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len || total_len > l3.len() {
        return Err(DropReason::BadIpv4TotalLength);
    }
    if !ipv4_checksum_ok(header.slice()) {
        return Err(DropReason::BadIpv4Checksum);
    }
    let fragment = fragment_info(
        u32::from(header.identification()),
        header.fragments_offset().byte_offset(),
        header.more_fragments(),
    );
    let mut layer = IpLayer {
        family: AddrFamily::V4,
        src: u128::from(u32::from_be_bytes(header.source())),
        dst: u128::from(u32::from_be_bytes(header.destination())),
        proto: header.protocol().0,
        fragment,
        l4_start: header_len,
        l3_len: total_len,
    };
    // An authentication header sits between IPv4 and the upper layer; it is
    // part of the fragmentable data, so only unfragmented or first fragments
    // carry it.
    if layer.proto == proto::AH && layer.fragment.kind != FragmentKind::Later {
        let rest = l3.get(layer.l4_start..total_len).unwrap_or_default();
        let (next, len) = parse_auth_header(rest, layer.fragment.kind)?;
        layer.proto = next;
        layer.l4_start += len;
    }
    Ok(layer)
}

/// RFC 1071 one's complement sum over the header, checksum included: a
/// correct header sums to 0xffff.
fn ipv4_checksum_ok(header: &[u8]) -> bool {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// Parses an authentication header; returns the next protocol and its length.
fn parse_auth_header(rest: &[u8], fragment: FragmentKind) -> Result<(u8, usize), DropReason> {
    match IpAuthHeaderSlice::from_slice(rest) {
        Ok(auth) => Ok((auth.next_header().0, auth.slice().len())),
        Err(err::ip_auth::HeaderSliceError::Len(_)) => Err(truncated_or_tiny(
            fragment,
            DropReason::TruncatedIpv6ExtHeader,
        )),
        Err(err::ip_auth::HeaderSliceError::Content(_)) => Err(DropReason::BadAuthHeader),
    }
}

/// A header cut short in a first fragment is a tiny-fragment attack; in a
/// whole packet it is plain truncation.
fn truncated_or_tiny(fragment: FragmentKind, truncated: DropReason) -> DropReason {
    if fragment == FragmentKind::First {
        DropReason::TinyFragment
    } else {
        truncated
    }
}

/// IPv6 extension header kinds the walk knows, with how often each may occur.
mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DEST_OPTIONS: u8 = 60;

    /// Times each kind may appear (RFC 8200 4.1).
    pub fn max_occurrences(kind: u8) -> u8 {
        if kind == DEST_OPTIONS {
            2
        } else {
            1
        }
    }

    /// A bit per kind, to count occurrences without allocating.
    pub fn slot(kind: u8) -> usize {
        match kind {
            HOP_BY_HOP => 0,
            ROUTING => 1,
            FRAGMENT => 2,
            AUTH => 3,
            _ => 4,
        }
    }
}

fn parse_ipv6(l3: &[u8]) -> Result<IpLayer, DropReason> {
    let header = Ipv6HeaderSlice::from_slice(l3).map_err(|e| match e {
        err::ipv6::HeaderSliceError::Len(_) => DropReason::TruncatedIpv6,
        err::ipv6::HeaderSliceError::Content(_) => DropReason::BadIpv6Version,
    })?;
    let payload_len = usize::from(header.payload_length());
    let l3_len = IPV6_HEADER_LEN + payload_len;
    if payload_len == 0 && header.next_header().0 == ext::HOP_BY_HOP || l3_len > l3.len() {
        return Err(DropReason::BadIpv6PayloadLength);
    }
    let mut layer = IpLayer {
        family: AddrFamily::V6,
        src: u128::from_be_bytes(header.source()),
        dst: u128::from_be_bytes(header.destination()),
        proto: header.next_header().0,
        fragment: FragmentInfo::default(),
        l4_start: IPV6_HEADER_LEN,
        l3_len,
    };
    walk_ipv6_ext_headers(l3.get(..l3_len).unwrap_or_default(), &mut layer)?;
    Ok(layer)
}

/// Walks the extension header chain, advancing `layer.l4_start` and setting
/// `layer.proto` to the upper-layer protocol. Stops at a later fragment's
/// fragment header: what follows it is fragment data, not headers.
fn walk_ipv6_ext_headers(packet: &[u8], layer: &mut IpLayer) -> Result<(), DropReason> {
    let mut seen = [0u8; 5];
    let mut walked = 0;
    loop {
        let kind = layer.proto;
        let is_ext = matches!(
            kind,
            ext::HOP_BY_HOP | ext::ROUTING | ext::FRAGMENT | ext::AUTH | ext::DEST_OPTIONS
        );
        if !is_ext {
            return Ok(());
        }
        if kind == ext::HOP_BY_HOP && walked != 0 {
            return Err(DropReason::BadIpv6ExtHeaderOrder);
        }
        let count = &mut seen[ext::slot(kind)];
        *count += 1;
        if *count > ext::max_occurrences(kind) {
            return Err(DropReason::BadIpv6ExtHeaderOrder);
        }
        walked += 1;

        let rest = packet.get(layer.l4_start..).unwrap_or_default();
        let truncated = truncated_or_tiny(layer.fragment.kind, DropReason::TruncatedIpv6ExtHeader);
        let (next, len) = match kind {
            ext::FRAGMENT => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest).map_err(|_| truncated)?;
                layer.fragment = fragment_info(
                    frag.identification(),
                    frag.fragment_offset().byte_offset(),
                    frag.more_fragments(),
                );
                (frag.next_header().0, frag.slice().len())
            }
            ext::AUTH => parse_auth_header(rest, layer.fragment.kind)?,
            _ => {
                let raw = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(|_| truncated)?;
                (raw.next_header().0, raw.slice().len())
            }
        };
        layer.proto = next;
        layer.l4_start += len;
        if layer.fragment.kind == FragmentKind::Later {
            return Ok(());
        }
    }
}

/// What the L4 parse found besides the key fields.
struct L4Layer {
    has_header: bool,
    /// Offset, from the L4 header, of the IP header an ICMP error quotes.
    quote_at: Option<usize>,
    tcp: Option<TcpSegment>,
}

const NO_L4: L4Layer = L4Layer {
    has_header: false,
    quote_at: None,
    tcp: None,
};

/// The shortest L4 header each protocol needs for the key; a later fragment
/// that starts below it overwrites the first fragment's header.
fn min_l4_header_len(proto: u8) -> u16 {
    match proto {
        proto::TCP => 20,
        proto::UDP | proto::ICMP | proto::ICMPV6 | proto::UDPLITE => 8,
        proto::SCTP | proto::DCCP => 4,
        _ => 0,
    }
}

/// Fills ports, ICMP fields and TCP flags into `key` from the upper-layer
/// bytes `data` (the IP payload after extension headers).
fn parse_l4(key: &mut FlowKey, data: &[u8]) -> Result<L4Layer, DropReason> {
    let fragment = key.fragment.kind;
    if fragment == FragmentKind::Later {
        if key.fragment.offset_bytes < min_l4_header_len(key.proto) {
            return Err(DropReason::OverlappingFragment);
        }
        return Ok(NO_L4);
    }
    match (key.proto, key.family) {
        (proto::TCP, _) => {
            let tcp = TcpHeaderSlice::from_slice(data).map_err(|e| match e {
                err::tcp::HeaderSliceError::Len(_) => {
                    truncated_or_tiny(fragment, DropReason::TruncatedTcp)
                }
                err::tcp::HeaderSliceError::Content(_) => DropReason::BadTcpDataOffset,
            })?;
            key.src_port = tcp.source_port();
            key.dst_port = tcp.destination_port();
            key.tcp_flags = tcp.slice().get(13).copied().unwrap_or_default();
            // A first fragment's payload length is not the segment's; the
            // pipeline does not track fragmented TCP (it drops later fragments).
            let payload_len = data.len().saturating_sub(tcp.slice().len());
            let segment = TcpSegment {
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                window: tcp.window_size(),
                window_scale: if tcp.syn() {
                    window_scale(tcp.options())
                } else {
                    None
                },
                payload_len: u16::try_from(payload_len).unwrap_or(u16::MAX),
            };
            return Ok(L4Layer {
                has_header: true,
                quote_at: None,
                tcp: Some(segment),
            });
        }
        (proto::UDP, _) => {
            let udp = UdpHeaderSlice::from_slice(data)
                .map_err(|_| truncated_or_tiny(fragment, DropReason::TruncatedUdp))?;
            let length = usize::from(udp.length());
            // In a first fragment the length covers the whole datagram.
            if length < 8 || (fragment == FragmentKind::Whole && length > data.len()) {
                return Err(DropReason::BadUdpLength);
            }
            key.src_port = udp.source_port();
            key.dst_port = udp.destination_port();
        }
        (proto::ICMP, AddrFamily::V4) | (proto::ICMPV6, AddrFamily::V6) => {
            // Both have the same 8-byte header: type, code, checksum and
            // four bytes whose meaning depends on the type.
            let header: &[u8; ICMP_HEADER_LEN] = data
                .first_chunk()
                .ok_or_else(|| truncated_or_tiny(fragment, DropReason::TruncatedIcmp))?;
            let class = match key.family {
                AddrFamily::V4 => icmpv4_class,
                AddrFamily::V6 => icmpv6_class,
            };
            return Ok(fill_icmp(key, header, class));
        }
        (proto::ICMP, AddrFamily::V6) | (proto::ICMPV6, AddrFamily::V4) => {
            return Err(DropReason::IcmpFamilyMismatch);
        }
        (proto::SCTP | proto::DCCP | proto::UDPLITE, _) => {
            let ports: [u8; 4] = data
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| truncated_or_tiny(fragment, DropReason::TruncatedL4Ports))?;
            key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        }
        _ => return Ok(NO_L4),
    }
    Ok(L4Layer {
        has_header: true,
        quote_at: None,
        tcp: None,
    })
}

/// The window scale option (kind 3, length 3) from raw TCP options, walked
/// by hand: no allocation, and malformed options just mean "no scale".
fn window_scale(options: &[u8]) -> Option<u8> {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return None, // end of options
            1 => at += 1,     // no-op
            3 => {
                return options
                    .get(at + 2)
                    .copied()
                    .filter(|_| options.get(at + 1) == Some(&3))
            }
            _ => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 {
                    return None;
                }
                at += len;
            }
        }
    }
    None
}

/// (carries an identifier, is an error that quotes a packet) for ICMPv4
/// types: echo, timestamp, information and address-mask requests/replies
/// carry an identifier as Linux conntrack treats them; destination
/// unreachable, source quench, redirect, time exceeded and parameter problem
/// quote the offending packet.
fn icmpv4_class(icmp_type: u8) -> (bool, bool) {
    match icmp_type {
        0 | 8 | 13 | 14 | 15 | 16 | 17 | 18 => (true, false),
        3 | 4 | 5 | 11 | 12 => (false, true),
        _ => (false, false),
    }
}

/// The same for ICMPv6: echo request/reply; destination unreachable, packet
/// too big, time exceeded, parameter problem.
fn icmpv6_class(icmp_type: u8) -> (bool, bool) {
    match icmp_type {
        128 | 129 => (true, false),
        1..=4 => (false, true),
        _ => (false, false),
    }
}

/// Fills an ICMP or ICMPv6 packet's key from its header: type and code in
/// place of the destination port, the echo identifier in place of the
/// source port for the types `class` says carry one.
fn fill_icmp(
    key: &mut FlowKey,
    header: &[u8; ICMP_HEADER_LEN],
    class: fn(u8) -> (bool, bool),
) -> L4Layer {
    let [icmp_type, code, _, _, id_high, id_low, _, _] = *header;
    let (carries_id, is_error) = class(icmp_type);
    key.dst_port = u16::from_be_bytes([icmp_type, code]);
    if carries_id {
        key.src_port = u16::from_be_bytes([id_high, id_low]);
    }
    L4Layer {
        has_header: true,
        quote_at: is_error.then_some(ICMP_HEADER_LEN),
        tcp: None,
    }
}
