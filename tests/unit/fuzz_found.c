// SPDX-License-Identifier: MIT
/*
 * Inputs the fuzz targets (fuzz/) found, kept as unit tests.  Expected
 * values are worked out in the comments from the format (lib/STREAM.md:
 * 1 MiB chunks), not taken from the code under test.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "ktm.h"
#include "stream.h"

/* fuzz/frame.c: a HELLO with image_size 0xfffffffffff60000 (page
 * aligned, so the decoder takes it).  (size + 2^20 - 1) wrapped, and the
 * chunk count came out tiny. */
TEST(chunk_count_near_2_64)
{
	uint64_t size = 0xfffffffffff60000ull;
	/* 0xfffffffffff00000 is (2^44 - 1) whole chunks; 0x60000 is left */
	uint64_t whole = (1ull << 44) - 1;

	EXPECT_EQ(ktm_chunk_count(size), whole + 1);
	EXPECT_EQ(ktm_chunk_len(size, whole), 0x60000ull);
	EXPECT_EQ(ktm_chunk_len(size, whole - 1), (uint64_t)KTM_CHUNK_SIZE);
	EXPECT_EQ(ktm_chunk_len(size, whole + 1), 0ull);
	/* i * 2^20 wraps to 2^20 for i = 2^44 + 1: still past the end */
	EXPECT_EQ(ktm_chunk_len(size, (1ull << 44) + 1), 0ull);
	EXPECT_EQ(ktm_chunk_len(size, UINT64_MAX), 0ull);
	EXPECT_EQ(ktm_chunk_count(UINT64_MAX), 1ull << 44);
	EXPECT_EQ(ktm_chunk_count(0), 0ull);
	EXPECT_EQ(ktm_chunk_count(1), 1ull);
}

TEST(hello_first_chunk_near_2_64)
{
	static const uint8_t crash[64] = {
		'K', 'T', 'M', 'S', 'T', 'R', 'M', '1',
		0x00, 0x01, 0x00, 0x03, 0x00, 0x01, 0x00, 0x02,
		0x00, 0x00, 0x10, 0x00, 0x00, 0x10, 0x00, 0x00,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xf6, 0x00, 0x00,
		0x00, 0x00, 0x10, 0x00, 0x00, 0x40, 0x7a, 0x00,
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0xd0, 0xce, 0xcd, 0x33, 0x34, 0x37, 0xc8, 0xc6,
	};
	uint8_t v2[64];
	struct ktm_hello h;

	/* Stream version 1, which this library no longer speaks
	 * (lib/STREAM.md: version 2). */
	EXPECT_EQ(ktm_hello_decode(crash, &h), -EPROTONOSUPPORT);
	/* The same HELLO as version 2 with a digest: its image size is above
	 * STREAM.md's bound of 2^48 bytes, so it is refused, not decoded. */
	memcpy(v2, crash, sizeof(v2));
	v2[9] = 2;
	v2[56] = 0;
	v2[57] = 1;
	EXPECT_EQ(ktm_hello_decode(v2, &h), -EINVAL);
	/* and the chunk count of that size still does not wrap */
	EXPECT_EQ(ktm_chunk_count(0xfffffffffff60000ull), 1ull << 44);
}

TEST_HARNESS_MAIN
