// SPDX-License-Identifier: MIT
/*
 * Moving a memory image over N sessions (lib/STREAM.md).  The source sends
 * page runs straight from the image file (sendfile, splice, io_uring or
 * writev into kernel TLS; batched full records through OpenSSL on the
 * userspace path); the destination receives into a mapping of
 * PATH.ktm-partial and renames it only after the digest matched.
 *
 * Threads: one per channel on each side; the calling thread connects or
 * accepts, reports progress and finishes.  The first error wins
 * (m->err), the others stop at their next frame.  Only the sessions and
 * the stream know each other here: which TLS library made the keys is
 * not visible (sessions only).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <liburing.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "internal.h"
#include "ktls.h"
#include "stream.h"

#define KTM_MAX_CHANNELS 16
#define KTM_MAX_REQS 8
#define KTM_STAGE_LEN (256u << 10)	/* userspace path: 16 full records */
#define KTM_PROGRESS_EVERY (64ull << 20)

struct ktm_chan {
	struct ktm_migration *m;
	unsigned int idx;
	struct ktm_session *s;
	pthread_t thr;
	bool started;
	uint64_t next_chunk;		/* the next chunk this channel moves */
	/* source */
	uint8_t *stage;			/* userspace path batching */
	size_t staged;
	struct io_uring ring;
	bool ring_ok;
	int pipe[2];
	uint64_t payload;		/* page bytes this channel sent */
	/* destination */
	uint64_t covered;		/* bytes of next_chunk seen so far */
	bool ended;
	struct ktm_session *resumed;	/* handed over by the acceptor */
};

struct ktm_migration {
	const struct ktm_config *cfg;
	unsigned int nch;
	enum ktm_send_path send_path;
	bool zc_ro;
	uint64_t key_limit;
	ktm_progress_fn progress;
	void *progress_opaque;
	unsigned int accept_ms;
	struct { uint64_t off, len; } req[KTM_MAX_REQS];
	unsigned int nreq;

	/* the run */
	bool sending;
	const char *host, *port;
	int img_fd;
	uint64_t size, nchunks;
	uint8_t *map;
	uint8_t (*chunk_digest)[KTM_DIGEST_LEN];
	uint8_t stream_id[16];
	struct ktm_chan ch[KTM_MAX_CHANNELS];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int running;
	struct ktm_error *err;		/* the first failure */
	bool failed;

	/* the report */
	uint64_t done, page_bytes, zero_bytes, wire_bytes;
	double seconds;
	unsigned int rekeys, reconnects, served;
	char digest_hex[2 * KTM_DIGEST_LEN + 1];
	bool digest_ok;
	enum ktm_path path[KTM_MAX_CHANNELS];
	char fallback[256];
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
	const char *path_name;
};

/* ---- setup ---------------------------------------------------------------- */

struct ktm_migration *ktm_migration_new(const struct ktm_config *cfg,
					struct ktm_error **errp)
{
	struct ktm_migration *m = calloc(1, sizeof(*m));

	if (!m) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a migration");
		return NULL;
	}
	m->cfg = cfg;
	m->nch = 1;
	m->accept_ms = 30000;
	m->img_fd = -1;
	m->path_name = "none";
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	return m;
}

void ktm_migration_free(struct ktm_migration *m)
{
	if (!m)
		return;
	ktm_error_free(m->err);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m);
}

bool ktm_migration_set_channels(struct ktm_migration *m, unsigned int n,
				struct ktm_error **errp)
{
	if (n < 1 || n > KTM_MAX_CHANNELS) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "channel count %u is not between 1 and %d", n,
			      KTM_MAX_CHANNELS);
		return false;
	}
	m->nch = n;
	return true;
}

void ktm_migration_set_send_path(struct ktm_migration *m, enum ktm_send_path p)
{
	m->send_path = p;
}

void ktm_migration_set_zerocopy_ro(struct ktm_migration *m, bool on)
{
	m->zc_ro = on;
}

void ktm_migration_set_key_limit(struct ktm_migration *m, uint64_t records)
{
	m->key_limit = records;
}

void ktm_migration_set_progress(struct ktm_migration *m, ktm_progress_fn fn,
				void *opaque)
{
	m->progress = fn;
	m->progress_opaque = opaque;
}

void ktm_migration_set_accept_timeout(struct ktm_migration *m, unsigned int ms)
{
	if (ms)
		m->accept_ms = ms;
}

bool ktm_migration_request_pages(struct ktm_migration *m, uint64_t offset,
				 uint64_t len, struct ktm_error **errp)
{
	if (m->nreq == KTM_MAX_REQS || !len || offset % KTM_PAGE_SIZE ||
	    len % KTM_PAGE_SIZE) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "page request %llu+%llu is not page aligned or "
			      "there are more than %d", (unsigned long long)offset,
			      (unsigned long long)len, KTM_MAX_REQS);
		return false;
	}
	m->req[m->nreq].off = offset;
	m->req[m->nreq].len = len;
	m->nreq++;
	return true;
}

/* ---- shared helpers ----------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Record the first failure; wake everybody.  Takes @err. */
static void fail(struct ktm_migration *m, struct ktm_error *err)
{
	unsigned int i;

	pthread_mutex_lock(&m->lock);
	if (!m->err) {
		m->err = err;
		err = NULL;
	}
	m->failed = true;
	/* unblock channels stuck in recv or send */
	for (i = 0; i < m->nch; i++)
		if (m->ch[i].s)
			shutdown(ktm_session_fd(m->ch[i].s), SHUT_RDWR);
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	ktm_error_free(err);
}

static bool failed(struct ktm_migration *m)
{
	bool f;

	pthread_mutex_lock(&m->lock);
	f = m->failed;
	pthread_mutex_unlock(&m->lock);
	return f;
}

static void add(struct ktm_migration *m, uint64_t *counter, uint64_t v)
{
	pthread_mutex_lock(&m->lock);
	*counter += v;
	pthread_mutex_unlock(&m->lock);
}

static bool recv_exact(struct ktm_session *s, void *buf, size_t len,
		       struct ktm_error **errp)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = ktm_session_recv(s, p, len, errp);

		if (n < 0)
			return false;
		if (n == 0) {
			ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET,
				      "the migration stream ended early "
				      "(close_notify in the middle of a frame)");
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static bool send_frame(struct ktm_session *s, const struct ktm_frame *f,
		       const void *payload, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	ktm_frame_encode(f, hdr);
	return ktm_session_send(s, hdr, sizeof(hdr), errp) &&
	       (!f->len || ktm_session_send(s, payload, f->len, errp));
}

static bool recv_frame(struct ktm_session *s, struct ktm_frame *f,
		       const char *peer_role, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	if (!recv_exact(s, hdr, sizeof(hdr), errp))
		return false;
	if (ktm_frame_decode(hdr, f)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
			      "malformed migration stream from the %s "
			      "(frame type %u)", peer_role, hdr[0]);
		return false;
	}
	return true;
}

static void hash_chunk(struct ktm_migration *m, uint64_t k)
{
	EVP_Digest(m->map + k * KTM_CHUNK_SIZE, ktm_chunk_len(m->size, k),
		   m->chunk_digest[k], NULL, EVP_sha256(), NULL);
}

static void image_digest(struct ktm_migration *m, uint8_t out[KTM_DIGEST_LEN])
{
	uint64_t i;

	EVP_Digest(m->chunk_digest, m->nchunks * KTM_DIGEST_LEN, out, NULL,
		   EVP_sha256(), NULL);
	for (i = 0; i < KTM_DIGEST_LEN; i++)
		sprintf(m->digest_hex + 2 * i, "%02x", out[i]);
}

static void note_session(struct ktm_migration *m, unsigned int i,
			 const struct ktm_session *s)
{
	const char *fb = ktm_session_fallback_reason(s);

	m->path[i] = ktm_session_path(s, KTM_DIR_TX);
	if (i == 0) {
		m->version = ktm_session_version(s);
		m->cipher = ktm_session_cipher(s);
		snprintf(m->fallback, sizeof(m->fallback), "%s", fb ? fb : "");
	}
}

static void session_totals(struct ktm_migration *m, const struct ktm_session *s,
			   enum ktm_dir dir)
{
	pthread_mutex_lock(&m->lock);
	m->rekeys += ktm_session_rekeys(s, dir);
	pthread_mutex_unlock(&m->lock);
}

/* Wait for the channel threads, calling the progress callback. */
static void wait_channels(struct ktm_migration *m)
{
	unsigned int i;

	pthread_mutex_lock(&m->lock);
	while (m->running) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&m->cond, &m->lock, &ts);
		if (m->progress) {
			uint64_t done = m->done;

			pthread_mutex_unlock(&m->lock);
			m->progress(done, m->size, m->progress_opaque);
			pthread_mutex_lock(&m->lock);
		}
	}
	pthread_mutex_unlock(&m->lock);
	for (i = 0; i < m->nch; i++)
		if (m->ch[i].started)
			pthread_join(m->ch[i].thr, NULL);
}

static void channel_exit(struct ktm_migration *m)
{
	pthread_mutex_lock(&m->lock);
	m->running--;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

/* ---- source ------------------------------------------------------------------ */

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	unsigned int i;

	for (i = 0; i < KTM_PAGE_SIZE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

/* Userspace path: frames gather in a stage buffer and leave as full
 * records; flush at the end and before waiting for the peer. */
static bool stage_flush(struct ktm_chan *c, struct ktm_error **errp)
{
	bool ok = !c->staged || ktm_session_send(c->s, c->stage, c->staged, errp);

	c->staged = 0;
	return ok;
}

static bool stage(struct ktm_chan *c, const void *p, size_t len,
		  struct ktm_error **errp)
{
	const uint8_t *b = p;

	while (len) {
		size_t take = KTM_STAGE_LEN - c->staged;

		if (take > len)
			take = len;
		memcpy(c->stage + c->staged, b, take);
		c->staged += take;
		b += take;
		len -= take;
		if (c->staged == KTM_STAGE_LEN && !stage_flush(c, errp))
			return false;
	}
	return true;
}

static bool sock_error(struct ktm_chan *c, int err, struct ktm_error **errp)
{
	ktm_error_set(errp, err == EPIPE || err == ECONNRESET ? KTM_ERR_PEER :
		      KTM_ERR_IO, err,
		      "sending pages on channel %u to %s:%s failed: %s", c->idx,
		      c->m->host, c->m->port, strerror(err));
	return false;
}

/* Kernel path: plain writes; the kernel encrypts.  MSG_MORE keeps the
 * record open so headers and pages share full records. */
static bool raw_send(struct ktm_chan *c, const void *p, size_t len, int more,
		     struct ktm_error **errp)
{
	int fd = ktm_session_fd(c->s);
	const uint8_t *b = p;

	while (len) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL | more);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sock_error(c, errno, errp);
		}
		b += n;
		len -= (size_t)n;
	}
	return true;
}

static bool send_payload_kernel(struct ktm_chan *c, uint64_t off, size_t len,
				struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	int fd = ktm_session_fd(c->s);
	off_t o = (off_t)off;

	switch (m->send_path) {
	case KTM_SEND_AUTO:
	case KTM_SEND_SENDFILE:
		while (len) {
			ssize_t n = sendfile(fd, m->img_fd, &o, len);

			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				return sock_error(c, n ? errno : EPIPE, errp);
			}
			len -= (size_t)n;
		}
		return true;
	case KTM_SEND_SPLICE:
		while (len) {
			ssize_t n = splice(m->img_fd, &o, c->pipe[1], NULL, len,
					   SPLICE_F_MORE | SPLICE_F_MOVE);

			if (n <= 0)
				return sock_error(c, n ? errno : EIO, errp);
			len -= (size_t)n;
			while (n > 0) {
				ssize_t w = splice(c->pipe[0], NULL, fd, NULL,
						   (size_t)n, SPLICE_F_MORE |
						   SPLICE_F_MOVE);

				if (w <= 0)
					return sock_error(c, w ? errno : EPIPE, errp);
				n -= w;
			}
		}
		return true;
	case KTM_SEND_IO_URING: {
		const uint8_t *b = m->map + off;

		while (len) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
			struct io_uring_cqe *cqe;
			int res;

			io_uring_prep_send(sqe, fd, b, len, MSG_MORE | MSG_NOSIGNAL);
			io_uring_submit(&c->ring);
			if (io_uring_wait_cqe(&c->ring, &cqe))
				return sock_error(c, EIO, errp);
			res = cqe->res;
			io_uring_cqe_seen(&c->ring, cqe);
			if (res <= 0) {
				if (res == -EINTR || res == -EAGAIN)
					continue;
				return sock_error(c, res ? -res : EPIPE, errp);
			}
			b += res;
			len -= (size_t)res;
		}
		return true;
	}
	case KTM_SEND_WRITEV:
		return raw_send(c, m->map + off, len, MSG_MORE, errp);
	}
	return false;
}

static bool kernel_path(const struct ktm_chan *c)
{
	return ktm_session_path(c->s, KTM_DIR_TX) != KTM_PATH_USERSPACE;
}

/* One frame with an optional run of image bytes as its payload. */
static bool send_run(struct ktm_chan *c, const struct ktm_frame *f,
		     uint64_t img_off, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	ktm_frame_encode(f, hdr);
	add(c->m, &c->m->wire_bytes, KTM_FRAME_LEN + (uint64_t)f->len);
	if (!kernel_path(c))
		return stage(c, hdr, sizeof(hdr), errp) &&
		       (!f->len || stage(c, c->m->map + img_off, f->len, errp));
	if (!raw_send(c, hdr, sizeof(hdr), MSG_MORE, errp))
		return false;
	return !f->len || send_payload_kernel(c, img_off, f->len, errp);
}

/* Pages [off, off+len) as PAGES and ZERO runs. */
static bool send_range(struct ktm_chan *c, uint64_t off, uint64_t len,
		       uint8_t flags, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t end = off + len, run = off;
	bool zero = page_is_zero(m->map + off);

	for (uint64_t p = off; p <= end; p += KTM_PAGE_SIZE) {
		bool z = p < end ? page_is_zero(m->map + p) : !zero;
		struct ktm_frame f = { .flags = flags, .offset = run };

		if (p < end && z == zero)
			continue;
		if (zero) {
			f.type = KTM_F_ZERO;
			f.aux = p - run;
			if (!(flags & KTM_FF_REQUESTED))
				add(m, &m->zero_bytes, p - run);
		} else {
			f.type = KTM_F_PAGES;
			f.len = (uint32_t)(p - run);
			if (!(flags & KTM_FF_REQUESTED)) {
				add(m, &m->page_bytes, p - run);
				c->payload += p - run;
			}
		}
		if (!send_run(c, &f, run, errp))
			return false;
		run = p;
		zero = z;
	}
	return true;
}

static bool send_hello(struct ktm_chan *c, uint8_t flags,
		       struct ktm_error **errp);

/* Before a chunk: stay under the key-usage limit, by KeyUpdate where the
 * session can, else on a fresh connection. */
static bool respect_key_limit(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t limit = m->key_limit ? m->key_limit :
			 ktm_default_key_limit(ktm_session_cipher(c->s));
	uint64_t need = KTM_CHUNK_SIZE / KTM_KTLS_MAX_RECORD + 4;
	struct ktm_frame f = { .type = KTM_F_RECONNECT };
	struct ktm_session *s;

	if (!limit || ktm_session_key_records(c->s, KTM_DIR_TX) + need <= limit)
		return true;
	if (ktm_session_can_rekey(c->s)) {
		/* flush so the KeyUpdate follows the records it closes */
		return (kernel_path(c) || stage_flush(c, errp)) &&
		       ktm_session_rekey(c->s, errp);
	}
	f.offset = c->next_chunk;
	/* a send without MSG_MORE also closes the kernel's open record */
	if ((!kernel_path(c) && !stage_flush(c, errp)) ||
	    !send_frame(c->s, &f, NULL, errp))
		return false;
	if (!ktm_session_shutdown(c->s, errp))
		return false;
	session_totals(m, c->s, KTM_DIR_TX);
	s = ktm_session_connect(m->cfg, m->host, m->port, errp);
	if (!s)
		return false;
	pthread_mutex_lock(&m->lock);
	ktm_session_free(c->s);
	c->s = s;
	m->reconnects++;
	pthread_mutex_unlock(&m->lock);
	if (m->zc_ro && kernel_path(c))
		ktm_ktls_tx_zerocopy_ro(NULL, ktm_session_fd(s), true);
	return send_hello(c, KTM_FF_RESUME, errp);
}

static bool send_hello(struct ktm_chan *c, uint8_t flags,
		       struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_hello h = {
		.version = KTM_STREAM_VERSION,
		.features = KTM_FEAT_ZERO_PAGES | KTM_FEAT_PAGE_REQ,
		.channel = (uint16_t)c->idx,
		.nchannels = (uint16_t)m->nch,
		.page_size = KTM_PAGE_SIZE,
		.chunk_size = KTM_CHUNK_SIZE,
		.image_size = m->size,
		.first_chunk = c->next_chunk,
	};
	struct ktm_frame f = { .type = KTM_F_HELLO, .flags = flags,
			       .len = KTM_HELLO_LEN };
	uint8_t body[KTM_HELLO_LEN];

	memcpy(h.stream_id, m->stream_id, sizeof(h.stream_id));
	ktm_hello_encode(&h, body);
	if (!send_frame(c->s, &f, body, errp) ||
	    !recv_frame(c->s, &f, "destination", errp))
		return false;
	if (f.type == KTM_F_HELLO_ACK)
		return true;
	ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
		      "destination %s:%s refused channel %u (frame type %u)",
		      m->host, m->port, c->idx, f.type);
	return false;
}

/* Channel 0 only: page requests and progress from the destination,
 * answered between chunks. */
static bool serve_return_path(struct ktm_chan *c, struct ktm_error **errp)
{
	struct pollfd p = { .fd = ktm_session_fd(c->s), .events = POLLIN };
	struct ktm_frame f;

	while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
		if (!recv_frame(c->s, &f, "destination", errp))
			return false;
		if (f.type == KTM_F_PAGE_REQ) {
			if (!ktm_run_valid(f.offset, f.aux, c->m->size)) {
				ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
					      "destination asked for pages "
					      "outside the image");
				return false;
			}
			if (!send_range(c, f.offset, f.aux, KTM_FF_REQUESTED, errp))
				return false;
		} else if (f.type == KTM_F_ABORT) {
			ktm_error_set(errp, KTM_ERR_PEER, (int)f.aux,
				      "destination aborted the migration");
			return false;
		} else if (f.type != KTM_F_PROGRESS) {
			ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
				      "unexpected frame type %u from the "
				      "destination", f.type);
			return false;
		}
	}
	return true;
}

static void *source_channel(void *arg)
{
	struct ktm_chan *c = arg;
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;
	struct ktm_frame f = { .type = KTM_F_CHANNEL_END };

	for (; c->next_chunk < m->nchunks; c->next_chunk += m->nch) {
		uint64_t k = c->next_chunk, len = ktm_chunk_len(m->size, k);

		if (failed(m))
			goto out;
		if (!respect_key_limit(c, &err) ||
		    (c->idx == 0 && !serve_return_path(c, &err)) ||
		    !send_range(c, k * KTM_CHUNK_SIZE, len, 0, &err))
			goto err;
		hash_chunk(m, k);
		add(m, &m->done, len);
	}
	f.aux = c->payload;
	if (kernel_path(c)) {
		if (!send_frame(c->s, &f, NULL, &err))
			goto err;
	} else if (!stage_flush(c, &err) || !send_frame(c->s, &f, NULL, &err)) {
		goto err;
	}
	add(m, &m->wire_bytes, KTM_FRAME_LEN);
	if (c->idx && !ktm_session_shutdown(c->s, &err))
		goto err;
	goto out;
err:
	fail(m, err);
out:
	channel_exit(m);
	return NULL;
}

static bool chan_prepare(struct ktm_chan *c, struct ktm_error **errp)
{
	c->pipe[0] = c->pipe[1] = -1;
	if (!kernel_path(c)) {
		c->stage = malloc(KTM_STAGE_LEN);
		if (!c->stage) {
			ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
				      "out of memory for channel %u", c->idx);
			return false;
		}
		return true;
	}
	if (c->m->send_path == KTM_SEND_SPLICE && pipe2(c->pipe, O_CLOEXEC)) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "pipe for splice: %s",
			      strerror(errno));
		return false;
	}
	if (c->m->send_path == KTM_SEND_IO_URING) {
		int ret = io_uring_queue_init(4, &c->ring, 0);

		if (ret) {
			ktm_error_set(errp, KTM_ERR_IO, -ret,
				      "io_uring for channel %u: %s", c->idx,
				      strerror(-ret));
			return false;
		}
		c->ring_ok = true;
	}
	/* An old kernel without the option simply copies: not an error. */
	if (c->m->zc_ro)
		ktm_ktls_tx_zerocopy_ro(NULL, ktm_session_fd(c->s), true);
	return true;
}

static void chan_release(struct ktm_chan *c)
{
	free(c->stage);
	c->stage = NULL;
	if (c->ring_ok)
		io_uring_queue_exit(&c->ring);
	c->ring_ok = false;
	if (c->pipe[0] >= 0) {
		close(c->pipe[0]);
		close(c->pipe[1]);
	}
	c->pipe[0] = c->pipe[1] = -1;
	ktm_session_free(c->s);
	c->s = NULL;
}

static const char *send_path_name(const struct ktm_migration *m)
{
	if (m->path[0] == KTM_PATH_USERSPACE)
		return "userspace";
	switch (m->send_path) {
	case KTM_SEND_AUTO:
	case KTM_SEND_SENDFILE:
		return "sendfile";
	case KTM_SEND_SPLICE:
		return "splice";
	case KTM_SEND_IO_URING:
		return "io_uring";
	case KTM_SEND_WRITEV:
		return "writev";
	}
	return "?";
}

/* Channel 0 after all channels: the digest, then the verdict. */
static bool source_finish(struct ktm_migration *m, struct ktm_error **errp)
{
	struct ktm_session *s = m->ch[0].s;
	uint8_t digest[KTM_DIGEST_LEN], text[512];
	struct ktm_frame f = { .type = KTM_F_IMAGE_END, .len = KTM_DIGEST_LEN,
			       .aux = m->size };

	image_digest(m, digest);
	if (!send_frame(s, &f, digest, errp))
		return false;
	for (;;) {
		if (!recv_frame(s, &f, "destination", errp))
			return false;
		if (f.type == KTM_F_PROGRESS)
			continue;
		if ((f.type != KTM_F_VERDICT && f.type != KTM_F_ABORT) ||
		    f.len >= sizeof(text)) {
			ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
				      "unexpected frame type %u from the "
				      "destination while waiting for its verdict",
				      f.type);
			return false;
		}
		if (f.len && !recv_exact(s, text, f.len, errp))
			return false;
		text[f.len] = '\0';
		if (f.type == KTM_F_VERDICT && f.aux == 0)
			break;
		ktm_error_set(errp, KTM_ERR_PEER, f.aux ? (int)f.aux : EIO,
			      "destination %s:%s rejected the image: %s",
			      m->host, m->port, text);
		return false;
	}
	m->digest_ok = true;
	return ktm_session_shutdown(s, errp);
}

bool ktm_migration_send(struct ktm_migration *m, const char *host,
			const char *port, int image_fd, struct ktm_error **errp)
{
	struct ktm_error *err = NULL;
	double t0 = now_s();
	struct stat st;
	unsigned int i;
	bool ok = false;

	m->sending = true;
	m->host = host;
	m->port = port;
	m->img_fd = image_fd;
	if (fstat(image_fd, &st) || !S_ISREG(st.st_mode) || !st.st_size ||
	    st.st_size % KTM_PAGE_SIZE) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "the image must be a non-empty regular file whose "
			      "size is a multiple of %u bytes (size %lld)",
			      KTM_PAGE_SIZE, (long long)st.st_size);
		return false;
	}
	m->size = (uint64_t)st.st_size;
	m->nchunks = ktm_chunk_count(m->size);
	m->chunk_digest = calloc(m->nchunks, KTM_DIGEST_LEN);
	m->map = mmap(NULL, m->size, PROT_READ, MAP_SHARED | MAP_POPULATE,
		      image_fd, 0);
	if (!m->chunk_digest || m->map == MAP_FAILED) {
		ktm_error_set(errp, KTM_ERR_IO, errno ? errno : ENOMEM,
			      "cannot map the image (%llu bytes): %s",
			      (unsigned long long)m->size, strerror(errno));
		m->map = NULL;
		goto out_free;
	}
	madvise(m->map, m->size, MADV_SEQUENTIAL);
	RAND_bytes(m->stream_id, sizeof(m->stream_id));

	for (i = 0; i < m->nch; i++) {
		struct ktm_chan *c = &m->ch[i];

		c->m = m;
		c->idx = i;
		c->next_chunk = i;
		c->pipe[0] = c->pipe[1] = -1;
		c->s = ktm_session_connect(m->cfg, host, port, errp);
		if (!c->s || !chan_prepare(c, errp) || !send_hello(c, 0, errp))
			goto out_release;
		note_session(m, i, c->s);
	}
	m->path_name = send_path_name(m);
	m->running = m->nch;
	for (i = 0; i < m->nch; i++) {
		if (pthread_create(&m->ch[i].thr, NULL, source_channel, &m->ch[i])) {
			m->running -= m->nch - i;
			ktm_error_set(&err, KTM_ERR_INTERNAL, EAGAIN,
				      "cannot start channel %u", i);
			fail(m, err);
			break;
		}
		m->ch[i].started = true;
	}
	wait_channels(m);
	if (m->err) {
		if (errp) {
			*errp = m->err;
			m->err = NULL;
		}
		/* tell the destination why, if it can still hear us */
		if (m->ch[0].s) {
			struct ktm_frame f = { .type = KTM_F_ABORT, .aux = EIO };

			send_frame(m->ch[0].s, &f, NULL, NULL);
		}
		goto out_release;
	}
	ok = source_finish(m, errp);
out_release:
	for (i = 0; i < m->nch; i++) {
		if (m->ch[i].s)
			session_totals(m, m->ch[i].s, KTM_DIR_TX);
		chan_release(&m->ch[i]);
	}
out_free:
	if (m->map)
		munmap(m->map, m->size);
	m->map = NULL;
	free(m->chunk_digest);
	m->chunk_digest = NULL;
	m->seconds = now_s() - t0;
	if (m->progress && ok)
		m->progress(m->size, m->size, m->progress_opaque);
	return ok;
}

/* ---- destination ------------------------------------------------------------- */

static bool malformed(struct ktm_error **errp, const char *what, unsigned int ch,
		      const struct ktm_frame *f)
{
	ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
		      "malformed migration stream on channel %u: %s (frame "
		      "type %u, offset %llu)", ch, what, f->type,
		      (unsigned long long)f->offset);
	return false;
}

/* A run of the channel's current chunk arrived (in order). */
static bool cover(struct ktm_chan *c, const struct ktm_frame *f, uint64_t len,
		  struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t k = c->next_chunk, clen = ktm_chunk_len(m->size, k);

	if (k >= m->nchunks || f->offset != k * KTM_CHUNK_SIZE + c->covered ||
	    c->covered + len > clen)
		return malformed(errp, "pages out of order", c->idx, f);
	c->covered += len;
	if (c->covered == clen) {
		hash_chunk(m, k);
		c->next_chunk += m->nch;
		c->covered = 0;
	}
	add(m, &m->done, len);
	return true;
}

/* Wait for the acceptor to hand this channel its next connection. */
static struct ktm_session *wait_resume(struct ktm_chan *c,
				       struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_session *s = NULL;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += m->accept_ms / 1000 + 1;
	pthread_mutex_lock(&m->lock);
	while (!c->resumed && !m->failed)
		if (pthread_cond_timedwait(&m->cond, &m->lock, &ts))
			break;
	s = c->resumed;
	c->resumed = NULL;
	if (s) {
		ktm_session_free(c->s);
		c->s = s;
		m->reconnects++;
	}
	pthread_mutex_unlock(&m->lock);
	if (!s)
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "channel %u did not reconnect within %u ms",
			      c->idx, m->accept_ms);
	return s;
}

static void *dest_channel(void *arg)
{
	struct ktm_chan *c = arg;
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;
	uint64_t next_progress = KTM_PROGRESS_EVERY;
	uint8_t text[512];
	struct ktm_frame f;

	for (;;) {
		if (failed(m))
			goto out;
		if (!recv_frame(c->s, &f, "source", &err))
			goto err;
		add(m, &m->wire_bytes, KTM_FRAME_LEN + (uint64_t)f.len);
		switch (f.type) {
		case KTM_F_PAGES:
			if (!ktm_run_valid(f.offset, f.len, m->size))
				goto bad;
			if (!recv_exact(c->s, m->map + f.offset, f.len, &err))
				goto err;
			if (f.flags & KTM_FF_REQUESTED) {
				pthread_mutex_lock(&m->lock);
				m->served++;
				pthread_mutex_unlock(&m->lock);
				break;
			}
			add(m, &m->page_bytes, f.len);
			if (!cover(c, &f, f.len, &err))
				goto err;
			break;
		case KTM_F_ZERO:
			if (!ktm_run_valid(f.offset, f.aux, m->size) || f.len)
				goto bad;
			if (f.flags & KTM_FF_REQUESTED)
				break;
			/* the partial file is new: its pages are zero */
			add(m, &m->zero_bytes, f.aux);
			if (!cover(c, &f, f.aux, &err))
				goto err;
			break;
		case KTM_F_CHANNEL_END:
			if (c->next_chunk < m->nchunks || c->covered)
				goto bad;
			c->ended = true;
			if (c->idx)
				goto out;
			break;
		case KTM_F_IMAGE_END: {
			uint8_t *want = (uint8_t *)m->chunk_digest +
					m->nchunks * KTM_DIGEST_LEN;

			if (c->idx || f.len != KTM_DIGEST_LEN || f.aux != m->size)
				goto bad;
			if (!recv_exact(c->s, want, KTM_DIGEST_LEN, &err))
				goto err;
			goto out;
		}
		case KTM_F_RECONNECT:
			/* the source moves this channel to a new connection:
			 * read up to its close_notify, then wait */
			if (f.offset != c->next_chunk ||
			    ktm_session_recv(c->s, text, sizeof(text), &err) != 0)
				goto bad_or_err;
			session_totals(m, c->s, KTM_DIR_RX);
			if (!wait_resume(c, &err))
				goto err;
			break;
		case KTM_F_ABORT:
			ktm_error_set(&err, KTM_ERR_PEER, (int)f.aux,
				      "the source aborted the migration");
			goto err;
		default:
			goto bad;
		}
		if (c->idx == 0 && m->done >= next_progress) {
			struct ktm_frame p = { .type = KTM_F_PROGRESS,
					       .aux = m->done };

			next_progress += KTM_PROGRESS_EVERY;
			if (!send_frame(c->s, &p, NULL, &err))
				goto err;
		}
	}
bad_or_err:
	if (err)
		goto err;
bad:
	malformed(&err, "unexpected frame", c->idx, &f);
err:
	fail(m, err);
out:
	channel_exit(m);
	return NULL;
}

/* Accept one session with a deadline and read its HELLO. */
static struct ktm_session *accept_channel(struct ktm_migration *m, int lfd,
					  unsigned int ms, struct ktm_hello *h,
					  uint8_t *flags, struct ktm_error **errp)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	uint8_t body[KTM_HELLO_LEN];
	struct ktm_session *s;
	struct ktm_frame f;
	int ret = poll(&p, 1, (int)ms);

	if (ret <= 0) {
		if (ret == 0)
			ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
				      "no migration connection arrived within %u ms",
				      ms);
		else
			ktm_error_set(errp, KTM_ERR_IO, errno, "poll: %s",
				      strerror(errno));
		return NULL;
	}
	s = ktm_session_accept(m->cfg, lfd, errp);
	if (!s)
		return NULL;
	if (!recv_frame(s, &f, "source", errp))
		goto err_free;
	if (f.type != KTM_F_HELLO || f.len != KTM_HELLO_LEN) {
		malformed(errp, "no HELLO", 0, &f);
		goto err_free;
	}
	if (!recv_exact(s, body, sizeof(body), errp))
		goto err_free;
	ret = ktm_hello_decode(body, h);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, -ret,
			      "the source's HELLO is not stream version %d with "
			      "sane sizes", KTM_STREAM_VERSION);
		goto err_free;
	}
	*flags = f.flags;
	return s;
err_free:
	ktm_session_free(s);
	return NULL;
}

static bool hello_ack(struct ktm_session *s, struct ktm_error **errp)
{
	struct ktm_frame f = { .type = KTM_F_HELLO_ACK };

	return send_frame(s, &f, NULL, errp);
}

static bool dest_open(struct ktm_migration *m, const char *path,
		      const struct ktm_hello *h, char *partial, size_t plen,
		      struct ktm_error **errp)
{
	snprintf(partial, plen, "%s.ktm-partial", path);
	m->size = h->image_size;
	m->nch = h->nchannels;
	m->nchunks = ktm_chunk_count(m->size);
	memcpy(m->stream_id, h->stream_id, sizeof(m->stream_id));
	if (m->nch > KTM_MAX_CHANNELS) {
		ktm_error_set(errp, KTM_ERR_PEER, EINVAL,
			      "the source wants %u channels (at most %d)", m->nch,
			      KTM_MAX_CHANNELS);
		return false;
	}
	/* one extra slot at the end holds the source's image digest */
	m->chunk_digest = calloc(m->nchunks + 1, KTM_DIGEST_LEN);
	m->img_fd = open(partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (!m->chunk_digest || m->img_fd < 0) {
		/* not ours: whatever is there stays */
		if (m->img_fd < 0)
			partial[0] = '\0';
		ktm_error_set(errp, KTM_ERR_IO, errno ? errno : ENOMEM,
			      "cannot create %s.ktm-partial: %s", path,
			      strerror(errno));
		ktm_error_hint_set(errp, "a leftover from an earlier failed "
				   "migration can be removed");
		return false;
	}
	if (ftruncate(m->img_fd, (off_t)m->size)) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot size %s to %llu bytes: %s", partial,
			      (unsigned long long)m->size, strerror(errno));
		return false;
	}
	/* Populate up front: one batch of page allocations instead of a
	 * fault per page while the data streams in. */
	m->map = mmap(NULL, m->size, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_POPULATE, m->img_fd, 0);
	if (m->map == MAP_FAILED) {
		m->map = NULL;
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot map %s: %s",
			      partial, strerror(errno));
		return false;
	}
	return true;
}

static bool start_dest_channel(struct ktm_migration *m, unsigned int i,
			       struct ktm_session *s, struct ktm_error **errp)
{
	struct ktm_chan *c = &m->ch[i];

	c->m = m;
	c->idx = i;
	c->next_chunk = i;
	c->pipe[0] = c->pipe[1] = -1;
	c->s = s;
	note_session(m, i, s);
	pthread_mutex_lock(&m->lock);
	m->running++;
	pthread_mutex_unlock(&m->lock);
	if (pthread_create(&c->thr, NULL, dest_channel, c)) {
		pthread_mutex_lock(&m->lock);
		m->running--;
		pthread_mutex_unlock(&m->lock);
		ktm_error_set(errp, KTM_ERR_INTERNAL, EAGAIN,
			      "cannot start channel %u", i);
		return false;
	}
	c->started = true;
	return true;
}

static bool channels_running(struct ktm_migration *m)
{
	bool r;

	pthread_mutex_lock(&m->lock);
	r = m->running && !m->failed;
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* In the calling thread: more channels, then reconnections, until every
 * channel thread has finished. */
static bool accept_more(struct ktm_migration *m, int lfd,
			struct ktm_error **errp)
{
	unsigned int started = 1;

	/* Channel 0 runs until the image end, which the source sends only
	 * after every channel finished: so while it runs, keep accepting. */
	while (channels_running(m)) {
		struct ktm_session *s;
		struct ktm_hello h;
		uint8_t flags = 0;
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int ret = poll(&p, 1, 100);

		if (ret == 0 && started == m->nch) {
			if (m->progress)
				m->progress(m->done, m->size, m->progress_opaque);
			continue;
		}
		if (ret == 0)
			continue;	/* accept_channel applies the deadline */
		s = accept_channel(m, lfd, m->accept_ms, &h, &flags, errp);
		if (!s)
			return false;
		if (memcmp(h.stream_id, m->stream_id, 16) || h.nchannels != m->nch) {
			ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
				      "a connection of another migration arrived "
				      "(stream id or channel count differ)");
			ktm_session_free(s);
			return false;
		}
		if (!hello_ack(s, errp)) {
			ktm_session_free(s);
			return false;
		}
		if (flags & KTM_FF_RESUME) {
			struct ktm_chan *c = &m->ch[h.channel];

			pthread_mutex_lock(&m->lock);
			ktm_session_free(c->resumed);
			c->resumed = s;
			pthread_cond_broadcast(&m->cond);
			pthread_mutex_unlock(&m->lock);
			continue;
		}
		if (m->ch[h.channel].started) {
			ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
				      "channel %u connected twice", h.channel);
			ktm_session_free(s);
			return false;
		}
		if (!start_dest_channel(m, h.channel, s, errp))
			return false;
		started++;
	}
	return true;
}

static bool dest_commit(struct ktm_migration *m, const char *partial,
			const char *path, struct ktm_error **errp)
{
	uint8_t digest[KTM_DIGEST_LEN];
	const uint8_t *want = (uint8_t *)m->chunk_digest +
			      m->nchunks * KTM_DIGEST_LEN;
	char text[160];
	struct ktm_frame f = { .type = KTM_F_VERDICT };
	unsigned int i;

	for (i = 0; i < m->nch; i++) {
		if (!m->ch[i].ended) {
			ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
				      "channel %u ended without its end marker", i);
			return false;
		}
	}
	image_digest(m, digest);
	if (memcmp(digest, want, KTM_DIGEST_LEN)) {
		snprintf(text, sizeof(text), "image digest mismatch: the "
			 "destination computed %.16s…", m->digest_hex);
		f.aux = EBADMSG;
		f.len = (uint32_t)strlen(text);
		send_frame(m->ch[0].s, &f, text, NULL);
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
			      "the received image does not match the source's "
			      "digest (%s); nothing was committed", m->digest_hex);
		return false;
	}
	if (msync(m->map, m->size, MS_SYNC) || fsync(m->img_fd) ||
	    rename(partial, path)) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot commit the image to %s: %s", path,
			      strerror(errno));
		snprintf(text, sizeof(text), "cannot commit the image: %s",
			 strerror(errno));
		f.aux = EIO;
		f.len = (uint32_t)strlen(text);
		send_frame(m->ch[0].s, &f, text, NULL);
		return false;
	}
	m->digest_ok = true;
	if (!send_frame(m->ch[0].s, &f, NULL, errp))
		return false;
	ktm_session_shutdown(m->ch[0].s, NULL);
	return true;
}

bool ktm_migration_recv(struct ktm_migration *m, int listen_fd,
			const char *path, struct ktm_error **errp)
{
	char partial[4096];
	struct ktm_session *s;
	struct ktm_hello h;
	double t0;
	uint8_t flags = 0;
	unsigned int i;
	bool ok = false;

	partial[0] = '\0';
	s = accept_channel(m, listen_fd, m->accept_ms, &h, &flags, errp);
	if (!s)
		return false;
	t0 = now_s();	/* the time of the migration, not of waiting for it */
	if (h.channel != 0 || (flags & KTM_FF_RESUME)) {
		ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
			      "the first connection is channel %u, not 0",
			      h.channel);
		ktm_session_free(s);
		return false;
	}
	if (!dest_open(m, path, &h, partial, sizeof(partial), errp) ||
	    !hello_ack(s, errp)) {
		ktm_session_free(s);
		goto out_remove;
	}
	for (i = 0; i < m->nreq; i++) {
		struct ktm_frame f = { .type = KTM_F_PAGE_REQ,
				       .offset = m->req[i].off,
				       .aux = m->req[i].len };

		if (!send_frame(s, &f, NULL, errp)) {
			ktm_session_free(s);
			goto out_remove;
		}
	}
	if (!start_dest_channel(m, 0, s, errp)) {
		ktm_session_free(s);
		goto out_remove;
	}
	if (!accept_more(m, listen_fd, errp)) {
		struct ktm_error *err = NULL;

		ktm_error_set(&err, KTM_ERR_INTERNAL, ECANCELED, "cancelled");
		fail(m, err);
		wait_channels(m);
		goto out_release;
	}
	wait_channels(m);
	if (m->err) {
		if (errp) {
			*errp = m->err;
			m->err = NULL;
		}
		goto out_release;
	}
	ok = dest_commit(m, partial, path, errp);
out_release:
	m->path_name = m->path[0] == KTM_PATH_USERSPACE ? "userspace" : "kernel";
	for (i = 0; i < m->nch; i++) {
		if (m->ch[i].s)
			session_totals(m, m->ch[i].s, KTM_DIR_RX);
		ktm_session_free(m->ch[i].resumed);
		m->ch[i].resumed = NULL;
		chan_release(&m->ch[i]);
	}
out_remove:
	if (m->map)
		munmap(m->map, m->size);
	m->map = NULL;
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	if (!ok && partial[0])
		unlink(partial);
	free(m->chunk_digest);
	m->chunk_digest = NULL;
	m->seconds = now_s() - t0;
	if (m->progress && ok)
		m->progress(m->size, m->size, m->progress_opaque);
	return ok;
}

/* ---- report -------------------------------------------------------------------- */

uint64_t ktm_migration_image_bytes(const struct ktm_migration *m)
{
	return m->size;
}

uint64_t ktm_migration_page_bytes(const struct ktm_migration *m)
{
	return m->page_bytes;
}

uint64_t ktm_migration_zero_bytes(const struct ktm_migration *m)
{
	return m->zero_bytes;
}

uint64_t ktm_migration_wire_bytes(const struct ktm_migration *m)
{
	return m->wire_bytes;
}

double ktm_migration_seconds(const struct ktm_migration *m)
{
	return m->seconds;
}

unsigned int ktm_migration_channels(const struct ktm_migration *m)
{
	return m->nch;
}

enum ktm_path ktm_migration_path(const struct ktm_migration *m, unsigned int i)
{
	return i < m->nch ? m->path[i] : 0;
}

const char *ktm_migration_fallback_reason(const struct ktm_migration *m)
{
	return m->fallback[0] ? m->fallback : NULL;
}

enum ktm_tls_version ktm_migration_version(const struct ktm_migration *m)
{
	return m->version;
}

enum ktm_cipher ktm_migration_cipher(const struct ktm_migration *m)
{
	return m->cipher;
}

const char *ktm_migration_send_path_name(const struct ktm_migration *m)
{
	return m->path_name;
}

unsigned int ktm_migration_rekeys(const struct ktm_migration *m)
{
	return m->rekeys;
}

unsigned int ktm_migration_reconnects(const struct ktm_migration *m)
{
	return m->reconnects;
}

const char *ktm_migration_digest(const struct ktm_migration *m)
{
	return m->digest_hex;
}

bool ktm_migration_digest_ok(const struct ktm_migration *m)
{
	return m->digest_ok;
}

unsigned int ktm_migration_requests_served(const struct ktm_migration *m)
{
	return m->served;
}
