// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * quixd SO_REUSEPORT steering program (socket and io_uring backends).
 *
 * Attached to the reuseport group of one served address: every worker has a
 * socket in the group, registered in "workers" at its index. A QUIC short
 * header packet carries a destination connection ID that quixd issued, which
 * names the owning worker (userspace/src/driver/cid.rs); the packet goes to
 * that worker's socket, whatever the peer's address is now (NAT rebinding,
 * migration). Everything else (long headers: Initial, 0-RTT, Handshake, Retry;
 * connection IDs of another layout; a worker not registered) is left to the
 * kernel's hash of the addresses, which keeps a handshake on one worker.
 *
 * Counters (per CPU, index: meaning) are in quixd_reuseport.h.
 *
 * Build with `cargo xtask build-ebpf` (`cargo xtask check-ebpf` compares).
 */
#include <linux/bpf.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "quixd_reuseport.h"

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, QUIXD_RP_MAX_WORKERS);
	__type(key, __u32);
	__type(value, __u32);
} workers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, QUIXD_RP_CFG_MAX);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, QUIXD_RP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int hashed(__u32 reason)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &reason);

	if (value)
		*value += 1;
	/* No socket selected: the kernel picks one by hash. */
	return SK_PASS;
}

static __always_inline __u32 config_value(__u32 index)
{
	__u32 *value = bpf_map_lookup_elem(&config, &index);

	return value ? *value : 0;
}

SEC("sk_reuseport")
int quixd_reuseport(struct sk_reuseport_md *md)
{
	/* QUIC's first octet, then the connection ID up to the worker's octet. */
	__u8 head[1 + QUIXD_RP_MAX_WORKER_OFFSET + 1];
	__u32 first, offset, worker, index;
	__u64 *value;

	/* For UDP the context's data starts at the UDP header. Short header
	 * packets are far longer than this (a connection ID and an AEAD tag). */
	if (bpf_skb_load_bytes(md, sizeof(struct udphdr), head, sizeof(head)))
		return hashed(QUIXD_RP_CNT_SHORT_PACKET);
	if (head[0] & 0x80)
		return hashed(QUIXD_RP_CNT_LONG_HEADER);
	first = config_value(QUIXD_RP_CFG_FIRST_OCTET);
	offset = config_value(QUIXD_RP_CFG_WORKER_OFFSET);
	/* Config rotation and length as we issue them (the host's bytes are the
	 * load balancer's business: a packet that reached us is for us). */
	if (head[1] != first || offset == 0 || offset > QUIXD_RP_MAX_WORKER_OFFSET)
		return hashed(QUIXD_RP_CNT_FOREIGN_CID);
	worker = head[(1 + offset) & (sizeof(head) - 1)];
	if (bpf_sk_select_reuseport(md, &workers, &worker, 0))
		return hashed(QUIXD_RP_CNT_NO_WORKER);
	index = QUIXD_RP_CNT_STEERED;
	value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
