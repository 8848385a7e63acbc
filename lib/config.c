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
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"
#include "stream.h"
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
	pthread_mutex_init(&cfg->ctx_lock, NULL);
	return cfg;
}

enum ktm_endpoint ktm_config_endpoint(const struct ktm_config *cfg)
{
	return cfg->endpoint;
}

static void allow_free(struct ktm_allow *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].text);
	free(v);
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
	SSL_CTX_free(cfg->ctx);
	EVP_PKEY_free(cfg->key);
	X509_free(cfg->cert);
	X509_STORE_free(cfg->store);
	sk_X509_pop_free(cfg->chain, X509_free);
	if (cfg->passphrase)
		OPENSSL_clear_free(cfg->passphrase, strlen(cfg->passphrase));
	free(cfg->passphrase_path);
	pthread_mutex_destroy(&cfg->ctx_lock);
	allow_free(cfg->allow, cfg->n_allow);
	allow_free(cfg->allow_f, cfg->n_allow_f);
	free(cfg->allow_file);
	free(cfg);
}

static char *path_join(const char *dir, const char *name)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

/* The hint for a credentials file that could not be opened (errno @e):
 * a missing one is the layout, one we may not read is who we run as. */
static void open_hint(struct ktm_error **errp, int e)
{
	if (e == EACCES || e == EPERM)
		ktm_error_hint_set(errp, "this process runs as uid %u gid %u: "
				   "it needs search (x) permission on the "
				   "directories and read permission on the file "
				   "(e.g. a group it is in, mode 0640)",
				   (unsigned int)geteuid(), (unsigned int)getegid());
	else if (e == ENOENT || e == ENOTDIR)
		ktm_error_hint_set(errp, "%s", ktm_layout_hint);
}

/* The file must exist and be a regular file. */
static bool check_present(const char *path, const char *role,
			  struct ktm_error **errp)
{
	struct stat st;

	if (stat(path, &st)) {
		int e = errno;

		ktm_error_set(errp, KTM_ERR_CONFIG, e, "cannot use %s %s: %s",
			      role, path, strerror(e));
		open_hint(errp, e);
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

/* PEM passphrase callback: the configured passphrase, never a prompt. */
struct key_pw {
	const char *pw;
	bool asked;
};

static int key_pw_cb(char *buf, int size, int rwflag, void *u)
{
	struct key_pw *k = u;
	size_t n;

	(void)rwflag;
	k->asked = true;
	if (!k->pw)
		return -1;
	n = strlen(k->pw);
	if (n > (size_t)size)
		return -1;
	memcpy(buf, k->pw, n);
	return (int)n;
}

static void key_read_error(const struct ktm_config *cfg, const char *path,
			   bool asked, struct ktm_error **errp)
{
	char why[256];

	if (asked && !cfg->passphrase) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_CONFIG, EACCES,
			      "private key %s is encrypted and no passphrase was "
			      "given", path);
		ktm_error_hint_set(errp, "name a file holding it with "
				   "--key-passphrase-file FILE");
	} else if (asked) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EACCES,
			      "cannot decrypt private key %s with the passphrase "
			      "from %s%s", path, cfg->passphrase_path,
			      ktm_ossl_reason(why, sizeof(why)));
	} else {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "private key %s cannot be read (PEM)%s", path,
			      ktm_ossl_reason(why, sizeof(why)));
	}
}

/* Read the key; a key others can read is a key others may have copied
 * (refused), one its group can read is the deployments' root:qemu 0640
 * (accepted, and *mode tells). */
static EVP_PKEY *load_key(const struct ktm_config *cfg, const char *path,
			  unsigned int *mode, struct ktm_error **errp)
{
	struct key_pw pw = { .pw = cfg->passphrase };
	EVP_PKEY *k;
	struct stat st;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		int e = errno;

		ktm_error_set(errp, KTM_ERR_CONFIG, e,
			      "cannot open private key %s: %s", path, strerror(e));
		open_hint(errp, e);
		return NULL;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 007)) {
		fclose(f);
		ktm_error_set(errp, KTM_ERR_CONFIG, EACCES,
			      "private key %s is readable by others (mode %04o)",
			      path, (unsigned int)(st.st_mode & 07777));
		ktm_error_hint_set(errp, "chmod 600 %s (or 640 with a group "
				   "that only the migration service is in)", path);
		return NULL;
	}
	*mode = (unsigned int)(st.st_mode & 07777);
	k = PEM_read_PrivateKey(f, NULL, key_pw_cb, &pw);
	fclose(f);
	if (!k)
		key_read_error(cfg, path, pw.asked, errp);
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

/* The trust store: every CA certificate of @ca, every CRL of @crl (when
 * not NULL) and then every certificate of the chain checked against its
 * issuer's CRL (CRL_CHECK alone checks the leaf only, so a revoked
 * intermediate would pass). */
static X509_STORE *store_load(const char *ca, const char *crl,
			      struct ktm_error **errp)
{
	X509_STORE *store = X509_STORE_new();
	char why[256];

	if (!store || !X509_STORE_load_file(store, ca)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "cannot load CA certificate %s%s", ca,
			      ktm_ossl_reason(why, sizeof(why)));
		ktm_error_hint_set(errp, "the file holds the CA certificates "
				   "(and intermediates), each a whole PEM block; "
				   "one is cut or damaged: copy it again");
		X509_STORE_free(store);
		return NULL;
	}
	if (crl) {
		if (ktm_crls_load(crl, store, errp) < 0) {
			X509_STORE_free(store);
			return NULL;
		}
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK |
					    X509_V_FLAG_CRL_CHECK_ALL);
	}
	return store;
}

/* The certificates after the first in @path (a chain file); an empty
 * stack when there are none, NULL on error: a damaged block after the
 * first (a cut copy) would otherwise drop an intermediate in silence. */
static STACK_OF(X509) *chain_load(const char *path, const char *role,
				  struct ktm_error **errp)
{
	STACK_OF(X509) *chain = sk_X509_new_null();
	BIO *b = BIO_new_file(path, "r");
	unsigned long e;
	char why[256];
	X509 *x;
	int i = 0;

	ERR_clear_error();
	while (b && chain && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		if (i++ == 0)
			X509_free(x);
		else if (!sk_X509_push(chain, x))
			X509_free(x);
	}
	e = ERR_peek_last_error();
	BIO_free(b);
	if (!chain) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for the certificate chain of %s", path);
	} else if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
			  ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL, "%s %s: the PEM "
			      "block after certificate %d is damaged%s", role,
			      path, i, ktm_ossl_reason(why, sizeof(why)));
		ktm_error_hint_set(errp, "the file holds the certificate, then "
				   "its intermediates, each a whole PEM block; "
				   "copy it again");
		sk_X509_pop_free(chain, X509_free);
		chain = NULL;
	}
	ERR_clear_error();	/* the end of the file */
	return chain;
}

/* One credentials directory, read: paths and objects, owned until
 * creds_install() hands them to the config. */
struct creds {
	char *dir, *ca, *cert, *key, *crl;	/* crl NULL: no ca-crl.pem */
	X509 *x;
	EVP_PKEY *k;
	X509_STORE *store;
	STACK_OF(X509) *chain;
	unsigned int mode;
};

static void creds_free(struct creds *c)
{
	sk_X509_pop_free(c->chain, X509_free);
	X509_STORE_free(c->store);
	EVP_PKEY_free(c->k);
	X509_free(c->x);
	free(c->dir);
	free(c->ca);
	free(c->cert);
	free(c->key);
	free(c->crl);
}

static bool creds_paths(struct creds *c, const char *dir, bool server,
			struct ktm_error **errp)
{
	c->dir = strdup(dir);
	c->ca = path_join(dir, "ca-cert.pem");
	c->cert = path_join(dir, server ? "server-cert.pem" : "client-cert.pem");
	c->key = path_join(dir, server ? "server-key.pem" : "client-key.pem");
	c->crl = path_join(dir, "ca-crl.pem");
	if (!c->dir || !c->ca || !c->cert || !c->key || !c->crl) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for credential paths");
		return false;
	}
	if (access(c->crl, F_OK)) {
		free(c->crl);
		c->crl = NULL;
	}
	return true;
}

/* Read and check everything: files present, certificate and key parse
 * and match, the trust store and the chain load. */
static bool creds_load(const struct ktm_config *cfg, struct creds *c,
		       const char *role, struct ktm_error **errp)
{
	X509 *ca;

	if (!check_present(c->ca, "CA certificate", errp) ||
	    !check_present(c->cert, role, errp) ||
	    !check_present(c->key, "private key", errp))
		return false;
	ca = load_cert(c->ca, "CA certificate", errp);
	if (!ca)
		return false;
	X509_free(ca);
	c->x = load_cert(c->cert, role, errp);
	c->k = c->x ? load_key(cfg, c->key, &c->mode, errp) : NULL;
	if (!c->k)
		return false;
	if (X509_check_private_key(c->x, c->k) != 1) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "private key %s does not match %s %s", c->key, role,
			      c->cert);
		ktm_error_hint_set(errp, "regenerate the certificate for this "
				   "key, or put the matching key in place");
		return false;
	}
	c->store = store_load(c->ca, c->crl, errp);
	c->chain = c->store ? chain_load(c->cert, role, errp) : NULL;
	return c->chain != NULL;
}

/* Swap @c into @cfg (the old ones go into @c, to be freed); under the
 * lock, as ktm_config_reload() may run beside sessions being made. */
static void creds_install(struct ktm_config *cfg, struct creds *c)
{
	struct creds old = {
		cfg->creds_dir, cfg->ca_path, cfg->cert_path, cfg->key_path,
		cfg->crl_path, cfg->cert, cfg->key, cfg->store, cfg->chain, 0,
	};

	pthread_mutex_lock(&cfg->ctx_lock);
	cfg->creds_dir = c->dir;
	cfg->ca_path = c->ca;
	cfg->cert_path = c->cert;
	cfg->key_path = c->key;
	cfg->crl_path = c->crl;
	cfg->cert = c->x;
	cfg->key = c->k;
	cfg->key_mode = c->mode;
	cfg->store = c->store;
	cfg->chain = c->chain;
	/* the next session builds its context from these */
	SSL_CTX_free(cfg->ctx);
	cfg->ctx = NULL;
	pthread_mutex_unlock(&cfg->ctx_lock);
	*c = old;
}

bool ktm_config_set_creds_dir(struct ktm_config *cfg, const char *dir,
			      struct ktm_error **errp)
{
	bool server = cfg->endpoint == KTM_ENDPOINT_SERVER;
	const char *role = server ? "server certificate" : "client certificate";
	struct creds c = { 0 };
	struct stat st;
	bool ok;
	int e;

	e = stat(dir, &st) ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (e) {
		ktm_error_set(errp, KTM_ERR_CONFIG, e, "credentials directory "
			      "%s %s", dir, e == ENOENT ? "does not exist" :
			      e == ENOTDIR ? "is not a directory" : strerror(e));
		if (e == ENOENT || e == ENOTDIR)
			ktm_error_hint_set(errp, "%s", ktm_layout_hint);
		else
			open_hint(errp, e);
		return false;
	}
	ok = creds_paths(&c, dir, server, errp) && creds_load(cfg, &c, role, errp);
	if (ok)
		creds_install(cfg, &c);
	creds_free(&c);
	return ok;
}

/* A setting the SSL_CTX depends on changed: build it anew (setters run
 * before sessions, so nobody is using it; reload() swaps under the lock). */
static void ctx_drop(struct ktm_config *cfg)
{
	pthread_mutex_lock(&cfg->ctx_lock);
	SSL_CTX_free(cfg->ctx);
	cfg->ctx = NULL;
	pthread_mutex_unlock(&cfg->ctx_lock);
}

void ktm_config_set_verify_peer(struct ktm_config *cfg, bool verify)
{
	cfg->verify_peer = verify;
	ctx_drop(cfg);
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
	ctx_drop(cfg);
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
	ctx_drop(cfg);
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

static bool allow_push(struct ktm_allow **v, size_t *n, const char *rule,
		       const char *where, struct ktm_error **errp)
{
	struct ktm_allow *grown = realloc(*v, (*n + 1) * sizeof(**v));

	if (!grown) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for an allow rule");
		return false;
	}
	*v = grown;
	if (!ktm_allow_parse(&grown[*n], rule, where, errp))
		return false;
	(*n)++;
	return true;
}

bool ktm_config_add_allow(struct ktm_config *cfg, const char *rule,
			  struct ktm_error **errp)
{
	return allow_push(&cfg->allow, &cfg->n_allow, rule, NULL, errp);
}

/* Line @no of an allow file (@len bytes, its newline cut) to its rule in
 * place: blanks around it and a comment ('#' at the start or after a
 * blank) dropped.  NULL when the line holds no rule; *bad when it holds a
 * NUL byte. */
static char *allow_line(char *line, size_t len, bool *bad)
{
	char *p = line, *end, *hash;

	*bad = strlen(line) != len;
	for (hash = strchr(p, '#'); hash; hash = strchr(hash + 1, '#'))
		if (hash == p || hash[-1] == ' ' || hash[-1] == '\t') {
			*hash = '\0';
			break;
		}
	end = p + strlen(p);
	while (*p == ' ' || *p == '\t')
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return *p ? p : NULL;
}

/* One rule per line of @f into @v; blank lines and '#' comments skipped. */
static bool allow_read(FILE *f, const char *path, struct ktm_allow **v,
		       size_t *n, struct ktm_error **errp)
{
	char *line = NULL, *rule, where[512];
	unsigned int no = 0;
	size_t cap = 0;
	ssize_t len;
	bool bad = false, ok = true;

	errno = 0;
	while (ok && (len = getline(&line, &cap, f)) >= 0) {
		no++;
		if (len && line[len - 1] == '\n')
			line[--len] = '\0';
		rule = allow_line(line, (size_t)len, &bad);
		snprintf(where, sizeof(where), "%s:%u", path, no);
		if (bad) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL, "allow file "
				      "%s holds a NUL byte: not a text file",
				      where);
			ok = false;
		} else if (rule) {
			ok = allow_push(v, n, rule, where, errp);
		}
		errno = 0;
	}
	if (ok && ferror(f)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno ? errno : EIO,
			      "cannot read allow file %s: %s", path,
			      strerror(errno ? errno : EIO));
		ok = false;
	}
	free(line);
	return ok;
}

bool ktm_config_load_allow_file(struct ktm_config *cfg, const char *path,
				struct ktm_error **errp)
{
	struct ktm_allow *v = NULL;
	char *file = NULL;
	size_t n = 0;
	FILE *f;
	bool ok;

	f = fopen(path, "r");
	if (!f) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot open allow file %s: %s", path, strerror(errno));
		return false;
	}
	ok = allow_read(f, path, &v, &n, errp);
	fclose(f);
	if (ok && !n) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "allow file %s holds no rule", path);
		ktm_error_hint_set(errp, "an empty allow-list would refuse every "
				   "peer; write one rule per line, e.g. "
				   "dn:CN=src.example");
		ok = false;
	}
	if (!ok) {
		allow_free(v, n);
		return false;
	}
	file = strdup(path);
	if (!file) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM, "out of memory");
		allow_free(v, n);
		return false;
	}
	/* a second file replaces the first */
	allow_free(cfg->allow_f, cfg->n_allow_f);
	free(cfg->allow_file);
	cfg->allow_f = v;
	cfg->n_allow_f = n;
	cfg->allow_file = file;
	return true;
}

bool ktm_config_set_key_passphrase_file(struct ktm_config *cfg,
					const char *path, struct ktm_error **errp)
{
	char buf[1024], *pw, *p;
	struct stat st;
	size_t n;
	FILE *f = fopen(path, "r");

	if (!f) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot open passphrase file %s: %s", path,
			      strerror(errno));
		return false;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 007)) {
		fclose(f);
		ktm_error_set(errp, KTM_ERR_CONFIG, EACCES,
			      "passphrase file %s is readable by others (mode %04o)",
			      path, (unsigned int)(st.st_mode & 07777));
		ktm_error_hint_set(errp, "chmod 600 %s", path);
		return false;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';	/* the first line */
	pw = buf[0] ? strdup(buf) : NULL;
	p = pw ? strdup(path) : NULL;
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!p) {
		free(pw);
		ktm_error_set(errp, pw || !buf[0] ? KTM_ERR_CONFIG : KTM_ERR_INTERNAL,
			      EINVAL, "passphrase file %s holds no passphrase "
			      "(or out of memory)", path);
		return false;
	}
	if (cfg->passphrase)
		OPENSSL_clear_free(cfg->passphrase, strlen(cfg->passphrase));
	free(cfg->passphrase_path);
	cfg->passphrase = pw;
	cfg->passphrase_path = p;
	return true;
}

const char *ktm_config_key_note(const struct ktm_config *cfg, char *buf,
				size_t len)
{
	if (!cfg->key_path || !(cfg->key_mode & 070))
		return NULL;
	snprintf(buf, len, "private key %s is readable by its group (mode %04o)",
		 cfg->key_path, cfg->key_mode);
	return buf;
}

const char *ktm_config_cert_note(const struct ktm_config *cfg, char *buf,
				 size_t len)
{
	struct ktm_config *c = (struct ktm_config *)cfg;	/* the lock */
	const char *ret = NULL;
	char when[32];

	pthread_mutex_lock(&c->ctx_lock);
	if (!cfg->cert) {
		/* no credentials */
	} else if (X509_cmp_current_time(X509_get0_notAfter(cfg->cert)) < 0) {
		ktm_tls_time_str(X509_get0_notAfter(cfg->cert), when,
				 sizeof(when));
		snprintf(buf, len, "certificate %s has expired (not after %s): "
			 "every peer will refuse it; renew it", cfg->cert_path,
			 when);
		ret = buf;
	} else if (X509_cmp_current_time(X509_get0_notBefore(cfg->cert)) > 0) {
		ktm_tls_time_str(X509_get0_notBefore(cfg->cert), when,
				 sizeof(when));
		snprintf(buf, len, "certificate %s is not valid yet (not before "
			 "%s): peers will refuse it until then; check this "
			 "host's clock", cfg->cert_path, when);
		ret = buf;
	}
	pthread_mutex_unlock(&c->ctx_lock);
	return ret;
}

bool ktm_config_reload(struct ktm_config *cfg, struct ktm_error **errp)
{
	char *dir;
	bool ok;

	if (!cfg->creds_dir) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "no credentials directory to reload");
		return false;
	}
	dir = strdup(cfg->creds_dir);
	if (!dir) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM, "out of memory");
		return false;
	}
	/* all checked again; on failure the old credentials stay */
	ok = ktm_config_set_creds_dir(cfg, dir, errp);
	free(dir);
	return ok;
}

void ktm_config_authz(const struct ktm_config *cfg, char *buf, size_t len)
{
	ktm_authz_describe(cfg, buf, len);
}

void ktm_config_set_key_limit(struct ktm_config *cfg, uint64_t records)
{
	cfg->key_limit = records;
}

uint64_t ktm_config_key_limit(const struct ktm_config *cfg,
			      enum ktm_cipher cipher)
{
	return cfg->key_limit ? cfg->key_limit : ktm_default_key_limit(cipher);
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
