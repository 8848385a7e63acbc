// SPDX-License-Identifier: MIT
/*
 * Who may connect: an allow-list of peer identities checked right after
 * the chain verified and before the handshake ends (so before any
 * application byte), in the spirit of QEMU's authz-simple (an exact
 * identity) and authz-list-file (exact or glob rules, default deny).
 * Without rules the default stays "any certificate the CA signed".
 *
 * Rules, from ktm_config_add_allow() or one per line of an allow file
 * ('#' starts a comment):
 *   dn:SUBJECT        the subject exactly, RFC 2253 form as
 *                     ktm_session_peer_subject() shows it
 *   dn-glob:PATTERN   the subject against an fnmatch(3) pattern
 *   dns:NAME          a DNS subjectAltName, exactly (case-insensitive)
 *   ip:ADDRESS        an iPAddress subjectAltName (IPv4 or IPv6)
 *   spki:SHA256       the SHA-256 of the SubjectPublicKeyInfo, 64 hex digits
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "tls.h"

static const struct {
	const char *prefix;
	enum ktm_allow_kind kind;
} allow_kinds[] = {
	{ "dn:", KTM_ALLOW_DN },
	{ "dn-glob:", KTM_ALLOW_DN_GLOB },
	{ "dns:", KTM_ALLOW_DNS },
	{ "ip:", KTM_ALLOW_IP },
	{ "spki:", KTM_ALLOW_SPKI },
};

/* The binary form of an ip: or spki: value; false when it is not one. */
static bool allow_value(struct ktm_allow *a, const char *v)
{
	size_t i;

	if (a->kind == KTM_ALLOW_IP) {
		if (inet_pton(AF_INET, v, a->bin) == 1)
			a->bin_len = 4;
		else if (inet_pton(AF_INET6, v, a->bin) == 1)
			a->bin_len = 16;
		return a->bin_len != 0;
	}
	if (a->kind != KTM_ALLOW_SPKI)
		return *v != '\0';
	if (strlen(v) != 64)
		return false;
	for (i = 0; i < 32; i++) {
		int hi = ktm_hex_digit(v[2 * i]), lo = ktm_hex_digit(v[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		a->bin[i] = (uint8_t)(hi << 4 | lo);
	}
	a->bin_len = 32;
	return true;
}

bool ktm_allow_parse(struct ktm_allow *a, const char *rule, const char *where,
		     struct ktm_error **errp)
{
	size_t i;

	memset(a, 0, sizeof(*a));
	for (i = 0; i < sizeof(allow_kinds) / sizeof(allow_kinds[0]); i++) {
		size_t n = strlen(allow_kinds[i].prefix);

		if (strncmp(rule, allow_kinds[i].prefix, n))
			continue;
		a->kind = allow_kinds[i].kind;
		if (!allow_value(a, rule + n))
			break;
		a->text = strdup(rule);
		if (!a->text) {
			ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
				      "out of memory for an allow rule");
			return false;
		}
		a->value = a->text + n;
		return true;
	}
	ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
		      "allow rule '%s'%s%s is not one of dn:SUBJECT, "
		      "dn-glob:PATTERN, dns:NAME, ip:ADDRESS, spki:SHA256",
		      rule, where ? " in " : "", where ? where : "");
	ktm_error_hint_set(errp, "e.g. dn:CN=src.example,O=Example or "
			   "dn-glob:CN=*.example,O=Example");
	return false;
}

/* Whether a SAN of @type equals the rule's value (lengths checked: a NUL
 * inside a name never ends it early). */
static bool san_matches(X509 *cert, const struct ktm_allow *a)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name,
						NULL, NULL);
	size_t vlen = strlen(a->value);
	bool hit = false;
	int i;

	for (i = 0; names && !hit && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		const ASN1_STRING *s;

		if (a->kind == KTM_ALLOW_DNS && g->type == GEN_DNS) {
			s = g->d.dNSName;
			hit = (size_t)ASN1_STRING_length(s) == vlen &&
			      !strncasecmp((const char *)ASN1_STRING_get0_data(s),
					   a->value, vlen);
		} else if (a->kind == KTM_ALLOW_IP && g->type == GEN_IPADD) {
			s = g->d.iPAddress;
			hit = (size_t)ASN1_STRING_length(s) == a->bin_len &&
			      !memcmp(ASN1_STRING_get0_data(s), a->bin, a->bin_len);
		}
	}
	GENERAL_NAMES_free(names);
	return hit;
}

static bool spki_matches(X509 *cert, const uint8_t want[32])
{
	unsigned char *der = NULL, d[32];
	unsigned int len = sizeof(d);
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	bool ok = n > 0 && EVP_Digest(der, (size_t)n, d, &len, EVP_sha256(), NULL) &&
		  !CRYPTO_memcmp(d, want, 32);

	OPENSSL_free(der);
	return ok;
}

static bool rule_matches(X509 *cert, const char *subject,
			 const struct ktm_allow *a)
{
	switch (a->kind) {
	case KTM_ALLOW_DN:
		return !strcmp(subject, a->value);
	case KTM_ALLOW_DN_GLOB:
		return !fnmatch(a->value, subject, 0);
	case KTM_ALLOW_DNS:
	case KTM_ALLOW_IP:
		return san_matches(cert, a);
	case KTM_ALLOW_SPKI:
		return spki_matches(cert, a->bin);
	}
	return false;
}

bool ktm_authz_allows(const struct ktm_config *cfg, X509 *cert)
{
	char subject[KTM_ID_SUBJECT_MAX];
	size_t i;

	if (!cfg->n_allow && !cfg->n_allow_f)
		return true;	/* the default: the CA's signature suffices */
	ktm_x509_name_text(X509_get_subject_name(cert), subject, sizeof(subject));
	for (i = 0; i < cfg->n_allow; i++)
		if (rule_matches(cert, subject, &cfg->allow[i]))
			return true;
	for (i = 0; i < cfg->n_allow_f; i++)
		if (rule_matches(cert, subject, &cfg->allow_f[i]))
			return true;
	return false;
}

void ktm_authz_describe(const struct ktm_config *cfg, char *buf, size_t len)
{
	size_t n = cfg->n_allow + cfg->n_allow_f;

	if (!n)
		snprintf(buf, len, "any certificate signed by the CA in %s "
			 "(no allow-list)", cfg->ca_path ? cfg->ca_path : "ca-cert.pem");
	else if (cfg->allow_file)
		snprintf(buf, len, "the allow-list %s%s (%zu rule%s)",
			 cfg->allow_file, cfg->n_allow ? " and the --allow rules" : "",
			 n, n == 1 ? "" : "s");
	else
		snprintf(buf, len, "the allow-list of --allow rules (%zu rule%s)",
			 n, n == 1 ? "" : "s");
}
