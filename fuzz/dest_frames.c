// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the destination's frame handler (ktm_dest_frame,
 * lib/migrate_recv.c) without sockets, fed what a hostile source could
 * send on channel 0 of a two-chunk image.
 *
 * Input: one byte of set-up (bit 0: the destination asked for the first
 * two pages; bit 1: SHA-256 instead of XXH3), then frames: a 24-byte
 * header (lib/STREAM.md) followed by its payload, taken from the input.
 *
 * Oracles, from the format: the handler never reads more payload than a
 * frame announces, never reports a chunk covered past its length, never
 * counts more image bytes than the image has, and says why whenever it
 * refuses (an error is set exactly then); a frame it takes is read
 * whole.  ASan/UBSan do the rest.
 */
#include <stdint.h>
#include <stdlib.h>

#include "ktm.h"
#include "migrate_mem.h"
#include "stream.h"

#define SIZE (2u * KTM_CHUNK_SIZE)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feed every frame of the input; stop at the first that ends or fails. */
static void run(struct ktm_migration *m, const uint8_t *p, size_t left)
{
	struct ktm_chan *c = &m->ch[0];

	while (left >= KTM_FRAME_LEN) {
		struct ktm_error *err = NULL;
		struct ktm_frame f;
		struct ktm_mem_rx mr;
		struct ktm_rx rx = { ktm_mem_read, &mr };
		enum ktm_dest_step step;

		if (ktm_frame_decode(p, &f))
			return;
		p += KTM_FRAME_LEN;
		left -= KTM_FRAME_LEN;
		mr = (struct ktm_mem_rx){ p, left };
		step = ktm_dest_frame(c, &f, &rx, &err);
		if ((step == KTM_DEST_ERROR) != (err != NULL))
			abort();	/* refused without a reason, or the reverse */
		ktm_error_free(err);
		if (left - mr.left > f.len ||
		    (step == KTM_DEST_MORE && left - mr.left != f.len))
			abort();	/* read past the payload, or left some */
		if (c->covered > KTM_CHUNK_SIZE || ktm_mig_done(m) > SIZE)
			abort();	/* counted bytes the image does not have */
		if (step != KTM_DEST_MORE)
			return;
		p = mr.p;
		left = mr.left;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktm_migration *m;

	if (size < 1)
		return 0;
	m = ktm_migration_new(NULL, NULL);
	if (!m)
		return 0;
	/* set-up bit 0: the first two pages requested; bit 1: SHA-256 */
	if (ktm_dest_mem_prepare(m, SIZE, data[0] & 2 ? KTM_DIG_SHA256 :
				 KTM_DIG_XXH3_128, 0,
				 data[0] & 1 ? 2 * KTM_PAGE_SIZE : 0))
		run(m, data + 1, size - 1);
	ktm_dest_mem_release(m);
	ktm_migration_free(m);
	return 0;
}
