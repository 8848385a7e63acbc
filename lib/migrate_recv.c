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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
	double t = ktm_mig_now_s();

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
	    len > clen - c->covered)
		return bad(c, "pages out of order", f, errp);
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
		t = ktm_mig_now_s();
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

static enum ktm_dest_step dest_abort(struct ktm_chan *c,
				     const struct ktm_frame *f,
				     const struct ktm_rx *rx,
				     struct ktm_error **errp)
{
	char text[KTM_TEXT_MAX + 1];

	if (!rx->read(rx->opaque, text, f->len, errp))
		return KTM_DEST_ERROR;
	text[f->len] = '\0';
	ktm_error_set(errp, KTM_ERR_PEER, f->aux && f->aux < 4096 ?
		      (int)f->aux : EIO, "the source aborted the migration on "
		      "channel %u%s%s", c->idx, f->len ? ": " : "", text);
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

static void *dest_channel(void *arg)
{
	struct ktm_chan *c = arg;
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;
	uint64_t next_progress = KTM_PROGRESS_EVERY;
	struct ktm_frame f;

	for (;;) {
		struct ktm_rx rx = { session_read, c->s };
		enum ktm_dest_step step;

		if (ktm_mig_failed(m))
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
	ktm_mig_fail(m, err);
out:
	ktm_mig_channel_exit(m);
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
	if (!ktm_mig_recv_frame(s, &f, "source", errp))
		goto err_free;
	if (f.type != KTM_F_HELLO || f.len != KTM_HELLO_LEN ||
	    ktm_frame_problem(&f, KTM_FEAT_ALL, 0, 0)) {
		ktm_mig_malformed(errp, "source", 0, "no HELLO", &f);
		goto err_free;
	}
	if (!ktm_mig_recv_exact(s, body, sizeof(body), errp))
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

/* HELLO_ACK carries the features this destination accepts. */
static bool hello_ack(struct ktm_migration *m, struct ktm_session *s,
		      struct ktm_error **errp)
{
	struct ktm_frame f = { .type = KTM_F_HELLO_ACK, .aux = m->features };

	return ktm_mig_send_frame(s, &f, NULL, errp);
}

static bool dest_open(struct ktm_migration *m, const char *path,
		      const struct ktm_hello *h, char *partial, size_t plen,
		      struct ktm_error **errp)
{
	snprintf(partial, plen, "%s.ktm-partial", path);
	if (!ktm_dest_prepare(m, h, errp))
		return false;
	m->img_fd = open(partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (m->img_fd < 0) {
		/* not ours: whatever is there stays */
		partial[0] = '\0';
		ktm_error_set(errp, KTM_ERR_IO, errno,
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
	/* No mapping: pages arrive in a small buffer and go in with
	 * pwrite, which fills new page-cache pages without zeroing them
	 * first (a first write through a mapping faults, zeroes, then
	 * copies) and without touching the zero runs. */
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
	ktm_mig_note_session(m, i, s);
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
				m->progress(ktm_mig_done(m), m->size, m->progress_opaque);
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
		if (!hello_ack(m, s, errp)) {
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
	double t = ktm_mig_now_s();
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
	if (fsync(m->img_fd) || rename(partial, path)) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot commit the image to %s: %s", path,
			      strerror(errno));
		snprintf(text, sizeof(text), "cannot commit the image: %s",
			 strerror(errno));
		f.aux = EIO;
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
	t0 = ktm_mig_now_s();	/* the time of the migration, not of waiting for it */
	if (h.channel != 0 || (flags & KTM_FF_RESUME)) {
		ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
			      "the first connection is channel %u, not 0",
			      h.channel);
		ktm_session_free(s);
		return false;
	}
	if (!dest_open(m, path, &h, partial, sizeof(partial), errp) ||
	    !hello_ack(m, s, errp)) {
		ktm_session_free(s);
		goto out_remove;
	}
	/* page requests go first, when the source takes them */
	for (i = 0; i < m->nreq && (m->features & KTM_FEAT_PAGE_REQ); i++) {
		struct ktm_frame f = { .type = KTM_F_PAGE_REQ,
				       .offset = m->req[i].off,
				       .aux = m->req[i].len };

		if (!ktm_mig_send_frame(s, &f, NULL, errp)) {
			ktm_session_free(s);
			goto out_remove;
		}
		m->nreq_sent = i + 1;
	}
	if (!start_dest_channel(m, 0, s, errp)) {
		ktm_session_free(s);
		goto out_remove;
	}
	if (!accept_more(m, listen_fd, errp)) {
		struct ktm_error *err = NULL;

		ktm_error_set(&err, KTM_ERR_INTERNAL, ECANCELED, "cancelled");
		ktm_mig_fail(m, err);
		ktm_mig_wait_channels(m);
		goto out_release;
	}
	ktm_mig_wait_channels(m);
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
			ktm_mig_session_totals(m, m->ch[i].s, KTM_DIR_RX);
		ktm_session_free(m->ch[i].resumed);
		m->ch[i].resumed = NULL;
		ktm_mig_chan_release(&m->ch[i]);
	}
out_remove:
	ktm_dest_release(m);
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	if (!ok && partial[0])
		unlink(partial);
	ktm_mig_finish(m, t0, ok);
	return ok;
}

