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
#define MS_CNT_COUNT 5

/* Quarantine map key: an IPv4 address is stored as an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d), so one map serves both families. */
struct ms_addr {
	unsigned char bytes[16];
};

#define MS_QUARANTINE_MAX 65536
#define MS_XSK_MAX 64

#endif
