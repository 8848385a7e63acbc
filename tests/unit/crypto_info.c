// SPDX-License-Identifier: MIT
/* The cipher table and crypto_info filling, with the kernel calls faked. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "harness.h"
#include "ktls.h"
#include "ktm.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

FIXTURE(cipher)
{
	uint8_t key[32];
	uint8_t iv[KTM_KTLS_IV_LEN];
};

FIXTURE_VARIANT(cipher)
{
	uint16_t version;
	enum ktm_cipher cipher;
	uint16_t kernel_type;
	size_t key_len, salt_len, info_len;
};

#define KTM_CIPHER(name_, K, label_)				\
	FIXTURE_VARIANT_ADD(cipher, 12_##name_) {			\
		.version = TLS_1_2_VERSION, .cipher = KTM_CIPHER_##K,	\
		.kernel_type = TLS_CIPHER_##K,				\
		.key_len = TLS_CIPHER_##K##_KEY_SIZE,			\
		.salt_len = TLS_CIPHER_##K##_SALT_SIZE,			\
		.info_len = sizeof(struct tls12_crypto_info_##name_),	\
	};								\
	FIXTURE_VARIANT_ADD(cipher, 13_##name_) {			\
		.version = TLS_1_3_VERSION, .cipher = KTM_CIPHER_##K,	\
		.kernel_type = TLS_CIPHER_##K,				\
		.key_len = TLS_CIPHER_##K##_KEY_SIZE,			\
		.salt_len = TLS_CIPHER_##K##_SALT_SIZE,			\
		.info_len = sizeof(struct tls12_crypto_info_##name_),	\
	};
#include "ciphers.def"
#undef KTM_CIPHER

FIXTURE_SETUP(cipher)
{
	unsigned int i;

	(void)variant;
	for (i = 0; i < sizeof(self->key); i++)
		self->key[i] = (uint8_t)(0xa0 + i);
	for (i = 0; i < sizeof(self->iv); i++)
		self->iv[i] = (uint8_t)(0x10 + i);
}

FIXTURE_TEARDOWN(cipher)
{
	(void)self, (void)variant, (void)_metadata;
}

TEST_F(cipher, fill_sets_header_and_length)
{
	struct ktm_ktls_crypto c;

	ASSERT_EQ(ktm_ktls_crypto_fill(&c, variant->version, variant->cipher,
				       self->key, variant->key_len, self->iv, 0), 0);
	EXPECT_EQ(c.u.info.version, variant->version);
	EXPECT_EQ(c.u.info.cipher_type, variant->kernel_type);
	EXPECT_EQ(c.len, variant->info_len);
}

/* The layout is the same for every tls12_crypto_info_*: header, iv, key,
 * salt, rec_seq.  Read the bytes back by offset, not through our fields. */
TEST_F(cipher, fill_splits_nonce_into_salt_and_iv)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(variant->cipher);
	const uint8_t *raw;
	struct ktm_ktls_crypto c;
	size_t iv_len = KTM_KTLS_IV_LEN - variant->salt_len;
	size_t off_iv = sizeof(struct tls_crypto_info);
	size_t off_key = off_iv + iv_len;
	size_t off_salt = off_key + variant->key_len;
	size_t off_seq = off_salt + variant->salt_len;

	ASSERT_NE(row, NULL);
	ASSERT_EQ(row->iv_len, iv_len);
	ASSERT_EQ(ktm_ktls_crypto_fill(&c, variant->version, variant->cipher,
				       self->key, variant->key_len, self->iv,
				       0x0102030405060708ull), 0);
	raw = (const uint8_t *)&c.u;
	EXPECT_MEMEQ(raw + off_salt, self->iv, variant->salt_len);
	EXPECT_MEMEQ(raw + off_iv, self->iv + variant->salt_len, iv_len);
	EXPECT_MEMEQ(raw + off_key, self->key, variant->key_len);
	EXPECT_EQ(raw[off_seq], 0x01);
	EXPECT_EQ(raw[off_seq + 7], 0x08);
	EXPECT_EQ(off_seq + 8, variant->info_len);
	EXPECT_EQ(ktm_ktls_crypto_rec_seq(&c), 0x0102030405060708ull);
}

TEST_F(cipher, fill_rejects_wrong_key_length)
{
	struct ktm_ktls_crypto c;

	EXPECT_EQ(ktm_ktls_crypto_fill(&c, variant->version, variant->cipher,
				       self->key, variant->key_len - 1,
				       self->iv, 0), -EINVAL);
	EXPECT_EQ(ktm_ktls_crypto_fill(&c, 0x0302, variant->cipher, self->key,
				       variant->key_len, self->iv, 0), -EINVAL);
}

TEST_F(cipher, wipe_clears_key)
{
	static const uint8_t zero[sizeof(struct ktm_ktls_crypto)];
	struct ktm_ktls_crypto c;

	ASSERT_EQ(ktm_ktls_crypto_fill(&c, variant->version, variant->cipher,
				       self->key, variant->key_len, self->iv, 7), 0);
	ktm_ktls_crypto_wipe(&c);
	EXPECT_MEMEQ(&c, zero, sizeof(c));
}

/* A fake kernel that records the last call and answers from a script. */
struct fake_kernel {
	int calls, level, name, ret;
	socklen_t len;
	uint8_t last[64];
	struct ktm_ktls_crypto reply;
};

static int fake_set(void *priv, int fd, int level, int name, const void *val,
		    socklen_t len)
{
	struct fake_kernel *k = priv;

	(void)fd;
	k->calls++;
	k->level = level;
	k->name = name;
	k->len = len;
	memcpy(k->last, val, len < sizeof(k->last) ? len : sizeof(k->last));
	return k->ret;
}

static int fake_get(void *priv, int fd, int level, int name, void *val,
		    socklen_t *len)
{
	struct fake_kernel *k = priv;

	(void)fd;
	k->calls++;
	k->level = level;
	k->name = name;
	k->len = *len;
	if (k->ret)
		return k->ret;
	if (*len != k->reply.len)
		return -EINVAL;		/* what the kernel does */
	memcpy(val, &k->reply.u, *len);
	return 0;
}

TEST_F(cipher, install_is_one_sol_tls_call_with_exact_length)
{
	struct fake_kernel k = { 0 };
	struct ktm_ktls_ops ops = { fake_set, fake_get, &k };
	struct ktm_ktls_crypto c;

	ASSERT_EQ(ktm_ktls_crypto_fill(&c, variant->version, variant->cipher,
				       self->key, variant->key_len, self->iv, 0), 0);
	ASSERT_EQ(ktm_ktls_install(&ops, 3, KTM_KTLS_RX, &c), 0);
	EXPECT_EQ(k.calls, 1);
	EXPECT_EQ(k.level, SOL_TLS);
	EXPECT_EQ(k.name, TLS_RX);
	EXPECT_EQ(k.len, variant->info_len);
	EXPECT_MEMEQ(k.last, &c.u, variant->info_len);

	k.ret = -EBUSY;
	EXPECT_EQ(ktm_ktls_install(&ops, 3, KTM_KTLS_TX, &c), -EBUSY);
	EXPECT_EQ(k.name, TLS_TX);
	EXPECT_EQ(ktm_ktls_install(&ops, 3, (enum ktm_ktls_dir)7, &c), -EINVAL);
	EXPECT_EQ(k.calls, 2);
}

TEST_F(cipher, read_back_asks_for_exact_size)
{
	struct fake_kernel k = { 0 };
	struct ktm_ktls_ops ops = { fake_set, fake_get, &k };
	struct ktm_ktls_crypto out;

	ASSERT_EQ(ktm_ktls_crypto_fill(&k.reply, variant->version,
				       variant->cipher, self->key,
				       variant->key_len, self->iv, 42), 0);
	ASSERT_EQ(ktm_ktls_read_back(&ops, 3, KTM_KTLS_TX, variant->cipher,
				     &out), 0);
	EXPECT_EQ(k.level, SOL_TLS);
	EXPECT_EQ(k.name, TLS_TX);
	EXPECT_EQ(k.len, variant->info_len);
	EXPECT_EQ(ktm_ktls_crypto_rec_seq(&out), 42);
	EXPECT_EQ(out.len, variant->info_len);
}

TEST(ulp_attach_sets_tcp_ulp_tls)
{
	struct fake_kernel k = { 0 };
	struct ktm_ktls_ops ops = { fake_set, fake_get, &k };

	ASSERT_EQ(ktm_ktls_ulp_attach(&ops, 5), 0);
	EXPECT_EQ(k.level, IPPROTO_TCP);
	EXPECT_EQ(k.name, TCP_ULP);
	EXPECT_EQ(k.len, 3);
	EXPECT_MEMEQ(k.last, "tls", 3);
	k.ret = -ENOENT;
	EXPECT_EQ(ktm_ktls_ulp_attach(&ops, 5), -ENOENT);
}

TEST(rx_no_pad_and_zerocopy_knobs)
{
	struct fake_kernel k = { 0 };
	struct ktm_ktls_ops ops = { fake_set, fake_get, &k };
	int v;

	ASSERT_EQ(ktm_ktls_rx_expect_no_pad(&ops, 5, true), 0);
	EXPECT_EQ(k.level, SOL_TLS);
	EXPECT_EQ(k.name, TLS_RX_EXPECT_NO_PAD);
	EXPECT_EQ(k.len, sizeof(int));
	memcpy(&v, k.last, sizeof(v));
	EXPECT_EQ(v, 1);
	ASSERT_EQ(ktm_ktls_tx_zerocopy_ro(&ops, 5, false), 0);
	EXPECT_EQ(k.name, TLS_TX_ZEROCOPY_RO);
	memcpy(&v, k.last, sizeof(v));
	EXPECT_EQ(v, 0);
}

TEST(table_is_complete_and_consistent)
{
	unsigned int i;

	ASSERT_EQ(ktm_ktls_cipher_count, KTM_CIPHER_COUNT);
	for (i = 0; i < ktm_ktls_cipher_count; i++) {
		const struct ktm_ktls_cipher *r = &ktm_ktls_ciphers[i];

		EXPECT_EQ(ktm_ktls_cipher_find(r->id), r);
		EXPECT_EQ(ktm_ktls_cipher_by_kernel_type(r->kernel_type), r);
		EXPECT_EQ(r->salt_len + r->iv_len, KTM_KTLS_IV_LEN);
		EXPECT_EQ(r->tag_len, 16);
		EXPECT_STREQ(ktm_cipher_name(r->id), r->label);
	}
	EXPECT_EQ(ktm_ktls_cipher_find((enum ktm_cipher)99), NULL);
	EXPECT_EQ(ktm_cipher_name((enum ktm_cipher)0), NULL);
	EXPECT_STREQ(ktm_tls_version_name(KTM_TLS_1_3), "TLS 1.3");
}

TEST_HARNESS_MAIN
