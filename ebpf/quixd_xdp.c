// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * quixd XDP steering program.
 *
 * Redirects IPv4/IPv6 UDP datagrams addressed to one of our ports (and, when
 * the address filter is enabled, one of our addresses) into the AF_XDP socket
 * registered for the receiving queue. Everything else goes to the kernel with
 * XDP_PASS; nothing is ever dropped here. See quixd_xdp.h for the map and
 * counter contract with userspace.
 *
 * Build with `cargo xtask build-ebpf` (the committed quixd_xdp.o must match a
 * rebuild: `cargo xtask check-ebpf`).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "quixd_xdp.h"

/* Not in the uapi headers. */
struct quixd_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

#define QUIXD_IP_MF 0x2000
#define QUIXD_IP_OFFSET 0x1fff

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, QUIXD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, QUIXD_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, QUIXD_MAX_ADDRS);
	__type(key, struct quixd_addr);
	__type(value, __u8);
} addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, QUIXD_CFG_MAX);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, QUIXD_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1; /* per-CPU slot: no atomics needed */
}

/* XDP_PASS, counting the total and one reason. */
static __always_inline int pass(__u32 reason)
{
	count(reason);
	count(QUIXD_CNT_PASSED);
	return XDP_PASS;
}

static __always_inline int is_ipv6_ext_header(__u8 next_header)
{
	switch (next_header) {
	case IPPROTO_HOPOPTS:   /* 0 */
	case IPPROTO_ROUTING:   /* 43 */
	case IPPROTO_FRAGMENT:  /* 44 */
	case IPPROTO_ESP:       /* 50 */
	case IPPROTO_AH:        /* 51 */
	case IPPROTO_DSTOPTS:   /* 60 */
	case IPPROTO_MH:        /* 135, mobility */
	case 139:               /* HIP */
	case 140:               /* Shim6 */
	case 253:               /* experimental */
	case 254:               /* experimental */
		return 1;
	default:
		return 0;
	}
}

static __always_inline int is_v4_mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int address_filter_enabled(void)
{
	__u32 index = QUIXD_CFG_ADDR_FILTER;
	__u32 *enabled = bpf_map_lookup_elem(&config, &index);

	return enabled && *enabled;
}

static __always_inline __u32 max_frame(void)
{
	__u32 index = QUIXD_CFG_MAX_FRAME;
	__u32 *max = bpf_map_lookup_elem(&config, &index);

	return max ? *max : 0;
}

/* The packet is ours: hand it to the queue's AF_XDP socket if there is one. */
static __always_inline int steer(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	__u32 max = max_frame();
	long verdict;

	/*
	 * A frame the socket cannot hold would be dropped by the kernel after the
	 * redirect; the kernel's own UDP path can take it (and split a GSO
	 * super-packet, which generic XDP sees whole).
	 */
	if (max && ctx->data_end - ctx->data > max)
		return pass(QUIXD_CNT_OVERSIZE);

	if (!bpf_map_lookup_elem(&xsks, &queue))
		return pass(QUIXD_CNT_NO_SOCKET);

	/* Lower bits of flags: the verdict if the slot is empty by now. */
	verdict = bpf_redirect_map(&xsks, queue, XDP_PASS);
	if (verdict != XDP_REDIRECT)
		return pass(QUIXD_CNT_NO_SOCKET);

	count(QUIXD_CNT_REDIRECTED);
	return XDP_REDIRECT;
}

/*
 * Validates the UDP header against the IP payload length and looks the
 * destination port up. Returns -1 if ours, else the verdict already counted.
 */
static __always_inline int check_udp(struct udphdr *udp, void *data_end,
				     __u32 ip_payload_len)
{
	__u16 udp_len, port;

	if ((void *)(udp + 1) > data_end)
		return pass(QUIXD_CNT_MALFORMED);

	udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || udp_len > ip_payload_len)
		return pass(QUIXD_CNT_MALFORMED);

	port = bpf_ntohs(udp->dest);
	if (!bpf_map_lookup_elem(&ports, &port))
		return pass(QUIXD_CNT_NOT_OURS);

	return -1;
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, struct iphdr *ip,
				       void *data_end)
{
	__u32 header_len, total_len;
	int verdict;

	if ((void *)(ip + 1) > data_end)
		return pass(QUIXD_CNT_MALFORMED);
	if (ip->version != 4)
		return pass(QUIXD_CNT_MALFORMED);

	header_len = ip->ihl * 4; /* options allowed */
	if (header_len < sizeof(*ip))
		return pass(QUIXD_CNT_MALFORMED);

	/* The frame may carry Ethernet padding after the datagram: >= is fine. */
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len < header_len || (void *)ip + total_len > data_end)
		return pass(QUIXD_CNT_MALFORMED);

	if (ip->frag_off & bpf_htons(QUIXD_IP_MF | QUIXD_IP_OFFSET))
		return pass(QUIXD_CNT_FRAGMENT);

	if (ip->protocol != IPPROTO_UDP)
		return pass(QUIXD_CNT_NOT_OURS);

	verdict = check_udp((void *)ip + header_len, data_end,
			    total_len - header_len);
	if (verdict >= 0)
		return verdict;

	if (address_filter_enabled()) {
		struct quixd_addr key = {};

		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->daddr, 4);
		if (!bpf_map_lookup_elem(&addrs, &key))
			return pass(QUIXD_CNT_NOT_OURS);
	}

	return steer(ctx);
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, struct ipv6hdr *ip6,
				       void *data_end)
{
	__u32 payload_len;
	int verdict;

	if ((void *)(ip6 + 1) > data_end)
		return pass(QUIXD_CNT_MALFORMED);
	if (ip6->version != 6)
		return pass(QUIXD_CNT_MALFORMED);

	payload_len = bpf_ntohs(ip6->payload_len);
	if ((void *)(ip6 + 1) + payload_len > data_end)
		return pass(QUIXD_CNT_MALFORMED);

	/* Only UDP directly after the fixed header is ours. */
	if (ip6->nexthdr != IPPROTO_UDP) {
		if (is_ipv6_ext_header(ip6->nexthdr))
			return pass(QUIXD_CNT_IPV6_EXT);
		return pass(QUIXD_CNT_NOT_OURS);
	}

	verdict = check_udp((void *)(ip6 + 1), data_end, payload_len);
	if (verdict >= 0)
		return verdict;

	/*
	 * IPv4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2); the
	 * address filter keys IPv4 addresses that way, so such a destination would
	 * pass for the IPv4 address it embeds. The kernel decides what they are.
	 */
	if (is_v4_mapped(&ip6->saddr) || is_v4_mapped(&ip6->daddr))
		return pass(QUIXD_CNT_NOT_OURS);

	if (address_filter_enabled()) {
		struct quixd_addr key;

		__builtin_memcpy(&key, &ip6->daddr, sizeof(key));
		if (!bpf_map_lookup_elem(&addrs, &key))
			return pass(QUIXD_CNT_NOT_OURS);
	}

	return steer(ctx);
}

SEC("xdp")
int quixd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return pass(QUIXD_CNT_MALFORMED);
	proto = eth->h_proto;
	l3 = eth + 1;

	/* At most one 802.1Q or 802.1ad tag. */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct quixd_vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return pass(QUIXD_CNT_MALFORMED);
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, l3, data_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(ctx, l3, data_end);
	/* ARP, a second VLAN tag, anything else. */
	return pass(QUIXD_CNT_NOT_OURS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
