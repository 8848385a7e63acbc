// SPDX-License-Identifier: MIT
/* Frames and HELLO of the migration stream (lib/STREAM.md), no I/O. */
#include <errno.h>

#include "harness.h"
#include "ktm.h"
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
		.first_chunk = 3,
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
	h.version = 2;
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

TEST_HARNESS_MAIN
