// SPDX-License-Identifier: MIT
/*
 * Identity text from hostile certificates: ktm_cert_names() over DER the
 * test builds itself, with SANs an attacker would pick (iPAddress of the
 * wrong length, separators, newlines and NUL bytes inside a name, names at
 * and past the legal length).  The expected strings follow from the bytes
 * put in and the escaping rule of ktm.h, not from the code under test.
 * Run under ASan (make check) an over-read of a short iPAddress fails.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "internal.h"

/* One SAN entry: @type GEN_DNS or GEN_IPADD, @len bytes of @val. */
struct san {
	int type;
	const char *val;
	size_t len;
};

static EVP_PKEY *t_key;

static int push_san(GENERAL_NAMES *names, const struct san *in)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_STRING *str = in->type == GEN_IPADD ? ASN1_OCTET_STRING_new() :
			   ASN1_IA5STRING_new();

	if (!g || !str || !ASN1_STRING_set(str, in->val, (int)in->len)) {
		GENERAL_NAME_free(g);
		ASN1_STRING_free(str);
		return -1;
	}
	GENERAL_NAME_set0_value(g, in->type, str);
	if (!sk_GENERAL_NAME_push(names, g)) {
		GENERAL_NAME_free(g);
		return -1;
	}
	return 0;
}

/* A self-signed certificate with subject CN @cn (@cn_len bytes) and the
 * SANs @sans[@n], DER-encoded into a malloc'd buffer; its length or -1. */
static int make_der(const char *cn, size_t cn_len, const struct san *sans,
		    size_t n, unsigned char **der)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	X509 *x = X509_new();
	int len = -1;
	size_t i;

	*der = NULL;
	if (!t_key)
		t_key = EVP_EC_gen("P-256");
	if (!x || !names || !t_key)
		goto out;
	for (i = 0; i < n; i++)
		if (push_san(names, &sans[i]))
			goto out;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), 7) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 3600) ||
	    !X509_set_pubkey(x, t_key) ||
	    !X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName,
					V_ASN1_IA5STRING,
					(const unsigned char *)cn, (int)cn_len,
					-1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    (n && X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0) != 1) ||
	    !X509_sign(x, t_key, EVP_sha256()))
		goto out;
	len = i2d_X509(x, der);
out:
	GENERAL_NAMES_free(names);
	X509_free(x);
	return len;
}

struct names {
	char subject[KTM_ID_SUBJECT_MAX];
	char sans[KTM_ID_SANS_MAX];
};

static bool names_of(const char *cn, size_t cn_len, const struct san *sans,
		     size_t n, struct names *out)
{
	unsigned char *der;
	int len = make_der(cn, cn_len, sans, n, &der);
	bool ok = len > 0 && ktm_cert_names(der, (size_t)len, out->subject,
					    sizeof(out->subject), out->sans,
					    sizeof(out->sans), NULL);

	OPENSSL_free(der);
	return ok;
}

#define DNS(s) { GEN_DNS, s, sizeof(s) - 1 }
#define IPB(s) { GEN_IPADD, s, sizeof(s) - 1 }

TEST(ip_sans_are_decoded_by_length)
{
	const struct san sans[] = {
		IPB("\x0a\x00\x00\x07"),
		IPB("\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"),
		IPB("\x7f"),			/* 1 byte: the old over-read */
		IPB("\x0a\x00\x00\x07\x01"),	/* 5 bytes */
		{ GEN_IPADD, "", 0 },
	};
	struct names n;

	ASSERT_TRUE(names_of("a", 1, sans, 5, &n));
	EXPECT_STREQ(n.sans, "IP:10.0.0.7, IP:2001:db8::1, IP:invalid(1 bytes), "
			     "IP:invalid(5 bytes), IP:invalid(0 bytes)");
}

TEST(separators_inside_a_name_cannot_forge_a_second_name)
{
	const struct san sans[] = { DNS("evil.example, DNS:trusted.example") };
	struct names n;

	ASSERT_TRUE(names_of("a", 1, sans, 1, &n));
	EXPECT_STREQ(n.sans, "DNS:evil.example\\x2c DNS:trusted.example");
	EXPECT_EQ(strchr(n.sans, ','), NULL);
}

TEST(newline_and_nul_cannot_forge_a_line)
{
	const struct san sans[] = {
		DNS("x.example\nKTM_DATA_PATH=kernel"),
		DNS("a\0b.example"),
		DNS("q\"uote\\back"),
	};
	struct names n;

	ASSERT_TRUE(names_of("a", 1, sans, 3, &n));
	EXPECT_STREQ(n.sans, "DNS:x.example\\x0aKTM_DATA_PATH=kernel, "
			     "DNS:a\\x00b.example, DNS:q\\x22uote\\x5cback");
	EXPECT_EQ(strchr(n.sans, '\n'), NULL);
	EXPECT_EQ(strchr(n.sans, '"'), NULL);
}

TEST(longest_legal_dns_name_is_not_cut)
{
	char name[254], want[300];
	struct san s = { GEN_DNS, name, 253 };
	struct names n;

	memset(name, 'a', 253);
	name[253] = '\0';
	ASSERT_TRUE(names_of("a", 1, &s, 1, &n));
	snprintf(want, sizeof(want), "DNS:%s", name);
	EXPECT_STREQ(n.sans, want);
}

TEST(a_list_that_does_not_fit_says_so)
{
	static char big[400][8];
	struct san sans[400];
	struct names n;
	size_t i, len;

	for (i = 0; i < 400; i++) {
		snprintf(big[i], sizeof(big[i]), "h%03zu.ex", i);
		sans[i] = (struct san){ GEN_DNS, big[i], strlen(big[i]) };
	}
	ASSERT_TRUE(names_of("a", 1, sans, 400, &n));
	len = strlen(n.sans);
	EXPECT_LT(len, sizeof(n.sans));
	EXPECT_STRSTR(n.sans, "DNS:h000.ex, DNS:h001.ex");
	/* ends in the marker after a whole name */
	EXPECT_STREQ(n.sans + len - 5, ", ...");
	EXPECT_STREQ(n.sans + len - 8, ".ex, ...");
}

TEST(subject_controls_and_separators_are_escaped)
{
	static const char cn[] = "evil\n,CN=root\0x";
	struct names n;

	ASSERT_TRUE(names_of(cn, sizeof(cn) - 1, NULL, 0, &n));
	EXPECT_EQ(strchr(n.subject, '\n'), NULL);
	/* the comma stays inside the value (RFC 2253 "\,") */
	EXPECT_STRSTR(n.subject, "\\,CN=root");
	EXPECT_STREQ(n.subject, "CN=evil\\0A\\,CN=root\\00x");
	EXPECT_STREQ(n.sans, "");
}

TEST(not_a_certificate_is_an_error)
{
	struct ktm_error *err = NULL;
	char subject[64], sans[64];

	EXPECT_FALSE(ktm_cert_names("\x30\x03\x02\x01", 4, subject, sizeof(subject),
				    sans, sizeof(sans), &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "certificate of 4 bytes is not valid DER");
	EXPECT_STREQ(subject, "");
	ktm_error_free(err);
}

TEST(truncated_der_of_a_good_certificate_never_reads_past_it)
{
	const struct san sans[] = { DNS("ok.example"), IPB("\x7f\x00\x00\x01") };
	unsigned char *der, *copy;
	struct names n;
	int len, cut;

	len = make_der("a", 1, sans, 2, &der);
	ASSERT_GT(len, 0);
	for (cut = 0; cut < len; cut++) {
		/* an exact-size heap copy so ASan sees any read past the end */
		copy = malloc((size_t)cut + 1);
		ASSERT_NE(copy, NULL);
		memcpy(copy, der, (size_t)cut);
		EXPECT_FALSE(ktm_cert_names(copy, (size_t)cut, n.subject,
					    sizeof(n.subject), n.sans,
					    sizeof(n.sans), NULL));
		free(copy);
	}
	EXPECT_TRUE(ktm_cert_names(der, (size_t)len, n.subject, sizeof(n.subject),
				   n.sans, sizeof(n.sans), NULL));
	EXPECT_STREQ(n.sans, "DNS:ok.example, IP:127.0.0.1");
	OPENSSL_free(der);
}

TEST_HARNESS_MAIN
