// SPDX-License-Identifier: MIT
/*
 * A minimal QMP client: enough to hand QEMU a migration socket (`getfd`
 * with SCM_RIGHTS, `migrate`/`migrate-incoming` with "fd:NAME") and follow
 * the migration (`query-migrate`).  QEMU sends one JSON object per line
 * (docs/interop/qmp-spec); we only look members up, so the JSON reader
 * below skips values rather than building them.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qmp.h"
#include "tool.h"

#define QMP_DEFAULT_TIMEOUT_MS 30000
#define QMP_MAX_LINE (1 << 20)

struct ktm_qmp {
	int fd;
	char path[108];
	unsigned int timeout_ms;
	char *buf;		/* bytes read, not yet consumed */
	size_t len, cap;
};

/* ---- reading JSON ------------------------------------------------------------ */

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

static const char *skip_value(const char *p, int depth);

/* After the string opening at @p (a '"'), or NULL when unterminated. */
static const char *skip_string(const char *p)
{
	for (p++; *p && *p != '"'; p++)
		if (*p == '\\' && !*++p)
			return NULL;
	return *p ? p + 1 : NULL;
}

/* After the object or array opening at @p, or NULL when malformed. */
static const char *skip_container(const char *p, int depth)
{
	char close = *p == '{' ? '}' : ']';

	p = ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			p = skip_value(p, depth + 1);	/* key */
			if (!p || *(p = ws(p)) != ':')
				return NULL;
			p++;
		}
		p = skip_value(p, depth + 1);
		if (!p)
			return NULL;
		p = ws(p);
		if (*p == close)
			return p + 1;
		if (*p != ',')
			return NULL;
		p++;
	}
}

/* The first byte after the JSON value at @p, or NULL when malformed. */
static const char *skip_value(const char *p, int depth)
{
	p = ws(p);
	if (depth > 64)
		return NULL;
	if (*p == '"')
		return skip_string(p);
	if (*p == '{' || *p == '[')
		return skip_container(p, depth);
	if (!*p || strchr(",:]}", *p))
		return NULL;
	while (*p && !strchr(" \t\r\n,:]}", *p))
		p++;
	return p;
}

/* The value of member @key of the object at @obj (start and end), or
 * NULL. */
static const char *member(const char *obj, const char *key, const char **end)
{
	size_t kl = strlen(key);
	const char *p = ws(obj), *k, *v;

	if (*p != '{')
		return NULL;
	p = ws(p + 1);
	while (*p == '"') {
		k = p + 1;
		p = skip_value(p, 0);
		if (!p || *(p = ws(p)) != ':')
			return NULL;
		v = ws(p + 1);
		p = skip_value(v, 0);
		if (!p)
			return NULL;
		if ((size_t)(strchr(k, '"') - k) == kl &&
		    !strncmp(k, key, kl)) {
			if (end)
				*end = p;
			return v;
		}
		p = ws(p);
		if (*p != ',')
			return NULL;
		p = ws(p + 1);
	}
	return NULL;
}

/* The string value at @v, unescaped into @out ("" when not a string). */
static void string_value(const char *v, char *out, size_t len)
{
	size_t n = 0;

	if (!v || *v != '"' || !len) {
		if (len)
			out[0] = '\0';
		return;
	}
	for (v++; *v && *v != '"' && n + 1 < len; v++) {
		char c = *v;

		if (c == '\\') {
			c = *++v;
			switch (c) {
			case 'n': c = ' '; break;
			case 't': c = ' '; break;
			case 'r': c = ' '; break;
			case 'b': case 'f': c = ' '; break;
			case 'u':
				/* QEMU escapes only control and non-ASCII
				 * characters this way */
				if (strlen(v) >= 5)
					v += 4;
				c = '?';
				break;
			case '\0':
				v--;
				c = '?';
				break;
			default:
				break;	/* \" \\ \/ */
			}
		}
		out[n++] = c;
	}
	out[n] = '\0';
}

static uint64_t uint_value(const char *v)
{
	return v && *v >= '0' && *v <= '9' ? strtoull(v, NULL, 10) : 0;
}

/* ---- the socket -------------------------------------------------------------- */

static int64_t now_ms(void)
{
	return (int64_t)(tool_now_s() * 1e3);
}

/* Room for another read in q->buf; false with *errp. */
static bool grow_buf(struct ktm_qmp *q, const char *doing,
		     struct ktm_error **errp)
{
	char *b;

	if (q->len + 4096 + 1 <= q->cap)
		return true;
	if (q->cap >= QMP_MAX_LINE) {
		ktm_error_set(errp, KTM_ERR_PEER, EMSGSIZE,
			      "QMP %s sent a message longer than %d bytes "
			      "while %s", q->path, QMP_MAX_LINE, doing);
		return false;
	}
	b = realloc(q->buf, q->cap ? q->cap * 2 : 8192);
	if (!b) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a QMP message");
		return false;
	}
	q->buf = b;
	q->cap = q->cap ? q->cap * 2 : 8192;
	return true;
}

/* Wait until @deadline for bytes and append them; false with *errp. */
static bool recv_some(struct ktm_qmp *q, int64_t deadline, const char *doing,
		      struct ktm_error **errp)
{
	struct pollfd pf = { .fd = q->fd, .events = POLLIN };
	int64_t left = deadline - now_ms();
	int ready = left > 0 ? poll(&pf, 1, (int)left) : 0;
	ssize_t n;
	int err;

	if (ready < 0 && errno == EINTR)
		return true;	/* the caller's loop asks again */
	if (ready == 0) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
			      "QEMU did not answer on QMP %s within %u ms "
			      "while %s", q->path, q->timeout_ms, doing);
		return false;
	}
	n = ready < 0 ? -1 : recv(q->fd, q->buf + q->len, q->cap - q->len - 1, 0);
	if (n < 0 && errno == EINTR)
		return true;
	if (n > 0) {
		q->len += (size_t)n;
		return true;
	}
	err = n < 0 ? errno : ECONNRESET;
	ktm_error_set(errp, KTM_ERR_PEER, err,
		      "QEMU closed its QMP socket %s while %s%s%s", q->path,
		      doing, n < 0 ? ": " : "", n < 0 ? strerror(err) : "");
	ktm_error_hint_set(errp, "QEMU exits when an incoming migration "
			   "fails; its log (stderr) says why");
	return false;
}

/*
 * The next message (a line), without its line end, in q->buf; it stays
 * there until the next call.  NULL with *errp when QEMU went away, sent
 * garbage or stayed silent past the timeout.
 */
static char *read_line(struct ktm_qmp *q, size_t *consumed, const char *doing,
		       struct ktm_error **errp)
{
	int64_t deadline = now_ms() + q->timeout_ms;
	char *nl;

	for (;;) {
		nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
		if (nl) {
			*nl = '\0';
			*consumed = (size_t)(nl - q->buf) + 1;
			return q->buf;
		}
		if (!grow_buf(q, doing, errp) ||
		    !recv_some(q, deadline, doing, errp))
			return NULL;
	}
}

static void consume(struct ktm_qmp *q, size_t n)
{
	memmove(q->buf, q->buf + n, q->len - n);
	q->len -= n;
}

/* A command could not be written: QEMU went away (as recv_some() says
 * it), or another error. */
static void send_failed(const struct ktm_qmp *q, int err,
			struct ktm_error **errp)
{
	if (err != EPIPE && err != ECONNRESET) {
		ktm_error_set(errp, KTM_ERR_PEER, err, "cannot write to QMP "
			      "%s: %s", q->path, strerror(err));
		return;
	}
	ktm_error_set(errp, KTM_ERR_PEER, err, "QEMU closed its QMP socket "
		      "%s: %s", q->path, strerror(err));
	ktm_error_hint_set(errp, "QEMU exits when an incoming migration "
			   "fails; its log (stderr) says why");
}

static bool send_all(struct ktm_qmp *q, const char *text, int fd,
		     struct ktm_error **errp)
{
	size_t len = strlen(text);

	if (fd >= 0) {
		/* The fd rides on the command's first bytes; QEMU's getfd
		 * takes the last fd that arrived on the monitor. */
		if (!ktm_fd_send(q->fd, fd, text, errp))
			return false;
		return true;
	}
	while (len) {
		ssize_t n = send(q->fd, text, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			send_failed(q, errno, errp);
			return false;
		}
		text += n;
		len -= (size_t)n;
	}
	return true;
}

/* "migrate" out of {"execute": "migrate", ...}, for messages. */
static void command_name(const char *command, char *out, size_t len)
{
	string_value(member(command, "execute", NULL), out, len);
	if (!out[0])
		snprintf(out, len, "?");
}

char *ktm_qmp_execute(struct ktm_qmp *q, const char *command, int fd,
		      struct ktm_error **errp)
{
	char name[64], doing[96];
	const char *v, *end;
	size_t used;
	char *line, *ret;

	command_name(command, name, sizeof(name));
	snprintf(doing, sizeof(doing), "running '%s'", name);
	if (!send_all(q, command, fd, errp) || !send_all(q, "\n", -1, errp))
		return NULL;
	for (;;) {
		line = read_line(q, &used, doing, errp);
		if (!line)
			return NULL;
		v = member(line, "return", &end);
		if (v) {
			ret = strndup(v, (size_t)(end - v));
			consume(q, used);
			if (!ret)
				ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
					      "out of memory for a QMP reply");
			return ret;
		}
		v = member(line, "error", NULL);
		if (v) {
			char cls[64], desc[512];

			string_value(member(v, "class", NULL), cls, sizeof(cls));
			string_value(member(v, "desc", NULL), desc, sizeof(desc));
			consume(q, used);
			ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
				      "QEMU refused '%s' (QMP %s): %s", name,
				      q->path, desc[0] ? desc : cls);
			return NULL;
		}
		consume(q, used);	/* an event, or a line we do not know */
	}
}

struct ktm_qmp *ktm_qmp_open(const char *path, unsigned int timeout_ms,
			     struct ktm_error **errp)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ktm_qmp *q;
	size_t used;
	char *line, *ret;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, ENAMETOOLONG,
			      "QMP socket path '%s' is longer than %zu bytes",
			      path, sizeof(sun.sun_path) - 1);
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a QMP connection");
		return NULL;
	}
	snprintf(q->path, sizeof(q->path), "%s", path);
	q->timeout_ms = timeout_ms ? timeout_ms : QMP_DEFAULT_TIMEOUT_MS;
	strcpy(sun.sun_path, path);
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0 || connect(q->fd, (struct sockaddr *)&sun, sizeof(sun))) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot connect to QMP socket %s: %s", path,
			      strerror(errno));
		ktm_error_hint_set(errp, "start QEMU with -qmp unix:%s,server=on,"
				   "wait=off", path);
		goto err_close;
	}
	line = read_line(q, &used, "waiting for the QMP greeting", errp);
	if (!line)
		goto err_close;
	if (!member(line, "QMP", NULL)) {
		ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
			      "%s does not speak QMP (no greeting)", path);
		goto err_close;
	}
	consume(q, used);
	ret = ktm_qmp_execute(q, "{\"execute\": \"qmp_capabilities\"}", -1, errp);
	if (!ret)
		goto err_close;
	free(ret);
	return q;

err_close:
	ktm_qmp_close(q);
	return NULL;
}

void ktm_qmp_close(struct ktm_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	free(q->buf);
	free(q);
}

/* ---- migration ------------------------------------------------------------- */

/* Names travel inside JSON strings and "fd:NAME" URIs: keep them plain. */
static bool name_ok(const char *name)
{
	size_t n = strlen(name);

	return n && n < 64 && strspn(name, "abcdefghijklmnopqrstuvwxyz"
				     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

bool ktm_qmp_migrate_fd(struct ktm_qmp *q, enum ktm_endpoint endpoint,
			int fd, const char *name, struct ktm_error **errp)
{
	char cmd[256];
	char *ret;

	if (!name_ok(name)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "fd name '%s' must be 1 to 63 letters, digits, "
			      "'-', '_' or '.'", name);
		return false;
	}
	snprintf(cmd, sizeof(cmd), "{\"execute\": \"getfd\", \"arguments\": "
		 "{\"fdname\": \"%s\"}}", name);
	ret = ktm_qmp_execute(q, cmd, fd, errp);
	if (!ret)
		return false;
	free(ret);
	snprintf(cmd, sizeof(cmd), "{\"execute\": \"%s\", \"arguments\": "
		 "{\"uri\": \"fd:%s\"}}",
		 endpoint == KTM_ENDPOINT_CLIENT ? "migrate" : "migrate-incoming",
		 name);
	ret = ktm_qmp_execute(q, cmd, -1, errp);
	if (!ret) {
		/* do not leave the fd parked in QEMU */
		snprintf(cmd, sizeof(cmd), "{\"execute\": \"closefd\", "
			 "\"arguments\": {\"fdname\": \"%s\"}}", name);
		free(ktm_qmp_execute(q, cmd, -1, NULL));
		return false;
	}
	free(ret);
	return true;
}

int ktm_qmp_migrate_poll(struct ktm_qmp *q, char *status, size_t len,
			 uint64_t *transferred, uint64_t *total_ms,
			 struct ktm_error **errp)
{
	char *info = ktm_qmp_execute(q, "{\"execute\": \"query-migrate\"}",
				     -1, errp);
	char desc[512];

	if (!info)
		return -1;
	string_value(member(info, "status", NULL), status, len);
	if (!strcmp(status, "completed")) {
		const char *ram = member(info, "ram", NULL);

		if (transferred)
			*transferred = uint_value(ram ? member(ram, "transferred", NULL) : NULL);
		if (total_ms)
			*total_ms = uint_value(member(info, "total-time", NULL));
		free(info);
		return 1;
	}
	if (strcmp(status, "failed") && strcmp(status, "cancelled")) {
		free(info);
		return 0;
	}
	string_value(member(info, "error-desc", NULL), desc, sizeof(desc));
	free(info);
	ktm_error_set(errp, KTM_ERR_PEER, EPROTO, "QEMU reports the migration "
		      "%s%s%s", status, desc[0] ? ": " : "", desc);
	if (!desc[0])
		ktm_error_hint_set(errp, "QEMU's log (stderr) says why");
	return -1;
}

bool ktm_qmp_migrate_wait(struct ktm_qmp *q, unsigned int timeout_ms,
			  uint64_t *transferred, uint64_t *total_ms,
			  struct ktm_error **errp)
{
	int64_t deadline = timeout_ms ? now_ms() + timeout_ms : 0;
	char status[64] = "";
	struct timespec tick = { 0, 50 * 1000 * 1000 };
	int ret;

	for (;;) {
		ret = ktm_qmp_migrate_poll(q, status, sizeof(status),
					   transferred, total_ms, errp);
		if (ret)
			return ret > 0;
		if (deadline && now_ms() >= deadline) {
			ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT,
				      "migration did not complete within %u s "
				      "(QEMU status '%s')", timeout_ms / 1000,
				      status[0] ? status : "none");
			return false;
		}
		nanosleep(&tick, NULL);
	}
}
