// SPDX-License-Identifier: MIT
/*
 * ktls-migrate bench: the matrix as data (modes, ciphers) and the small
 * helpers every bench_*.c file shares.  Calls nothing in the other bench
 * files, so they all depend on it and it on none of them.
 */
#include <string.h>
#include <time.h>

#include "bench.h"

/* ---- the matrix as data ---------------------------------------------------- */

const struct bench_mode bench_modes[] = {
	{ "tcp-write", XP_TCP, SEND_WRITE, false,
	  "plaintext TCP, write(2) from the mapped memfd", false },
	{ "tcp-sendfile", XP_TCP, SEND_SENDFILE, false,
	  "plaintext TCP, sendfile(2) from the memfd", false },
	{ "tcp-splice", XP_TCP, SEND_SPLICE, false,
	  "plaintext TCP, splice(2) memfd -> pipe -> socket", false },
	{ "tcp-uring", XP_TCP, SEND_URING, false,
	  "plaintext TCP, io_uring: 8 linked SENDs (MSG_WAITALL) in "
	  "flight", false },
	{ "tcp-uring-write", XP_TCP, SEND_URING, false,
	  "plaintext TCP, io_uring: 8 linked WRITEs in flight, the "
	  "kernel-TLS way (a short one cancels the rest, resent in order)",
	  true },
	{ "tls-user", XP_TLS_USER, SEND_SESSION, false,
	  "userspace-TLS fallback: ktm session with --ktls=off "
	  "(ktm_session_send/recv, OpenSSL)", false },
	{ "ktls-write", XP_KTLS, SEND_WRITE, false,
	  "kernel TLS: write(2) on the ktm session fd", false },
	{ "ktls-sendfile", XP_KTLS, SEND_SENDFILE, false,
	  "kernel TLS: sendfile(2) on the ktm session fd", false },
	{ "ktls-splice", XP_KTLS, SEND_SPLICE, false,
	  "kernel TLS: splice(2) onto the ktm session fd", false },
	{ "ktls-uring", XP_KTLS, SEND_URING, false,
	  "kernel TLS: io_uring: 8 linked WRITEs in flight on the "
	  "session fd", false },
	{ "ktls-write-nopad", XP_KTLS, SEND_WRITE, true,
	  "ktls-write, receiver with TLS_RX_EXPECT_NO_PAD "
	  "(ktm_config_set_rx_no_pad, Linux 6.0+)", false },
	{ "ktls-sendfile-nopad", XP_KTLS, SEND_SENDFILE, true,
	  "ktls-sendfile, receiver with TLS_RX_EXPECT_NO_PAD "
	  "(ktm_config_set_rx_no_pad, Linux 6.0+)", false },
	{ "ktls-splice-nopad", XP_KTLS, SEND_SPLICE, true,
	  "ktls-splice, receiver with TLS_RX_EXPECT_NO_PAD "
	  "(ktm_config_set_rx_no_pad, Linux 6.0+)", false },
	{ "ktls-uring-nopad", XP_KTLS, SEND_URING, true,
	  "ktls-uring, receiver with TLS_RX_EXPECT_NO_PAD "
	  "(ktm_config_set_rx_no_pad, Linux 6.0+)", false },
	{ "openssl-ktls", XP_OPENSSL, SEND_SSL, false,
	  "peer: OpenSSL's own kTLS (SSL_OP_ENABLE_KTLS + SSL_sendfile; "
	  "SSL_write when OpenSSL did not enable kTLS), receiver SSL_read",
	  false },
	{ "tunnel", XP_TUNNEL, SEND_TUNNEL, false,
	  "2009 baseline: libvirt-style tunnel, 64 KiB chunks each waiting "
	  "for an empty reply, over the userspace-TLS session (one stream, "
	  "TCP_NODELAY)", false },
};
_Static_assert(sizeof(bench_modes) / sizeof(bench_modes[0]) == BENCH_NMODES,
	       "BENCH_NMODES must count bench_modes[]");

const struct bench_cipher bench_ciphers[] = {
	{ "aes-gcm-128", "aes-128-gcm", KTM_CIPHER_AES_GCM_128,
	  "TLS_AES_128_GCM_SHA256" },
	{ "aes-gcm-256", "aes-256-gcm", KTM_CIPHER_AES_GCM_256,
	  "TLS_AES_256_GCM_SHA384" },
	{ "chacha20-poly1305", "chacha20-poly1305",
	  KTM_CIPHER_CHACHA20_POLY1305, "TLS_CHACHA20_POLY1305_SHA256" },
};
_Static_assert(sizeof(bench_ciphers) / sizeof(bench_ciphers[0]) ==
	       BENCH_NCIPHERS, "BENCH_NCIPHERS must count bench_ciphers[]");

/* ---- small helpers ---------------------------------------------------------- */

void bench_copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;

	memcpy(dst, src, n);
	dst[n] = '\0';
}
