/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/proxy.c and lib/relay.c: the proxy, its connections, and
 * the byte pump between a plain socket and a session.
 */
#ifndef KTM_PROXY_H
#define KTM_PROXY_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <sys/un.h>

#include "internal.h"

/* Pipe size for splice: fewer, larger kernel round trips (the kernel caps
 * it at /proc/sys/fs/pipe-max-size, 1 MiB by default; a refusal keeps the
 * default 64 KiB). */
#define PIPE_BYTES (1 << 20)
/* Userspace path: bytes per read from QEMU and per write to it.  Every
 * ktm_session_recv() gets room for a full TLS record (TLS_RECORD_MAX), so
 * OpenSSL never holds decrypted bytes that poll() cannot see (it does not
 * read ahead). */
#define USER_BUF (256 * 1024)
#define TLS_RECORD_MAX 16384

struct addr {
	bool is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char host[256];		/* "" when not given (listen on every address) */
	char port[16];
	char text[300];		/* for messages: "unix:/p" or "host:port" */
};

struct ktm_proxy_conn {
	struct ktm_proxy *p;		/* NULL under ktm_proxy_relay() */
	unsigned int id;
	struct ktm_session *s;		/* owned; NULL when none was made */
	int local;			/* plain socket, owned; -1 when none */
	int tls;			/* ktm_session_fd(s), borrowed */
	char peer[300], local_name[300];
	uint64_t bytes[2];		/* each written by one thread only */
	struct timespec t0, t1;
	pthread_mutex_t lock;		/* err, aborted, closed */
	struct ktm_error *err;		/* the first failure */
	bool aborted;			/* a failure or stop cut the connection */
	bool closed;			/* fds closed: no more shutdown() on them */
	bool done;			/* under p->lock: the thread may be joined */
	bool fin_ok;			/* KTM_PEER_END_QEMU_TLS: FIN ends RX */
	bool peer_fin;			/* RX ended by a FIN, no close_notify */
	bool up_done;			/* under lock: our close_notify is sent */
	bool down_done;			/* under lock: the peer's direction ended */
	pthread_t thread;
	struct ktm_proxy_conn *next;
};

struct ktm_proxy {
	const struct ktm_config *cfg;	/* borrowed */
	bool source;			/* client config: plain listen, TLS connect */
	struct addr local, remote;
	int listen_fd;
	char address[300];		/* the listening address as bound */
	bool unlink_path;		/* we created local.path */
	int wake[2];			/* self-pipe: stop, or a connection ended */
	volatile sig_atomic_t stopping;
	enum ktm_peer_end peer_end;
	ktm_proxy_report_fn report;
	void *opaque;
	pthread_mutex_t lock;		/* conns, reports */
	struct ktm_proxy_conn *conns;
	unsigned int next_id;
};

/* "ip:port" of @fd's peer into @buf (proxy.c). */
void ktm_proxy_peer_text(int fd, char *buf, size_t len);
/* relay.c: one connection's life. */
void ktm_relay_conn_init(struct ktm_proxy_conn *c);
/* Record the first failure (takes @err) and cut the connection. */
void ktm_relay_conn_fail(struct ktm_proxy_conn *c, struct ktm_error *err);
/* Move bytes both ways until both directions ended or a failure. */
void ktm_relay_run(struct ktm_proxy_conn *c);
void ktm_relay_conn_finish(struct ktm_proxy_conn *c, ktm_proxy_report_fn report,
			void *opaque, pthread_mutex_t *report_lock);

#endif /* KTM_PROXY_H */
