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
#include <liburing.h>

#include "internal.h"
#include "stream.h"

#define KTM_MAX_CHANNELS 16
#define KTM_MAX_REQS 8
#define KTM_STAGE_LEN (256u << 10)	/* userspace path: 16 full records */
#define KTM_PROGRESS_EVERY (64ull << 20)

struct ktm_chan {
	struct ktm_migration *m;
	unsigned int idx;
	struct ktm_session *s;
	pthread_t thr;
	bool started;
	uint64_t next_chunk;		/* the next chunk this channel moves */
	double last_io;			/* when a frame last moved (0: never) */
	/* source */
	uint8_t *stage;			/* userspace path batching */
	size_t staged;
	struct io_uring ring;
	bool ring_ok;
	int pipe[2];
	uint64_t payload;		/* page bytes this channel sent */
	/* destination */
	uint64_t covered;		/* bytes of next_chunk seen so far */
	bool ended;
	struct ktm_session *resumed;	/* handed over by the acceptor */
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

	/* the run */
	bool sending;
	const char *host, *port;
	int img_fd;
	uint64_t size, nchunks;
	uint8_t *map;
	uint8_t (*chunk_digest)[KTM_DIGEST_LEN];
	uint8_t stream_id[16];
	struct ktm_chan ch[KTM_MAX_CHANNELS];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int running;
	struct ktm_error *err;		/* the first failure */
	bool failed;
	bool peer_aborted;		/* the peer said why (ABORT): no drain */

	/* the report */
	uint64_t done, page_bytes, zero_bytes, wire_bytes;
	double seconds;
	unsigned int rekeys, reconnects, served;
	char digest_hex[2 * KTM_DIGEST_LEN + 1];
	bool digest_ok;
	enum ktm_path path[KTM_MAX_CHANNELS];
	char fallback[256];
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
	const char *path_name;
};

double ktm_mig_now_s(void);
/* Record the first failure (takes @err) and wake every channel. */
void ktm_mig_fail(struct ktm_migration *m, struct ktm_error *err);
bool ktm_mig_failed(struct ktm_migration *m);
/* pthread_create with SIGPIPE blocked in the new thread. */
int ktm_mig_thread_start(pthread_t *thr, void *(*fn)(void *), void *arg);
/* *counter += v under the lock. */
void ktm_mig_add(struct ktm_migration *m, uint64_t *counter, uint64_t v);
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
bool ktm_mig_recv_exact(struct ktm_session *s, void *buf, size_t len,
			struct ktm_error **errp);
bool ktm_mig_send_frame(struct ktm_session *s, const struct ktm_frame *f,
			const void *payload, struct ktm_error **errp);
bool ktm_mig_recv_frame(struct ktm_session *s, struct ktm_frame *f,
			const char *peer_role, struct ktm_error **errp);
void ktm_mig_hash_chunk(struct ktm_migration *m, uint64_t k);
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
