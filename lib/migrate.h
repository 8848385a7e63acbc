/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/migrate*.c: the migration object, its channels, and the
 * helpers the source (migrate_send.c) and destination (migrate_recv.c)
 * share.  Threading rules are in migrate.c.
 */
#ifndef KTM_MIGRATE_H
#define KTM_MIGRATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <liburing.h>
#include <openssl/evp.h>
#include <xxhash.h>

#include "internal.h"
#include "stream.h"

#define KTM_MAX_CHANNELS 16
#define KTM_MAX_REQS 8
#define KTM_STAGE_LEN (256u << 10)	/* userspace path: 16 full records */
#define KTM_PROGRESS_EVERY (64ull << 20)
#define KTM_RECV_BUF (256u << 10)	/* destination: one read, one write */
#define KTM_CHUNK_PAGES (KTM_CHUNK_SIZE / KTM_PAGE_SIZE)
#define KTM_URING_DEPTH 4		/* io_uring: chunks per linked chain */
#define KTM_URING_SLOTS (2 * KTM_URING_DEPTH)	/* one chain sent, one made */
#define KTM_MAX_EXTENTS 65536		/* data extents mapped up front */

/* One streaming hash of the image digest's algorithm. */
struct ktm_hash {
	uint16_t alg;			/* KTM_DIG_* */
	XXH3_state_t *xxh;
	EVP_MD_CTX *md;
};

/* A chunk's runs as the source found them: PAGES or ZERO. */
struct ktm_run {
	uint32_t off, len;		/* within the chunk */
	bool zero;
};

/* io_uring path: one chunk's frames as one WRITEV of a chain. */
struct ktm_uring_slot {
	struct msghdr msg;		/* read by the kernel until completion */
	struct iovec iov[2 * KTM_CHUNK_PAGES];
	uint8_t hdr[KTM_CHUNK_PAGES][KTM_FRAME_LEN];
	size_t bytes;			/* still to send */
	int res;			/* its completion */
};

/* Destination: who may write into a chunk (lib/STREAM.md, "Requested
 * pages").  Guarded by the migration's lock. */
struct ktm_chunk_state {
	bool opened;			/* its channel started on it */
	bool dirty;			/* requested pages were written */
	uint16_t busy;			/* requested writes in progress */
};

struct ktm_chan {
	struct ktm_migration *m;
	unsigned int idx;
	struct ktm_session *s;
	pthread_t thr;
	bool started;
	uint64_t next_chunk;		/* the next chunk this channel moves */
	/* source */
	uint8_t *stage;			/* userspace path batching */
	size_t staged;
	struct io_uring ring;
	bool ring_ok;
	int pipe[2];
	uint64_t payload;		/* page bytes this channel sent */
	struct ktm_run runs[KTM_CHUNK_PAGES + 1];
	unsigned int nruns;
	struct ktm_uring_slot *slots;	/* io_uring path */
	unsigned int inflight, slot_next;	/* chain in flight; next slot */
	/* destination */
	uint64_t covered;		/* bytes of next_chunk seen so far */
	bool ended, chunk_dirty;
	struct ktm_session *resumed;	/* handed over by the acceptor, */
	uint64_t resumed_at;		/* its HELLO's first chunk */
	uint8_t *rbuf;			/* KTM_RECV_BUF */
	/* both: this channel's share of the report, folded at the end so
	 * no frame takes a lock; done is read by the progress loop */
	struct ktm_hash hash;
	uint64_t done, pages, zeros, wire;
	double phase[KTM_PHASE_COUNT];
};

struct ktm_migration {
	const struct ktm_config *cfg;
	unsigned int nch;
	enum ktm_send_path send_path;
	bool zc_ro;
	uint64_t key_limit;
	ktm_progress_fn progress;
	void *progress_opaque;
	unsigned int accept_ms;
	unsigned int io_ms;		/* --io-timeout */
	uint64_t max_image;		/* 0: the target's free space */
	bool force;
	ktm_log_fn log;
	void *log_opaque;
	struct { uint64_t off, len; } req[KTM_MAX_REQS];
	unsigned int nreq;
	uint16_t digest_alg;		/* KTM_DIG_*, 0 = the source's */

	/* the run */
	bool sending;
	const char *host, *port;
	int img_fd;
	uint64_t size, nchunks;
	uint8_t *map;
	uint8_t (*chunk_digest)[KTM_DIGEST_LEN];
	uint8_t stream_id[16];
	uint16_t features;		/* negotiated (HELLO_ACK) */
	uint16_t digest;		/* in use, KTM_DIG_* */
	/* source: where the image has data (SEEK_DATA/SEEK_HOLE), in
	 * order; none known = all data */
	struct ktm_extent { uint64_t off, end; } *data;
	size_t ndata;
	/* destination: page requests (channel 0's thread only) */
	struct ktm_chunk_state *chunks;
	unsigned int nreq_sent, req_next;
	uint64_t req_done;		/* bytes of req[req_next] served */
	bool image_end;
	uint8_t want[KTM_DIGEST_LEN];	/* the source's image digest */
	struct ktm_chan ch[KTM_MAX_CHANNELS];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int running;
	struct ktm_error *err;		/* the first failure */
	bool failed;
	bool peer_aborted;		/* the peer said why (ABORT): no drain */
	/* cancellation: ktm_migration_cancel() sets cancelled and makes
	 * cancel_fd readable for good; the first thread that sees it fails
	 * the migration (ktm_mig_failed) */
	bool cancelled;
	const char *cancel_by;
	int cancel_fd;			/* eventfd, never read */
	double cancel_at;		/* when the failure was recorded */
	bool cut;			/* the sockets were shut down */
	int wake_fd;			/* eventfd: the acceptor's wake-up */

	/* the report */
	uint64_t done, page_bytes, zero_bytes, wire_bytes;
	double seconds;
	unsigned int rekeys, reconnects, served;
	char digest_hex[2 * KTM_DIGEST_LEN + 1];
	bool digest_ok;
	double phase[KTM_PHASE_COUNT];
	enum ktm_path path[KTM_MAX_CHANNELS];
	char fallback[256];
	/* channel 0's verified peer, kept past the sessions */
	char peer_subject[512], peer_sans[1024], peer_issuer[512], peer_spki[72];
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
	const char *path_name;
};

/* Record the first failure (takes @err) and wake every channel. */
void ktm_mig_fail(struct ktm_migration *m, struct ktm_error *err);
/* Whether the migration failed or was cancelled; a cancel is recorded
 * as the failure here.  Not with the lock held. */
bool ktm_mig_failed(struct ktm_migration *m);
bool ktm_mig_cancelled(const struct ktm_migration *m);
/* The sentence of a cancelled migration (a new error). */
struct ktm_error *ktm_mig_cancel_error(const struct ktm_migration *m);
/* Wake the destination's accepting thread (a channel ended, a handshake
 * finished). */
void ktm_mig_wake(struct ktm_migration *m);
/* Read what woke the accepting thread. */
void ktm_mig_woken(struct ktm_migration *m);
/* pthread_create with SIGPIPE blocked in the new thread. */
int ktm_mig_thread_start(pthread_t *thr, void *(*fn)(void *), void *arg);
/* Like ktm_mig_fail, with "channel N: " in front of the message. */
void ktm_mig_fail_chan(struct ktm_migration *m, unsigned int idx,
		       struct ktm_error *err);
/* @err (taken) again with "channel @idx: " in front; a timeout names
 * the I/O timeout. */
struct ktm_error *ktm_mig_chan_error(const struct ktm_migration *m,
				     unsigned int idx, struct ktm_error *err);
/* The I/O timeout, TCP_USER_TIMEOUT and keepalive on a channel's socket. */
void ktm_mig_tune_socket(const struct ktm_migration *m, int fd);
/* ABORT with @err's errno and message (best effort). */
void ktm_mig_send_abort(struct ktm_session *s, const struct ktm_error *err);
/* Read an ABORT's text after its header into @text (NUL-terminated,
 * truncated to @len - 1 bytes). */
bool ktm_mig_recv_text(struct ktm_session *s, const struct ktm_frame *f,
		       char *text, size_t len, struct ktm_error **errp);
/* End a connection without a reset: close_notify, then read and drop
 * what the peer still sends until it closes or @ms pass, so an alert or
 * ABORT we sent is not swallowed by a RST.  Frees @s. */
void ktm_mig_close_gently(struct ktm_session *s, unsigned int ms);
/* Read and drop what arrives on @fd until the peer closes or @ms pass. */
void ktm_mig_drain(int fd, unsigned int ms);
/* Fold the channels' counters and phase times into the report. */
void ktm_mig_fold(struct ktm_migration *m);
/* Image bytes done so far over all channels (any thread). */
uint64_t ktm_mig_done(struct ktm_migration *m);
/* Add the seconds since *t to phase @p of channel @c; *t becomes now. */
void ktm_mig_lap(struct ktm_chan *c, enum ktm_phase p, double *t);
bool ktm_hash_init(struct ktm_hash *h, uint16_t alg, struct ktm_error **errp);
void ktm_hash_reset(struct ktm_hash *h);
void ktm_hash_update(struct ktm_hash *h, const void *p, size_t len);
void ktm_hash_zeros(struct ktm_hash *h, uint64_t len);
void ktm_hash_final(struct ktm_hash *h, uint8_t out[KTM_DIGEST_LEN]);
void ktm_hash_exit(struct ktm_hash *h);
/* Zeros for hashing and writing zero runs. */
extern const uint8_t ktm_zero_page[KTM_PAGE_SIZE];
bool ktm_mig_recv_exact(struct ktm_session *s, void *buf, size_t len,
			struct ktm_error **errp);
bool ktm_mig_send_frame(struct ktm_session *s, const struct ktm_frame *f,
			const void *payload, struct ktm_error **errp);
bool ktm_mig_recv_frame(struct ktm_session *s, struct ktm_frame *f,
			const char *peer_role, struct ktm_error **errp);
/* A frame the receiver must refuse: *errp gets the malformed-stream
 * sentence with @why. */
bool ktm_mig_malformed(struct ktm_error **errp, const char *peer_role,
		       unsigned int ch, const char *why,
		       const struct ktm_frame *f);

/*
 * The destination's handling of one decoded frame on channel @c, without
 * sockets: the payload comes from @rx (a session, or memory when fuzzing)
 * and lands in m->img_fd.  To drive it alone (tests/unit/dest_frame.c,
 * fuzz/dest_frames.c): ktm_migration_new(NULL, NULL);
 * ktm_dest_mem_prepare() (lib/migrate_mem.h: requests, a memfd image,
 * ktm_dest_prepare); ktm_dest_frame(&m->ch[0], ...) per frame with
 * ktm_mem_read; ktm_dest_mem_release(m), ktm_migration_free(m).
 * Frames must pass ktm_frame_decode() first, as on the wire.
 */
struct ktm_rx {
	bool (*read)(void *opaque, void *buf, size_t len,
		     struct ktm_error **errp);
	void *opaque;
};
enum ktm_dest_step {
	KTM_DEST_ERROR = -1,
	KTM_DEST_MORE,			/* read the next frame */
	KTM_DEST_DONE,			/* this channel is finished */
	KTM_DEST_RECONNECT,		/* the channel moves to a new connection */
};
enum ktm_dest_step ktm_dest_frame(struct ktm_chan *c,
				  const struct ktm_frame *f,
				  const struct ktm_rx *rx,
				  struct ktm_error **errp);
bool ktm_dest_prepare(struct ktm_migration *m, const struct ktm_hello *h,
		      struct ktm_error **errp);
/* Release what ktm_dest_prepare() and the channels allocated. */
void ktm_dest_release(struct ktm_migration *m);
void ktm_mig_image_digest(struct ktm_migration *m,
			  uint8_t out[KTM_DIGEST_LEN]);
void ktm_mig_note_session(struct ktm_migration *m, unsigned int i,
			  const struct ktm_session *s);
void ktm_mig_session_totals(struct ktm_migration *m,
			    const struct ktm_session *s, enum ktm_dir dir);
/* Wait for the channel threads, calling the progress callback. */
void ktm_mig_wait_channels(struct ktm_migration *m);
void ktm_mig_channel_exit(struct ktm_migration *m);
/* The end of send or recv: release the digest table, take the time, and
 * report 100 % when it succeeded. */
void ktm_mig_finish(struct ktm_migration *m, double t0, bool ok);
void ktm_mig_chan_release(struct ktm_chan *c);

#endif /* KTM_MIGRATE_H */
