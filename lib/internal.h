/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/: the error setter and small helpers shared by the
 * library's files.  Never installed.
 */
#ifndef KTM_INTERNAL_H
#define KTM_INTERNAL_H

#include <stdarg.h>

#include "ktm.h"

#define KTM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/*
 * Set *errp (when errp is not NULL) to a new error of @cls with the OS
 * errno @errnum (0 for none) and a message from @fmt.  The message is one
 * phrase naming the object and value, without trailing period or newline.
 * *errp must be NULL: an error is set exactly once.
 */
void ktm_error_set(struct ktm_error **errp, enum ktm_error_class cls,
		   int errnum, const char *fmt, ...) KTM_PRINTF(4, 5);
/* Attach the remedy to an error just set; no-op when errp is NULL. */
void ktm_error_hint_set(struct ktm_error **errp, const char *fmt, ...)
	KTM_PRINTF(2, 3);

/* "ENOENT" for ENOENT (positive or negative); "errno 1234" when unknown.
 * The returned string is static or lives in @buf. */
const char *ktm_errno_name(int err, char buf[24]);

/* A connected loopback TCP pair (IPv4): fds[0] connected, fds[1]
 * accepted.  Both close-on-exec.  0 or -errno; nothing left open on
 * failure.  Used by the probe and by the tests. */
int ktm_net_tcp_pair(int fds[2]);

#endif /* KTM_INTERNAL_H */
