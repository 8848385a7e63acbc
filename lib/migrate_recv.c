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
		ktm_mig_hash_chunk(m, k);
		c->next_chunk += m->nch;
		c->covered = 0;
	}
	ktm_mig_add(m, &m->done, len);
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
		if (ktm_mig_failed(m))
			goto out;
		if (!ktm_mig_recv_frame(c->s, &f, "source", &err))
			goto err;
		ktm_mig_add(m, &m->wire_bytes, KTM_FRAME_LEN + (uint64_t)f.len);
		switch (f.type) {
		case KTM_F_PAGES:
			if (!ktm_run_valid(f.offset, f.len, m->size))
				goto bad;
			if (!ktm_mig_recv_exact(c->s, m->map + f.offset, f.len, &err))
				goto err;
			if (f.flags & KTM_FF_REQUESTED) {
				pthread_mutex_lock(&m->lock);
				m->served++;
				pthread_mutex_unlock(&m->lock);
				break;
			}
			ktm_mig_add(m, &m->page_bytes, f.len);
			if (!cover(c, &f, f.len, &err))
				goto err;
			break;
		case KTM_F_ZERO:
			if (!ktm_run_valid(f.offset, f.aux, m->size) || f.len)
				goto bad;
			if (f.flags & KTM_FF_REQUESTED)
				break;
			/* the partial file is new: its pages are zero */
			ktm_mig_add(m, &m->zero_bytes, f.aux);
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
			if (!ktm_mig_recv_exact(c->s, want, KTM_DIGEST_LEN, &err))
				goto err;
			goto out;
		}
		case KTM_F_RECONNECT:
			/* the source moves this channel to a new connection:
			 * read up to its close_notify, then wait */
			if (f.offset != c->next_chunk ||
			    ktm_session_recv(c->s, text, sizeof(text), &err) != 0)
				goto bad_or_err;
			ktm_mig_session_totals(m, c->s, KTM_DIR_RX);
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
			if (!ktm_mig_send_frame(c->s, &p, NULL, &err))
				goto err;
		}
	}
bad_or_err:
	if (err)
		goto err;
bad:
	malformed(&err, "unexpected frame", c->idx, &f);
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
	if (f.type != KTM_F_HELLO || f.len != KTM_HELLO_LEN) {
		malformed(errp, "no HELLO", 0, &f);
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

static bool hello_ack(struct ktm_session *s, struct ktm_error **errp)
{
	struct ktm_frame f = { .type = KTM_F_HELLO_ACK };

	return ktm_mig_send_frame(s, &f, NULL, errp);
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
	ktm_mig_image_digest(m, digest);
	if (memcmp(digest, want, KTM_DIGEST_LEN)) {
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
	if (msync(m->map, m->size, MS_SYNC) || fsync(m->img_fd) ||
	    rename(partial, path)) {
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
	if (!ktm_mig_send_frame(m->ch[0].s, &f, NULL, errp))
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
	t0 = ktm_mig_now_s();	/* the time of the migration, not of waiting for it */
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

		if (!ktm_mig_send_frame(s, &f, NULL, errp)) {
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
	if (m->map)
		munmap(m->map, m->size);
	m->map = NULL;
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	if (!ok && partial[0])
		unlink(partial);
	ktm_mig_finish(m, t0, ok);
	return ok;
}

