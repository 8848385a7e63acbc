// SPDX-License-Identifier: MIT
/* Names users read for the public enums. */
#include "ktls.h"

const char *ktm_cipher_name(enum ktm_cipher cipher)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(cipher);

	return row ? row->label : NULL;
}

const char *ktm_tls_version_name(enum ktm_tls_version version)
{
	switch (version) {
	case KTM_TLS_1_2:
		return "TLS 1.2";
	case KTM_TLS_1_3:
		return "TLS 1.3";
	}
	return NULL;
}
