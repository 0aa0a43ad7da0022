/* Constants and map layouts shared by the XDP program and its Rust loader
 * (dataplane/src/bpf). Change both together. */
#ifndef MICROSEG_XDP_H
#define MICROSEG_XDP_H

/* Per-CPU counters, indexes into the `counters` array map. */
#define MS_CNT_RX 0              /* every frame seen */
#define MS_CNT_QUARANTINE_DROP 1 /* source or destination quarantined */
#define MS_CNT_REDIRECT 2        /* handed to the port's AF_XDP socket */
#define MS_CNT_NO_SOCKET_DROP 3  /* no socket bound: dropped (fail closed) */
#define MS_CNT_TRUNCATED 4       /* too short to parse: sent to userspace */
#define MS_CNT_FAST_FORWARD 5    /* forwarded by the fast path (XDP_REDIRECT) */
#define MS_CNT_FAST_STALE 6      /* fast-path entry of an older policy: sent to userspace */
#define MS_CNT_COUNT 7

/* Quarantine map key: an IPv4 address is stored as an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d), so one map serves both families. */
struct ms_addr {
	unsigned char bytes[16];
};

#define MS_QUARANTINE_MAX 65536
#define MS_XSK_MAX 64

/* Fast path (admitted flows forwarded in XDP; dataplane/src/offload.rs).
 * One entry per direction of a connection, keyed by the frame's own
 * addresses and ports as it arrives on this port. */
struct ms_flow {
	unsigned char src[16]; /* IPv4 as IPv4-mapped IPv6, as ms_addr */
	unsigned char dst[16];
	unsigned short src_port; /* network byte order */
	unsigned short dst_port;
	unsigned char proto;
	/* 4 or 6, the frame's IP version: an IPv6 frame between IPv4-mapped
	 * addresses must not match an IPv4 flow's entry (or the other way
	 * round), which the addresses alone would let it. */
	unsigned char family;
	unsigned char pad[2]; /* zero */
};

struct ms_fast {
	unsigned int egress;     /* key of the egress port in the `ports` devmap */
	unsigned int generation; /* policy generation that admitted the flow */
	unsigned char src_mac[6];
	unsigned char dst_mac[6];
	unsigned int pad;
	/* Written by the program: */
	unsigned long long packets;
	unsigned long long bytes;
	unsigned long long last_seen; /* bpf_ktime_get_coarse_ns() */
};

/* `policy` array map, key 0: the generation in force. Entries of another
 * generation are sent to userspace, which re-checks them. */
struct ms_policy {
	unsigned int generation;
	unsigned int pad;
};

/* The IPv4 fast path's table (`fast4`, dataplane/src/bpf/fast4.rs): an
 * mmapable array of one-cache-line slots, open addressing with linear
 * probing. A frame's flow is looked for in the MS_FAST4_PROBES slots from
 * its hash (ms_hash4) on, up to the first empty slot; a flow that found
 * no room there is in `fast` instead. One cache miss per frame where the
 * hash map's bucket and element take two or three.
 *
 * Userspace is the only writer of keys and routes, through a sequence
 * count: odd while it writes the slot. The program reads `seq`, the slot,
 * then `seq` again, and takes the slot only if both reads are the same
 * even number. */
struct ms_slot4 {
	unsigned int seq;
	unsigned int src; /* network byte order, as in the frame */
	unsigned int dst;
	unsigned short src_port; /* network byte order */
	unsigned short dst_port;
	unsigned char proto; /* MS_SLOT_EMPTY, MS_SLOT_REMOVED, or the flow's */
	unsigned char pad0;
	unsigned short egress; /* key of the egress port in the `ports` devmap */
	unsigned int generation;
	unsigned char src_mac[6];
	unsigned char dst_mac[6];
	unsigned int pad1;
	/* Written by the program: */
	unsigned long long packets;
	unsigned long long bytes;
	unsigned long long last_seen; /* bpf_ktime_get_coarse_ns() */
};

#define MS_SLOT_EMPTY 0     /* never used since the table was made: ends a probe */
#define MS_SLOT_REMOVED 255 /* a flow was removed: probes go on past it */
#define MS_FAST4_PROBES 8
#define MS_FAST4_SLOTS_MAX (1U << 22)

/* ms_hash4's multipliers (odd 64-bit constants). */
#define MS_HASH_K1 0x9e3779b97f4a7c15ULL
#define MS_HASH_K2 0xc2b2ae3d27d4eb4fULL
#define MS_HASH_K3 0x165667b19e3779f9ULL
#define MS_HASH_K4 0xff51afd7ed558ccdULL

#define MS_FAST_MAX_DEFAULT 1048576
#define MS_PORTS_MAX 64

#endif
