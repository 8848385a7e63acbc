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
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ktm.h"
#include "migrate.h"
#include "stream.h"

#define SIZE (2u * KTM_CHUNK_SIZE)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem_rx {
	const uint8_t *p;
	size_t left;
};

static bool mem_read(void *opaque, void *buf, size_t len,
		     struct ktm_error **errp)
{
	struct mem_rx *r = opaque;

	if (len > r->left) {
		ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET, "input ran out");
		return false;
	}
	memcpy(buf, r->p, len);
	r->p += len;
	r->left -= len;
	return true;
}

static bool prepare(struct ktm_migration *m, uint8_t setup)
{
	struct ktm_hello h = {
		.version = KTM_STREAM_VERSION, .features = KTM_FEAT_ALL,
		.nchannels = 1, .page_size = KTM_PAGE_SIZE,
		.chunk_size = KTM_CHUNK_SIZE, .image_size = SIZE,
		.digest = setup & 2 ? KTM_DIG_SHA256 : KTM_DIG_XXH3_128,
	};

	if ((setup & 1) &&
	    !ktm_migration_request_pages(m, 0, 2 * KTM_PAGE_SIZE, NULL))
		return false;
	m->nreq_sent = m->nreq;
	m->img_fd = memfd_create("fuzz-dest", MFD_CLOEXEC);
	if (m->img_fd < 0 || ftruncate(m->img_fd, SIZE))
		return false;
	m->ch[0].m = m;
	return ktm_dest_prepare(m, &h, NULL);
}

/* Feed every frame of the input; stop at the first that ends or fails. */
static void run(struct ktm_migration *m, const uint8_t *p, size_t left)
{
	struct ktm_chan *c = &m->ch[0];

	while (left >= KTM_FRAME_LEN) {
		struct ktm_error *err = NULL;
		struct ktm_frame f;
		struct mem_rx mr;
		struct ktm_rx rx = { mem_read, &mr };
		enum ktm_dest_step step;

		if (ktm_frame_decode(p, &f))
			return;
		p += KTM_FRAME_LEN;
		left -= KTM_FRAME_LEN;
		mr = (struct mem_rx){ p, left };
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
	if (prepare(m, data[0]))
		run(m, data + 1, size - 1);
	ktm_dest_release(m);
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	free(m->chunk_digest);
	m->chunk_digest = NULL;
	ktm_migration_free(m);
	return 0;
}
