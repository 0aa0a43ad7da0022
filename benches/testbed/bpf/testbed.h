/* Shared between the testbed's XDP programs and benches/bin/testbed_xdp.rs. */
#ifndef MICROSEG_TESTBED_H
#define MICROSEG_TESTBED_H

/* Ethernet + IPv4 (no options) + UDP. */
#define TB_HDR_LEN 42

/* The generator's configuration (map `gen_config`, one entry). The frame
 * headers are rewritten from `hdr` on every transmission: live-frames mode
 * recycles pages, and a path that edits frames in place (kernel forwarding
 * decrements the TTL and rewrites MACs) would otherwise change them. */
struct tb_gen_config {
	unsigned char hdr[TB_HDR_LEN]; /* eth + ipv4 (checksum set) + udp */
	unsigned short sport_span;     /* source ports per destination port */
	unsigned int flows;            /* distinct 5-tuples, 1.. */
	unsigned short sport_base;
	unsigned short dport_base;
};

/* The Rust side writes this layout byte by byte. */
_Static_assert(sizeof(struct tb_gen_config) == 52, "tb_gen_config layout");
_Static_assert(__builtin_offsetof(struct tb_gen_config, flows) == 44, "flows");
_Static_assert(__builtin_offsetof(struct tb_gen_config, dport_base) == 50, "dport_base");

#endif
