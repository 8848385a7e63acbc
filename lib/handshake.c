// SPDX-License-Identifier: MIT
/*
 * A session's handshake: connect or accept (or a caller's socket), the
 * TLS handshake (tls.c), the checks on the peer, then the keys into the
 * kernel (ktls/) or, by policy, userspace TLS; the pre-migration checks
 * run before any application data.
 *
 * It is one state machine stepped by ktm_session_handshake() (TLS, a
 * linger after refusing the peer, the check hook), never blocking; the
 * blocking calls run it under poll(2).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "ktls.h"
#include "session.h"
#include "tls.h"

/* ---- peer identity -------------------------------------------------------- */

static void hex(const uint8_t *d, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
	out[2 * n] = '\0';
}

static bool spki_sha256(X509 *cert, uint8_t out[32])
{
	unsigned char *der = NULL;
	unsigned int len = 32;
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	bool ok = n > 0 && EVP_Digest(der, (size_t)n, out, &len, EVP_sha256(), NULL);

	OPENSSL_free(der);
	return ok;
}

static bool peer_identity(struct ktm_session *s, struct ktm_error **errp)
{
	X509 *cert = SSL_get0_peer_certificate(s->ssl);
	uint8_t d[32];
	unsigned int len = sizeof(d);
	size_t i;

	if (!cert) {
		if (s->cfg->n_pins) {
			ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
				      "%s sent no certificate to check the key "
				      "pin against", s->peer);
			return false;
		}
		return true;
	}
	ktm_x509_name_text(X509_get_subject_name(cert), s->subject,
			   sizeof(s->subject));
	ktm_x509_name_text(X509_get_issuer_name(cert), s->issuer,
			   sizeof(s->issuer));
	ktm_x509_sans(cert, s->sans, sizeof(s->sans));
	if (X509_digest(cert, EVP_sha256(), d, &len))
		hex(d, 32, s->cert_sha256);
	if (!spki_sha256(cert, d)) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "cannot hash the public key of %s", s->peer);
		return false;
	}
	hex(d, 32, s->spki_sha256);
	if (!s->cfg->n_pins)
		return true;
	for (i = 0; i < s->cfg->n_pins; i++)
		if (!CRYPTO_memcmp(s->cfg->pins[i], d, 32))
			return true;
	ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
		      "public key of %s matches no configured pin (its SPKI "
		      "SHA-256 is %s)", s->peer, s->spki_sha256);
	ktm_error_hint_set(errp, "a new key on the peer needs a new pin");
	return false;
}

/* ---- the switch into kernel TLS --------------------------------------------- */

/*
 * The peer closed the connection between its handshake and ours ending
 * (TCP_ULP then fails with ENOTCONN).  What it sent before closing, an
 * alert as a rule, is still unread: let OpenSSL read it to say why.
 */
static bool peer_left_early(struct ktm_session *s, struct ktm_error **errp)
{
	char buf[64];
	size_t n = 0;
	int ret;

	ERR_clear_error();
	ret = SSL_read_ex(s->ssl, buf, sizeof(buf), &n);
	if (ret <= 0 && SSL_get_error(s->ssl, ret) != SSL_ERROR_ZERO_RETURN)
		return ktm_sess_ssl_failed(s, ret, "receiving from", errp);
	ktm_error_set(errp, KTM_ERR_PEER, ENOTCONN,
		      "%s closed the connection right after the TLS handshake",
		      s->peer);
	ktm_error_hint_set(errp, "a pre-migration check on the peer may have "
			   "vetoed; see its log");
	return false;
}

static void use_userspace(struct ktm_session *s, const char *fmt, ...)
	KTM_PRINTF(2, 3);

static void use_userspace(struct ktm_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->fallback_reason, sizeof(s->fallback_reason), fmt, ap);
	va_end(ap);
	s->path[KTM_DIR_TX] = s->path[KTM_DIR_RX] = KTM_PATH_USERSPACE;
}

/* Kernels from 6.14 replace keys in place; older ones answer a second
 * key with EBUSY.  Asked on a throwaway pair, never on this session. */
static bool kernel_can_rekey(void)
{
	return ktm_kernel_rekey_check() == 0;
}

/* A kernel refusal that means "not in this kernel" rather than a bug. */
static bool kernel_lacks(int ret)
{
	return ret == -ENOENT || ret == -EINVAL || ret == -ENOPROTOOPT ||
	       ret == -EOPNOTSUPP;
}

/*
 * Not having kernel TLS: under require an error naming what is missing,
 * under prefer userspace TLS with the same words as the reason.
 */
static bool unsupported(struct ktm_session *s, int ret, const char *what,
			const char *hint, struct ktm_error **errp)
{
	char eb[24];

	if (s->cfg->policy == KTM_KTLS_REQUIRE) {
		ktm_error_set(errp, KTM_ERR_KTLS_UNSUPPORTED, ret,
			      "%s (%s)", what, ktm_errno_name(ret, eb));
		ktm_error_hint_set(errp, "%s; --ktls=prefer falls back to "
				   "userspace TLS", hint);
		return false;
	}
	use_userspace(s, "%s (%s)", what, ktm_errno_name(ret, eb));
	return true;
}

/* TCP_ULP "tls": 1 attached, 0 staying in userspace (prefer), -1 with
 * *errp. */
static int attach_ulp(struct ktm_session *s, struct ktm_error **errp)
{
	int ret = ktm_ktls_ulp_attach(s->cfg->ktls_ops, s->fd);
	char eb[24];

	if (!ret)
		return 1;
	if (ret == -ENOTCONN) {
		peer_left_early(s, errp);
		return -1;
	}
	if (ret == -ENOENT)
		return unsupported(s, ret, "kernel TLS is not available "
				   "(TCP_ULP \"tls\")", "load the tls module "
				   "(modprobe tls) or use a kernel built with "
				   "CONFIG_TLS", errp) ? 0 : -1;
	ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
		      "cannot attach kernel TLS to fd %d (TCP_ULP: %s)",
		      s->fd, ktm_errno_name(ret, eb));
	return -1;
}

/* TLS_TX, as attach_ulp() answers.  Without keys the ULP passes bytes
 * through, so userspace TLS can still take over if TX is refused. */
static int install_tx(struct ktm_session *s, const struct ktm_dir_keys *tx,
		      struct ktm_error **errp)
{
	int ret = ktm_sess_install_dir(s, KTM_KTLS_TX, tx);
	char what[160], eb[24];

	if (!ret)
		return 1;
	if (kernel_lacks(ret)) {
		snprintf(what, sizeof(what), "kernel rejected %s for %s on "
			 "fd %d (TLS_TX)", ktm_cipher_name(s->cipher),
			 ktm_tls_version_name(s->version), s->fd);
		return unsupported(s, ret, what, "load the kernel's module "
				   "for it (gcm, ccm, chacha20poly1305) or "
				   "choose another cipher (--cipher)", errp) ? 0 : -1;
	}
	ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
		      "cannot enable kTLS send on fd %d: %s", s->fd,
		      ktm_errno_name(ret, eb));
	return -1;
}

/* TLS_RX, then both directions confirmed by reading back their record
 * sequence.  TX belongs to the kernel already: no falling back. */
static bool install_rx(struct ktm_session *s, const struct ktm_dir_keys *tx,
		       const struct ktm_dir_keys *rx, struct ktm_error **errp)
{
	int ret = ktm_sess_install_dir(s, KTM_KTLS_RX, rx);
	int64_t tseq, rseq;
	char eb[24];

	if (ret) {
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
			      "cannot enable kTLS receive on fd %d: kernel "
			      "rejected %s for %s (%s)", s->fd,
			      ktm_cipher_name(s->cipher),
			      ktm_tls_version_name(s->version),
			      ktm_errno_name(ret, eb));
		return false;
	}
	tseq = ktm_sess_live_seq(s, KTM_KTLS_TX);
	rseq = ktm_sess_live_seq(s, KTM_KTLS_RX);
	if (tseq == (int64_t)tx->seq && rseq == (int64_t)rx->seq)
		return true;
	ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, EPROTO,
		      "kernel TLS on fd %d did not confirm the keys "
		      "(send seq %lld, receive seq %lld, expected %llu/%llu)",
		      s->fd, (long long)tseq, (long long)rseq,
		      (unsigned long long)tx->seq, (unsigned long long)rx->seq);
	return false;
}

/* TLS 1.3: the traffic secrets, for KeyUpdate later. */
static void keep_secrets(struct ktm_session *s, const struct ktm_hs *hs)
{
	bool is_client = s->cfg->endpoint == KTM_ENDPOINT_CLIENT;
	const EVP_MD *md = SSL_CIPHER_get_handshake_digest(
		SSL_get_current_cipher(s->ssl));

	s->secret_len = is_client ? hs->client_len : hs->server_len;
	memcpy(s->secret[KTM_DIR_TX],
	       is_client ? hs->client_secret : hs->server_secret, s->secret_len);
	memcpy(s->secret[KTM_DIR_RX],
	       is_client ? hs->server_secret : hs->client_secret, s->secret_len);
	snprintf(s->digest, sizeof(s->digest), "%s",
		 md ? EVP_MD_get0_name(md) : "SHA256");
	s->kernel_rekey = kernel_can_rekey();
}

/* Both directions run in the kernel: record what the session needs and
 * drop OpenSSL (SSL_free neither closes the fd nor sends anything). */
static void kernel_owns(struct ktm_session *s, const struct ktm_hs *hs,
			const struct ktm_dir_keys *tx,
			const struct ktm_dir_keys *rx)
{
	struct ktm_ktls_diag d;

	/* An optimisation the kernel may lack (before 6.0): not an error. */
	if (s->cfg->rx_no_pad && s->version == KTM_TLS_1_3)
		s->rx_no_pad = !ktm_ktls_rx_expect_no_pad(s->cfg->ktls_ops,
							  s->fd, true);
	s->seq0[KTM_DIR_TX] = tx->seq;
	s->seq0[KTM_DIR_RX] = rx->seq;
	if (s->version == KTM_TLS_1_3)
		keep_secrets(s, hs);
	s->path[KTM_DIR_TX] = s->path[KTM_DIR_RX] = KTM_PATH_KERNEL_SW;
	if (geteuid() == 0 && !ktm_ktls_diag_query(s->fd, &d) && d.has_tls) {
		if (d.txconf == TLS_CONF_HW || d.txconf == TLS_CONF_HW_RECORD)
			s->path[KTM_DIR_TX] = KTM_PATH_KERNEL_HW;
		if (d.rxconf == TLS_CONF_HW || d.rxconf == TLS_CONF_HW_RECORD)
			s->path[KTM_DIR_RX] = KTM_PATH_KERNEL_HW;
	}
	SSL_free(s->ssl);
	s->ssl = NULL;
	SSL_CTX_free(s->ctx);
	s->ctx = NULL;
}

static bool switch_to_kernel(struct ktm_session *s, struct ktm_hs *hs,
			     struct ktm_error **errp)
{
	bool is_client = s->cfg->endpoint == KTM_ENDPOINT_CLIENT;
	struct ktm_dir_keys tx, rx;
	int step;
	bool ok = false;

	if (SSL_has_pending(s->ssl)) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "OpenSSL read past the handshake with %s; "
			      "cannot hand the connection to the kernel", s->peer);
		return false;
	}
	if (!ktm_tls_derive(s->ssl, hs, is_client, &tx, &rx, errp))
		return false;
	step = attach_ulp(s, errp);
	if (step > 0)
		step = install_tx(s, &tx, errp);
	if (step == 0) {
		ok = true;	/* userspace TLS, by the policy */
	} else if (step > 0 && install_rx(s, &tx, &rx, errp)) {
		/* Point of no return: TX and RX belong to the kernel. */
		kernel_owns(s, hs, &tx, &rx);
		ok = true;
	}
	OPENSSL_cleanse(&tx, sizeof(tx));
	OPENSSL_cleanse(&rx, sizeof(rx));
	return ok;
}

/* ---- establishing: the handshake's steps ---------------------------------- */

static int set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) ? -errno : 0;
}

static void set_nodelay(int fd, int on)
{
	/* not a TCP socket (unix, tests): nothing to tune */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

/* A check refused the peer: tell it why before any data moves. */
static void tell_refused(struct ktm_session *s)
{
	if (s->ssl)
		SSL_shutdown(s->ssl);
	else
		ktm_ktls_send_record(s->fd, KTM_KTLS_REC_ALERT, "\x02\x31", 2,
				     MSG_NOSIGNAL);
}

/* Start the check hook on the established session: what its environment
 * needs. */
static bool hook_start(struct ktm_session *s, struct ktm_error **errp)
{
	struct ktm_check_facts f = {
		.subject = s->subject,
		.sans = s->sans,
		.issuer = s->issuer,
		.cert_sha256 = s->cert_sha256,
		.spki_sha256 = s->spki_sha256,
		.version = (enum ktm_tls_version)s->version,
		.cipher = s->cipher,
		.kernel_path = s->path[KTM_DIR_TX] != KTM_PATH_USERSPACE,
	};

	s->hook = ktm_hook_start(s->cfg, &f, errp);
	return s->hook != NULL;
}

/* The TLS handshake finished: the checks on the peer, the data path,
 * the in-process check, and the hook started. */
static enum ktm_handshake tls_done(struct ktm_session *s,
				   struct ktm_error **errp)
{
	set_nodelay(s->fd, s->nodelay);	/* Nagle off for the handshake only */
	if (!ktm_tls_negotiated(s->ssl, &s->version, &s->cipher)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "%s negotiated %s, which kernel TLS cannot carry",
			      s->peer, SSL_get_cipher_name(s->ssl));
		return KTM_HANDSHAKE_ERROR;
	}
	if (!peer_identity(s, errp))
		return KTM_HANDSHAKE_ERROR;
	if (s->cfg->policy == KTM_KTLS_OFF)
		use_userspace(s, "kernel TLS is turned off (--ktls=off)");
	else if (!switch_to_kernel(s, s->hs, errp))
		return KTM_HANDSHAKE_ERROR;
	ktm_sess_hs_drop(s);
	if (!ktm_check_callback(s->cfg, s, errp) ||
	    (s->cfg->hook_path && !hook_start(s, errp))) {
		tell_refused(s);
		return KTM_HANDSHAKE_ERROR;
	}
	s->state = s->hook ? HS_HOOK : HS_DONE;
	return s->hook ? KTM_HANDSHAKE_WANT_READ : KTM_HANDSHAKE_DONE;
}

static enum ktm_handshake step_tls(struct ktm_session *s,
				   struct ktm_error **errp)
{
	enum ktm_handshake r;

	r = ktm_tls_handshake_step(s->ssl, s->peer, &s->pending);
	if (r == KTM_HANDSHAKE_DONE)
		return tls_done(s, errp);
	if (r == KTM_HANDSHAKE_ERROR) {
		/*
		 * We refused the peer's certificate and OpenSSL sent the
		 * alert.  In TLS 1.3 a client's handshake ends before the
		 * server's verdict, so it may already be sending data;
		 * closing with that unread would reset the connection and
		 * the reset can overtake the alert.  Half-close and read
		 * what is in flight for a moment (HS_LINGER) instead, so
		 * the peer reads why.
		 */
		if (s->hs->verify_err == X509_V_OK || shutdown(s->fd, SHUT_WR)) {
			ktm_error_propagate(errp, s->pending);
			s->pending = NULL;
			return KTM_HANDSHAKE_ERROR;
		}
		s->state = HS_LINGER;
		s->deadline = ktm_now_ms() + 500;
		return KTM_HANDSHAKE_WANT_READ;
	}
	if (ktm_now_ms() >= s->deadline) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "TLS handshake with %s timed out after %u ms",
			      s->peer, s->cfg->handshake_ms);
		ktm_error_hint_set(errp, "the peer accepted the connection "
				   "but said nothing: is it a TLS migration "
				   "endpoint?");
		return KTM_HANDSHAKE_ERROR;
	}
	s->want = r == KTM_HANDSHAKE_WANT_READ ? POLLIN : POLLOUT;
	return r;
}

/* HS_LINGER: read what is in flight until EOF or the deadline, then
 * report the refusal. */
static enum ktm_handshake step_linger(struct ktm_session *s,
				      struct ktm_error **errp)
{
	char buf[4096];
	int i;

	for (i = 0; i < 64; i++) {
		ssize_t n = read(s->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && ktm_now_ms() < s->deadline)
			return KTM_HANDSHAKE_WANT_READ;
		if (n <= 0 || ktm_now_ms() >= s->deadline)
			break;
	}
	if (i == 64 && ktm_now_ms() < s->deadline)
		return KTM_HANDSHAKE_WANT_READ;	/* more to read: next step */
	ktm_error_propagate(errp, s->pending);
	s->pending = NULL;
	return KTM_HANDSHAKE_ERROR;
}

static enum ktm_handshake step_hook(struct ktm_session *s,
				    struct ktm_error **errp)
{
	int r = ktm_hook_step(s->hook, errp);

	if (r == 0)
		return KTM_HANDSHAKE_WANT_READ;
	ktm_hook_free(s->hook);
	s->hook = NULL;
	if (r < 0) {
		tell_refused(s);
		return KTM_HANDSHAKE_ERROR;
	}
	s->state = HS_DONE;
	return KTM_HANDSHAKE_DONE;
}

enum ktm_handshake ktm_session_handshake(struct ktm_session *s,
					 struct ktm_error **errp)
{
	enum ktm_handshake r;

	switch (s->state) {
	case HS_TLS:
		r = step_tls(s, errp);
		break;
	case HS_LINGER:
		r = step_linger(s, errp);
		break;
	case HS_HOOK:
		r = step_hook(s, errp);
		break;
	case HS_DONE:
		return KTM_HANDSHAKE_DONE;
	default:
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "the handshake with %s failed earlier", s->peer);
		ktm_error_hint_set(errp, "free the session");
		return KTM_HANDSHAKE_ERROR;
	}
	if (r == KTM_HANDSHAKE_ERROR) {
		s->state = HS_FAILED;
		ktm_sess_hs_drop(s);
	}
	return r;
}

int ktm_session_poll_fd(const struct ktm_session *s, short *events)
{
	*events = POLLIN;
	if (s->state == HS_TLS)
		*events = s->want;
	if (s->state == HS_HOOK)
		return ktm_hook_poll_fd(s->hook);
	return s->fd;
}

int ktm_session_poll_timeout(const struct ktm_session *s)
{
	uint64_t now = ktm_now_ms();

	if (s->state == HS_HOOK)
		return ktm_hook_timeout_ms(s->hook);
	if (s->state != HS_TLS && s->state != HS_LINGER)
		return -1;
	if (now >= s->deadline)
		return 0;
	return s->deadline - now > INT32_MAX ? INT32_MAX :
	       (int)(s->deadline - now);
}

/* A session on @fd at its first step; NULL with *errp (and @fd closed
 * when @owns). */
static struct ktm_session *session_begin(const struct ktm_config *cfg, int fd,
					 bool owns, const char *peer,
					 const char *host,
					 struct ktm_error **errp)
{
	struct ktm_session *s = calloc(1, sizeof(*s));
	struct ktm_hs *hs = calloc(1, sizeof(*hs));
	socklen_t optlen = sizeof(int);

	if (!s || !hs) {
		free(s);
		free(hs);
		if (owns)
			close(fd);
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a session");
		return NULL;
	}
	s->cfg = hs->cfg = cfg;
	s->fd = fd;
	s->owns_fd = owns;
	s->hs = hs;
	s->state = HS_TLS;
	s->want = POLLOUT;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	s->ctx = ktm_tls_ctx_new(cfg, errp);
	if (s->ctx)
		s->ssl = ktm_tls_ssl_new(s->ctx, fd, hs, host, errp);
	if (!s->ssl) {
		ktm_session_free(s);
		return NULL;
	}
	/* Nagle off for the handshake's small messages only (then as it
	 * was: not a TCP socket, or the caller's choice). */
	if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &s->nodelay, &optlen))
		s->nodelay = 0;
	set_nodelay(fd, 1);
	s->deadline = ktm_now_ms() + cfg->handshake_ms;
	return s;
}

/* The peer's name for messages: @peer_name, else @fd's peer address. */
static void peer_text(int fd, const char *peer_name, char *buf, size_t len)
{
	if (peer_name)
		snprintf(buf, len, "%s", peer_name);
	else
		ktm_fd_addr_text(fd, true, buf, len);
}

struct ktm_session *ktm_session_start(const struct ktm_config *cfg, int fd,
				      const char *peer_name,
				      struct ktm_error **errp)
{
	char peer[300];
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot start a session on fd %d: %s", fd,
			      strerror(errno));
		return NULL;
	}
	if (!(fl & O_NONBLOCK)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "fd %d is in blocking mode: the event-loop "
			      "handshake needs a non-blocking socket", fd);
		ktm_error_hint_set(errp, "set O_NONBLOCK on it first, or use "
				   "ktm_session_new_fd()");
		return NULL;
	}
	peer_text(fd, peer_name, peer, sizeof(peer));
	return session_begin(cfg, fd, false, peer, peer_name, errp);
}

/* ---- establishing: the blocking calls ------------------------------------ */

/* The error for a connect or handshake that @cancel_fd cut short. */
static void cancelled(const char *peer, struct ktm_error **errp)
{
	ktm_error_set(errp, KTM_ERR_CANCELLED, ECANCELED,
		      "cancelled while connecting to %s", peer);
}

/* The handshake of @s under poll(2), with its deadlines, cut short when
 * @cancel_fd (-1: none) becomes readable; the fd is blocking again at the
 * end.  @s or NULL with *errp (@s freed). */
static struct ktm_session *handshake_blocking(struct ktm_session *s,
					      int cancel_fd,
					      struct ktm_error **errp)
{
	for (;;) {
		enum ktm_handshake r = ktm_session_handshake(s, errp);
		struct pollfd p[2] = { [1] = { .fd = cancel_fd,
					       .events = POLLIN } };

		if (r == KTM_HANDSHAKE_DONE && !set_nonblock(s->fd, false))
			return s;
		if (r == KTM_HANDSHAKE_DONE) {
			ktm_error_set(errp, KTM_ERR_IO, errno,
				      "cannot make fd %d blocking again: %s",
				      s->fd, strerror(errno));
			break;
		}
		if (r == KTM_HANDSHAKE_ERROR)
			break;
		p[0].fd = ktm_session_poll_fd(s, &p[0].events);
		if (poll(p, 2, ktm_session_poll_timeout(s)) < 0 &&
		    errno != EINTR) {
			ktm_error_set(errp, KTM_ERR_IO, errno,
				      "poll on the connection to %s failed: %s",
				      s->peer, strerror(errno));
			break;
		}
		if (p[1].revents) {
			cancelled(s->peer, errp);
			break;
		}
	}
	ktm_session_free(s);
	return NULL;
}

/* A session on @fd, which it takes, handshake done (cut short by
 * @cancel_fd); NULL with *errp. */
static struct ktm_session *session_blocking(const struct ktm_config *cfg,
					    int fd, const char *peer,
					    const char *host, int cancel_fd,
					    struct ktm_error **errp)
{
	struct ktm_session *s;
	int ret = set_nonblock(fd, true);

	if (ret) {
		ktm_error_set(errp, KTM_ERR_CONFIG, -ret,
			      "cannot use fd %d for a session: %s", fd,
			      strerror(-ret));
		close(fd);
		return NULL;
	}
	s = session_begin(cfg, fd, true, peer, host, errp);
	return s ? handshake_blocking(s, cancel_fd, errp) : NULL;
}

struct ktm_session *ktm_session_new_fd(const struct ktm_config *cfg, int fd,
				       const char *peer_name,
				       struct ktm_error **errp)
{
	char peer[300];

	peer_text(fd, peer_name, peer, sizeof(peer));
	return session_blocking(cfg, fd, peer, peer_name, -1, errp);
}

/* connect_to(): the error for a failed connect (@err), with its hint. */
static void connect_failed(const struct ktm_config *cfg, const char *peer,
			   const char *port, int err, struct ktm_error **errp)
{
	ktm_error_set(errp, KTM_ERR_PEER, err, "cannot connect to %s: %s", peer,
		      err == ETIMEDOUT ? "timed out" : strerror(err));
	if (err == ECONNREFUSED)
		ktm_error_hint_set(errp, "is the destination listening on "
				   "port %s?", port);
	else if (err == ETIMEDOUT)
		ktm_error_hint_set(errp, "no answer within %u ms; check the "
				   "address and firewalls", cfg->connect_ms);
}

/* One address of connect_to(): the connected non-blocking fd, or -errno
 * (-ECANCELED when @cancel_fd became readable). */
static int connect_one(const struct ktm_config *cfg, const struct addrinfo *ai,
		       int cancel_fd)
{
	struct pollfd p[2] = { { .events = POLLOUT },
			       { .fd = cancel_fd, .events = POLLIN } };
	socklen_t el = sizeof(int);
	int fd, err = 0, ret;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
		    SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	err = errno;
	if (err == EINPROGRESS) {
		p[0].fd = fd;
		do {
			ret = poll(p, 2, (int)cfg->connect_ms);
		} while (ret < 0 && errno == EINTR);
		if (ret == 0)
			err = ETIMEDOUT;
		else if (ret > 0 && p[1].revents)
			err = ECANCELED;
		else if (ret < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el))
			err = errno;
		if (!err)
			return fd;
	}
	close(fd);
	return -err;
}

/* Connect with a deadline, cut short by @cancel_fd; returns the fd
 * (non-blocking) or -1 with *errp. */
static int connect_to(const struct ktm_config *cfg, const char *host,
		      const char *port, const char *peer, int cancel_fd,
		      struct ktm_error **errp)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_ADDRCONFIG };
	struct addrinfo *res, *ai;
	int fd = -1, ret;

	ret = getaddrinfo(host, port, &hints, &res);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_CONFIG, ret == EAI_SYSTEM ? errno : ENOENT,
			      "cannot resolve host '%s': %s", host,
			      gai_strerror(ret));
		ktm_error_hint_set(errp, "check the destination host name");
		return -1;
	}
	for (ai = res; ai && fd != -ECANCELED; ai = ai->ai_next) {
		fd = connect_one(cfg, ai, cancel_fd);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	if (fd == -ECANCELED)
		cancelled(peer, errp);
	else if (fd < 0)
		connect_failed(cfg, peer, port, -fd, errp);
	return fd < 0 ? -1 : fd;
}

struct ktm_session *ktm_session_connect(const struct ktm_config *cfg,
					const char *host, const char *port,
					struct ktm_error **errp)
{
	return ktm_session_connect_cancel(cfg, host, port, -1, errp);
}

struct ktm_session *ktm_session_connect_cancel(const struct ktm_config *cfg,
					       const char *host,
					       const char *port, int cancel_fd,
					       struct ktm_error **errp)
{
	char peer[300];
	int fd;

	if (cfg->endpoint != KTM_ENDPOINT_CLIENT) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "a server configuration cannot connect to %s", host);
		return NULL;
	}
	snprintf(peer, sizeof(peer), strchr(host, ':') ? "[%s]:%s" : "%s:%s",
		 host, port);
	fd = connect_to(cfg, host, port, peer, cancel_fd, errp);
	if (fd < 0)
		return NULL;
	return session_blocking(cfg, fd, peer, host, cancel_fd, errp);
}

struct ktm_session *ktm_session_accept(const struct ktm_config *cfg,
				       int listen_fd, struct ktm_error **errp)
{
	char peer[300];
	int fd;

	if (cfg->endpoint != KTM_ENDPOINT_SERVER) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "a client configuration cannot accept connections");
		return NULL;
	}
	do {
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot accept a connection on fd %d: %s",
			      listen_fd, strerror(errno));
		return NULL;
	}
	ktm_fd_addr_text(fd, true, peer, sizeof(peer));
	return session_blocking(cfg, fd, peer, NULL, -1, errp);
}
