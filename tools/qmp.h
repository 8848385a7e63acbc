/* SPDX-License-Identifier: MIT */
/* The tool's QMP client (tools/qmp.c).  Not part of libktm. */
#ifndef KTM_TOOL_QMP_H
#define KTM_TOOL_QMP_H

#include "ktm.h"

/*
 * QMP (tools/qmp.c): the few commands that hand a migration socket to QEMU.
 *
 * Open QEMU's QMP unix socket @path, read the greeting and negotiate
 * (qmp_capabilities).  Every later read waits at most @timeout_ms (0: 30 s)
 * for QEMU.  Returns NULL with *errp (KTM_ERR_IO when the socket cannot be
 * reached, KTM_ERR_PEER when QEMU does not speak QMP).
 */
struct ktm_qmp;
struct ktm_qmp *ktm_qmp_open(const char *path, unsigned int timeout_ms,
			     struct ktm_error **errp);
/* Close the socket and free.  Accepts NULL. */
void ktm_qmp_close(struct ktm_qmp *q);
/*
 * Run one command, @command being its JSON object text
 * ({"execute": "...", "arguments": {...}}).  With @fd >= 0 the fd travels
 * with the command (SCM_RIGHTS; borrowed), as `getfd` needs.  Events that
 * arrive meanwhile are skipped.  Returns the "return" value as JSON text
 * (the caller frees it), or NULL with *errp: KTM_ERR_PEER carrying QEMU's
 * error description when QEMU refused, or when QEMU went away.
 */
char *ktm_qmp_execute(struct ktm_qmp *q, const char *command, int fd,
		      struct ktm_error **errp);
/*
 * Hand @fd (borrowed; close it afterwards) to QEMU as @name (`getfd`) and
 * start the migration on it: `migrate` with uri "fd:NAME" for
 * KTM_ENDPOINT_CLIENT (the source), `migrate-incoming` for
 * KTM_ENDPOINT_SERVER (the destination, which must have been started with
 * `-incoming defer`).  Returns true, or false with *errp.
 */
bool ktm_qmp_migrate_fd(struct ktm_qmp *q, enum ktm_endpoint endpoint,
			int fd, const char *name, struct ktm_error **errp);
/*
 * One `query-migrate`: QEMU's status into @status (@len bytes); 1 when it
 * is "completed" (@transferred, @total_ms as below), 0 while it is still
 * going, -1 with *errp when it is "failed" or "cancelled" or QMP failed.
 */
int ktm_qmp_migrate_poll(struct ktm_qmp *q, char *status, size_t len,
			 uint64_t *transferred, uint64_t *total_ms,
			 struct ktm_error **errp);
/*
 * Poll `query-migrate` every 50 ms until QEMU reports "completed" (true)
 * or "failed"/"cancelled" (false, *errp carrying QEMU's error-desc when it
 * gives one), for at most @timeout_ms (0: no limit).  On success
 * @transferred and @total_ms (either may be NULL) receive QEMU's
 * ram.transferred and total-time (0 where QEMU reports none, e.g. on the
 * destination).  A destination QEMU exits when an incoming migration
 * fails: that is reported as KTM_ERR_PEER.
 */
bool ktm_qmp_migrate_wait(struct ktm_qmp *q, unsigned int timeout_ms,
			  uint64_t *transferred, uint64_t *total_ms,
			  struct ktm_error **errp);

#endif /* KTM_TOOL_QMP_H */
