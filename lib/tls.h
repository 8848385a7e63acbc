/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the OpenSSL side — context, handshake, key derivation.
 * With session.h the only lib/ headers that name OpenSSL types;
 * handshake.c hands keys from here to ktls/ without knowing how they were
 * made.
 */
#ifndef KTM_TLS_H
#define KTM_TLS_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "internal.h"

#define KTM_SECRET_MAX 48	/* SHA-384 */

/* Per-handshake state, reachable from the SSL via SSL_get_app_data. */
struct ktm_hs {
	const struct ktm_config *cfg;
	/* TLS 1.3 application traffic secrets, from the key-log callback */
	uint8_t client_secret[KTM_SECRET_MAX], server_secret[KTM_SECRET_MAX];
	size_t client_len, server_len;
	/* the first record header the peer sent, printable, for "does not
	 * speak TLS" messages */
	char first_bytes[24];
	bool have_first;
	/* the first certificate verification failure */
	long verify_err;
	char verify_subject[KTM_ID_SUBJECT_MAX];
	char verify_sans[KTM_ID_SANS_MAX];
	char verify_issuer[KTM_ID_SUBJECT_MAX];
	char verify_serial[80];		/* hex, as openssl x509 -serial */
	char not_before[32], not_after[32];
	bool authz_refused;		/* verified, but not on the allow-list */
	char expected_host[256];
};

/* The keys of one direction, ready for ktls/: key, 12-byte IV (for TLS 1.2
 * GCM/CCM: 4-byte salt + 8-byte explicit nonce) and the next record
 * sequence number.  Wipe with OPENSSL_cleanse. */
struct ktm_dir_keys {
	uint8_t key[32];
	size_t key_len;
	uint8_t iv[12];
	uint64_t seq;
};

/* @t as "YYYY-MM-DD HH:MM:SS UTC" (or "?"). */
void ktm_tls_time_str(const ASN1_TIME *t, char *buf, size_t len);
/* Add every CRL of the PEM file @path to @store (only parse when @store is
 * NULL; config.c); their number, or -1 with *errp. */
int ktm_crls_load(const char *path, X509_STORE *store, struct ktm_error **errp);
/* A reference to @cfg's SSL_CTX (built at the first call, and again after
 * the credentials or TLS settings changed); release with SSL_CTX_free.
 * NULL with *errp. */
SSL_CTX *ktm_tls_ctx_new(const struct ktm_config *cfg, struct ktm_error **errp);
/* An SSL on @fd with @hs attached; the client verifies @host (DNS or IP). */
SSL *ktm_tls_ssl_new(SSL_CTX *ctx, int fd, struct ktm_hs *hs,
		     const char *host, struct ktm_error **errp);
/* One step of the handshake on @ssl (its fd non-blocking): done, what it
 * waits for, or KTM_HANDSHAKE_ERROR with *errp (@peer names the peer).
 * A refused peer certificate leaves SSL's ktm_hs verify_err set (the
 * caller lingers before closing: see handshake.c). */
enum ktm_handshake ktm_tls_handshake_step(SSL *ssl, const char *peer,
					  struct ktm_error **errp);
/* Map the negotiated suite to ours; false when the kernel has no such
 * cipher (e.g. CCM_8). */
bool ktm_tls_negotiated(SSL *ssl, uint16_t *version, enum ktm_cipher *cipher);
/* Derive this endpoint's TX and RX keys from the finished handshake. */
bool ktm_tls_derive(SSL *ssl, struct ktm_hs *hs, bool is_client,
		    struct ktm_dir_keys *tx, struct ktm_dir_keys *rx,
		    struct ktm_error **errp);
/* TLS 1.3 KeyUpdate: secret_N+1 = HKDF-Expand-Label(secret_N, "traffic
 * upd", "", Hash.length), then key and IV from it (RFC 8446 §7.2). */
bool ktm_tls13_next_keys(const char *digest, uint8_t *secret, size_t len,
			 size_t key_len, struct ktm_dir_keys *out,
			 struct ktm_error **errp);
/* Alert @desc received from @peer → *errp (@cfg names our certificate's
 * CA when the peer does not know it). */
void ktm_tls_alert_error(const struct ktm_config *cfg, uint8_t level,
			 uint8_t desc, const char *peer, struct ktm_error **errp);
/* Whether the allow-list of @cfg (if any) admits the verified @cert. */
bool ktm_authz_allows(const struct ktm_config *cfg, X509 *cert);

#endif /* KTM_TLS_H */
