// SPDX-License-Identifier: MIT
/* Names users read for the public enums, and the TLS library's names for
 * the ciphers (the kernel layer knows only the kernel's). */
#include "internal.h"
#include "ktls.h"

/* enum ktm_cipher of ktm.h is the row id of ktls/ciphers.def. */
#define KTM_CIPHER(name_, K, label_)					\
	_Static_assert((int)KTM_CIPHER_##K == (int)KTM_KTLS_CIPHER_##K,	\
		       "enum ktm_cipher and ciphers.def disagree on " #K);
#include "ciphers.def"
#undef KTM_CIPHER
_Static_assert(KTM_CIPHER_COUNT == KTM_KTLS_CIPHER_END - 1,
	       "enum ktm_cipher and ciphers.def disagree on the count");

/* The OpenSSL cipher suites that negotiate each AEAD, by enum ktm_cipher. */
static const struct {
	const char *tls13, *tls12;
} suites[KTM_CIPHER_COUNT + 1] = {
	[KTM_CIPHER_AES_GCM_128] = {
		"TLS_AES_128_GCM_SHA256",
		"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" },
	[KTM_CIPHER_AES_GCM_256] = {
		"TLS_AES_256_GCM_SHA384",
		"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384" },
	[KTM_CIPHER_AES_CCM_128] = {
		"TLS_AES_128_CCM_SHA256", "ECDHE-ECDSA-AES128-CCM" },
	[KTM_CIPHER_CHACHA20_POLY1305] = {
		"TLS_CHACHA20_POLY1305_SHA256",
		"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305" },
};

const char *ktm_cipher_suites(enum ktm_cipher cipher, bool tls13)
{
	if ((unsigned int)cipher > KTM_CIPHER_COUNT || !suites[cipher].tls13)
		return NULL;
	return tls13 ? suites[cipher].tls13 : suites[cipher].tls12;
}

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
