// SPDX-License-Identifier: MIT
/* Frames of the migration stream (lib/STREAM.md). */
#include <errno.h>
#include <string.h>

#include "bytes.h"
#include "ktm.h"
#include "stream.h"

void ktm_frame_encode(const struct ktm_frame *f, uint8_t out[KTM_FRAME_LEN])
{
	out[0] = f->type;
	out[1] = f->flags;
	ktm_put_be16(out + 2, 0);
	ktm_put_be32(out + 4, f->len);
	ktm_put_be64(out + 8, f->offset);
	ktm_put_be64(out + 16, f->aux);
}

int ktm_frame_decode(const uint8_t in[KTM_FRAME_LEN], struct ktm_frame *f)
{
	f->type = in[0];
	f->flags = in[1];
	f->len = ktm_get_be32(in + 4);
	f->offset = ktm_get_be64(in + 8);
	f->aux = ktm_get_be64(in + 16);
	if (!f->type || f->type > KTM_F_MAX || ktm_get_be16(in + 2))
		return -EBADMSG;
	return 0;
}

static const char hello_magic[8] = "KTMSTRM1";

void ktm_hello_encode(const struct ktm_hello *h, uint8_t out[KTM_HELLO_LEN])
{
	memset(out, 0, KTM_HELLO_LEN);
	memcpy(out, hello_magic, 8);
	ktm_put_be16(out + 8, h->version);
	ktm_put_be16(out + 10, h->features);
	ktm_put_be16(out + 12, h->channel);
	ktm_put_be16(out + 14, h->nchannels);
	ktm_put_be32(out + 16, h->page_size);
	ktm_put_be32(out + 20, h->chunk_size);
	ktm_put_be64(out + 24, h->image_size);
	memcpy(out + 32, h->stream_id, 16);
	ktm_put_be64(out + 48, h->first_chunk);
}

int ktm_hello_decode(const uint8_t in[KTM_HELLO_LEN], struct ktm_hello *h)
{
	if (memcmp(in, hello_magic, 8))
		return -EBADMSG;
	h->version = ktm_get_be16(in + 8);
	h->features = ktm_get_be16(in + 10);
	h->channel = ktm_get_be16(in + 12);
	h->nchannels = ktm_get_be16(in + 14);
	h->page_size = ktm_get_be32(in + 16);
	h->chunk_size = ktm_get_be32(in + 20);
	h->image_size = ktm_get_be64(in + 24);
	memcpy(h->stream_id, in + 32, 16);
	h->first_chunk = ktm_get_be64(in + 48);
	if (h->version != KTM_STREAM_VERSION)
		return -EPROTONOSUPPORT;
	if (!h->nchannels || h->channel >= h->nchannels ||
	    h->page_size != KTM_PAGE_SIZE || h->chunk_size != KTM_CHUNK_SIZE ||
	    h->image_size % KTM_PAGE_SIZE ||
	    h->first_chunk > ktm_chunk_count(h->image_size))
		return -EINVAL;
	return 0;
}

bool ktm_run_valid(uint64_t offset, uint64_t len, uint64_t image_size)
{
	return len && !(offset % KTM_PAGE_SIZE) && !(len % KTM_PAGE_SIZE) &&
	       offset <= image_size && len <= image_size - offset;
}

/* Neither helper may wrap near 2^64: a HELLO's image_size is the peer's. */
uint64_t ktm_chunk_count(uint64_t size)
{
	return size / KTM_CHUNK_SIZE + (size % KTM_CHUNK_SIZE != 0);
}

uint64_t ktm_chunk_len(uint64_t size, uint64_t i)
{
	uint64_t off;

	if (i >= ktm_chunk_count(size))
		return 0;
	off = i * KTM_CHUNK_SIZE;
	return size - off < KTM_CHUNK_SIZE ? size - off : KTM_CHUNK_SIZE;
}

uint64_t ktm_default_key_limit(int cipher)
{
	/* RFC 8446 §5.5: AES-GCM at most 2^24.5 full-size records per key;
	 * the same bound is used for AES-CCM.  ChaCha20-Poly1305 has no
	 * practical limit. */
	if (cipher == KTM_CIPHER_CHACHA20_POLY1305)
		return 0;
	return 23726566ull;	/* floor(2^24.5) */
}
