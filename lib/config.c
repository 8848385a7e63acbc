// SPDX-License-Identifier: MIT
/*
 * Configuration: the credentials directory (QEMU's tls-creds-x509 layout),
 * verification, versions, ciphers, pins, policy, timeouts, checks.  Files
 * are checked when they are named, so a bad path or key shows up before
 * any connection is made.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"
#include "tls.h"

#define KTM_DEFAULT_TIMEOUT_MS 10000
#define KTM_HOOK_TIMEOUT_MS 30000

static const char ktm_layout_hint[] =
	"the directory must hold ca-cert.pem and, for a server, "
	"server-cert.pem and server-key.pem, for a client, client-cert.pem "
	"and client-key.pem (QEMU tls-creds-x509 layout)";

struct ktm_config *ktm_config_new(enum ktm_endpoint endpoint,
				  struct ktm_error **errp)
{
	struct ktm_config *cfg;
	unsigned int i;

	if (endpoint != KTM_ENDPOINT_CLIENT && endpoint != KTM_ENDPOINT_SERVER) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "unknown endpoint %d (client or server)", endpoint);
		return NULL;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a configuration");
		return NULL;
	}
	cfg->endpoint = endpoint;
	cfg->verify_peer = true;
	cfg->min_version = KTM_TLS_1_2;
	cfg->max_version = KTM_TLS_1_3;
	for (i = 0; i < KTM_CIPHER_COUNT; i++)
		cfg->ciphers[i] = (enum ktm_cipher)(i + 1);
	cfg->n_ciphers = KTM_CIPHER_COUNT;
	cfg->policy = KTM_KTLS_PREFER;
	cfg->connect_ms = KTM_DEFAULT_TIMEOUT_MS;
	cfg->handshake_ms = KTM_DEFAULT_TIMEOUT_MS;
	cfg->hook_timeout_ms = KTM_HOOK_TIMEOUT_MS;
	return cfg;
}

void ktm_config_free(struct ktm_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->creds_dir);
	free(cfg->ca_path);
	free(cfg->cert_path);
	free(cfg->key_path);
	free(cfg->crl_path);
	free(cfg->hostname);
	free(cfg->hook_path);
	free(cfg->hook_object);
	free(cfg->hook_uri);
	OPENSSL_cleanse(cfg->pins, sizeof(cfg->pins));
	free(cfg);
}

static char *path_join(const char *dir, const char *name)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

/* The file must exist and be a regular file. */
static bool check_present(const char *path, const char *role,
			  struct ktm_error **errp)
{
	struct stat st;

	if (stat(path, &st)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot use %s %s: %s", role, path,
			      strerror(errno));
		ktm_error_hint_set(errp, "%s", ktm_layout_hint);
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s %s is not a regular file", role, path);
		return false;
	}
	return true;
}

static X509 *load_cert(const char *path, const char *role,
		       struct ktm_error **errp)
{
	char why[256];
	X509 *x = NULL;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno, "cannot open %s %s: %s",
			      role, path, strerror(errno));
		return NULL;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s %s holds no PEM certificate%s", role, path,
			      ktm_ossl_reason(why, sizeof(why)));
	return x;
}

static EVP_PKEY *load_key(const char *path, struct ktm_error **errp)
{
	char why[256];
	EVP_PKEY *k;
	struct stat st;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot open private key %s: %s", path,
			      strerror(errno));
		return NULL;
	}
	/* A key others can read is a key others may have copied. */
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
		fclose(f);
		ktm_error_set(errp, KTM_ERR_CONFIG, EACCES,
			      "private key %s is readable by group or others "
			      "(mode %04o)", path, (unsigned int)(st.st_mode & 07777));
		ktm_error_hint_set(errp, "chmod 600 %s", path);
		return NULL;
	}
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!k)
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "private key %s cannot be read (PEM, unencrypted)%s",
			      path, ktm_ossl_reason(why, sizeof(why)));
	return k;
}

/* Every CRL of a PEM file (one per CA of the chain, in any order); the
 * file must hold at least one and nothing but CRLs. */
int ktm_crls_load(const char *path, X509_STORE *store, struct ktm_error **errp)
{
	STACK_OF(X509_INFO) *infos;
	char why[256];
	int i, n = 0, bad = 0;
	BIO *b = BIO_new_file(path, "r");

	if (!b) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_CONFIG, errno ? errno : EIO,
			      "cannot open CRL file %s: %s", path,
			      strerror(errno ? errno : EIO));
		return -1;
	}
	infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
	BIO_free(b);
	for (i = 0; infos && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);

		if (!xi->crl)
			bad++;
		else if (!store || X509_STORE_add_crl(store, xi->crl) == 1)
			n++;
		else
			bad++;
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if (!infos || !n || bad) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "CRL file %s %s%s", path,
			      bad ? "holds something other than CRLs" :
			      "holds no PEM CRL", ktm_ossl_reason(why, sizeof(why)));
		ktm_error_hint_set(errp, "ca-crl.pem takes the PEM CRLs of the CA "
				   "and of every intermediate, one after another");
		return -1;
	}
	return n;
}

static bool check_crl(const char *path, struct ktm_error **errp)
{
	return ktm_crls_load(path, NULL, errp) > 0;
}

bool ktm_config_set_creds_dir(struct ktm_config *cfg, const char *dir,
			      struct ktm_error **errp)
{
	bool server = cfg->endpoint == KTM_ENDPOINT_SERVER;
	char *ca = NULL, *cert = NULL, *key = NULL, *crl = NULL, *d = NULL;
	const char *role = server ? "server certificate" : "client certificate";
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	struct stat st;

	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno ? errno : ENOTDIR,
			      "credentials directory %s does not exist", dir);
		ktm_error_hint_set(errp, "%s", ktm_layout_hint);
		return false;
	}
	d = strdup(dir);
	ca = path_join(dir, "ca-cert.pem");
	cert = path_join(dir, server ? "server-cert.pem" : "client-cert.pem");
	key = path_join(dir, server ? "server-key.pem" : "client-key.pem");
	crl = path_join(dir, "ca-crl.pem");
	if (!d || !ca || !cert || !key || !crl) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for credential paths");
		goto err_free_paths;
	}
	if (!check_present(ca, "CA certificate", errp) ||
	    !check_present(cert, role, errp) ||
	    !check_present(key, "private key", errp))
		goto err_free_paths;

	x = load_cert(ca, "CA certificate", errp);
	if (!x)
		goto err_free_paths;
	X509_free(x);
	x = load_cert(cert, role, errp);
	if (!x)
		goto err_free_paths;
	k = load_key(key, errp);
	if (!k)
		goto err_free_cert;
	if (X509_check_private_key(x, k) != 1) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "private key %s does not match %s %s", key, role,
			      cert);
		ktm_error_hint_set(errp, "regenerate the certificate for this "
				   "key, or put the matching key in place");
		goto err_free_key;
	}
	if (access(crl, F_OK) == 0) {
		if (!check_crl(crl, errp))
			goto err_free_key;
	} else {
		free(crl);
		crl = NULL;
	}
	EVP_PKEY_free(k);
	X509_free(x);

	free(cfg->creds_dir);
	free(cfg->ca_path);
	free(cfg->cert_path);
	free(cfg->key_path);
	free(cfg->crl_path);
	cfg->creds_dir = d;
	cfg->ca_path = ca;
	cfg->cert_path = cert;
	cfg->key_path = key;
	cfg->crl_path = crl;
	return true;

err_free_key:
	EVP_PKEY_free(k);
err_free_cert:
	X509_free(x);
err_free_paths:
	free(d);
	free(ca);
	free(cert);
	free(key);
	free(crl);
	return false;
}

void ktm_config_set_verify_peer(struct ktm_config *cfg, bool verify)
{
	cfg->verify_peer = verify;
}

bool ktm_config_set_hostname(struct ktm_config *cfg, const char *name,
			     struct ktm_error **errp)
{
	char *n;

	if (!name || !*name) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "empty hostname for verification");
		return false;
	}
	n = strdup(name);
	if (!n) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM, "out of memory");
		return false;
	}
	free(cfg->hostname);
	cfg->hostname = n;
	return true;
}

bool ktm_config_set_versions(struct ktm_config *cfg, enum ktm_tls_version min,
			     enum ktm_tls_version max, struct ktm_error **errp)
{
	if (!ktm_tls_version_name(min) || !ktm_tls_version_name(max) ||
	    min > max) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "TLS version range 0x%04x..0x%04x is not one of "
			      "TLS 1.2..TLS 1.3", min, max);
		return false;
	}
	cfg->min_version = min;
	cfg->max_version = max;
	return true;
}

bool ktm_config_set_ciphers(struct ktm_config *cfg,
			    const enum ktm_cipher *ciphers, size_t count,
			    struct ktm_error **errp)
{
	size_t i;

	if (!count || count > KTM_CIPHER_COUNT) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "cipher list must name 1 to %d ciphers, not %zu",
			      KTM_CIPHER_COUNT, count);
		return false;
	}
	for (i = 0; i < count; i++) {
		if (!ktm_cipher_name(ciphers[i])) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
				      "unknown cipher %d in the cipher list",
				      ciphers[i]);
			return false;
		}
	}
	memcpy(cfg->ciphers, ciphers, count * sizeof(*ciphers));
	cfg->n_ciphers = count;
	return true;
}

bool ktm_config_add_pin(struct ktm_config *cfg, const char *pin,
			struct ktm_error **errp)
{
	uint8_t out[33];
	size_t i;

	if (cfg->n_pins == KTM_MAX_PINS) {
		ktm_error_set(errp, KTM_ERR_CONFIG, E2BIG,
			      "too many key pins (at most %d)", KTM_MAX_PINS);
		return false;
	}
	if (!strncmp(pin, "sha256//", 8)) {
		/* base64 of 32 bytes is 44 characters with one '=' */
		if (strlen(pin + 8) != 44 ||
		    EVP_DecodeBlock(out, (const unsigned char *)pin + 8, 44) != 33)
			goto bad;
	} else {
		if (strlen(pin) != 64)
			goto bad;
		for (i = 0; i < 32; i++) {
			int hi = ktm_hex_digit(pin[2 * i]), lo = ktm_hex_digit(pin[2 * i + 1]);

			if (hi < 0 || lo < 0)
				goto bad;
			out[i] = (uint8_t)(hi << 4 | lo);
		}
	}
	memcpy(cfg->pins[cfg->n_pins++], out, 32);
	return true;
bad:
	ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
		      "key pin '%s' is not a SHA-256 (64 hex digits or "
		      "sha256//BASE64)", pin);
	return false;
}

void ktm_config_set_ktls(struct ktm_config *cfg, enum ktm_ktls_policy policy)
{
	cfg->policy = policy;
}

void ktm_config_set_rx_no_pad(struct ktm_config *cfg, bool on)
{
	cfg->rx_no_pad = on;
}

void ktm_config_set_timeouts(struct ktm_config *cfg, unsigned int connect_ms,
			     unsigned int handshake_ms)
{
	if (connect_ms)
		cfg->connect_ms = connect_ms;
	if (handshake_ms)
		cfg->handshake_ms = handshake_ms;
}

void ktm_config_set_check(struct ktm_config *cfg, ktm_check_fn fn,
			  void *opaque)
{
	cfg->check_fn = fn;
	cfg->check_opaque = opaque;
}

void ktm_config_set_check_timeout(struct ktm_config *cfg, unsigned int ms)
{
	cfg->hook_timeout_ms = ms ? ms : KTM_HOOK_TIMEOUT_MS;
}

bool ktm_config_set_check_exec(struct ktm_config *cfg, const char *path,
			       const char *object, const char *uri,
			       struct ktm_error **errp)
{
	char *p, *o, *u;

	if (access(path, X_OK)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "check hook %s is not executable: %s", path,
			      strerror(errno));
		return false;
	}
	p = strdup(path);
	o = strdup(object ? object : "-");
	u = strdup(uri ? uri : "-");
	if (!p || !o || !u) {
		free(p);
		free(o);
		free(u);
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM, "out of memory");
		return false;
	}
	free(cfg->hook_path);
	free(cfg->hook_object);
	free(cfg->hook_uri);
	cfg->hook_path = p;
	cfg->hook_object = o;
	cfg->hook_uri = u;
	return true;
}
