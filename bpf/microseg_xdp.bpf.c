// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* microseg's XDP program, attached to every switch port.
 *
 * - Counts every frame in per-CPU counters.
 * - Drops frames whose IPv4/IPv6 source or destination is quarantined
 *   (the map is updated from userspace without reloading).
 * - Redirects everything else to the AF_XDP socket of the receive queue;
 *   with no socket bound it drops (fail closed), never passing traffic to
 *   the host stack unjudged.
 *
 * Parsing follows xdp-tools' pattern: a cursor and `if (hdr + 1 > end)`
 * bounds checks before every read. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "microseg_xdp.h"

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MS_CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MS_QUARANTINE_MAX);
	__type(key, struct ms_addr);
	__type(value, __u8);
} quarantine SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MS_XSK_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1;
}

static __always_inline int quarantined(const struct ms_addr *addr)
{
	return bpf_map_lookup_elem(&quarantine, addr) != NULL;
}

static __always_inline void mapped_v4(struct ms_addr *out, __be32 addr)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->bytes[10] = 0xff;
	out->bytes[11] = 0xff;
	__builtin_memcpy(&out->bytes[12], &addr, 4);
}

/* 1 if the frame's IP source or destination is quarantined. */
static __always_inline int check_quarantine(void *data, void *end)
{
	struct ethhdr *eth = data;
	void *cursor = eth + 1;
	struct ms_addr addr;
	__u16 proto;
	int tags;

	if (cursor > end)
		return -1;
	proto = eth->h_proto;
	/* Up to two VLAN tags (802.1Q, 802.1ad), as the userspace parser. */
#pragma unroll
	for (tags = 0; tags < 2; tags++) {
		struct vlan_hdr *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > end)
			return -1;
		proto = vlan->encapsulated_proto;
		cursor = vlan + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor;

		if ((void *)(ip + 1) > end)
			return -1;
		mapped_v4(&addr, ip->saddr);
		if (quarantined(&addr))
			return 1;
		mapped_v4(&addr, ip->daddr);
		return quarantined(&addr);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;

		if ((void *)(ip6 + 1) > end)
			return -1;
		__builtin_memcpy(addr.bytes, &ip6->saddr, 16);
		if (quarantined(&addr))
			return 1;
		__builtin_memcpy(addr.bytes, &ip6->daddr, 16);
		return quarantined(&addr);
	}
	return 0;
}

SEC("xdp")
int microseg_port(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 queue = ctx->rx_queue_index; /* map keys must live on the stack */
	int verdict;

	count(MS_CNT_RX);
	verdict = check_quarantine(data, end);
	if (verdict > 0) {
		count(MS_CNT_QUARANTINE_DROP);
		return XDP_DROP;
	}
	if (verdict < 0)
		count(MS_CNT_TRUNCATED); /* userspace parses and counts the reason */
	if (bpf_map_lookup_elem(&xsks, &queue)) {
		count(MS_CNT_REDIRECT);
		return bpf_redirect_map(&xsks, queue, XDP_DROP);
	}
	count(MS_CNT_NO_SOCKET_DROP);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
