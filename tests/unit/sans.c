// SPDX-License-Identifier: MIT
/*
 * Certificate SAN text (ktm_x509_sans) on certificates built here with
 * OpenSSL's own API, including SANs a hostile peer can send but no CA
 * should sign: an IP address that is neither 4 nor 16 bytes (a heap
 * over-read, seen while writing fuzz/x509_sans.c).  Expected strings are RFC 5280's forms as we print
 * them, written out here.
 */
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "internal.h"

/* A certificate (unsigned: SAN text does not look at signatures) whose
 * subjectAltName holds @dns (NULL: none) and an IP name of @ip_len bytes
 * (0: none). */
static X509 *cert_with(const char *dns, const unsigned char *ip, int ip_len)
{
	GENERAL_NAMES *names = GENERAL_NAMES_new();
	X509 *x = X509_new();
	GENERAL_NAME *g;

	if (dns) {
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();

		ASN1_STRING_set(s, dns, (int)strlen(dns));
		g = GENERAL_NAME_new();
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		sk_GENERAL_NAME_push(names, g);
	}
	if (ip_len) {
		ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();

		ASN1_OCTET_STRING_set(o, ip, ip_len);
		g = GENERAL_NAME_new();
		GENERAL_NAME_set0_value(g, GEN_IPADD, o);
		sk_GENERAL_NAME_push(names, g);
	}
	X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0);
	GENERAL_NAMES_free(names);
	return x;
}

TEST(sans_dns_and_ipv4)
{
	static const unsigned char ip[4] = { 10, 0, 0, 7 };
	X509 *x = cert_with("dst-07.example", ip, 4);
	char buf[128];

	ktm_x509_sans(x, buf, sizeof(buf));
	EXPECT_STREQ(buf, "DNS:dst-07.example, IP:10.0.0.7");
	X509_free(x);
}

TEST(sans_ipv6)
{
	static const unsigned char ip[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 7 };
	X509 *x = cert_with(NULL, ip, 16);
	char buf[128];

	ktm_x509_sans(x, buf, sizeof(buf));
	EXPECT_STREQ(buf, "IP:2001:db8::7");
	X509_free(x);
}

/* A 1- or 5-byte "IP address" is no address: never read past it (the
 * fuzzer's ASan report was a heap over-read in inet_ntop) and never
 * print bytes that follow it as if they were one. */
TEST(sans_ip_of_wrong_length_is_not_an_address)
{
	static const unsigned char ip[5] = { 192, 168, 1, 1, 9 };
	int lens[] = { 1, 3, 5 };
	unsigned int i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		X509 *x = cert_with("a.example", ip, lens[i]);
		char buf[128], want[64];


		snprintf(want, sizeof(want), "DNS:a.example, IP:invalid(%d bytes)",
			 lens[i]);
		ktm_x509_sans(x, buf, sizeof(buf));
		EXPECT_STREQ(buf, want);
		X509_free(x);
	}
}

/* A list that does not fit ends at the last whole name and says that it
 * is partial (", ..."): a cut name ("DNS:dst-07.exa") would read as
 * another host, and a partial list must not read as the whole.  Found by
 * the SAN fuzz target (the text "DNS" in a 4-byte buffer). */
TEST(sans_truncate_at_a_whole_name)
{
	static const unsigned char ip[4] = { 10, 0, 0, 7 };
	static const char *const ok[] = {
		"", "...", "DNS:dst-07.example, ...",
		"DNS:dst-07.example, IP:10.0.0.7",
	};
	X509 *x = cert_with("dst-07.example", ip, 4);
	char buf[64];
	size_t n, k;

	for (n = 1; n <= sizeof(buf); n++) {
		bool known = false;

		memset(buf, 'x', sizeof(buf));
		ktm_x509_sans(x, buf, n);
		EXPECT_TRUE(memchr(buf, '\0', n) != NULL);
		for (k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
			known |= !strcmp(buf, ok[k]);
		if (!known)
			TH_LOG("buffer of %zu: \"%s\"", n, buf);
		EXPECT_TRUE(known);
	}
	/* room for all of it: all of it */
	EXPECT_STREQ(buf, "DNS:dst-07.example, IP:10.0.0.7");
	X509_free(x);
}

TEST_HARNESS_MAIN
