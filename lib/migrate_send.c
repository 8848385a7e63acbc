// SPDX-License-Identifier: MIT
/*
 * The source side of a migration: connect the channels, send each chunk as
 * PAGES and ZERO frames straight from the image (sendfile, splice,
 * io_uring or writev into kernel TLS; full records through OpenSSL on the
 * userspace path), keep under the key-usage limit, finish with the digest
 * and wait for the destination's verdict.
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
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <openssl/rand.h>

#include "ktls.h"
#include "migrate.h"

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

/* The channel index is added by ktm_mig_fail_chan. */
static bool sock_error(struct ktm_chan *c, int err, struct ktm_error **errp)
{
	if (err == EAGAIN || err == ETIMEDOUT) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "sending pages to %s:%s timed out: the destination "
			      "took no data within the I/O timeout", c->m->host,
			      c->m->port);
		return false;
	}
	ktm_error_set(errp, err == EPIPE || err == ECONNRESET ? KTM_ERR_PEER :
		      KTM_ERR_IO, err, "sending pages to %s:%s failed: %s",
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

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return sock_error(c, n ? errno : EIO, errp);
			len -= (size_t)n;
			while (n > 0) {
				ssize_t w = splice(c->pipe[0], NULL, fd, NULL,
						   (size_t)n, SPLICE_F_MORE |
						   SPLICE_F_MOVE);

				if (w < 0 && errno == EINTR)
					continue;
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
	ktm_mig_add(c->m, &c->m->wire_bytes, KTM_FRAME_LEN + (uint64_t)f->len);
	c->last_io = ktm_mig_now_s();
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
				ktm_mig_add(m, &m->zero_bytes, p - run);
		} else {
			f.type = KTM_F_PAGES;
			f.len = (uint32_t)(p - run);
			if (!(flags & KTM_FF_REQUESTED)) {
				ktm_mig_add(m, &m->page_bytes, p - run);
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

/* The destination's ABORT (header in @f): its sentence becomes ours. */
static bool peer_aborted(struct ktm_migration *m, struct ktm_session *s,
			 const struct ktm_frame *f, struct ktm_error **errp)
{
	char text[512];

	if (!ktm_mig_recv_text(s, f, text, sizeof(text), errp))
		return false;
	m->peer_aborted = true;
	ktm_error_set(errp, KTM_ERR_PEER, f->aux && f->aux < 4096 ? (int)f->aux :
		      EIO, "destination %s:%s stopped the migration: %s",
		      m->host, m->port, text[0] ? text : "no reason given");
	return false;
}

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
	    !ktm_mig_send_frame(c->s, &f, NULL, errp))
		return false;
	if (!ktm_session_shutdown(c->s, errp))
		return false;
	ktm_mig_session_totals(m, c->s, KTM_DIR_TX);
	s = ktm_session_connect(m->cfg, m->host, m->port, errp);
	if (!s)
		return false;
	pthread_mutex_lock(&m->lock);
	ktm_session_free(c->s);
	c->s = s;
	m->reconnects++;
	pthread_mutex_unlock(&m->lock);
	ktm_mig_tune_socket(m, ktm_session_fd(s));
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
	if (!ktm_mig_send_frame(c->s, &f, body, errp) ||
	    !ktm_mig_recv_frame(c->s, &f, "destination", errp))
		return false;
	if (f.type == KTM_F_HELLO_ACK)
		return true;
	if (f.type == KTM_F_ABORT)
		return peer_aborted(m, c->s, &f, errp);
	ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
		      "destination %s:%s refused the channel (frame type %u)",
		      m->host, m->port, f.type);
	return false;
}

/* Channel 0 only: page requests and progress from the destination,
 * answered between chunks. */
static bool serve_return_path(struct ktm_chan *c, struct ktm_error **errp)
{
	struct pollfd p = { .fd = ktm_session_fd(c->s), .events = POLLIN };
	struct ktm_frame f;

	while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
		if (!ktm_mig_recv_frame(c->s, &f, "destination", errp))
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
			return peer_aborted(c->m, c->s, &f, errp);
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

		if (ktm_mig_failed(m))
			goto out;
		if (!respect_key_limit(c, &err) ||
		    (c->idx == 0 && !serve_return_path(c, &err)) ||
		    !send_range(c, k * KTM_CHUNK_SIZE, len, 0, &err))
			goto err;
		ktm_mig_hash_chunk(m, k);
		ktm_mig_add(m, &m->done, len);
	}
	f.aux = c->payload;
	if (kernel_path(c)) {
		if (!ktm_mig_send_frame(c->s, &f, NULL, &err))
			goto err;
	} else if (!stage_flush(c, &err) || !ktm_mig_send_frame(c->s, &f, NULL, &err)) {
		goto err;
	}
	ktm_mig_add(m, &m->wire_bytes, KTM_FRAME_LEN);
	if (c->idx && !ktm_session_shutdown(c->s, &err))
		goto err;
	goto out;
err:
	ktm_mig_fail_chan(m, c->idx, err);
out:
	ktm_mig_channel_exit(m);
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

/* One channel up: connected, tuned, HELLO answered; false with *errp
 * naming the channel. */
static bool source_connect(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;

	c->s = ktm_session_connect(m->cfg, m->host, m->port, &err);
	if (c->s)
		ktm_mig_tune_socket(m, ktm_session_fd(c->s));
	if (c->s && chan_prepare(c, &err) && send_hello(c, 0, &err))
		return true;
	if (errp)
		*errp = ktm_mig_chan_error(m, c->idx, err);
	else
		ktm_error_free(err);
	return false;
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

/* The verdict did not arrive: the destination may or may not have
 * committed.  Say so, and how to find out. */
static bool verdict_lost(struct ktm_migration *m, struct ktm_error *cause,
			 struct ktm_error **errp)
{
	const char *why = ktm_error_message(cause);
	char ms[32] = "";

	if (strstr(why, "the I/O timeout"))
		snprintf(ms, sizeof(ms), " of %u ms", m->io_ms);
	ktm_error_set(errp, KTM_ERR_PEER, ktm_error_errno(cause),
		      "channel 0: the verdict of destination %s:%s was lost "
		      "(%s%s): the outcome is unknown", m->host, m->port, why, ms);
	ktm_error_hint_set(errp, "the whole image and its digest were sent; "
			   "the destination's own exit status and report say "
			   "whether it committed (the image exists there only "
			   "if the digest matched)");
	ktm_error_free(cause);
	return false;
}

/* Channel 0 after all channels: the digest, then the verdict. */
static bool source_finish(struct ktm_migration *m, struct ktm_error **errp)
{
	struct ktm_session *s = m->ch[0].s;
	uint8_t digest[KTM_DIGEST_LEN];
	char text[512];
	struct ktm_frame f = { .type = KTM_F_IMAGE_END, .len = KTM_DIGEST_LEN,
			       .aux = m->size };
	struct ktm_error *err = NULL;

	ktm_mig_image_digest(m, digest);
	if (!ktm_mig_send_frame(s, &f, digest, errp))
		return false;
	for (;;) {
		if (!ktm_mig_recv_frame(s, &f, "destination", &err))
			return verdict_lost(m, err, errp);
		if (f.type == KTM_F_PROGRESS)
			continue;
		if (f.type == KTM_F_ABORT)
			return peer_aborted(m, s, &f, errp);
		if (f.type != KTM_F_VERDICT || f.len >= sizeof(text)) {
			ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
				      "unexpected frame type %u from the "
				      "destination while waiting for its verdict",
				      f.type);
			return false;
		}
		if (!ktm_mig_recv_text(s, &f, text, sizeof(text), &err))
			return verdict_lost(m, err, errp);
		if (f.aux == 0)
			break;
		ktm_error_set(errp, KTM_ERR_PEER, f.aux < 4096 ? (int)f.aux : EIO,
			      "destination %s:%s rejected the image: %s",
			      m->host, m->port, text);
		return false;
	}
	m->digest_ok = true;
	return ktm_session_shutdown(s, errp);
}

/*
 * After a failure: when a connection broke, the destination may have
 * said why on channel 0 before it closed (ABORT): look for it briefly.
 * Then tell the destination our reason and close without a reset.
 */
static void source_fail_end(struct ktm_migration *m, struct ktm_error **errp)
{
	struct ktm_session *s = m->ch[0].s;
	struct ktm_error *why = NULL;
	struct ktm_frame f;
	struct timeval tv = { .tv_sec = 1 };
	int i;

	if (!s)
		return;
	if (errp && *errp && ktm_error_class(*errp) == KTM_ERR_PEER &&
	    !strstr(ktm_error_message(*errp), "stopped the migration")) {
		setsockopt(ktm_session_fd(s), SOL_SOCKET, SO_RCVTIMEO, &tv,
			   sizeof(tv));
		for (i = 0; i < 64; i++) {
			if (!ktm_mig_recv_frame(s, &f, "destination", NULL) ||
			    (f.type != KTM_F_PROGRESS && f.type != KTM_F_ABORT))
				break;
			if (f.type == KTM_F_ABORT) {
				peer_aborted(m, s, &f, &why);
				ktm_error_free(*errp);
				*errp = why;
				break;
			}
		}
	}
	/* the destination that said why waits for our close: no drain */
	if (errp && *errp && !m->peer_aborted)
		ktm_mig_send_abort(s, *errp);
	ktm_mig_close_gently(s, m->peer_aborted || (errp && *errp &&
			     ktm_error_errno(*errp) == ETIMEDOUT) ? 0 : 1000);
	m->ch[0].s = NULL;
}

bool ktm_migration_send(struct ktm_migration *m, const char *host,
			const char *port, int image_fd, struct ktm_error **errp)
{
	struct ktm_error *err = NULL;
	double t0 = ktm_mig_now_s();
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
		if (!source_connect(c, &err))
			goto out_fail;
		ktm_mig_note_session(m, i, c->s);
	}
	m->path_name = send_path_name(m);
	m->running = m->nch;
	for (i = 0; i < m->nch; i++) {
		if (ktm_mig_thread_start(&m->ch[i].thr, source_channel, &m->ch[i])) {
			m->running -= m->nch - i;
			ktm_error_set(&err, KTM_ERR_INTERNAL, EAGAIN,
				      "cannot start channel %u", i);
			ktm_mig_fail(m, err);
			break;
		}
		m->ch[i].started = true;
	}
	ktm_mig_wait_channels(m);
	if (m->err) {
		err = m->err;
		m->err = NULL;
		goto out_fail;
	}
	ok = source_finish(m, errp);
	goto out_release;
out_fail:
	source_fail_end(m, &err);
	if (errp)
		*errp = err;
	else
		ktm_error_free(err);
out_release:
	for (i = 0; i < m->nch; i++) {
		if (m->ch[i].s)
			ktm_mig_session_totals(m, m->ch[i].s, KTM_DIR_TX);
		ktm_mig_chan_release(&m->ch[i]);
	}
out_free:
	if (m->map)
		munmap(m->map, m->size);
	m->map = NULL;
	ktm_mig_finish(m, t0, ok);
	return ok;
}

