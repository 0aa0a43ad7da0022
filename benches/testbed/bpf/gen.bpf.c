// SPDX-License-Identifier: Apache-2.0
/* Traffic generator: run with BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES,
 * it rewrites each frame's headers from the template in `gen_config`,
 * gives it the next flow's UDP ports and transmits it (XDP_TX: out of the
 * interface named as the ingress in the run's context). */
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

SEC("xdp")
int tb_gen(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct tb_gen_config *cfg = bpf_map_lookup_elem(&gen_config, &key);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &key);

	if (!cfg || !seq || data + TB_HDR_LEN > end)
		return XDP_ABORTED;
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
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
