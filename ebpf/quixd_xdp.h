/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * quixd XDP steering program: the contract between ebpf/quixd_xdp.c and the
 * userspace loader (userspace/src/datapath/xdp/program.rs). Keep both in sync;
 * ebpf/README.md repeats this in prose.
 *
 * Program: SEC("xdp"), function name "quixd_xdp".
 *
 * Maps (BTF-defined, names as seen by the loader and bpftool):
 *
 *   "xsks"      BPF_MAP_TYPE_XSKMAP, key __u32 rx queue index, value __u32
 *               AF_XDP socket fd (on update). max_entries QUIXD_MAX_QUEUES
 *               (the loader may override it).
 *   "ports"     BPF_MAP_TYPE_HASH, key __u16 UDP destination port in HOST
 *               byte order (the program converts with bpf_ntohs), value __u8
 *               (reserved, write 1). max_entries QUIXD_MAX_PORTS.
 *   "addrs"     BPF_MAP_TYPE_HASH, key struct quixd_addr (16 bytes, the
 *               destination address in network byte order; IPv4 stored as
 *               IPv4-mapped IPv6 ::ffff:a.b.c.d), value __u8 (reserved, write
 *               1). Consulted only when config[QUIXD_CFG_ADDR_FILTER] != 0.
 *               max_entries QUIXD_MAX_ADDRS.
 *   "config"    BPF_MAP_TYPE_ARRAY, key __u32 index (QUIXD_CFG_*), value
 *               __u32. max_entries QUIXD_CFG_MAX.
 *   "counters"  BPF_MAP_TYPE_PERCPU_ARRAY, key __u32 index (QUIXD_CNT_*),
 *               value __u64 packets per CPU (sum over CPUs for totals).
 *               max_entries QUIXD_CNT_MAX.
 *
 * Verdicts: XDP_REDIRECT into "xsks" or XDP_PASS. Never XDP_DROP.
 *
 * Every packet increments exactly one of REDIRECTED or PASSED, and every
 * passed packet increments exactly one reason counter:
 *   PASSED == NOT_OURS + MALFORMED + NO_SOCKET + FRAGMENT + IPV6_EXT
 *             + OVERSIZE
 */
#ifndef QUIXD_XDP_H
#define QUIXD_XDP_H

#include <linux/types.h>

#define QUIXD_MAX_QUEUES 64
#define QUIXD_MAX_PORTS 64
#define QUIXD_MAX_ADDRS 64

/* "config" indices (value __u32). */
#define QUIXD_CFG_ADDR_FILTER 0 /* nonzero: destination must be in "addrs" */
#define QUIXD_CFG_MAX_FRAME 1   /* nonzero: the largest frame (bytes from the
                                 * Ethernet header) an AF_XDP socket takes;
                                 * longer ones pass to the kernel */
#define QUIXD_CFG_MAX 2

/* "counters" indices (value __u64 per CPU). */
#define QUIXD_CNT_REDIRECTED 0 /* XDP_REDIRECT returned into an AF_XDP socket */
#define QUIXD_CNT_PASSED 1     /* total XDP_PASS, any reason */
#define QUIXD_CNT_NOT_OURS 2   /* not IPv4/IPv6 UDP to one of our ports (and
                                * addresses, if filtered); includes ARP, TCP,
                                * ICMP, non-extension IPv6 next headers and
                                * frames with two or more VLAN tags */
#define QUIXD_CNT_MALFORMED 3  /* truncated Ethernet/VLAN/IP/UDP header, bad
                                * IP version or IHL, IP total/payload length
                                * beyond the frame, UDP length < 8 or beyond
                                * the IP payload */
#define QUIXD_CNT_NO_SOCKET 4  /* ours, but no AF_XDP socket in "xsks" for
                                * ctx->rx_queue_index */
#define QUIXD_CNT_FRAGMENT 5   /* IPv4 fragment (MF set or offset != 0),
                                * counted before the port is looked at:
                                * non-first fragments carry no UDP header */
#define QUIXD_CNT_IPV6_EXT 6   /* IPv6 whose next header is an extension
                                * header (0, 43, 44, 50, 51, 60, 135, 139,
                                * 140, 253, 254), any port */
#define QUIXD_CNT_OVERSIZE 7   /* ours, but longer than config[MAX_FRAME]:
                                * in SKB mode a GSO/GRO super-packet (e.g.
                                * from a veth peer with UDP segmentation);
                                * the kernel segments it for the socket that
                                * holds the port */
#define QUIXD_CNT_MAX 8

/* Key of "addrs". */
struct quixd_addr {
	__u8 addr[16];
};

#endif /* QUIXD_XDP_H */
