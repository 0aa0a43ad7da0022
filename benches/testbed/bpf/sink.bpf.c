// SPDX-License-Identifier: Apache-2.0
/* Sink: counts IPv4/UDP frames per CPU and drops them; every other frame
 * (ARP, ICMP, ...) is counted and passed to the sink namespace's stack, so
 * that it answers ARP and ping for the latency measurement. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps"); /* 0: IPv4/UDP frames, 1: other frames */

SEC("xdp")
int tb_sink(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	__u32 key = 1;

	if (data + 24 <= end && *(__be16 *)(data + 12) == bpf_htons(0x0800) && data[23] == 17)
		key = 0;
	__u64 *count = bpf_map_lookup_elem(&sink_count, &key);
	if (count)
		*count += 1;
	return key == 0 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
