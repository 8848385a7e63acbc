// SPDX-License-Identifier: MIT
/*
 * The one address grammar of the tool and its one TCP listener: every
 * command's --connect/--listen and the proxy's ends ("unix:PATH" where a
 * caller allows it).  Calls only the library's public header.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tool.h"

#define LISTEN_BACKLOG 64

static bool bad_port(const struct tool_addr *a, const char *what,
		     const char *s, struct ktm_error **errp)
{
	ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
		      "%s '%s' is not HOST:PORT with a port from 0 to 65535",
		      what, s);
	ktm_error_hint_set(errp, "write the port in digits, an IPv6 host in "
			   "brackets: 127.0.0.1:4444, [::1]:4444%s",
			   a->listen ? ", or 4444 for every address" : "");
	return false;
}

static bool need_host(const char *what, const char *s,
		      struct ktm_error **errp)
{
	ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
		      "%s '%s' needs a host: HOST:PORT", what, s);
	ktm_error_hint_set(errp, "e.g. 192.0.2.7:4444 or [2001:db8::7]:4444");
	return false;
}

static bool parse_unix(const char *s, unsigned int flags, const char *what,
		       struct tool_addr *a, struct ktm_error **errp)
{
	if (!(flags & TOOL_ADDR_UNIX)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s '%s' must be HOST:PORT, not a unix socket",
			      what, s);
		ktm_error_hint_set(errp, "only the plain (QEMU) side of the "
				   "proxy takes unix:PATH");
		return false;
	}
	if (!s[5] || strlen(s + 5) >= sizeof(a->path)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "unix socket path '%s' is empty or longer than "
			      "%zu bytes", s + 5, sizeof(a->path) - 1);
		ktm_error_hint_set(errp, "use a shorter path, e.g. under /run");
		return false;
	}
	a->is_unix = true;
	strcpy(a->path, s + 5);
	return true;
}

/* @hp ("HOST:PORT", "[V6]:PORT" or "PORT") into a->host and @port. */
static bool split(const char *hp, struct tool_addr *a, const char **port)
{
	const char *colon, *host = hp;
	size_t hl;

	if (hp[0] == '[') {
		colon = strchr(hp, ']');
		if (!colon || colon == hp + 1 || colon[1] != ':')
			return false;
		host = hp + 1;
		hl = (size_t)(colon - host);
		colon++;
	} else {
		colon = strrchr(hp, ':');
		hl = colon ? (size_t)(colon - hp) : 0;
	}
	if (hl >= sizeof(a->host))
		return false;
	memcpy(a->host, host, hl);
	a->host[hl] = '\0';
	*port = colon ? colon + 1 : hp;
	return true;
}

bool tool_addr_parse(const char *s, unsigned int flags, const char *what,
		     struct tool_addr *a, struct ktm_error **errp)
{
	const char *port;

	memset(a, 0, sizeof(*a));
	a->listen = flags & TOOL_ADDR_LISTEN;
	snprintf(a->text, sizeof(a->text), "%s", s);
	if (!strncmp(s, "unix:", 5))
		return parse_unix(s, flags, what, a, errp);
	if (!strncmp(s, "tcp:", 4))
		s += 4;
	if (!a->listen && !strchr(s, ':'))
		return need_host(what, a->text, errp);
	if (!split(s, a, &port) || !port[0] ||
	    strlen(port) >= sizeof(a->port) ||
	    strspn(port, "0123456789") != strlen(port) || atol(port) > 65535)
		return bad_port(a, what, a->text, errp);
	strcpy(a->port, port);
	if (!a->listen && !a->host[0])
		return need_host(what, a->text, errp);
	if (!a->listen && atol(a->port) == 0) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s '%s' has port 0", what, a->text);
		ktm_error_hint_set(errp, "port 0 only means \"any free port\" "
				   "where the tool listens");
		return false;
	}
	return true;
}

/* SO_REUSEADDR, bind and listen on @ai; the fd, or -1 with errno. */
static int bind_one(const struct addrinfo *ai, bool dual_stack)
{
	int fd, err, one = 1;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (dual_stack)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &(int){ 0 },
			   sizeof(int));
	if (!bind(fd, ai->ai_addr, ai->ai_addrlen) &&
	    !listen(fd, LISTEN_BACKLOG))
		return fd;
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* Every address getaddrinfo gives for @a of @family, in its order; the
 * first that binds.  -1 with *err (an errno) or *gai (its code). */
static int listen_family(const struct tool_addr *a, int family, int *err,
			 int *gai)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE, .ai_family = family };
	struct addrinfo *res, *ai;
	int fd = -1;

	*gai = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, &res);
	if (*gai) {
		*err = *gai == EAI_SYSTEM ? errno : ENOENT;
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = bind_one(ai, !a->host[0] && ai->ai_family == AF_INET6);
		if (fd < 0)
			*err = errno;
	}
	freeaddrinfo(res);
	return fd;
}

int tool_addr_listen(const struct tool_addr *a, struct ktm_error **errp)
{
	int fd, err = 0, gai = 0;

	/* no host: IPv6 with IPv4-mapped addresses (dual stack) where the
	 * kernel has IPv6, else IPv4 */
	fd = listen_family(a, a->host[0] ? AF_UNSPEC : AF_INET6, &err, &gai);
	if (fd < 0 && !a->host[0] && (gai || err == EAFNOSUPPORT))
		fd = listen_family(a, AF_INET, &err, &gai);
	if (fd >= 0)
		return fd;
	if (gai) {
		ktm_error_set(errp, KTM_ERR_CONFIG, err,
			      "cannot listen on %s: %s", a->text,
			      gai_strerror(gai));
		ktm_error_hint_set(errp, "give a local address or name, or "
				   "the port alone for every address");
		return -1;
	}
	ktm_error_set(errp, KTM_ERR_IO, err, "cannot listen on %s: %s",
		      a->text, strerror(err));
	if (err == EADDRINUSE)
		ktm_error_hint_set(errp, "another process uses port %s; pick "
				   "another, or 0 for any free port", a->port);
	return -1;
}

/* Listen on @spec and print where; the fd or -1 (message printed). */
int tool_listen(const char *spec, bool announce)
{
	struct ktm_error *err = NULL;
	struct tool_addr a;
	char where[300];
	int fd;

	if (!tool_addr_parse(spec, TOOL_ADDR_LISTEN, "listen address", &a,
			     &err)) {
		tool_error(err);
		return -1;
	}
	fd = tool_addr_listen(&a, &err);
	if (fd < 0) {
		tool_error(err);
		return -1;
	}
	if (announce) {
		printf("listening on %s\n",
		       ktm_fd_addr_text(fd, false, where, sizeof(where)));
		fflush(stdout);
	}
	return fd;
}
