// SPDX-License-Identifier: MIT
/*
 * The source side of a migration: connect the channels, send each chunk as
 * PAGES and ZERO frames straight from the image (sendfile, splice,
 * io_uring or writev into kernel TLS; full records through OpenSSL on the
 * userspace path), keep under the key-usage limit, finish with the digest
 * and wait for the destination's verdict.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <openssl/rand.h>

#include "ktls.h"
#include "migrate.h"

/* ---- source ------------------------------------------------------------------ */

/* Word at a time with an early exit: a page with data costs its first
 * non-zero word. */
static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	unsigned int i;

	for (i = 0; i < KTM_PAGE_SIZE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

static void add_run(struct ktm_chan *c, uint64_t off, uint64_t len, bool zero)
{
	struct ktm_run *r = &c->runs[c->nruns - (c->nruns > 0)];

	if (c->nruns && r->zero == zero) {
		r->len += (uint32_t)len;
		return;
	}
	r = &c->runs[c->nruns++];
	r->off = (uint32_t)off;
	r->len = (uint32_t)len;
	r->zero = zero;
}

/* Pages of [d, h) into runs, relative to @base. */
static void scan_data(struct ktm_chan *c, uint64_t base, uint64_t d, uint64_t h)
{
	for (; d < h; d += KTM_PAGE_SIZE)
		add_run(c, d - base, KTM_PAGE_SIZE, page_is_zero(c->m->map + d));
}

/*
 * The image's data extents, once, before any chunk: holes of a sparse
 * image are zero without reading them (which on shmem would also
 * allocate them).  Asked per chunk, SEEK_HOLE walks the page cache to the
 * next hole, which for an image without holes is its end: once per image
 * it is one walk.  A file system without SEEK_DATA, or more extents than
 * we keep, reads as data (scanned).
 */
static void map_extents(struct ktm_migration *m)
{
	uint64_t p = 0;

	m->data = calloc(KTM_MAX_EXTENTS, sizeof(*m->data));
	m->ndata = 0;
	while (m->data && p < m->size) {
		off_t d = lseek(m->img_fd, (off_t)p, SEEK_DATA), h;

		if (d < 0 && errno == ENXIO)
			break;				/* a hole to the end */
		if (d < 0 || m->ndata == KTM_MAX_EXTENTS - 1)
			d = (off_t)p, h = (off_t)m->size;	/* cannot tell */
		else
			h = lseek(m->img_fd, d, SEEK_HOLE);
		h = (off_t)(((uint64_t)h + KTM_PAGE_SIZE - 1) &
			    ~(uint64_t)(KTM_PAGE_SIZE - 1));
		if (h < 0 || (uint64_t)h > m->size)
			h = (off_t)m->size;
		m->data[m->ndata].off = (uint64_t)d & ~(uint64_t)(KTM_PAGE_SIZE - 1);
		m->data[m->ndata++].end = (uint64_t)h;
		p = (uint64_t)h;
	}
}

/* The first extent that ends after @off (binary search). */
static size_t first_extent(const struct ktm_migration *m, uint64_t off)
{
	size_t lo = 0, hi = m->ndata;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (m->data[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The runs of [base, base+len) (inside one chunk). */
static void scan_range(struct ktm_chan *c, uint64_t base, uint64_t len)
{
	const struct ktm_migration *m = c->m;
	uint64_t p = base, end = base + len;
	double t = ktm_now_s();
	size_t i;

	c->nruns = 0;
	if (!m->data) {
		scan_data(c, base, base, end);
		ktm_mig_lap(c, KTM_PHASE_SCAN, &t);
		return;
	}
	for (i = first_extent(m, base); p < end && i < m->ndata; i++) {
		uint64_t d = m->data[i].off < p ? p : m->data[i].off;
		uint64_t h = m->data[i].end > end ? end : m->data[i].end;

		if (d >= end)
			break;
		if (d > p)
			add_run(c, p - base, d - p, true);
		scan_data(c, base, d, h);
		p = h;
	}
	if (p < end)
		add_run(c, p - base, end - p, true);
	ktm_mig_lap(c, KTM_PHASE_SCAN, &t);
}

/* Userspace path: frames gather in a stage buffer and leave as full
 * records; flush at the end and before waiting for the peer. */
static bool stage_flush(struct ktm_chan *c, struct ktm_error **errp)
{
	bool ok = !c->staged || ktm_session_send(c->s, c->stage, c->staged, errp);

	c->staged = 0;
	return ok;
}

static bool stage(struct ktm_chan *c, const void *p, size_t len,
		  struct ktm_error **errp)
{
	const uint8_t *b = p;

	while (len) {
		size_t take = KTM_STAGE_LEN - c->staged;

		if (take > len)
			take = len;
		memcpy(c->stage + c->staged, b, take);
		c->staged += take;
		b += take;
		len -= take;
		if (c->staged == KTM_STAGE_LEN && !stage_flush(c, errp))
			return false;
	}
	return true;
}

/*
 * A page run on the userspace path: full records straight from the
 * image, no copy into the stage.  The stage is topped up to a record
 * boundary first and flushed, the whole records in the middle go to
 * OpenSSL from the mapping, the tail is staged: every record stays full.
 */
static bool stage_pages(struct ktm_chan *c, uint64_t off, size_t len,
			struct ktm_error **errp)
{
	const uint8_t *p = c->m->map + off;
	size_t top = (KTM_KTLS_MAX_RECORD - c->staged % KTM_KTLS_MAX_RECORD) %
		     KTM_KTLS_MAX_RECORD, direct;

	if (len < top + 2 * KTM_KTLS_MAX_RECORD)
		return stage(c, p, len, errp);
	if (!stage(c, p, top, errp) || !stage_flush(c, errp))
		return false;
	direct = (len - top) / KTM_KTLS_MAX_RECORD * KTM_KTLS_MAX_RECORD;
	if (!ktm_session_send(c->s, p + top, direct, errp))
		return false;
	return stage(c, p + top + direct, len - top - direct, errp);
}

/* The channel index is added by ktm_mig_fail_chan. */
static bool sock_error(struct ktm_chan *c, int err, struct ktm_error **errp)
{
	ktm_session_note_error(c->s, err);
	if (err == EAGAIN || err == ETIMEDOUT) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "sending pages to %s:%s timed out: the destination "
			      "took no data within the I/O timeout", c->m->host,
			      c->m->port);
		return false;
	}
	ktm_error_set(errp, err == EPIPE || err == ECONNRESET ? KTM_ERR_PEER :
		      KTM_ERR_IO, err, "sending pages to %s:%s failed: %s",
		      c->m->host, c->m->port, strerror(err));
	return false;
}

/* Kernel path: plain writes; the kernel encrypts.  MSG_MORE keeps the
 * record open so headers and pages share full records. */
static bool raw_send(struct ktm_chan *c, const void *p, size_t len, int more,
		     struct ktm_error **errp)
{
	int fd = ktm_session_fd(c->s);
	const uint8_t *b = p;

	while (len) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL | more);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sock_error(c, errno, errp);
		}
		b += n;
		len -= (size_t)n;
	}
	return true;
}

static bool send_sendfile(struct ktm_chan *c, uint64_t off, size_t len,
			  struct ktm_error **errp)
{
	int fd = ktm_session_fd(c->s);
	off_t o = (off_t)off;

	while (len) {
		ssize_t n = sendfile(fd, c->m->img_fd, &o, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return sock_error(c, n ? errno : EPIPE, errp);
		}
		len -= (size_t)n;
	}
	return true;
}

static bool send_splice(struct ktm_chan *c, uint64_t off, size_t len,
			struct ktm_error **errp)
{
	int fd = ktm_session_fd(c->s);
	off_t o = (off_t)off;

	while (len) {
		ssize_t n = splice(c->m->img_fd, &o, c->pipe[1], NULL, len,
				   SPLICE_F_MORE | SPLICE_F_MOVE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sock_error(c, n ? errno : EIO, errp);
		len -= (size_t)n;
		while (n > 0) {
			ssize_t w = splice(c->pipe[0], NULL, fd, NULL, (size_t)n,
					   SPLICE_F_MORE | SPLICE_F_MOVE);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return sock_error(c, w ? errno : EPIPE, errp);
			n -= w;
		}
	}
	return true;
}

static bool send_payload_kernel(struct ktm_chan *c, uint64_t off, size_t len,
				int more, struct ktm_error **errp)
{
	switch (c->m->send_path) {
	case KTM_SEND_AUTO:
	case KTM_SEND_SENDFILE:
		return send_sendfile(c, off, len, errp);
	case KTM_SEND_SPLICE:
		return send_splice(c, off, len, errp);
	case KTM_SEND_IO_URING:	/* frames outside chunks: plain writes */
	case KTM_SEND_WRITEV:
		return raw_send(c, c->m->map + off, len, more, errp);
	}
	return false;
}

static bool kernel_path(const struct ktm_chan *c)
{
	return ktm_session_path(c->s, KTM_DIR_TX) != KTM_PATH_USERSPACE;
}

/*
 * ---- the io_uring path: chains of chunks in flight ---------------------
 *
 * Each chunk's frames, headers and pages alike, are one WRITEV; the
 * chunks of a group of KTM_URING_DEPTH go in as one linked chain, which
 * the kernel sends in order while the next group is scanned and hashed.
 * Two chains on one socket could overtake each other, so a chain goes in
 * only when the one before it has ended.  Kernel TLS refuses MSG_WAITALL,
 * so a send may come back short; a short WRITE fails its link: the later
 * chunks of the chain come back -ECANCELED unsent, and the rest of the
 * short one and those go in again as a new chain, in the same order.
 */

static bool uring_fail(struct ktm_chan *c, const char *what, int err,
		       struct ktm_error **errp)
{
	ktm_error_set(errp, KTM_ERR_IO, err, "io_uring of channel %u: %s "
		      "failed: %s", c->idx, what, strerror(err));
	return false;
}

/* Slots [first, first + n) as one linked chain of WRITEVs. */
static bool uring_submit(struct ktm_chan *c, unsigned int first,
			 unsigned int n, struct ktm_error **errp)
{
	struct io_uring_sqe *sqe = NULL;
	unsigned int i;
	int ret;

	for (i = first; i < first + n; i++) {
		struct ktm_uring_slot *sl = &c->slots[i];

		sqe = io_uring_get_sqe(&c->ring);
		if (!sqe)
			return uring_fail(c, "a submission entry", EBUSY, errp);
		io_uring_prep_writev(sqe, ktm_session_fd(c->s), sl->msg.msg_iov,
				     (unsigned int)sl->msg.msg_iovlen, 0);
		io_uring_sqe_set_data64(sqe, i);
		io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
	}
	io_uring_sqe_set_flags(sqe, 0);		/* the chain ends here */
	do {
		ret = io_uring_submit(&c->ring);
	} while (ret == -EINTR);
	if (ret != (int)n)
		return uring_fail(c, "submit", ret < 0 ? -ret : EIO, errp);
	c->inflight = n;
	return true;
}

/* Skip @n sent bytes of the slot's iovecs. */
static void uring_advance(struct ktm_uring_slot *sl, size_t n)
{
	struct msghdr *msg = &sl->msg;

	sl->bytes -= n;
	while (n && msg->msg_iovlen) {
		struct iovec *v = msg->msg_iov;
		size_t take = n < v->iov_len ? n : v->iov_len;

		v->iov_base = (uint8_t *)v->iov_base + take;
		v->iov_len -= take;
		n -= take;
		if (!v->iov_len) {
			msg->msg_iov++;
			msg->msg_iovlen--;
		}
	}
}

/* Every completion of the chain in flight, each into its slot's res. */
static bool uring_reap(struct ktm_chan *c, struct ktm_error **errp)
{
	unsigned int got = 0;

	while (got < c->inflight) {
		struct io_uring_cqe *cqes[KTM_URING_SLOTS];
		unsigned int i, k;
		int ret = io_uring_wait_cqe_nr(&c->ring, cqes,
					       c->inflight - got);

		if (ret && ret != -EINTR && ret != -EAGAIN)
			return uring_fail(c, "wait", -ret, errp);
		k = io_uring_peek_batch_cqe(&c->ring, cqes, c->inflight - got);
		for (i = 0; i < k; i++)
			c->slots[io_uring_cqe_get_data64(cqes[i])].res =
				cqes[i]->res;
		io_uring_cq_advance(&c->ring, k);
		got += k;
	}
	return true;
}

/* The first slot of the chain not sent whole, advanced past what it
 * sent; first + n when all were.  False for a failed send. */
static bool uring_settle(struct ktm_chan *c, unsigned int first,
			 unsigned int n, unsigned int *rest,
			 struct ktm_error **errp)
{
	unsigned int i;

	for (i = first; i < first + n; i++) {
		struct ktm_uring_slot *sl = &c->slots[i];
		int res = sl->res;

		if (res == -EINTR || res == -EAGAIN ||
		    (res == -ECANCELED && i > first))
			break;
		if (res <= 0)
			return sock_error(c, res ? -res : EPIPE, errp);
		uring_advance(sl, (size_t)res);
		if (sl->bytes)
			break;
	}
	*rest = i;
	return true;
}

/* Wait for the chain in flight from slot @first, sending again what a
 * short send left, in order; with @errp NULL (a failed channel) only
 * wait: nothing more goes out. */
static bool uring_wait(struct ktm_chan *c, unsigned int first,
		       struct ktm_error **errp)
{
	while (c->inflight) {
		unsigned int n = c->inflight, rest = 0;

		if (!uring_reap(c, errp))
			return false;
		c->inflight = 0;
		if (!errp)
			return true;
		if (!uring_settle(c, first, n, &rest, errp))
			return false;
		if (rest < first + n &&
		    !uring_submit(c, rest, first + n - rest, errp))
			return false;
		first = rest;
	}
	return true;
}

/* Chunks made or in flight whose records the kernel has not all sealed. */
static unsigned int uring_unsent(const struct ktm_chan *c)
{
	return c->ring_ok ? c->inflight + c->slot_next % KTM_URING_DEPTH : 0;
}

/* Everything out: the chain in flight (the other group), then the chunks
 * made since (unless @errp is NULL) as a chain of their own. */
static bool uring_drain(struct ktm_chan *c, struct ktm_error **errp)
{
	unsigned int made = c->slot_next % KTM_URING_DEPTH;
	unsigned int group = c->slot_next - made;

	if (!c->ring_ok)
		return true;
	if (!uring_wait(c, (group + KTM_URING_DEPTH) % KTM_URING_SLOTS, errp))
		return false;
	if (!errp || !made)
		return true;
	if (!uring_submit(c, group, made, errp) || !uring_wait(c, group, errp))
		return false;
	c->slot_next = group;
	return true;
}

/* One chunk's frames into the next slot; a full group goes in as a chain
 * once the one before it has ended.  The caller hashes this chunk and
 * scans the next while the kernel sends. */
static bool uring_send_runs(struct ktm_chan *c, uint64_t base,
			    struct ktm_error **errp)
{
	struct ktm_uring_slot *sl = &c->slots[c->slot_next];
	unsigned int i, n = 0;

	sl->bytes = 0;
	for (i = 0; i < c->nruns; i++) {
		const struct ktm_run *r = &c->runs[i];
		struct ktm_frame f = { .type = r->zero ? KTM_F_ZERO : KTM_F_PAGES,
				       .offset = base + r->off };

		if (r->zero)
			f.aux = r->len;
		else
			f.len = r->len;
		ktm_frame_encode(&f, sl->hdr[i]);
		sl->iov[n++] = (struct iovec){ sl->hdr[i], KTM_FRAME_LEN };
		if (!r->zero)
			sl->iov[n++] = (struct iovec){ c->m->map + base + r->off,
						       r->len };
		sl->bytes += KTM_FRAME_LEN + f.len;
	}
	sl->msg = (struct msghdr){ .msg_iov = sl->iov, .msg_iovlen = n };
	if (++c->slot_next % KTM_URING_DEPTH)
		return true;
	/* the group is full: the other one must be out before it goes */
	i = c->slot_next % KTM_URING_SLOTS;
	if (!uring_wait(c, i, errp) ||
	    !uring_submit(c, c->slot_next - KTM_URING_DEPTH, KTM_URING_DEPTH,
			  errp))
		return false;
	c->slot_next = i;
	return true;
}

/* ---- frames ------------------------------------------------------------------- */

/* One frame with an optional run of image bytes as its payload; @more
 * 0 ends the kernel's open record after it. */
static bool send_run(struct ktm_chan *c, const struct ktm_frame *f,
		     uint64_t img_off, int more, struct ktm_error **errp)
{
	uint8_t hdr[KTM_FRAME_LEN];

	ktm_frame_encode(f, hdr);
	c->wire += KTM_FRAME_LEN + (uint64_t)f->len;
	if (!kernel_path(c))
		return stage(c, hdr, sizeof(hdr), errp) &&
		       (!f->len || stage_pages(c, img_off, f->len, errp));
	if (!raw_send(c, hdr, sizeof(hdr), f->len ? MSG_MORE : more, errp))
		return false;
	return !f->len || send_payload_kernel(c, img_off, f->len, more, errp);
}

/* The runs found by scan_range(@base), as PAGES and ZERO frames; the
 * pages go into @h (when not NULL) as they pass. */
static bool send_runs(struct ktm_chan *c, uint64_t base, uint8_t flags,
		      struct ktm_hash *h, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	double t = ktm_now_s();
	unsigned int i;

	for (i = 0; i < c->nruns; i++) {
		const struct ktm_run *r = &c->runs[i];
		uint64_t off = base + r->off;
		struct ktm_frame f = { .flags = flags, .offset = off };
		int more = flags && i + 1 == c->nruns ? 0 : MSG_MORE;

		if (r->zero) {
			f.type = KTM_F_ZERO;
			f.aux = r->len;
		} else {
			f.type = KTM_F_PAGES;
			f.len = r->len;
		}
		if (h) {
			if (r->zero)
				ktm_hash_zeros(h, r->len);
			else
				ktm_hash_update(h, m->map + off, r->len);
			ktm_mig_lap(c, KTM_PHASE_HASH, &t);
		}
		if (!send_run(c, &f, off, more, errp))
			return false;
		ktm_mig_lap(c, KTM_PHASE_SEND, &t);
	}
	return true;
}

/* Chunk @k: scanned, hashed while its pages pass, sent. */
static bool send_chunk(struct ktm_chan *c, uint64_t k, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t base = k * KTM_CHUNK_SIZE, len = ktm_chunk_len(m->size, k);
	unsigned int i;
	double t;

	scan_range(c, base, len);
	for (i = 0; i < c->nruns; i++) {
		if (c->runs[i].zero) {
			c->zeros += c->runs[i].len;
		} else {
			c->pages += c->runs[i].len;
			c->payload += c->runs[i].len;
		}
	}
	ktm_hash_reset(&c->hash);
	if (!c->ring_ok) {
		if (!send_runs(c, base, 0, &c->hash, errp))
			return false;
	} else {
		t = ktm_now_s();
		for (i = 0; i < c->nruns; i++)
			c->wire += KTM_FRAME_LEN + (c->runs[i].zero ? 0 : c->runs[i].len);
		if (!uring_send_runs(c, base, errp))
			return false;
		ktm_mig_lap(c, KTM_PHASE_SEND, &t);
		/* hashed while the kernel sends */
		for (i = 0; i < c->nruns; i++) {
			if (c->runs[i].zero)
				ktm_hash_zeros(&c->hash, c->runs[i].len);
			else
				ktm_hash_update(&c->hash, m->map + base +
						c->runs[i].off, c->runs[i].len);
		}
		ktm_mig_lap(c, KTM_PHASE_HASH, &t);
	}
	ktm_hash_final(&c->hash, m->chunk_digest[k]);
	__atomic_store_n(&c->done, c->done + len, __ATOMIC_RELAXED);
	return true;
}

/* PAGE_REQ: the range again, marked REQUESTED, cut at chunk boundaries
 * (lib/STREAM.md), ending the kernel's open record. */
static bool serve_request(struct ktm_chan *c, const struct ktm_frame *f,
			  struct ktm_error **errp)
{
	uint64_t off = f->offset, end = f->offset + f->aux;

	if (!uring_drain(c, errp))
		return false;
	while (off < end) {
		uint64_t stop = (off / KTM_CHUNK_SIZE + 1) * KTM_CHUNK_SIZE;

		if (stop > end)
			stop = end;
		scan_range(c, off, stop - off);
		if (!send_runs(c, off, KTM_FF_REQUESTED, NULL, errp))
			return false;
		off = stop;
	}
	c->m->served++;
	return kernel_path(c) || stage_flush(c, errp);
}

static bool send_hello(struct ktm_chan *c, uint8_t flags,
		       struct ktm_error **errp);

/* Zero-copy sendfile (TLS_TX_ZEROCOPY_RO) through the config's kernel
 * calls.  A kernel without the option (before 5.19: ENOPROTOOPT) simply
 * copies; any other refusal fails the channel. */
static bool zerocopy_on(struct ktm_chan *c, struct ktm_error **errp)
{
	int ret = ktm_ktls_tx_zerocopy_ro(c->m->cfg->ktls_ops,
					  ktm_session_fd(c->s), true);

	if (ret == 0 || ret == -ENOPROTOOPT)
		return true;
	ktm_error_set(errp, KTM_ERR_KTLS_INSTALL, -ret, "cannot turn on "
		      "zero-copy sendfile for channel %u: %s", c->idx,
		      strerror(-ret));
	return false;
}

/* The destination's ABORT (@text read already): its sentence becomes
 * ours, and the destination waits for no answer. */
static bool aborted(struct ktm_migration *m, const struct ktm_frame *f,
		    const char *text, struct ktm_error **errp)
{
	m->peer_aborted = true;
	ktm_error_set(errp, KTM_ERR_PEER, f->aux && f->aux < 4096 ? (int)f->aux :
		      EIO, "destination %s:%s stopped the migration: %s",
		      m->host, m->port, text[0] ? text : "no reason given");
	if (errp)
		ktm_error_set_peer_stop(*errp);
	return false;
}

/* The destination's ABORT (header in @f), its text still to read. */
static bool peer_aborted(struct ktm_migration *m, struct ktm_session *s,
			 const struct ktm_frame *f, struct ktm_error **errp)
{
	char text[KTM_TEXT_MAX + 1];

	if (!ktm_mig_recv_text(s, f, text, sizeof(text), errp))
		return false;
	return aborted(m, f, text, errp);
}

/* A session to the destination, tuned, that a cancel cuts short in the
 * connect or the handshake (then the cancel is the error). */
static struct ktm_session *dest_session(struct ktm_migration *m,
					struct ktm_error **errp)
{
	struct ktm_error *err = NULL;
	struct ktm_session *s = ktm_session_connect_cancel(m->cfg, m->host,
							   m->port,
							   m->cancel_fd, &err);

	if (s) {
		ktm_mig_tune_socket(m, ktm_session_fd(s));
		return s;
	}
	if (ktm_mig_cancelled(m)) {
		ktm_error_free(err);
		err = ktm_mig_cancel_error(m);
	}
	ktm_error_propagate(errp, err);
	return NULL;
}

/* respect_key_limit() without KeyUpdate: RECONNECT at the next chunk, close
 * this session and go on in a fresh one. */
static bool key_reconnect(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_frame f = { .type = KTM_F_RECONNECT };
	struct ktm_session *s;

	f.offset = c->next_chunk;
	/* a send without MSG_MORE also closes the kernel's open record */
	if ((!kernel_path(c) && !stage_flush(c, errp)) ||
	    !ktm_mig_send_frame(c->s, &f, NULL, errp))
		return false;
	if (!ktm_session_shutdown(c->s, errp))
		return false;
	ktm_mig_session_totals(m, c->s, KTM_DIR_TX);
	s = dest_session(m, errp);
	if (!s)
		return false;
	pthread_mutex_lock(&m->lock);
	ktm_session_free(c->s);
	c->s = s;
	m->reconnects++;
	pthread_mutex_unlock(&m->lock);
	if (m->zc_ro && kernel_path(c) && !zerocopy_on(c, errp))
		return false;
	return send_hello(c, KTM_FF_RESUME, errp);
}

/* Before a chunk: stay under the key-usage limit, by KeyUpdate where the
 * session can, else on a fresh connection. */
static bool respect_key_limit(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	uint64_t limit = m->key_limit ? m->key_limit :
			 ktm_default_key_limit(ktm_session_cipher(c->s));
	/* this chunk, and on io_uring the ones not sent yet */
	uint64_t need = (KTM_CHUNK_SIZE / KTM_KTLS_MAX_RECORD + 4) *
			(1 + uring_unsent(c));

	if (!limit || ktm_session_key_records(c->s, KTM_DIR_TX) + need <= limit)
		return true;
	if (!uring_drain(c, errp))
		return false;
	/* io_uring goes on in a fresh session instead: in the 7.3 guest,
	 * with a KeyUpdate before every chunk, its last send (short, after
	 * a TX key change) never completed and the channel stopped at the
	 * I/O timeout, where sendfile with the same key changes did not
	 * (tests/session/migrate.c, key_limit_tls13_io_uring with a 70-record
	 * limit); a reconnect per key costs one handshake per 2^24.5 records
	 * (about 380 GiB) */
	if (ktm_session_can_rekey(c->s) && !c->ring_ok) {
		/* flush so the KeyUpdate follows the records it closes */
		return (kernel_path(c) || stage_flush(c, errp)) &&
		       ktm_session_rekey(c->s, errp);
	}
	return key_reconnect(c, errp);
}

/* Wait for the destination's answer to a HELLO (a reconnection's comes
 * once the destination has read the old session) within the I/O
 * timeout, or a cancel; false with *errp for either. */
static bool await_answer(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct pollfd p[2] = { { .fd = ktm_session_fd(c->s), .events = POLLIN },
			       { .fd = m->cancel_fd, .events = POLLIN } };
	int ret;

	if (ktm_session_readable(c->s))
		return true;
	do {
		ret = poll(p, 2, m->io_ms ? (int)m->io_ms : -1);
	} while (ret < 0 && errno == EINTR);
	if (ret > 0 && p[1].revents) {
		ktm_error_propagate(errp, ktm_mig_cancel_error(m));
		return false;
	}
	if (ret == 0) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT, "receiving from "
			      "%s:%s timed out: the destination did not answer "
			      "the HELLO within the I/O timeout", m->host,
			      m->port);
		return false;
	}
	return true;
}

static bool send_hello(struct ktm_chan *c, uint8_t flags,
		       struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_hello h = {
		.version = KTM_STREAM_VERSION,
		.features = KTM_FEAT_ZERO_PAGES | KTM_FEAT_PAGE_REQ,
		.channel = (uint16_t)c->idx,
		.nchannels = (uint16_t)m->nch,
		.page_size = KTM_PAGE_SIZE,
		.chunk_size = KTM_CHUNK_SIZE,
		.image_size = m->size,
		.first_chunk = c->next_chunk,
		.digest = m->digest,
	};
	struct ktm_frame f = { .type = KTM_F_HELLO, .flags = flags,
			       .len = KTM_HELLO_LEN };
	uint8_t body[KTM_HELLO_LEN];

	memcpy(h.stream_id, m->stream_id, sizeof(h.stream_id));
	ktm_hello_encode(&h, body);
	if (!ktm_mig_send_frame(c->s, &f, body, errp) ||
	    !await_answer(c, errp) ||
	    !ktm_mig_recv_frame(c->s, &f, "destination", errp))
		return false;
	if (f.type == KTM_F_HELLO_ACK) {
		const char *why = ktm_frame_problem(&f, h.features, m->size,
						    m->digest);

		if (!why && (f.aux & ~(uint64_t)h.features))
			why = "features the source did not offer";
		if (why)
			return ktm_mig_malformed(errp, "destination", c->idx,
						 why, &f);
		/* the same on every channel (the destination answers all) */
		m->features = (uint16_t)f.aux;
		return true;
	}
	if (f.type == KTM_F_ABORT)
		return peer_aborted(m, c->s, &f, errp);
	ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
		      "destination %s:%s refused the channel (frame type %u)",
		      m->host, m->port, f.type);
	return false;
}

/* One frame from the destination while sending: a page request is
 * served at once, progress is noted; *verdict is set for a VERDICT or
 * ABORT (with its text in @text), which only source_finish() expects. */
static bool return_frame(struct ktm_chan *c, struct ktm_frame *f,
			 char text[KTM_TEXT_MAX + 1], struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	const char *why;

	if (!ktm_mig_recv_frame(c->s, f, "destination", errp))
		return false;
	why = ktm_frame_problem(f, m->features, m->size, m->digest);
	if (!why && f->type != KTM_F_PAGE_REQ && f->type != KTM_F_PROGRESS &&
	    f->type != KTM_F_VERDICT && f->type != KTM_F_ABORT)
		why = "a frame type the destination does not send";
	if (why)
		return ktm_mig_malformed(errp, "destination", c->idx, why, f);
	text[0] = '\0';
	if (f->len && !ktm_mig_recv_exact(c->s, text, f->len, errp))
		return false;
	text[f->len] = '\0';
	return f->type != KTM_F_PAGE_REQ || serve_request(c, f, errp);
}

/* Channel 0, between chunks: whatever the destination sent so far. */
static bool serve_return_path(struct ktm_chan *c, struct ktm_error **errp)
{
	char text[KTM_TEXT_MAX + 1];
	struct ktm_frame f;

	while (ktm_session_readable(c->s)) {
		if (!return_frame(c, &f, text, errp))
			return false;
		if (f.type == KTM_F_ABORT)
			return aborted(c->m, &f, text, errp);
		if (f.type == KTM_F_VERDICT)
			return ktm_mig_malformed(errp, "destination", c->idx,
						 "a verdict before the image end",
						 &f);
	}
	return true;
}

/* The end of a channel: what is in flight, then CHANNEL_END. */
static bool end_channel(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_frame f = { .type = KTM_F_CHANNEL_END, .aux = c->payload };

	if (!uring_drain(c, errp) || (!kernel_path(c) && !stage_flush(c, errp)) ||
	    !ktm_mig_send_frame(c->s, &f, NULL, errp))
		return false;
	c->wire += KTM_FRAME_LEN;
	return !c->idx || ktm_session_shutdown(c->s, errp);
}

static void *source_channel(void *arg)
{
	struct ktm_chan *c = arg;
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;

	for (; c->next_chunk < m->nchunks; c->next_chunk += m->nch) {
		if (ktm_mig_failed(m))
			goto stop;
		if (!respect_key_limit(c, &err) ||
		    (c->idx == 0 && !serve_return_path(c, &err)) ||
		    !send_chunk(c, c->next_chunk, &err))
			goto err;
	}
	if (end_channel(c, &err))
		goto out;
err:
	ktm_mig_fail_chan(m, c->idx, err);
	uring_drain(c, NULL);	/* in flight: ends at the latest at TCP_USER_TIMEOUT */
	goto out;
stop:
	/* another channel failed, or a cancel: leave the stream at a frame
	 * boundary, so channel 0 can still carry the ABORT (on io_uring that
	 * means sending again what a short send left of a chunk, as on any
	 * other day: a drain that only waited left half a frame) */
	if (uring_drain(c, &err) && !kernel_path(c))
		stage_flush(c, NULL);
	ktm_error_free(err);
out:
	ktm_mig_channel_exit(m);
	return NULL;
}

static bool chan_prepare(struct ktm_chan *c, struct ktm_error **errp)
{
	c->pipe[0] = c->pipe[1] = -1;
	if (!ktm_hash_init(&c->hash, c->m->digest, errp))
		return false;
	if (!kernel_path(c)) {
		c->stage = malloc(KTM_STAGE_LEN);
		if (!c->stage) {
			ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
				      "out of memory for channel %u", c->idx);
			return false;
		}
		return true;
	}
	if (c->m->send_path == KTM_SEND_SPLICE && pipe2(c->pipe, O_CLOEXEC)) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "pipe for splice: %s",
			      strerror(errno));
		return false;
	}
	if (c->m->send_path == KTM_SEND_IO_URING) {
		int ret = io_uring_queue_init(KTM_URING_SLOTS, &c->ring, 0);

		c->slots = calloc(KTM_URING_SLOTS, sizeof(*c->slots));
		if (!c->slots)
			ret = -ENOMEM;
		if (ret) {
			ktm_error_set(errp, KTM_ERR_IO, -ret,
				      "io_uring for channel %u: %s", c->idx,
				      strerror(-ret));
			return false;
		}
		c->ring_ok = true;
	}
	return !c->m->zc_ro || zerocopy_on(c, errp);
}

/* One channel up: connected, tuned, HELLO answered; false with *errp
 * naming the channel (or the cancel). */
static bool source_connect(struct ktm_chan *c, struct ktm_error **errp)
{
	struct ktm_migration *m = c->m;
	struct ktm_error *err = NULL;

	c->s = dest_session(m, &err);
	if (c->s && chan_prepare(c, &err) && send_hello(c, 0, &err))
		return true;
	if (ktm_mig_cancelled(m)) {
		ktm_error_free(err);
		ktm_error_propagate(errp, ktm_mig_cancel_error(m));
		return false;
	}
	ktm_error_propagate(errp, ktm_mig_chan_error(m, c->idx, err));
	return false;
}

static const char *send_path_name(const struct ktm_migration *m)
{
	if (m->path[0] == KTM_PATH_USERSPACE)
		return "userspace";
	switch (m->send_path) {
	case KTM_SEND_AUTO:
	case KTM_SEND_SENDFILE:
		return "sendfile";
	case KTM_SEND_SPLICE:
		return "splice";
	case KTM_SEND_IO_URING:
		return "io_uring";
	case KTM_SEND_WRITEV:
		return "writev";
	}
	return "?";
}

/* A connection broke (a peer error that is not the destination's own
 * stop): look for the destination's ABORT on @s for a second and make
 * its reason *errp. */
static void find_peer_reason(struct ktm_migration *m, struct ktm_session *s,
			     struct ktm_error **errp)
{
	struct ktm_error *why = NULL;
	struct ktm_frame f;
	struct timeval tv = { .tv_sec = 1 };
	int i;

	/* not after a timeout: a frozen destination says nothing more */
	if (errp && *errp && ktm_error_class(*errp) == KTM_ERR_PEER &&
	    ktm_error_errno(*errp) != ETIMEDOUT &&
	    !ktm_error_peer_stop(*errp)) {
		setsockopt(ktm_session_fd(s), SOL_SOCKET, SO_RCVTIMEO, &tv,
			   sizeof(tv));
		for (i = 0; i < 64; i++) {
			if (!ktm_mig_recv_frame(s, &f, "destination", NULL) ||
			    (f.type != KTM_F_PROGRESS && f.type != KTM_F_ABORT))
				break;
			if (f.type == KTM_F_ABORT) {
				peer_aborted(m, s, &f, &why);
				ktm_error_free(*errp);
				*errp = why;
				break;
			}
		}
	}
}

/* The verdict did not arrive: the destination may or may not have
 * committed.  Say so, and how to find out. */
static bool verdict_lost(struct ktm_migration *m, struct ktm_error *cause,
			 struct ktm_error **errp)
{
	const char *why = ktm_error_message(cause);
	char ms[32] = "";

	if (strstr(why, "the I/O timeout"))
		snprintf(ms, sizeof(ms), " of %u ms", m->io_ms);
	ktm_error_set(errp, KTM_ERR_PEER, ktm_error_errno(cause),
		      "channel 0: the verdict of destination %s:%s was lost "
		      "(%s%s): the outcome is unknown", m->host, m->port, why, ms);
	ktm_error_hint_set(errp, "the whole image and its digest were sent; "
			   "the destination's own exit status and report say "
			   "whether it committed (the image exists there only "
			   "if the digest matched)");
	ktm_error_free(cause);
	return false;
}

/* Channel 0 after all channels: the digest, then the verdict; page
 * requests still arriving are served while waiting for it. */
static bool source_finish(struct ktm_migration *m, struct ktm_error **errp)
{
	struct ktm_chan *c = &m->ch[0];
	uint8_t digest[KTM_DIGEST_LEN];
	char text[KTM_TEXT_MAX + 1];
	struct ktm_frame f = { .type = KTM_F_IMAGE_END,
			       .len = ktm_digest_len(m->digest), .aux = m->size };
	struct ktm_error *err = NULL;
	double t = ktm_now_s();
	bool ok;

	ktm_mig_image_digest(m, digest);
	ktm_mig_lap(c, KTM_PHASE_HASH, &t);
	if (!ktm_mig_send_frame(c->s, &f, digest, &err)) {
		/* a destination that stopped before the image end said why */
		find_peer_reason(m, c->s, &err);
		ktm_error_propagate(errp, ktm_mig_chan_error(m, 0, err));
		return false;
	}
	do {
		if (!return_frame(c, &f, text, &err)) {
			if (ktm_error_errno(err) == EBADMSG) {	/* malformed */
				ktm_error_propagate(errp, err);
				return false;
			}
			return verdict_lost(m, err, errp);
		}
	} while (f.type == KTM_F_PAGE_REQ || f.type == KTM_F_PROGRESS);
	if (f.type == KTM_F_ABORT)
		return aborted(m, &f, text, errp);
	if (f.aux) {
		ktm_error_set(errp, KTM_ERR_PEER, f.aux < 4096 ? (int)f.aux : EIO,
			      "destination %s:%s rejected the image: %s",
			      m->host, m->port, text);
		return false;
	}
	m->digest_ok = true;
	ok = ktm_session_shutdown(c->s, errp);
	ktm_mig_lap(c, KTM_PHASE_FINISH, &t);
	return ok;
}

/*
 * After a failure: when a connection broke, the destination may have
 * said why on channel 0 before it closed (ABORT): look for it briefly.
 * Then tell the destination our reason and close without a reset.
 */
static void source_fail_end(struct ktm_migration *m, struct ktm_error **errp)
{
	struct ktm_session *s = m->ch[0].s;

	if (!s)
		return;
	find_peer_reason(m, s, errp);
	/* the destination that said why waits for our close: no drain */
	if (errp && *errp && !m->peer_aborted)
		ktm_mig_send_abort(s, *errp);
	ktm_mig_close_gently(s, m->peer_aborted || m->cut || (errp && *errp &&
			     ktm_error_errno(*errp) == ETIMEDOUT) ? 0 :
			     ktm_mig_cancelled(m) ? 500 : 1000);
	m->ch[0].s = NULL;
}

/* ktm_migration_send(): the image is a non-empty regular file of whole
 * pages; its size in @st. */
static bool image_size(int image_fd, struct stat *st, struct ktm_error **errp)
{
	if (fstat(image_fd, st) || !S_ISREG(st->st_mode) || !st->st_size ||
	    st->st_size % KTM_PAGE_SIZE) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "the image must be a non-empty regular file whose "
			      "size is a multiple of %u bytes (size %lld)",
			      KTM_PAGE_SIZE, (long long)st->st_size);
		return false;
	}
	return true;
}

/* ktm_migration_send(): map the image (@st its size), find its data
 * extents and fault their page tables in. */
static bool image_map(struct ktm_migration *m, const struct stat *st,
		      int image_fd, struct ktm_error **errp)
{
	unsigned int i;

	m->size = (uint64_t)st->st_size;
	m->nchunks = ktm_chunk_count(m->size);
	m->digest = m->digest_alg ? m->digest_alg : KTM_DIG_XXH3_128;
	m->chunk_digest = calloc(m->nchunks, KTM_DIGEST_LEN);
	/* no MAP_POPULATE: it would read (and on shmem allocate) the holes
	 * that scan_range() skips; data pages fault in with fault-around */
	m->map = mmap(NULL, m->size, PROT_READ, MAP_SHARED, image_fd, 0);
	if (!m->chunk_digest || m->map == MAP_FAILED) {
		ktm_error_set(errp, KTM_ERR_IO, errno ? errno : ENOMEM,
			      "cannot map the image (%llu bytes): %s",
			      (unsigned long long)m->size, strerror(errno));
		m->map = NULL;
		return false;
	}
	madvise(m->map, m->size, MADV_SEQUENTIAL);
	map_extents(m);
	/* page tables for the data in one call per extent, not a fault per
	 * 64 KiB; holes stay unread (a kernel before 5.14 just faults) */
	for (i = 0; m->data && i < m->ndata; i++)
		madvise(m->map + m->data[i].off, m->data[i].end - m->data[i].off,
			MADV_POPULATE_READ);
	return true;
}

/* ktm_migration_send(): connect every channel (HELLO, handshake); a
 * cancel cuts the one connecting short. */
static bool channels_connect(struct ktm_migration *m, struct ktm_error **errp)
{
	bool ok = true;
	unsigned int i;

	for (i = 0; i < m->nch && ok; i++) {
		struct ktm_chan *c = &m->ch[i];

		c->m = m;
		c->idx = i;
		c->next_chunk = i;
		c->pipe[0] = c->pipe[1] = -1;
		ok = source_connect(c, errp);
		if (ok)
			ktm_mig_note_session(m, i, c->s);
	}
	return ok;
}

/* ktm_migration_send(): one thread per channel; a thread that cannot start
 * fails the migration. */
static void channels_start(struct ktm_migration *m)
{
	struct ktm_error *err = NULL;
	unsigned int i;

	for (i = 0; i < m->nch; i++) {
		if (ktm_mig_thread_start(&m->ch[i].thr, source_channel, &m->ch[i])) {
			m->running -= m->nch - i;
			ktm_error_set(&err, KTM_ERR_INTERNAL, EAGAIN,
				      "cannot start channel %u", i);
			ktm_mig_fail(m, err);
			break;
		}
		m->ch[i].started = true;
	}
}

/* ktm_migration_send(): count each channel's bytes and release it. */
static void channels_release(struct ktm_migration *m)
{
	unsigned int i;

	for (i = 0; i < m->nch; i++) {
		if (m->ch[i].s)
			ktm_mig_session_totals(m, m->ch[i].s, KTM_DIR_TX);
		ktm_mig_chan_release(&m->ch[i]);
	}
}

/* ktm_migration_send(): unmap the image, free its extents. */
static void image_unmap(struct ktm_migration *m)
{
	if (m->map)
		munmap(m->map, m->size);
	m->map = NULL;
	free(m->data);
	m->data = NULL;
}

bool ktm_migration_send(struct ktm_migration *m, const char *host,
			const char *port, int image_fd, struct ktm_error **errp)
{
	struct ktm_error *err = NULL;
	double t0 = ktm_now_s();
	struct stat st;
	bool ok = false;

	m->sending = true;
	m->host = host;
	m->port = port;
	m->img_fd = image_fd;
	if (!image_size(image_fd, &st, errp))
		return false;
	if (!image_map(m, &st, image_fd, errp))
		goto out_free;
	RAND_bytes(m->stream_id, sizeof(m->stream_id));

	if (!channels_connect(m, &err))
		goto out_fail;
	m->path_name = send_path_name(m);
	m->running = m->nch;
	channels_start(m);
	ktm_mig_wait_channels(m);
	if (ktm_mig_failed(m)) {
		err = m->err;
		m->err = NULL;
		goto out_fail;
	}
	ok = source_finish(m, errp);
	goto out_release;
out_fail:
	source_fail_end(m, &err);
	ktm_error_propagate(errp, err);
out_release:
	channels_release(m);
out_free:
	image_unmap(m);
	ktm_mig_finish(m, t0, ok);
	return ok;
}

