// SPDX-License-Identifier: MIT
/*
 * ktls-migrate bench: the comparison matrix.
 *
 * One stream of random bytes (a memfd filled once) crosses loopback per row,
 * split evenly over 1..N channels.  The two ends are two forked processes,
 * one thread per channel each, so getrusage(RUSAGE_SELF) gives each end's
 * CPU time (io_uring workers included); the parent only starts them at the
 * same moment, times the transfer and reads /proc/stat.  The receiver
 * checksums every byte and compares with the checksum of its range.
 *
 * Rows are data (modes[] x ciphers[] x channels); a mode names a transport
 * (plain TCP, a ktm session in userspace or kernel TLS, raw OpenSSL, the
 * libvirt-style tunnel) and a way to send.  Runs are interleaved: run 1 of
 * every row, then run 2, ...
 *
 * Tools see only ktm.h; the OpenSSL peer and the raw sends on a kernel-TLS
 * session fd are bench code, on purpose.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <liburing.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tool.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define BENCH_MAX_CH 16
#define BENCH_MAX_RUNS 25
#define BENCH_TUNNEL_CHUNK 65536u
#define GIB (1024.0 * 1024.0 * 1024.0)

/* ---- the matrix as data ---------------------------------------------------- */

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
};

static const struct bench_mode modes[] = {
	{ "tcp-write", XP_TCP, SEND_WRITE, false,
	  "plaintext TCP, write(2) from the mapped memfd" },
	{ "tcp-sendfile", XP_TCP, SEND_SENDFILE, false,
	  "plaintext TCP, sendfile(2) from the memfd" },
	{ "tcp-splice", XP_TCP, SEND_SPLICE, false,
	  "plaintext TCP, splice(2) memfd -> pipe -> socket" },
	{ "tcp-uring", XP_TCP, SEND_URING, false,
	  "plaintext TCP, io_uring SEND (liburing), one in flight" },
	{ "tls-user", XP_TLS_USER, SEND_SESSION, false,
	  "userspace-TLS fallback: ktm session with --ktls=off "
	  "(ktm_session_send/recv, OpenSSL)" },
	{ "ktls-write", XP_KTLS, SEND_WRITE, false,
	  "kernel TLS: write(2) on the ktm session fd" },
	{ "ktls-sendfile", XP_KTLS, SEND_SENDFILE, false,
	  "kernel TLS: sendfile(2) on the ktm session fd" },
	{ "ktls-splice", XP_KTLS, SEND_SPLICE, false,
	  "kernel TLS: splice(2) onto the ktm session fd" },
	{ "ktls-uring", XP_KTLS, SEND_URING, false,
	  "kernel TLS: io_uring SEND on the ktm session fd" },
	{ "ktls-write-nopad", XP_KTLS, SEND_WRITE, true,
	  "ktls-write, receiver with TLS_RX_EXPECT_NO_PAD" },
	{ "ktls-sendfile-nopad", XP_KTLS, SEND_SENDFILE, true,
	  "ktls-sendfile, receiver with TLS_RX_EXPECT_NO_PAD" },
	{ "ktls-splice-nopad", XP_KTLS, SEND_SPLICE, true,
	  "ktls-splice, receiver with TLS_RX_EXPECT_NO_PAD" },
	{ "ktls-uring-nopad", XP_KTLS, SEND_URING, true,
	  "ktls-uring, receiver with TLS_RX_EXPECT_NO_PAD" },
	{ "openssl-ktls", XP_OPENSSL, SEND_SSL, false,
	  "peer: OpenSSL's own kTLS (SSL_OP_ENABLE_KTLS + SSL_sendfile; "
	  "SSL_write when OpenSSL did not enable kTLS), receiver SSL_read" },
	{ "tunnel", XP_TUNNEL, SEND_TUNNEL, false,
	  "2009 baseline: libvirt-style tunnel, 64 KiB chunks each waiting "
	  "for an empty reply, over the userspace-TLS session (one stream, "
	  "TCP_NODELAY)" },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

struct bench_cipher {
	const char *name;	/* command line, CSV, openssl speed */
	enum ktm_cipher id;
	const char *suite;	/* TLS 1.3 suite for the raw OpenSSL peer */
};

static const struct bench_cipher ciphers[] = {
	{ "aes-128-gcm", KTM_CIPHER_AES_GCM_128, "TLS_AES_128_GCM_SHA256" },
	{ "aes-256-gcm", KTM_CIPHER_AES_GCM_256, "TLS_AES_256_GCM_SHA384" },
	{ "chacha20-poly1305", KTM_CIPHER_CHACHA20_POLY1305,
	  "TLS_CHACHA20_POLY1305_SHA256" },
};
#define NCIPHERS (sizeof(ciphers) / sizeof(ciphers[0]))

struct bench_opts {
	bool mode_on[NMODES];
	bool cipher_on[NCIPHERS];
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

/* ---- checksum: 4 lanes of xxh64-style rounds, streaming ------------------- */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL

struct bench_sum {
	uint64_t v[4];
	uint64_t total;
	uint8_t tail[32];
	size_t n;
};

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t sum_round(uint64_t acc, uint64_t in)
{
	acc += in * P2;
	return rotl64(acc, 31) * P1;
}

static void sum_init(struct bench_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = P1 + P2;
	s->v[1] = P2;
	s->v[3] = -P1;
}

static void sum_blocks(struct bench_sum *s, const uint8_t *p, size_t nblk)
{
	uint64_t a = s->v[0], b = s->v[1], c = s->v[2], d = s->v[3], w[4];

	for (; nblk; nblk--, p += 32) {
		memcpy(w, p, 32);
		a = sum_round(a, w[0]);
		b = sum_round(b, w[1]);
		c = sum_round(c, w[2]);
		d = sum_round(d, w[3]);
	}
	s->v[0] = a, s->v[1] = b, s->v[2] = c, s->v[3] = d;
}

static void sum_update(struct bench_sum *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	s->total += len;
	if (s->n) {
		size_t take = 32 - s->n < len ? 32 - s->n : len;

		memcpy(s->tail + s->n, p, take);
		s->n += take, p += take, len -= take;
		if (s->n < 32)
			return;
		sum_blocks(s, s->tail, 1);
		s->n = 0;
	}
	sum_blocks(s, p, len / 32);
	p += len & ~(size_t)31;
	s->n = len & 31;
	memcpy(s->tail, p, s->n);
}

static uint64_t sum_final(const struct bench_sum *s)
{
	uint64_t h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) +
		     rotl64(s->v[2], 12) + rotl64(s->v[3], 18) + s->total;
	size_t i;

	for (i = 0; i < s->n; i++)
		h = rotl64(h ^ (s->tail[i] * P3), 11) * P1;
	h ^= h >> 33, h *= P2, h ^= h >> 29, h *= P3, h ^= h >> 32;
	return h;
}

/* ---- small helpers ---------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Busy CPU seconds of the whole host (all CPUs) from /proc/stat, or -1. */
static double host_cpu_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
		   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 8)
		return -1;
	/* user nice system [idle iowait] irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
	       (double)sysconf(_SC_CLK_TCK);
}

static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10, end++; break;
	case 'm': case 'M': v <<= 20, end++; break;
	case 'g': case 'G': v <<= 30, end++; break;
	default: break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end)
		return false;
	*out = v;
	return true;
}

/* Copy and cut to fit: the phrases here are for reports, not keys. */
static void copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		copy_str(buf, len, "unknown OpenSSL error");
	ERR_clear_error();
}

/* ---- data --------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static bool data_make(struct bench_data *d, uint64_t size)
{
	uint64_t s[4], seed, t, i;

	memset(d, 0, sizeof(*d));
	d->size = size;
	d->memfd = memfd_create("ktm-bench", MFD_CLOEXEC);
	if (d->memfd < 0 || ftruncate(d->memfd, (off_t)size)) {
		fprintf(stderr, "%s: cannot make a %" PRIu64 "-byte memfd: %s\n",
			tool_prog, size, strerror(errno));
		return false;
	}
	d->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      d->memfd, 0);
	if (d->map == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map the memfd: %s\n", tool_prog,
			strerror(errno));
		return false;
	}
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)now_s() ^ (uint64_t)getpid();
	for (i = 0; i < 4; i++)
		s[i] = splitmix(&seed);
	/* xoshiro256**: incompressible, fast enough to fill 1 GiB in ~0.2 s */
	for (i = 0; i + 8 <= size; i += 8) {
		uint64_t r = rotl64(s[1] * 5, 7) * 9;

		memcpy(d->map + i, &r, 8);
		t = s[1] << 17;
		s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
		s[2] ^= t, s[3] = rotl64(s[3], 45);
	}
	for (; i < size; i++)
		d->map[i] = (uint8_t)splitmix(&seed);
	return true;
}

/* Channel @i of @n: a page-aligned share, the last one takes the rest. */
static void chan_range(uint64_t size, int n, int i, uint64_t *off,
		       uint64_t *len)
{
	uint64_t per = (size / (uint64_t)n) & ~(uint64_t)4095;

	*off = per * (uint64_t)i;
	*len = i == n - 1 ? size - *off : per;
}

static void data_sums(struct bench_data *d, int n)
{
	struct bench_sum s;
	uint64_t off, len;
	double t0 = now_s();
	int i;

	if (d->have_sums[n])
		return;
	for (i = 0; i < n; i++) {
		chan_range(d->size, n, i, &off, &len);
		sum_init(&s);
		sum_update(&s, d->map + off, len);
		d->sums[n][i] = sum_final(&s);
	}
	if (!d->sum_gbps)
		d->sum_gbps = (double)d->size / 1e9 / (now_s() - t0);
	d->have_sums[n] = true;
}

/* ---- one end of a row (runs in a forked child) ------------------------------- */

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

static bool chan_fail(struct bench_chan *c, const char *what, int err)
{
	snprintf(c->err, sizeof(c->err), "channel %d: %s: %s", c->idx, what,
		 strerror(err));
	c->ok = false;
	return false;
}

static bool chan_ktm_fail(struct bench_chan *c, const char *what,
			  struct ktm_error *err)
{
	snprintf(c->err, sizeof(c->err), "channel %d: %s: %s", c->idx, what,
		 err ? ktm_error_message(err) : "unknown error");
	ktm_error_free(err);
	c->ok = false;
	return false;
}

static bool chan_ssl_fail(struct bench_chan *c, const char *what)
{
	char why[200];

	ossl_reason(why, sizeof(why));
	snprintf(c->err, sizeof(c->err), "channel %d: %s: %s", c->idx, what,
		 why);
	c->ok = false;
	return false;
}

static SSL_CTX *ossl_ctx_new(const struct bench_end *e, char *err,
			     size_t errlen)
{
	const char *who = e->server ? "server" : "client";
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], why[200];
	SSL_CTX *ctx;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", e->o->creds);
	snprintf(cert, sizeof(cert), "%s/%s-cert.pem", e->o->creds, who);
	snprintf(key, sizeof(key), "%s/%s-key.pem", e->o->creds, who);
	ctx = SSL_CTX_new(e->server ? TLS_server_method() : TLS_client_method());
	if (!ctx ||
	    !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, e->row->cipher->suite) ||
	    !SSL_CTX_load_verify_locations(ctx, ca, NULL) ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    !SSL_CTX_check_private_key(ctx)) {
		ossl_reason(why, sizeof(why));
		snprintf(err, errlen, "OpenSSL peer setup with %s: %s",
			 e->o->creds, why);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS | SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
			   (e->server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
			   NULL);
	return ctx;
}

static struct ktm_config *ktm_cfg_new(const struct bench_end *e, char *err,
				      size_t errlen)
{
	enum ktm_cipher c = e->row->cipher->id;
	struct ktm_error *ke = NULL;
	struct ktm_config *cfg;

	cfg = ktm_config_new(e->server ? KTM_ENDPOINT_SERVER :
			     KTM_ENDPOINT_CLIENT, &ke);
	if (!cfg ||
	    !ktm_config_set_creds_dir(cfg, e->o->creds, &ke) ||
	    !ktm_config_set_versions(cfg, KTM_TLS_1_3, KTM_TLS_1_3, &ke) ||
	    !ktm_config_set_ciphers(cfg, &c, 1, &ke)) {
		snprintf(err, errlen, "session setup: %s",
			 ke ? ktm_error_message(ke) : "out of memory");
		ktm_error_free(ke);
		ktm_config_free(cfg);
		return NULL;
	}
	ktm_config_set_ktls(cfg, e->row->mode->xport == XP_KTLS ?
			    KTM_KTLS_REQUIRE : KTM_KTLS_OFF);
	return cfg;
}

static int tcp_connect(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)atoi(port)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		int err = errno;

		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* Connect or accept channel @c and run its handshake (before the clock). */
static bool chan_open(struct bench_end *e, struct bench_chan *c)
{
	struct ktm_error *ke = NULL;
	int ret, one = 1;

	c->fd = -1;
	c->ok = true;
	switch (e->row->mode->xport) {
	case XP_TCP:
		c->fd = e->server ? accept4(e->listen_fd, NULL, NULL, SOCK_CLOEXEC)
				  : tcp_connect(e->port);
		if (c->fd < 0)
			return chan_fail(c, e->server ? "accept" : "connect",
					 errno);
		return true;
	case XP_TLS_USER:
	case XP_KTLS:
	case XP_TUNNEL:
		c->s = e->server ? ktm_session_accept(e->cfg, e->listen_fd, &ke)
				 : ktm_session_connect(e->cfg, "127.0.0.1",
						       e->port, &ke);
		if (!c->s)
			return chan_ktm_fail(c, e->server ? "accept" : "connect",
					     ke);
		/* Request/reply traffic: without this every frame waits for
		 * a delayed ACK (40 ms), which would measure Nagle instead. */
		if (e->row->mode->xport == XP_TUNNEL)
			setsockopt(ktm_session_fd(c->s), IPPROTO_TCP,
				   TCP_NODELAY, &one, sizeof(one));
		return true;
	case XP_OPENSSL:
		c->fd = e->server ? accept4(e->listen_fd, NULL, NULL, SOCK_CLOEXEC)
				  : tcp_connect(e->port);
		if (c->fd < 0)
			return chan_fail(c, e->server ? "accept" : "connect",
					 errno);
		c->ssl = SSL_new(e->ssl_ctx);
		if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
			return chan_ssl_fail(c, "SSL_new");
		if (!e->server &&
		    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
						   "127.0.0.1"))
			return chan_ssl_fail(c, "expected peer address");
		ret = e->server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
		if (ret != 1)
			return chan_ssl_fail(c, "OpenSSL handshake");
		return true;
	}
	return false;
}

static void chan_close(struct bench_chan *c)
{
	SSL_free(c->ssl);
	ktm_session_free(c->s);
	if (c->fd >= 0)
		close(c->fd);
}

/* The fd raw sends go to: the session's own on the kernel path. */
static int chan_fd(const struct bench_chan *c)
{
	return c->s ? ktm_session_fd(c->s) : c->fd;
}

/* ---- sending ------------------------------------------------------------------ */

static bool send_write(struct bench_chan *c, const uint8_t *p, uint64_t len,
		       size_t chunk)
{
	int fd = chan_fd(c);

	while (len) {
		ssize_t n = write(fd, p, len < chunk ? len : chunk);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return chan_fail(c, "write", errno);
		}
		p += n, len -= (uint64_t)n, c->bytes += (uint64_t)n;
	}
	return true;
}

static bool send_sendfile(struct bench_chan *c, uint64_t len, size_t chunk)
{
	off_t off = (off_t)c->off;
	int fd = chan_fd(c);

	while (len) {
		ssize_t n = sendfile(fd, c->e->d->memfd, &off,
				     len < chunk ? len : chunk);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return chan_fail(c, "sendfile", n ? errno : EPIPE);
		}
		len -= (uint64_t)n, c->bytes += (uint64_t)n;
	}
	return true;
}

static bool send_splice(struct bench_chan *c, uint64_t len, size_t chunk)
{
	loff_t off = (loff_t)c->off;
	int fd = chan_fd(c), p[2];
	bool ok = true;

	if (pipe2(p, O_CLOEXEC))
		return chan_fail(c, "pipe", errno);
	/* Best effort: a bigger pipe means fewer splice calls. */
	fcntl(p[1], F_SETPIPE_SZ, (int)chunk);
	while (ok && len) {
		ssize_t in = splice(c->e->d->memfd, &off, p[1], NULL,
				    len < chunk ? len : chunk, SPLICE_F_MOVE);

		if (in <= 0) {
			if (in < 0 && errno == EINTR)
				continue;
			ok = chan_fail(c, "splice from the memfd",
				       in ? errno : EIO);
			break;
		}
		len -= (uint64_t)in;
		while (in > 0) {
			ssize_t out = splice(p[0], NULL, fd, NULL, (size_t)in,
					     SPLICE_F_MOVE |
					     (len ? SPLICE_F_MORE : 0));

			if (out <= 0) {
				if (out < 0 && errno == EINTR)
					continue;
				ok = chan_fail(c, "splice to the socket",
					       out ? errno : EPIPE);
				break;
			}
			in -= out, c->bytes += (uint64_t)out;
		}
	}
	close(p[0]);
	close(p[1]);
	return ok;
}

/* One SEND in flight: no MSG_WAITALL (kernel TLS rejects unknown flags), so
 * a short send is resubmitted for the rest; linking would reorder data. */
static bool send_uring(struct bench_chan *c, const uint8_t *p, uint64_t len,
		       size_t chunk)
{
	struct io_uring ring;
	int fd = chan_fd(c), ret;
	bool ok = true;

	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0)
		return chan_fail(c, "io_uring_queue_init", -ret);
	while (len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		struct io_uring_cqe *cqe;

		io_uring_prep_send(sqe, fd, p, len < chunk ? len : chunk, 0);
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret >= 0)
			ret = io_uring_wait_cqe(&ring, &cqe);
		if (ret < 0) {
			if (ret == -EINTR)
				continue;
			ok = chan_fail(c, "io_uring_submit", -ret);
			break;
		}
		ret = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret <= 0) {
			ok = chan_fail(c, "io_uring SEND", ret ? -ret : EPIPE);
			break;
		}
		p += ret, len -= (uint64_t)ret, c->bytes += (uint64_t)ret;
	}
	io_uring_queue_exit(&ring);
	return ok;
}

static bool send_session(struct bench_chan *c, const uint8_t *p, uint64_t len,
			 size_t chunk)
{
	struct ktm_error *ke = NULL;

	while (len) {
		size_t n = len < chunk ? len : chunk;

		if (!ktm_session_send(c->s, p, n, &ke))
			return chan_ktm_fail(c, "ktm_session_send", ke);
		p += n, len -= n, c->bytes += n;
	}
	return true;
}

static bool session_recv_exact(struct bench_chan *c, void *buf, size_t len,
			       bool eof_ok, bool *eof)
{
	struct ktm_error *ke = NULL;
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = ktm_session_recv(c->s, p + got, len - got, &ke);

		if (n < 0)
			return chan_ktm_fail(c, "ktm_session_recv", ke);
		if (n == 0) {
			if (eof_ok && got == 0) {
				*eof = true;
				return true;
			}
			return chan_fail(c, "tunnel frame cut short", EPIPE);
		}
		got += (size_t)n;
	}
	return true;
}

/* libvirt-style: a frame is a 4-byte length and up to 64 KiB of data; the
 * sender copies it into its message buffer and waits for an empty reply
 * (a frame of length 0) before the next. */
static bool send_tunnel(struct bench_chan *c, const uint8_t *p, uint64_t len)
{
	struct ktm_error *ke = NULL;
	uint8_t *frame = malloc(4 + BENCH_TUNNEL_CHUNK);
	uint32_t reply;
	bool ok = true, eof = false;

	if (!frame)
		return chan_fail(c, "tunnel buffer", ENOMEM);
	while (ok && len) {
		uint32_t n = len < BENCH_TUNNEL_CHUNK ? (uint32_t)len :
			     BENCH_TUNNEL_CHUNK;
		uint32_t hdr = htonl(n);

		memcpy(frame, &hdr, 4);
		memcpy(frame + 4, p, n);
		if (!ktm_session_send(c->s, frame, 4 + (size_t)n, &ke)) {
			ok = chan_ktm_fail(c, "ktm_session_send", ke);
			break;
		}
		ok = session_recv_exact(c, &reply, 4, false, &eof);
		if (ok && reply != 0)
			ok = chan_fail(c, "tunnel reply not empty", EPROTO);
		p += n, len -= n, c->bytes += n;
	}
	free(frame);
	return ok;
}

static bool send_ssl(struct bench_chan *c, const uint8_t *p, uint64_t len,
		     size_t chunk)
{
	bool ktls = BIO_get_ktls_send(SSL_get_wbio(c->ssl));
	off_t off = (off_t)c->off;

	while (len) {
		size_t n = len < chunk ? len : chunk, done = 0;

		if (ktls) {
			ossl_ssize_t r = SSL_sendfile(c->ssl, c->e->d->memfd,
						      off, n, 0);

			if (r <= 0)
				return chan_ssl_fail(c, "SSL_sendfile");
			done = (size_t)r;
		} else if (SSL_write_ex(c->ssl, p, n, &done) != 1) {
			return chan_ssl_fail(c, "SSL_write");
		}
		p += done, off += (off_t)done, len -= done, c->bytes += done;
	}
	return true;
}

static void *send_thread(void *arg)
{
	struct bench_chan *c = arg;
	const struct bench_end *e = c->e;
	const uint8_t *p = e->d->map + c->off;
	size_t chunk = e->o->chunk;
	struct ktm_error *ke = NULL;
	bool ok = false;

	switch (e->row->mode->send) {
	case SEND_WRITE: ok = send_write(c, p, c->len, chunk); break;
	case SEND_SENDFILE: ok = send_sendfile(c, c->len, chunk); break;
	case SEND_SPLICE: ok = send_splice(c, c->len, chunk); break;
	case SEND_URING: ok = send_uring(c, p, c->len, chunk); break;
	case SEND_SESSION: ok = send_session(c, p, c->len, chunk); break;
	case SEND_SSL: ok = send_ssl(c, p, c->len, chunk); break;
	case SEND_TUNNEL: ok = send_tunnel(c, p, c->len); break;
	}
	if (!ok)
		return NULL;
	/* End of stream: FIN for plain TCP, close_notify for TLS. */
	if (c->s) {
		if (!ktm_session_shutdown(c->s, &ke))
			chan_ktm_fail(c, "ktm_session_shutdown", ke);
	} else if (c->ssl) {
		if (SSL_shutdown(c->ssl) < 0)
			chan_ssl_fail(c, "SSL_shutdown");
	} else if (shutdown(c->fd, SHUT_WR)) {
		chan_fail(c, "shutdown", errno);
	}
	return NULL;
}

/* ---- receiving ---------------------------------------------------------------- */

static void *recv_thread(void *arg)
{
	struct bench_chan *c = arg;
	const struct bench_end *e = c->e;
	size_t cap = e->row->mode->xport == XP_TUNNEL ? BENCH_TUNNEL_CHUNK :
		     e->o->chunk;
	struct ktm_error *ke = NULL;
	struct bench_sum sum;
	uint8_t *buf = malloc(cap);
	bool eof = false;

	if (!buf) {
		chan_fail(c, "receive buffer", ENOMEM);
		return NULL;
	}
	sum_init(&sum);
	while (c->ok && !eof) {
		ssize_t n = 0;
		size_t done = 0;
		uint32_t hdr = 0;
		int ret;

		switch (e->row->mode->xport) {
		case XP_TCP:
			n = read(c->fd, buf, cap);
			if (n < 0 && errno != EINTR)
				chan_fail(c, "read", errno);
			eof = n == 0;
			break;
		case XP_TLS_USER:
		case XP_KTLS:
			n = ktm_session_recv(c->s, buf, cap, &ke);
			if (n < 0)
				chan_ktm_fail(c, "ktm_session_recv", ke);
			eof = n == 0;
			break;
		case XP_OPENSSL:
			ret = SSL_read_ex(c->ssl, buf, cap, &done);
			if (ret != 1 && SSL_get_error(c->ssl, ret) ==
					SSL_ERROR_ZERO_RETURN)
				eof = true;
			else if (ret != 1)
				chan_ssl_fail(c, "SSL_read");
			n = (ssize_t)done;
			break;
		case XP_TUNNEL:
			if (!session_recv_exact(c, &hdr, 4, true, &eof) || eof)
				break;
			hdr = ntohl(hdr);
			if (hdr == 0 || hdr > cap) {
				chan_fail(c, "bad tunnel frame length", EPROTO);
				break;
			}
			if (!session_recv_exact(c, buf, hdr, false, &eof))
				break;
			n = (ssize_t)hdr;
			hdr = 0;	/* the empty reply */
			if (!ktm_session_send(c->s, &hdr, 4, &ke))
				chan_ktm_fail(c, "ktm_session_send", ke);
			break;
		}
		if (n > 0) {
			sum_update(&sum, buf, (size_t)n);
			c->bytes += (uint64_t)n;
		}
	}
	free(buf);
	if (!c->ok)
		return NULL;
	if (c->bytes != c->len)
		snprintf(c->err, sizeof(c->err), "channel %d: received %" PRIu64
			 " of %" PRIu64 " bytes", c->idx, c->bytes, c->len),
		c->ok = false;
	else if (sum_final(&sum) != e->d->sums[e->row->channels][c->idx])
		snprintf(c->err, sizeof(c->err), "channel %d: checksum of the "
			 "received data does not match what was sent", c->idx),
		c->ok = false;
	return NULL;
}

/* ---- a child's life --------------------------------------------------------- */

static void msg_send(int fd, const struct bench_msg *m)
{
	ssize_t n;

	do {
		n = write(fd, m, sizeof(*m));
	} while (n < 0 && errno == EINTR);
}

static void end_paths(const struct bench_end *e, struct bench_msg *m)
{
	const struct bench_chan *c = &e->ch[0];
	enum ktm_dir dir = e->server ? KTM_DIR_RX : KTM_DIR_TX;
	bool k;

	switch (e->row->mode->xport) {
	case XP_TCP:
		copy_str(m->path, sizeof(m->path), "plaintext");
		break;
	case XP_TLS_USER:
	case XP_KTLS:
	case XP_TUNNEL:
		copy_str(m->path, sizeof(m->path),
			 ktm_path_name(ktm_session_path(c->s, dir)));
		break;
	case XP_OPENSSL:
		k = e->server ? BIO_get_ktls_recv(SSL_get_rbio(c->ssl))
			      : BIO_get_ktls_send(SSL_get_wbio(c->ssl));
		copy_str(m->path, sizeof(m->path), k ? "kernel (OpenSSL)" :
			 "userspace (OpenSSL)");
		if (!k && !e->server)
			copy_str(m->note, sizeof(m->note),
				 "OpenSSL did not enable kTLS send "
				 "(BIO_get_ktls_send = 0): SSL_write in userspace");
		break;
	}
}

static int end_main(struct bench_end *e, int ctl, int res)
{
	int n = e->row->channels, i;
	pthread_t th[BENCH_MAX_CH];
	struct bench_msg m = { .phase = 'E' };
	bool needs_map = !e->server && e->row->mode->send != SEND_SENDFILE &&
			 e->row->mode->send != SEND_SPLICE;
	char c;

	signal(SIGPIPE, SIG_IGN);
	if (needs_map)
		madvise(e->d->map, e->d->size, MADV_POPULATE_READ);
	if (e->row->mode->xport == XP_OPENSSL)
		e->ssl_ctx = ossl_ctx_new(e, m.err, sizeof(m.err));
	else if (e->row->cipher)
		e->cfg = ktm_cfg_new(e, m.err, sizeof(m.err));
	if (e->row->cipher && !e->ssl_ctx && !e->cfg)
		goto fail;
	for (i = 0; i < n; i++) {
		struct bench_chan *ch = &e->ch[i];

		ch->e = e, ch->idx = i;
		chan_range(e->d->size, n, i, &ch->off, &ch->len);
		if (!chan_open(e, ch)) {
			copy_str(m.err, sizeof(m.err), ch->err);
			goto fail;
		}
	}
	end_paths(e, &m);
	m.phase = 'R';
	msg_send(res, &m);
	if (read(ctl, &c, 1) != 1)
		return 1;

	m.t0 = now_s();
	m.cpu = self_cpu_s();
	for (i = 0; i < n; i++)
		if (pthread_create(&th[i], NULL, e->server ? recv_thread :
				   send_thread, &e->ch[i])) {
			e->ch[i].ok = false;
			snprintf(e->ch[i].err, sizeof(e->ch[i].err),
				 "channel %d: cannot start a thread", i);
			n = i;
			break;
		}
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	m.cpu = self_cpu_s() - m.cpu;
	m.t1 = now_s();
	m.phase = 'D';
	m.ok = true;
	for (i = 0; i < e->row->channels; i++) {
		m.bytes += e->ch[i].bytes;
		if (!e->ch[i].ok && m.ok) {
			m.ok = false;
			copy_str(m.err, sizeof(m.err), e->ch[i].err);
		}
	}
	msg_send(res, &m);
	/* Keep every connection open until the parent has both reports:
	 * closing early could reset data the peer has not read yet. */
	while (read(ctl, &c, 1) > 0)
		;
	for (i = 0; i < e->row->channels; i++)
		chan_close(&e->ch[i]);
	SSL_CTX_free(e->ssl_ctx);
	ktm_config_free(e->cfg);
	return 0;
fail:
	m.phase = 'E';
	msg_send(res, &m);
	return 1;
}

/* ---- the parent: one measured transfer ----------------------------------------- */

struct bench_kid {
	pid_t pid;
	int ctl, res;
	struct bench_msg m;
};

static pid_t kid_start(struct bench_kid *k, struct bench_end *e)
{
	int ctl[2], res[2];

	if (pipe2(ctl, O_CLOEXEC))
		return -1;
	if (pipe2(res, O_CLOEXEC)) {
		close(ctl[0]), close(ctl[1]);
		return -1;
	}
	fflush(NULL);
	k->pid = fork();
	if (k->pid == 0) {
		close(ctl[1]);
		close(res[0]);
		if (!e->server)
			close(e->listen_fd);
		_exit(end_main(e, ctl[0], res[1]));
	}
	close(ctl[0]);
	close(res[1]);
	k->ctl = ctl[1];
	k->res = res[0];
	if (k->pid < 0) {
		close(k->ctl), close(k->res);
		k->ctl = k->res = -1;
	}
	return k->pid;
}

/*
 * Read one report from each end, whichever comes first, so that one end
 * failing (say, the sender cannot connect) is seen at once even while the
 * other waits for it; fail by the deadline or when an end dies.
 */
static bool kids_read(struct bench_kid *kids[2], double deadline, char *err,
		      size_t errlen)
{
	static const char *const who[2] = { "receiver", "sender" };
	size_t got[2] = { 0, 0 };
	int left = 2, i;

	while (left) {
		struct pollfd p[2];
		int np = 0, map[2], r, j;
		double ms = (deadline - now_s()) * 1000;

		for (i = 0; i < 2; i++)
			if (got[i] < sizeof(kids[i]->m)) {
				p[np].fd = kids[i]->res;
				p[np].events = POLLIN;
				map[np++] = i;
			}
		r = poll(p, (nfds_t)np, ms > 0 ? (int)ms + 1 : 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "timed out waiting for the %s",
				 who[map[0]]);
			return false;
		}
		for (j = 0; j < np; j++) {
			struct bench_kid *k;
			ssize_t n;

			if (!p[j].revents)
				continue;
			i = map[j];
			k = kids[i];
			n = read(k->res, (char *)&k->m + got[i],
				 sizeof(k->m) - got[i]);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				snprintf(err, errlen, "the %s died", who[i]);
				return false;
			}
			got[i] += (size_t)n;
			if (got[i] < sizeof(k->m))
				continue;
			left--;
			if (k->m.phase == 'E' || (k->m.phase == 'D' && !k->m.ok)) {
				snprintf(err, errlen, "%s: %s", who[i], k->m.err);
				return false;
			}
		}
	}
	return true;
}

static void kid_end(struct bench_kid *k, bool kill_it)
{
	int st;

	if (k->pid <= 0)
		return;
	if (kill_it)
		kill(k->pid, SIGKILL);
	close(k->ctl);
	close(k->res);
	while (waitpid(k->pid, &st, 0) < 0 && errno == EINTR)
		;
	k->pid = 0;
}

static int listen_loopback(char *port, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, BENCH_MAX_CH * 2) ||
	    getsockname(fd, (struct sockaddr *)&a, &sl)) {
		close(fd);
		return -1;
	}
	snprintf(port, len, "%u", ntohs(a.sin_port));
	return fd;
}

static bool run_once(const struct bench_opts *o, struct bench_data *d,
		     struct bench_row *row, char *err, size_t errlen)
{
	struct bench_end e = { .o = o, .row = row, .d = d };
	struct bench_kid rx = { 0 }, tx = { 0 };
	struct bench_kid *kids[2] = { &rx, &tx };
	double deadline, h0, h1, wall, gib = (double)d->size / GIB;
	bool ok = false;

	data_sums(d, row->channels);
	e.listen_fd = listen_loopback(e.port, sizeof(e.port));
	if (e.listen_fd < 0) {
		snprintf(err, errlen, "cannot listen on loopback: %s",
			 strerror(errno));
		return false;
	}
	e.server = true;
	if (kid_start(&rx, &e) < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(e.listen_fd);
		return false;
	}
	e.server = false;
	if (kid_start(&tx, &e) < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(e.listen_fd);
		kid_end(&rx, true);
		return false;
	}
	close(e.listen_fd);
	deadline = now_s() + o->timeout_s;
	if (!kids_read(kids, deadline, err, errlen))
		goto out;
	copy_str(row->tx_path, sizeof(row->tx_path), tx.m.path);
	copy_str(row->rx_path, sizeof(row->rx_path), rx.m.path);
	if (tx.m.note[0] && !strstr(row->note, tx.m.note))
		copy_str(row->note, sizeof(row->note), tx.m.note);
	h0 = host_cpu_s();
	if (write(rx.ctl, "g", 1) != 1 || write(tx.ctl, "g", 1) != 1) {
		snprintf(err, errlen, "cannot start the ends: %s",
			 strerror(errno));
		goto out;
	}
	if (!kids_read(kids, deadline, err, errlen))
		goto out;
	h1 = host_cpu_s();
	if (rx.m.bytes != d->size) {
		snprintf(err, errlen, "receiver got %" PRIu64 " of %" PRIu64
			 " bytes", rx.m.bytes, d->size);
		goto out;
	}
	wall = rx.m.t1 - tx.m.t0;
	row->mbps[row->done] = (double)d->size / 1e6 / wall;
	row->send_cpu[row->done] = tx.m.cpu / gib;
	row->recv_cpu[row->done] = rx.m.cpu / gib;
	row->host_cpu[row->done] = h0 < 0 || h1 < 0 ? -1 : (h1 - h0) / gib;
	if (h0 >= 0 && h1 >= 0) {
		row->other_s += h1 - h0 - tx.m.cpu - rx.m.cpu;
		row->wall_s += wall;
	}
	row->done++;
	ok = true;
out:
	kid_end(&tx, !ok);
	kid_end(&rx, !ok);
	return ok;
}

/* ---- statistics and the ceiling ------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct bench_stat { double min, med, max; };

static struct bench_stat stat_of(const double *v, int n)
{
	double s[BENCH_MAX_RUNS];
	struct bench_stat r = { -1, -1, -1 };

	if (n <= 0)
		return r;
	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), cmp_double);
	r.min = s[0];
	r.max = s[n - 1];
	r.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	return r;
}

/* openssl speed -evp CIPHER on 16 KiB buffers for one second: bytes/s. */
static double ceiling_once(const struct bench_cipher *c)
{
	char cmd[160], line[256];
	double v = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "openssl speed -evp %s -bytes 16384 "
		 "-seconds 1 -mr 2>/dev/null", c->name);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "+F:", 3) && strrchr(line, ':'))
			v = strtod(strrchr(line, ':') + 1, NULL);
	if (pclose(f))
		return -1;
	return v;
}

/* ---- the report ---------------------------------------------------------------- */

struct bench_env {
	char host[65], kernel[65], cpu[128], date[40], ossl[64];
	int ncpu;
	enum ktm_support ktls;
	char ktls_reason[256];
	bool cipher_ktls[NCIPHERS];
	char cipher_reason[NCIPHERS][200];
	enum ktm_support uring;
	char uring_reason[200];
	double load0, load1;
	double ceiling[NCIPHERS][BENCH_MAX_RUNS];
	int n_ceiling[NCIPHERS];
	double elapsed;
	double sum_gbps;
	int runs_done;
};

static void env_collect(struct bench_env *v)
{
	struct utsname u;
	struct ktm_error *ke = NULL;
	struct ktm_probe *p;
	const char *reason = "", *hint = NULL;
	char line[256];
	time_t t = time(NULL);
	FILE *f;
	size_t i;

	memset(v, 0, sizeof(*v));
	uname(&u);
	copy_str(v->host, sizeof(v->host), u.nodename);
	copy_str(v->kernel, sizeof(v->kernel), u.release);
	copy_str(v->cpu, sizeof(v->cpu), "unknown");
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');

		if (strncmp(line, "model name", 10) || !c)
			continue;
		c += strspn(c + 1, " \t") + 1;
		c[strcspn(c, "\n")] = '\0';
		copy_str(v->cpu, sizeof(v->cpu), c);
		break;
	}
	if (f)
		fclose(f);
	v->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	strftime(v->date, sizeof(v->date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	copy_str(v->ossl, sizeof(v->ossl), OpenSSL_version(OPENSSL_VERSION));
	f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &v->load0) != 1)
			v->load0 = -1;
		fclose(f);
	}

	p = ktm_probe_new(&ke);
	if (!p) {
		v->ktls = KTM_PROBE_FAILED;
		copy_str(v->ktls_reason, sizeof(v->ktls_reason),
			 ke ? ktm_error_message(ke) : "probe failed");
		ktm_error_free(ke);
		v->uring = KTM_PROBE_FAILED;
		copy_str(v->uring_reason, sizeof(v->uring_reason),
			 "probe failed");
		return;
	}
	v->ktls = ktm_probe_ktls(p, &reason, &hint);
	copy_str(v->ktls_reason, sizeof(v->ktls_reason), reason);
	for (i = 0; i < NCIPHERS; i++) {
		reason = "";
		v->cipher_ktls[i] = v->ktls == KTM_SUPPORTED &&
			ktm_probe_cipher(p, KTM_TLS_1_3, ciphers[i].id,
					 &reason) == KTM_SUPPORTED;
		copy_str(v->cipher_reason[i], sizeof(v->cipher_reason[i]),
			 v->ktls == KTM_SUPPORTED ? reason : v->ktls_reason);
	}
	v->uring = ktm_probe_io_uring(p, &reason);
	copy_str(v->uring_reason, sizeof(v->uring_reason), reason);
	ktm_probe_free(p);
}

static const char *ktls_word(const struct bench_opts *o,
			     const struct bench_env *v)
{
	if (v->ktls != KTM_SUPPORTED)
		return "absent";
	return o->functional ? "emulated (functional-only)" : "native";
}

static const struct bench_row *find_row(const struct bench_row *rows, int n,
					const char *mode,
					const struct bench_cipher *c, int ch)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(rows[i].mode->name, mode) && rows[i].cipher == c &&
		    rows[i].channels == ch && rows[i].state == ROW_OK)
			return &rows[i];
	return NULL;
}

/* Median MB/s of @r over that of @base, or -1. */
static double ratio(const struct bench_row *r, const struct bench_row *base)
{
	if (!r || !base || r->state != ROW_OK || !r->done || !base->done)
		return -1;
	return stat_of(r->mbps, r->done).med / stat_of(base->mbps, base->done).med;
}

static void csv_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void csv_num(FILE *f, double v, int prec)
{
	if (v >= 0)
		fprintf(f, ",%.*f", prec, v);
	else
		fputs(",", f);
}

static const char *state_word(enum row_state s)
{
	switch (s) {
	case ROW_OK: return "ok";
	case ROW_NA: return "n/a";
	case ROW_FAIL: return "failed";
	case ROW_TODO: break;
	}
	return "not run";
}

/* Median over runs of both ends' CPU s/GiB together: on loopback the
 * kernel's TCP receive work runs in whichever end drains it, so the split
 * between the ends moves with scheduling while the sum does not. */
static double both_med(const struct bench_row *r)
{
	double both[BENCH_MAX_RUNS];
	int i;

	for (i = 0; i < r->done; i++)
		both[i] = r->send_cpu[i] + r->recv_cpu[i];
	return stat_of(both, r->done).med;
}

static void write_csv(FILE *f, const struct bench_opts *o,
		      const struct bench_env *v, const struct bench_row *rows,
		      int n)
{
	const char *kind = o->functional ? "functional-only (emulated)" : "speed";
	size_t c;
	int i;

	fprintf(f, "# ktls-migrate bench %s; host %s; kernel %s; kernel TLS %s; "
		"cpu %s x%d; %s; %s\n", KTM_VERSION_STRING, v->host, v->kernel,
		ktls_word(o, v), v->cpu, v->ncpu, v->ossl, v->date);
	fprintf(f, "# %" PRIu64 " bytes per row, chunk %zu, %d interleaved "
		"run(s); MB/s = 1e6 bytes/s of wall time; CPU in seconds per "
		"GiB moved\n", o->size, o->chunk, v->runs_done);
	fputs("measurement,mode,cipher,channels,status,tx_path,rx_path,"
	      "bytes_per_run,runs,mbps_min,mbps_median,mbps_max,"
	      "send_cpu_s_per_gib_min,send_cpu_s_per_gib_median,"
	      "send_cpu_s_per_gib_max,recv_cpu_s_per_gib_min,"
	      "recv_cpu_s_per_gib_median,recv_cpu_s_per_gib_max,"
	      "both_cpu_s_per_gib_median,host_cpu_s_per_gib_median,ratio_vs_tcp_write,"
	      "ratio_vs_tls_user,mbps_runs,note\n", f);
	for (c = 0; c < NCIPHERS && !o->functional; c++) {
		struct bench_stat s = stat_of(v->ceiling[c], v->n_ceiling[c]);

		if (!v->n_ceiling[c])
			continue;
		fprintf(f, "%s,openssl-speed,%s,1,ceiling,-,-,16384,%d", kind,
			ciphers[c].name, v->n_ceiling[c]);
		csv_num(f, s.min / 1e6, 0);
		csv_num(f, s.med / 1e6, 0);
		csv_num(f, s.max / 1e6, 0);
		fputs(",,,,,,,,,,,,", f);
		csv_str(f, "openssl speed -evp -bytes 16384 -seconds 1: one "
			"core, encryption only");
		fputc('\n', f);
	}
	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];
		struct bench_stat m = stat_of(r->mbps, r->done),
				  sc = stat_of(r->send_cpu, r->done),
				  rc = stat_of(r->recv_cpu, r->done),
				  hc = stat_of(r->host_cpu, r->done);
		bool speed = !o->functional && r->state == ROW_OK;
		int k;

		fprintf(f, "%s,%s,%s,%d,%s,%s,%s,%" PRIu64 ",%d", kind,
			r->mode->name, r->cipher ? r->cipher->name : "none",
			r->channels, state_word(r->state),
			r->tx_path[0] ? r->tx_path : "-",
			r->rx_path[0] ? r->rx_path : "-", o->size, r->done);
		if (speed) {
			csv_num(f, m.min, 1), csv_num(f, m.med, 1), csv_num(f, m.max, 1);
			csv_num(f, sc.min, 3), csv_num(f, sc.med, 3), csv_num(f, sc.max, 3);
			csv_num(f, rc.min, 3), csv_num(f, rc.med, 3), csv_num(f, rc.max, 3);
			csv_num(f, both_med(r), 3);
			csv_num(f, hc.med, 3);
			csv_num(f, ratio(r, find_row(rows, n, "tcp-write", NULL,
						     r->channels)), 3);
			csv_num(f, r->cipher ? ratio(r, find_row(rows, n,
					"tls-user", r->cipher, r->channels)) : -1, 3);
			fputs(",\"", f);
			for (k = 0; k < r->done; k++)
				fprintf(f, "%s%.1f", k ? ";" : "", r->mbps[k]);
			fputs("\",", f);
		} else {
			fputs(",,,,,,,,,,,,,,,", f);
		}
		csv_str(f, r->note);
		fputc('\n', f);
	}
}

static void md_cell_stat(FILE *f, struct bench_stat s, int prec)
{
	fprintf(f, " %.*f (%.*f–%.*f) |", prec, s.med, prec, s.min, prec, s.max);
}

static void md_ratio(FILE *f, double r)
{
	if (r < 0)
		fputs(" – |", f);
	else
		fprintf(f, " %.2f× |", r);
}

static void write_md_rows(FILE *f, const struct bench_opts *o,
			  const struct bench_row *rows, int n, int ch)
{
	int i;

	if (o->functional) {
		fputs("| mode | cipher | TX path | RX path | bytes | received "
		      "data | note |\n|---|---|---|---|---|---|---|\n", f);
	} else {
		fputs("| mode | cipher | TX path | RX path | MB/s median "
		      "(min–max) | × tcp-write | × tls-user | send CPU s/GiB | "
		      "recv CPU s/GiB | both ends s/GiB | host CPU s/GiB | "
		      "note |\n"
		      "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
		      f);
	}
	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];

		if (r->channels != ch || (r->state != ROW_OK &&
					  r->state != ROW_FAIL))
			continue;
		fprintf(f, "| %s | %s | %s | %s |", r->mode->name,
			r->cipher ? r->cipher->name : "none",
			r->tx_path[0] ? r->tx_path : "-",
			r->rx_path[0] ? r->rx_path : "-");
		if (r->state == ROW_FAIL) {
			fprintf(f, o->functional ? " – | FAILED |" :
				" FAILED | – | – | – | – | – | – |");
		} else if (o->functional) {
			fprintf(f, " %" PRIu64 " × %d | checksum matched |",
				o->size, r->done);
		} else {
			md_cell_stat(f, stat_of(r->mbps, r->done), 0);
			md_ratio(f, ratio(r, find_row(rows, n, "tcp-write",
						      NULL, ch)));
			md_ratio(f, r->cipher ? ratio(r, find_row(rows, n,
					"tls-user", r->cipher, ch)) : -1);
			md_cell_stat(f, stat_of(r->send_cpu, r->done), 2);
			md_cell_stat(f, stat_of(r->recv_cpu, r->done), 2);
			fprintf(f, " %.2f | %.2f |", both_med(r),
				stat_of(r->host_cpu, r->done).med);
		}
		fprintf(f, " %s |\n", r->note);
	}
}

static void list_add(char *buf, size_t len, const char *item)
{
	size_t used = strlen(buf);
	const char *p = buf;
	size_t il = strlen(item);

	/* whole-item match in the ", "-separated list */
	while ((p = strstr(p, item))) {
		if ((p == buf || p[-1] == ' ') && (p[il] == ',' || !p[il]))
			return;
		p += il;
	}
	snprintf(buf + used, len - used, "%s%s", used ? ", " : "", item);
}

/* Rows not measured, one line per reason. */
static void write_md_na(FILE *f, const struct bench_row *rows, int n)
{
	int i, j;

	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];
		char ms[512] = "", cs[128] = "", chs[64] = "";

		if (r->state != ROW_NA)
			continue;
		for (j = 0; j < i; j++)
			if (rows[j].state == ROW_NA && !strcmp(rows[j].note, r->note))
				break;
		if (j < i)
			continue;
		for (j = i; j < n; j++) {
			const struct bench_row *q = &rows[j];
			char one[48];

			if (q->state != ROW_NA || strcmp(q->note, r->note))
				continue;
			snprintf(one, sizeof(one), "`%s`", q->mode->name);
			list_add(ms, sizeof(ms), one);
			if (q->cipher)
				list_add(cs, sizeof(cs), q->cipher->name);
			snprintf(one, sizeof(one), "%d", q->channels);
			list_add(chs, sizeof(chs), one);
		}
		fprintf(f, "- %s (%s%schannels %s): %s\n", ms, cs,
			cs[0] ? "; " : "", chs, r->note);
	}
}

/* Share of all CPUs' time during the transfers that neither end used:
 * other processes, or kernel threads working for the transfer.  -1 when
 * /proc/stat was unreadable. */
static double busy_pct(const struct bench_env *v, const struct bench_row *rows,
		       int n)
{
	double other = 0, wall = 0;
	int i;

	for (i = 0; i < n; i++)
		other += rows[i].other_s, wall += rows[i].wall_s;
	if (wall <= 0 || v->ncpu <= 0)
		return -1;
	other = other < 0 ? 0 : other;
	return 100 * other / (wall * v->ncpu);
}

static void write_md(FILE *f, const struct bench_opts *o,
		     const struct bench_env *v, const struct bench_row *rows,
		     int n)
{
	double busy = busy_pct(v, rows, n);
	size_t c;
	int k;
	bool any_na = false;

	fprintf(f, "# ktls-migrate bench: %s, %s\n\n", v->host, v->date);
	if (o->functional)
		fputs("**Functional-only (emulated)**: the kernel below ran "
		      "under emulation; these rows show that each path moves "
		      "verified data.  No speed or CPU figure is recorded, and "
		      "none of these rows may be quoted as a speed.\n\n", f);
	fprintf(f, "| | |\n|---|---|\n| host | %s |\n| date | %s |\n"
		"| kernel | %s |\n| kernel TLS | %s: %s |\n"
		"| CPU | %s, %d online |\n| OpenSSL | %s |\n",
		v->host, v->date, v->kernel, ktls_word(o, v), v->ktls_reason,
		v->cpu, v->ncpu, v->ossl);
	fprintf(f, "| data | %" PRIu64 " MiB of random bytes per row (memfd), "
		"split evenly over the channels; sent in %zu KiB calls |\n",
		o->size >> 20, o->chunk >> 10);
	fprintf(f, "| runs | %d", v->runs_done);
	if (v->runs_done < o->runs)
		fprintf(f, " of %d asked (stopped by the %u s time budget)",
			o->runs, o->budget_s);
	fputs(", interleaved (run 1 of every row, then run 2, ...); "
	      "median (min–max) |\n", f);
	if (!o->functional && v->sum_gbps > 0)
		fprintf(f, "| checksum | the receiver checksums every byte "
			"(%.1f GB/s on one core here: about %.2f s/GiB of its "
			"CPU) |\n", v->sum_gbps, GIB / 1e9 / v->sum_gbps);
	if (!o->functional && busy >= 0)
		fprintf(f, "| other work | about %.0f%% of the host's CPU time "
			"during the transfers went to neither end (/proc/stat "
			"busy time minus both ends' getrusage; tick-based, "
			"approximate) |\n", busy);
	fprintf(f, "| load average | %.2f before, %.2f after |\n"
		"| wall time | %.0f s |\n\n", v->load0, v->load1, v->elapsed);
	if (!o->functional && busy > 15)
		fprintf(f, "**Busy host**: other work took about %.0f%% of the "
			"%d CPUs during the transfers, competing with the two "
			"ends.  Wall-time figures (MB/s) are unreliable here and "
			"spread widely; the per-end CPU seconds per GiB do not "
			"count waiting and are the figures to compare.\n\n",
			busy, v->ncpu);

	if (!o->functional) {
		for (c = 0; c < NCIPHERS; c++)
			if (v->n_ceiling[c])
				break;
		if (c < NCIPHERS) {
			fputs("## Crypto ceiling\n\n`openssl speed -evp CIPHER "
			      "-bytes 16384 -seconds 1`, one core, encryption only, "
			      "once per run:\n\n| cipher | MB/s median (min–max) |\n"
			      "|---|---:|\n", f);
			for (c = 0; c < NCIPHERS; c++) {
				struct bench_stat s = stat_of(v->ceiling[c],
							      v->n_ceiling[c]);

				if (!v->n_ceiling[c])
					continue;
				fprintf(f, "| %s | %.0f (%.0f–%.0f) |\n",
					ciphers[c].name, s.med / 1e6,
					s.min / 1e6, s.max / 1e6);
			}
			fputc('\n', f);
		}
	}
	fputs("## Results\n\n", f);
	if (!o->functional)
		fputs("MB/s: 10^6 bytes per second of wall time, from the "
		      "sender's start to the receiver's last byte.  CPU: user + "
		      "system seconds of each end's process per GiB; both ends: "
		      "the median of their per-run sum (on loopback the kernel's "
		      "TCP receive work runs in whichever end drains it, so the "
		      "split between the ends moves with scheduling; the sum "
		      "is the steadier figure); host CPU: busy time of all CPUs "
		      "from /proc/stat (includes softirq threads and anything "
		      "else running).\n\n", f);
	for (k = 0; k < o->n_channels; k++) {
		int i;

		for (i = 0; i < n; i++)
			if (rows[i].channels == o->channels[k] &&
			    (rows[i].state == ROW_OK || rows[i].state == ROW_FAIL))
				break;
		if (i == n)
			continue;
		fprintf(f, "### %d channel%s\n\n", o->channels[k],
			o->channels[k] > 1 ? "s" : "");
		write_md_rows(f, o, rows, n, o->channels[k]);
		fputc('\n', f);
	}
	for (k = 0; k < n; k++)
		any_na |= rows[k].state == ROW_NA;
	if (any_na) {
		fputs("## Not measured\n\n", f);
		write_md_na(f, rows, n);
		fputc('\n', f);
	}
	fputs("## Modes\n\n", f);
	for (c = 0; c < NMODES; c++) {
		for (k = 0; k < n; k++)
			if (rows[k].mode == &modes[c])
				break;
		if (k < n)
			fprintf(f, "- `%s`: %s\n", modes[c].name, modes[c].what);
	}
}

/* ---- options -------------------------------------------------------------------- */

/* "    NAME                 text..." wrapped at 79 columns. */
static void print_wrapped(FILE *out, const char *name, const char *text)
{
	int col = fprintf(out, "    %-20s", name);

	while (*text) {
		size_t w = strcspn(text, " ");

		if (col + 1 + (int)w > 79)
			col = fprintf(out, "\n%24s", "");
		col += fprintf(out, " %.*s", (int)w, text);
		text += w;
		text += strspn(text, " ");
	}
	fputc('\n', out);
}

static void usage(FILE *out)
{
	fprintf(out,
"NAME\n"
"    %s bench - comparison matrix: plaintext, userspace TLS,\n"
"    kernel TLS and peers over loopback, both ends measured\n"
"\n"
"SYNOPSIS\n"
"    %s bench --creds DIR [OPTIONS]\n"
"    %s bench --smoke --creds DIR [--csv FILE]\n"
"\n"
"DESCRIPTION\n"
"    Fills a memfd with random bytes once, then for every row (mode x\n"
"    cipher x channel count) sends all of it over loopback TCP, split\n"
"    evenly over the channels.  Sender and receiver are two processes with\n"
"    one thread per channel; each end's CPU time comes from getrusage, the\n"
"    wall time from the sender's start to the receiver's last byte.  The\n"
"    receiver checksums every byte and the row fails unless all of it\n"
"    arrived intact.  Runs are interleaved (run 1 of every row, then run\n"
"    2, ...) and reported as median (min-max).  TLS rows use TLS 1.3 with\n"
"    the client and server certificates of --creds.\n"
"\n"
"    Kernel-TLS rows need a kernel with kTLS (checked with the probe, per\n"
"    cipher); elsewhere they are reported as \"n/a: no kTLS on this\n"
"    kernel\".  The openssl-ktls peer always runs and says whether OpenSSL\n"
"    really used kTLS (BIO_get_ktls_send) or stayed in userspace.  Under\n"
"    an emulated CPU use --functional: kTLS speed there means nothing.\n"
"\n"
"MODES\n",
		tool_prog, tool_prog, tool_prog);
	for (size_t i = 0; i < NMODES; i++)
		print_wrapped(out, modes[i].name, modes[i].what);
	fprintf(out,
"    Groups: all, plain (tcp-*), tls (tls-user, ktls-*, openssl-ktls,\n"
"    tunnel), ktls (ktls-*), peers (openssl-ktls, tunnel).\n"
"\n"
"OPTIONS\n"
"    --creds DIR        Certificates in QEMU's tls-creds-x509 layout, with\n"
"                       127.0.0.1 in the server certificate (make one with\n"
"                       scripts/make-creds.sh DIR).  Needed for TLS modes.\n"
"    --modes LIST       Comma-separated modes or groups (default all).\n"
"    --ciphers LIST     aes-128-gcm, aes-256-gcm, chacha20-poly1305 (default\n"
"                       all three; TLS rows only).\n"
"    --channels LIST    Parallel streams per row (default 1,2,4; max %d).\n"
"                       tunnel is one stream and runs with 1 only.\n"
"    --size SIZE        Bytes per row, with K, M or G (default 512M).\n"
"    --runs N           Interleaved runs per row (default 3, max %d).\n"
"    --chunk SIZE       Bytes per send/receive call (default 256K).\n"
"    --timeout SECONDS  Per transfer, handshakes included (default 300).\n"
"    --time-budget S    Stop after the run that would make the next one\n"
"                       end past S seconds (never before 3 runs).\n"
"    --no-ceiling       Skip `openssl speed -evp` (run once per run and\n"
"                       cipher otherwise: the one-core crypto ceiling).\n"
"    --functional       Record no speed or CPU figure, only that each row\n"
"                       moved verified data (for emulated guests).\n"
"    --smoke            A tiny pass: --size 4M --runs 1 --channels 1,2\n"
"                       --no-ceiling, unless given after --smoke.\n"
"    --csv FILE         Write the rows as CSV (one line per row; per-run\n"
"                       MB/s in mbps_runs).\n"
"    --md FILE          Write the Markdown report to FILE instead of\n"
"                       standard output.\n"
"    -q, --quiet        No progress lines on standard error.\n"
"    -h, --help         This text.\n"
"\n"
"OUTPUT\n"
"    Progress on standard error, one line per transfer.  The Markdown\n"
"    report (kernel, kTLS native/emulated/absent, CPU, date, ceiling, one\n"
"    table per channel count with ratios to tcp-write and tls-user, rows\n"
"    not measured and why) goes to standard output or --md.  MB/s are\n"
"    10^6 bytes per second; CPU is user+system seconds per GiB per end.\n"
"\n"
"EXIT STATUS\n"
"    0 every runnable row moved verified data; 1 a row failed; 2 bad usage\n"
"    or setup.  Rows that are n/a do not fail.\n"
"\n"
"EXAMPLES\n"
"    scripts/make-creds.sh /tmp/creds\n"
"    %s bench --creds /tmp/creds --csv out.csv --md out.md\n"
"    %s bench --creds /tmp/creds --modes tcp-write,tls-user,ktls \\\n"
"        --ciphers aes-128-gcm --channels 1 --size 1G --runs 5\n"
"    make bench        (bench/run.sh: the whole matrix, CSV, report, plots)\n",
		BENCH_MAX_CH, BENCH_MAX_RUNS, tool_prog, tool_prog);
}

static bool select_modes(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t;
	bool ok = dup != NULL;
	size_t i;

	memset(o->mode_on, 0, sizeof(o->mode_on));
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		bool hit = false;

		for (i = 0; i < NMODES; i++) {
			const struct bench_mode *m = &modes[i];
			bool on = !strcmp(t, m->name) || !strcmp(t, "all") ||
				  (!strcmp(t, "plain") && m->xport == XP_TCP) ||
				  (!strcmp(t, "tls") && m->xport != XP_TCP) ||
				  (!strcmp(t, "ktls") && m->xport == XP_KTLS) ||
				  (!strcmp(t, "peers") &&
				   (m->xport == XP_OPENSSL || m->xport == XP_TUNNEL));

			if (on)
				o->mode_on[i] = hit = true;
		}
		if (!hit) {
			fprintf(stderr, "%s: unknown mode '%s' (see --help)\n",
				tool_prog, t);
			ok = false;
		}
	}
	free(dup);
	return ok;
}

static bool select_ciphers(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t;
	bool ok = dup != NULL;
	size_t i;

	memset(o->cipher_on, 0, sizeof(o->cipher_on));
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < NCIPHERS; i++)
			if (!strcasecmp(t, ciphers[i].name) || !strcmp(t, "all"))
				o->cipher_on[i] = true;
		if (strcmp(t, "all")) {
			for (i = 0; i < NCIPHERS; i++)
				if (!strcasecmp(t, ciphers[i].name))
					break;
			if (i == NCIPHERS) {
				fprintf(stderr, "%s: unknown cipher '%s' (use "
					"aes-128-gcm, aes-256-gcm or "
					"chacha20-poly1305)\n", tool_prog, t);
				ok = false;
			}
		}
	}
	free(dup);
	return ok;
}

static bool select_channels(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t, *end;
	bool ok = dup != NULL;

	o->n_channels = 0;
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		long v = strtol(t, &end, 10);

		if (*end || v < 1 || v > BENCH_MAX_CH ||
		    o->n_channels == BENCH_MAX_CH) {
			fprintf(stderr, "%s: bad channel count '%s' (1 to %d)\n",
				tool_prog, t, BENCH_MAX_CH);
			ok = false;
		} else {
			o->channels[o->n_channels++] = (int)v;
		}
	}
	free(dup);
	return ok && o->n_channels > 0;
}

enum {
	OPT_CREDS = 256, OPT_MODES, OPT_CIPHERS, OPT_CHANNELS, OPT_SIZE,
	OPT_RUNS, OPT_CHUNK, OPT_TIMEOUT, OPT_BUDGET, OPT_NO_CEILING,
	OPT_FUNCTIONAL,
	OPT_SMOKE, OPT_CSV, OPT_MD,
};

static int parse_opts(struct bench_opts *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "creds", required_argument, NULL, OPT_CREDS },
		{ "modes", required_argument, NULL, OPT_MODES },
		{ "ciphers", required_argument, NULL, OPT_CIPHERS },
		{ "channels", required_argument, NULL, OPT_CHANNELS },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "runs", required_argument, NULL, OPT_RUNS },
		{ "chunk", required_argument, NULL, OPT_CHUNK },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "time-budget", required_argument, NULL, OPT_BUDGET },
		{ "no-ceiling", no_argument, NULL, OPT_NO_CEILING },
		{ "functional", no_argument, NULL, OPT_FUNCTIONAL },
		{ "smoke", no_argument, NULL, OPT_SMOKE },
		{ "csv", required_argument, NULL, OPT_CSV },
		{ "md", required_argument, NULL, OPT_MD },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint64_t v;
	char *end;
	int c;

	memset(o, 0, sizeof(*o));
	select_modes(o, "all");
	select_ciphers(o, "all");
	select_channels(o, "1,2,4");
	o->size = 512ull << 20;
	o->chunk = 256u << 10;
	o->runs = 3;
	o->timeout_s = 300;
	o->ceiling = true;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_CREDS: o->creds = optarg; break;
		case OPT_MODES:
			if (!select_modes(o, optarg))
				return 2;
			break;
		case OPT_CIPHERS:
			if (!select_ciphers(o, optarg))
				return 2;
			break;
		case OPT_CHANNELS:
			if (!select_channels(o, optarg))
				return 2;
			break;
		case OPT_SIZE:
			if (!parse_size(optarg, &v) || v < 65536) {
				fprintf(stderr, "%s: bad --size '%s' (at least "
					"64K)\n", tool_prog, optarg);
				return 2;
			}
			o->size = v;
			break;
		case OPT_CHUNK:
			if (!parse_size(optarg, &v) || v < 4096 || v > (64u << 20)) {
				fprintf(stderr, "%s: bad --chunk '%s' (4K to 64M)\n",
					tool_prog, optarg);
				return 2;
			}
			o->chunk = (size_t)v;
			break;
		case OPT_RUNS:
			o->runs = (int)strtol(optarg, &end, 10);
			if (*end || o->runs < 1 || o->runs > BENCH_MAX_RUNS) {
				fprintf(stderr, "%s: bad --runs '%s' (1 to %d)\n",
					tool_prog, optarg, BENCH_MAX_RUNS);
				return 2;
			}
			break;
		case OPT_TIMEOUT:
			o->timeout_s = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->timeout_s) {
				fprintf(stderr, "%s: bad --timeout '%s'\n",
					tool_prog, optarg);
				return 2;
			}
			break;
		case OPT_BUDGET:
			o->budget_s = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->budget_s) {
				fprintf(stderr, "%s: bad --time-budget '%s'\n",
					tool_prog, optarg);
				return 2;
			}
			break;
		case OPT_NO_CEILING: o->ceiling = false; break;
		case OPT_FUNCTIONAL: o->functional = true; break;
		case OPT_SMOKE:
			o->smoke = true;
			o->size = 4u << 20;
			o->runs = 1;
			o->ceiling = false;
			select_channels(o, "1,2");
			break;
		case OPT_CSV: o->csv = optarg; break;
		case OPT_MD: o->md = optarg; break;
		case 'q': o->quiet = true; break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try '%s bench --help'.\n", tool_prog);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: bench: unexpected argument '%s'\n",
			tool_prog, argv[optind]);
		return 2;
	}
	if (o->size / 4096 < (uint64_t)BENCH_MAX_CH)
		o->size = (uint64_t)BENCH_MAX_CH * 4096;
	return -1;
}

/* ---- the matrix ------------------------------------------------------------------ */

static int rows_build(const struct bench_opts *o, const struct bench_env *v,
		      struct bench_row **out)
{
	struct bench_row *rows = calloc(NMODES * NCIPHERS * BENCH_MAX_CH,
					sizeof(*rows));
	int n = 0, k;
	size_t m, c;

	if (!rows)
		return -1;
	for (k = 0; k < o->n_channels; k++) {
		for (m = 0; m < NMODES; m++) {
			const struct bench_mode *md = &modes[m];

			if (!o->mode_on[m] ||
			    (md->xport == XP_TUNNEL && o->channels[k] > 1))
				continue;
			for (c = 0; c < NCIPHERS; c++) {
				struct bench_row *r;

				if (md->xport != XP_TCP && !o->cipher_on[c])
					continue;
				r = &rows[n++];
				r->mode = md;
				r->cipher = md->xport == XP_TCP ? NULL : &ciphers[c];
				r->channels = o->channels[k];
				if (md->xport == XP_KTLS && !v->cipher_ktls[c]) {
					r->state = ROW_NA;
					snprintf(r->note, sizeof(r->note),
						 "n/a: no kTLS on this kernel (%s)",
						 v->cipher_reason[c]);
				} else if (md->rx_no_pad) {
					r->state = ROW_NA;
					copy_str(r->note, sizeof(r->note),
						 "n/a: the public API (ktm.h) has no "
						 "switch for TLS_RX_EXPECT_NO_PAD");
				} else if (md->send == SEND_URING &&
					   v->uring != KTM_SUPPORTED) {
					r->state = ROW_NA;
					snprintf(r->note, sizeof(r->note),
						 "n/a: io_uring unavailable (%s)",
						 v->uring_reason);
				}
				if (md->xport == XP_TCP)
					break;
			}
		}
	}
	*out = rows;
	return n;
}

static void progress(const struct bench_opts *o, int run,
		     const struct bench_row *r, bool ok, const char *err)
{
	int i = r->done - 1;

	if (o->quiet)
		return;
	fprintf(stderr, "[run %d/%d] %-20s %-18s x%d  ", run + 1, o->runs,
		r->mode->name, r->cipher ? r->cipher->name : "none",
		r->channels);
	if (!ok)
		fprintf(stderr, "FAILED: %s\n", err);
	else if (o->functional)
		fprintf(stderr, "ok (verified; %s/%s)\n", r->tx_path, r->rx_path);
	else
		fprintf(stderr, "%8.0f MB/s  send %.2f  recv %.2f CPU s/GiB "
			"(%s/%s)\n", r->mbps[i], r->send_cpu[i], r->recv_cpu[i],
			r->tx_path, r->rx_path);
}

static bool write_outputs(const struct bench_opts *o, const struct bench_env *v,
			  const struct bench_row *rows, int n)
{
	FILE *f;

	if (o->csv) {
		f = fopen(o->csv, "w");
		if (!f) {
			fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog,
				o->csv, strerror(errno));
			return false;
		}
		write_csv(f, o, v, rows, n);
		if (fclose(f)) {
			fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog,
				o->csv, strerror(errno));
			return false;
		}
	}
	f = o->md ? fopen(o->md, "w") : stdout;
	if (!f) {
		fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog, o->md,
			strerror(errno));
		return false;
	}
	write_md(f, o, v, rows, n);
	if (o->md && fclose(f)) {
		fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog, o->md,
			strerror(errno));
		return false;
	}
	return true;
}

/* Check --creds once, up front, for both ends (each end reads it again). */
static bool creds_ok(const char *dir)
{
	static const enum ktm_endpoint ends[2] = { KTM_ENDPOINT_CLIENT,
						    KTM_ENDPOINT_SERVER };
	struct ktm_error *ke = NULL;
	int i;

	for (i = 0; i < 2; i++) {
		struct ktm_config *cfg = ktm_config_new(ends[i], &ke);
		bool ok = cfg && ktm_config_set_creds_dir(cfg, dir, &ke);

		ktm_config_free(cfg);
		if (!ok) {
			tool_error(ke);
			return false;
		}
	}
	return true;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_env *v;
	struct bench_data d;
	struct bench_row *rows = NULL;
	double t0 = now_s();
	int n, i, run, ret, failed = 0;
	bool tls = false;
	size_t m, c;
	FILE *f;

	ret = parse_opts(&o, argc, argv);
	if (ret >= 0)
		return ret;
	for (m = 0; m < NMODES; m++)
		tls |= o.mode_on[m] && modes[m].xport != XP_TCP;
	if (tls && !o.creds) {
		fprintf(stderr, "%s: bench: TLS modes need --creds DIR\n  hint: "
			"make a throwaway PKI with scripts/make-creds.sh DIR, "
			"or pick --modes plain\n", tool_prog);
		return 2;
	}
	if (tls && !creds_ok(o.creds))
		return 2;
	v = malloc(sizeof(*v));
	if (!v)
		return 2;
	env_collect(v);
	n = rows_build(&o, v, &rows);
	if (n < 0 || !data_make(&d, o.size)) {
		free(v);
		free(rows);
		return 2;
	}
	for (run = 0; run < o.runs; run++) {
		for (c = 0; c < NCIPHERS && o.ceiling && tls; c++) {
			double b;

			if (!o.cipher_on[c])
				continue;
			b = ceiling_once(&ciphers[c]);
			if (b > 0)
				v->ceiling[c][v->n_ceiling[c]++] = b;
			if (!o.quiet)
				fprintf(stderr, "[run %d/%d] openssl speed -evp "
					"%s: %.0f MB/s\n", run + 1, o.runs,
					ciphers[c].name, b / 1e6);
		}
		for (i = 0; i < n; i++) {
			struct bench_row *r = &rows[i];
			char err[256];
			bool ok;

			if (r->state == ROW_NA || r->state == ROW_FAIL)
				continue;
			ok = run_once(&o, &d, r, err, sizeof(err));
			if (!ok) {
				r->state = ROW_FAIL;
				snprintf(r->note, sizeof(r->note), "FAILED in run "
					 "%d: %s", run + 1, err);
				failed++;
			} else {
				r->state = ROW_OK;
			}
			progress(&o, run, r, ok, err);
		}
		v->runs_done = run + 1;
		if (o.budget_s && run + 1 >= 3 && run + 1 < o.runs) {
			double el = now_s() - t0;

			if (el + el / (run + 1) > o.budget_s) {
				if (!o.quiet)
					fprintf(stderr, "bench: stopping after %d "
						"runs: another would pass the %u s "
						"budget\n", run + 1, o.budget_s);
				break;
			}
		}
	}
	f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &v->load1) != 1)
			v->load1 = -1;
		fclose(f);
	}
	v->elapsed = now_s() - t0;
	v->sum_gbps = d.sum_gbps;
	ret = write_outputs(&o, v, rows, n) ? (failed ? 1 : 0) : 2;
	munmap(d.map, d.size);
	close(d.memfd);
	free(rows);
	free(v);
	return ret;
}
