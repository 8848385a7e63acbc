// SPDX-License-Identifier: MIT
/* Frames of the migration stream (lib/STREAM.md). */
#include <errno.h>
#include <stdbool.h>
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
	ktm_put_be16(out + 56, h->digest);
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
	h->digest = ktm_get_be16(in + 56);
	if (h->version != KTM_STREAM_VERSION)
		return -EPROTONOSUPPORT;
	if (!h->nchannels || h->channel >= h->nchannels ||
	    h->page_size != KTM_PAGE_SIZE || h->chunk_size != KTM_CHUNK_SIZE ||
	    !h->image_size || h->image_size > KTM_MAX_IMAGE ||
	    h->image_size % KTM_PAGE_SIZE ||
	    h->first_chunk > ktm_chunk_count(h->image_size))
		return -EINVAL;
	if ((h->features & ~KTM_FEAT_ALL) || !ktm_digest_len(h->digest) ||
	    ktm_get_be16(in + 58) || ktm_get_be32(in + 60))
		return -EINVAL;
	return 0;
}

unsigned int ktm_digest_len(uint16_t digest)
{
	return digest == KTM_DIG_XXH3_128 ? 16 :
	       digest == KTM_DIG_SHA256 ? 32 : 0;
}

/* ---- what each frame type may carry (lib/STREAM.md, "Frames") ---------- */

enum { P_NONE, P_HELLO, P_RUN, P_DIGEST, P_TEXT };		/* payload */
enum { A_ZERO, A_ANY, A_RUN, A_SIZE, A_UPTO_SIZE, A_FEATURES };	/* aux */

struct frame_rule {
	uint8_t flags;		/* the flags the type may have */
	uint8_t payload;
	uint8_t aux;
	bool offset;		/* the offset field is used */
	uint16_t feature;	/* the type needs this negotiated */
};

static const struct frame_rule frame_rules[KTM_F_MAX + 1] = {
	[KTM_F_HELLO] = { KTM_FF_RESUME, P_HELLO, A_ZERO, false, 0 },
	[KTM_F_HELLO_ACK] = { 0, P_NONE, A_FEATURES, false, 0 },
	[KTM_F_PAGES] = { KTM_FF_REQUESTED, P_RUN, A_ZERO, true, 0 },
	[KTM_F_ZERO] = { KTM_FF_REQUESTED, P_NONE, A_RUN, true,
			 KTM_FEAT_ZERO_PAGES },
	[KTM_F_CHANNEL_END] = { 0, P_NONE, A_ANY, false, 0 },
	[KTM_F_IMAGE_END] = { 0, P_DIGEST, A_SIZE, false, 0 },
	[KTM_F_VERDICT] = { 0, P_TEXT, A_ANY, false, 0 },
	[KTM_F_PROGRESS] = { 0, P_NONE, A_UPTO_SIZE, false, 0 },
	[KTM_F_PAGE_REQ] = { 0, P_NONE, A_RUN, true, KTM_FEAT_PAGE_REQ },
	[KTM_F_RECONNECT] = { 0, P_NONE, A_ZERO, true, 0 },
	[KTM_F_ABORT] = { 0, P_TEXT, A_ANY, false, 0 },
};

static const char *payload_problem(const struct ktm_frame *f, uint8_t rule,
				   uint16_t digest)
{
	switch (rule) {
	case P_NONE:
		return f->len ? "a payload this frame type must not have" : NULL;
	case P_HELLO:
		return f->len != KTM_HELLO_LEN ? "a HELLO that is not 64 bytes" :
		       NULL;
	case P_DIGEST:
		return f->len != ktm_digest_len(digest) ?
		       "an image digest of the wrong length" : NULL;
	case P_TEXT:
		return f->len > KTM_TEXT_MAX ?
		       "a message longer than 511 bytes" : NULL;
	}
	return NULL;	/* P_RUN: checked as a run */
}

static const char *aux_problem(const struct ktm_frame *f, uint8_t rule,
			       uint64_t image_size)
{
	switch (rule) {
	case A_ZERO:
		return f->aux ? "a non-zero aux field" : NULL;
	case A_SIZE:
		return f->aux != image_size ?
		       "an image size other than the HELLO's" : NULL;
	case A_UPTO_SIZE:
		return f->aux > image_size ? "a count beyond the image" : NULL;
	case A_FEATURES:
		return f->aux & ~(uint64_t)KTM_FEAT_ALL ?
		       "feature bits this version does not define" : NULL;
	}
	return NULL;
}

/* ktm_frame_problem(): where the frame points: a RECONNECT's chunk index,
 * or the page run of a frame that carries one; NULL when inside the image. */
static const char *position_problem(const struct ktm_frame *f,
				    const struct frame_rule *r,
				    uint64_t image_size)
{
	uint64_t run;

	if (f->type == KTM_F_RECONNECT)
		return f->offset >= ktm_chunk_count(image_size) ?
		       "a chunk index beyond the image" : NULL;
	if (r->payload != P_RUN && r->aux != A_RUN)
		return NULL;
	run = r->payload == P_RUN ? f->len : f->aux;
	return ktm_run_valid(f->offset, run, image_size) ? NULL :
	       "a page run outside the image or not page aligned";
}

const char *ktm_frame_problem(const struct ktm_frame *f, uint16_t features,
			      uint64_t image_size, uint16_t digest)
{
	const struct frame_rule *r;
	const char *why;

	if (!f->type || f->type > KTM_F_MAX)
		return "an unknown frame type";
	r = &frame_rules[f->type];
	if (f->flags & ~r->flags)
		return "flags this frame type does not have";
	if ((r->feature & ~features) ||
	    ((f->flags & KTM_FF_REQUESTED) && !(features & KTM_FEAT_PAGE_REQ)))
		return "a feature that was not negotiated";
	if (!r->offset && f->offset)
		return "a non-zero offset";
	why = payload_problem(f, r->payload, digest);
	if (!why)
		why = aux_problem(f, r->aux, image_size);
	if (why)
		return why;
	return position_problem(f, r, image_size);
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
