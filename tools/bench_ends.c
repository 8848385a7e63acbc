// SPDX-License-Identifier: MIT
/*
 * One end of a bench transfer, run in a forked child: the sender or the
 * receiver of every channel of one row.  Each channel connects (or
 * accepts) and finishes its handshake and kernel-TLS switch before the
 * clock starts; then one thread per channel sends its share in the row's
 * way (write, sendfile, splice, io_uring, the session, OpenSSL, the
 * tunnel) or receives and checksums it.  The end reports to the parent
 * through a pipe (struct bench_msg).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <liburing.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "bench.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		bench_copy_str(buf, len, "unknown OpenSSL error");
	ERR_clear_error();
}

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
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], why[160];
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
	if (e->server && e->row->mode->rx_no_pad)
		ktm_config_set_rx_no_pad(cfg, true);
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

/* The plain TCP connection of channel @c, for plaintext and OpenSSL. */
static bool chan_tcp_open(struct bench_end *e, struct bench_chan *c)
{
	c->fd = e->server ? accept4(e->listen_fd, NULL, NULL, SOCK_CLOEXEC)
			  : tcp_connect(e->port);
	if (c->fd < 0)
		return chan_fail(c, e->server ? "accept" : "connect", errno);
	return true;
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
		return chan_tcp_open(e, c);
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
		if (!chan_tcp_open(e, c))
			return false;
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

/* One splice(2), retried on EINTR; 0 (end of input) fails with @eof_err. */
static ssize_t splice_some(struct bench_chan *c, int in, loff_t *off, int out,
			   size_t len, unsigned int flags, const char *what,
			   int eof_err)
{
	ssize_t n;

	do {
		n = splice(in, off, out, NULL, len, flags);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		chan_fail(c, what, n ? errno : eof_err);
	return n;
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
		ssize_t in = splice_some(c, c->e->d->memfd, &off, p[1],
					 len < chunk ? len : chunk, SPLICE_F_MOVE,
					 "splice from the memfd", EIO);

		ok = in > 0;
		if (ok)
			len -= (uint64_t)in;
		while (ok && in > 0) {
			ssize_t out = splice_some(c, p[0], NULL, fd, (size_t)in,
						  SPLICE_F_MOVE |
						  (len ? SPLICE_F_MORE : 0),
						  "splice to the socket", EPIPE);

			ok = out > 0;
			if (ok)
				in -= out, c->bytes += (uint64_t)out;
		}
	}
	close(p[0]);
	close(p[1]);
	return ok;
}

/*
 * io_uring: BENCH_URING_DEPTH sends in flight as one linked chain, the
 * socket a registered (fixed) file, completions reaped together.  The
 * link keeps them in order on the one stream; the next chain goes in
 * only when this one has ended, because two chains may overtake each
 * other.  No send may come back short once later ones have run:
 * plaintext TCP sends with MSG_WAITALL (the kernel resends the rest of a
 * short send itself, Linux 5.18+); kernel TLS refuses MSG_WAITALL, so
 * there each is a WRITE, whose short completion fails the link: the
 * later ones come back -ECANCELED unsent and the next chain starts where
 * the short one stopped.
 */
#define BENCH_URING_DEPTH 8

struct uring_q {
	struct io_uring ring;
	bool waitall;			/* SEND + MSG_WAITALL, else WRITE */
	unsigned int n;			/* in the chain */
	size_t len[BENCH_URING_DEPTH];
	int res[BENCH_URING_DEPTH];
};

/* Up to the depth of [p, p + len) in @chunk pieces as one linked chain. */
static void uring_chain(struct uring_q *q, const uint8_t *p, uint64_t len,
			size_t chunk)
{
	struct io_uring_sqe *sqe = NULL;

	for (q->n = 0; len && q->n < BENCH_URING_DEPTH; q->n++) {
		size_t n = len < chunk ? (size_t)len : chunk;

		sqe = io_uring_get_sqe(&q->ring);
		if (q->waitall)
			io_uring_prep_send(sqe, 0, p, n,
					   MSG_WAITALL | MSG_NOSIGNAL);
		else
			io_uring_prep_write(sqe, 0, p, (unsigned int)n, 0);
		io_uring_sqe_set_data64(sqe, q->n);
		io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE | IOSQE_IO_LINK);
		q->len[q->n] = n;
		p += n, len -= n;
	}
	io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);	/* the chain's end */
}

/* Submit the chain and reap all of it; -errno if the ring failed. */
static int uring_reap(struct uring_q *q)
{
	unsigned int got = 0;

	while (got < q->n) {
		struct io_uring_cqe *cqes[BENCH_URING_DEPTH];
		unsigned int i, k;
		int ret = io_uring_submit_and_wait(&q->ring, q->n - got);

		if (ret < 0 && ret != -EINTR)
			return ret;
		k = io_uring_peek_batch_cqe(&q->ring, cqes, q->n - got);
		for (i = 0; i < k; i++)
			q->res[io_uring_cqe_get_data64(cqes[i])] = cqes[i]->res;
		io_uring_cq_advance(&q->ring, k);
		got += k;
	}
	return 0;
}

/* Bytes the chain moved, in order: up to and with the first short one;
 * -errno for a failure that ends the channel (0: try again). */
static int64_t uring_moved(const struct uring_q *q)
{
	int64_t moved = 0;
	unsigned int i;

	for (i = 0; i < q->n; i++) {
		int r = q->res[i];

		if (r == -EINTR || r == -EAGAIN || (r == -ECANCELED && i))
			break;
		if (r <= 0)
			return r ? r : -EPIPE;
		moved += r;
		if ((size_t)r < q->len[i])
			break;
	}
	return moved;
}

static bool send_uring(struct bench_chan *c, const uint8_t *p, uint64_t len,
		       size_t chunk)
{
	const struct bench_mode *md = c->e->row->mode;
	struct uring_q q = { .waitall = md->xport == XP_TCP &&
					!md->uring_write };
	int fd = chan_fd(c), ret;
	bool ok = true;

	/* completion work only when this thread waits (Linux 6.1+), else
	 * the plain ring */
	ret = io_uring_queue_init(BENCH_URING_DEPTH, &q.ring,
				  IORING_SETUP_SINGLE_ISSUER |
				  IORING_SETUP_DEFER_TASKRUN);
	if (ret == -EINVAL)
		ret = io_uring_queue_init(BENCH_URING_DEPTH, &q.ring, 0);
	if (ret < 0)
		return chan_fail(c, "io_uring_queue_init", -ret);
	ret = io_uring_register_files(&q.ring, &fd, 1);
	if (ret < 0)
		ok = chan_fail(c, "io_uring_register_files", -ret);
	while (ok && len) {
		int64_t n;

		uring_chain(&q, p, len, chunk);
		ret = uring_reap(&q);
		n = ret ? ret : uring_moved(&q);
		if (n < 0)
			ok = chan_fail(c, ret ? "io_uring_submit" :
				       q.waitall ? "io_uring SEND" :
				       "io_uring WRITE", (int)-n);
		else
			p += n, len -= (uint64_t)n, c->bytes += (uint64_t)n;
	}
	io_uring_queue_exit(&q.ring);
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

/* One tunnel frame in @buf (its length back), answered with the empty
 * reply; 0 at the end of the stream or on failure. */
static ssize_t recv_tunnel(struct bench_chan *c, uint8_t *buf, size_t cap,
			   bool *eof)
{
	struct ktm_error *ke = NULL;
	uint32_t hdr = 0;

	if (!session_recv_exact(c, &hdr, 4, true, eof) || *eof)
		return 0;
	hdr = ntohl(hdr);
	if (hdr == 0 || hdr > cap) {
		chan_fail(c, "bad tunnel frame length", EPROTO);
		return 0;
	}
	if (!session_recv_exact(c, buf, hdr, false, eof))
		return 0;
	if (!ktm_session_send(c->s, &(uint32_t){ 0 }, 4, &ke)) {
		chan_ktm_fail(c, "ktm_session_send", ke);
		return 0;
	}
	return (ssize_t)hdr;
}

/* One receive in the row's way; *eof at the end of the stream, c->ok
 * false on failure. */
static ssize_t recv_some(struct bench_chan *c, uint8_t *buf, size_t cap,
			 bool *eof)
{
	struct ktm_error *ke = NULL;
	size_t done = 0;
	ssize_t n = 0;
	int ret;

	switch (c->e->row->mode->xport) {
	case XP_TCP:
		n = read(c->fd, buf, cap);
		if (n < 0 && errno != EINTR)
			chan_fail(c, "read", errno);
		break;
	case XP_TLS_USER:
	case XP_KTLS:
		n = ktm_session_recv(c->s, buf, cap, &ke);
		if (n < 0)
			chan_ktm_fail(c, "ktm_session_recv", ke);
		break;
	case XP_OPENSSL:
		ret = SSL_read_ex(c->ssl, buf, cap, &done);
		if (ret != 1 && SSL_get_error(c->ssl, ret) !=
				SSL_ERROR_ZERO_RETURN)
			chan_ssl_fail(c, "SSL_read");
		*eof = ret != 1;
		return (ssize_t)done;
	case XP_TUNNEL:
		return recv_tunnel(c, buf, cap, eof);
	}
	*eof = n == 0;
	return n;
}

/* After the stream: every byte there, and the checksum of what was sent. */
static void recv_verify(struct bench_chan *c, const struct bench_sum *sum)
{
	const struct bench_end *e = c->e;

	if (c->bytes != c->len)
		snprintf(c->err, sizeof(c->err), "channel %d: received %" PRIu64
			 " of %" PRIu64 " bytes", c->idx, c->bytes, c->len),
		c->ok = false;
	else if (bench_sum_final(sum) != e->d->sums[e->row->channels][c->idx])
		snprintf(c->err, sizeof(c->err), "channel %d: checksum of the "
			 "received data does not match what was sent", c->idx),
		c->ok = false;
}

static void *recv_thread(void *arg)
{
	struct bench_chan *c = arg;
	const struct bench_end *e = c->e;
	size_t cap = e->row->mode->xport == XP_TUNNEL ? BENCH_TUNNEL_CHUNK :
		     e->o->chunk;
	struct bench_sum sum;
	uint8_t *buf = malloc(cap);
	bool eof = false;

	if (!buf) {
		chan_fail(c, "receive buffer", ENOMEM);
		return NULL;
	}
	bench_sum_init(&sum);
	while (c->ok && !eof) {
		ssize_t n = recv_some(c, buf, cap, &eof);

		if (n > 0) {
			bench_sum_update(&sum, buf, (size_t)n);
			c->bytes += (uint64_t)n;
		}
	}
	free(buf);
	if (c->ok)
		recv_verify(c, &sum);
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

/* Whether TLS_RX_EXPECT_NO_PAD took on every channel of a -nopad row's
 * receiver: the kernel may lack it (before 6.0), which is no error, but
 * then the row measures plain kernel-TLS receive and must say so. */
static void end_no_pad(const struct bench_end *e, struct bench_msg *m)
{
	int i, took = 0;

	for (i = 0; i < e->row->channels; i++)
		took += ktm_session_rx_no_pad(e->ch[i].s);
	if (took == e->row->channels)
		bench_copy_str(m->note, sizeof(m->note),
			       "receiver: TLS_RX_EXPECT_NO_PAD took effect "
			       "(ktm_session_rx_no_pad)");
	else
		snprintf(m->note, sizeof(m->note), "receiver: "
			 "TLS_RX_EXPECT_NO_PAD did not take effect on %d of "
			 "%d channels (needs Linux 6.0+): measured without it",
			 e->row->channels - took, e->row->channels);
}

static void end_paths(const struct bench_end *e, struct bench_msg *m)
{
	const struct bench_chan *c = &e->ch[0];
	enum ktm_dir dir = e->server ? KTM_DIR_RX : KTM_DIR_TX;
	bool k;

	switch (e->row->mode->xport) {
	case XP_TCP:
		bench_copy_str(m->path, sizeof(m->path), "plaintext");
		break;
	case XP_TLS_USER:
	case XP_KTLS:
	case XP_TUNNEL:
		bench_copy_str(m->path, sizeof(m->path),
			       ktm_path_name(ktm_session_path(c->s, dir)));
		if (e->server && e->row->mode->rx_no_pad)
			end_no_pad(e, m);
		break;
	case XP_OPENSSL:
		k = e->server ? BIO_get_ktls_recv(SSL_get_rbio(c->ssl))
			      : BIO_get_ktls_send(SSL_get_wbio(c->ssl));
		bench_copy_str(m->path, sizeof(m->path),
			       k ? "kernel (OpenSSL)" : "userspace (OpenSSL)");
		if (!k && !e->server)
			bench_copy_str(m->note, sizeof(m->note),
				       "OpenSSL did not enable kTLS send "
				       "(BIO_get_ktls_send = 0): SSL_write in "
				       "userspace");
		break;
	}
}

/* Before the clock: the mapping read in, the TLS context, every
 * channel open; false with m->err set. */
static bool end_setup(struct bench_end *e, struct bench_msg *m)
{
	bool needs_map = !e->server && e->row->mode->send != SEND_SENDFILE &&
			 e->row->mode->send != SEND_SPLICE;
	int i;

	if (needs_map)
		madvise(e->d->map, e->d->size, MADV_POPULATE_READ);
	if (e->row->mode->xport == XP_OPENSSL)
		e->ssl_ctx = ossl_ctx_new(e, m->err, sizeof(m->err));
	else if (e->row->cipher)
		e->cfg = ktm_cfg_new(e, m->err, sizeof(m->err));
	if (e->row->cipher && !e->ssl_ctx && !e->cfg)
		return false;
	for (i = 0; i < e->row->channels; i++) {
		struct bench_chan *ch = &e->ch[i];

		ch->e = e, ch->idx = i;
		bench_chan_range(e->d->size, e->row->channels, i, &ch->off,
				 &ch->len);
		if (!chan_open(e, ch)) {
			bench_copy_str(m->err, sizeof(m->err), ch->err);
			return false;
		}
	}
	return true;
}

/* The timed part: one thread per channel, then the totals into @m. */
static void end_run(struct bench_end *e, struct bench_msg *m)
{
	int n = e->row->channels, i;
	pthread_t th[BENCH_MAX_CH];

	m->t0 = tool_now_s();
	m->cpu = self_cpu_s();
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
	m->cpu = self_cpu_s() - m->cpu;
	m->t1 = tool_now_s();
	m->phase = 'D';
	m->ok = true;
	for (i = 0; i < e->row->channels; i++) {
		m->bytes += e->ch[i].bytes;
		if (!e->ch[i].ok && m->ok) {
			m->ok = false;
			bench_copy_str(m->err, sizeof(m->err), e->ch[i].err);
		}
	}
}

int bench_end_main(struct bench_end *e, int ctl, int res)
{
	struct bench_msg m = { .phase = 'E' };
	char c;
	int i;

	signal(SIGPIPE, SIG_IGN);
	if (!end_setup(e, &m)) {
		msg_send(res, &m);
		return 1;
	}
	end_paths(e, &m);
	m.phase = 'R';
	msg_send(res, &m);
	if (read(ctl, &c, 1) != 1)
		return 1;
	end_run(e, &m);
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
}
