/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the migration stream's frames (lib/STREAM.md).  Pure
 * encoding and decoding; no I/O.
 */
#ifndef KTM_STREAM_H
#define KTM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KTM_FRAME_LEN 24
#define KTM_HELLO_LEN 64
#define KTM_STREAM_VERSION 2
#define KTM_PAGE_SIZE 4096u
#define KTM_CHUNK_SIZE (1u << 20)
#define KTM_DIGEST_LEN 32	/* the longest digest */
/* The largest image a HELLO may announce (256 TiB): keeps offsets, chunk
 * counts and off_t far from overflow. */
#define KTM_MAX_IMAGE (1ull << 48)
#define KTM_TEXT_MAX 511	/* VERDICT and ABORT texts */

enum ktm_frame_type {
	KTM_F_HELLO = 1,
	KTM_F_HELLO_ACK,
	KTM_F_PAGES,
	KTM_F_ZERO,
	KTM_F_CHANNEL_END,
	KTM_F_IMAGE_END,
	KTM_F_VERDICT,
	KTM_F_PROGRESS,
	KTM_F_PAGE_REQ,
	KTM_F_RECONNECT,
	KTM_F_ABORT,
	KTM_F_MAX = KTM_F_ABORT,
};

#define KTM_FF_REQUESTED 0x01	/* PAGES */
#define KTM_FF_RESUME 0x01	/* HELLO */

#define KTM_FEAT_ZERO_PAGES 0x0001
#define KTM_FEAT_PAGE_REQ 0x0002
#define KTM_FEAT_ALL (KTM_FEAT_ZERO_PAGES | KTM_FEAT_PAGE_REQ)

/* Image digests on the wire (HELLO); also enum ktm_digest in ktm.h. */
#define KTM_DIG_XXH3_128 1
#define KTM_DIG_SHA256 2

struct ktm_frame {
	uint8_t type, flags;
	uint32_t len;
	uint64_t offset, aux;
};

struct ktm_hello {
	uint16_t version, features, channel, nchannels;
	uint32_t page_size, chunk_size;
	uint64_t image_size;
	uint8_t stream_id[16];
	uint64_t first_chunk;
	uint16_t digest;		/* KTM_DIG_* */
};

void ktm_frame_encode(const struct ktm_frame *f, uint8_t out[KTM_FRAME_LEN]);
/* 0, or -EBADMSG for an unknown type or non-zero reserved bytes. */
int ktm_frame_decode(const uint8_t in[KTM_FRAME_LEN], struct ktm_frame *f);
void ktm_hello_encode(const struct ktm_hello *h, uint8_t out[KTM_HELLO_LEN]);
/* 0, -EBADMSG without the magic, -EPROTONOSUPPORT for another version,
 * -EINVAL for impossible sizes, unknown feature bits or digest, or
 * non-zero reserved bytes. */
int ktm_hello_decode(const uint8_t in[KTM_HELLO_LEN], struct ktm_hello *h);
/* Bytes of a KTM_DIG_* digest, 0 for an unknown one. */
unsigned int ktm_digest_len(uint16_t digest);
/*
 * What is wrong with a decoded frame in a stream whose negotiated
 * features are @features, image @image_size bytes and digest @digest:
 * NULL when nothing, else a phrase for the malformed-stream error (a
 * payload the type must not have, flags or features not negotiated, a
 * run outside the image or not page aligned).  Pure.
 */
const char *ktm_frame_problem(const struct ktm_frame *f, uint16_t features,
			      uint64_t image_size, uint16_t digest);
/* A PAGES/ZERO run must be page aligned and inside the image. */
bool ktm_run_valid(uint64_t offset, uint64_t len, uint64_t image_size);
/* Length of chunk @i of an image of @size bytes. */
uint64_t ktm_chunk_len(uint64_t size, uint64_t i);
uint64_t ktm_chunk_count(uint64_t size);
/* Key-usage limit in records for a cipher/version (0 → unlimited). */
uint64_t ktm_default_key_limit(int cipher);

#endif /* KTM_STREAM_H */
