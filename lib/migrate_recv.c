// SPDX-License-Identifier: MIT
/*
 * The destination side of a migration: accept the channels (and any
 * reconnection), receive pages straight into a mapping of
 * PATH.ktm-partial, check every chunk is covered in order, and commit by
 * rename only when the image digest equals the source's.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <openssl/evp.h>

#include "ktls.h"
#include "migrate.h"

/* ---- destination: one frame at a time, no sockets ---------------------------- */

static enum ktm_dest_step bad(struct ktm_chan *c, const char *why,
			      const struct ktm_frame *f, struct ktm_error **errp)
{
	ktm_mig_malformed(errp, "source", c->idx, why, f);
	return KTM_DEST_ERROR;
}

static bool write_image(struct ktm_migration *m, const void *p, size_t len,
			uint64_t off, struct ktm_error **errp)
{
	const uint8_t *b = p;

	while (len) {
		ssize_t n = pwrite(m->img_fd, b, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n ? errno : ENOSPC;

			ktm_error_set(errp, KTM_ERR_IO, e, "cannot write the "
				      "image at offset %llu: %s",
				      (unsigned long long)off, strerror(e));
			return false;
		}
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return true;
}

/* A PAGES payload from @rx into the image at @off (or nowhere when
 * !@keep), through the channel's buffer; hashed when @hash. */
static bool take_payload(struct ktm_chan *c, const struct ktm_rx *rx,
			 uint64_t off, uint64_t len, bool keep, bool hash,
			 struct ktm_error **errp)
{
	double t = ktm_now_s();

	while (len) {
		size_t n = len < KTM_RECV_BUF ? (size_t)len : KTM_RECV_BUF;

		if (!rx->read(rx->opaque, c->rbuf, n, errp))
			return false;
		ktm_mig_lap(c, KTM_PHASE_RECV, &t);
		if (keep && !write_image(c->m, c->rbuf, n, off, errp))
			return false;
		ktm_mig_lap(c, KTM_PHASE_WRITE, &t);
		if (hash) {
			ktm_hash_update(&c->hash, c->rbuf, n);
			ktm_mig_lap(c, KTM_PHASE_HASH, &t);
		}
		off += n;
		len -= n;
	}
	return true;
}

/* Zeros over whatever requested pages wrote there. */
static bool write_zeros(struct ktm_migration *m, uint64_t off, uint64_t len,
			struct ktm_error **errp)
{
	for (; len; off += KTM_PAGE_SIZE, len -= KTM_PAGE_SIZE)
		if (!write_image(m, ktm_zero_page, KTM_PAGE_SIZE, off, errp))
			return false;
	return true;
}

/* The channel starts on chunk @k: from here no requested pages may land
 * in it, so wait for any that are being written. */
static bool open_chunk(struct ktm_chan *c, uint64_t k, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_chunk_state *st = &m->chunks[k];

	pthread_mutex_lock(&m->lock);
	while (st->busy && !m->failed)
		pthread_cond_wait(&m->cond, &m->lock);
	st->opened = true;
	c->chunk_dirty = st->dirty;
	pthread_mutex_unlock(&m->lock);
	ktm_hash_reset(&c->hash);
	if (ktm_mig_failed(m)) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ECANCELED, "cancelled");
		return false;
	}
	return true;
}

/* A run of the channel's current chunk, in order: into the image and
 * into the chunk's digest. */
static enum ktm_dest_step dest_run(struct ktm_chan *c, const struct ktm_frame *f,
				   const struct ktm_rx *rx,
				   struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t k = c->next_chunk, clen = ktm_chunk_len(m->size, k);
	bool pages = f->type == KTM_F_PAGES;
	uint64_t len = pages ? f->len : f->aux;
	double t;

	if (k >= m->nchunks ||
	    f->offset != k * KTM_CHUNK_SIZE + c->covered ||
	    len > clen - c->covered) {
		char why[96];

		snprintf(why, sizeof(why), "pages out of order (%llu bytes; "
			 "expected at offset %llu)", (unsigned long long)len,
			 (unsigned long long)(k * KTM_CHUNK_SIZE + c->covered));
		return bad(c, why, f, errp);
	}
	if (!c->covered && !open_chunk(c, k, errp))
		return KTM_DEST_ERROR;
	if (pages) {
		if (!take_payload(c, rx, f->offset, len, true, true, errp))
			return KTM_DEST_ERROR;
		c->pages += len;
	} else {
		/* the partial file is new: its pages are zero, unless
		 * requested pages were written into this chunk */
		if (c->chunk_dirty && !write_zeros(m, f->offset, len, errp))
			return KTM_DEST_ERROR;
		t = ktm_now_s();
		ktm_hash_zeros(&c->hash, len);
		ktm_mig_lap(c, KTM_PHASE_HASH, &t);
		c->zeros += len;
	}
	c->covered += len;
	if (c->covered == clen) {
		ktm_hash_final(&c->hash, m->chunk_digest[k]);
		c->next_chunk += m->nch;
		c->covered = 0;
	}
	__atomic_store_n(&c->done, c->done + len, __ATOMIC_RELAXED);
	return KTM_DEST_MORE;
}

static bool requests_served(const struct ktm_migration *m)
{
	return m->req_next == m->nreq_sent;
}

/*
 * Pages sent ahead of their turn (PAGE_REQ, channel 0).  They must be the
 * next bytes of the oldest open request, inside one chunk.  They are
 * written only into a chunk its channel has not started: that channel
 * then receives the chunk whole and hashes what it received, so the
 * digest covers every byte in the image.  Later ones are read and
 * dropped (the chunk's own pages are there, and hashed).
 */
static enum ktm_dest_step dest_requested(struct ktm_chan *c,
					 const struct ktm_frame *f,
					 const struct ktm_rx *rx,
					 struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	bool pages = f->type == KTM_F_PAGES, write, dirty, ok;
	uint64_t len = pages ? f->len : f->aux, k = f->offset / KTM_CHUNK_SIZE;
	struct ktm_chunk_state *st = &m->chunks[k];

	if (c->idx)
		return bad(c, "requested pages on a channel other than 0", f, errp);
	if (requests_served(m) ||
	    f->offset != m->req[m->req_next].off + m->req_done ||
	    len > m->req[m->req_next].len - m->req_done)
		return bad(c, "requested pages the destination did not ask for",
			   f, errp);
	if ((f->offset + len - 1) / KTM_CHUNK_SIZE != k)
		return bad(c, "a requested run across a chunk boundary", f, errp);
	pthread_mutex_lock(&m->lock);
	write = !st->opened;
	dirty = st->dirty;
	if (write) {
		st->busy++;
		st->dirty = true;
	}
	pthread_mutex_unlock(&m->lock);
	if (pages)
		ok = take_payload(c, rx, f->offset, len, write, false, errp);
	else
		ok = !write || !dirty || write_zeros(m, f->offset, len, errp);
	if (write) {
		pthread_mutex_lock(&m->lock);
		st->busy--;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
	}
	if (!ok)
		return KTM_DEST_ERROR;
	m->req_done += len;
	if (m->req_done == m->req[m->req_next].len) {
		m->req_next++;
		m->req_done = 0;
		m->served++;
	}
	return m->image_end && requests_served(m) ? KTM_DEST_DONE : KTM_DEST_MORE;
}

static enum ktm_dest_step dest_image_end(struct ktm_chan *c,
					 const struct ktm_frame *f,
					 const struct ktm_rx *rx,
					 struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;

	if (c->idx || !c->ended || m->image_end)
		return bad(c, "an image end out of place", f, errp);
	if (!rx->read(rx->opaque, m->want, f->len, errp))
		return KTM_DEST_ERROR;
	m->image_end = true;
	/* page requests still open: their pages follow */
	return requests_served(m) ? KTM_DEST_DONE : KTM_DEST_MORE;
}

static void peer_of(int fd, char *buf, size_t len);

static enum ktm_dest_step dest_abort(struct ktm_chan *c,
				     const struct ktm_frame *f,
				     const struct ktm_rx *rx,
				     struct ktm_error **errp)
{
	char text[KTM_TEXT_MAX + 1], peer[64] = "";
	uint32_t i;

	if (!rx->read(rx->opaque, text, f->len, errp))
		return KTM_DEST_ERROR;
	text[f->len] = '\0';
	for (i = 0; i < f->len; i++)
		if ((unsigned char)text[i] < 0x20)
			text[i] = ' ';	/* one line, whatever was sent */
	if (c->s)
		peer_of(ktm_session_fd(c->s), peer, sizeof(peer));
	c->m->peer_aborted = true;
	ktm_error_set(errp, KTM_ERR_PEER, f->aux && f->aux < 4096 ?
		      (int)f->aux : EIO, "source %s stopped the migration on "
		      "channel %u: %s", peer[0] ? peer : "(unknown)", c->idx,
		      f->len ? text : "no reason given");
	if (errp)
		ktm_error_set_peer_stop(*errp);
	return KTM_DEST_ERROR;
}

enum ktm_dest_step ktm_dest_frame(struct ktm_chan *c, const struct ktm_frame *f,
				  const struct ktm_rx *rx,
				  struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	const char *why = ktm_frame_problem(f, m->features, m->size, m->digest);

	c->wire += KTM_FRAME_LEN + (uint64_t)f->len;
	if (why)
		return bad(c, why, f, errp);
	switch (f->type) {
	case KTM_F_PAGES:
	case KTM_F_ZERO:
		if (f->flags & KTM_FF_REQUESTED)
			return dest_requested(c, f, rx, errp);
		return dest_run(c, f, rx, errp);
	case KTM_F_CHANNEL_END:
		if (c->ended || c->next_chunk < m->nchunks || c->covered)
			return bad(c, "a channel end before its last chunk", f, errp);
		c->ended = true;
		return c->idx ? KTM_DEST_DONE : KTM_DEST_MORE;
	case KTM_F_IMAGE_END:
		return dest_image_end(c, f, rx, errp);
	case KTM_F_RECONNECT:
		if (c->ended || f->offset != c->next_chunk || c->covered)
			return bad(c, "a reconnection in the middle of a chunk",
				   f, errp);
		return KTM_DEST_RECONNECT;
	case KTM_F_ABORT:
		return dest_abort(c, f, rx, errp);
	}
	return bad(c, "a frame type the source does not send", f, errp);
}

bool ktm_dest_prepare(struct ktm_migration *m, const struct ktm_hello *h,
		      struct ktm_error **errp)
{
	unsigned int i;

	m->size = h->image_size;
	m->nch = h->nchannels;
	m->nchunks = ktm_chunk_count(m->size);
	m->digest = h->digest;
	/* page requests only when this side has some to make */
	m->features = h->features & (m->nreq ? KTM_FEAT_ALL : KTM_FEAT_ZERO_PAGES);
	memcpy(m->stream_id, h->stream_id, sizeof(m->stream_id));
	if (m->nch > KTM_MAX_CHANNELS) {
		ktm_error_set(errp, KTM_ERR_PEER, EINVAL,
			      "the source wants %u channels (at most %d)", m->nch,
			      KTM_MAX_CHANNELS);
		return false;
	}
	if (m->digest_alg && h->digest != m->digest_alg) {
		ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
			      "the source checks the image with %s, this "
			      "destination requires %s",
			      ktm_digest_name((enum ktm_digest)h->digest),
			      ktm_digest_name((enum ktm_digest)m->digest_alg));
		ktm_error_hint_set(errp, "give both ends the same --digest");
		return false;
	}
	m->chunk_digest = calloc(m->nchunks, KTM_DIGEST_LEN);
	m->chunks = calloc(m->nchunks, sizeof(*m->chunks));
	for (i = 0; m->chunk_digest && m->chunks && i < m->nch; i++) {
		m->ch[i].m = m;
		m->ch[i].idx = i;
		m->ch[i].next_chunk = i;
		m->ch[i].rbuf = malloc(KTM_RECV_BUF);
		if (!m->ch[i].rbuf || !ktm_hash_init(&m->ch[i].hash, m->digest, NULL))
			break;
	}
	if (i < m->nch) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM, "out of memory "
			      "for an image of %llu bytes",
			      (unsigned long long)m->size);
		return false;
	}
	return true;
}

void ktm_dest_release(struct ktm_migration *m)
{
	unsigned int i;

	free(m->chunks);
	m->chunks = NULL;
	for (i = 0; i < KTM_MAX_CHANNELS; i++) {
		free(m->ch[i].rbuf);
		m->ch[i].rbuf = NULL;
		ktm_hash_exit(&m->ch[i].hash);
	}
}

/* ---- destination: the channel threads ------------------------------------- */

static bool session_read(void *opaque, void *buf, size_t len,
			 struct ktm_error **errp)
{
	return ktm_mig_recv_exact(opaque, buf, len, errp);
}

static bool hello_ack(struct ktm_migration *m, struct ktm_session *s,
		      struct ktm_error **errp);

/*
 * Wait for the acceptor to hand this channel its next connection, and
 * answer its HELLO only now: the source opens the next one only after
 * that answer, so however fast it goes through short sessions, each
 * channel has at most one waiting, and it is the one that follows.
 */
static struct ktm_session *wait_resume(struct ktm_chan *c,
				       struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_session *s = NULL;
	uint64_t at = 0;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += m->accept_ms / 1000 + 1;
	pthread_mutex_lock(&m->lock);
	while (!c->resumed && !m->failed)
		if (pthread_cond_timedwait(&m->cond, &m->lock, &ts))
			break;
	s = c->resumed;
	at = c->resumed_at;
	c->resumed = NULL;
	if (s) {
		ktm_session_free(c->s);
		c->s = s;
		m->reconnects++;
	}
	pthread_mutex_unlock(&m->lock);
	if (!s) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "channel %u did not reconnect within %u ms",
			      c->idx, m->accept_ms);
		return NULL;
	}
	if (at != c->next_chunk) {
		struct ktm_frame f = { .type = KTM_F_HELLO,
				       .offset = at * KTM_CHUNK_SIZE };

		ktm_mig_malformed(errp, "source", c->idx, "a reconnection that "
				  "resumes at another chunk", &f);
		return NULL;
	}
	return hello_ack(m, s, errp) ? s : NULL;
}

/* RECONNECT: read up to the old session's close_notify, then wait for
 * the new connection. */
static bool dest_reconnect(struct ktm_chan *c, const struct ktm_frame *f,
			   struct ktm_error **errp)
{
	/* room for a whole control record: the kernel path reads the
	 * close_notify alert into this buffer */
	uint8_t buf[512];
	ssize_t n = ktm_session_recv(c->s, buf, sizeof(buf), errp);

	if (n > 0)
		return ktm_mig_malformed(errp, "source", c->idx,
					 "data after a reconnection", f);
	if (n < 0)
		return false;
	ktm_mig_session_totals(c->m, c->s, KTM_DIR_RX);
	return wait_resume(c, errp) != NULL;
}

/*
 * The migration failed because another channel's connection broke (not
 * our own decision, a cancel, a timeout or the source's stated stop):
 * the source's ABORT, with its reason, may still come on channel 0 behind
 * the pages it sent before (the source closes its other channels a
 * moment after it), so channel 0 reads on until *@until (set here, 1 s).
 */
static bool reason_may_follow(struct ktm_migration *m, double *until)
{
	bool broke;

	pthread_mutex_lock(&m->lock);
	broke = m->err && ktm_error_class(m->err) == KTM_ERR_PEER &&
		ktm_error_errno(m->err) != ETIMEDOUT &&
		!ktm_error_peer_stop(m->err);
	pthread_mutex_unlock(&m->lock);
	if (!broke || ktm_mig_cancelled(m))
		return false;
	if (!*until)
		*until = ktm_now_s() + 1.0;
	return ktm_now_s() < *until;
}

/*
 * Channel 0 waits for its next frame here rather than in a read, so a
 * failure on another channel ends it at a frame boundary, its session
 * still able to send the ABORT.  false when the migration failed (after
 * the grace of reason_may_follow()); after the I/O timeout with nothing
 * to read it returns true and the read names the timeout.
 */
static bool wait_next_frame(struct ktm_chan *c, double *grace)
{
	struct ktm_migration *m = c->m;
	double until = ktm_now_s() + m->io_ms / 1000.0;

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = ktm_session_fd(c->s), .events = POLLIN },
			{ .fd = m->cancel_fd, .events = POLLIN } };

		if (ktm_mig_failed(m) && !reason_may_follow(m, grace))
			return false;
		if (ktm_session_readable(c->s) || (m->io_ms && ktm_now_s() >= until))
			return true;
		poll(p, 2, 100);
	}
}

static void *dest_channel(void *arg)
{
	struct ktm_chan *c = arg;
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;
	uint64_t next_progress = KTM_PROGRESS_EVERY;
	struct ktm_frame f;
	double grace = 0;

	for (;;) {
		struct ktm_rx rx = { session_read, c->s };
		enum ktm_dest_step step;

		if (c->idx ? ktm_mig_failed(m) : !wait_next_frame(c, &grace))
			goto out;
		if (!ktm_mig_recv_frame(c->s, &f, "source", &err))
			goto err;
		step = ktm_dest_frame(c, &f, &rx, &err);
		if (step == KTM_DEST_ERROR)
			goto err;
		if (step == KTM_DEST_DONE)
			goto out;
		if (step == KTM_DEST_RECONNECT && !dest_reconnect(c, &f, &err))
			goto err;
		if (c->idx == 0 && ktm_mig_done(m) >= next_progress) {
			struct ktm_frame p = { .type = KTM_F_PROGRESS,
					       .aux = ktm_mig_done(m) };

			next_progress += KTM_PROGRESS_EVERY;
			if (!ktm_mig_send_frame(c->s, &p, NULL, &err))
				goto err;
		}
	}
err:
	ktm_mig_fail_chan(m, c->idx, err);
out:
	ktm_mig_channel_exit(m);
	return NULL;
}

static bool channels_running(struct ktm_migration *m)
{
	bool r;

	pthread_mutex_lock(&m->lock);
	r = m->running && !m->failed;
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* ---- accepting: strays never reach the migration ----------------------------- */

/*
 * Every connection gets its own handshake thread, at most
 * KTM_MAX_HANDSHAKES at a time, each bounded by the handshake timeout and
 * then the I/O timeout for its HELLO: a port scan, a health check, a
 * non-TLS peer, an unauthorized certificate or a flood of half-open
 * connections costs a slot for a bounded time, is logged with its address
 * and reason, and never touches the migration in progress.  Only the
 * accepting thread looks at a finished slot.
 *
 * When every slot is busy, a new connection takes the slot of the one that
 * got least far (pick_victim): one that sent nothing, then one whose
 * ClientHello is incomplete, then one in the rest of its handshake; among
 * equals first one from an address that holds more than
 * KTM_ADDR_SHARE slots, then the one idle longest.  A connection whose
 * handshake is done (waiting for its HELLO) is never evicted.  So a flood
 * of half-open connections cannot crowd out a source that speaks.
 */
#define KTM_MAX_HANDSHAKES 16
#define KTM_ADDR_SHARE (KTM_MAX_HANDSHAKES / 4)

struct hs_slot {
	struct ktm_migration *m;
	pthread_t thr;
	int fd, keep;		/* keep: a dup for closing without a RST */
	bool busy;
	volatile bool done;
	volatile bool tls_done;	/* the handshake finished */
	double t0;		/* accepted (monotonic s) */
	char peer[64];
	struct ktm_session *s;
	struct ktm_hello h;
	uint8_t flags;
	struct ktm_error *err;
};

struct acceptor {
	struct ktm_migration *m;
	int lfd;
	struct hs_slot slot[KTM_MAX_HANDSHAKES];
};

static void mig_log(struct ktm_migration *m, const char *fmt, ...)
	KTM_PRINTF(2, 3);
static void mig_log(struct ktm_migration *m, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	if (!m->log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	m->log(msg, m->log_opaque);
}

/* After the handshake: the HELLO frame and block, within the I/O timeout. */
static bool read_hello(struct hs_slot *sl, struct ktm_error **errp)
{
	uint8_t body[KTM_HELLO_LEN];
	struct ktm_frame f;
	int ret;

	if (!ktm_mig_recv_frame(sl->s, &f, "source", errp))
		return false;
	if (f.type != KTM_F_HELLO || f.len != KTM_HELLO_LEN ||
	    ktm_frame_problem(&f, KTM_FEAT_ALL, 0, 0))
		return ktm_mig_malformed(errp, "source", 0, "no HELLO", &f);
	if (!ktm_mig_recv_exact(sl->s, body, sizeof(body), errp))
		return false;
	ret = ktm_hello_decode(body, &sl->h);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, -ret,
			      "the HELLO is not stream version %d with sane sizes",
			      KTM_STREAM_VERSION);
		return false;
	}
	sl->flags = f.flags;
	return true;
}

/* Half-close, then read what the peer still sends for up to @ms (the
 * caller closes): a close with unread bytes would be a RST that can
 * swallow our alert. */
static void drain(int fd, unsigned int ms)
{
	shutdown(fd, SHUT_WR);
	ktm_mig_drain(fd, ms);
}

static void *hs_thread(void *arg)
{
	struct hs_slot *sl = arg;
	struct ktm_migration *m = sl->m;

	sl->s = ktm_session_new_fd(m->cfg, sl->fd, NULL, &sl->err);
	if (sl->s) {
		__atomic_store_n(&sl->tls_done, true, __ATOMIC_RELEASE);
		ktm_mig_tune_socket(m, ktm_session_fd(sl->s));
		if (!read_hello(sl, &sl->err)) {
			ktm_mig_send_abort(sl->s, sl->err);
			ktm_session_free(sl->s);
			sl->s = NULL;
		}
	}
	/* sl->keep is closed by the acceptor, which may shut it down */
	if (!sl->s)
		drain(sl->keep, 500);
	__atomic_store_n(&sl->done, true, __ATOMIC_RELEASE);
	ktm_mig_wake(m);
	return NULL;
}

static void peer_of(int fd, char *buf, size_t len)
{
	ktm_fd_addr_text(fd, true, buf, len);
}

/* How far a handshake got: 0 nothing received, 1 an incomplete
 * ClientHello (we answered nothing yet), 2 the rest of the handshake,
 * 3 done (or finished); *idle: seconds since it last sent. */
static int slot_progress(const struct hs_slot *sl, double *idle)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	*idle = ktm_now_s() - sl->t0;
	if (__atomic_load_n(&sl->done, __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&sl->tls_done, __ATOMIC_ACQUIRE))
		return 3;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(sl->keep, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
	    !ti.tcpi_bytes_received)
		return 0;
	if (ti.tcpi_last_data_recv / 1000.0 < *idle)
		*idle = ti.tcpi_last_data_recv / 1000.0;
	return ti.tcpi_bytes_sent ? 2 : 1;
}

/* The address part of "ip:port" / "[ip]:port" equals @b's. */
static bool same_addr(const char *a, const char *b)
{
	const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');

	return ca && cb && ca - a == cb - b && !memcmp(a, b, (size_t)(ca - a));
}

static bool crowded(const struct acceptor *a, const char *peer)
{
	unsigned int i, n = 0;

	for (i = 0; i < KTM_MAX_HANDSHAKES; i++)
		n += a->slot[i].busy && same_addr(a->slot[i].peer, peer);
	return n > KTM_ADDR_SHARE;
}

static const char *const progress_words[] = {
	"it sent nothing", "its ClientHello stalled unfinished",
	"its handshake was still going",
};

/* The slot to give up for a new connection (see above), or NULL. */
static struct hs_slot *pick_victim(struct acceptor *a, int *level,
				   double *idle)
{
	struct hs_slot *best = NULL;
	double best_key = 0;
	unsigned int i;

	for (i = 0; i < KTM_MAX_HANDSHAKES; i++) {
		struct hs_slot *sl = &a->slot[i];
		double t;
		int lv = slot_progress(sl, &t);
		/* less progress first, then crowded, then idle longest */
		double key = (3 - lv) * 1e7 + crowded(a, sl->peer) * 1e6 + t;

		if (lv < 3 && (!best || key > best_key)) {
			best = sl;
			best_key = key;
			*level = lv;
			*idle = t;
		}
	}
	return best;
}

/* End the handshake in @sl (its socket shut down under it), logged. */
static void evict(struct acceptor *a, struct hs_slot *sl, int level,
		  double idle, const char *newcomer)
{
	shutdown(sl->keep, SHUT_RDWR);
	pthread_join(sl->thr, NULL);
	close(sl->keep);
	ktm_session_free(sl->s);
	ktm_error_free(sl->err);
	sl->busy = false;
	mig_log(a->m, "dropped a connection from %s to make room for %s: %s "
		"for %.1f s while all %d handshake slots were taken", sl->peer,
		newcomer, progress_words[level], idle, KTM_MAX_HANDSHAKES);
}

/* A free slot for a connection from @peer: a free one, or the one given
 * up by pick_victim(); NULL when every handshake is done. */
static struct hs_slot *free_slot(struct acceptor *a, const char *peer)
{
	struct hs_slot *sl;
	unsigned int i;
	double idle = 0;
	int level = 0;

	for (i = 0; i < KTM_MAX_HANDSHAKES; i++)
		if (!a->slot[i].busy)
			return &a->slot[i];
	sl = pick_victim(a, &level, &idle);
	if (sl)
		evict(a, sl, level, idle, peer);
	return sl;
}

/* One pending connection into a free slot, or refused when all are busy. */
static void acc_take(struct acceptor *a)
{
	struct hs_slot *sl;
	char peer[64];
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;		/* gone already, or EMFILE: poll again */
	peer_of(fd, peer, sizeof(peer));
	sl = free_slot(a, peer);
	if (sl) {
		memset(sl, 0, sizeof(*sl));
		sl->m = a->m;
		sl->fd = fd;
		sl->keep = dup(fd);
		sl->t0 = ktm_now_s();
		snprintf(sl->peer, sizeof(sl->peer), "%s", peer);
		if (sl->keep >= 0 &&
		    ktm_mig_thread_start(&sl->thr, hs_thread, sl) == 0) {
			sl->busy = true;
			return;
		}
		if (sl->keep >= 0)
			close(sl->keep);
	}
	if (sl)
		mig_log(a->m, "refused a connection from %s: cannot start its "
			"handshake thread", peer);
	else
		mig_log(a->m, "refused a connection from %s: %d connections "
			"finished their handshakes and wait for their HELLO",
			peer, KTM_MAX_HANDSHAKES);
	close(fd);
}

/* A finished slot: its session with a HELLO, or NULL (logged). */
static struct ktm_session *acc_reap(struct acceptor *a, struct hs_slot *sl)
{
	struct ktm_session *s = sl->s;

	pthread_join(sl->thr, NULL);
	close(sl->keep);
	sl->busy = false;
	if (!s) {
		mig_log(a->m, "refused a connection from %s: %s", sl->peer,
			sl->err ? ktm_error_message(sl->err) : "no reason");
		ktm_error_free(sl->err);
		sl->err = NULL;
	}
	return s;
}

/* acc_next(): a cancel ends the wait; while the channels run it is
 * their failure, before them the caller's error. */
static bool acc_cancelled(struct acceptor *a, bool live,
			  struct ktm_error **errp)
{
	if (!ktm_mig_cancelled(a->m))
		return false;
	if (live)
		ktm_mig_failed(a->m);	/* records it */
	else
		ktm_error_propagate(errp, ktm_mig_cancel_error(a->m));
	return true;
}

/*
 * The next connection that finished its handshake and HELLO, until
 * @deadline (monotonic seconds; 0: none) or, when @live is set, until the
 * migration's channels stop running.  NULL with *errp only at the
 * deadline; NULL without an error when the channels stopped.
 */
static struct ktm_session *acc_next(struct acceptor *a, double deadline,
				    bool live, struct hs_slot *out,
				    struct ktm_error **errp)
{
	for (;;) {
		struct pollfd p[3] = { { .fd = a->lfd, .events = POLLIN },
				       { .fd = a->m->wake_fd, .events = POLLIN },
				       { .fd = a->m->cancel_fd, .events = POLLIN } };
		unsigned int i;

		for (i = 0; i < KTM_MAX_HANDSHAKES; i++) {
			struct hs_slot *sl = &a->slot[i];

			if (sl->busy &&
			    __atomic_load_n(&sl->done, __ATOMIC_ACQUIRE) &&
			    acc_reap(a, sl)) {
				*out = *sl;
				return sl->s;
			}
		}
		if (acc_cancelled(a, live, errp))
			return NULL;
		if (live && !channels_running(a->m))
			return NULL;
		if (deadline && ktm_now_s() >= deadline) {
			ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
				      "no migration connection arrived within "
				      "%u ms", a->m->accept_ms);
			return NULL;
		}
		if (live && a->m->progress)
			a->m->progress(ktm_mig_done(a->m), a->m->size,
				       a->m->progress_opaque);
		/* woken by a connection, a finished handshake, a channel's
		 * end or a cancel; the timeout paces the progress reports */
		if (poll(p, 3, 250) <= 0)
			continue;
		if (p[1].revents)
			ktm_mig_woken(a->m);
		if (p[0].revents)
			acc_take(a);
	}
}

/* End every handshake still running (the socket shut down under it) and
 * close what they made. */
static void acc_end(struct acceptor *a)
{
	unsigned int i;

	for (i = 0; i < KTM_MAX_HANDSHAKES; i++) {
		if (!a->slot[i].busy)
			continue;
		shutdown(a->slot[i].keep, SHUT_RDWR);
		pthread_join(a->slot[i].thr, NULL);
		close(a->slot[i].keep);
		ktm_session_free(a->slot[i].s);
		ktm_error_free(a->slot[i].err);
		a->slot[i].busy = false;
	}
}

/* Refuse @s (logged, the source told why over ABORT) and close it. */
static void refuse(struct ktm_migration *m, const struct hs_slot *sl,
		   int err, const char *why)
{
	struct ktm_error *e = NULL;

	ktm_error_set(&e, KTM_ERR_PEER, err, "%s", why);
	mig_log(m, "refused a connection from %s: %s", sl->peer, why);
	ktm_mig_send_abort(sl->s, e);
	ktm_error_free(e);
	ktm_mig_close_gently(sl->s, 500);
}

/* HELLO_ACK carries the features this destination accepts. */
static bool hello_ack(struct ktm_migration *m, struct ktm_session *s,
		      struct ktm_error **errp)
{
	struct ktm_frame f = { .type = KTM_F_HELLO_ACK, .aux = m->features };

	return ktm_mig_send_frame(s, &f, NULL, errp);
}

/* ---- the target file ------------------------------------------------------ */

/* The directory part of @path into @dir ("." for a bare name). */
static void dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(dir, len, ".");
	else if (slash == path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

bool ktm_migration_check_target(struct ktm_migration *m, const char *path,
				struct ktm_error **errp)
{
	char dir[4096], partial[4200];
	struct stat st;

	dir_of(path, dir, sizeof(dir));
	snprintf(partial, sizeof(partial), "%s.ktm-partial", path);
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno ? errno : ENOTDIR,
			      "cannot write the image %s: directory %s does not "
			      "exist", path, dir);
		return false;
	}
	if (access(dir, W_OK | X_OK)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno, "cannot write the "
			      "image %s: directory %s is not writable (%s)", path,
			      dir, strerror(errno));
		return false;
	}
	if (lstat(partial, &st) == 0) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EEXIST, "a leftover %s from "
			      "an earlier migration is in the way", partial);
		ktm_error_hint_set(errp, "nothing else uses it once that run "
				   "has ended; remove it with: rm -- '%s'", partial);
		return false;
	}
	if (!m->force && lstat(path, &st) == 0) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EEXIST, "the image %s exists "
			      "already and would be replaced", path);
		ktm_error_hint_set(errp, "--force replaces it when the new image "
				   "is committed (not before)");
		return false;
	}
	return true;
}

static bool no_space(struct ktm_error **errp, const char *path, uint64_t need,
		     uint64_t have)
{
	char dir[4096];

	dir_of(path, dir, sizeof(dir));
	ktm_error_set(errp, KTM_ERR_IO, ENOSPC, "not enough space on the "
		      "filesystem of %s for %s: need %llu bytes, have %llu", dir,
		      path, (unsigned long long)need, (unsigned long long)have);
	ktm_error_hint_set(errp, "free space there or receive into another "
			   "filesystem");
	return false;
}

/* The image size against --max-image-size or the free space. */
static bool size_fits(struct ktm_migration *m, const char *path, uint64_t size,
		      struct ktm_error **errp)
{
	char dir[4096];
	struct statvfs vfs;
	uint64_t have;

	if (!size || size % KTM_PAGE_SIZE || size > (UINT64_MAX >> 1)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
			      "malformed migration stream: image size %llu",
			      (unsigned long long)size);
		return false;
	}
	if (m->max_image && size > m->max_image) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EFBIG, "the image (%llu "
			      "bytes) is larger than the limit for %s "
			      "(--max-image-size %llu)", (unsigned long long)size,
			      path, (unsigned long long)m->max_image);
		return false;
	}
	dir_of(path, dir, sizeof(dir));
	if (m->max_image || statvfs(dir, &vfs))
		return true;	/* posix_fallocate still says ENOSPC */
	have = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return size <= have || no_space(errp, path, size, have);
}

static bool dest_open(struct ktm_migration *m, const char *path,
		      const struct ktm_hello *h, char *partial, size_t plen,
		      struct ktm_error **errp)
{
	struct statvfs vfs;
	int ret;

	snprintf(partial, plen, "%s.ktm-partial", path);
	if (!size_fits(m, path, h->image_size, errp) ||
	    !ktm_dest_prepare(m, h, errp))
		goto err_not_ours;
	m->img_fd = open(partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (m->img_fd < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot create %s: %s",
			      partial, strerror(errno));
		goto err_not_ours;
	}
	/* Reserve every block now: a full filesystem is a named error
	 * here, never a SIGBUS on a page of the mapping later. */
	ret = posix_fallocate(m->img_fd, 0, (off_t)m->size);
	if (ret == ENOSPC || ret == EDQUOT)
		return no_space(errp, path, m->size, statvfs(partial, &vfs) ? 0 :
				(uint64_t)vfs.f_bavail * vfs.f_frsize);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_IO, ret, "cannot reserve %llu bytes "
			      "for %s: %s", (unsigned long long)m->size, partial,
			      strerror(ret));
		return false;
	}
	/* No mapping: pages arrive in a small buffer and go in with
	 * pwrite, which fills new page-cache pages without zeroing them
	 * first (a first write through a mapping faults, zeroes, then
	 * copies) and without touching the zero runs. */
	return true;
err_not_ours:
	partial[0] = '\0';	/* not created: whatever is there stays */
	return false;
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
	ktm_mig_note_session(m, i, s);
	pthread_mutex_lock(&m->lock);
	m->running++;
	pthread_mutex_unlock(&m->lock);
	if (ktm_mig_thread_start(&c->thr, dest_channel, c)) {
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

/* A connection that arrived during the migration: a new channel, a
 * channel's reconnection, or a stray (refused, logged). */
static bool admit(struct ktm_migration *m, struct hs_slot *sl,
		  unsigned int *started, struct ktm_error **errp)
{
	struct ktm_chan *c = &m->ch[sl->h.channel];

	if (memcmp(sl->h.stream_id, m->stream_id, 16) ||
	    sl->h.nchannels != m->nch) {
		refuse(m, sl, EBUSY, "this destination is receiving another "
		       "migration");
		return true;
	}
	if (!(sl->flags & KTM_FF_RESUME) && c->started) {
		refuse(m, sl, EPROTO, "channel already connected");
		return true;
	}
	if (sl->flags & KTM_FF_RESUME) {
		/* the channel thread answers it (wait_resume) */
		pthread_mutex_lock(&m->lock);
		if (!c->resumed) {
			c->resumed = sl->s;
			c->resumed_at = sl->h.first_chunk;
			sl->s = NULL;
			pthread_cond_broadcast(&m->cond);
		}
		pthread_mutex_unlock(&m->lock);
		if (sl->s)
			refuse(m, sl, EPROTO, "a second reconnection of the "
			       "channel before the first was answered");
		return true;
	}
	if (!hello_ack(m, sl->s, NULL)) {
		ktm_session_free(sl->s);
		return true;
	}
	if (!start_dest_channel(m, sl->h.channel, sl->s, errp))
		return false;
	(*started)++;
	return true;
}

/* In the calling thread: more channels, then reconnections, until every
 * channel thread has finished.  Channel 0 runs until the image end, which
 * the source sends only after every channel finished: so while it runs,
 * keep accepting. */
static bool accept_more(struct ktm_migration *m, struct acceptor *a,
			struct ktm_error **errp)
{
	double t0 = ktm_now_s();
	unsigned int started = 1;

	for (;;) {
		double deadline = started < m->nch ? t0 + m->accept_ms / 1000.0 : 0;
		struct hs_slot sl;
		struct ktm_error *err = NULL;

		if (!acc_next(a, deadline, true, &sl, &err)) {
			if (!err)
				return true;
			ktm_error_free(err);
			ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
				      "%u of %u channels connected within %u ms",
				      started, m->nch, m->accept_ms);
			return false;
		}
		if (!admit(m, &sl, &started, errp))
			return false;
	}
}

/* Channel 0 of a new migration, with the strays before it refused. */
static struct ktm_session *accept_first(struct ktm_migration *m,
					struct acceptor *a, struct ktm_hello *h,
					struct ktm_error **errp)
{
	double deadline = ktm_now_s() + m->accept_ms / 1000.0;
	struct hs_slot sl;

	for (;;) {
		if (!acc_next(a, deadline, false, &sl, errp))
			return NULL;
		if (sl.h.channel == 0 && !(sl.flags & KTM_FF_RESUME)) {
			*h = sl.h;
			return sl.s;
		}
		refuse(m, &sl, EPROTO, "not the first channel of a new "
		       "migration");
	}
}

/* The image goes in place: over an existing one only when forced. */
static int commit_rename(const struct ktm_migration *m, const char *partial,
			 const char *path)
{
	if (m->force)
		return rename(partial, path);
	if (renameat2(AT_FDCWD, partial, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* a filesystem without RENAME_NOREPLACE */
	if (link(partial, path))
		return -1;
	return unlink(partial);
}

static bool dest_commit(struct ktm_migration *m, const char *partial,
			const char *path, struct ktm_error **errp)
{
	uint8_t digest[KTM_DIGEST_LEN];
	double t = ktm_now_s();
	char text[160];
	struct ktm_frame f = { .type = KTM_F_VERDICT };
	unsigned int i;
	bool ok;

	for (i = 0; i < m->nch; i++) {
		if (!m->ch[i].ended || !m->image_end) {
			ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
				      "channel %u ended without its end marker", i);
			return false;
		}
	}
	ktm_mig_image_digest(m, digest);
	ktm_mig_lap(&m->ch[0], KTM_PHASE_HASH, &t);
	if (memcmp(digest, m->want, KTM_DIGEST_LEN)) {
		snprintf(text, sizeof(text), "image digest mismatch: the "
			 "destination computed %.16s…", m->digest_hex);
		f.aux = EBADMSG;
		f.len = (uint32_t)strlen(text);
		ktm_mig_send_frame(m->ch[0].s, &f, text, NULL);
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
			      "the received image does not match the source's "
			      "digest (%s); nothing was committed", m->digest_hex);
		return false;
	}
	if (fsync(m->img_fd) || commit_rename(m, partial, path)) {
		int e = errno;

		ktm_error_set(errp, KTM_ERR_IO, e,
			      "cannot commit the image to %s: %s", path,
			      strerror(e));
		snprintf(text, sizeof(text), "cannot commit the image: %s",
			 strerror(e));
		f.aux = (uint64_t)e;
		f.len = (uint32_t)strlen(text);
		ktm_mig_send_frame(m->ch[0].s, &f, text, NULL);
		return false;
	}
	m->digest_ok = true;
	ok = ktm_mig_send_frame(m->ch[0].s, &f, NULL, errp);
	if (ok)
		ktm_session_shutdown(m->ch[0].s, NULL);
	ktm_mig_lap(&m->ch[0], KTM_PHASE_FINISH, &t);
	return ok;
}

/* After a failure: tell the source why on channel 0 (ABORT), then close
 * every channel without a reset. */
static void dest_fail_end(struct ktm_migration *m, const struct ktm_error *err)
{
	unsigned int i;

	/* A source that said why waits for our close, a silent one sends
	 * nothing more: no drain for either. */
	bool quiet = m->peer_aborted ||
		     (err && ktm_error_errno(err) == ETIMEDOUT);

	if (m->ch[0].s && err && !m->peer_aborted)
		ktm_mig_send_abort(m->ch[0].s, err);
	/* channel 0 last: a source blocked sending on another channel
	 * reads the ABORT only once that channel has ended too */
	for (i = m->nch; i-- > 0; ) {
		ktm_mig_close_gently(m->ch[i].s, quiet ? 0 : i ? 200 : 1000);
		m->ch[i].s = NULL;
	}
}

/* Hand the first failure to the caller, or drop it. */
static void take_error(struct ktm_migration *m, struct ktm_error **errp)
{
	ktm_error_propagate(errp, m->err);
	m->err = NULL;
}

/* The migration after channel 0's HELLO: open, acknowledge, run, commit. */
static bool dest_migrate(struct ktm_migration *m, struct acceptor *a,
			 struct ktm_session *s, const struct ktm_hello *h,
			 const char *path, char *partial, size_t plen)
{
	struct ktm_error *err = NULL;
	unsigned int i;

	if (!dest_open(m, path, h, partial, plen, &err)) {
		/* refused before any page moved: the source hears why */
		ktm_mig_send_abort(s, err);
		ktm_mig_close_gently(s, 1000);
		ktm_mig_fail(m, err);
		return false;
	}
	if (!hello_ack(m, s, &err))
		goto err_free;
	/* page requests go first, when the source takes them */
	for (i = 0; i < m->nreq && (m->features & KTM_FEAT_PAGE_REQ); i++) {
		struct ktm_frame f = { .type = KTM_F_PAGE_REQ,
				       .offset = m->req[i].off,
				       .aux = m->req[i].len };

		if (!ktm_mig_send_frame(s, &f, NULL, &err))
			goto err_free;
		m->nreq_sent = i + 1;
	}
	if (!start_dest_channel(m, 0, s, &err))
		goto err_free;
	if (!accept_more(m, a, &err))
		ktm_mig_fail(m, err);
	ktm_mig_wait_channels(m);
	if (ktm_mig_failed(m)) {
		dest_fail_end(m, m->err);
		return false;
	}
	if (!dest_commit(m, partial, path, &err)) {
		ktm_mig_fail(m, err);
		return false;
	}
	return true;
err_free:
	ktm_session_free(s);
	ktm_mig_fail(m, ktm_mig_chan_error(m, 0, err));
	return false;
}

bool ktm_migration_recv(struct ktm_migration *m, int listen_fd,
			const char *path, struct ktm_error **errp)
{
	struct acceptor a = { .m = m, .lfd = listen_fd };
	char partial[4200];
	struct ktm_session *s;
	struct ktm_hello h;
	double t0 = ktm_now_s();
	unsigned int i;
	bool ok = false;

	partial[0] = '\0';
	if (!ktm_migration_check_target(m, path, errp))
		return false;
	s = accept_first(m, &a, &h, errp);
	if (!s)
		goto out_acceptor;
	t0 = ktm_now_s();	/* the time of the migration, not of waiting for it */
	ok = dest_migrate(m, &a, s, &h, path, partial, sizeof(partial));
	if (!ok)
		take_error(m, errp);
	m->path_name = m->path[0] == KTM_PATH_USERSPACE ? "userspace" : "kernel";
	for (i = 0; i < m->nch && i < KTM_MAX_CHANNELS; i++) {
		if (m->ch[i].s)
			ktm_mig_session_totals(m, m->ch[i].s, KTM_DIR_RX);
		ktm_session_free(m->ch[i].resumed);
		m->ch[i].resumed = NULL;
		ktm_mig_chan_release(&m->ch[i]);
	}
	ktm_dest_release(m);
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	if (!ok && partial[0])
		unlink(partial);
out_acceptor:
	acc_end(&a);
	ktm_mig_finish(m, t0, ok);
	return ok;
}
