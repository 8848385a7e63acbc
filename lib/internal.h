/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the error setter and small helpers shared by the
 * library's files.  Never installed.
 */
#ifndef KTM_INTERNAL_H
#define KTM_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "ktm.h"

struct ktm_ktls_ops;

#define KTM_MAX_PINS 8

/* See ktm_config_* in ktm.h.  Read-only once sessions use it. */
struct ktm_config {
	enum ktm_endpoint endpoint;
	bool verify_peer;
	char *creds_dir;
	char *ca_path, *cert_path, *key_path;
	char *crl_path;			/* NULL when the dir has no ca-crl.pem */
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
	/* Kernel calls of ktls/; NULL means the real ones.  Tests swap in
	 * fakes (see tests/unit). */
	const struct ktm_ktls_ops *ktls_ops;
};

/* "ENOENT" for ENOENT (positive or negative); "errno 1234" when unknown.
 * The returned string is static or lives in @buf. */
const char *ktm_errno_name(int err, char buf[24]);

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

/* ---- verify.c ---- */

struct x509_st;
struct ssl_st;

/* Set *errp for a failed handshake on @ssl, whose verify result or error
 * queue says why; @peer names the peer in the message.  Clears the OpenSSL
 * error queue. */
void ktm_tls_handshake_error(struct ssl_st *ssl, const struct ktm_config *cfg,
			     const char *peer, const char *first_bytes,
			     struct ktm_error **errp);
/* Append OpenSSL's last queued reason as ": reason" into @buf (or nothing)
 * and clear the queue. */
const char *ktm_ossl_reason(char *buf, size_t len);
/* "DNS:a, IP:10.0.0.7" into @buf. */
void ktm_x509_sans(struct x509_st *cert, char *buf, size_t len);

/* ---- hooks.c ---- */

/* What the check hook is told about a session, filled by session.c (so
 * hooks.c never calls back into the session: no session <-> hooks cycle).
 * Strings are borrowed from the session. */
struct ktm_check_facts {
	const char *subject, *sans, *cert_sha256, *spki_sha256;
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
	bool kernel_path;	/* the send direction is on kernel TLS */
};

/* Run the configured checks on @s (handed to the in-process callback
 * only) described by @f; false with *errp (KTM_ERR_CHECK) on a veto. */
bool ktm_checks_run(const struct ktm_config *cfg, const struct ktm_session *s,
		    const struct ktm_check_facts *f, struct ktm_error **errp);

#endif /* KTM_INTERNAL_H */
