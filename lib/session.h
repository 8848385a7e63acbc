/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the session object, shared by handshake.c (which makes
 * it) and session.c (data, rekey, status).  handshake.c calls into
 * session.c, never the other way.
 */
#ifndef KTM_SESSION_H
#define KTM_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "ktls.h"
#include "tls.h"

/* Where the handshake is (ktm_session_handshake()). */
enum hs_state {
	HS_TLS,		/* OpenSSL's handshake */
	HS_LINGER,	/* we refused the peer: let our alert reach it */
	HS_HOOK,	/* the check hook runs */
	HS_DONE,
	HS_FAILED,
};

struct ktm_session {
	const struct ktm_config *cfg;	/* borrowed: outlives the session */
	int fd;
	bool owns_fd;			/* else the caller's (ktm_session_start) */
	int nodelay;			/* TCP_NODELAY before the handshake */
	/* the handshake, until done */
	enum hs_state state;
	short want;			/* HS_TLS: POLLIN or POLLOUT */
	uint64_t deadline;		/* HS_TLS, HS_LINGER: monotonic ms */
	struct ktm_hs *hs;		/* HS_TLS only */
	struct ktm_hook_run *hook;	/* HS_HOOK only */
	struct ktm_error *pending;	/* HS_LINGER: the error to report */
	SSL_CTX *ctx;			/* userspace path only */
	SSL *ssl;			/* userspace path only */
	enum ktm_path path[2];
	char fallback_reason[256];
	uint16_t version;
	enum ktm_cipher cipher;
	char peer[300];			/* "host:port" for messages */
	char subject[KTM_ID_SUBJECT_MAX], sans[KTM_ID_SANS_MAX];
	char issuer[KTM_ID_SUBJECT_MAX];
	char cert_sha256[65], spki_sha256[65];
	uint64_t bytes[2];
	uint64_t records[2];		/* userspace path, current key */
	uint64_t seq0[2];		/* kernel path: rec_seq at the last key */
	uint64_t old_records[2];	/* records under earlier keys */
	bool shut, peer_closed;
	/* TLS 1.3 on the kernel path: the current traffic secrets, kept
	 * for KeyUpdate (the next key derives from the last secret, and
	 * OpenSSL is gone by then).  Wiped in ktm_session_free(). */
	uint8_t secret[2][KTM_SECRET_MAX];
	size_t secret_len;
	char digest[32];
	bool kernel_rekey;		/* this kernel replaces keys in place */
	bool rx_no_pad;			/* TLS_RX_EXPECT_NO_PAD took */
	unsigned int rekeys[2];
	/* The peer asked for our KeyUpdate (update_requested): owed before
	 * our next record, sent by whichever thread sends (RFC 8446 §4.6.3).
	 * Set by the receiving thread, cleared by the sending one. */
	int tx_update_owed;
	/* ETIMEDOUT that a call on this session saw (the kernel gave up on
	 * the connection and that call took the socket error): a later end
	 * of file is that timeout */
	int timed_out;
};

/* The keys of @k into the kernel for @dir: 0 or -errno. */
int ktm_sess_install_dir(struct ktm_session *s, enum ktm_ktls_dir dir,
			 const struct ktm_dir_keys *k);
/* The kernel's rec_seq of @dir, or -errno. */
int64_t ktm_sess_live_seq(const struct ktm_session *s, enum ktm_ktls_dir dir);
/* The handshake state is gone (wiped): after the TLS steps, or failure;
 * also the SSL's callbacks no longer see it. */
void ktm_sess_hs_drop(struct ktm_session *s);
/* An OpenSSL call on @s failed with @ret while @doing ("receiving from"):
 * *errp says why.  Always false. */
bool ktm_sess_ssl_failed(struct ktm_session *s, int ret, const char *doing,
			 struct ktm_error **errp);

#endif /* KTM_SESSION_H */
