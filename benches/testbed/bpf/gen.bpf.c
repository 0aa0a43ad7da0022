// SPDX-License-Identifier: Apache-2.0
/* Traffic generator, two ways (benches/bin/testbed_xdp.rs, `gen`):
 *
 * - live frames (`tb_gen`): run with BPF_PROG_RUN and
 *   BPF_F_TEST_XDP_LIVE_FRAMES, it rewrites each frame's headers from the
 *   template in `gen_config`, gives it the next flow's UDP ports and
 *   transmits it (XDP_TX: out of the interface named as the ingress in the
 *   run's context).
 * - a loop (`tb_loop` and `tb_bounce`), for kernels that refuse live frames:
 *   a few seeded frames circle between the two ends of a veth pair; on each
 *   round `tb_loop` rewrites the frame as `tb_gen` does and broadcasts it
 *   (a devmap, BPF_F_BROADCAST) to its own interface, which keeps it in
 *   the loop, and to the generator's interface, which sends a copy on to
 *   the device under test; `tb_bounce` on the other end sends it back
 *   (XDP_TX). Both drop every frame once `gen_stop` is set. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "testbed.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tb_gen_config);
} gen_config SEC(".maps");

/* Frames the program ran on (sequence number of the next one). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* The loop's broadcast targets: its own interface and the generator's. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} gen_ports SEC(".maps");

/* Non-zero: the loop drops its frames and so ends. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gen_stop SEC(".maps");

/* Rewrites the frame from the template with the next flow's ports; 0 on
 * success, -1 when the frame is too short or a map is missing. */
static __always_inline int rewrite_next(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct tb_gen_config *cfg = bpf_map_lookup_elem(&gen_config, &key);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &key);

	if (!cfg || !seq || data + TB_HDR_LEN > end)
		return -1;
	__builtin_memcpy(data, cfg->hdr, TB_HDR_LEN);
	__u32 flows = cfg->flows ? cfg->flows : 1;
	__u32 span = cfg->sport_span ? cfg->sport_span : 1;
	__u32 idx = (__u32)(*seq % flows);
	*seq += 1;
	__u16 sport = cfg->sport_base + (__u16)(idx % span);
	__u16 dport = cfg->dport_base + (__u16)(idx / span);
	/* UDP header at 34: source port, destination port. */
	*(__be16 *)(data + 34) = bpf_htons(sport);
	*(__be16 *)(data + 36) = bpf_htons(dport);
	return 0;
}

static __always_inline int stopped(void)
{
	__u32 key = 0;
	__u32 *stop = bpf_map_lookup_elem(&gen_stop, &key);

	return !stop || *stop;
}

SEC("xdp")
int tb_gen(struct xdp_md *ctx)
{
	return rewrite_next(ctx) ? XDP_ABORTED : XDP_TX;
}

SEC("xdp")
int tb_loop(struct xdp_md *ctx)
{
	if (stopped() || rewrite_next(ctx))
		return XDP_DROP;
	return bpf_redirect_map(&gen_ports, 0, BPF_F_BROADCAST);
}

SEC("xdp")
int tb_bounce(struct xdp_md *ctx)
{
	return stopped() ? XDP_DROP : XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
