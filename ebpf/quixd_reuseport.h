/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * quixd SO_REUSEPORT steering program: the contract between
 * ebpf/quixd_reuseport.c and its loader (userspace/src/datapath/steer.rs).
 *
 * Program: SEC("sk_reuseport"), function name "quixd_reuseport".
 *
 * Maps:
 *   "workers"   BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, key __u32 worker index,
 *               value the worker's socket fd (on update), one map per
 *               reuseport group (load the object once per served address).
 *   "config"    BPF_MAP_TYPE_ARRAY, key __u32 QUIXD_RP_CFG_*, value __u32.
 *   "counters"  BPF_MAP_TYPE_PERCPU_ARRAY, key __u32 QUIXD_RP_CNT_*, value
 *               __u64 packets per CPU.
 *
 * Every packet counts once: STEERED, or one reason it was left to the
 * kernel's hash.
 */
#ifndef QUIXD_REUSEPORT_H
#define QUIXD_REUSEPORT_H

#define QUIXD_RP_MAX_WORKERS 256

/* The connection ID layout of userspace/src/driver/cid.rs, set by the loader:
 * the first octet (config rotation 0, length of the rest) and the offset of
 * the worker's index in the connection ID (1 + the host id's length). */
#define QUIXD_RP_CFG_FIRST_OCTET 0
#define QUIXD_RP_CFG_WORKER_OFFSET 1
#define QUIXD_RP_CFG_MAX 2

/* 1 + the longest host id (server.server_id, 8 bytes); 1 + this + 1 is the
 * bytes read, a power of two so that an index can be masked into range. */
#define QUIXD_RP_MAX_WORKER_OFFSET 14

#define QUIXD_RP_CNT_STEERED 0      /* sent to the worker its DCID names */
#define QUIXD_RP_CNT_LONG_HEADER 1  /* long header: hashed */
#define QUIXD_RP_CNT_SHORT_PACKET 2 /* too short to hold a DCID: hashed */
#define QUIXD_RP_CNT_FOREIGN_CID 3  /* DCID not of our layout: hashed */
#define QUIXD_RP_CNT_NO_WORKER 4    /* the named worker has no socket: hashed */
#define QUIXD_RP_CNT_MAX 5

#endif /* QUIXD_REUSEPORT_H */
