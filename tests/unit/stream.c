// SPDX-License-Identifier: MIT
/* Frames and HELLO of the migration stream (lib/STREAM.md), no I/O. */
#include <errno.h>

#include "harness.h"
#include "ktm.h"
#include "migrate.h"
#include "stream.h"

TEST(frame_round_trip_is_big_endian)
{
	struct ktm_frame f = { .type = KTM_F_PAGES, .flags = KTM_FF_REQUESTED,
			       .len = 0x01020304, .offset = 0x1122334455667788ull,
			       .aux = 42 }, g;
	uint8_t b[KTM_FRAME_LEN];

	ktm_frame_encode(&f, b);
	EXPECT_EQ(b[0], KTM_F_PAGES);
	EXPECT_EQ(b[1], KTM_FF_REQUESTED);
	EXPECT_EQ(b[2] | b[3], 0);
	EXPECT_EQ(b[4], 0x01);
	EXPECT_EQ(b[7], 0x04);
	EXPECT_EQ(b[8], 0x11);
	EXPECT_EQ(b[15], 0x88);
	EXPECT_EQ(b[23], 42);
	ASSERT_EQ(ktm_frame_decode(b, &g), 0);
	EXPECT_EQ(g.type, f.type);
	EXPECT_EQ(g.flags, f.flags);
	EXPECT_EQ(g.len, f.len);
	EXPECT_EQ(g.offset, f.offset);
	EXPECT_EQ(g.aux, f.aux);
}

TEST(frame_decode_rejects_unknown_type_and_reserved_bits)
{
	struct ktm_frame f = { .type = KTM_F_ZERO }, g;
	uint8_t b[KTM_FRAME_LEN];

	ktm_frame_encode(&f, b);
	b[0] = 0;
	EXPECT_EQ(ktm_frame_decode(b, &g), -EBADMSG);
	b[0] = KTM_F_MAX + 1;
	EXPECT_EQ(ktm_frame_decode(b, &g), -EBADMSG);
	b[0] = KTM_F_ZERO;
	b[3] = 1;
	EXPECT_EQ(ktm_frame_decode(b, &g), -EBADMSG);
}

static struct ktm_hello good_hello(void)
{
	struct ktm_hello h = {
		.version = KTM_STREAM_VERSION, .features = KTM_FEAT_ZERO_PAGES,
		.channel = 1, .nchannels = 2, .page_size = KTM_PAGE_SIZE,
		.chunk_size = KTM_CHUNK_SIZE, .image_size = 64ull << 20,
		.first_chunk = 3, .digest = KTM_DIG_XXH3_128,
	};

	memset(h.stream_id, 0xab, sizeof(h.stream_id));
	return h;
}

TEST(hello_round_trip_and_checks)
{
	struct ktm_hello h = good_hello(), g;
	uint8_t b[KTM_HELLO_LEN];

	ktm_hello_encode(&h, b);
	EXPECT_MEMEQ(b, "KTMSTRM1", 8);
	ASSERT_EQ(ktm_hello_decode(b, &g), 0);
	EXPECT_EQ(g.channel, 1);
	EXPECT_EQ(g.nchannels, 2);
	EXPECT_EQ(g.image_size, 64ull << 20);
	EXPECT_EQ(g.first_chunk, 3);
	EXPECT_MEMEQ(g.stream_id, h.stream_id, 16);

	b[0] = 'X';
	EXPECT_EQ(ktm_hello_decode(b, &g), -EBADMSG);
	h.version = 1;			/* the SHA-256-only stream */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EPROTONOSUPPORT);
	h = good_hello();
	h.channel = 2;			/* not below nchannels */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h = good_hello();
	h.image_size = 4097;		/* not whole pages */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h = good_hello();
	h.first_chunk = 65;		/* past the last chunk */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
}

TEST(hello_refuses_unknown_features_digests_reserved_and_huge_sizes)
{
	struct ktm_hello h = good_hello(), g;
	uint8_t b[KTM_HELLO_LEN];

	h.features = 0x0004;		/* not defined in version 2 */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h = good_hello();
	h.digest = 3;
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h.digest = KTM_DIG_SHA256;
	ktm_hello_encode(&h, b);
	ASSERT_EQ(ktm_hello_decode(b, &g), 0);
	EXPECT_EQ(g.digest, KTM_DIG_SHA256);
	b[63] = 1;			/* reserved */
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h = good_hello();
	h.first_chunk = 0;
	h.image_size = 0;
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h.image_size = UINT64_MAX - 4095;	/* page aligned, near 2^64 */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h.image_size = (1ull << 48) + 4096;	/* just past 256 TiB */
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), -EINVAL);
	h.image_size = 1ull << 48;
	ktm_hello_encode(&h, b);
	EXPECT_EQ(ktm_hello_decode(b, &g), 0);
}

TEST(chunk_count_does_not_overflow_near_2_64)
{
	/* (2^64 - 1) / 2^20 = 2^44 - 1, remainder 2^20 - 1: 2^44 chunks,
	 * the last one 2^20 - 1 bytes */
	EXPECT_EQ(ktm_chunk_count(UINT64_MAX), 1ull << 44);
	EXPECT_EQ(ktm_chunk_len(UINT64_MAX, (1ull << 44) - 1), (1u << 20) - 1);
	EXPECT_EQ(ktm_chunk_len(UINT64_MAX, 1ull << 44), 0);
	EXPECT_EQ(ktm_chunk_len(UINT64_MAX, UINT64_MAX), 0);
	EXPECT_EQ(ktm_chunk_count(0), 0);
}

/* One row: a frame, the features negotiated, and the phrase it must
 * draw (NULL: accepted).  Image 8 MiB, XXH3-128 (16-byte digest). */
struct frame_case {
	struct ktm_frame f;
	uint16_t features;
	const char *problem;
};

#define IMG (8ull << 20)
#define ALL KTM_FEAT_ALL
static const struct frame_case frame_cases[] = {
	{ { KTM_F_PAGES, 0, 4096, 0, 0 }, ALL, NULL },
	{ { KTM_F_PAGES, KTM_FF_REQUESTED, 4096, 0, 0 }, ALL, NULL },
	{ { KTM_F_PAGES, KTM_FF_REQUESTED, 4096, 0, 0 }, KTM_FEAT_ZERO_PAGES,
	  "a feature that was not negotiated" },
	{ { KTM_F_PAGES, 0x02, 4096, 0, 0 }, ALL,
	  "flags this frame type does not have" },
	{ { KTM_F_PAGES, 0, 4096, 1, 0 }, ALL,
	  "a page run outside the image or not page aligned" },
	{ { KTM_F_PAGES, 0, 4096, IMG, 0 }, ALL,
	  "a page run outside the image or not page aligned" },
	{ { KTM_F_PAGES, 0, 0, 0, 0 }, ALL,
	  "a page run outside the image or not page aligned" },
	{ { KTM_F_PAGES, 0, 4096, 0, 7 }, ALL, "a non-zero aux field" },
	{ { KTM_F_ZERO, 0, 0, 0, 4096 }, ALL, NULL },
	{ { KTM_F_ZERO, 0, 0, 0, 4096 }, KTM_FEAT_PAGE_REQ,
	  "a feature that was not negotiated" },
	{ { KTM_F_ZERO, 0, 16, 0, 4096 }, ALL,
	  "a payload this frame type must not have" },
	{ { KTM_F_ZERO, 0, 0, IMG - 4096, 8192 }, ALL,
	  "a page run outside the image or not page aligned" },
	{ { KTM_F_CHANNEL_END, 0, 0, 0, 123 }, ALL, NULL },
	{ { KTM_F_CHANNEL_END, 0, 1, 0, 0 }, ALL,
	  "a payload this frame type must not have" },
	{ { KTM_F_CHANNEL_END, 0, 0, 4096, 0 }, ALL, "a non-zero offset" },
	{ { KTM_F_PROGRESS, 0, 0, 0, IMG }, ALL, NULL },
	{ { KTM_F_PROGRESS, 0, 8, 0, 0 }, ALL,
	  "a payload this frame type must not have" },
	{ { KTM_F_PROGRESS, 0, 0, 0, IMG + 1 }, ALL, "a count beyond the image" },
	{ { KTM_F_PAGE_REQ, 0, 0, 4096, 4096 }, ALL, NULL },
	{ { KTM_F_PAGE_REQ, 0, 4, 4096, 4096 }, ALL,
	  "a payload this frame type must not have" },
	{ { KTM_F_PAGE_REQ, 0, 0, 4096, 4096 }, KTM_FEAT_ZERO_PAGES,
	  "a feature that was not negotiated" },
	{ { KTM_F_PAGE_REQ, 0, 0, 4096, UINT64_MAX - 4095 }, ALL,
	  "a page run outside the image or not page aligned" },
	{ { KTM_F_IMAGE_END, 0, 16, 0, IMG }, ALL, NULL },
	{ { KTM_F_IMAGE_END, 0, 32, 0, IMG }, ALL,
	  "an image digest of the wrong length" },
	{ { KTM_F_IMAGE_END, 0, 16, 0, IMG - 4096 }, ALL,
	  "an image size other than the HELLO's" },
	{ { KTM_F_HELLO_ACK, 0, 0, 0, KTM_FEAT_ZERO_PAGES }, ALL, NULL },
	{ { KTM_F_HELLO_ACK, 0, 0, 0, 0x10 }, ALL,
	  "feature bits this version does not define" },
	{ { KTM_F_HELLO_ACK, 0, 2, 0, 0 }, ALL,
	  "a payload this frame type must not have" },
	{ { KTM_F_HELLO, 0, 63, 0, 0 }, ALL, "a HELLO that is not 64 bytes" },
	{ { KTM_F_HELLO, KTM_FF_RESUME, 64, 0, 0 }, ALL, NULL },
	{ { KTM_F_VERDICT, 0, 511, 0, 5 }, ALL, NULL },
	{ { KTM_F_VERDICT, 0, 512, 0, 5 }, ALL, "a message longer than 511 bytes" },
	{ { KTM_F_ABORT, 0, 0xffffffff, 0, 5 }, ALL,
	  "a message longer than 511 bytes" },
	{ { KTM_F_RECONNECT, 0, 0, 7, 0 }, ALL, NULL },
	{ { KTM_F_RECONNECT, 0, 0, 8, 0 }, ALL, "a chunk index beyond the image" },
	{ { KTM_F_RECONNECT, 0, 8, 1, 0 }, ALL,
	  "a payload this frame type must not have" },
	{ { 0, 0, 0, 0, 0 }, ALL, "an unknown frame type" },
	{ { KTM_F_MAX + 1, 0, 0, 0, 0 }, ALL, "an unknown frame type" },
};

TEST(frames_carry_only_what_their_type_allows)
{
	size_t i;

	for (i = 0; i < sizeof(frame_cases) / sizeof(frame_cases[0]); i++) {
		const struct frame_case *fc = &frame_cases[i];
		const char *got = ktm_frame_problem(&fc->f, fc->features, IMG,
						    KTM_DIG_XXH3_128);

		if (fc->problem ? !got || strcmp(got, fc->problem) : got != NULL)
			TH_LOG("case %zu: type %u -> %s", i, fc->f.type,
			       got ? got : "accepted");
		if (fc->problem)
			EXPECT_STREQ(got ? got : "accepted", fc->problem);
		else
			EXPECT_TRUE(got == NULL);
	}
}

TEST(runs_must_be_page_aligned_and_inside)
{
	uint64_t size = 8 * KTM_PAGE_SIZE;

	EXPECT_TRUE(ktm_run_valid(0, size, size));
	EXPECT_TRUE(ktm_run_valid(7 * KTM_PAGE_SIZE, KTM_PAGE_SIZE, size));
	EXPECT_FALSE(ktm_run_valid(0, 0, size));
	EXPECT_FALSE(ktm_run_valid(1, KTM_PAGE_SIZE, size));
	EXPECT_FALSE(ktm_run_valid(0, KTM_PAGE_SIZE + 1, size));
	EXPECT_FALSE(ktm_run_valid(8 * KTM_PAGE_SIZE, KTM_PAGE_SIZE, size));
	/* no wrap-around past the end */
	EXPECT_FALSE(ktm_run_valid(KTM_PAGE_SIZE, UINT64_MAX - 4095, size));
}

TEST(chunks_cover_the_image)
{
	uint64_t size = 3 * KTM_CHUNK_SIZE + 5 * KTM_PAGE_SIZE;

	EXPECT_EQ(ktm_chunk_count(size), 4);
	EXPECT_EQ(ktm_chunk_len(size, 0), KTM_CHUNK_SIZE);
	EXPECT_EQ(ktm_chunk_len(size, 3), 5 * KTM_PAGE_SIZE);
	EXPECT_EQ(ktm_chunk_len(size, 4), 0);
	EXPECT_EQ(ktm_default_key_limit(KTM_CIPHER_AES_GCM_128), 23726566);
	EXPECT_EQ(ktm_default_key_limit(KTM_CIPHER_CHACHA20_POLY1305), 0);
}

static void hex(const uint8_t *d, unsigned int n, char *out)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* Published test vectors: XXH3-128 of "" with seed 0 (xxHash's
 * sanity checks) and SHA-256 of "abc" (FIPS 180-2). */
TEST(digests_match_published_vectors)
{
	uint8_t out[KTM_DIGEST_LEN];
	struct ktm_hash h = { 0 };
	char x[2 * KTM_DIGEST_LEN + 1];

	ASSERT_TRUE(ktm_hash_init(&h, KTM_DIG_XXH3_128, NULL));
	ktm_hash_final(&h, out);
	hex(out, 16, x);
	EXPECT_STREQ(x, "99aa06d3014798d86001c324468d497f");
	ktm_hash_exit(&h);
	ASSERT_TRUE(ktm_hash_init(&h, KTM_DIG_SHA256, NULL));
	ktm_hash_update(&h, "ab", 2);
	ktm_hash_update(&h, "c", 1);
	ktm_hash_final(&h, out);
	hex(out, 32, x);
	EXPECT_STREQ(x, "ba7816bf8f01cfea414140de5dae2223"
			"b00361a396177a9cb410ff61f20015ad");
	ktm_hash_exit(&h);
	EXPECT_EQ(ktm_digest_len(KTM_DIG_XXH3_128), 16);
	EXPECT_EQ(ktm_digest_len(KTM_DIG_SHA256), 32);
	EXPECT_EQ(ktm_digest_len(0), 0);
}

/* A zero run hashes as the zeros it stands for: the same digest as the
 * bytes themselves, fed in any pieces. */
TEST(zero_runs_hash_as_their_bytes)
{
	static uint8_t buf[3 * KTM_PAGE_SIZE];
	uint8_t a[KTM_DIGEST_LEN], b[KTM_DIGEST_LEN];
	struct ktm_hash h = { 0 };

	memset(buf, 0x5a, KTM_PAGE_SIZE);
	ASSERT_TRUE(ktm_hash_init(&h, KTM_DIG_XXH3_128, NULL));
	ktm_hash_update(&h, buf, sizeof(buf));
	ktm_hash_final(&h, a);
	ktm_hash_reset(&h);
	ktm_hash_update(&h, buf, 100);
	ktm_hash_update(&h, buf + 100, KTM_PAGE_SIZE - 100);
	ktm_hash_zeros(&h, 2 * KTM_PAGE_SIZE);
	ktm_hash_final(&h, b);
	EXPECT_MEMEQ(a, b, 16);
	ktm_hash_exit(&h);
}

TEST_HARNESS_MAIN
