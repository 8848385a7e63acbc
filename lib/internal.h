/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the error setter and small helpers shared by the
 * library's files.  Never installed.
 */
#ifndef KTM_INTERNAL_H
#define KTM_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "ktm.h"

struct ktm_ktls_ops;
struct ssl_ctx_st;
struct evp_pkey_st;
struct x509_st;
struct x509_store_st;
struct stack_st_X509;

#define KTM_MAX_PINS 8

/* One allow-list rule (authz.c). */
enum ktm_allow_kind {
	KTM_ALLOW_DN = 1, KTM_ALLOW_DN_GLOB, KTM_ALLOW_DNS, KTM_ALLOW_IP,
	KTM_ALLOW_SPKI,
};
struct ktm_allow {
	enum ktm_allow_kind kind;
	char *text;			/* the rule as given, owned */
	const char *value;		/* inside text, after the prefix */
	uint8_t bin[32];		/* ip: address, spki: digest */
	size_t bin_len;
};

/* See ktm_config_* in ktm.h.  Read-only once sessions use it. */
struct ktm_config {
	enum ktm_endpoint endpoint;
	bool verify_peer;
	char *creds_dir;
	char *ca_path, *cert_path, *key_path;
	char *crl_path;			/* NULL when the dir has no ca-crl.pem */
	/* The private key, read once (with the passphrase when encrypted);
	 * key_mode is its file's mode (0640 is accepted and reported). */
	struct evp_pkey_st *key;
	unsigned int key_mode;
	/* ... and the rest, also read once: the trust store (every CA of
	 * ca-cert.pem, every CRL of ca-crl.pem, the CRL flags), this end's
	 * certificate and the chain that follows it in its file */
	struct x509_store_st *store;
	struct x509_st *cert;
	struct stack_st_X509 *chain;
	char *passphrase, *passphrase_path;
	/* One SSL_CTX (CA, CRLs, certificate, key) for every session made
	 * from this config, built at the first and replaced by
	 * ktm_config_reload(); sessions hold their own reference.  The lock
	 * guards ctx and ctx_builds only. */
	struct ssl_ctx_st *ctx;
	unsigned int ctx_builds;
	pthread_mutex_t ctx_lock;
	char *hostname;			/* verification override, client */
	uint16_t min_version, max_version;
	enum ktm_cipher ciphers[KTM_CIPHER_COUNT];
	size_t n_ciphers;
	uint8_t pins[KTM_MAX_PINS][32];
	size_t n_pins;
	enum ktm_ktls_policy policy;
	bool rx_no_pad;
	unsigned int connect_ms, handshake_ms;
	ktm_check_fn check_fn;
	void *check_opaque;
	char *hook_path, *hook_object, *hook_uri;
	unsigned int hook_timeout_ms;	/* the hook's whole run */
	uint64_t key_limit;		/* records per key; 0: the cipher's */
	/* who may connect beyond the CA's signature; none: CA only */
	struct ktm_allow *allow, *allow_f;	/* options', the file's */
	size_t n_allow, n_allow_f;
	char *allow_file;
	/* Kernel calls of ktls/; NULL means the real ones.  Tests swap in
	 * fakes (see tests/unit). */
	const struct ktm_ktls_ops *ktls_ops;
};

/* "ENOENT" for ENOENT (positive or negative); "errno 1234" when unknown.
 * The returned string is static or lives in @buf. */
const char *ktm_errno_name(int err, char buf[24]);

/* The library's one monotonic clock, in seconds (clock.c); the tests use
 * it too.  ktm_now_ms() is the same clock in whole milliseconds, for
 * deadlines. */
double ktm_now_s(void);
static inline uint64_t ktm_now_ms(void)
{
	return (uint64_t)(ktm_now_s() * 1e3);
}

/* The OpenSSL cipher-suite list that negotiates @cipher in TLS 1.3
 * (@tls13) or 1.2; NULL for a value out of range (names.c). */
const char *ktm_cipher_suites(enum ktm_cipher cipher, bool tls13);

/* The value of one hex digit, or -1. */
static inline int ktm_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A connected loopback TCP pair (IPv4): fds[0] connected, fds[1]
 * accepted.  Both close-on-exec.  0 or -errno; nothing left open on
 * failure.  Used by the probe and by the tests. */
int ktm_net_tcp_pair(int fds[2]);

/* Can this kernel replace TLS keys on a live socket?  0 yes, -EBUSY no
 * (before 6.14), another -errno when it cannot tell (no tls module,
 * ...).  Asked once per process, on a throwaway socket pair (probe.c). */
int ktm_kernel_rekey_check(void);

struct sockaddr;
/* "10.0.0.7:4444", "[::1]:4444" or "?" for @sa into @buf (net.c); the one
 * socket-address text of the library. */
void ktm_net_addr_text(const struct sockaddr *sa, char *buf, size_t len);
/* Why the TCP connection on @fd ended (net.c): a socket error, ETIMEDOUT
 * when the kernel gave up on it, or 0 for a plain end of file. */
int ktm_net_end_cause(int fd);

/* ---- error.c ---- */

/* Mark @err (NULL: nothing) as the peer's own stated stop (its ABORT), as
 * opposed to what a connection showed of it; ktm_error_peer_stop() asks. */
void ktm_error_set_peer_stop(struct ktm_error *err);
bool ktm_error_peer_stop(const struct ktm_error *err);

/* ---- verify.c ---- */

struct x509_st;
struct ssl_st;

/* Set *errp for a failed handshake on @ssl, whose verify result or error
 * queue says why; @peer names the peer in the message.  Clears the OpenSSL
 * error queue. */
void ktm_tls_handshake_error(struct ssl_st *ssl, const struct ktm_config *cfg,
			     const char *peer, const char *first_bytes,
			     struct ktm_error **errp);
/* bio.c: put @ssl on a socket BIO for @fd (not owned) whose writes use
 * MSG_NOSIGNAL, so a dead peer is EPIPE, never SIGPIPE.  false on
 * allocation failure. */
bool ktm_bio_attach(struct ssl_st *ssl, int fd);
/* Append OpenSSL's last queued reason as ": reason" into @buf (or nothing)
 * and clear the queue. */
const char *ktm_ossl_reason(char *buf, size_t len);
/* Room for identity text: a subject, and the SAN list (at least one
 * longest legal DNS name, 253 bytes, fully escaped). */
#define KTM_ID_SUBJECT_MAX 1024
#define KTM_ID_SANS_MAX 2048
/* "DNS:a, IP:10.0.0.7" into @buf: each name decoded by its type (an
 * iPAddress of other than 4 or 16 bytes is "IP:invalid(N bytes)"), every
 * byte a reader could split on escaped as \xHH; only whole names, and
 * ", ..." when some did not fit.  Returns the length written. */
size_t ktm_x509_sans(struct x509_st *cert, char *buf, size_t len);
struct X509_name_st;
/* The subject @name in RFC 2253 form, escaped likewise; "..." at the end
 * when cut.  Returns the length written. */
size_t ktm_x509_name_text(const struct X509_name_st *name, char *buf,
			  size_t len);

/* ---- authz.c ---- */

/* Parse @rule into @a (@where names its file:line for the message). */
bool ktm_allow_parse(struct ktm_allow *a, const char *rule, const char *where,
		     struct ktm_error **errp);
/* "any certificate signed by the CA in PATH" or "the allow-list FILE (N
 * rules)", for messages and reports. */
void ktm_authz_describe(const struct ktm_config *cfg, char *buf, size_t len);

/* ---- session.c ---- */

/* Whether a recv on @s would not block (data buffered in userspace TLS or
 * on the socket, or the peer closed); never blocks. */
bool ktm_session_readable(const struct ktm_session *s);
/* A call outside the session (sendfile, splice, io_uring on its socket)
 * failed with @err: an ETIMEDOUT is kept, so a later end of file on the
 * session is named as the timeout. */
void ktm_session_note_error(struct ktm_session *s, int err);
/* ktm_session_connect() that @cancel_fd (an eventfd or pipe; -1: none)
 * cuts short, in the connect or the handshake, when it becomes readable:
 * then NULL with a KTM_ERR_CANCELLED error (ECANCELED). */
struct ktm_session *ktm_session_connect_cancel(const struct ktm_config *cfg,
					       const char *host,
					       const char *port, int cancel_fd,
					       struct ktm_error **errp);
/* The userspace path's OpenSSL object (NULL on the kernel path), for the
 * relay's buffering (relay.c); the session still owns it. */
struct ssl_st *ktm_session_ssl(const struct ktm_session *s);

/* ---- hooks.c ---- */

/* What the check hook is told about a session, filled by handshake.c (so
 * hooks.c never calls back into the session: no session <-> hooks cycle).
 * Strings are borrowed from the session. */
struct ktm_check_facts {
	const char *subject, *sans, *issuer, *cert_sha256, *spki_sha256;
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
	bool kernel_path;	/* the send direction is on kernel TLS */
};

/* The in-process check of @cfg (if any) on @s, run inline (it is the
 * caller's code); false with *errp (KTM_ERR_CHECK) on a veto. */
bool ktm_check_callback(const struct ktm_config *cfg,
			const struct ktm_session *s, struct ktm_error **errp);

/* One run of the check hook (the executable of ktm_config_set_check_exec),
 * driven without blocking. */
struct ktm_hook_run;
/* Fork the hook of @cfg for the session described by @f; NULL with *errp
 * (KTM_ERR_CHECK: a refusal). */
struct ktm_hook_run *ktm_hook_start(const struct ktm_config *cfg,
				    const struct ktm_check_facts *f,
				    struct ktm_error **errp);
/* Take what is there, never waiting: 1 the hook allowed, 0 it still runs
 * (poll ktm_hook_poll_fd() for POLLIN at most ktm_hook_timeout_ms()), -1
 * refused with *errp (a veto, death by a signal, no status, or the
 * timeout: then its process group was killed). */
int ktm_hook_step(struct ktm_hook_run *h, struct ktm_error **errp);
/* The descriptor to wait on (-1: none, wait ktm_hook_timeout_ms()). */
int ktm_hook_poll_fd(const struct ktm_hook_run *h);
/* Milliseconds until the hook's deadline (or the next look), >= 0. */
int ktm_hook_timeout_ms(const struct ktm_hook_run *h);
/* Kill a hook still running, reap it, free.  Accepts NULL. */
void ktm_hook_free(struct ktm_hook_run *h);

#endif /* KTM_INTERNAL_H */
