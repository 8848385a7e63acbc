// SPDX-License-Identifier: MIT
/*
 * The relay, a plain-fd view of a session: the byte pump for one
 * connection, splice between the plain socket and the kernel-TLS socket
 * (one thread per direction), or OpenSSL through the session on the
 * userspace path (one thread, poll); end-of-stream and failure handling.
 *
 * Threads: on the kernel path the two threads share the session only as
 * far as the kernel allows: the downstream thread is the only one that
 * calls ktm_session_recv(), the upstream thread the only one that calls
 * ktm_session_shutdown(); data moves by splice on the fd.  On the
 * userspace path OpenSSL owns the socket and one thread does both
 * directions.  ktm_proxy_conn_fail() may come from any thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "relay.h"

/* ---- one connection ---------------------------------------------------------- */

static void conn_init(struct ktm_proxy_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->local = -1;
	c->tls = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->t0 = ktm_now_s();
}

/*
 * Record the first failure (takes @err) and cut the connection both ways
 * so the other direction's blocked call returns.
 */
/* The plain side of a failed connection: a TCP peer gets a reset (a FIN
 * would read as the stream's clean end; a disconnect, connect(2) with
 * AF_UNSPEC, resets and wakes every thread blocked on the socket); a unix
 * socket can only be shut down. */
static void cut_local(int fd)
{
	struct sockaddr unspec = { .sa_family = AF_UNSPEC };
	int dom = 0;
	socklen_t len = sizeof(dom);

	if (!getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) &&
	    (dom == AF_INET || dom == AF_INET6) &&
	    !connect(fd, &unspec, sizeof(unspec)))
		return;
	shutdown(fd, SHUT_RDWR);
}

void ktm_proxy_conn_fail(struct ktm_proxy_conn *c, struct ktm_error *err)
{
	pthread_mutex_lock(&c->lock);
	if (!c->err && !c->aborted) {
		c->err = err;
		err = NULL;
	}
	c->aborted = true;
	/* TLS side first: the EOF that cutting the plain side causes must
	 * never turn into a close_notify, which would make the truncated
	 * stream look complete to the peer (the relay also checks
	 * c->aborted before it ends a direction in order). */
	if (!c->closed) {
		if (c->tls >= 0)
			shutdown(c->tls, SHUT_RDWR);
		if (c->local >= 0)
			cut_local(c->local);
	}
	pthread_mutex_unlock(&c->lock);
	ktm_error_free(err);
}

static bool conn_aborted(struct ktm_proxy_conn *c)
{
	bool a;

	pthread_mutex_lock(&c->lock);
	a = c->aborted;
	pthread_mutex_unlock(&c->lock);
	return a;
}

static void fail_local(struct ktm_proxy_conn *c, int err, const char *doing)
{
	struct ktm_error *e = NULL;

	if (conn_aborted(c))
		return;
	ktm_error_set(&e, KTM_ERR_IO, err, "cannot %s %s: %s", doing,
		      c->local_name, strerror(err));
	if (err == EPIPE || err == ECONNRESET)
		ktm_error_hint_set(&e, "QEMU closed its migration socket while "
				   "data was still flowing; its log says why");
	ktm_proxy_conn_fail(c, e);
}

static void fail_tls(struct ktm_proxy_conn *c, int err, bool sending)
{
	const char *doing = sending ? "sending to" : "receiving from";
	struct ktm_error *e = NULL;

	if (conn_aborted(c))
		return;
	if (err == 0)	/* the kernel may know better than end of file */
		err = ktm_net_end_cause(c->tls);
	if (err == 0)
		ktm_error_set(&e, KTM_ERR_PEER, ECONNRESET,
			      "%s closed the connection without TLS "
			      "close_notify (truncated)", c->peer);
	else if (err == EPIPE || err == ECONNRESET)
		ktm_error_set(&e, KTM_ERR_PEER, err,
			      "connection to %s lost while %s: %s", c->peer,
			      sending ? "sending" : "receiving", strerror(err));
	else if (err == ETIMEDOUT || err == EAGAIN)
		ktm_error_set(&e, KTM_ERR_PEER, ETIMEDOUT,
			      "connection to %s timed out while %s: the peer "
			      "took none of our bytes or stopped answering "
			      "within the I/O timeout (--io-timeout)", c->peer,
			      sending ? "sending" : "receiving");
	else if (err == EBADMSG)
		ktm_error_set(&e, KTM_ERR_TLS_PROTOCOL, err,
			      "a TLS record from %s failed authentication "
			      "(tampered or corrupted in transit)", c->peer);
	else
		ktm_error_set(&e, KTM_ERR_IO, err, "%s %s failed: %s", doing,
			      c->peer, strerror(err));
	ktm_proxy_conn_fail(c, e);
}

static void fail_err(struct ktm_proxy_conn *c, struct ktm_error *e)
{
	if (conn_aborted(c))
		ktm_error_free(e);
	else
		ktm_proxy_conn_fail(c, e);
}

/*
 * Before sending up to @want bytes towards the TLS peer: the KeyUpdate the
 * peer asked for, and a new key before the key-usage limit (RFC 8446
 * §5.5).  Returns how many bytes may go now, each sending call making at
 * most one record per TLS_RECORD_MAX bytes; 0 after failing the
 * connection (when the key cannot be updated in place, it stops before
 * the limit rather than run past it).  Only the thread that owns TX calls
 * this, so the send key changes under no other thread's feet.
 */
static size_t tx_allowance(struct ktm_proxy_conn *c, size_t want)
{
	uint64_t limit = ktm_session_key_limit(c->s), used, room;
	struct ktm_error *e = NULL;

	if (ktm_session_rekey_owed(c->s) && !ktm_session_rekey(c->s, &e))
		goto fail;
	if (!limit)
		return want;
	used = ktm_session_key_records(c->s, KTM_DIR_TX);
	if (used + 2 > limit) {
		if (!ktm_session_can_rekey(c->s)) {
			ktm_error_set(&e, KTM_ERR_KTLS_UNSUPPORTED, EKEYEXPIRED,
				      "stopped the connection to %s before its TLS "
				      "key's usage limit (%llu of %llu records "
				      "sealed): %s", c->peer,
				      (unsigned long long)used,
				      (unsigned long long)limit,
				      ktm_session_version(c->s) != KTM_TLS_1_3 ?
				      "TLS 1.2 has no KeyUpdate" :
				      "this kernel cannot update keys in place "
				      "(needs 6.14)");
			ktm_error_hint_set(&e, "TLS 1.3 on a 6.14+ kernel rekeys "
					   "in place; ChaCha20-Poly1305 has no such "
					   "limit");
			goto fail;
		}
		if (!ktm_session_rekey(c->s, &e))
			goto fail;
		used = ktm_session_key_records(c->s, KTM_DIR_TX);
	}
	room = (limit - used - 1) * TLS_RECORD_MAX;
	return want < room ? want : (size_t)room;
fail:
	fail_err(c, e);
	return 0;
}

static bool write_all(int fd, const uint8_t *p, size_t len, int *err)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*err = errno;
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static bool make_pipe(struct ktm_proxy_conn *c, int pfd[2])
{
	struct ktm_error *e = NULL;

	if (pipe2(pfd, O_CLOEXEC)) {
		ktm_error_set(&e, KTM_ERR_IO, errno, "cannot make a pipe for "
			      "splice: %s", strerror(errno));
		fail_err(c, e);
		return false;
	}
	fcntl(pfd[1], F_SETPIPE_SZ, PIPE_BYTES);	/* a hint, see PIPE_BYTES */
	return true;
}

/* Move @n bytes sitting in the pipe to @out; false after ktm_proxy_conn_fail(). */
static bool drain_pipe(struct ktm_proxy_conn *c, int pipe_rd, int out,
		       size_t n, bool to_tls, enum ktm_dir dir)
{
	while (n) {
		size_t now = to_tls ? tx_allowance(c, n) : n;
		ssize_t m;

		if (!now)
			return false;
		m = splice(pipe_rd, NULL, out, NULL, now, SPLICE_F_MOVE);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0) {
			int err = m < 0 ? errno : EPIPE;

			if (to_tls)
				fail_tls(c, err, true);
			else
				fail_local(c, err, "write to");
			return false;
		}
		n -= (size_t)m;
		c->bytes[dir] += (uint64_t)m;
	}
	return true;
}

/* Userspace path: the records gathered by user_tune()'s buffer out to
 * the socket, in one send; false after ktm_proxy_conn_fail(). */
static bool user_flush(struct ktm_proxy_conn *c)
{
	SSL *ssl = ktm_session_ssl(c->s);

	if (!c->wbuf || BIO_flush(SSL_get_wbio(ssl)) == 1)
		return true;
	fail_tls(c, errno ? errno : EIO, true);
	return false;
}

/* The plain side ended: close_notify, then FIN, towards the TLS peer. */
static void end_upstream(struct ktm_proxy_conn *c)
{
	struct ktm_error *e = NULL;

	if (!ktm_session_shutdown(c->s, &e)) {
		fail_err(c, e);
		return;
	}
	if (!user_flush(c))
		return;
	shutdown(c->tls, SHUT_WR);
	pthread_mutex_lock(&c->lock);
	c->up_done = true;
	pthread_mutex_unlock(&c->lock);
}

/*
 * Under KTM_PEER_END_QEMU_TLS, whether a receive that returned @n (errno
 * @err) is how a QEMU with its own TLS ends: a FIN, or a reset once our
 * close_notify is out (QEMU closes without reading it, and an unread
 * close_notify makes the kernel answer with RST).
 */
static bool qemu_tls_end(struct ktm_proxy_conn *c, ssize_t n, int err)
{
	bool up_done;

	if (!c->fin_ok || n > 0)
		return false;
	if (n == 0)
		return true;
	pthread_mutex_lock(&c->lock);
	up_done = c->up_done;
	pthread_mutex_unlock(&c->lock);
	return err == ECONNRESET && (up_done || c->peer_gone);
}

static void set_down_done(struct ktm_proxy_conn *c)
{
	pthread_mutex_lock(&c->lock);
	c->down_done = true;
	pthread_mutex_unlock(&c->lock);
}

/*
 * Under KTM_PEER_END_QEMU_TLS, whether reading the local QEMU failed with
 * @err because it closed with bytes unread after the peer's direction had
 * ended (a migration over with the peer's trailing bytes unread, seen
 * with QEMU 10 receiving multifd from QEMU 7.2): its end of the stream.
 */
static bool peer_ends_next(struct ktm_proxy_conn *c, int ms);

static bool local_reset_after_end(struct ktm_proxy_conn *c, int err)
{
	bool done;

	if (!c->fin_ok || err != ECONNRESET)
		return false;
	pthread_mutex_lock(&c->lock);
	done = c->down_done;
	pthread_mutex_unlock(&c->lock);
	/* or about to end: QEMU 10 may close a multifd channel from QEMU
	 * 7.2 as soon as its migration is over, before 7.2's FIN arrives */
	return done || peer_ends_next(c, 1000);
}

/* Kernel path, plain side -> TLS peer. */
static void *kernel_up(void *arg)
{
	struct ktm_proxy_conn *c = arg;
	sigset_t pipe_set;
	int pfd[2];

	/* splice(2) into a closed socket raises SIGPIPE and has no
	 * MSG_NOSIGNAL: keep it thread-directed and blocked (it is dropped
	 * with the thread). */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
	if (!make_pipe(c, pfd))
		return NULL;
	for (;;) {
		ssize_t n = splice(c->local, NULL, pfd[1], NULL, PIPE_BYTES,
				   SPLICE_F_MOVE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && !local_reset_after_end(c, errno)) {
			fail_local(c, errno, "read from");
			break;
		}
		if (n <= 0) {
			if (!conn_aborted(c))
				end_upstream(c);
			break;
		}
		if (!drain_pipe(c, pfd[0], c->tls, (size_t)n, true, KTM_DIR_TX))
			break;
	}
	close(pfd[0]);
	close(pfd[1]);
	return NULL;
}

/*
 * splice(2) out of a kTLS socket fails with EINVAL when the next record is
 * not application data (tls_sw_splice_read): read that record through the
 * session, which says what it is.  Returns 1 at close_notify, 0 to go on,
 * -1 after ktm_proxy_conn_fail().
 */
static int kernel_control(struct ktm_proxy_conn *c)
{
	uint8_t buf[16384 + 256];
	struct ktm_error *e = NULL;
	ssize_t n;
	int err;

	n = ktm_session_recv(c->s, buf, sizeof(buf), &e);
	if (n < 0) {
		fail_err(c, e);
		return -1;
	}
	if (n == 0)
		return 1;
	if (!write_all(c->local, buf, (size_t)n, &err)) {
		fail_local(c, err, "write to");
		return -1;
	}
	c->bytes[KTM_DIR_RX] += (uint64_t)n;
	return 0;
}

/* Kernel path, TLS peer -> plain side. */
static void kernel_down(struct ktm_proxy_conn *c)
{
	int pfd[2], ret;

	if (!make_pipe(c, pfd))
		return;
	for (;;) {
		ssize_t n = splice(c->tls, NULL, pfd[1], NULL, PIPE_BYTES,
				   SPLICE_F_MOVE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL) {
			ret = kernel_control(c);
			if (ret == 1) {
				set_down_done(c);
				shutdown(c->local, SHUT_WR);
			}
			if (ret)
				break;
			continue;
		}
		if (qemu_tls_end(c, n, errno)) {
			/* a QEMU-TLS peer's FIN (ktm_proxy_conn_set_peer_end) */
			c->peer_fin = true;
			set_down_done(c);
			shutdown(c->local, SHUT_WR);
			break;
		}
		if (n <= 0) {
			fail_tls(c, n < 0 ? errno : 0, false);
			break;
		}
		if (!drain_pipe(c, pfd[0], c->local, (size_t)n, false, KTM_DIR_RX))
			break;
	}
	close(pfd[0]);
	close(pfd[1]);
}

static void relay_kernel(struct ktm_proxy_conn *c)
{
	struct ktm_error *e = NULL;
	pthread_t up;
	int ret;

	ret = pthread_create(&up, NULL, kernel_up, c);
	if (ret) {
		ktm_error_set(&e, KTM_ERR_IO, ret, "cannot start a relay thread "
			      "for %s: %s", c->peer, strerror(ret));
		ktm_proxy_conn_fail(c, e);
		return;
	}
	kernel_down(c);
	pthread_join(up, NULL);
}

/*
 * Under KTM_PEER_END_QEMU_TLS: whether the peer's end (qemu_tls_end) is all
 * that is left to read.  OpenSSL reads no further than the record it
 * returns (read-ahead is off, and each ktm_session_recv() has room for a
 * whole record), so a FIN seen here came between two records.
 */
static bool peer_fin_now(struct ktm_proxy_conn *c)
{
	ssize_t n;
	char b;

	if (!c->fin_ok)
		return false;
	n = recv(c->tls, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return qemu_tls_end(c, n, errno);
}

/* The most a TLS record takes on the wire (RFC 8446 §5.2: a 5-byte
 * header, up to 2^14 bytes and 256 of expansion), and what gathering
 * wants queued beyond that: room for control records (a KeyUpdate is
 * about 30 bytes) that ktm_session_recv() takes unseen on its way. */
#define TLS_WIRE_MAX (5 + TLS_RECORD_MAX + 256)
#define TLS_AHEAD_MIN (TLS_WIRE_MAX + 4096)

/* Bytes queued on @fd to read (0 if unknown). */
static size_t queued(int fd)
{
	int q = 0;

	return ioctl(fd, FIONREAD, &q) == 0 && q > 0 ? (size_t)q : 0;
}

/* Bytes of the peer's that the buffer BIO read and OpenSSL did not take
 * yet (user_tune). */
static size_t tls_held(struct ktm_proxy_conn *c)
{
	return c->rbuf ? BIO_ctrl_pending(SSL_get_rbio(ktm_session_ssl(c->s)))
		       : 0;
}

/* Under KTM_PEER_END_QEMU_TLS: whether the peer's FIN arrives within @ms
 * with nothing of the peer's before it, read or unread. */
static bool peer_ends_next(struct ktm_proxy_conn *c, int ms)
{
	struct pollfd p = { .fd = c->tls, .events = POLLIN };
	SSL *ssl = ktm_session_ssl(c->s);
	char b;

	if (tls_held(c) || (ssl && SSL_pending(ssl)))
		return false;
	if (poll(&p, 1, ms) != 1)
		return false;
	return recv(c->tls, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/*
 * Whether the next record of the peer's is surely all there: what the
 * buffer holds and what is queued on the socket (asked only when the
 * buffer is short) make more than the largest record and some control
 * records.
 */
static bool next_record_ready(struct ktm_proxy_conn *c)
{
	size_t held = tls_held(c);

	if (c->rbuf)	/* the next read takes what is queued anyway */
		return held >= TLS_AHEAD_MIN;
	return queued(c->tls) >= TLS_AHEAD_MIN;
}

/* How long a QEMU-TLS peer may go on after QEMU closed its side. */
#define LOCAL_GONE_S 2.0

/*
 * Under KTM_PEER_END_QEMU_TLS, writing to QEMU failed with @err: QEMU
 * closed its side.  QEMU 7.2 and 10 close a multifd channel as soon as
 * their migration is over, and its last bytes from a QEMU 7.2 source may
 * still be on the way: what comes until the peer's FIN is dropped, and
 * the FIN ends the connection as usual, if it comes within LOCAL_GONE_S
 * (relay_userspace); QEMU's own status says whether it loaded the
 * stream.
 */
static bool local_gone_first(struct ktm_proxy_conn *c, int err)
{
	if (!c->fin_ok || (err != EPIPE && err != ECONNRESET))
		return false;
	c->local_gone = ktm_now_s();
	c->local_err = err;
	return true;
}

/* local_gone_first() the other way: sending to a QEMU-TLS peer failed
 * with @e (taken when true) because it closed its side. */
static bool peer_gone_first(struct ktm_proxy_conn *c, struct ktm_error *e)
{
	int err = ktm_error_errno(e);

	if (!c->fin_ok || (err != EPIPE && err != ECONNRESET))
		return false;
	c->peer_gone = ktm_now_s();
	c->peer_err = e;
	return true;
}

/*
 * Userspace path, TLS peer -> plain side: one record per
 * ktm_session_recv(), gathered while the next is already there
 * (next_record_ready: no poll per record), so QEMU is woken once per
 * USER_BUF rather than per 16 KiB record.  Each call gets room for a
 * whole record (see USER_BUF).  Returns 1 at close_notify (after
 * delivering what came before it), 0 to go on, -1 after
 * ktm_proxy_conn_fail().
 */
static int user_down(struct ktm_proxy_conn *c, uint8_t *buf)
{
	struct ktm_error *e = NULL;
	size_t have = 0;
	int ret = 0, err;
	ssize_t n;

	do {
		if (peer_fin_now(c)) {
			c->peer_fin = true;
			ret = 1;
			break;
		}
		n = ktm_session_recv(c->s, buf + have, USER_BUF - have, &e);
		if (n < 0) {
			fail_err(c, e);
			return -1;
		}
		if (n == 0) {
			ret = 1;
			break;
		}
		have += (size_t)n;
	} while (USER_BUF - have >= TLS_RECORD_MAX && next_record_ready(c));
	if (have && !c->local_gone && !write_all(c->local, buf, have, &err) &&
	    !local_gone_first(c, err)) {
		fail_local(c, err, "write to");
		return -1;
	}
	if (!c->local_gone)
		c->bytes[KTM_DIR_RX] += have;
	return ret;
}

/* Userspace path, plain side -> TLS peer, in slices the key limit allows,
 * sent in one go at the end.  false after ktm_relay_conn_fail(). */
static bool user_up(struct ktm_proxy_conn *c, const uint8_t *buf, size_t n)
{
	struct ktm_error *e = NULL;

	while (n && !c->peer_gone) {
		size_t now = tx_allowance(c, n);

		if (!now)
			return false;
		if (!ktm_session_send(c->s, buf, now, &e)) {
			if (peer_gone_first(c, e))
				return true;
			fail_err(c, e);
			return false;
		}
		c->bytes[KTM_DIR_TX] += (uint64_t)now;
		buf += now;
		n -= now;
	}
	return c->peer_gone || user_flush(c);
}

/*
 * Userspace path, a peer that ends with close_notify: reading QEMU failed
 * with @err because QEMU closed with bytes of ours unread.  QEMU 7.2
 * closes a multifd channel so once its migration is over; then the
 * peer's next record is its close_notify (its QEMU closed too), taken
 * here, and the connection ends as usual.  Data instead is a failure.
 */
static bool user_reset_at_end(struct ktm_proxy_conn *c, int err)
{
	struct pollfd p = { .fd = c->tls, .events = POLLIN };
	char b;

	if (c->fin_ok || err != ECONNRESET)
		return false;
	if (!ktm_session_readable(c->s) && poll(&p, 1, 1000) != 1)
		return false;
	if (ktm_session_recv(c->s, &b, 1, NULL) != 0)
		return false;
	set_down_done(c);
	return true;
}

/* relay_userspace(): QEMU's side is readable: read it and send it on, or
 * end the upstream direction at its EOF; false when the relay must stop. */
static bool user_local(struct ktm_proxy_conn *c, uint8_t *buf, bool *up_open)
{
	ssize_t n;

	if (c->local_gone)	/* user_gone() ends our direction */
		return true;
	n = recv(c->local, buf, USER_BUF, 0);

	if (n < 0 && errno == EINTR)
		return true;
	if (n < 0 && (local_reset_after_end(c, errno) ||
		      user_reset_at_end(c, errno)))
		n = 0;
	if (n < 0) {
		fail_local(c, errno, "read from");
		return false;
	}
	if (n == 0) {
		if (conn_aborted(c))
			return false;
		*up_open = false;
		if (!c->peer_gone)
			end_upstream(c);
		return true;
	}
	return user_up(c, buf, (size_t)n);
}

/*
 * Userspace path: a buffer BIO in front of the socket, for fewer system
 * calls per MiB.  Sending, the records of one user_up() gather in it and
 * leave in one send (user_flush) instead of one per record; OpenSSL's own
 * alerts and handshake messages flush it too.  Receiving (c->rbuf), one
 * read takes whatever is queued, up to USER_BUF, instead of two per
 * record; what it holds is counted (tls_held), since poll() cannot see
 * it.  Not for a QEMU-TLS peer, whose FIN must be seen right after the
 * record before it (peer_fin_now): there only sends are gathered.
 * Skipped if OpenSSL refuses: the relay works the same, with more calls.
 */
static void user_tune(struct ktm_proxy_conn *c)
{
	SSL *ssl = ktm_session_ssl(c->s);
	BIO *sock = ssl ? SSL_get_wbio(ssl) : NULL, *buf;

	if (!sock || SSL_get_rbio(ssl) != sock)
		return;
	buf = BIO_new(BIO_f_buffer());
	if (!buf || BIO_set_write_buffer_size(buf, USER_BUF + 64 * 1024) != 1 ||
	    BIO_set_read_buffer_size(buf, USER_BUF) != 1 || !BIO_up_ref(sock)) {
		BIO_free(buf);
		return;
	}
	/* the chain holds the reference just taken; the SSL drops the ones
	 * it held on @sock and takes @buf instead */
	BIO_push(buf, sock);
	if (c->fin_ok) {
		SSL_set0_wbio(ssl, buf);
	} else {
		SSL_set_bio(ssl, buf, buf);
		c->rbuf = true;
	}
	c->wbuf = true;
}

/* relay_userspace(): the peer's side is readable (or the buffer BIO holds
 * bytes of it); false when the relay must stop. */
static bool user_peer(struct ktm_proxy_conn *c, uint8_t *buf, bool *down_open)
{
	int ret = user_down(c, buf);

	if (ret < 0)
		return false;
	if (ret == 1) {
		*down_open = false;
		set_down_done(c);
		shutdown(c->local, SHUT_WR);
	}
	return true;
}

/* relay_userspace() after local_gone_first() or peer_gone_first(): the
 * gone side's direction ends; true (failed) when the other side did not
 * end within LOCAL_GONE_S. */
static bool user_gone(struct ktm_proxy_conn *c, bool *up_open, bool down_open)
{
	struct ktm_error *e = c->peer_err;

	if (c->local_gone && *up_open) {
		*up_open = false;
		end_upstream(c);
	}
	if (c->local_gone && down_open &&
	    ktm_now_s() - c->local_gone >= LOCAL_GONE_S) {
		fail_local(c, c->local_err, "write to");
		return true;
	}
	if (c->peer_gone && *up_open &&
	    ktm_now_s() - c->peer_gone >= LOCAL_GONE_S) {
		c->peer_err = NULL;
		fail_err(c, e);
		return true;
	}
	return false;
}

/* relay_userspace(), before each wait: the directions that ended by
 * user_reset_at_end() or user_gone(); false when the relay must stop. */
static bool user_ends(struct ktm_proxy_conn *c, bool *up_open, bool *down_open,
		      bool gone)
{
	if (*down_open && c->down_done) {	/* user_reset_at_end() */
		*down_open = false;
		shutdown(c->local, SHUT_WR);
	}
	if (gone && user_gone(c, up_open, *down_open))
		return false;
	return *up_open || *down_open;
}

/* relay_userspace(): one wait on both sides and what it found; false
 * when the relay must stop. */
static bool user_step(struct ktm_proxy_conn *c, uint8_t *buf, bool *up_open,
		      bool *down_open)
{
	struct pollfd pf[2] = { { .events = POLLIN }, { .events = POLLIN } };
	bool held = *down_open && tls_held(c);
	bool gone = c->local_gone || c->peer_gone;
	struct ktm_error *e = NULL;

	if (!user_ends(c, up_open, down_open, gone))
		return false;
	pf[0].fd = *up_open ? c->local : -1;
	pf[1].fd = *down_open ? c->tls : -1;
	if (poll(pf, 2, held ? 0 : gone ? 100 : -1) < 0) {
		if (errno == EINTR)
			return true;
		ktm_error_set(&e, KTM_ERR_IO, errno, "poll failed: %s",
			      strerror(errno));
		ktm_proxy_conn_fail(c, e);
		return false;
	}
	if ((pf[1].revents || held) && !user_peer(c, buf, down_open))
		return false;
	return !pf[0].revents || user_local(c, buf, up_open);
}

/* Userspace path: OpenSSL may not be used from two threads, so one thread
 * polls both sockets. */
static void relay_userspace(struct ktm_proxy_conn *c)
{
	bool up_open = true, down_open = true;
	struct ktm_error *e = NULL;
	uint8_t *buf;

	buf = malloc(USER_BUF);
	if (!buf) {
		ktm_error_set(&e, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a relay buffer");
		ktm_proxy_conn_fail(c, e);
		return;
	}
	user_tune(c);
	while ((up_open || down_open) && !conn_aborted(c) &&
	       user_step(c, buf, &up_open, &down_open))
		;
	free(buf);
}

static void relay_run(struct ktm_proxy_conn *c)
{
	int one = 1;

	/* The session turns Nagle back on after the handshake, right for a
	 * sender that batches.  The proxy forwards whatever QEMU wrote as
	 * soon as it arrives, in large chunks or as small return-path
	 * messages (postcopy page requests) that must not wait for an ACK:
	 * on loopback Nagle halved the throughput of a 1 GiB migration. */
	setsockopt(c->tls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ktm_session_path(c->s, KTM_DIR_TX) == KTM_PATH_USERSPACE ||
	    ktm_session_path(c->s, KTM_DIR_RX) == KTM_PATH_USERSPACE)
		relay_userspace(c);
	else
		relay_kernel(c);
}

/* Report, then close both sockets and free the session. */
void ktm_proxy_conn_finish(struct ktm_proxy_conn *c, ktm_proxy_report_fn report,
			   void *opaque)
{
	c->t1 = ktm_now_s();
	if (report)
		report(c, c->err, opaque);
	pthread_mutex_lock(&c->lock);
	c->closed = true;
	pthread_mutex_unlock(&c->lock);
	ktm_session_free(c->s);
	c->s = NULL;
	c->tls = -1;
	if (c->local >= 0)
		close(c->local);
	c->local = -1;
}

bool ktm_proxy_relay(struct ktm_session *s, int local_fd,
		     ktm_proxy_report_fn report, void *opaque,
		     struct ktm_error **errp)
{
	struct ktm_proxy_conn c;
	sigset_t pipe_set, old, pending;
	bool was_pending, ok;

	conn_init(&c);
	c.s = s;
	c.tls = ktm_session_fd(s);
	c.local = local_fd;
	ktm_fd_addr_text(c.tls, true, c.peer, sizeof(c.peer));
	snprintf(c.local_name, sizeof(c.local_name), "local socket fd %d",
		 local_fd);

	/* No SIGPIPE from splice(2) for the caller: block it here, consume
	 * one we caused, restore. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);

	relay_run(&c);
	ktm_proxy_conn_finish(&c, report, opaque);

	sigpending(&pending);
	if (!was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = { 0, 0 };

		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	ok = !c.err;
	ktm_error_propagate(errp, c.err);
	pthread_mutex_destroy(&c.lock);
	return ok;
}


/* ---- connections made by the caller's accept loop --------------------------- */

struct ktm_proxy_conn *ktm_proxy_conn_new(unsigned int id, const char *peer,
					  const char *local,
					  struct ktm_error **errp)
{
	struct ktm_proxy_conn *c = malloc(sizeof(*c));

	if (!c) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for the connection from %s", peer);
		return NULL;
	}
	conn_init(c);
	c->id = id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	snprintf(c->local_name, sizeof(c->local_name), "%s", local);
	return c;
}

void ktm_proxy_conn_attach(struct ktm_proxy_conn *c, struct ktm_session *s,
			   int local_fd)
{
	pthread_mutex_lock(&c->lock);
	c->s = s;
	c->tls = s ? ktm_session_fd(s) : -1;
	c->local = local_fd;
	pthread_mutex_unlock(&c->lock);
}

void ktm_proxy_conn_run(struct ktm_proxy_conn *c)
{
	sigset_t pipe_set;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
	if (c->s && c->local >= 0 && !conn_aborted(c))
		relay_run(c);
}

const struct ktm_error *ktm_proxy_conn_error(const struct ktm_proxy_conn *c)
{
	return c->err;
}

void ktm_proxy_conn_free(struct ktm_proxy_conn *c)
{
	if (!c)
		return;
	ktm_error_free(c->err);
	ktm_error_free(c->peer_err);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ---- connection status ----------------------------------------------------- */

unsigned int ktm_proxy_conn_id(const struct ktm_proxy_conn *conn)
{
	return conn->id;
}

void ktm_proxy_conn_set_peer_end(struct ktm_proxy_conn *c,
				  enum ktm_peer_end end)
{
	c->fin_ok = end == KTM_PEER_END_QEMU_TLS;
}

bool ktm_proxy_conn_peer_fin(const struct ktm_proxy_conn *conn)
{
	return conn->peer_fin;
}

const char *ktm_proxy_conn_peer(const struct ktm_proxy_conn *conn)
{
	return conn->peer;
}

const char *ktm_proxy_conn_local(const struct ktm_proxy_conn *conn)
{
	return conn->local_name;
}

const struct ktm_session *ktm_proxy_conn_session(const struct ktm_proxy_conn *conn)
{
	return conn->s;
}

uint64_t ktm_proxy_conn_bytes(const struct ktm_proxy_conn *conn,
			      enum ktm_dir dir)
{
	return conn->bytes[dir == KTM_DIR_RX];
}

double ktm_proxy_conn_seconds(const struct ktm_proxy_conn *conn)
{
	return (conn->t1 > 0 ? conn->t1 : conn->t0) - conn->t0;
}
