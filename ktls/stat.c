// SPDX-License-Identifier: MIT
/*
 * /proc/net/tls_stat: "TlsCurrTxSw<ws>1" lines, one counter each.  Which
 * counters exist tells the kernel's features apart (TlsTxRekeyOk appears
 * with rekey support in 6.14), so parsing keeps every name it sees.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "ktls.h"

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

static const char *skip_spaces(const char *p, const char *end)
{
	while (p < end && is_space(*p))
		p++;
	return p;
}

/* Decimal digits at *pp into *v; the number of digits or -ERANGE. */
static int parse_u64(const char **pp, const char *end, uint64_t *v)
{
	const char *p = *pp;
	int digits = 0;

	*v = 0;
	while (p < end && *p >= '0' && *p <= '9') {
		if (*v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		*v = *v * 10 + (uint64_t)(*p - '0');
		p++;
		digits++;
	}
	*pp = p;
	return digits;
}

/* One "Name<ws>value" line at *pp (name not empty) into @st. */
static int parse_line(const char **pp, const char *end, struct ktm_ktls_stat *st)
{
	const char *p = *pp, *name = p, *name_end;
	uint64_t v;
	int digits;

	while (p < end && *p != '\n' && !is_space(*p))
		p++;
	name_end = p;
	p = skip_spaces(p, end);
	digits = parse_u64(&p, end, &v);
	if (digits < 0)
		return digits;
	p = skip_spaces(p, end);
	if (!digits || (p < end && *p != '\n'))
		return -EINVAL;
	if (p < end)
		p++;
	if (st->count == KTM_KTLS_STAT_MAX)
		return -E2BIG;
	if ((size_t)(name_end - name) >= sizeof(st->e[0].name))
		return -EINVAL;
	memcpy(st->e[st->count].name, name, (size_t)(name_end - name));
	st->e[st->count].name[name_end - name] = '\0';
	st->e[st->count].value = v;
	st->count++;
	*pp = p;
	return 0;
}

int ktm_ktls_stat_parse(const char *text, size_t len, struct ktm_ktls_stat *st)
{
	const char *p = text, *end = text + len;
	int ret;

	st->count = 0;
	while (p < end) {
		if (*p == '\n') {		/* blank line */
			p++;
			continue;
		}
		if (is_space(*p))		/* no name */
			return -EINVAL;
		ret = parse_line(&p, end, st);
		if (ret)
			return ret;
	}
	return (int)st->count;
}

int ktm_ktls_stat_read(const char *path, struct ktm_ktls_stat *st)
{
	char buf[4096];
	size_t len = 0;
	ssize_t n;
	int fd;

	fd = open(path ? path : "/proc/net/tls_stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (len < sizeof(buf)) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return (int)n;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len == sizeof(buf))
		return -E2BIG;
	return ktm_ktls_stat_parse(buf, len, st);
}

int ktm_ktls_stat_get(const struct ktm_ktls_stat *st, const char *name,
		      uint64_t *value)
{
	unsigned int i;

	for (i = 0; i < st->count; i++) {
		if (!strcmp(st->e[i].name, name)) {
			*value = st->e[i].value;
			return 0;
		}
	}
	return -ENOENT;
}
