// SPDX-License-Identifier: MIT
/*
 * OpenSSL, for the handshake only: the context from a configuration, one
 * step of the handshake at a time (handshake.c keeps the deadline), and
 * the traffic keys for the kernel, derived with OpenSSL's own KDFs
 * (TLS13-KDF for HKDF-Expand-Label, TLS1-PRF for the TLS 1.2 key block).
 * Nothing here writes application data.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "bytes.h"
#include "ktls.h"
#include "tls.h"

/* ---- callbacks ---------------------------------------------------------- */

/*
 * TLS 1.3 traffic secrets arrive as NSS key-log lines
 * ("CLIENT_TRAFFIC_SECRET_0 <client_random> <secret>"): OpenSSL 3.0 has no
 * other public way to read them.
 */
static void keylog_cb(const SSL *ssl, const char *line)
{
	struct ktm_hs *hs = SSL_get_app_data(ssl);
	const char *p;
	uint8_t *dst;
	size_t *len, n = 0;

	if (!hs)
		return;
	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24)) {
		dst = hs->client_secret;
		len = &hs->client_len;
	} else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24)) {
		dst = hs->server_secret;
		len = &hs->server_len;
	} else {
		return;
	}
	p = strrchr(line, ' ');
	if (!p)
		return;
	for (p++; p[0] && p[1] && n < KTM_SECRET_MAX; p += 2) {
		int hi = ktm_hex_digit(p[0]), lo = ktm_hex_digit(p[1]);

		if (hi < 0 || lo < 0)
			break;
		dst[n++] = (uint8_t)(hi << 4 | lo);
	}
	*len = n;
}

void ktm_tls_time_str(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t && ASN1_TIME_to_tm(t, &tm))
		strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	else
		snprintf(buf, len, "?");
}

static void serial_str(X509 *cert, char *buf, size_t len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hexs = bn ? BN_bn2hex(bn) : NULL;

	snprintf(buf, len, "%s", hexs ? hexs : "?");
	OPENSSL_free(hexs);
	BN_free(bn);
}

/* Remember the first failure and the certificate it concerns; OpenSSL
 * still decides (we return its verdict unchanged). */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs,
					      SSL_get_ex_data_X509_STORE_CTX_idx());
	struct ktm_hs *hs = ssl ? SSL_get_app_data(ssl) : NULL;
	X509 *cert;

	if (ok || !hs || hs->verify_err != X509_V_OK)
		return ok;
	hs->verify_err = X509_STORE_CTX_get_error(xs);
	cert = X509_STORE_CTX_get_current_cert(xs);
	if (!cert)
		return ok;
	ktm_x509_name_text(X509_get_subject_name(cert), hs->verify_subject,
			   sizeof(hs->verify_subject));
	ktm_x509_sans(cert, hs->verify_sans, sizeof(hs->verify_sans));
	ktm_x509_name_text(X509_get_issuer_name(cert), hs->verify_issuer,
			   sizeof(hs->verify_issuer));
	serial_str(cert, hs->verify_serial, sizeof(hs->verify_serial));
	ktm_tls_time_str(X509_get0_notBefore(cert), hs->not_before,
		 sizeof(hs->not_before));
	ktm_tls_time_str(X509_get0_notAfter(cert), hs->not_after,
			 sizeof(hs->not_after));
	return ok;
}

static void msg_cb(int write_p, int version, int content_type,
		   const void *buf, size_t len, SSL *ssl, void *arg)
{
	struct ktm_hs *hs = SSL_get_app_data(ssl);
	const uint8_t *b = buf;
	size_t i, used = 0;
	bool printable = true;

	(void)version, (void)arg;
	if (write_p || content_type != SSL3_RT_HEADER || !hs || hs->have_first)
		return;
	hs->have_first = true;
	for (i = 0; i < len && i < 5; i++)
		if (b[i] < 0x20 || b[i] > 0x7e)
			printable = false;
	for (i = 0; i < len && i < 5; i++) {
		int n = printable ?
			snprintf(hs->first_bytes + used,
				 sizeof(hs->first_bytes) - used, "%c", b[i]) :
			snprintf(hs->first_bytes + used,
				 sizeof(hs->first_bytes) - used, "%s%02x",
				 i ? " " : "", b[i]);

		if (n < 0)
			break;
		used += (size_t)n;
	}
}

/* ---- context ------------------------------------------------------------ */

static bool cipher_lists(const struct ktm_config *cfg, char *l13, size_t n13,
			 char *l12, size_t n12)
{
	size_t i, u13 = 0, u12 = 0;

	l13[0] = l12[0] = '\0';
	for (i = 0; i < cfg->n_ciphers; i++) {
		enum ktm_cipher c = cfg->ciphers[i];
		int a, b;

		a = snprintf(l13 + u13, n13 - u13, "%s%s", u13 ? ":" : "",
			     ktm_cipher_suites(c, true));
		b = snprintf(l12 + u12, n12 - u12, "%s%s", u12 ? ":" : "",
			     ktm_cipher_suites(c, false));
		if (a < 0 || b < 0 || (size_t)a >= n13 - u13 ||
		    (size_t)b >= n12 - u12)
			return false;
		u13 += (size_t)a;
		u12 += (size_t)b;
	}
	return true;
}

/*
 * Chain verification with strict names: a certificate that carries any
 * subjectAltName is matched on its SANs only, never on its CN (OpenSSL
 * falls back to the CN whenever there is no DNS SAN, e.g. a certificate
 * with IP SANs only); partial wildcards ("d*.example") never match
 * (set on the SSL in ktm_tls_ssl_new).
 */
static int cert_verify_cb(X509_STORE_CTX *xs, void *arg)
{
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(xs);
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs,
					      SSL_get_ex_data_X509_STORE_CTX_idx());
	struct ktm_hs *hs = ssl ? SSL_get_app_data(ssl) : NULL;
	int ok;

	(void)arg;
	if (leaf && param &&
	    X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1) >= 0)
		X509_VERIFY_PARAM_set_hostflags(param,
			X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
			X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	ok = X509_verify_cert(xs);
	/* Authorization after the chain verified, before the handshake can
	 * finish: a refused peer gets an alert and no application byte. */
	if (ok != 1 || !hs || !hs->cfg->verify_peer ||
	    ktm_authz_allows(hs->cfg, leaf))
		return ok;
	hs->authz_refused = true;
	hs->verify_err = X509_V_ERR_CERT_REJECTED;
	ktm_x509_name_text(X509_get_subject_name(leaf), hs->verify_subject,
			   sizeof(hs->verify_subject));
	ktm_x509_sans(leaf, hs->verify_sans, sizeof(hs->verify_sans));
	X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
	return 0;
}

/* ctx_build(): the settings that cannot fail: versions, no tickets, no
 * session cache, no read-ahead, our callbacks. */
static void ctx_set_fixed(SSL_CTX *ctx, const struct ktm_config *cfg)
{
	SSL_CTX_set_min_proto_version(ctx, cfg->min_version);
	SSL_CTX_set_max_proto_version(ctx, cfg->max_version);
	/* No tickets: with none, both TLS 1.3 record sequences start at 0
	 * when the handshake ends (and nothing is left to read). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* Never read ahead: OpenSSL must not swallow records meant for the
	 * kernel after the handshake. */
	SSL_CTX_set_read_ahead(ctx, 0);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
	SSL_CTX_set_msg_callback(ctx, msg_cb);
}

static SSL_CTX *ctx_build(const struct ktm_config *cfg, struct ktm_error **errp)
{
	bool server = cfg->endpoint == KTM_ENDPOINT_SERVER;
	char l13[256], l12[512], why[256];
	SSL_CTX *ctx;
	int mode;

	if (!cfg->cert_path) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "no credentials directory configured");
		ktm_error_hint_set(errp, "set one (--creds DIR) in QEMU's "
				   "tls-creds-x509 layout");
		return NULL;
	}
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "cannot create a TLS context%s",
			      ktm_ossl_reason(why, sizeof(why)));
		return NULL;
	}
	ctx_set_fixed(ctx, cfg);

	if (!cipher_lists(cfg, l13, sizeof(l13), l12, sizeof(l12)) ||
	    !SSL_CTX_set_ciphersuites(ctx, l13) ||
	    (cfg->min_version < KTM_TLS_1_3 && !SSL_CTX_set_cipher_list(ctx, l12))) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "OpenSSL takes none of the configured ciphers%s",
			      ktm_ossl_reason(why, sizeof(why)));
		goto err_free_ctx;
	}
	/* Everything as config.c read it, once: the trust store (CAs, CRLs,
	 * CRL flags), the certificate and its chain, the key (decrypted
	 * there; OpenSSL never prompts). */
	SSL_CTX_set1_cert_store(ctx, cfg->store);
	if (SSL_CTX_use_certificate(ctx, cfg->cert) != 1 ||
	    SSL_CTX_set1_chain(ctx, cfg->chain) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, cfg->key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "cannot use certificate %s with key %s%s",
			      cfg->cert_path, cfg->key_path,
			      ktm_ossl_reason(why, sizeof(why)));
		goto err_free_ctx;
	}
	mode = SSL_VERIFY_NONE;
	if (cfg->verify_peer)
		mode = SSL_VERIFY_PEER |
		       (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
	SSL_CTX_set_verify(ctx, mode, verify_cb);
	SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, NULL);
	return ctx;

err_free_ctx:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The client's check of the server's name: an IP address against IP SANs,
 * a name against DNS SANs, no partial wildcards. */
static bool expect_host(SSL *ssl, struct ktm_hs *hs, const char *host)
{
	unsigned char ip[16];

	snprintf(hs->expected_host, sizeof(hs->expected_host), "%s", host);
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	return SSL_set1_host(ssl, host) && SSL_set_tlsext_host_name(ssl, host);
}

SSL_CTX *ktm_tls_ctx_new(const struct ktm_config *cfg, struct ktm_error **errp)
{
	/* The cache is the one mutable part of a config: built once, under
	 * the lock, and shared (each caller gets its own reference). */
	struct ktm_config *c = (struct ktm_config *)cfg;
	SSL_CTX *ctx;

	pthread_mutex_lock(&c->ctx_lock);
	if (!c->ctx) {
		c->ctx = ctx_build(cfg, errp);
		if (c->ctx)
			c->ctx_builds++;
	}
	ctx = c->ctx;
	if (ctx)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&c->ctx_lock);
	return ctx;
}

SSL *ktm_tls_ssl_new(SSL_CTX *ctx, int fd, struct ktm_hs *hs,
		     const char *host, struct ktm_error **errp)
{
	const struct ktm_config *cfg = hs->cfg;
	char why[256];
	SSL *ssl;

	ssl = SSL_new(ctx);
	if (!ssl) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "cannot create a TLS connection%s",
			      ktm_ossl_reason(why, sizeof(why)));
		return NULL;
	}
	SSL_set_app_data(ssl, hs);
	/* Our socket BIO (bio.c): MSG_NOSIGNAL, and it does not own the fd. */
	if (!ktm_bio_attach(ssl, fd))
		goto err_free_ssl;
	if (cfg->endpoint == KTM_ENDPOINT_CLIENT) {
		SSL_set_connect_state(ssl);
		if (cfg->hostname)
			host = cfg->hostname;
		if (host && cfg->verify_peer && !expect_host(ssl, hs, host))
			goto err_free_ssl;
	} else {
		SSL_set_accept_state(ssl);
	}
	return ssl;

err_free_ssl:
	ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
		      "cannot set up TLS for '%s'%s", host ? host : "peer",
		      ktm_ossl_reason(why, sizeof(why)));
	SSL_free(ssl);
	return NULL;
}

enum ktm_handshake ktm_tls_handshake_step(SSL *ssl, const char *peer,
					  struct ktm_error **errp)
{
	struct ktm_hs *hs = SSL_get_app_data(ssl);
	int ret, err;

	ERR_clear_error();
	ret = SSL_do_handshake(ssl);
	if (ret == 1)
		return KTM_HANDSHAKE_DONE;
	err = SSL_get_error(ssl, ret);
	if (err == SSL_ERROR_WANT_READ)
		return KTM_HANDSHAKE_WANT_READ;
	if (err == SSL_ERROR_WANT_WRITE)
		return KTM_HANDSHAKE_WANT_WRITE;
	if (err == SSL_ERROR_SYSCALL && errno && !ERR_peek_error()) {
		ktm_error_set(errp, KTM_ERR_PEER, errno,
			      "connection to %s failed during the TLS "
			      "handshake: %s", peer, strerror(errno));
		return KTM_HANDSHAKE_ERROR;
	}
	ktm_tls_handshake_error(ssl, hs->cfg, peer,
				hs->have_first ? hs->first_bytes : NULL, errp);
	return KTM_HANDSHAKE_ERROR;
}

/* ---- keys ---------------------------------------------------------------- */

bool ktm_fd_key_records(int fd, enum ktm_cipher cipher, enum ktm_dir dir,
			uint64_t *records, struct ktm_error **errp)
{
	struct ktm_ktls_crypto c;
	char eb[24];
	int ret;

	ret = ktm_ktls_read_back(NULL, fd, dir == KTM_DIR_RX ? KTM_KTLS_RX :
				 KTM_KTLS_TX, cipher, &c);
	if (!ret)
		*records = ktm_ktls_crypto_rec_seq(&c);
	ktm_ktls_crypto_wipe(&c);
	if (ret)
		ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, ret,
			      "cannot read the record count of kernel TLS on "
			      "fd %d (%s)", fd, ktm_errno_name(ret, eb));
	return !ret;
}

bool ktm_tls_negotiated(SSL *ssl, uint16_t *version, enum ktm_cipher *cipher)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	const char *std = c ? SSL_CIPHER_standard_name(c) : NULL;

	*version = (uint16_t)SSL_version(ssl);
	if (!c || (std && strstr(std, "CCM_8")))
		return false;
	switch (SSL_CIPHER_get_cipher_nid(c)) {
	case NID_aes_128_gcm:
		*cipher = KTM_CIPHER_AES_GCM_128;
		return true;
	case NID_aes_256_gcm:
		*cipher = KTM_CIPHER_AES_GCM_256;
		return true;
	case NID_aes_128_ccm:
		*cipher = KTM_CIPHER_AES_CCM_128;
		return true;
	case NID_chacha20_poly1305:
		*cipher = KTM_CIPHER_CHACHA20_POLY1305;
		return true;
	}
	return false;
}

/* HKDF-Expand-Label(secret, label, "", out_len) (RFC 8446 §7.1). */
static bool tls13_expand(const char *digest, const uint8_t *secret,
			 size_t secret_len, const char *label, uint8_t *out,
			 size_t out_len)
{
	static const unsigned char prefix[] = "tls13 ";
	unsigned char empty = 0;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
		OSSL_PARAM_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
		OSSL_PARAM_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
					secret_len),
		OSSL_PARAM_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)prefix,
					sizeof(prefix) - 1),
		OSSL_PARAM_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label,
					strlen(label)),
		OSSL_PARAM_octet_string(OSSL_KDF_PARAM_DATA, &empty, 0),
		OSSL_PARAM_END,
	};
	bool ok = kctx && EVP_KDF_derive(kctx, out, out_len, params) > 0;

	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ok;
}

static bool tls13_keys(const char *digest, const uint8_t *secret, size_t len,
		       size_t key_len, struct ktm_dir_keys *out)
{
	out->key_len = key_len;
	out->seq = 0;
	return tls13_expand(digest, secret, len, "key", out->key, key_len) &&
	       tls13_expand(digest, secret, len, "iv", out->iv, sizeof(out->iv));
}

bool ktm_tls13_next_keys(const char *digest, uint8_t *secret, size_t len,
			 size_t key_len, struct ktm_dir_keys *out,
			 struct ktm_error **errp)
{
	uint8_t next[KTM_SECRET_MAX];
	char why[256];

	if (!tls13_expand(digest, secret, len, "traffic upd", next, len) ||
	    !tls13_keys(digest, next, len, key_len, out)) {
		OPENSSL_cleanse(next, sizeof(next));
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "cannot derive the next TLS 1.3 traffic keys%s",
			      ktm_ossl_reason(why, sizeof(why)));
		return false;
	}
	memcpy(secret, next, len);
	OPENSSL_cleanse(next, sizeof(next));
	return true;
}

/*
 * TLS 1.2 key block (RFC 5246 §6.3): PRF(master, "key expansion",
 * server_random + client_random) = client key, server key, client IV,
 * server IV (AEAD suites have no MAC keys).  GCM/CCM take a 4-byte implicit
 * IV, ChaCha20 12 bytes (RFC 7905).
 */
static bool tls12_keys(SSL *ssl, const char *digest, size_t key_len,
		       size_t fixed_iv, bool is_client, struct ktm_dir_keys *tx,
		       struct ktm_dir_keys *rx)
{
	static const char label[] = "key expansion";
	uint8_t master[SSL_MAX_MASTER_KEY_LENGTH], seed[13 + 64], block[88];
	size_t mlen, blen = 2 * key_len + 2 * fixed_iv;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	struct ktm_dir_keys *c = is_client ? tx : rx, *s = is_client ? rx : tx;
	bool ok = false;

	mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master,
					  sizeof(master));
	memcpy(seed, label, 13);
	SSL_get_server_random(ssl, seed + 13, 32);
	SSL_get_client_random(ssl, seed + 45, 32);
	if (kctx && mlen && blen <= sizeof(block)) {
		OSSL_PARAM params[] = {
			OSSL_PARAM_utf8_string(OSSL_KDF_PARAM_DIGEST,
					       (char *)digest, 0),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SECRET, master, mlen),
			OSSL_PARAM_octet_string(OSSL_KDF_PARAM_SEED, seed,
						sizeof(seed)),
			OSSL_PARAM_END,
		};

		ok = EVP_KDF_derive(kctx, block, blen, params) > 0;
	}
	if (ok) {
		memcpy(c->key, block, key_len);
		memcpy(s->key, block + key_len, key_len);
		memcpy(c->iv, block + 2 * key_len, fixed_iv);
		memcpy(s->iv, block + 2 * key_len + fixed_iv, fixed_iv);
		c->key_len = s->key_len = key_len;
		/* The Finished message was record 0 under these keys. */
		c->seq = s->seq = 1;
		if (fixed_iv == 4) {
			/* explicit nonce = sequence number, as OpenSSL does */
			ktm_put_be64(tx->iv + 4, tx->seq);
			ktm_put_be64(rx->iv + 4, rx->seq);
		}
	}
	OPENSSL_cleanse(master, sizeof(master));
	OPENSSL_cleanse(block, sizeof(block));
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ok;
}

bool ktm_tls_derive(SSL *ssl, struct ktm_hs *hs, bool is_client,
		    struct ktm_dir_keys *tx, struct ktm_dir_keys *rx,
		    struct ktm_error **errp)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
	const struct ktm_ktls_cipher *row;
	enum ktm_cipher cipher;
	uint16_t version;
	char why[256];
	bool ok;

	if (!md || !ktm_tls_negotiated(ssl, &version, &cipher)) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "negotiated cipher %s has no kernel TLS equivalent",
			      c ? SSL_CIPHER_get_name(c) : "(none)");
		return false;
	}
	row = ktm_ktls_cipher_find(cipher);
	memset(tx, 0, sizeof(*tx));
	memset(rx, 0, sizeof(*rx));
	if (version == TLS1_3_VERSION) {
		const uint8_t *ts = is_client ? hs->client_secret : hs->server_secret;
		const uint8_t *rs = is_client ? hs->server_secret : hs->client_secret;
		size_t tl = is_client ? hs->client_len : hs->server_len;
		size_t rl = is_client ? hs->server_len : hs->client_len;

		if (!tl || tl != rl || tl != (size_t)EVP_MD_get_size(md)) {
			ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
				      "OpenSSL did not report the TLS 1.3 traffic "
				      "secrets");
			return false;
		}
		ok = tls13_keys(EVP_MD_get0_name(md), ts, tl, row->key_len, tx) &&
		     tls13_keys(EVP_MD_get0_name(md), rs, rl, row->key_len, rx);
	} else {
		ok = tls12_keys(ssl, EVP_MD_get0_name(md), row->key_len,
				row->salt_len ? row->salt_len : KTM_KTLS_IV_LEN,
				is_client, tx, rx);
	}
	if (!ok) {
		OPENSSL_cleanse(tx, sizeof(*tx));
		OPENSSL_cleanse(rx, sizeof(*rx));
		ktm_error_set(errp, KTM_ERR_INTERNAL, EPROTO,
			      "cannot derive the traffic keys%s",
			      ktm_ossl_reason(why, sizeof(why)));
	}
	return ok;
}
