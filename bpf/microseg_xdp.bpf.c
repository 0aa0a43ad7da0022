// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* microseg's XDP program, attached to every switch port.
 *
 * - Counts every frame in per-CPU counters.
 * - Drops frames whose IPv4/IPv6 source or destination is quarantined
 *   (the map is updated from userspace without reloading).
 * - Fast path: a frame of a flow userspace admitted and installed in the
 *   `fast4` table (IPv4) or the `fast` map (untagged IPv4/IPv6 TCP or
 *   UDP, no SYN/FIN/RST, same MACs, admitted by the policy generation in
 *   force) is counted in its entry
 *   and redirected straight to its egress port through the `ports`
 *   devmap. Everything else, and every doubt, goes to userspace.
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
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
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

/* Key 0: non-zero while `quarantine` may hold an address. Userspace sets it
 * before adding an address and clears it once the map is empty, so the
 * common case (nobody quarantined) costs no hash lookups per frame. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} quarantine_any SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MS_XSK_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Sized from the conntrack capacity at load time; entries are allocated
 * as they are installed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MS_FAST_MAX_DEFAULT);
	__type(key, struct ms_flow);
	__type(value, struct ms_fast);
} fast SEC(".maps");

/* IPv4 flows first go here (ms_slot4 in the header); sized, and mapped
 * into the offloader's memory, by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ms_slot4);
} fast4 SEC(".maps");

/* Set by the loader before the program is loaded: whether the fast path
 * is on (off: no lookups at all), and `fast4`'s slot count less one (a
 * power of two less one). */
const volatile __u8 fast_path_on = 0;
const volatile __u32 fast4_mask = 0;

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, MS_PORTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ms_policy);
} policy SEC(".maps");

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

/* 1 if an address may be quarantined (see `quarantine_any`). */
static __always_inline int quarantine_in_use(void)
{
	__u32 zero = 0;
	__u32 *any = bpf_map_lookup_elem(&quarantine_any, &zero);

	return any && *any;
}

static __always_inline void mapped_v4(struct ms_addr *out, __be32 addr)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->bytes[10] = 0xff;
	out->bytes[11] = 0xff;
	__builtin_memcpy(&out->bytes[12], &addr, 4);
}

/* 1 if the frame's IP source or destination is quarantined, -1 if it is
 * too short to tell. With `in_use` 0 the headers are still checked (a
 * short frame is counted either way) but no address is looked up. */
static __always_inline int check_quarantine(void *data, void *end, int in_use)
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
		if (!in_use)
			return 0;
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
		if (!in_use)
			return 0;
		__builtin_memcpy(addr.bytes, &ip6->saddr, 16);
		if (quarantined(&addr))
			return 1;
		__builtin_memcpy(addr.bytes, &ip6->daddr, 16);
		return quarantined(&addr);
	}
	return 0;
}

static __always_inline int same_mac(const unsigned char *a, const unsigned char *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) |
		(a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

/* Reads the ports of a TCP or UDP header at `l4` into the key; 0 if the
 * frame may take the fast path so far. TCP control segments (SYN, FIN,
 * RST) always go to userspace: they drive the connection's state. */
static __always_inline int fast_ports(struct ms_flow *key, void *l4, void *end)
{
	if (key->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > end)
			return -1;
		if (tcp->syn || tcp->fin || tcp->rst)
			return -1;
		key->src_port = tcp->source;
		key->dst_port = tcp->dest;
		return 0;
	}
	if (key->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > end)
			return -1;
		key->src_port = udp->source;
		key->dst_port = udp->dest;
		return 0;
	}
	return -1;
}

/* The checks a fast-path frame passes once its flow is found: the
 * generation that admitted it is in force, its MACs are those installed,
 * the egress port exists. Returns the egress port's key, or -1. */
static __always_inline long fast_route(__u32 generation, __u32 egress, const unsigned char *src_mac,
				       const unsigned char *dst_mac, struct ethhdr *eth)
{
	struct ms_policy *in_force;
	__u32 zero = 0;

	in_force = bpf_map_lookup_elem(&policy, &zero);
	if (!in_force || generation != in_force->generation) {
		count(MS_CNT_FAST_STALE);
		return -1;
	}
	if (!same_mac(src_mac, eth->h_source) || !same_mac(dst_mac, eth->h_dest))
		return -1;
	if (!bpf_map_lookup_elem(&ports, &egress))
		return -1;
	return egress;
}

/* Counts a frame the fast path forwards in its flow's entry. */
static __always_inline void count_forwarded(__u64 *packets, __u64 *bytes, __u64 *last_seen,
					    __u64 len)
{
	__sync_fetch_and_add(packets, 1);
	__sync_fetch_and_add(bytes, len);
	/* The coarse clock (CLOCK_MONOTONIC as of the last tick) is enough
	 * for idle timeouts of seconds and spares a clock read per frame. */
	*last_seen = bpf_ktime_get_coarse_ns();
}

/* The program's half of ms_hash4; dataplane/src/bpf/fast4.rs has the
 * same. Addresses and ports are taken as they lie in the frame (network
 * byte order read as native words), so both sides agree on any host. */
static __always_inline __u64 ms_hash4(__u32 src, __u32 dst, __u16 sport, __u16 dport, __u8 proto)
{
	__u32 ports = (__u32)sport | ((__u32)dport << 16);
	__u64 h = ((__u64)src * MS_HASH_K1) ^ ((__u64)dst * MS_HASH_K2) ^
		  ((__u64)ports * MS_HASH_K3) ^ proto;

	h ^= h >> 29;
	h *= MS_HASH_K4;
	h ^= h >> 32;
	return h;
}

#define MS_NOT_IN_FAST4 (-2)

/* Reads a slot's sequence count, ordered against the slot's other reads.
 * On x86, loads are not reordered with other loads (TSO) and the JIT
 * keeps the program's order, so a compiler barrier on each side is the
 * whole of it; elsewhere a fetching atomic (a full barrier on every JIT)
 * does it, at the price of a locked instruction on the slot's line. */
#if defined(__TARGET_ARCH_x86)
static __always_inline __u32 seq_read(__u32 *seq)
{
	__u32 value;

	asm volatile("" ::: "memory");
	value = *(volatile __u32 *)seq;
	asm volatile("" ::: "memory");
	return value;
}
#else
static __always_inline __u32 seq_read(__u32 *seq)
{
	return __sync_fetch_and_add(seq, 0);
}
#endif

/* A slot found for the frame's flow, read under its sequence count: the
 * egress port's key, -1 if userspace must judge the frame (the slot is
 * being written, or a check failed). */
static __always_inline long fast4_take(struct ms_slot4 *slot, const struct ms_flow *key,
				       __u32 src, __u32 dst, struct ethhdr *eth, void *data,
				       void *end)
{
	unsigned char src_mac[6], dst_mac[6];
	__u32 seq, generation, egress;
	long verdict;

	/* The reads below happen after this one, and before the second. */
	seq = seq_read(&slot->seq);
	if (seq & 1)
		return -1;
	if (slot->src != src || slot->dst != dst || slot->src_port != key->src_port ||
	    slot->dst_port != key->dst_port || slot->proto != key->proto)
		return -1;
	generation = slot->generation;
	egress = slot->egress;
	__builtin_memcpy(src_mac, slot->src_mac, 6);
	__builtin_memcpy(dst_mac, slot->dst_mac, 6);
	if (seq_read(&slot->seq) != seq)
		return -1;
	verdict = fast_route(generation, egress, src_mac, dst_mac, eth);
	if (verdict >= 0)
		count_forwarded(&slot->packets, &slot->bytes, &slot->last_seen, end - data);
	return verdict;
}

/* Looks an IPv4 flow up in `fast4`: as fast4_take, or MS_NOT_IN_FAST4. */
static __always_inline long fast4_path(const struct ms_flow *key, struct ethhdr *eth, void *data,
				       void *end)
{
	__u32 src, dst;
	__u64 home;
	int probe;

	__builtin_memcpy(&src, &key->src[12], 4);
	__builtin_memcpy(&dst, &key->dst[12], 4);
	home = ms_hash4(src, dst, key->src_port, key->dst_port, key->proto);
#pragma unroll
	for (probe = 0; probe < MS_FAST4_PROBES; probe++) {
		__u32 index = (__u32)(home + probe) & fast4_mask;
		struct ms_slot4 *slot = bpf_map_lookup_elem(&fast4, &index);
		__u8 held;

		if (!slot)
			return MS_NOT_IN_FAST4;
		held = slot->proto;
		if (held == MS_SLOT_EMPTY)
			return MS_NOT_IN_FAST4;
		if (held == key->proto && slot->src == src && slot->dst == dst &&
		    slot->src_port == key->src_port && slot->dst_port == key->dst_port)
			return fast4_take(slot, key, src, dst, eth, data, end);
	}
	return MS_NOT_IN_FAST4;
}

/* The fast path: the egress port's devmap key if this frame belongs to an
 * installed flow of the generation in force (counted in its entry), else
 * -1 (userspace judges it). IPv4 flows are looked for in `fast4` first,
 * then, as IPv6 flows, in `fast`. */
static __always_inline long fast_path(void *data, void *end)
{
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	struct ms_flow key = {};
	struct ms_fast *flow;
	long verdict;
	void *l4;

	if (!fast_path_on || l3 > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return -1;
		/* Fragments (more-fragments flag or an offset) go to userspace. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return -1;
		key.src[10] = 0xff;
		key.src[11] = 0xff;
		__builtin_memcpy(&key.src[12], &ip->saddr, 4);
		key.dst[10] = 0xff;
		key.dst[11] = 0xff;
		__builtin_memcpy(&key.dst[12], &ip->daddr, 4);
		key.proto = ip->protocol;
		key.family = 4;
		l4 = l3 + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > end)
			return -1;
		/* Extension headers go to userspace. */
		__builtin_memcpy(key.src, &ip6->saddr, 16);
		__builtin_memcpy(key.dst, &ip6->daddr, 16);
		key.proto = ip6->nexthdr;
		key.family = 6;
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	if (fast_ports(&key, l4, end) < 0)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		verdict = fast4_path(&key, eth, data, end);
		if (verdict != MS_NOT_IN_FAST4)
			return verdict;
	}
	flow = bpf_map_lookup_elem(&fast, &key);
	if (!flow)
		return -1;
	verdict = fast_route(flow->generation, flow->egress, flow->src_mac, flow->dst_mac, eth);
	if (verdict >= 0)
		count_forwarded(&flow->packets, &flow->bytes, &flow->last_seen, end - data);
	return verdict;
}

SEC("xdp")
int microseg_port(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 queue = ctx->rx_queue_index; /* map keys must live on the stack */
	int verdict;
	long egress;

	count(MS_CNT_RX);
	verdict = check_quarantine(data, end, quarantine_in_use());
	if (verdict > 0) {
		count(MS_CNT_QUARANTINE_DROP);
		return XDP_DROP;
	}
	if (verdict < 0)
		count(MS_CNT_TRUNCATED); /* userspace parses and counts the reason */
	if (verdict == 0) {
		egress = fast_path(data, end);
		if (egress >= 0) {
			count(MS_CNT_FAST_FORWARD);
			return bpf_redirect_map(&ports, (__u32)egress, XDP_DROP);
		}
	}
	if (bpf_map_lookup_elem(&xsks, &queue)) {
		count(MS_CNT_REDIRECT);
		return bpf_redirect_map(&xsks, queue, XDP_DROP);
	}
	count(MS_CNT_NO_SOCKET_DROP);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
