/* SPDX-License-Identifier: MIT */
/*
 * Private to the ktls-migrate bench (tools/cmd_bench.c and tools/bench_*.c):
 * the matrix as data, one row's results, and the calls between the files.
 *
 *   cmd_bench.c     options, the mode and cipher tables, the main loop
 *   bench_data.c    the random data (a memfd) and the receiver's checksum
 *   bench_ends.c    one end of a transfer, run in a forked child
 *   bench_run.c     the parent's side of one measured transfer; the ceiling
 *   bench_report.c  the host description, statistics, CSV and Markdown
 *
 * Like every tool the bench sees only ktm.h of the library; the OpenSSL
 * peer and the raw sends on a kernel-TLS session fd are bench code.
 */
#ifndef KTM_BENCH_H
#define KTM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <openssl/types.h>

#include "tool.h"

#define BENCH_MAX_CH 16
#define BENCH_MAX_RUNS 25
#define BENCH_TUNNEL_CHUNK 65536u
#define GIB (1024.0 * 1024.0 * 1024.0)

/* ---- the matrix as data (tables in cmd_bench.c) ---- */

enum bench_xport {
	XP_TCP,		/* plaintext TCP */
	XP_TLS_USER,	/* ktm session, --ktls=off: OpenSSL in userspace */
	XP_KTLS,	/* ktm session, --ktls=require: kernel TLS */
	XP_OPENSSL,	/* raw OpenSSL with SSL_OP_ENABLE_KTLS (a peer) */
	XP_TUNNEL,	/* libvirt-style tunnel over a userspace ktm session */
};

enum bench_send {
	SEND_WRITE, SEND_SENDFILE, SEND_SPLICE, SEND_URING,
	SEND_SESSION, SEND_SSL, SEND_TUNNEL,
};

struct bench_mode {
	const char *name;
	enum bench_xport xport;
	enum bench_send send;
	bool rx_no_pad;
	const char *what;
	bool uring_write;	/* SEND_URING as linked WRITEs, as on kTLS */
};

#define BENCH_NMODES 16
extern const struct bench_mode bench_modes[];

struct bench_cipher {
	const char *name;	/* command line and CSV, as --cipher spells it */
	const char *evp;	/* openssl speed -evp */
	enum ktm_cipher id;
	const char *suite;	/* TLS 1.3 suite for the raw OpenSSL peer */
};

#define BENCH_NCIPHERS 3
extern const struct bench_cipher bench_ciphers[];

struct bench_opts {
	bool mode_on[BENCH_NMODES];
	bool cipher_on[BENCH_NCIPHERS];
	int channels[BENCH_MAX_CH];
	int n_channels;
	uint64_t size;
	size_t chunk;
	int runs;
	unsigned int timeout_s;
	unsigned int budget_s;		/* 0: none */
	const char *creds;
	const char *csv, *md;
	bool functional, ceiling, quiet, smoke;
};

enum row_state { ROW_TODO, ROW_OK, ROW_NA, ROW_FAIL };

struct bench_row {
	const struct bench_mode *mode;
	const struct bench_cipher *cipher;	/* NULL: plaintext */
	int channels;
	enum row_state state;
	int done;				/* runs measured */
	double mbps[BENCH_MAX_RUNS], send_cpu[BENCH_MAX_RUNS],
	       recv_cpu[BENCH_MAX_RUNS], host_cpu[BENCH_MAX_RUNS];
	double other_s, wall_s;		/* summed over runs, see busy_pct */
	char tx_path[48], rx_path[48];
	char note[320];
};

/* The data every row sends, shared with the forked ends. */
struct bench_data {
	int memfd;
	uint8_t *map;
	uint64_t size;
	/* expected checksum of channel i when split n ways: sums[n][i] */
	uint64_t sums[BENCH_MAX_CH + 1][BENCH_MAX_CH];
	bool have_sums[BENCH_MAX_CH + 1];
	double sum_gbps;	/* checksum speed, one core */
};

/* What the report says about the host (bench_report.c fills it). */
struct bench_env {
	char host[65], kernel[65], cpu[128], date[40], ossl[64];
	int ncpu;
	enum ktm_support ktls;
	char ktls_reason[256];
	bool cipher_ktls[BENCH_NCIPHERS];
	char cipher_reason[BENCH_NCIPHERS][200];
	enum ktm_support uring;
	char uring_reason[200];
	double load0, load1;
	double ceiling[BENCH_NCIPHERS][BENCH_MAX_RUNS];
	int n_ceiling[BENCH_NCIPHERS];
	double elapsed;
	double sum_gbps;
	int runs_done;
};

/* ---- cmd_bench.c: small helpers ---- */

/* Copy and cut to fit: the phrases here are for reports, not keys. */
void bench_copy_str(char *dst, size_t len, const char *src);

/* ---- bench_data.c ---- */

/* Fill @d with @size random bytes in a fresh memfd, mapped shared; false
 * after printing why.  bench_data_free() releases it. */
bool bench_data_make(struct bench_data *d, uint64_t size);
void bench_data_free(struct bench_data *d);
/* Channel @i of @n: a page-aligned share, the last one takes the rest. */
void bench_chan_range(uint64_t size, int n, int i, uint64_t *off,
		      uint64_t *len);
/* Compute (once) the expected checksum of each channel when split @n ways. */
void bench_data_sums(struct bench_data *d, int n);

/* The receiver's streaming checksum: 4 lanes of xxh64-style rounds. */
struct bench_sum {
	uint64_t v[4];
	uint64_t total;
	uint8_t tail[32];
	size_t n;
};

void bench_sum_init(struct bench_sum *s);
void bench_sum_update(struct bench_sum *s, const void *buf, size_t len);
uint64_t bench_sum_final(const struct bench_sum *s);

/* ---- bench_ends.c: one end of a transfer, in a forked child ---- */

struct bench_end;

struct bench_chan {
	struct bench_end *e;
	int idx;
	uint64_t off, len;
	int fd;				/* plain TCP and OpenSSL; else borrowed */
	struct ktm_session *s;
	SSL *ssl;
	bool ok;
	uint64_t bytes;
	char err[240];
};

/* The parent fills o, row, d, server, listen_fd and port before forking;
 * the rest belongs to the child. */
struct bench_end {
	const struct bench_opts *o;
	const struct bench_row *row;
	const struct bench_data *d;
	bool server;
	int listen_fd;
	char port[16];
	struct ktm_config *cfg;
	SSL_CTX *ssl_ctx;
	struct bench_chan ch[BENCH_MAX_CH];
};

/* What a child tells the parent: 'R' ready, 'D' done, 'E' failed. */
struct bench_msg {
	char phase;
	bool ok;
	double t0, t1, cpu;
	uint64_t bytes;
	char path[48];
	char note[160];
	char err[200];
};

/*
 * The life of one forked end: set up every channel (connect or accept,
 * handshake, kernel-TLS switch), report 'R' on @res, wait for a byte on
 * @ctl, move the data, report 'D' (or 'E' on any failure), then keep the
 * connections open until @ctl closes.  Returns the child's exit status.
 */
int bench_end_main(struct bench_end *e, int ctl, int res);

/* ---- bench_run.c: the parent ---- */

/* One measured transfer of @row: fork both ends, start them together,
 * record the run in @row; false with a phrase in @err. */
bool bench_run_once(const struct bench_opts *o, struct bench_data *d,
		    struct bench_row *row, char *err, size_t errlen);
/* openssl speed -evp CIPHER on 16 KiB buffers for one second: bytes/s,
 * or -1. */
double bench_ceiling_once(const struct bench_cipher *c);

/* ---- bench_report.c ---- */

/* Describe the host: kernel, CPU, OpenSSL, load, and what the probe says
 * kernel TLS and io_uring can do here. */
void bench_env_collect(struct bench_env *v);
double bench_loadavg(void);
/* Write --csv and the Markdown report (--md or standard output); false
 * after printing why. */
bool bench_write_outputs(const struct bench_opts *o, const struct bench_env *v,
			 const struct bench_row *rows, int n);

#endif /* KTM_BENCH_H */
