// SPDX-License-Identifier: MIT
/*
 * A session after its handshake (handshake.c): data both ways on the
 * kernel or the userspace path, close_notify, TLS 1.3 KeyUpdate, status.
 * The session knows nothing of the migration stream.
 *
 * Threads: a session is used by one thread at a time.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "ktls.h"
#include "session.h"
#include "tls.h"

/* ---- shared with handshake.c ------------------------------------------------ */

int ktm_sess_install_dir(struct ktm_session *s, enum ktm_ktls_dir dir,
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

int64_t ktm_sess_live_seq(const struct ktm_session *s, enum ktm_ktls_dir dir)
{
	struct ktm_ktls_crypto c;
	int64_t seq;
	int ret;

	ret = ktm_ktls_read_back(s->cfg->ktls_ops, s->fd, dir, s->cipher, &c);
	seq = ret ? ret : (int64_t)ktm_ktls_crypto_rec_seq(&c);
	ktm_ktls_crypto_wipe(&c);
	return seq;
}

void ktm_sess_hs_drop(struct ktm_session *s)
{
	/* The userspace path keeps the SSL; its callbacks must not see the
	 * handshake state once it is gone. */
	if (s->ssl)
		SSL_set_app_data(s->ssl, NULL);
	if (s->hs) {
		OPENSSL_cleanse(s->hs, sizeof(*s->hs));
		free(s->hs);
		s->hs = NULL;
	}
}

/* ---- data ---------------------------------------------------------------- */

void ktm_session_note_error(struct ktm_session *s, int err)
{
	if (s && err == ETIMEDOUT)
		__atomic_store_n(&s->timed_out, err, __ATOMIC_RELAXED);
}

static bool io_error(struct ktm_session *s, int err, const char *doing,
		     struct ktm_error **errp)
{
	ktm_session_note_error(s, err);
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
 * better than "end of file": a timeout one of this session's calls saw
 * (it took the socket error), else what TCP says (ktm_net_end_cause: a
 * pending error, or a connection the kernel gave up on).  A peer's FIN
 * without close_notify leaves no such trace.  0 for a plain end of file.
 */
static int eof_cause(const struct ktm_session *s)
{
	if (__atomic_load_n(&s->timed_out, __ATOMIC_RELAXED))
		return ETIMEDOUT;
	return ktm_net_end_cause(s->fd);
}

bool ktm_sess_ssl_failed(struct ktm_session *s, int ret, const char *doing,
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
		/* the kernel gave up on the connection: say that */
		if (eof_cause(s) == ETIMEDOUT)
			return io_error(s, ETIMEDOUT, doing, errp);
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
				return ktm_sess_ssl_failed(s, ret, "sending to", errp);
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
	ret = ktm_sess_install_dir(s, dir == KTM_DIR_TX ? KTM_KTLS_TX : KTM_KTLS_RX, &k);
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
			return ktm_sess_ssl_failed(s, -1, "updating the key with", errp);
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
	seq = ktm_sess_live_seq(s, dir == KTM_DIR_RX ? KTM_KTLS_RX : KTM_KTLS_TX);
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
		ktm_sess_ssl_failed(s, ret, "receiving from", errp);
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
			int cause = eof_cause(s);

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
			return ktm_sess_ssl_failed(s, -1, "closing the session with", errp);
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
	ktm_hook_free(s->hook);	/* kills a hook still running */
	ktm_error_free(s->pending);
	ktm_sess_hs_drop(s);
	SSL_free(s->ssl);
	SSL_CTX_free(s->ctx);
	if (s->fd >= 0 && s->owns_fd)
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
