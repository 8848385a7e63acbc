// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the migration stream's frame and HELLO decoders
 * (lib/stream.c), and the size arithmetic a HELLO feeds.  The oracle is
 * the format itself (lib/STREAM.md): whatever decodes must encode back to
 * the same bytes, and the run/chunk helpers must stay inside the image.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void frame(const uint8_t *in)
{
	uint8_t out[KTM_FRAME_LEN];
	struct ktm_frame f;

	if (ktm_frame_decode(in, &f))
		return;
	ktm_frame_encode(&f, out);
	if (memcmp(in, out, sizeof(out)))
		abort();	/* a frame that decodes is one we would send */
}

static void hello(const uint8_t *in)
{
	uint8_t out[KTM_HELLO_LEN];
	struct ktm_hello h;
	uint64_t n, i, sum = 0;

	if (ktm_hello_decode(in, &h))
		return;
	ktm_hello_encode(&h, out);
	/* bytes 56..63 are reserved and not decoded */
	if (memcmp(in, out, 56))
		abort();
	n = ktm_chunk_count(h.image_size);
	if (h.first_chunk > n)
		abort();
	/* the first and last chunks bound every other */
	for (i = h.first_chunk; i < n && i < h.first_chunk + 2; i++)
		sum += ktm_chunk_len(h.image_size, i);
	if (n && ktm_chunk_len(h.image_size, n - 1) == 0)
		abort();
	if (ktm_chunk_len(h.image_size, n) != 0 || sum > h.image_size)
		abort();
}

static void run(const uint8_t *in)
{
	uint64_t off, len, size;

	memcpy(&off, in, 8);
	memcpy(&len, in + 8, 8);
	memcpy(&size, in + 16, 8);
	if (ktm_run_valid(off, len, size) &&
	    (off + len < off || off + len > size || !len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= KTM_FRAME_LEN) {
		frame(data);
		run(data);
	}
	if (size >= KTM_HELLO_LEN)
		hello(data);
	if (size >= KTM_FRAME_LEN + KTM_HELLO_LEN)
		hello(data + KTM_FRAME_LEN);
	return 0;
}
