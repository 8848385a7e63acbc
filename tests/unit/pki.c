// SPDX-License-Identifier: MIT
/*
 * The test PKI (tests/pki.c), checked with OpenSSL's own verifier: a good
 * set verifies strictly, and each flaw fails with exactly the error it is
 * named after.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "internal.h"
#include "pki.h"

#if defined(__SANITIZE_ADDRESS__)
#define T_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_HAVE_LSAN 1
#endif
#endif
#ifdef T_HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

static void join(char *buf, size_t size, const char *dir, const char *name)
{
	snprintf(buf, size, "%s/%s", dir, name);
}

static X509 *load_cert(const char *dir, const char *name)
{
	char path[256];
	X509 *x = NULL;
	BIO *bio;

	join(path, sizeof(path), dir, name);
	bio = BIO_new_file(path, "r");
	if (bio)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return x;
}

static EVP_PKEY *load_key(const char *dir, const char *name)
{
	EVP_PKEY *key = NULL;
	char path[256];
	BIO *bio;

	join(path, sizeof(path), dir, name);
	bio = BIO_new_file(path, "r");
	if (bio)
		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return key;
}

static X509_CRL *load_crl(const char *dir)
{
	X509_CRL *crl = NULL;
	char path[256];
	BIO *bio;

	join(path, sizeof(path), dir, T_PKI_CA_CRL);
	bio = BIO_new_file(path, "r");
	if (bio)
		crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return crl;
}

/* st_mode & 07777 of @dir/@name, or -errno. */
static int mode_of(const char *dir, const char *name)
{
	char path[256];
	struct stat st;

	join(path, sizeof(path), dir, name);
	if (stat(path, &st))
		return -errno;
	return (int)(st.st_mode & 07777);
}

/*
 * Verify @dir/@leaf against ca-cert.pem as a TLS peer checking @purpose
 * would (strict RFC 5280 profile; with ca-crl.pem when @crl_check).
 * Returns X509_V_OK, the verify error, or -1 if the files do not load.
 */
static int verify_leaf(const char *dir, const char *leaf_name, int purpose,
		       bool crl_check)
{
	unsigned long flags = X509_V_FLAG_X509_STRICT;
	X509_STORE_CTX *ctx = NULL;
	X509_STORE *store;
	X509 *leaf = NULL;
	char path[256];
	int ret = -1;

	store = X509_STORE_new();
	join(path, sizeof(path), dir, T_PKI_CA_CERT);
	if (!store || !X509_STORE_load_file(store, path))
		goto out_free_store;
	if (crl_check) {
		X509_CRL *crl = load_crl(dir);
		int ok = crl && X509_STORE_add_crl(store, crl);

		X509_CRL_free(crl);	/* the store took its own reference */
		if (!ok)
			goto out_free_store;
		flags |= X509_V_FLAG_CRL_CHECK;
	}
	leaf = load_cert(dir, leaf_name);
	ctx = X509_STORE_CTX_new();
	if (!leaf || !ctx || !X509_STORE_CTX_init(ctx, store, leaf, NULL))
		goto out_free_ctx;
	X509_STORE_CTX_set_flags(ctx, flags);
	if (!X509_STORE_CTX_set_purpose(ctx, purpose))
		goto out_free_ctx;
	if (X509_verify_cert(ctx) == 1) {
		ret = X509_V_OK;
	} else {
		ret = X509_STORE_CTX_get_error(ctx);
		TH_LOG("%s: depth %d: %s", leaf_name,
		       X509_STORE_CTX_get_error_depth(ctx),
		       X509_verify_cert_error_string(ret));
		if (ret == X509_V_OK)
			ret = -1;	/* an internal error, not a verdict */
	}
out_free_ctx:
	X509_STORE_CTX_free(ctx);
	X509_free(leaf);
out_free_store:
	X509_STORE_free(store);
	ERR_clear_error();
	return ret;
}

/* 1 if @dir/@key_name is the private key of @dir/@cert_name, 0 if not,
 * -1 if either does not load. */
static int key_matches(const char *dir, const char *cert_name,
		       const char *key_name)
{
	X509 *cert = load_cert(dir, cert_name);
	EVP_PKEY *key = load_key(dir, key_name);
	int ret = -1;

	if (cert && key)
		ret = X509_check_private_key(cert, key) == 1;
	EVP_PKEY_free(key);
	X509_free(cert);
	ERR_clear_error();	/* a mismatch queues an error */
	return ret;
}

/* ---- one row per flaw ---------------------------------------------------- */

FIXTURE(pki)
{
	char dir[64];
};

FIXTURE_VARIANT(pki)
{
	enum t_pki_flaw flaw;
	int server_err;		/* with the CRL checked */
	int server_err_no_crl;
	int client_err;
	bool server_key_matches;
};

/* The foreign CA is nowhere in the store, so chain building stops at the
 * leaf; OpenSSL says LOCALLY because the leaf is not self-signed. */
#define NO_ISSUER X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY

FIXTURE_VARIANT_ADD(pki, good) {
	.flaw = T_PKI_GOOD, .server_err = X509_V_OK,
	.server_err_no_crl = X509_V_OK, .client_err = X509_V_OK,
	.server_key_matches = true,
};

FIXTURE_VARIANT_ADD(pki, unknown_ca) {
	.flaw = T_PKI_UNKNOWN_CA, .server_err = NO_ISSUER,
	.server_err_no_crl = NO_ISSUER, .client_err = NO_ISSUER,
	.server_key_matches = true,
};

FIXTURE_VARIANT_ADD(pki, expired) {
	.flaw = T_PKI_EXPIRED, .server_err = X509_V_ERR_CERT_HAS_EXPIRED,
	.server_err_no_crl = X509_V_ERR_CERT_HAS_EXPIRED,
	.client_err = X509_V_OK, .server_key_matches = true,
};

FIXTURE_VARIANT_ADD(pki, not_yet_valid) {
	.flaw = T_PKI_NOT_YET_VALID, .server_err = X509_V_ERR_CERT_NOT_YET_VALID,
	.server_err_no_crl = X509_V_ERR_CERT_NOT_YET_VALID,
	.client_err = X509_V_OK, .server_key_matches = true,
};

FIXTURE_VARIANT_ADD(pki, revoked) {
	.flaw = T_PKI_REVOKED, .server_err = X509_V_ERR_CERT_REVOKED,
	.server_err_no_crl = X509_V_OK, .client_err = X509_V_OK,
	.server_key_matches = true,
};

FIXTURE_VARIANT_ADD(pki, key_mismatch) {
	.flaw = T_PKI_KEY_MISMATCH, .server_err = X509_V_OK,
	.server_err_no_crl = X509_V_OK, .client_err = X509_V_OK,
	.server_key_matches = false,
};

FIXTURE_VARIANT_ADD(pki, client_unknown_ca) {
	.flaw = T_PKI_CLIENT_UNKNOWN_CA, .server_err = X509_V_OK,
	.server_err_no_crl = X509_V_OK, .client_err = NO_ISSUER,
	.server_key_matches = true,
};

FIXTURE_SETUP(pki)
{
	struct t_pki_opts o = { .flaw = variant->flaw, .with_crl = true };

	ASSERT_EQ(t_pki_make_temp(self->dir, sizeof(self->dir), &o), 0);
}

FIXTURE_TEARDOWN(pki)
{
	t_pki_remove(self->dir);
}

TEST_F(pki, server_verify)
{
	EXPECT_EQ(verify_leaf(self->dir, T_PKI_SERVER_CERT,
			      X509_PURPOSE_SSL_SERVER, true),
		  variant->server_err);
	EXPECT_EQ(verify_leaf(self->dir, T_PKI_SERVER_CERT,
			      X509_PURPOSE_SSL_SERVER, false),
		  variant->server_err_no_crl);
}

TEST_F(pki, client_verify)
{
	EXPECT_EQ(verify_leaf(self->dir, T_PKI_CLIENT_CERT,
			      X509_PURPOSE_SSL_CLIENT, true),
		  variant->client_err);
}

TEST_F(pki, key_pairs)
{
	EXPECT_EQ(key_matches(self->dir, T_PKI_SERVER_CERT, T_PKI_SERVER_KEY),
		  variant->server_key_matches);
	EXPECT_EQ(key_matches(self->dir, T_PKI_CLIENT_CERT, T_PKI_CLIENT_KEY),
		  1);
}

TEST_F(pki, crl_signed_by_ca_lists_only_revoked)
{
	X509 *ca = load_cert(self->dir, T_PKI_CA_CERT);
	X509 *server = load_cert(self->dir, T_PKI_SERVER_CERT);
	X509_CRL *crl = load_crl(self->dir);
	STACK_OF(X509_REVOKED) *revoked;
	bool is_revoked = variant->flaw == T_PKI_REVOKED;
	time_t week = time(NULL) + 7 * 24 * 3600;

	ASSERT_TRUE(ca && server && crl);
	EXPECT_EQ(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
	EXPECT_EQ(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
	EXPECT_EQ(X509_NAME_cmp(X509_CRL_get_issuer(crl),
				X509_get_subject_name(ca)), 0);
	/* nextUpdate a week ahead, give or take the test's runtime */
	EXPECT_EQ(X509_cmp_time(X509_CRL_get0_nextUpdate(crl), &(time_t){
		week - 60 }), 1);
	EXPECT_EQ(X509_cmp_time(X509_CRL_get0_nextUpdate(crl), &(time_t){
		week + 60 }), -1);
	/* an empty CRL omits revokedCertificates (RFC 5280 5.1.2.6): NULL */
	revoked = X509_CRL_get_REVOKED(crl);
	EXPECT_EQ(revoked ? sk_X509_REVOKED_num(revoked) : 0,
		  is_revoked ? 1 : 0);
	if (is_revoked && revoked && sk_X509_REVOKED_num(revoked) == 1)
		EXPECT_EQ(ASN1_INTEGER_cmp(X509_REVOKED_get0_serialNumber(
			sk_X509_REVOKED_value(revoked, 0)),
			X509_get0_serialNumber(server)), 0);
	X509_CRL_free(crl);
	X509_free(server);
	X509_free(ca);
}

/* ---- the good set in detail ---------------------------------------------- */

TEST(good_set_files_and_modes)
{
	static const char *const certs[] = {
		T_PKI_CA_CERT, T_PKI_SERVER_CERT, T_PKI_CLIENT_CERT,
	};
	struct t_pki_opts o = { 0 };
	char dir[64];
	size_t i;

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	EXPECT_EQ(strncmp(dir, "/tmp/ktm-pki-", 13), 0);
	EXPECT_EQ(mode_of(dir, "."), 0700);
	EXPECT_EQ(mode_of(dir, T_PKI_SERVER_KEY), 0600);
	EXPECT_EQ(mode_of(dir, T_PKI_CLIENT_KEY), 0600);
	for (i = 0; i < sizeof(certs) / sizeof(certs[0]); i++)
		EXPECT_EQ(mode_of(dir, certs[i]), 0644);
	EXPECT_EQ(mode_of(dir, T_PKI_CA_CRL), -ENOENT);	/* not asked for */
	EXPECT_EQ(verify_leaf(dir, T_PKI_SERVER_CERT, X509_PURPOSE_SSL_SERVER,
			      false), X509_V_OK);
	EXPECT_EQ(verify_leaf(dir, T_PKI_CLIENT_CERT, X509_PURPOSE_SSL_CLIENT,
			      false), X509_V_OK);
	/* each leaf is for its own side only */
	EXPECT_EQ(verify_leaf(dir, T_PKI_SERVER_CERT, X509_PURPOSE_SSL_CLIENT,
			      false), X509_V_ERR_INVALID_PURPOSE);
	EXPECT_EQ(verify_leaf(dir, T_PKI_CLIENT_CERT, X509_PURPOSE_SSL_SERVER,
			      false), X509_V_ERR_INVALID_PURPOSE);
	t_pki_remove(dir);
	EXPECT_EQ(access(dir, F_OK), -1);
	EXPECT_EQ(errno, ENOENT);
}

TEST(good_set_names_and_ips)
{
	struct t_pki_opts o = { .server_ip = { "127.0.0.1", "::1" } };
	X509 *server, *client;
	char dir[64], cn[80];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	server = load_cert(dir, T_PKI_SERVER_CERT);
	client = load_cert(dir, T_PKI_CLIENT_CERT);
	ASSERT_TRUE(server && client);

	ASSERT_GT(X509_NAME_get_text_by_NID(X509_get_subject_name(server),
					    NID_commonName, cn, sizeof(cn)), 0);
	EXPECT_STREQ(cn, "localhost");
	EXPECT_EQ(X509_check_host(server, "localhost", 0, 0, NULL), 1);
	EXPECT_EQ(X509_check_host(server, "other.example", 0, 0, NULL), 0);
	EXPECT_EQ(X509_check_ip_asc(server, "127.0.0.1", 0), 1);
	EXPECT_EQ(X509_check_ip_asc(server, "::1", 0), 1);
	EXPECT_EQ(X509_check_ip_asc(server, "127.0.0.2", 0), 0);

	ASSERT_GT(X509_NAME_get_text_by_NID(X509_get_subject_name(client),
					    NID_commonName, cn, sizeof(cn)), 0);
	EXPECT_STREQ(cn, T_PKI_CLIENT_CN);
	EXPECT_EQ(X509_check_host(client, T_PKI_CLIENT_CN, 0, 0, NULL), 1);
	EXPECT_EQ(X509_check_host(client, "localhost", 0, 0, NULL), 0);

	X509_free(client);
	X509_free(server);
	t_pki_remove(dir);
}

TEST(server_names_from_opts)
{
	struct t_pki_opts o = {
		.server_dns = { "dst-07.example", "dst-7.example" },
		.server_ip = { "10.0.0.7" },
	};
	X509 *server;
	char dir[64], cn[80];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	server = load_cert(dir, T_PKI_SERVER_CERT);
	ASSERT_NE(server, NULL);
	ASSERT_GT(X509_NAME_get_text_by_NID(X509_get_subject_name(server),
					    NID_commonName, cn, sizeof(cn)), 0);
	EXPECT_STREQ(cn, "dst-07.example");
	EXPECT_EQ(X509_check_host(server, "dst-07.example", 0, 0, NULL), 1);
	EXPECT_EQ(X509_check_host(server, "dst-7.example", 0, 0, NULL), 1);
	EXPECT_EQ(X509_check_host(server, "localhost", 0, 0, NULL), 0);
	EXPECT_EQ(X509_check_ip_asc(server, "10.0.0.7", 0), 1);
	EXPECT_EQ(X509_check_ip_asc(server, "127.0.0.1", 0), 0);
	X509_free(server);
	t_pki_remove(dir);
}

TEST(cert_profile)
{
	struct t_pki_opts o = { 0 };
	X509 *ca, *server, *client;
	BIGNUM *serial;
	EVP_PKEY *key;
	char dir[64];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	ca = load_cert(dir, T_PKI_CA_CERT);
	server = load_cert(dir, T_PKI_SERVER_CERT);
	client = load_cert(dir, T_PKI_CLIENT_CERT);
	ASSERT_TRUE(ca && server && client);

	EXPECT_EQ(X509_get_version(ca), X509_VERSION_3);
	EXPECT_EQ(X509_get_version(server), X509_VERSION_3);
	EXPECT_EQ(X509_self_signed(ca, 1), 1);
	EXPECT_EQ(X509_check_ca(ca), 1);
	EXPECT_EQ(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	ASSERT_NE(X509_get0_subject_key_id(ca), NULL);

	EXPECT_EQ(X509_check_ca(server), 0);
	EXPECT_EQ(X509_get_key_usage(server), KU_DIGITAL_SIGNATURE);
	EXPECT_EQ(X509_get_extended_key_usage(server), XKU_SSL_SERVER);
	EXPECT_EQ(X509_get_key_usage(client), KU_DIGITAL_SIGNATURE);
	EXPECT_EQ(X509_get_extended_key_usage(client), XKU_SSL_CLIENT);
	ASSERT_NE(X509_get0_authority_key_id(server), NULL);
	EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(server),
					X509_get0_subject_key_id(ca)), 0);
	EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(client),
					X509_get0_subject_key_id(ca)), 0);

	EXPECT_EQ(X509_get_signature_nid(server), NID_ecdsa_with_SHA256);
	key = X509_get0_pubkey(server);
	ASSERT_NE(key, NULL);
	EXPECT_TRUE(EVP_PKEY_is_a(key, "EC"));
	EXPECT_EQ(EVP_PKEY_get_bits(key), 256);

	/* random serials: positive, 127 bits, distinct */
	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(server), NULL);
	ASSERT_NE(serial, NULL);
	EXPECT_FALSE(BN_is_negative(serial));
	EXPECT_EQ(BN_num_bits(serial), 127);
	BN_free(serial);
	EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(server),
				   X509_get0_serialNumber(client)), 0);
	EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(server),
				   X509_get0_serialNumber(ca)), 0);

	X509_free(client);
	X509_free(server);
	X509_free(ca);
	t_pki_remove(dir);
}

/* ---- directories, reuse, errors ------------------------------------------ */

TEST(make_into_existing_dir_replaces_files)
{
	struct t_pki_opts revoked = { .flaw = T_PKI_REVOKED };
	struct t_pki_opts good = { 0 };
	char dir[] = "/tmp/ktm-pki-reuse-XXXXXX", path[256];
	FILE *f;

	ASSERT_NE(mkdtemp(dir), NULL);
	/* a world-readable key left by someone else */
	join(path, sizeof(path), dir, T_PKI_SERVER_KEY);
	f = fopen(path, "w");
	ASSERT_NE(f, NULL);
	fputs("junk\n", f);
	fclose(f);
	ASSERT_EQ(chmod(path, 0644), 0);

	EXPECT_EQ(t_pki_make(dir, &revoked), 0);
	EXPECT_EQ(mode_of(dir, T_PKI_SERVER_KEY), 0600);
	EXPECT_EQ(mode_of(dir, T_PKI_CA_CRL), 0644);	/* REVOKED implies it */
	EXPECT_EQ(key_matches(dir, T_PKI_SERVER_CERT, T_PKI_SERVER_KEY), 1);

	/* made again without a CRL, the old one must not stay behind */
	EXPECT_EQ(t_pki_make(dir, &good), 0);
	EXPECT_EQ(mode_of(dir, T_PKI_CA_CRL), -ENOENT);
	EXPECT_EQ(verify_leaf(dir, T_PKI_SERVER_CERT, X509_PURPOSE_SSL_SERVER,
			      false), X509_V_OK);
	t_pki_remove(dir);
}

TEST(bad_options_are_einval)
{
	struct t_pki_opts bad_flaw = { .flaw = T_PKI_FLAW_COUNT };
	struct t_pki_opts bad_ip = { .server_ip = { "127.0.0.1", "nope" } };
	char dir[64] = "unchanged", small[8];

	EXPECT_EQ(t_pki_make_temp(dir, sizeof(dir), &bad_flaw), -EINVAL);
	EXPECT_STREQ(dir, "");
	EXPECT_EQ(t_pki_make_temp(dir, sizeof(dir), &bad_ip), -EINVAL);
	EXPECT_STREQ(dir, "");
	EXPECT_EQ(t_pki_make_temp(small, sizeof(small), NULL), -EINVAL);
	EXPECT_EQ(t_pki_make(NULL, NULL), -EINVAL);
	EXPECT_EQ(t_pki_make("", NULL), -EINVAL);
	EXPECT_EQ(ERR_peek_error(), 0);
	t_pki_remove(NULL);
	t_pki_remove("");
}

TEST(dir_errors_are_errno)
{
	char dir[64], path[256];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), NULL), 0);
	join(path, sizeof(path), dir, "missing/sub");
	EXPECT_EQ(t_pki_make(path, NULL), -ENOENT);
	join(path, sizeof(path), dir, T_PKI_CA_CERT);
	EXPECT_EQ(t_pki_make(path, NULL), -ENOTDIR);
	t_pki_remove(dir);
}

/* The first DNS name becomes the CN, which X.520 caps at 64 characters. */
TEST(overlong_cn_is_eproto_with_queue_emptied)
{
	char name[80], dir[64];
	struct t_pki_opts o = { .server_dns = { name } };

	memset(name, 'a', 70);
	memcpy(name + 70, ".example", sizeof(".example"));
	EXPECT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), -EPROTO);
	EXPECT_STREQ(dir, "");
	EXPECT_EQ(ERR_peek_error(), 0);
}

TEST(full_set_is_fast_and_leaves_no_errors)
{
	struct t_pki_opts o = {
		.flaw = T_PKI_REVOKED, .with_crl = true,
		.server_ip = { "127.0.0.1", "::1" },
	};
	double t0, ms;
	char dir[64];

	t0 = ktm_now_s() * 1e3;
	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	ms = ktm_now_s() * 1e3 - t0;
	TH_LOG("full set with CRL: %.1f ms", ms);
	EXPECT_LT(ms, 1000);
	EXPECT_EQ(ERR_peek_error(), 0);
	t_pki_remove(dir);
}

/*
 * The harness's children leave with _exit(), so LeakSanitizer never looks
 * at a test body; under ASan ask it here, after every kind of set.
 */
TEST(every_flaw_frees_everything)
{
	enum t_pki_flaw flaw;
	char dir[64];

	for (flaw = T_PKI_GOOD; flaw < T_PKI_FLAW_COUNT; flaw++) {
		struct t_pki_opts o = {
			.flaw = flaw, .with_crl = true,
			.server_ip = { "::1" },
		};

		ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
		t_pki_remove(dir);
	}
	/* and the failure paths */
	{
		struct t_pki_opts o = { .server_ip = { "nope" } };

		EXPECT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), -EINVAL);
	}
#ifdef T_HAVE_LSAN
	EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0);
#else
	TH_LOG("not an ASan build: leaks are not checked");
#endif
}

TEST_HARNESS_MAIN
