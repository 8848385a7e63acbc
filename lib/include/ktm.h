/* SPDX-License-Identifier: MIT */
/*
 * ktls-migrate: encrypted VM migration through Linux kernel TLS.
 *
 * The only installed header of libktm.  Every type is opaque; callers pass
 * file descriptors, paths, host names and the plain enums below.  No kernel,
 * OpenSSL or libnl type appears here.
 *
 * Error convention (all calls that can fail): the last parameter is
 * `struct ktm_error **errp`.  It may be NULL.  On success it is left
 * untouched; on failure it is set exactly once to an error the caller owns
 * and releases with ktm_error_free().  The return value alone tells success:
 * true, a non-NULL pointer, or a non-negative number.
 *
 * Threads: objects are not shared between threads unless a function says so.
 */
#ifndef KTM_H
#define KTM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KTM_VERSION_MAJOR 0
#define KTM_VERSION_MINOR 1
#define KTM_VERSION_PATCH 0
#define KTM_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

struct ktm_error;

/* What kind of failure; callers branch on this and on the errno, never on
 * the message text. */
enum ktm_error_class {
	KTM_ERR_CONFIG = 1,	/* bad input: a path, a key, an option */
	KTM_ERR_TLS_VERIFY,	/* the peer's certificate was rejected */
	KTM_ERR_TLS_PROTOCOL,	/* the handshake or a record failed */
	KTM_ERR_KTLS_UNSUPPORTED, /* this kernel lacks tls or the cipher */
	KTM_ERR_KTLS_INSTALL,	/* the kernel refused keys it should take */
	KTM_ERR_IO,		/* a system call failed */
	KTM_ERR_PEER,		/* the peer went away or vetoed */
	KTM_ERR_INTERNAL,	/* a bug in ktls-migrate */
};

enum ktm_error_class ktm_error_class(const struct ktm_error *err);
/* The OS errno behind the failure, or 0. */
int ktm_error_errno(const struct ktm_error *err);
/* One phrase naming the object and value, no trailing newline.  Owned by
 * the error. */
const char *ktm_error_message(const struct ktm_error *err);
/* What the user can do about it, or NULL.  Owned by the error. */
const char *ktm_error_hint(const struct ktm_error *err);
/* Accepts NULL. */
void ktm_error_free(struct ktm_error *err);

/* ------------------------------------------------------------------ */
/* TLS versions and ciphers                                            */
/* ------------------------------------------------------------------ */

enum ktm_tls_version {
	KTM_TLS_1_2 = 0x0303,
	KTM_TLS_1_3 = 0x0304,
};

/* The AEAD ciphers kernel TLS can take (the rows of ktls/ciphers.def). */
enum ktm_cipher {
	KTM_CIPHER_AES_GCM_128 = 1,
	KTM_CIPHER_AES_GCM_256,
	KTM_CIPHER_AES_CCM_128,
	KTM_CIPHER_CHACHA20_POLY1305,
};
#define KTM_CIPHER_COUNT 4

/* "AES-GCM-128", ...; "TLS 1.3", ...; NULL for a value out of range. */
const char *ktm_cipher_name(enum ktm_cipher cipher);
const char *ktm_tls_version_name(enum ktm_tls_version version);

/* ------------------------------------------------------------------ */
/* Probe: what this host's kernel can do                               */
/* ------------------------------------------------------------------ */

struct ktm_probe;

enum ktm_support {
	KTM_SUPPORTED = 0,
	KTM_UNSUPPORTED,	/* the kernel lacks it; the reason says what */
	KTM_PROBE_FAILED,	/* the probe itself failed; the reason says how */
};

/*
 * Probe kernel TLS on this host: attach the "tls" ULP to a throwaway
 * loopback TCP connection, then try every TLS version x cipher for send
 * and receive on fresh connections, check rekey support (from the kernel's
 * TLS counters; a live session is never touched) and io_uring.
 *
 * Needs no privileges.  Takes well under a second.  Returns NULL only when
 * the probe could not run at all (no loopback, no memory), with *errp set.
 */
struct ktm_probe *ktm_probe_new(struct ktm_error **errp);
void ktm_probe_free(struct ktm_probe *probe);

/* Kernel release (uname -r).  Owned by the probe. */
const char *ktm_probe_kernel(const struct ktm_probe *probe);

/*
 * Each query returns the support level and, through *reason (may be NULL),
 * one phrase saying why, e.g. "the kernel has no \"tls\" TCP ULP
 * (TCP_ULP: ENOENT)"; for KTM_SUPPORTED a short description.  With a
 * non-NULL *hint the remedy, or NULL.  Strings are owned by the probe.
 */
enum ktm_support ktm_probe_ktls(const struct ktm_probe *probe,
				const char **reason, const char **hint);
enum ktm_support ktm_probe_cipher(const struct ktm_probe *probe,
				  enum ktm_tls_version version,
				  enum ktm_cipher cipher, const char **reason);
enum ktm_support ktm_probe_rekey(const struct ktm_probe *probe,
				 const char **reason);
enum ktm_support ktm_probe_io_uring(const struct ktm_probe *probe,
				    const char **reason);

#ifdef __cplusplus
}
#endif

#endif /* KTM_H */
