/* SPDX-License-Identifier: MIT */
/*
 * A test peer for session tests: a server in a forked child on a loopback
 * port, reporting what happened through shared memory.  Test helpers use
 * the t_ prefix.
 */
#ifndef KTM_TEST_PEER_H
#define KTM_TEST_PEER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ktm.h"

/* What one side saw. */
struct t_outcome {
	bool done, ok;
	int cls, err;
	char msg[512], hint[512];
	int path_tx, path_rx;
	int version, cipher;
	char subject[256], sans[256], fallback[256];
	uint64_t bytes_rx, bytes_tx;
	char echoed[64];	/* what an echo server got first */
};

enum t_mode {
	T_NONE,		/* no server process (the test starts one later) */
	T_ECHO,		/* accept a session, echo until close_notify */
	T_ACCEPT,	/* accept a session, report, wait for the client to go */
	T_EARLY,	/* accept a session, send "early" at once, then echo */
	T_SILENT,	/* accept TCP, say nothing (handshake timeout) */
	T_HTTP,		/* accept TCP, answer like a web server */
};

struct t_server {
	pid_t pid;
	int lfd;
	char port[8];
	struct t_outcome *out;	/* shared with the child */
};

/* Listen on 127.0.0.1:0.  0 or -errno. */
int t_server_listen(struct t_server *srv);
/* Fork the server; @cfg is used in the child. */
int t_server_start(struct t_server *srv, const struct ktm_config *cfg,
		   enum t_mode mode);
/* Wait for the child (kill it after @timeout_s); its exit status. */
int t_server_wait(struct t_server *srv, int timeout_s);
void t_server_close(struct t_server *srv);

/* Record @s's status or @err's class/message into @o. */
void t_outcome_set(struct t_outcome *o, const struct ktm_session *s,
		   const struct ktm_error *err);

/* A configuration for @ep from @dir; NULL on error (printed). */
struct ktm_config *t_config(enum ktm_endpoint ep, const char *dir,
			    enum ktm_ktls_policy policy);

/* The byte at stream offset @i of the tests' plaintext streams. */
uint8_t t_pattern(uint64_t i);

/* A plain TCP listener on loopback standing for a destination QEMU: one
 * connection, counted and checked against t_pattern() to its end. */
struct t_sink {
	int lfd;
	pthread_t thread;
	uint64_t bytes;
	bool pattern_ok, eof;	/* eof: a FIN, not an error */
	char addr[64];		/* "127.0.0.1:PORT" */
};
int t_sink_start(struct t_sink *k);
/* Join the sink (an accept that never came is cut), close its listener. */
void t_sink_end(struct t_sink *k);

/* @len bytes (a multiple of 4) of xorshift32 words from @seed, in a new
 * buffer (free()); deterministic, so a failure reproduces. */
uint8_t *t_prng_bytes(size_t len, uint32_t seed);
/* @buf into a new file @path (0600): 0, or -1. */
int t_write_file(const char *path, const void *buf, size_t len);
/* t_prng_bytes() into a new file @path: 0, or -1. */
int t_prng_file(const char *path, size_t len, uint32_t seed);

/* Should sessions take the kernel path here?  KTLS_REQUIRE=1: yes, by
 * the tier's definition; else whether the kernel takes TCP_ULP "tls"
 * (asked directly, not through ktm_probe). */
bool t_kernel_has_ktls(void);
/* The booted kernel's release (uname -r) is at least MAJOR.MINOR. */
bool t_kernel_at_least(unsigned int major, unsigned int minor);
/* The tests' one rekey oracle, from the booted kernel's version (6.14
 * added key replacement on a live socket, docs/design.md §3), never from
 * the library: can the kernel rekey, and can a session of @v here (TLS
 * 1.3; userspace TLS always, the kernel path where the kernel can)? */
bool t_kernel_can_rekey(void);
bool t_session_can_rekey(enum ktm_tls_version v);

#endif /* KTM_TEST_PEER_H */
