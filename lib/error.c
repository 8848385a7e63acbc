// SPDX-License-Identifier: MIT
/*
 * The error object: class, errno, message, hint.  QEMU's Error rules:
 * set once, NULL errp ignores, the caller owns and frees.  Setting an
 * error over one already set is a programming error (the first cause
 * would be lost and leak): it aborts unless built with -DNDEBUG, as
 * QEMU's error_setv asserts.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct ktm_error {
	enum ktm_error_class cls;
	int err;
	char *msg;
	char *hint;
	bool peer_stop;		/* the peer said it stopped (ABORT) */
};

/* Returned when even the error cannot be allocated; never freed. */
static struct ktm_error ktm_error_nomem = {
	.cls = KTM_ERR_INTERNAL,
	.err = ENOMEM,
	.msg = (char *)"out of memory while reporting an error",
};

static char *vformat(const char *fmt, va_list ap) KTM_PRINTF(1, 0);

static char *vformat(const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

void ktm_error_set(struct ktm_error **errp, enum ktm_error_class cls,
		   int errnum, const char *fmt, ...)
{
	struct ktm_error *e;
	va_list ap;

	if (!errp)
		return;
	assert(*errp == NULL && "ktm_error_set: *errp is already set");
	e = calloc(1, sizeof(*e));
	if (!e) {
		*errp = &ktm_error_nomem;
		return;
	}
	va_start(ap, fmt);
	e->msg = vformat(fmt, ap);
	va_end(ap);
	if (!e->msg) {
		free(e);
		*errp = &ktm_error_nomem;
		return;
	}
	e->cls = cls;
	e->err = errnum < 0 ? -errnum : errnum;
	*errp = e;
}

void ktm_error_hint_set(struct ktm_error **errp, const char *fmt, ...)
{
	va_list ap;

	if (!errp || !*errp || *errp == &ktm_error_nomem)
		return;
	free((*errp)->hint);
	va_start(ap, fmt);
	(*errp)->hint = vformat(fmt, ap);
	va_end(ap);
}

void ktm_error_propagate(struct ktm_error **dst_errp, struct ktm_error *err)
{
	if (!err)
		return;
	if (!dst_errp) {
		ktm_error_free(err);
		return;
	}
	assert(*dst_errp == NULL && "ktm_error_propagate: *errp is already set");
	*dst_errp = err;
}

enum ktm_error_class ktm_error_class(const struct ktm_error *err)
{
	return err->cls;
}

int ktm_error_errno(const struct ktm_error *err)
{
	return err->err;
}

const char *ktm_error_message(const struct ktm_error *err)
{
	return err->msg;
}

const char *ktm_error_hint(const struct ktm_error *err)
{
	return err->hint;
}

void ktm_error_set_peer_stop(struct ktm_error *err)
{
	if (err && err != &ktm_error_nomem)
		err->peer_stop = true;
}

bool ktm_error_peer_stop(const struct ktm_error *err)
{
	return err && err->peer_stop;
}

void ktm_error_free(struct ktm_error *err)
{
	if (!err || err == &ktm_error_nomem)
		return;
	free(err->msg);
	free(err->hint);
	free(err);
}

const char *ktm_errno_name(int err, char buf[24])
{
	const char *name;

	if (err < 0)
		err = -err;
	name = strerrorname_np(err);
	if (name)
		return name;
	snprintf(buf, 24, "errno %d", err);
	return buf;
}
