// SPDX-License-Identifier: MIT
/*
 * The destination's frame handler (ktm_dest_frame) without sockets: a
 * crafted source's frames and payloads from memory, the image in a memfd.
 * Expected bytes and digests come from the test's own buffers hashed with
 * libxxhash directly, not from the library.
 */
#include <sys/mman.h>
#include <xxhash.h>

#include "harness.h"
#include "ktm.h"
#include "migrate_mem.h"
#include "stream.h"

#define SIZE (2u * KTM_CHUNK_SIZE)

FIXTURE(dest)
{
	struct ktm_migration *m;
	struct ktm_error *err;
	uint8_t *img;		/* what the source has */
	uint8_t *other;		/* different bytes a crafted source slips in */
};

FIXTURE_VARIANT(dest)
{
	int none;
};

FIXTURE_SETUP(dest)
{
	size_t i;

	self->m = ktm_migration_new(NULL, NULL);
	self->img = malloc(SIZE);
	self->other = malloc(KTM_CHUNK_SIZE);
	ASSERT_TRUE(self->m && self->img && self->other);
	for (i = 0; i < SIZE; i++)
		self->img[i] = (uint8_t)(i * 7 + i / 4096);
	memset(self->img + KTM_PAGE_SIZE, 0, KTM_PAGE_SIZE);	/* a zero page */
	memset(self->other, 0xee, KTM_CHUNK_SIZE);
}

FIXTURE_TEARDOWN(dest)
{
	ktm_dest_mem_release(self->m);
	ktm_migration_free(self->m);
	ktm_error_free(self->err);
	free(self->img);
	free(self->other);
}

/* A one-channel destination for a SIZE image, with page requests when
 * @req_len (at @req_off). */
static bool prepare(struct ktm_migration *m, uint64_t req_off, uint64_t req_len)
{
	return ktm_dest_mem_prepare(m, SIZE, KTM_DIG_XXH3_128, req_off, req_len);
}

static enum ktm_dest_step feed(FIXTURE_DATA(dest) *self, uint8_t type,
			       uint8_t flags, uint64_t off, uint64_t len,
			       const uint8_t *payload)
{
	struct ktm_frame f = { .type = type, .flags = flags, .offset = off };
	struct ktm_mem_rx mr = { payload, payload ? len : 0 };
	struct ktm_rx rx = { ktm_mem_read, &mr };

	if (type == KTM_F_ZERO)
		f.aux = len;
	else if (type == KTM_F_IMAGE_END) {
		f.aux = SIZE;
		f.len = (uint32_t)len;
	} else
		f.len = (uint32_t)len;
	ktm_error_free(self->err);
	self->err = NULL;
	return ktm_dest_frame(&self->m->ch[0], &f, &rx, &self->err);
}

/* The whole image in order: page runs of 64 KiB, the zero page as ZERO. */
static bool feed_image(FIXTURE_DATA(dest) *self)
{
	uint64_t off;

	for (off = 0; off < SIZE; off += 64 << 10) {
		if (off == 0) {
			if (feed(self, KTM_F_PAGES, 0, 0, KTM_PAGE_SIZE,
				 self->img) != KTM_DEST_MORE ||
			    feed(self, KTM_F_ZERO, 0, KTM_PAGE_SIZE, KTM_PAGE_SIZE,
				 NULL) != KTM_DEST_MORE ||
			    feed(self, KTM_F_PAGES, 0, 2 * KTM_PAGE_SIZE,
				 (64 << 10) - 2 * KTM_PAGE_SIZE,
				 self->img + 2 * KTM_PAGE_SIZE) != KTM_DEST_MORE)
				return false;
			continue;
		}
		if (feed(self, KTM_F_PAGES, 0, off, 64 << 10, self->img + off) !=
		    KTM_DEST_MORE)
			return false;
	}
	return feed(self, KTM_F_CHANNEL_END, 0, 0, 0, NULL) == KTM_DEST_MORE;
}

/* What a correct destination's file and chunk digests must be. */
static void expect_image_and_digests(struct t_meta *_metadata,
				     FIXTURE_DATA(dest) *self)
{
	uint8_t *got = mmap(NULL, SIZE, PROT_READ, MAP_SHARED,
			    self->m->img_fd, 0);
	unsigned int k;

	ASSERT_NE(got, MAP_FAILED);
	EXPECT_TRUE(!memcmp(got, self->img, SIZE));
	munmap(got, SIZE);
	for (k = 0; k < SIZE / KTM_CHUNK_SIZE; k++) {
		XXH128_canonical_t c;

		XXH128_canonicalFromHash(&c, XXH3_128bits(self->img +
							  k * KTM_CHUNK_SIZE,
							  KTM_CHUNK_SIZE));
		EXPECT_MEMEQ(self->m->chunk_digest[k], c.digest, 16);
	}
}

TEST_F(dest, requested_pages_without_negotiation_are_refused)
{
	ASSERT_TRUE(prepare(self->m, 0, 0));
	EXPECT_EQ(self->m->features & KTM_FEAT_PAGE_REQ, 0);
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED, 0, KTM_PAGE_SIZE,
		       self->other), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err), "malformed migration stream "
		      "from the source on channel 0: a feature that was not "
		      "negotiated");
}

TEST_F(dest, requested_pages_outside_the_request_are_refused)
{
	ASSERT_TRUE(prepare(self->m, 0, 2 * KTM_PAGE_SIZE));
	/* not the next bytes of the request */
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED, KTM_PAGE_SIZE,
		       KTM_PAGE_SIZE, self->other), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "requested pages the destination did not ask for");
	/* longer than the request */
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED, 0,
		       3 * KTM_PAGE_SIZE, self->other), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "requested pages the destination did not ask for");
}

TEST_F(dest, requested_run_across_a_chunk_boundary_is_refused)
{
	ASSERT_TRUE(prepare(self->m, KTM_CHUNK_SIZE - KTM_PAGE_SIZE,
			    2 * KTM_PAGE_SIZE));
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED,
		       KTM_CHUNK_SIZE - KTM_PAGE_SIZE, 2 * KTM_PAGE_SIZE,
		       self->other), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "a requested run across a chunk boundary");
}

/* Other bytes sent as requested pages after the chunk arrived must not
 * land in the image (they would escape the chunk's digest). */
TEST_F(dest, requested_pages_after_the_chunk_do_not_change_the_image)
{
	uint8_t digest[16];

	ASSERT_TRUE(prepare(self->m, 0, KTM_PAGE_SIZE));
	ASSERT_TRUE(feed_image(self));
	memset(digest, 0, sizeof(digest));
	/* IMAGE_END first: the request is still open, so not done */
	EXPECT_EQ(feed(self, KTM_F_IMAGE_END, 0, 0, 16, digest), KTM_DEST_MORE);
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED, 0, KTM_PAGE_SIZE,
		       self->other), KTM_DEST_DONE);
	EXPECT_EQ(self->m->served, 1);
	expect_image_and_digests(_metadata, self);
}

/* Requested pages ahead of the chunk are written, then the chunk's own
 * pages (and zeros, over the requested bytes) replace them, and the
 * digest covers the result. */
TEST_F(dest, requested_pages_before_the_chunk_are_covered_by_its_digest)
{
	ASSERT_TRUE(prepare(self->m, 0, 2 * KTM_PAGE_SIZE));
	EXPECT_EQ(feed(self, KTM_F_PAGES, KTM_FF_REQUESTED, 0, 2 * KTM_PAGE_SIZE,
		       self->other), KTM_DEST_MORE);
	EXPECT_EQ(self->m->served, 1);
	EXPECT_TRUE(self->m->chunks[0].dirty);
	ASSERT_TRUE(feed_image(self));
	expect_image_and_digests(_metadata, self);
}

TEST_F(dest, frames_with_payloads_they_must_not_have_are_refused)
{
	static const uint8_t junk[16];

	ASSERT_TRUE(prepare(self->m, 0, 0));
	EXPECT_EQ(feed(self, KTM_F_CHANNEL_END, 0, 0, 8, junk), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "a payload this frame type must not have");
	EXPECT_EQ(feed(self, KTM_F_PROGRESS, 0, 0, 8, junk), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "a payload this frame type must not have");
	EXPECT_EQ(feed(self, KTM_F_PAGE_REQ, 0, 0, 0, NULL), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err), "a feature that was not "
		      "negotiated");
	EXPECT_EQ(feed(self, KTM_F_VERDICT, 0, 0, 0, NULL), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "a frame type the source does not send");
	/* pages out of order, and a channel end before the last chunk */
	EXPECT_EQ(feed(self, KTM_F_PAGES, 0, KTM_PAGE_SIZE, KTM_PAGE_SIZE,
		       self->img), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err), "pages out of order");
	EXPECT_EQ(feed(self, KTM_F_CHANNEL_END, 0, 0, 0, NULL), KTM_DEST_ERROR);
	EXPECT_STRSTR(ktm_error_message(self->err),
		      "a channel end before its last chunk");
}

TEST_F(dest, whole_image_in_order_is_accepted)
{
	uint8_t digest[16] = { 0 };

	ASSERT_TRUE(prepare(self->m, 0, 0));
	ASSERT_TRUE(feed_image(self));
	EXPECT_EQ(feed(self, KTM_F_IMAGE_END, 0, 0, 16, digest), KTM_DEST_DONE);
	EXPECT_EQ(self->m->ch[0].zeros, KTM_PAGE_SIZE);
	EXPECT_EQ(self->m->ch[0].pages, SIZE - KTM_PAGE_SIZE);
	expect_image_and_digests(_metadata, self);
}

TEST_HARNESS_MAIN
