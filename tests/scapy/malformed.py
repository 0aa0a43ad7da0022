#!/usr/bin/python3
"""Sends one crafted, malformed frame per parser drop reason out of IFACE
(inside a test namespace), and prints each reason as it is sent, so the
test knows which drop counters must move. Frames go to DST_MAC only; the
addresses are the testbed's own 10.203.x.y / fd00:203:x::y.

usage: malformed.py IFACE SRC_MAC DST_MAC SRC_IP DST_IP SRC_IP6 DST_IP6
"""
import sys

from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, conf, sendp

iface, src_mac, dst_mac, src, dst, src6, dst6 = sys.argv[1:8]
conf.verb = 0
eth = Ether(src=src_mac, dst=dst_mac)
ip = IP(src=src, dst=dst)


def with_byte(frame, offset, value):
    """The frame's bytes with one byte replaced (fields scapy would fix)."""
    raw = bytearray(bytes(frame))
    raw[offset] = value
    return Raw(bytes(raw))


udp = eth / ip / UDP(sport=1000, dport=2000)
frames = [
    ("truncated_ipv4", Ether(src=src_mac, dst=dst_mac, type=0x0800) / Raw(b"\x45\x00\x00")),
    ("bad_ipv4_version", with_byte(udp, 14, 0x55)),  # version 5, IHL 5
    ("bad_ipv4_header_length", with_byte(udp, 14, 0x44)),  # version 4, IHL 4
    ("bad_ipv4_checksum", eth / IP(src=src, dst=dst, chksum=0x1234) / UDP(sport=1000, dport=2000)),
    ("bad_ipv4_total_length", eth / IP(src=src, dst=dst, len=1400) / UDP(sport=1000, dport=2000)),
    ("tiny_fragment", eth / IP(src=src, dst=dst, proto=6, flags="MF") / Raw(b"\x00" * 8)),
    ("bad_tcp_data_offset", eth / ip / TCP(sport=1000, dport=8080, dataofs=3)),
    ("truncated_udp", eth / IP(src=src, dst=dst, proto=17) / Raw(b"\x03\xe8")),
    ("bad_udp_length", eth / ip / UDP(sport=1000, dport=2000, len=4)),
    ("truncated_icmp", eth / IP(src=src, dst=dst, proto=1) / Raw(b"\x08\x00")),
    ("truncated_ipv6", Ether(src=src_mac, dst=dst_mac, type=0x86DD) / Raw(b"\x60\x00")),
    ("bad_ipv6_payload_length", eth / IPv6(src=src6, dst=dst6, plen=900) / UDP(sport=1000, dport=2000)),
    ("icmp_family_mismatch", eth / IPv6(src=src6, dst=dst6, nh=1) / ICMP()),
    ("truncated_vlan", Ether(src=src_mac, dst=dst_mac, type=0x8100) / Raw(b"\x00")),
    ("too_many_vlan_tags", eth / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / udp.payload),
]

for reason, frame in frames:
    sendp(frame, iface=iface)
    print(reason, flush=True)
