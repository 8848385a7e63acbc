/* SPDX-License-Identifier: MIT */
/*
 * Driving the destination's frame handler (ktm_dest_frame) from memory,
 * without sockets: the payload reader and a one-channel destination of an
 * image in a memfd.  For tests/unit/dest_frame.c and fuzz/dest_frames.c
 * only; not part of the library.
 */
#ifndef KTM_MIGRATE_MEM_H
#define KTM_MIGRATE_MEM_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migrate.h"

/* A payload in memory: the next @left bytes at @p. */
struct ktm_mem_rx {
	const uint8_t *p;
	size_t left;
};

/* struct ktm_rx's read over a struct ktm_mem_rx. */
static inline bool ktm_mem_read(void *opaque, void *buf, size_t len,
				struct ktm_error **errp)
{
	struct ktm_mem_rx *r = opaque;

	if (len > r->left) {
		ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET,
			      "the payload in memory ran out");
		return false;
	}
	memcpy(buf, r->p, len);
	r->p += len;
	r->left -= len;
	return true;
}

/* @m (from ktm_migration_new(NULL, NULL)) as the destination of channel
 * 0 of 1 of an image of @size bytes checked with @digest (KTM_DIG_*),
 * with the page request [@req_off, +@req_len) made and sent when
 * @req_len; the image is a memfd in m->img_fd. */
static inline bool ktm_dest_mem_prepare(struct ktm_migration *m, uint64_t size,
					uint16_t digest, uint64_t req_off,
					uint64_t req_len)
{
	struct ktm_hello h = {
		.version = KTM_STREAM_VERSION, .features = KTM_FEAT_ALL,
		.nchannels = 1, .page_size = KTM_PAGE_SIZE,
		.chunk_size = KTM_CHUNK_SIZE, .image_size = size,
		.digest = digest,
	};

	if (req_len && !ktm_migration_request_pages(m, req_off, req_len, NULL))
		return false;
	m->nreq_sent = m->nreq;
	m->img_fd = memfd_create("ktm-dest-mem", MFD_CLOEXEC);
	if (m->img_fd < 0 || ftruncate(m->img_fd, (off_t)size))
		return false;
	m->ch[0].m = m;
	return ktm_dest_prepare(m, &h, NULL);
}

/* Undo ktm_dest_mem_prepare() (also after it failed); @m is still to be
 * freed. */
static inline void ktm_dest_mem_release(struct ktm_migration *m)
{
	ktm_dest_release(m);
	if (m->img_fd >= 0)
		close(m->img_fd);
	m->img_fd = -1;
	free(m->chunk_digest);
	m->chunk_digest = NULL;
}

#endif /* KTM_MIGRATE_MEM_H */
