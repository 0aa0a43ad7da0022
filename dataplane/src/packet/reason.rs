//! Why a frame was dropped by the parser.
//!
//! Each reason is a dense index (`as usize`) so that stats can keep one
//! lock-free counter per reason in a fixed array, and each has a stable
//! snake_case name for metrics labels and logs.

/// Declares the enum, its count, its list and its names in one place so the
/// three can never disagree.
macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )+) => {
        /// A typed reason why a frame cannot be parsed into a flow key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )+
        }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];
            /// How many reasons there are (the size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable name for metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header.
    TruncatedEthernet => "truncated_ethernet",
    /// A VLAN tag announced but not all there.
    TruncatedVlan => "truncated_vlan",
    /// More than two stacked VLAN tags.
    TooManyVlanTags => "too_many_vlan_tags",
    /// ARP announced but shorter than its header says.
    TruncatedArp => "truncated_arp",
    /// IPv4 announced but shorter than 20 bytes or than the IHL says.
    TruncatedIpv4 => "truncated_ipv4",
    /// The IPv4 version field is not 4.
    BadIpv4Version => "bad_ipv4_version",
    /// IHL below 5.
    BadIpv4HeaderLength => "bad_ipv4_header_length",
    /// Total length below the header length, or beyond the frame.
    BadIpv4TotalLength => "bad_ipv4_total_length",
    /// The IPv4 header checksum does not verify.
    BadIpv4Checksum => "bad_ipv4_checksum",
    /// IPv6 announced but shorter than 40 bytes.
    TruncatedIpv6 => "truncated_ipv6",
    /// The IPv6 version field is not 6.
    BadIpv6Version => "bad_ipv6_version",
    /// Payload length beyond the frame, or zero (jumbograms have no place on
    /// an Ethernet segment).
    BadIpv6PayloadLength => "bad_ipv6_payload_length",
    /// An extension header runs past the packet.
    TruncatedIpv6ExtHeader => "truncated_ipv6_ext_header",
    /// Hop-by-hop not first, or an extension header repeated more often than
    /// RFC 8200 4.1 allows (this also bounds the chain's length).
    BadIpv6ExtHeaderOrder => "bad_ipv6_ext_header_order",
    /// An authentication header with an impossible length.
    BadAuthHeader => "bad_auth_header",
    /// A first fragment that does not hold the whole L4 header.
    TinyFragment => "tiny_fragment",
    /// A later fragment that starts inside the first fragment's L4 header.
    OverlappingFragment => "overlapping_fragment",
    /// TCP header shorter than 20 bytes or than its data offset says.
    TruncatedTcp => "truncated_tcp",
    /// TCP data offset below 5 (a zero-length header).
    BadTcpDataOffset => "bad_tcp_data_offset",
    /// UDP header shorter than 8 bytes.
    TruncatedUdp => "truncated_udp",
    /// UDP length field below 8 or beyond the IP payload.
    BadUdpLength => "bad_udp_length",
    /// ICMP or ICMPv6 header shorter than 8 bytes.
    TruncatedIcmp => "truncated_icmp",
    /// ICMP inside IPv6 or ICMPv6 inside IPv4.
    IcmpFamilyMismatch => "icmp_family_mismatch",
    /// SCTP, DCCP or UDP-Lite too short to hold its ports.
    TruncatedL4Ports => "truncated_l4_ports",
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
