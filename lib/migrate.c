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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <openssl/evp.h>

#include "ktls.h"
#include "migrate.h"

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
	m->io_ms = 30000;
	m->img_fd = -1;
	m->path_name = "none";
	m->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->cancel_fd < 0 || m->wake_fd < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot make an eventfd "
			      "for a migration: %s", strerror(errno));
		if (m->cancel_fd >= 0)
			close(m->cancel_fd);
		free(m);
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	return m;
}

void ktm_migration_free(struct ktm_migration *m)
{
	if (!m)
		return;
	ktm_error_free(m->err);
	close(m->cancel_fd);
	close(m->wake_fd);
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

void ktm_migration_set_digest(struct ktm_migration *m, enum ktm_digest d)
{
	m->digest_alg = (uint16_t)d;
}

const char *ktm_digest_name(enum ktm_digest d)
{
	return d == KTM_DIGEST_XXH3_128 ? "xxh3" :
	       d == KTM_DIGEST_SHA256 ? "sha256" : NULL;
}

const char *ktm_phase_name(enum ktm_phase p)
{
	static const char *const names[KTM_PHASE_COUNT] = {
		[KTM_PHASE_SCAN] = "scan", [KTM_PHASE_SEND] = "send",
		[KTM_PHASE_RECV] = "recv", [KTM_PHASE_WRITE] = "write",
		[KTM_PHASE_HASH] = "hash", [KTM_PHASE_FINISH] = "finish",
	};

	return (unsigned int)p < KTM_PHASE_COUNT ? names[p] : NULL;
}

void ktm_migration_set_accept_timeout(struct ktm_migration *m, unsigned int ms)
{
	if (ms)
		m->accept_ms = ms;
}

void ktm_migration_set_io_timeout(struct ktm_migration *m, unsigned int ms)
{
	if (ms)
		m->io_ms = ms;
}

void ktm_migration_set_max_image_size(struct ktm_migration *m, uint64_t bytes)
{
	m->max_image = bytes;
}

void ktm_migration_set_force(struct ktm_migration *m, bool on)
{
	m->force = on;
}

void ktm_migration_set_log(struct ktm_migration *m, ktm_log_fn fn,
			   void *opaque)
{
	m->log = fn;
	m->log_opaque = opaque;
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

/* Record the first failure; wake everybody.  Takes @err.  The peer's
 * stated reason (its ABORT: ktm_error_peer_stop) replaces a broken
 * connection recorded before it: when the peer stops, another channel may
 * see the reset of its close before channel 0 reads the ABORT that says
 * why. */
void ktm_mig_fail(struct ktm_migration *m, struct ktm_error *err)
{
	unsigned int i;

	pthread_mutex_lock(&m->lock);
	if (m->err && ktm_error_peer_stop(err) && !ktm_error_peer_stop(m->err) &&
	    ktm_error_class(m->err) == KTM_ERR_PEER) {
		ktm_error_free(m->err);
		m->err = NULL;
	}
	if (!m->err) {
		if (!m->failed)
			m->cancel_at = ktm_now_s();
		m->err = err;
		err = NULL;
	}
	__atomic_store_n(&m->failed, true, __ATOMIC_RELEASE);
	/* Wake destination channels blocked in a receive.  Only the receive
	 * side: the calling thread still tells the peer why (ABORT,
	 * close_notify).  Not channel 0, which carries that ABORT: it waits
	 * for its frames in poll (wait_next_frame) and sees the failure
	 * there, with its TLS session intact (a read cut by SHUT_RD leaves
	 * OpenSSL's session unable to send).  Source channels never block in
	 * a receive (they poll), and their channel 0 must stay readable for
	 * the destination's ABORT; a send blocked on a peer that stopped
	 * reading ends at the I/O timeout (SO_SNDTIMEO). */
	for (i = 1; i < m->nch && !m->sending; i++)
		if (m->ch[i].s)
			shutdown(ktm_session_fd(m->ch[i].s), SHUT_RD);
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	ktm_error_free(err);
}

struct ktm_error *ktm_mig_chan_error(const struct ktm_migration *m,
				     unsigned int idx, struct ktm_error *err)
{
	struct ktm_error *e = NULL;
	const char *hint;
	int no = ktm_error_errno(err);

	/* a connection the kernel's timeout ended is named so by the
	 * session (eof_cause), whichever call saw the timeout first; a
	 * cancel is the whole migration's, not a channel's */
	if (strstr(ktm_error_message(err), "channel ") ||
	    ktm_error_class(err) == KTM_ERR_CANCELLED)
		ktm_error_set(&e, ktm_error_class(err), no, "%s",
			      ktm_error_message(err));
	else if (strstr(ktm_error_message(err), "the I/O timeout"))
		ktm_error_set(&e, KTM_ERR_PEER, no, "channel %u: %s of %u ms",
			      idx, ktm_error_message(err), m->io_ms);
	else
		ktm_error_set(&e, ktm_error_class(err), no, "channel %u: %s",
			      idx, ktm_error_message(err));
	if (ktm_error_peer_stop(err))
		ktm_error_set_peer_stop(e);
	hint = ktm_error_hint(err);
	if (no == ETIMEDOUT && !hint && strstr(ktm_error_message(err),
						"the I/O timeout"))
		hint = "the peer is frozen, overloaded or cut off; "
		       "--io-timeout sets how long to wait";
	if (hint)
		ktm_error_hint_set(&e, "%s", hint);
	ktm_error_free(err);
	return e;
}

void ktm_mig_fail_chan(struct ktm_migration *m, unsigned int idx,
		       struct ktm_error *err)
{
	ktm_mig_fail(m, ktm_mig_chan_error(m, idx, err));
}

void ktm_mig_tune_socket(const struct ktm_migration *m, int fd)
{
	struct timeval tv = { .tv_sec = m->io_ms / 1000,
			      .tv_usec = (m->io_ms % 1000) * 1000 };
	int on = 1, uto = (int)m->io_ms;
	int idle = m->io_ms >= 3000 ? (int)(m->io_ms / 3000) : 1;
	int cnt = 3;

	/* Not a TCP socket (a unix pair in a test): the options that do not
	 * apply fail, the timeouts still hold. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

void ktm_mig_send_abort(struct ktm_session *s, const struct ktm_error *err)
{
	const char *msg = ktm_error_message(err);
	size_t len = strlen(msg);
	struct ktm_frame f = { .type = KTM_F_ABORT,
			       .aux = (uint64_t)(ktm_error_errno(err) ?
						 ktm_error_errno(err) : EIO) };

	if (!s)
		return;
	f.len = (uint32_t)(len < 400 ? len : 400);
	ktm_mig_send_frame(s, &f, msg, NULL);
}

bool ktm_mig_recv_text(struct ktm_session *s, const struct ktm_frame *f,
		       char *text, size_t len, struct ktm_error **errp)
{
	uint8_t skip[256];
	uint32_t left = f->len, take = left < len - 1 ? left : (uint32_t)len - 1;

	if (!ktm_mig_recv_exact(s, text, take, errp))
		return false;
	text[take] = '\0';
	for (left -= take; left; ) {
		uint32_t n = left < sizeof(skip) ? left : sizeof(skip);

		if (!ktm_mig_recv_exact(s, skip, n, errp))
			return false;
		left -= n;
	}
	for (take = 0; text[take]; take++)
		if ((unsigned char)text[take] < 0x20)
			text[take] = ' ';	/* one line, whatever was sent */
	return true;
}

void ktm_mig_close_gently(struct ktm_session *s, unsigned int ms)
{
	if (!s)
		return;
	/* No FIN (SHUT_WR) here: ktm_mig_fail may have shut the receive side
	 * already, and data arriving in FIN_WAIT after that is answered
	 * with a RST (RFC 1122).  close_notify tells the peer we are done;
	 * once it closes, our close() sends a FIN, not a RST. */
	ktm_session_shutdown(s, NULL);
	ktm_mig_drain(ktm_session_fd(s), ms);
	ktm_session_free(s);
}

/*
 * Read and drop what arrives on @fd until its end or @ms.  On a kernel-TLS
 * socket poll() may wake before a whole record is there (the read then
 * says EAGAIN: wait on), and a control record needs room for its type
 * (recvmsg with a control buffer), or the read fails with EIO: either
 * ended the drain early, and the close with bytes unread became the RST
 * that swallowed our ABORT (seen in the 6.1 guest).
 */
void ktm_mig_drain(int fd, unsigned int ms)
{
	double end = ktm_now_s() + ms / 1000.0;
	char buf[4096], cbuf[CMSG_SPACE(sizeof(unsigned char))];

	for (;;) {
		double left = end - ktm_now_s();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
				      .msg_control = cbuf,
				      .msg_controllen = sizeof(cbuf) };
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			break;
		n = recvmsg(fd, &msg, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
		if (n < 0)
			usleep(1000);
	}
}

/* ---- cancellation ------------------------------------------------------ */

/* Async-signal-safe: lock-free atomics and write(2) only. */
void ktm_migration_cancel(struct ktm_migration *m, const char *by)
{
	uint64_t one = 1;
	int saved = errno;

	if (!m)
		return;
	__atomic_store_n(&m->cancel_by, by, __ATOMIC_RELAXED);
	__atomic_store_n(&m->cancelled, true, __ATOMIC_RELEASE);
	if (write(m->cancel_fd, &one, sizeof(one)) < 0)
		errno = saved;	/* the counter is full: readable already */
	errno = saved;
}

bool ktm_mig_cancelled(const struct ktm_migration *m)
{
	return __atomic_load_n(&m->cancelled, __ATOMIC_ACQUIRE);
}

struct ktm_error *ktm_mig_cancel_error(const struct ktm_migration *m)
{
	const char *by = __atomic_load_n(&m->cancel_by, __ATOMIC_RELAXED);
	struct ktm_error *e = NULL;

	if (!by)
		by = "the caller";
	if (m->sending)
		ktm_error_set(&e, KTM_ERR_CANCELLED, ECANCELED, "the migration "
			      "to %s:%s was cancelled by %s", m->host, m->port, by);
	else
		ktm_error_set(&e, KTM_ERR_CANCELLED, ECANCELED, "the migration "
			      "was cancelled by %s on the destination", by);
	ktm_error_hint_set(&e, "nothing was committed at the destination; "
			   "start the migration again when ready");
	return e;
}

/* Lock-free: asked before every frame.  The first thread that sees a
 * cancel makes it the migration's failure. */
bool ktm_mig_failed(struct ktm_migration *m)
{
	if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
		return true;
	if (!ktm_mig_cancelled(m))
		return false;
	ktm_mig_fail(m, ktm_mig_cancel_error(m));
	return true;
}

void ktm_mig_wake(struct ktm_migration *m)
{
	uint64_t one = 1;

	if (write(m->wake_fd, &one, sizeof(one)) < 0)
		return;		/* the counter is full: readable already */
}

void ktm_mig_woken(struct ktm_migration *m)
{
	uint64_t n;

	if (read(m->wake_fd, &n, sizeof(n)) < 0)
		return;		/* nothing was pending */
}

/*
 * A cancelled migration whose channel threads have not stopped after a
 * second is stuck in a send or receive to a peer that moves no data: shut
 * its sockets down so they end now, not at the I/O timeout (the peer
 * then sees the connection end without the reason).
 */
static void cut_if_stuck(struct ktm_migration *m)
{
	unsigned int i;

	if (!ktm_mig_cancelled(m) || m->cut || !m->cancel_at ||
	    ktm_now_s() - m->cancel_at < 1.0)
		return;
	m->cut = true;
	for (i = 0; i < m->nch && i < KTM_MAX_CHANNELS; i++)
		if (m->ch[i].s)
			shutdown(ktm_session_fd(m->ch[i].s), SHUT_RDWR);
}

/*
 * sendfile() and splice() into a socket whose peer is gone raise SIGPIPE
 * (they take no MSG_NOSIGNAL), and a library must not depend on its
 * caller's disposition of it: channel threads start with SIGPIPE blocked,
 * so the call fails with EPIPE, and a pending SIGPIPE dies with the thread.
 */
int ktm_mig_thread_start(pthread_t *thr, void *(*fn)(void *), void *arg)
{
	sigset_t pipe_set, old;
	int ret;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	ret = pthread_create(thr, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

uint64_t ktm_mig_done(struct ktm_migration *m)
{
	uint64_t done = 0;
	unsigned int i;

	for (i = 0; i < KTM_MAX_CHANNELS; i++)
		done += __atomic_load_n(&m->ch[i].done, __ATOMIC_RELAXED);
	return done;
}

void ktm_mig_fold(struct ktm_migration *m)
{
	unsigned int i, p;

	m->done = m->page_bytes = m->zero_bytes = m->wire_bytes = 0;
	memset(m->phase + 0, 0, sizeof(m->phase));
	for (i = 0; i < KTM_MAX_CHANNELS; i++) {
		struct ktm_chan *c = &m->ch[i];

		m->done += c->done;
		m->page_bytes += c->pages;
		m->zero_bytes += c->zeros;
		m->wire_bytes += c->wire;
		for (p = 0; p < KTM_PHASE_COUNT; p++)
			m->phase[p] += c->phase[p];
	}
}

void ktm_mig_lap(struct ktm_chan *c, enum ktm_phase p, double *t)
{
	double now = ktm_now_s();

	c->phase[p] += now - *t;
	*t = now;
}

bool ktm_mig_malformed(struct ktm_error **errp, const char *peer_role,
		       unsigned int ch, const char *why,
		       const struct ktm_frame *f)
{
	ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
		      "malformed migration stream from the %s on channel %u: "
		      "%s (frame type %u, offset %llu)", peer_role, ch, why,
		      f->type, (unsigned long long)f->offset);
	return false;
}

/* ---- the image digest ------------------------------------------------------ */

const uint8_t ktm_zero_page[KTM_PAGE_SIZE];

bool ktm_hash_init(struct ktm_hash *h, uint16_t alg, struct ktm_error **errp)
{
	h->alg = alg;
	if (alg == KTM_DIG_XXH3_128)
		h->xxh = XXH3_createState();
	else
		h->md = EVP_MD_CTX_new();
	if (!h->xxh && !h->md) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a digest state");
		return false;
	}
	ktm_hash_reset(h);
	return true;
}

void ktm_hash_reset(struct ktm_hash *h)
{
	if (h->xxh)
		XXH3_128bits_reset(h->xxh);
	else if (h->md)
		EVP_DigestInit_ex(h->md, EVP_sha256(), NULL);
}

void ktm_hash_update(struct ktm_hash *h, const void *p, size_t len)
{
	if (h->xxh)
		XXH3_128bits_update(h->xxh, p, len);
	else if (h->md)
		EVP_DigestUpdate(h->md, p, len);
}

/* Zero runs are hashed as the zeros they stand for, without reading
 * (or allocating) the image's pages. */
void ktm_hash_zeros(struct ktm_hash *h, uint64_t len)
{
	for (; len; len -= KTM_PAGE_SIZE)
		ktm_hash_update(h, ktm_zero_page, KTM_PAGE_SIZE);
}

void ktm_hash_final(struct ktm_hash *h, uint8_t out[KTM_DIGEST_LEN])
{
	memset(out, 0, KTM_DIGEST_LEN);
	if (h->xxh) {
		XXH128_canonical_t c;

		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h->xxh));
		memcpy(out, c.digest, sizeof(c.digest));
	} else if (h->md) {
		EVP_DigestFinal_ex(h->md, out, NULL);
	}
}

void ktm_hash_exit(struct ktm_hash *h)
{
	if (h->xxh)
		XXH3_freeState(h->xxh);
	EVP_MD_CTX_free(h->md);
	h->xxh = NULL;
	h->md = NULL;
}

bool ktm_mig_recv_exact(struct ktm_session *s, void *buf, size_t len,
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

bool ktm_mig_send_frame(struct ktm_session *s, const struct ktm_frame *f,
		       const void *payload, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	ktm_frame_encode(f, hdr);
	return ktm_session_send(s, hdr, sizeof(hdr), errp) &&
	       (!f->len || ktm_session_send(s, payload, f->len, errp));
}

bool ktm_mig_recv_frame(struct ktm_session *s, struct ktm_frame *f,
		       const char *peer_role, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	if (!ktm_mig_recv_exact(s, hdr, sizeof(hdr), errp))
		return false;
	if (ktm_frame_decode(hdr, f)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EBADMSG,
			      "malformed migration stream from the %s "
			      "(frame type %u)", peer_role, hdr[0]);
		return false;
	}
	return true;
}

/* The digest of the chunk digests in offset order (lib/STREAM.md). */
void ktm_mig_image_digest(struct ktm_migration *m, uint8_t out[KTM_DIGEST_LEN])
{
	unsigned int i, n = ktm_digest_len(m->digest);
	struct ktm_hash h = { 0 };
	uint64_t k;

	memset(out, 0, KTM_DIGEST_LEN);
	if (!ktm_hash_init(&h, m->digest, NULL))
		return;
	for (k = 0; k < m->nchunks; k++)
		ktm_hash_update(&h, m->chunk_digest[k], n);
	ktm_hash_final(&h, out);
	ktm_hash_exit(&h);
	for (i = 0; i < n; i++)
		sprintf(m->digest_hex + 2 * i, "%02x", out[i]);
}

void ktm_mig_note_session(struct ktm_migration *m, unsigned int i,
			 const struct ktm_session *s)
{
	const char *fb = ktm_session_fallback_reason(s);

	m->path[i] = ktm_session_path(s, KTM_DIR_TX);
	if (i == 0) {
		m->version = ktm_session_version(s);
		m->cipher = ktm_session_cipher(s);
		snprintf(m->fallback, sizeof(m->fallback), "%s", fb ? fb : "");
		snprintf(m->peer_subject, sizeof(m->peer_subject), "%s",
			 ktm_session_peer_subject(s));
		snprintf(m->peer_sans, sizeof(m->peer_sans), "%s",
			 ktm_session_peer_sans(s));
		snprintf(m->peer_issuer, sizeof(m->peer_issuer), "%s",
			 ktm_session_peer_issuer(s));
		snprintf(m->peer_spki, sizeof(m->peer_spki), "%s",
			 ktm_session_peer_spki_sha256(s));
	}
}

void ktm_mig_session_totals(struct ktm_migration *m, const struct ktm_session *s,
			   enum ktm_dir dir)
{
	pthread_mutex_lock(&m->lock);
	m->rekeys += ktm_session_rekeys(s, dir);
	pthread_mutex_unlock(&m->lock);
}

/* Wait for the channel threads, calling the progress callback. */
void ktm_mig_wait_channels(struct ktm_migration *m)
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
		if (ktm_mig_cancelled(m) && !m->failed) {
			pthread_mutex_unlock(&m->lock);
			ktm_mig_failed(m);	/* records the cancel */
			pthread_mutex_lock(&m->lock);
		}
		cut_if_stuck(m);
		if (m->progress) {
			uint64_t done = ktm_mig_done(m);

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

void ktm_mig_finish(struct ktm_migration *m, double t0, bool ok)
{
	unsigned int i;

	free(m->chunk_digest);
	m->chunk_digest = NULL;
	for (i = 0; i < KTM_MAX_CHANNELS; i++)
		ktm_hash_exit(&m->ch[i].hash);
	ktm_mig_fold(m);
	m->seconds = ktm_now_s() - t0;
	if (m->progress && ok)
		m->progress(m->size, m->size, m->progress_opaque);
}

void ktm_mig_channel_exit(struct ktm_migration *m)
{
	pthread_mutex_lock(&m->lock);
	m->running--;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	ktm_mig_wake(m);
}

void ktm_mig_chan_release(struct ktm_chan *c)
{
	free(c->stage);
	c->stage = NULL;
	free(c->slots);
	c->slots = NULL;
	free(c->rbuf);
	c->rbuf = NULL;
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

const char *ktm_migration_peer(const struct ktm_migration *m,
			       enum ktm_peer_field f)
{
	switch (f) {
	case KTM_PEER_SUBJECT:
		return m->peer_subject;
	case KTM_PEER_SANS:
		return m->peer_sans;
	case KTM_PEER_ISSUER:
		return m->peer_issuer;
	case KTM_PEER_SPKI_SHA256:
		return m->peer_spki;
	}
	return "";
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

enum ktm_digest ktm_migration_digest_type(const struct ktm_migration *m)
{
	return (enum ktm_digest)m->digest;
}

double ktm_migration_phase_seconds(const struct ktm_migration *m,
				   enum ktm_phase p)
{
	return (unsigned int)p < KTM_PHASE_COUNT ? m->phase[p] : 0;
}

unsigned int ktm_migration_requests_served(const struct ktm_migration *m)
{
	return m->served;
}
