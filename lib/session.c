// SPDX-License-Identifier: MIT
/*
 * A session: connect or accept, handshake (tls.c), verify, then hand the
 * keys to the kernel (ktls/) or, by policy, stay in userspace TLS; checks
 * run before any application data.  The session knows nothing of the
 * migration stream.
 *
 * Threads: a session is used by one thread at a time.
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
#include "tls.h"

struct ktm_session {
	const struct ktm_config *cfg;	/* borrowed: outlives the session */
	int fd;
	SSL_CTX *ctx;			/* userspace path only */
	SSL *ssl;			/* userspace path only */
	enum ktm_path path[2];
	char fallback_reason[256];
	uint16_t version;
	enum ktm_cipher cipher;
	char peer[300];			/* "host:port" for messages */
	char subject[KTM_ID_SUBJECT_MAX], sans[KTM_ID_SANS_MAX];
	char issuer[KTM_ID_SUBJECT_MAX];
	char cert_sha256[65], spki_sha256[65];
	uint64_t bytes[2];
	uint64_t records[2];		/* userspace path, current key */
	uint64_t seq0[2];		/* kernel path: rec_seq at the last key */
	uint64_t old_records[2];	/* records under earlier keys */
	bool shut, peer_closed;
	/* TLS 1.3 on the kernel path: the current traffic secrets, kept
	 * for KeyUpdate (the next key derives from the last secret, and
	 * OpenSSL is gone by then).  Wiped in ktm_session_free(). */
	uint8_t secret[2][KTM_SECRET_MAX];
	size_t secret_len;
	char digest[32];
	bool kernel_rekey;		/* this kernel replaces keys in place */
	bool rx_no_pad;			/* TLS_RX_EXPECT_NO_PAD took */
	unsigned int rekeys[2];
	/* The peer asked for our KeyUpdate (update_requested): owed before
	 * our next record, sent by whichever thread sends (RFC 8446 §4.6.3).
	 * Set by the receiving thread, cleared by the sending one. */
	int tx_update_owed;
};


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

static bool ssl_failed(struct ktm_session *s, int ret, const char *doing,
		       struct ktm_error **errp);

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
		return ssl_failed(s, ret, "receiving from", errp);
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

static int install_dir(struct ktm_session *s, enum ktm_ktls_dir dir,
		       const struct ktm_dir_keys *k)
{
	struct ktm_ktls_crypto c;
	int ret;

	ret = ktm_ktls_crypto_fill(&c, s->version, s->cipher, k->key, k->key_len,
				   k->iv, k->seq);
	if (!ret)
		ret = ktm_ktls_install(s->cfg->ktls_ops, s->fd, dir, &c);
	ktm_ktls_crypto_wipe(&c);
	return ret;
}

/* The kernel's rec_seq of @dir, or -errno. */
static int64_t live_seq(const struct ktm_session *s, enum ktm_ktls_dir dir)
{
	struct ktm_ktls_crypto c;
	int64_t seq;
	int ret;

	ret = ktm_ktls_read_back(s->cfg->ktls_ops, s->fd, dir, s->cipher, &c);
	seq = ret ? ret : (int64_t)ktm_ktls_crypto_rec_seq(&c);
	ktm_ktls_crypto_wipe(&c);
	return seq;
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

static bool switch_to_kernel(struct ktm_session *s, struct ktm_hs *hs,
			     struct ktm_error **errp)
{
	bool is_client = s->cfg->endpoint == KTM_ENDPOINT_CLIENT;
	const char *vname = ktm_tls_version_name(s->version);
	const char *cname = ktm_cipher_name(s->cipher);
	struct ktm_dir_keys tx, rx;
	char what[160], eb[24];
	int64_t tseq, rseq;
	bool ok = false;
	int ret;

	if (SSL_has_pending(s->ssl)) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "OpenSSL read past the handshake with %s; "
			      "cannot hand the connection to the kernel", s->peer);
		return false;
	}
	if (!ktm_tls_derive(s->ssl, hs, is_client, &tx, &rx, errp))
		return false;

	ret = ktm_ktls_ulp_attach(s->cfg->ktls_ops, s->fd);
	if (ret == -ENOTCONN) {
		peer_left_early(s, errp);
		goto out_wipe;
	}
	if (ret == -ENOENT) {
		ok = unsupported(s, ret, "kernel TLS is not available "
				 "(TCP_ULP \"tls\")", "load the tls module (modprobe "
				 "tls) or use a kernel built with CONFIG_TLS", errp);
		goto out_wipe;
	}
	if (ret) {
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
			      "cannot attach kernel TLS to fd %d (TCP_ULP: %s)",
			      s->fd, ktm_errno_name(ret, eb));
		goto out_wipe;
	}
	/* Without keys the ULP passes bytes through, so userspace TLS can
	 * still take over if TX is refused. */
	ret = install_dir(s, KTM_KTLS_TX, &tx);
	if (ret) {
		snprintf(what, sizeof(what), "kernel rejected %s for %s on "
			 "fd %d (TLS_TX)", cname, vname, s->fd);
		if (kernel_lacks(ret)) {
			ok = unsupported(s, ret, what, "load the kernel's module "
					 "for it (gcm, ccm, chacha20poly1305) or "
					 "choose another cipher (--cipher)", errp);
		} else {
			ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
				      "cannot enable kTLS send on fd %d: %s",
				      s->fd, ktm_errno_name(ret, eb));
		}
		goto out_wipe;
	}
	/* Point of no return: TX belongs to the kernel now; OpenSSL can no
	 * longer write on this socket, so there is no falling back. */
	ret = install_dir(s, KTM_KTLS_RX, &rx);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
			      "cannot enable kTLS receive on fd %d: kernel "
			      "rejected %s for %s (%s)", s->fd, cname, vname,
			      ktm_errno_name(ret, eb));
		goto out_wipe;
	}
	tseq = live_seq(s, KTM_KTLS_TX);
	rseq = live_seq(s, KTM_KTLS_RX);
	if (tseq != (int64_t)tx.seq || rseq != (int64_t)rx.seq) {
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, EPROTO,
			      "kernel TLS on fd %d did not confirm the keys "
			      "(send seq %lld, receive seq %lld, expected %llu/%llu)",
			      s->fd, (long long)tseq, (long long)rseq,
			      (unsigned long long)tx.seq,
			      (unsigned long long)rx.seq);
		goto out_wipe;
	}
	/* An optimisation the kernel may lack (before 6.0): not an error. */
	if (s->cfg->rx_no_pad && s->version == KTM_TLS_1_3)
		s->rx_no_pad = !ktm_ktls_rx_expect_no_pad(s->cfg->ktls_ops,
							  s->fd, true);
	s->seq0[KTM_DIR_TX] = tx.seq;
	s->seq0[KTM_DIR_RX] = rx.seq;
	if (s->version == KTM_TLS_1_3) {
		const EVP_MD *md = SSL_CIPHER_get_handshake_digest(
			SSL_get_current_cipher(s->ssl));

		s->secret_len = is_client ? hs->client_len : hs->server_len;
		memcpy(s->secret[KTM_DIR_TX],
		       is_client ? hs->client_secret : hs->server_secret,
		       s->secret_len);
		memcpy(s->secret[KTM_DIR_RX],
		       is_client ? hs->server_secret : hs->client_secret,
		       s->secret_len);
		snprintf(s->digest, sizeof(s->digest), "%s",
			 md ? EVP_MD_get0_name(md) : "SHA256");
		s->kernel_rekey = kernel_can_rekey();
	}
	s->path[KTM_DIR_TX] = s->path[KTM_DIR_RX] = KTM_PATH_KERNEL_SW;
	if (geteuid() == 0) {
		struct ktm_ktls_diag d;

		if (!ktm_ktls_diag_query(s->fd, &d) && d.has_tls) {
			if (d.txconf == TLS_CONF_HW || d.txconf == TLS_CONF_HW_RECORD)
				s->path[KTM_DIR_TX] = KTM_PATH_KERNEL_HW;
			if (d.rxconf == TLS_CONF_HW || d.rxconf == TLS_CONF_HW_RECORD)
				s->path[KTM_DIR_RX] = KTM_PATH_KERNEL_HW;
		}
	}
	/* The kernel owns the connection: drop OpenSSL (SSL_free neither
	 * closes the fd nor sends anything). */
	SSL_free(s->ssl);
	s->ssl = NULL;
	SSL_CTX_free(s->ctx);
	s->ctx = NULL;
	ok = true;
out_wipe:
	OPENSSL_cleanse(&tx, sizeof(tx));
	OPENSSL_cleanse(&rx, sizeof(rx));
	return ok;
}

/* The pre-migration checks, told what the hook's environment needs. */
static bool run_checks(const struct ktm_config *cfg, struct ktm_session *s,
		       struct ktm_error **errp)
{
	struct ktm_check_facts f = {
		.subject = ktm_session_peer_subject(s),
		.sans = ktm_session_peer_sans(s),
		.issuer = ktm_session_peer_issuer(s),
		.cert_sha256 = ktm_session_peer_cert_sha256(s),
		.spki_sha256 = ktm_session_peer_spki_sha256(s),
		.version = ktm_session_version(s),
		.cipher = ktm_session_cipher(s),
		.kernel_path = ktm_session_path(s, KTM_DIR_TX) != KTM_PATH_USERSPACE,
	};

	return ktm_checks_run(cfg, s, &f, errp);
}

/* ---- establishing ----------------------------------------------------------- */

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

static struct ktm_session *session_start(const struct ktm_config *cfg, int fd,
					 const char *peer, const char *host,
					 struct ktm_error **errp)
{
	struct ktm_session *s;
	struct ktm_hs *hs;

	s = calloc(1, sizeof(*s));
	hs = calloc(1, sizeof(*hs));
	if (!s || !hs) {
		free(s);
		free(hs);
		close(fd);
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a session");
		return NULL;
	}
	s->cfg = cfg;
	s->fd = fd;
	hs->cfg = cfg;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);

	s->ctx = ktm_tls_ctx_new(cfg, errp);
	if (!s->ctx)
		goto err_free;
	s->ssl = ktm_tls_ssl_new(s->ctx, fd, hs, host, errp);
	if (!s->ssl)
		goto err_free;
	/* Nagle off for the handshake's small messages only. */
	set_nodelay(fd, 1);
	if (set_nonblock(fd, true) ||
	    !ktm_tls_handshake(s->ssl, fd, s->peer,
			       ktm_now_ms() + cfg->handshake_ms, errp))
		goto err_free;
	set_nonblock(fd, false);
	set_nodelay(fd, 0);

	if (!ktm_tls_negotiated(s->ssl, &s->version, &s->cipher)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "%s negotiated %s, which kernel TLS cannot carry",
			      s->peer, SSL_get_cipher_name(s->ssl));
		goto err_free;
	}
	if (!peer_identity(s, errp))
		goto err_free;
	if (cfg->policy == KTM_KTLS_OFF)
		use_userspace(s, "kernel TLS is turned off (--ktls=off)");
	else if (!switch_to_kernel(s, hs, errp))
		goto err_free;
	/* The userspace path keeps the SSL; its callbacks must not see the
	 * handshake state once it is gone. */
	if (s->ssl)
		SSL_set_app_data(s->ssl, NULL);
	OPENSSL_cleanse(hs, sizeof(*hs));
	free(hs);
	hs = NULL;

	if (!run_checks(cfg, s, errp)) {
		/* Tell the peer why before any data moves. */
		if (s->ssl)
			SSL_shutdown(s->ssl);
		else
			ktm_ktls_send_record(s->fd, KTM_KTLS_REC_ALERT,
					     "\x02\x31", 2, MSG_NOSIGNAL);
		goto err_free;
	}
	return s;

err_free:
	if (s->ssl)
		SSL_set_app_data(s->ssl, NULL);
	if (hs) {
		OPENSSL_cleanse(hs, sizeof(*hs));
		free(hs);
	}
	ktm_session_free(s);
	return NULL;
}

struct ktm_session *ktm_session_new_fd(const struct ktm_config *cfg, int fd,
				       const char *peer_name,
				       struct ktm_error **errp)
{
	char peer[300];

	if (peer_name)
		snprintf(peer, sizeof(peer), "%s", peer_name);
	else
		ktm_fd_addr_text(fd, true, peer, sizeof(peer));
	return session_start(cfg, fd, peer, peer_name, errp);
}

/* Connect with a deadline; returns the fd or -1 with *errp. */
static int connect_to(const struct ktm_config *cfg, const char *host,
		      const char *port, const char *peer,
		      struct ktm_error **errp)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_ADDRCONFIG };
	struct addrinfo *res, *ai;
	int fd = -1, err = 0, ret;

	ret = getaddrinfo(host, port, &hints, &res);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_CONFIG, ret == EAI_SYSTEM ? errno : ENOENT,
			      "cannot resolve host '%s': %s", host,
			      gai_strerror(ret));
		ktm_error_hint_set(errp, "check the destination host name");
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd p = { .events = POLLOUT };
		socklen_t el = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
			    SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		err = errno;
		if (err == EINPROGRESS) {
			p.fd = fd;
			ret = poll(&p, 1, (int)cfg->connect_ms);
			if (ret == 0)
				err = ETIMEDOUT;
			else if (ret < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR,
						       &err, &el))
				err = errno;
			if (!err)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		ktm_error_set(errp, KTM_ERR_PEER, err,
			      "cannot connect to %s: %s", peer,
			      err == ETIMEDOUT ? "timed out" : strerror(err));
		if (err == ECONNREFUSED)
			ktm_error_hint_set(errp, "is the destination listening "
					   "on port %s?", port);
		else if (err == ETIMEDOUT)
			ktm_error_hint_set(errp, "no answer within %u ms; check "
					   "the address and firewalls",
					   cfg->connect_ms);
		return -1;
	}
	set_nonblock(fd, false);
	return fd;
}

struct ktm_session *ktm_session_connect(const struct ktm_config *cfg,
					const char *host, const char *port,
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
	fd = connect_to(cfg, host, port, peer, errp);
	if (fd < 0)
		return NULL;
	return session_start(cfg, fd, peer, host, errp);
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
	return session_start(cfg, fd, peer, NULL, errp);
}

/* ---- data ---------------------------------------------------------------- */

static bool io_error(struct ktm_session *s, int err, const char *doing,
		     struct ktm_error **errp)
{
	if (err == EPIPE || err == ECONNRESET)
		ktm_error_set(errp, KTM_ERR_PEER, err,
			      "the connection to %s broke (%s): the peer went "
			      "away without closing the TLS session", s->peer,
			      strerror(err));
	else if (err == EAGAIN || err == ETIMEDOUT)
		/* SO_RCVTIMEO/SO_SNDTIMEO or TCP_USER_TIMEOUT ran out */
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "%s %s timed out: the peer moved no data within "
			      "the I/O timeout", doing, s->peer);
	else if (err == EBADMSG)
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, err,
			      "a TLS record from %s failed authentication "
			      "(tampered or corrupted in transit)", s->peer);
	else
		ktm_error_set(errp, KTM_ERR_IO, err, "%s %s failed: %s", doing,
			      s->peer, strerror(err));
	return false;
}

/*
 * Why a connection ended without close_notify, when the kernel knows
 * better than "end of file": a pending socket error, or a TCP connection
 * the kernel itself gave up on after retransmitting or probing
 * (TCP_USER_TIMEOUT or keepalive; another call may have taken its error
 * already).  A peer's FIN without close_notify leaves no such trace.  0
 * for a plain end of file.
 */
static int eof_cause(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (!getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) && soerr)
		return soerr;
	if (!getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) &&
	    ti.tcpi_state == TCP_CLOSE &&
	    (ti.tcpi_retransmits || ti.tcpi_probes || ti.tcpi_total_retrans))
		return ETIMEDOUT;
	return 0;
}

static bool ssl_failed(struct ktm_session *s, int ret, const char *doing,
		       struct ktm_error **errp)
{
	int err = SSL_get_error(s->ssl, ret);
	unsigned long e = ERR_peek_last_error();
	int reason = e ? ERR_GET_REASON(e) : 0;
	char why[256];

	if (err == SSL_ERROR_SYSCALL && errno && !e)
		return io_error(s, errno, doing, errp);
	/* a blocking socket wants to retry only when its timeout ran out */
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return io_error(s, EAGAIN, doing, errp);
	if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
	    (err == SSL_ERROR_SYSCALL && !e)) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET,
			      "%s closed the connection without TLS "
			      "close_notify (truncated)", s->peer);
		return false;
	}
	if (reason > SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
		ERR_clear_error();
		ktm_tls_alert_error(s->cfg, 2, (uint8_t)(reason - SSL_AD_REASON_OFFSET),
				    s->peer, errp);
		return false;
	}
	if (reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)
		return io_error(s, EBADMSG, doing, errp);
	ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO, "%s %s failed%s",
		      doing, s->peer, ktm_ossl_reason(why, sizeof(why)));
	return false;
}

bool ktm_session_send(struct ktm_session *s, const void *buf, size_t len,
		      struct ktm_error **errp)
{
	const uint8_t *p = buf;

	if (ktm_session_rekey_owed(s) && !ktm_session_rekey(s, errp))
		return false;
	while (len) {
		ssize_t n;

		if (s->ssl) {
			size_t done = 0;
			int ret;

			ERR_clear_error();
			ret = SSL_write_ex(s->ssl, p, len, &done);
			if (ret <= 0)
				return ssl_failed(s, ret, "sending to", errp);
			s->records[KTM_DIR_TX] += (done + KTM_KTLS_MAX_RECORD - 1) /
						  KTM_KTLS_MAX_RECORD;
			n = (ssize_t)done;
		} else {
			n = send(s->fd, p, len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return io_error(s, errno, "sending to", errp);
			}
		}
		p += n;
		len -= (size_t)n;
		s->bytes[KTM_DIR_TX] += (uint64_t)n;
	}
	return true;
}

/* A control record on the kernel path: close_notify ends the session,
 * any other alert or handshake message is an error. */
static ssize_t control_record(struct ktm_session *s, const struct ktm_ktls_rec *rec,
			      const uint8_t *buf, ssize_t n,
			      struct ktm_error **errp)
{
	if (rec->type == KTM_KTLS_REC_ALERT && n >= 2) {
		if (buf[1] == SSL_AD_CLOSE_NOTIFY) {
			s->peer_closed = true;
			return 0;
		}
		ktm_tls_alert_error(s->cfg, buf[0], buf[1], s->peer, errp);
		return -1;
	}
	ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
		      "unexpected TLS %s record (%zd bytes, type %u) from %s",
		      rec->type == KTM_KTLS_REC_HANDSHAKE ? "handshake" : "control",
		      n, rec->type, s->peer);
	return -1;
}

/* Install the next key of @dir (kernel path, TLS 1.3). */
static bool next_key(struct ktm_session *s, enum ktm_dir dir,
		     struct ktm_error **errp)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(s->cipher);
	struct ktm_dir_keys k;
	uint64_t done;
	char eb[24];
	int ret;

	if (!ktm_tls13_next_keys(s->digest, s->secret[dir], s->secret_len,
				 row->key_len, &k, errp))
		return false;
	/* what the old key protected, before the kernel restarts at 0 */
	done = ktm_session_key_records(s, dir);
	ret = install_dir(s, dir == KTM_DIR_TX ? KTM_KTLS_TX : KTM_KTLS_RX, &k);
	OPENSSL_cleanse(&k, sizeof(k));
	if (ret) {
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
			      "cannot install the next %s key on fd %d (%s)",
			      dir == KTM_DIR_TX ? "send" : "receive", s->fd,
			      ktm_errno_name(ret, eb));
		return false;
	}
	s->old_records[dir] += done;
	s->seq0[dir] = 0;	/* a new key starts at record 0 */
	s->rekeys[dir]++;
	return true;
}

/*
 * A KeyUpdate from the peer (RFC 8446 §4.6.3): from here on every read
 * fails with EKEYEXPIRED until the next receive key is in place.
 */
static bool key_update_received(struct ktm_session *s, const uint8_t *buf,
				size_t n, struct ktm_error **errp)
{
	bool request;

	if (ktm_ktls_keyupdate_parse(buf, n, &request)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "unexpected TLS handshake message from %s "
			      "(%zu bytes, type %u)", s->peer, n,
			      n ? buf[0] : 0);
		return false;
	}
	if (!s->kernel_rekey) {
		ktm_error_set(errp, KTM_ERR_KTLS_UNSUPPORTED, EBUSY,
			      "%s updated its TLS key, which this kernel cannot "
			      "follow on a live socket (needs 6.14)", s->peer);
		return false;
	}
	if (!next_key(s, KTM_DIR_RX, errp))
		return false;
	/* Not here: the thread that owns TX (the proxy's upstream thread, or
	 * the next ktm_session_send()) answers, so no two threads ever touch
	 * the send key. */
	if (request)
		__atomic_store_n(&s->tx_update_owed, 1, __ATOMIC_RELEASE);
	return true;
}

uint64_t ktm_session_key_limit(const struct ktm_session *s)
{
	return ktm_config_key_limit(s->cfg, s->cipher);
}

bool ktm_session_rekey_owed(const struct ktm_session *s)
{
	return __atomic_load_n(&s->tx_update_owed, __ATOMIC_ACQUIRE) != 0;
}

bool ktm_session_can_rekey(const struct ktm_session *s)
{
	if (s->ssl)
		return s->version == KTM_TLS_1_3;
	return s->secret_len && s->kernel_rekey;
}

bool ktm_session_rekey(struct ktm_session *s, struct ktm_error **errp)
{
	char eb[24];
	int ret;

	if (!ktm_session_can_rekey(s)) {
		ktm_error_set(errp, KTM_ERR_KTLS_UNSUPPORTED, EBUSY,
			      "cannot update the TLS key to %s in place: %s",
			      s->peer, s->version != KTM_TLS_1_3 ?
			      "TLS 1.2 has no KeyUpdate" :
			      "this kernel cannot replace keys on a live socket "
			      "(needs 6.14)");
		return false;
	}
	if (s->ssl) {
		if (!SSL_key_update(s->ssl, SSL_KEY_UPDATE_NOT_REQUESTED))
			return ssl_failed(s, -1, "updating the key with", errp);
		s->old_records[KTM_DIR_TX] += s->records[KTM_DIR_TX];
		s->records[KTM_DIR_TX] = 0;
		s->rekeys[KTM_DIR_TX]++;
		return true;
	}
	__atomic_store_n(&s->tx_update_owed, 0, __ATOMIC_RELEASE);
	/* The KeyUpdate goes out under the old key, and before the switch,
	 * or a record left open by MSG_MORE would be sealed with the new
	 * key. */
	ret = ktm_ktls_keyupdate_send(s->fd, false);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_PEER, ret,
			      "cannot send a KeyUpdate to %s (%s)", s->peer,
			      ktm_errno_name(ret, eb));
		return false;
	}
	return next_key(s, KTM_DIR_TX, errp);
}

unsigned int ktm_session_rekeys(const struct ktm_session *s, enum ktm_dir dir)
{
	return s->rekeys[dir == KTM_DIR_RX];
}

uint64_t ktm_session_key_records(const struct ktm_session *s, enum ktm_dir dir)
{
	int64_t seq;

	if (s->ssl)
		return s->records[dir == KTM_DIR_RX];
	seq = live_seq(s, dir == KTM_DIR_RX ? KTM_KTLS_RX : KTM_KTLS_TX);
	return seq < 0 ? 0 : (uint64_t)seq - s->seq0[dir == KTM_DIR_RX];
}

/*
 * One record (or the part of a data record that fits) into @buf.  The
 * kernel hands out as much of a control record as the buffer holds and
 * drops the rest, so a read shorter than @ctl first peeks at the record's
 * type and takes a control record (alert, KeyUpdate) whole into @ctl.
 */
static ssize_t recv_record(struct ktm_session *s, void *buf, size_t len,
			   uint8_t *ctl, size_t ctl_len, struct ktm_ktls_rec *rec,
			   const uint8_t **got)
{
	ssize_t n;

	*got = buf;
	if (len < ctl_len) {
		do {
			n = ktm_ktls_recv_record(s->fd, ctl, ctl_len, MSG_PEEK,
						 rec);
		} while (n == -EINTR);
		if (n <= 0)
			return n;
		if (rec->type != KTM_KTLS_REC_DATA) {
			buf = ctl;
			len = ctl_len;
			*got = ctl;
		}
	}
	do {
		n = ktm_ktls_recv_record(s->fd, buf, len, 0, rec);
	} while (n == -EINTR);
	return n;
}

/* ktm_session_recv() in userspace TLS (OpenSSL reads). */
static ssize_t recv_userspace(struct ktm_session *s, void *buf, size_t len,
			      struct ktm_error **errp)
{
	size_t done = 0;
	int ret;

	ERR_clear_error();
	ret = SSL_read_ex(s->ssl, buf, len, &done);
	if (ret <= 0) {
		if (SSL_get_error(s->ssl, ret) == SSL_ERROR_ZERO_RETURN) {
			s->peer_closed = true;
			return 0;
		}
		ssl_failed(s, ret, "receiving from", errp);
		return -1;
	}
	s->bytes[KTM_DIR_RX] += done;
	s->records[KTM_DIR_RX]++;
	return (ssize_t)done;
}

ssize_t ktm_session_recv(struct ktm_session *s, void *buf, size_t len,
			 struct ktm_error **errp)
{
	uint8_t ctl[64];
	const uint8_t *got;
	struct ktm_ktls_rec rec;
	ssize_t n;

	if (s->peer_closed)
		return 0;
	if (s->ssl)
		return recv_userspace(s, buf, len, errp);
	/* KeyUpdates are taken in this loop, however many the peer sends
	 * (no recursion per message) */
	for (;;) {
		n = recv_record(s, buf, len, ctl, sizeof(ctl), &rec, &got);
		if (n < 0) {
			io_error(s, (int)-n, "receiving from", errp);
			return -1;
		}
		if (n == 0) {
			int cause = eof_cause(s->fd);

			/* TCP_USER_TIMEOUT or a reset ended it: say that,
			 * not EOF */
			if (cause) {
				io_error(s, cause, "receiving from", errp);
				return -1;
			}
			ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET,
				      "%s closed the connection without TLS "
				      "close_notify (truncated)", s->peer);
			return -1;
		}
		if (rec.type != KTM_KTLS_REC_HANDSHAKE || !s->secret_len)
			break;
		if (!key_update_received(s, got, (size_t)n, errp))
			return -1;
	}
	if (rec.type != KTM_KTLS_REC_DATA)
		return control_record(s, &rec, got, n, errp);
	s->bytes[KTM_DIR_RX] += (uint64_t)n;
	return n;
}

bool ktm_session_shutdown(struct ktm_session *s, struct ktm_error **errp)
{
	static const uint8_t close_notify[2] = { 1, 0 };
	ssize_t n;

	if (s->shut)
		return true;
	s->shut = true;
	if (s->ssl) {
		ERR_clear_error();
		if (SSL_shutdown(s->ssl) < 0)
			return ssl_failed(s, -1, "closing the session with", errp);
		return true;
	}
	n = ktm_ktls_send_record(s->fd, KTM_KTLS_REC_ALERT, close_notify,
				 sizeof(close_notify), MSG_NOSIGNAL);
	if (n < 0)
		return io_error(s, (int)-n, "closing the session with", errp);
	return true;
}

void ktm_session_free(struct ktm_session *s)
{
	if (!s)
		return;
	SSL_free(s->ssl);
	SSL_CTX_free(s->ctx);
	if (s->fd >= 0)
		close(s->fd);
	OPENSSL_cleanse(s->secret, sizeof(s->secret));
	free(s);
}

int ktm_session_fd(const struct ktm_session *s)
{
	return s->fd;
}

struct ssl_st *ktm_session_ssl(const struct ktm_session *s)
{
	return s->ssl;
}

bool ktm_session_readable(const struct ktm_session *s)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN };

	/* userspace TLS may hold a whole record the socket no longer shows */
	if (s->ssl && SSL_has_pending(s->ssl))
		return true;
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

int ktm_session_detach(struct ktm_session *s, struct ktm_error **errp)
{
	int fd;

	if (s->ssl) {
		ktm_error_set(errp, KTM_ERR_KTLS_UNSUPPORTED, EOPNOTSUPP,
			      "cannot hand over the connection to %s: it runs "
			      "in userspace TLS (%s)", s->peer,
			      s->fallback_reason);
		return -1;
	}
	fd = s->fd;
	s->fd = -1;
	ktm_session_free(s);
	return fd;
}

/* ---- status ------------------------------------------------------------------ */

enum ktm_path ktm_session_path(const struct ktm_session *s, enum ktm_dir dir)
{
	return s->path[dir == KTM_DIR_RX];
}

const char *ktm_path_name(enum ktm_path path)
{
	switch (path) {
	case KTM_PATH_KERNEL_SW:
		return "kernel";
	case KTM_PATH_KERNEL_HW:
		return "kernel-hw";
	case KTM_PATH_USERSPACE:
		return "userspace";
	}
	return "?";
}

bool ktm_session_rx_no_pad(const struct ktm_session *s)
{
	return s->rx_no_pad;
}

const char *ktm_session_fallback_reason(const struct ktm_session *s)
{
	return s->ssl ? s->fallback_reason : NULL;
}

enum ktm_tls_version ktm_session_version(const struct ktm_session *s)
{
	return (enum ktm_tls_version)s->version;
}

enum ktm_cipher ktm_session_cipher(const struct ktm_session *s)
{
	return s->cipher;
}

const char *ktm_session_peer_subject(const struct ktm_session *s)
{
	return s->subject;
}

const char *ktm_session_peer_issuer(const struct ktm_session *s)
{
	return s->issuer;
}

const char *ktm_session_peer_sans(const struct ktm_session *s)
{
	return s->sans;
}

const char *ktm_session_peer_cert_sha256(const struct ktm_session *s)
{
	return s->cert_sha256;
}

const char *ktm_session_peer_spki_sha256(const struct ktm_session *s)
{
	return s->spki_sha256;
}

uint64_t ktm_session_bytes(const struct ktm_session *s, enum ktm_dir dir)
{
	return s->bytes[dir == KTM_DIR_RX];
}

uint64_t ktm_session_records(const struct ktm_session *s, enum ktm_dir dir)
{
	return s->old_records[dir == KTM_DIR_RX] + ktm_session_key_records(s, dir);
}
