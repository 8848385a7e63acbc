// SPDX-License-Identifier: MIT
/*
 * Fuzz target: certificate SAN formatting (ktm_x509_sans, lib/verify.c)
 * on any DER the parser accepts.  Goes through this small wrapper so the
 * target survives verify.c becoming a pure function.  The first byte sets
 * the output size (1..256).  Oracle: the text is NUL-terminated inside
 * the buffer and names only what a SAN list can hold.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sans_of(X509 *cert, char *buf, size_t len)
{
	ktm_x509_sans(cert, buf, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *p;
	char *buf;
	size_t len;
	X509 *cert;

	if (size < 2)
		return 0;
	len = (size_t)data[0] + 1;
	p = data + 1;
	cert = d2i_X509(NULL, &p, (long)(size - 1));
	if (!cert)
		return 0;
	buf = malloc(len);
	if (buf) {
		memset(buf, 'x', len);
		sans_of(cert, buf, len);
		if (!memchr(buf, '\0', len))
			abort();
		if (buf[0] && strncmp(buf, "DNS:", 4) && strncmp(buf, "IP:", 3))
			abort();
		free(buf);
	}
	X509_free(cert);
	return 0;
}
