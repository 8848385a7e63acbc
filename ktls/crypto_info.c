// SPDX-License-Identifier: MIT
/*
 * The cipher table and the one function that turns a row plus key material
 * into the kernel's tls12_crypto_info_* struct.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "bytes.h"
#include "ktls.h"

#define KTM_CIPHER(name_, K, label_)					\
	{								\
		.id = KTM_KTLS_CIPHER_##K,				\
		.kernel_type = TLS_CIPHER_##K,				\
		.key_len = TLS_CIPHER_##K##_KEY_SIZE,			\
		.salt_len = TLS_CIPHER_##K##_SALT_SIZE,			\
		.iv_len = TLS_CIPHER_##K##_IV_SIZE,			\
		.rec_seq_len = TLS_CIPHER_##K##_REC_SEQ_SIZE,		\
		.tag_len = TLS_CIPHER_##K##_TAG_SIZE,			\
		.info_len = sizeof(struct tls12_crypto_info_##name_),	\
		.name = #name_,						\
		.label = label_,					\
	},
const struct ktm_ktls_cipher ktm_ktls_ciphers[] = {
#include "ciphers.def"
};
#undef KTM_CIPHER

const unsigned int ktm_ktls_cipher_count =
	sizeof(ktm_ktls_ciphers) / sizeof(ktm_ktls_ciphers[0]);

_Static_assert(sizeof(ktm_ktls_ciphers) / sizeof(ktm_ktls_ciphers[0]) ==
		       KTM_KTLS_CIPHER_END - 1,
	       "the cipher table and the row ids of ciphers.def disagree");

/* Every row keeps salt + iv = the 12-byte TLS nonce, and the union's
 * members share the layout info, iv, key, salt, rec_seq. */
#define KTM_CIPHER(name_, K, label_)			\
	_Static_assert(TLS_CIPHER_##K##_SALT_SIZE +			\
			       TLS_CIPHER_##K##_IV_SIZE == KTM_KTLS_IV_LEN, \
		       #K " nonce is not 12 bytes");
#include "ciphers.def"
#undef KTM_CIPHER

const struct ktm_ktls_cipher *ktm_ktls_cipher_find(unsigned int id)
{
	unsigned int i;

	for (i = 0; i < ktm_ktls_cipher_count; i++)
		if (ktm_ktls_ciphers[i].id == id)
			return &ktm_ktls_ciphers[i];
	return NULL;
}

const struct ktm_ktls_cipher *ktm_ktls_cipher_by_kernel_type(uint16_t type)
{
	unsigned int i;

	for (i = 0; i < ktm_ktls_cipher_count; i++)
		if (ktm_ktls_ciphers[i].kernel_type == type)
			return &ktm_ktls_ciphers[i];
	return NULL;
}

/*
 * Every tls12_crypto_info_* lays out info, iv, key, salt, rec_seq with no
 * padding (all byte arrays), so a row's sizes locate its fields.  Checked
 * per row at build time.
 */
#define KTM_CIPHER(name_, K, label_)			\
	_Static_assert(offsetof(struct tls12_crypto_info_##name_, key) == \
			       sizeof(struct tls_crypto_info) +		\
			       TLS_CIPHER_##K##_IV_SIZE &&		\
		       offsetof(struct tls12_crypto_info_##name_, rec_seq) == \
			       sizeof(struct tls_crypto_info) +		\
			       TLS_CIPHER_##K##_IV_SIZE +		\
			       TLS_CIPHER_##K##_KEY_SIZE +		\
			       TLS_CIPHER_##K##_SALT_SIZE,		\
		       #name_ " layout is not info, iv, key, salt, rec_seq");
#include "ciphers.def"
#undef KTM_CIPHER

struct ktm_ktls_fields {
	unsigned char *iv, *key, *salt, *rec_seq;
};

static void ktm_ktls_fields(struct ktm_ktls_crypto *c,
			    const struct ktm_ktls_cipher *row,
			    struct ktm_ktls_fields *f)
{
	unsigned char *base = (unsigned char *)&c->u;

	f->iv = base + sizeof(struct tls_crypto_info);
	f->key = f->iv + row->iv_len;
	f->salt = f->key + row->key_len;
	f->rec_seq = f->salt + row->salt_len;
}

int ktm_ktls_crypto_fill(struct ktm_ktls_crypto *c, uint16_t version,
			 unsigned int cipher, const uint8_t *key,
			 size_t key_len, const uint8_t iv[KTM_KTLS_IV_LEN],
			 uint64_t seq)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(cipher);
	struct ktm_ktls_fields f;

	if (!row)
		return -EPROTONOSUPPORT;
	if (version != TLS_1_2_VERSION && version != TLS_1_3_VERSION)
		return -EINVAL;
	if (key_len != row->key_len)
		return -EINVAL;

	memset(c, 0, sizeof(*c));
	c->u.info.version = version;
	c->u.info.cipher_type = row->kernel_type;
	c->len = row->info_len;
	ktm_ktls_fields(c, row, &f);
	memcpy(f.key, key, row->key_len);
	/* salt = leading implicit bytes, iv = the rest (RFC 5288 §3 for
	 * TLS 1.2 GCM; for TLS 1.3 the kernel XORs rec_seq into salt||iv,
	 * RFC 8446 §5.3). */
	memcpy(f.salt, iv, row->salt_len);
	memcpy(f.iv, iv + row->salt_len, row->iv_len);
	ktm_put_be64(f.rec_seq, seq);
	return 0;
}

uint64_t ktm_ktls_crypto_rec_seq(const struct ktm_ktls_crypto *c)
{
	const struct ktm_ktls_cipher *row =
		ktm_ktls_cipher_by_kernel_type(c->u.info.cipher_type);
	struct ktm_ktls_fields f;

	if (!row)
		return 0;
	/* The fields are only read; the cast spares a const twin of
	 * ktm_ktls_fields(). */
	ktm_ktls_fields((struct ktm_ktls_crypto *)c, row, &f);
	return ktm_get_be64(f.rec_seq);
}

void ktm_ktls_crypto_wipe(struct ktm_ktls_crypto *c)
{
	/* explicit_bzero is not elided even though @c dies right after. */
	explicit_bzero(c, sizeof(*c));
}
