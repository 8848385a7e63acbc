/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/relay.c: one relayed connection, the byte pump between a
 * plain socket and a session.  The accept loop that makes connections is
 * the tool's (tools/proxy.c), through ktm.h only.
 */
#ifndef KTM_RELAY_H
#define KTM_RELAY_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "internal.h"

/* Pipe size for splice: fewer, larger kernel round trips (the kernel caps
 * it at /proc/sys/fs/pipe-max-size, 1 MiB by default; a refusal keeps the
 * default 64 KiB). */
#define PIPE_BYTES (1 << 20)
/* Userspace path: bytes per read from QEMU and per write to it, and the
 * size of the buffer BIO each way (relay.c user_tune).  Every
 * ktm_session_recv() gets room for a full TLS record (TLS_RECORD_MAX), so
 * OpenSSL never holds decrypted bytes that poll() cannot see (it does not
 * read ahead; the raw bytes the buffer BIO holds are counted instead). */
#define USER_BUF (256 * 1024)
#define TLS_RECORD_MAX 16384

struct ktm_proxy_conn {
	unsigned int id;
	struct ktm_session *s;		/* owned; NULL when none was made */
	int local;			/* plain socket, owned; -1 when none */
	int tls;			/* ktm_session_fd(s), borrowed */
	char peer[300], local_name[300];
	uint64_t bytes[2];		/* each written by one thread only */
	double t0, t1;			/* ktm_now_s(); t1 0 until finished */
	pthread_mutex_t lock;		/* err, aborted, closed */
	struct ktm_error *err;		/* the first failure */
	bool aborted;			/* a failure or stop cut the connection */
	bool closed;			/* fds closed: no more shutdown() on them */
	bool fin_ok;			/* KTM_PEER_END_QEMU_TLS: FIN ends RX */
	bool peer_fin;			/* RX ended by a FIN, no close_notify */
	bool up_done;			/* under lock: our close_notify is sent */
	bool down_done;			/* under lock: the peer's direction ended */
	bool wbuf;			/* userspace: records sent in batches */
	bool rbuf;			/* userspace: reads through a buffer */
	/* userspace, QEMU-TLS peer: QEMU closed its side while the peer's
	 * last bytes came (its migration over): they are dropped until the
	 * peer's FIN, for a while (local_gone_first) */
	double local_gone;		/* ktm_now_s() then; 0: not */
	int local_err;			/* what writing to QEMU got */
	/* the same for the QEMU-TLS peer closing first while we send: what
	 * our QEMU still sends is dropped until its EOF */
	double peer_gone;
	struct ktm_error *peer_err;	/* what sending to it got */
};

#endif /* KTM_RELAY_H */
