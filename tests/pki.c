// SPDX-License-Identifier: MIT
/*
 * Test-time x509 credentials in QEMU's tls-creds-x509 layout (see pki.h).
 *
 * Everything is made through the OpenSSL 3 API so a test needs no openssl
 * binary and generation stays in-process (a full set is a few milliseconds:
 * P-256 keys, no RSA).  The profile is what X509_V_FLAG_X509_STRICT asks
 * of a chain in OpenSSL 3.0 (x509_vfy.c, check_chain_extensions): a CA with
 * critical basicConstraints, keyUsage and a subjectKeyIdentifier; leaves with
 * an authorityKeyIdentifier and a non-empty subjectAltName.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pki.h"

#define PKI_HOUR (60L * 60)
#define PKI_DAY (24 * PKI_HOUR)

/* An extension in openssl.cnf syntax, for X509V3_EXT_nconf_nid(). */
struct pki_ext {
	int nid;
	const char *value;
};

static const struct pki_ext pki_ca_exts[] = {
	{ NID_basic_constraints, "critical,CA:TRUE" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign" },
	{ NID_subject_key_identifier, "hash" },
};

/* "keyid:always" copies the issuer's subjectKeyIdentifier (the CA's has to
 * exist); leaves get their own too, as RFC 5280 4.2.1.2 recommends. */
/* An intermediate: may sign leaves only (pathlen 0). */
static const struct pki_ext pki_int_exts[] = {
	{ NID_basic_constraints, "critical,CA:TRUE,pathlen:0" },
	{ NID_key_usage, "critical,keyCertSign,cRLSign" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
};

static const struct pki_ext pki_server_exts[] = {
	{ NID_basic_constraints, "critical,CA:FALSE" },
	{ NID_key_usage, "critical,digitalSignature" },
	{ NID_ext_key_usage, "serverAuth" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
};

static const struct pki_ext pki_client_exts[] = {
	{ NID_basic_constraints, "critical,CA:FALSE" },
	{ NID_key_usage, "critical,digitalSignature" },
	{ NID_ext_key_usage, "clientAuth" },
	{ NID_subject_key_identifier, "hash" },
	{ NID_authority_key_identifier, "keyid:always" },
};

#define PKI_EXTS(a) .exts = (a), .n_exts = sizeof(a) / sizeof((a)[0])

/* One certificate to issue. */
struct pki_cert_spec {
	const char *cn;
	const struct pki_ext *exts;
	size_t n_exts;
	const char *const *dns;		/* T_PKI_MAX_NAMES, NULL-terminated */
	const char *const *ip;		/* same, may be NULL */
	long not_before, not_after;	/* seconds from now */
};

/* All objects of one set; pki_set_free() releases whatever is set. */
struct pki_set {
	EVP_PKEY *ca_key, *foreign_key, *server_key, *client_key, *wrong_key;
	EVP_PKEY *int_key;
	X509 *ca, *foreign_ca, *server, *client, *inter;
	X509_CRL *crl, *int_crl;
	const char *passphrase;
	mode_t key_mode;
	bool int_in_ca;
};

/* Report an OpenSSL failure and empty the queue so it cannot leak into
 * the next error message anyone prints. */
static int pki_ossl_error(const char *what)
{
	fprintf(stderr, "t_pki: %s failed\n", what);
	ERR_print_errors_fp(stderr);
	return -EPROTO;
}

/*
 * 127 random bits with the top one set: positive, never zero, and 16
 * octets in DER, inside RFC 5280 4.1.2.2's limit of 20.
 */
static int pki_serial_set(X509 *cert)
{
	BIGNUM *bn = BN_new();
	int ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) &&
		 BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));

	BN_free(bn);
	return ok ? 0 : pki_ossl_error("making a serial number");
}

static int pki_exts_add(X509 *cert, X509 *issuer, const struct pki_ext *exts,
			size_t n)
{
	X509V3_CTX ctx;
	size_t i;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	for (i = 0; i < n; i++) {
		X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx,
							   exts[i].nid,
							   exts[i].value);
		int ok = ext && X509_add_ext(cert, ext, -1);

		X509_EXTENSION_free(ext);
		if (!ok)
			return pki_ossl_error(OBJ_nid2sn(exts[i].nid));
	}
	return 0;
}

/* Append a name of @type holding @value; @value is taken either way. */
static int pki_name_push(GENERAL_NAMES *names, int type, ASN1_STRING *value)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();

	if (!gn) {
		ASN1_STRING_free(value);
		return pki_ossl_error("GENERAL_NAME_new");
	}
	GENERAL_NAME_set0_value(gn, type, value);
	if (!sk_GENERAL_NAME_push(names, gn)) {
		GENERAL_NAME_free(gn);
		return pki_ossl_error("adding a subjectAltName");
	}
	return 0;
}

/*
 * Built as GENERAL_NAMES rather than a "DNS:a,IP:b" string so that a name
 * cannot be split by a comma in it and a bad IP is our -EINVAL, not an
 * OpenSSL parse error.
 */
static int pki_san_add(X509 *cert, const struct pki_cert_spec *spec)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	int ret = 0;
	size_t i;

	if (!names)
		return pki_ossl_error("sk_GENERAL_NAME_new_null");
	for (i = 0; i < T_PKI_MAX_NAMES && spec->dns[i]; i++) {
		ASN1_IA5STRING *dns = ASN1_IA5STRING_new();

		if (!dns || !ASN1_STRING_set(dns, spec->dns[i], -1)) {
			ASN1_IA5STRING_free(dns);
			ret = pki_ossl_error("ASN1_STRING_set");
			goto out_free_names;
		}
		ret = pki_name_push(names, GEN_DNS, dns);
		if (ret)
			goto out_free_names;
	}
	for (i = 0; spec->ip && i < T_PKI_MAX_NAMES && spec->ip[i]; i++) {
		unsigned char addr[sizeof(struct in6_addr)];
		ASN1_OCTET_STRING *ip;

		/* checked here so that only a bad address is -EINVAL */
		if (inet_pton(AF_INET, spec->ip[i], addr) != 1 &&
		    inet_pton(AF_INET6, spec->ip[i], addr) != 1) {
			fprintf(stderr, "t_pki: '%s' is not an IP address\n",
				spec->ip[i]);
			ret = -EINVAL;
			goto out_free_names;
		}
		ip = a2i_IPADDRESS(spec->ip[i]);
		if (!ip) {
			ret = pki_ossl_error("a2i_IPADDRESS");
			goto out_free_names;
		}
		ret = pki_name_push(names, GEN_IPADD, ip);
		if (ret)
			goto out_free_names;
	}
	if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0,
			      X509V3_ADD_DEFAULT) != 1)
		ret = pki_ossl_error("adding subjectAltName");
out_free_names:
	GENERAL_NAMES_free(names);
	return ret;
}

/*
 * Generate a key and a certificate for it as @spec says, signed by
 * @issuer/@issuer_key, or self-signed when @issuer is NULL.  On success
 * the caller owns *@keyp and *@certp; on failure they are untouched.
 */
static int pki_issue(const struct pki_cert_spec *spec, X509 *issuer,
		     EVP_PKEY *issuer_key, EVP_PKEY **keyp, X509 **certp)
{
	EVP_PKEY *key;
	X509 *cert;
	int ret;

	key = EVP_EC_gen("P-256");	/* EVP_PKEY_Q_keygen(..., "EC", ...) */
	if (!key)
		return pki_ossl_error("generating a P-256 key");
	cert = X509_new();
	if (!cert) {
		ret = pki_ossl_error("X509_new");
		goto err_free_key;
	}
	if (!issuer) {
		issuer = cert;
		issuer_key = key;
	}
	if (!X509_set_version(cert, X509_VERSION_3) ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), spec->not_before) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), spec->not_after) ||
	    !X509_set_pubkey(cert, key) ||
	    !X509_NAME_add_entry_by_NID(X509_get_subject_name(cert),
					NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)spec->cn, -1,
					-1, 0) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(issuer))) {
		ret = pki_ossl_error("filling a certificate");
		goto err_free_cert;
	}
	ret = pki_serial_set(cert);
	if (ret)
		goto err_free_cert;
	ret = pki_exts_add(cert, issuer, spec->exts, spec->n_exts);
	if (ret)
		goto err_free_cert;
	if (spec->dns) {
		ret = pki_san_add(cert, spec);
		if (ret)
			goto err_free_cert;
	}
	if (!X509_sign(cert, issuer_key, EVP_sha256())) {
		ret = pki_ossl_error("X509_sign");
		goto err_free_cert;
	}
	*keyp = key;
	*certp = cert;
	return 0;

err_free_cert:
	X509_free(cert);
err_free_key:
	EVP_PKEY_free(key);
	return ret;
}

static int pki_crl_revoke(X509_CRL *crl, X509 *cert, ASN1_TIME *when)
{
	X509_REVOKED *rev = X509_REVOKED_new();

	if (!rev || !X509_REVOKED_set_serialNumber(rev,
						   X509_get_serialNumber(cert)) ||
	    !X509_REVOKED_set_revocationDate(rev, when) ||
	    !X509_CRL_add0_revoked(crl, rev)) {
		X509_REVOKED_free(rev);
		return pki_ossl_error("adding a revoked entry");
	}
	return 0;
}

/* RFC 5280 5.2 requires both in a v2 CRL: authorityKeyIdentifier, cRLNumber. */
static int pki_crl_exts_add(X509_CRL *crl, X509 *ca)
{
	X509_EXTENSION *aki;
	ASN1_INTEGER *number;
	X509V3_CTX ctx;
	int ok;

	X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
	aki = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier,
				   "keyid:always");
	ok = aki && X509_CRL_add_ext(crl, aki, -1);
	X509_EXTENSION_free(aki);
	if (!ok)
		return pki_ossl_error("adding the CRL's authorityKeyIdentifier");

	number = ASN1_INTEGER_new();
	ok = number && ASN1_INTEGER_set(number, 1) &&
	     X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) == 1;
	ASN1_INTEGER_free(number);
	return ok ? 0 : pki_ossl_error("adding the cRLNumber");
}

/* A CRL by @ca, current since an hour, next due in a week, listing @revoked
 * if not NULL. */
static int pki_crl_new(X509 *ca, EVP_PKEY *ca_key, X509 *revoked,
		       X509_CRL **crlp)
{
	ASN1_TIME *t;
	X509_CRL *crl;
	int ret = 0;

	crl = X509_CRL_new();
	if (!crl)
		return pki_ossl_error("X509_CRL_new");
	t = X509_gmtime_adj(NULL, -PKI_HOUR);
	if (!t || !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
	    !X509_CRL_set1_lastUpdate(crl, t)) {
		ret = pki_ossl_error("filling a CRL");
		goto err_free_time;
	}
	if (revoked) {
		ret = pki_crl_revoke(crl, revoked, t);
		if (ret)
			goto err_free_time;
	}
	if (!X509_gmtime_adj(t, 7 * PKI_DAY) ||
	    !X509_CRL_set1_nextUpdate(crl, t)) {
		ret = pki_ossl_error("setting the CRL's nextUpdate");
		goto err_free_time;
	}
	ret = pki_crl_exts_add(crl, ca);
	if (ret)
		goto err_free_time;
	if (!X509_CRL_sort(crl) || !X509_CRL_sign(crl, ca_key, EVP_sha256())) {
		ret = pki_ossl_error("signing the CRL");
		goto err_free_time;
	}
	ASN1_TIME_free(t);
	*crlp = crl;
	return 0;

err_free_time:
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return ret;
}

static void pki_set_free(struct pki_set *s)
{
	X509_CRL_free(s->int_crl);
	X509_free(s->inter);
	EVP_PKEY_free(s->int_key);
	X509_CRL_free(s->crl);
	X509_free(s->client);
	X509_free(s->server);
	X509_free(s->foreign_ca);
	X509_free(s->ca);
	EVP_PKEY_free(s->wrong_key);
	EVP_PKEY_free(s->client_key);
	EVP_PKEY_free(s->server_key);
	EVP_PKEY_free(s->foreign_key);
	EVP_PKEY_free(s->ca_key);
}

static int pki_crls_build(struct pki_set *s, const struct t_pki_opts *o);

static int pki_set_build(struct pki_set *s, const struct t_pki_opts *o)
{
	static const char *const default_dns[T_PKI_MAX_NAMES] = { "localhost" };
	static const char *const client_dns[T_PKI_MAX_NAMES] = {
		T_PKI_CLIENT_CN };
	const char *const *dns = o->server_dns[0] ? o->server_dns : default_dns;
	/* The CAs outlive every leaf's validity window, flawed ones too. */
	struct pki_cert_spec ca = {
		.cn = T_PKI_CA_CN, PKI_EXTS(pki_ca_exts),
		.not_before = -3 * PKI_DAY, .not_after = 365 * PKI_DAY,
	};
	struct pki_cert_spec foreign_ca = {
		.cn = "ktm-test-foreign-ca", PKI_EXTS(pki_ca_exts),
		.not_before = -3 * PKI_DAY, .not_after = 365 * PKI_DAY,
	};
	/* an hour back so a little clock skew between peers does not matter */
	static const char *const no_dns[T_PKI_MAX_NAMES];
	struct pki_cert_spec inter = {
		.cn = T_PKI_INT_CN, PKI_EXTS(pki_int_exts),
		.not_before = -3 * PKI_DAY, .not_after = 300 * PKI_DAY,
	};
	struct pki_cert_spec server = {
		.cn = o->server_cn ? o->server_cn : dns[0],
		PKI_EXTS(pki_server_exts),
		.dns = o->server_cn && !o->server_dns[0] ? no_dns : dns,
		.ip = o->server_ip,
		.not_before = -PKI_HOUR, .not_after = 30 * PKI_DAY,
	};
	struct pki_cert_spec client = {
		.cn = T_PKI_CLIENT_CN, PKI_EXTS(pki_client_exts),
		.dns = client_dns,
		.not_before = -PKI_HOUR, .not_after = 30 * PKI_DAY,
	};
	X509 *server_ca, *client_ca;
	EVP_PKEY *server_ca_key, *client_ca_key;
	int ret;

	if (o->flaw == T_PKI_EXPIRED) {
		server.not_before = -2 * PKI_DAY;
		server.not_after = -PKI_DAY;
	} else if (o->flaw == T_PKI_NOT_YET_VALID) {
		server.not_before = PKI_DAY;
		server.not_after = 31 * PKI_DAY;
	}

	ret = pki_issue(&ca, NULL, NULL, &s->ca_key, &s->ca);
	if (ret)
		return ret;
	server_ca = client_ca = s->ca;
	server_ca_key = client_ca_key = s->ca_key;
	if (o->intermediate || o->flaw == T_PKI_REVOKED_INTERMEDIATE) {
		ret = pki_issue(&inter, s->ca, s->ca_key, &s->int_key, &s->inter);
		if (ret)
			return ret;
		server_ca = client_ca = s->inter;
		server_ca_key = client_ca_key = s->int_key;
	}
	if (o->flaw == T_PKI_UNKNOWN_CA || o->flaw == T_PKI_CLIENT_UNKNOWN_CA) {
		ret = pki_issue(&foreign_ca, NULL, NULL, &s->foreign_key,
				&s->foreign_ca);
		if (ret)
			return ret;
		client_ca = s->foreign_ca;
		client_ca_key = s->foreign_key;
		if (o->flaw == T_PKI_UNKNOWN_CA) {
			server_ca = s->foreign_ca;
			server_ca_key = s->foreign_key;
		}
	}
	ret = pki_issue(&server, server_ca, server_ca_key, &s->server_key,
			&s->server);
	if (ret)
		return ret;
	ret = pki_issue(&client, client_ca, client_ca_key, &s->client_key,
			&s->client);
	if (ret)
		return ret;
	if (o->flaw == T_PKI_KEY_MISMATCH) {
		s->wrong_key = EVP_EC_gen("P-256");
		if (!s->wrong_key)
			return pki_ossl_error("generating a P-256 key");
	}
	return pki_crls_build(s, o);
}

/* The root's CRL and, under an intermediate, the intermediate's; each
 * lists what the flaw revokes. */
static int pki_crls_build(struct pki_set *s, const struct t_pki_opts *o)
{
	bool rev_leaf = o->flaw == T_PKI_REVOKED;
	bool rev_int = o->flaw == T_PKI_REVOKED_INTERMEDIATE;
	int ret;

	if (!o->with_crl && !rev_leaf && !rev_int)
		return 0;
	ret = pki_crl_new(s->ca, s->ca_key,
			  rev_int ? s->inter : (rev_leaf && !s->inter) ?
			  s->server : NULL, &s->crl);
	if (ret || !s->inter)
		return ret;
	return pki_crl_new(s->inter, s->int_key, rev_leaf ? s->server : NULL,
			   &s->int_crl);
}

/*
 * Replace @name in @dfd with @len bytes of @buf, mode exactly @mode.
 * Unlink and O_EXCL rather than O_TRUNC: an old file keeps its mode through
 * O_CREAT, and a key must never sit in a file others can read.  fchmod()
 * because the umask may have narrowed @mode.
 */
static int pki_file_write(int dfd, const char *name, const char *buf,
			  size_t len, mode_t mode)
{
	int fd, ret = 0;

	if (unlinkat(dfd, name, 0) && errno != ENOENT)
		return -errno;
	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode)) {
		ret = -errno;
		goto out_close_fd;
	}
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out_close_fd;
		}
		buf += n;
		len -= (size_t)n;
	}
out_close_fd:
	if (close(fd) && !ret)
		ret = -errno;
	return ret;
}

enum pki_pem { PKI_PEM_CERT, PKI_PEM_KEY, PKI_PEM_CRL };

/* One file of the set; a NULL @obj means the file must not exist.  @obj2,
 * when set, follows @obj in the same file (a chain, a second CRL). */
struct pki_file {
	const char *name;
	enum pki_pem kind;
	void *obj, *obj2;
	mode_t mode;
	const char *passphrase;		/* keys only: encrypt with it */
};

static int pki_pem_one(BIO *bio, const struct pki_file *f, void *obj)
{
	const char *pw = f->passphrase;

	switch (f->kind) {
	case PKI_PEM_CERT:
		return PEM_write_bio_X509(bio, obj);
	case PKI_PEM_KEY:	/* PKCS#8, as QEMU reads it */
		return PEM_write_bio_PrivateKey(bio, obj,
						pw ? EVP_aes_256_cbc() : NULL,
						(const unsigned char *)pw,
						pw ? (int)strlen(pw) : 0,
						NULL, NULL);
	case PKI_PEM_CRL:
		return PEM_write_bio_X509_CRL(bio, obj);
	}
	return 0;
}

static int pki_pem_encode(BIO *bio, const struct pki_file *f)
{
	return pki_pem_one(bio, f, f->obj) &&
	       (!f->obj2 || pki_pem_one(bio, f, f->obj2));
}

/*
 * The PEM goes through a memory BIO so the file is written in one place
 * with the right mode.  For keys that buffer holds the private key: wipe
 * it before it is freed (growing a memory BIO already clears the old
 * copies, BUF_MEM_grow_clean()).
 */
static int pki_file_put(int dfd, const struct pki_file *f)
{
	char *pem;
	long len;
	BIO *bio;
	int ret;

	if (!f->obj) {
		if (unlinkat(dfd, f->name, 0) && errno != ENOENT)
			return -errno;
		return 0;
	}
	bio = BIO_new(BIO_s_mem());
	if (!bio)
		return pki_ossl_error("BIO_new");
	if (!pki_pem_encode(bio, f)) {
		ret = pki_ossl_error(f->name);
		goto out_free_bio;
	}
	len = BIO_get_mem_data(bio, &pem);
	if (len <= 0) {
		ret = pki_ossl_error("BIO_get_mem_data");
		goto out_free_bio;
	}
	ret = pki_file_write(dfd, f->name, pem, (size_t)len, f->mode);
	OPENSSL_cleanse(pem, (size_t)len);
out_free_bio:
	BIO_free(bio);
	return ret;
}

static int pki_set_write(int dfd, struct pki_set *s)
{
	X509 *chain = s->int_in_ca ? NULL : s->inter;
	const struct pki_file files[] = {
		{ T_PKI_CA_CERT, PKI_PEM_CERT, s->ca,
		  s->int_in_ca ? s->inter : NULL, 0644, NULL },
		{ T_PKI_SERVER_CERT, PKI_PEM_CERT, s->server, chain, 0644, NULL },
		{ T_PKI_SERVER_KEY, PKI_PEM_KEY,
		  s->wrong_key ? s->wrong_key : s->server_key, NULL,
		  s->key_mode, s->passphrase },
		{ T_PKI_CLIENT_CERT, PKI_PEM_CERT, s->client, chain, 0644, NULL },
		{ T_PKI_CLIENT_KEY, PKI_PEM_KEY, s->client_key, NULL,
		  s->key_mode, s->passphrase },
		{ T_PKI_CA_CRL, PKI_PEM_CRL, s->crl, s->int_crl, 0644, NULL },
	};
	size_t i;
	int ret;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		ret = pki_file_put(dfd, &files[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* Open @dir, creating it 0700 (exactly, whatever the umask) if missing. */
static int pki_dir_open(const char *dir)
{
	bool created = true;
	int fd;

	if (mkdir(dir, 0700)) {
		if (errno != EEXIST)
			return -errno;
		created = false;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (created && fchmod(fd, 0700)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

int t_pki_make(const char *dir, const struct t_pki_opts *opts)
{
	static const struct t_pki_opts good;
	struct pki_set set = { 0 };
	int dfd, ret;

	if (!opts)
		opts = &good;
	if (!dir || !*dir || (unsigned int)opts->flaw >= T_PKI_FLAW_COUNT)
		return -EINVAL;
	dfd = pki_dir_open(dir);
	if (dfd < 0)
		return dfd;
	set.passphrase = opts->key_passphrase;
	set.key_mode = opts->key_mode ? (mode_t)opts->key_mode : 0600;
	set.int_in_ca = opts->intermediate_in_ca;
	ret = pki_set_build(&set, opts);
	if (!ret)
		ret = pki_set_write(dfd, &set);
	pki_set_free(&set);
	close(dfd);
	return ret;
}

int t_pki_make_temp(char *dir, size_t size, const struct t_pki_opts *opts)
{
	static const char tmpl[] = "/tmp/ktm-pki-XXXXXX";
	int ret;

	if (!dir || size < sizeof(tmpl))
		return -EINVAL;
	memcpy(dir, tmpl, sizeof(tmpl));
	if (!mkdtemp(dir)) {
		ret = -errno;
		goto err_clear_path;
	}
	ret = t_pki_make(dir, opts);
	if (ret)
		goto err_remove_dir;
	return 0;

err_remove_dir:
	t_pki_remove(dir);
err_clear_path:
	dir[0] = '\0';
	return ret;
}

void t_pki_remove(const char *dir)
{
	struct dirent *de;
	DIR *d;

	if (!dir || !*dir)
		return;
	d = opendir(dir);
	if (!d) {
		fprintf(stderr, "t_pki: cannot open %s: %s\n", dir,
			strerror(errno));
		return;
	}
	/* unlinking entries readdir() has returned is safe on Linux */
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0))
			fprintf(stderr, "t_pki: cannot remove %s/%s: %s\n",
				dir, de->d_name, strerror(errno));
	}
	closedir(d);
	if (rmdir(dir))
		fprintf(stderr, "t_pki: cannot remove %s: %s\n", dir,
			strerror(errno));
}
