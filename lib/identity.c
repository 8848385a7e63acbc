// SPDX-License-Identifier: MIT
/*
 * Identity text: a certificate's subject, issuer and subjectAltNames as
 * the strings hooks, reports and errors show, decoded by type with every
 * length checked and escaped so that no name can pass for two.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "internal.h"

/*
 * Identity strings reach hooks (argv/env), text and JSON reports.  Every
 * byte outside printable ASCII, and the separators a reader splits on
 * (',' between names, '\\' our escape, '"' for JSON), is written as \xHH,
 * so one name can never read as two, nor forge a line or end a string.
 */
static bool id_needs_escape(unsigned char c)
{
	return c < 0x20 || c > 0x7e || c == ',' || c == '\\' || c == '"';
}

/* Append @n bytes of @p, escaped, to @out (which has room for 4 * n + 1). */
static size_t id_escape(char *out, const unsigned char *p, size_t n)
{
	static const char hexd[] = "0123456789abcdef";
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (!id_needs_escape(p[i])) {
			out[o++] = (char)p[i];
			continue;
		}
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hexd[p[i] >> 4];
		out[o++] = hexd[p[i] & 15];
	}
	out[o] = '\0';
	return o;
}

/* One GENERAL_NAME as "TYPE:value" into a malloc'd string, decoded by its
 * type with its length checked; NULL on ENOMEM. */
static char *san_text(const GENERAL_NAME *g)
{
	const ASN1_STRING *str = NULL;
	const char *tag = NULL;
	char ip[INET6_ADDRSTRLEN], *out;
	size_t n;

	switch (g->type) {
	case GEN_DNS:
		tag = "DNS", str = g->d.dNSName;
		break;
	case GEN_EMAIL:
		tag = "email", str = g->d.rfc822Name;
		break;
	case GEN_URI:
		tag = "URI", str = g->d.uniformResourceIdentifier;
		break;
	case GEN_IPADD:
		n = (size_t)ASN1_STRING_length(g->d.iPAddress);
		if ((n != 4 && n != 16) ||
		    !inet_ntop(n == 4 ? AF_INET : AF_INET6,
			       ASN1_STRING_get0_data(g->d.iPAddress), ip,
			       sizeof(ip))) {
			return asprintf(&out, "IP:invalid(%zu bytes)", n) < 0 ?
			       NULL : out;
		}
		return asprintf(&out, "IP:%s", ip) < 0 ? NULL : out;
	default:
		return asprintf(&out, "other:type%d", g->type) < 0 ? NULL : out;
	}
	n = (size_t)ASN1_STRING_length(str);
	out = malloc(strlen(tag) + 2 + 4 * n);
	if (!out)
		return NULL;
	n = (size_t)sprintf(out, "%s:", tag);
	id_escape(out + n, ASN1_STRING_get0_data(str),
		  (size_t)ASN1_STRING_length(str));
	return out;
}

/* Append @one (whole or not at all) after ", "; keep room for ", ...". */
static bool sans_append(char *buf, size_t len, size_t *used, const char *one)
{
	size_t need = strlen(one) + (*used ? 2 : 0);

	if (*used + need + sizeof(", ...") > len)
		return false;
	*used += (size_t)sprintf(buf + *used, "%s%s", *used ? ", " : "", one);
	return true;
}

size_t ktm_x509_sans(X509 *cert, char *buf, size_t len)
{
	GENERAL_NAMES *names;
	size_t used = 0;
	int i, n;

	if (!len)
		return 0;
	buf[0] = '\0';
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (!names)
		return 0;
	n = sk_GENERAL_NAME_num(names);
	for (i = 0; i < n; i++) {
		char *one = san_text(sk_GENERAL_NAME_value(names, i));
		bool fit = one && sans_append(buf, len, &used, one);

		free(one);
		if (!fit)
			break;
	}
	/* say so rather than show a partial list as complete */
	if (i < n && used + sizeof(", ...") <= len)
		used += (size_t)sprintf(buf + used, "%s...", used ? ", " : "");
	GENERAL_NAMES_free(names);
	return used;
}

size_t ktm_x509_name_text(const X509_NAME *name, char *buf, size_t len)
{
	/* RFC 2253 with every control and non-ASCII byte as \XX, then our
	 * escape for what a list reader or JSON would split on. */
	unsigned long fl = XN_FLAG_RFC2253 & ~ASN1_STRFLGS_UTF8_CONVERT;
	BIO *b = BIO_new(BIO_s_mem());
	char *raw = NULL, *out;
	long n;
	size_t used = 0;

	if (!len)
		return 0;
	buf[0] = '\0';
	if (!b)
		return 0;
	if (X509_NAME_print_ex(b, name, 0, fl) >= 0 &&
	    (n = BIO_get_mem_data(b, &raw)) > 0 && (out = malloc(4 * (size_t)n + 1))) {
		size_t i, o = 0;

		/* RFC 2253 escapes ',' as "\,": keep that, escape the rest */
		for (i = 0; i < (size_t)n; i++) {
			unsigned char c = (unsigned char)raw[i];

			if (c == ',' || c == '\\')
				out[o++] = (char)c;
			else
				o += id_escape(out + o, &c, 1);
		}
		out[o] = '\0';
		if (o < len) {
			memcpy(buf, out, o + 1);
			used = o;
		} else if (len > 4) {	/* never a partial name shown whole */
			memcpy(buf, out, len - 4);
			memcpy(buf + len - 4, "...", 4);
			used = len - 1;
		}
		free(out);
	}
	BIO_free(b);
	return used;
}

bool ktm_cert_names(const void *der, size_t der_len, char *subject,
		    size_t subject_len, char *sans, size_t sans_len,
		    struct ktm_error **errp)
{
	const unsigned char *p = der;
	X509 *x;

	if (subject_len)
		subject[0] = '\0';
	if (sans_len)
		sans[0] = '\0';
	if (der_len > LONG_MAX || !(x = d2i_X509(NULL, &p, (long)der_len))) {
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EINVAL,
			      "certificate of %zu bytes is not valid DER", der_len);
		return false;
	}
	ktm_x509_name_text(X509_get_subject_name(x), subject, subject_len);
	ktm_x509_sans(x, sans, sans_len);
	X509_free(x);
	ERR_clear_error();
	return true;
}
