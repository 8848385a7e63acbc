// SPDX-License-Identifier: MIT
/*
 * The proxy: kTLS under migration code that speaks plain stream sockets.
 * One session per plain connection, each relayed in its own thread(s).
 * See "Proxy" in ktm.h for the two ends and the end-of-stream rules.
 *
 * Threads: the thread in ktm_proxy_run() accepts and sets sessions up, one
 * at a time; each connection then has one thread, plus a second one on
 * the kernel path (one per direction).  The two kernel-path threads share
 * the session only as far as the kernel allows: the downstream thread is
 * the only one that calls ktm_session_recv(), the upstream thread the only
 * one that calls ktm_session_shutdown(); data moves by splice on the fd.
 * On the userspace path OpenSSL owns the socket and one thread does both
 * directions.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "proxy.h"

/* ---- addresses ------------------------------------------------------------- */

/*
 * "unix:PATH" (plain side only), "tcp:HOST:PORT", "HOST:PORT", "[V6]:PORT",
 * or "PORT" alone when listening.
 */
static bool parse_addr(const char *s, bool plain, bool listening,
		       struct addr *a, struct ktm_error **errp)
{
	const char *what = plain ? "plain (QEMU) address" : "TLS address";
	const char *colon, *host = s;
	size_t hl;

	memset(a, 0, sizeof(*a));
	snprintf(a->text, sizeof(a->text), "%s", s);
	if (!strncmp(s, "unix:", 5)) {
		if (!plain) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
				      "TLS address '%s' must be HOST:PORT, not "
				      "a unix socket", s);
			return false;
		}
		if (!s[5] || strlen(s + 5) >= sizeof(a->path)) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
				      "unix socket path '%s' is empty or longer "
				      "than %zu bytes", s + 5, sizeof(a->path) - 1);
			return false;
		}
		a->is_unix = true;
		strcpy(a->path, s + 5);
		return true;
	}
	if (!strncmp(s, "tcp:", 4))
		host = s + 4;
	colon = strrchr(host, ':');
	if (!colon) {
		if (!listening) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
				      "%s '%s' needs a host: HOST:PORT", what, s);
			return false;
		}
		colon = host - 1;	/* port only */
	}
	hl = (size_t)(colon - host + 1 > 0 ? colon - host : 0);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host++;
		hl -= 2;
	}
	if (hl >= sizeof(a->host) || strlen(colon + 1) >= sizeof(a->port) ||
	    !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	    atol(colon + 1) > 65535) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s '%s' is not HOST:PORT with a port from 0 to "
			      "65535", what, s);
		return false;
	}
	memcpy(a->host, host, hl);
	a->host[hl] = '\0';
	strcpy(a->port, colon + 1);
	if (!listening && !strcmp(a->port, "0")) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "%s '%s' has port 0", what, s);
		return false;
	}
	if (plain && !a->host[0])
		strcpy(a->host, "127.0.0.1");
	return true;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

static void sockaddr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(a->sin_port));
	} else {
		snprintf(buf, len, "?");
	}
}

void ktm_proxy_peer_text(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &sl))
		snprintf(buf, len, "fd %d", fd);
	else
		sockaddr_text((struct sockaddr *)&ss, buf, len);
}

static struct addrinfo *resolve(const struct addr *a, bool passive,
				struct ktm_error **errp)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = passive ? AI_PASSIVE : 0 };
	struct addrinfo *res;
	int ret;

	ret = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, &res);
	if (ret) {
		ktm_error_set(errp, KTM_ERR_CONFIG,
			      ret == EAI_SYSTEM ? errno : ENOENT,
			      "cannot resolve '%s': %s", a->text,
			      gai_strerror(ret));
		return NULL;
	}
	return res;
}

/* Plain TCP carries guest memory in clear: loopback only. */
static bool check_loopback(const struct addr *a, struct ktm_error **errp)
{
	struct addrinfo *res, *ai;

	if (a->is_unix)
		return true;
	res = resolve(a, false, errp);
	if (!res)
		return false;
	for (ai = res; ai; ai = ai->ai_next) {
		if (!is_loopback(ai->ai_addr)) {
			freeaddrinfo(res);
			ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
				      "plain address '%s' is not a loopback "
				      "address", a->text);
			ktm_error_hint_set(errp, "plaintext guest memory must "
					   "not cross a network; use a unix "
					   "socket or 127.0.0.1");
			return false;
		}
	}
	freeaddrinfo(res);
	return true;
}

static int listen_unix(struct ktm_proxy *p, struct ktm_error **errp)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = p->local.path;
	struct stat st;
	int fd, probe;

	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err_io;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		if (errno != EADDRINUSE)
			goto err_io;
		/* A socket nobody listens on is left over from a killed
		 * proxy: replace it.  Anything else is not ours to remove. */
		if (lstat(path, &st) || !S_ISSOCK(st.st_mode)) {
			ktm_error_set(errp, KTM_ERR_CONFIG, EEXIST,
				      "cannot listen on unix socket %s: the path "
				      "exists and is not a socket", path);
			goto err_close;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && !connect(probe, (struct sockaddr *)&sun, sizeof(sun))) {
			close(probe);
			ktm_error_set(errp, KTM_ERR_CONFIG, EADDRINUSE,
				      "cannot listen on unix socket %s: another "
				      "process is listening there", path);
			goto err_close;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)))
			goto err_io;
	}
	p->unlink_path = true;
	/* Whoever connects here feeds the destination as if it were the
	 * migrating QEMU: owner only (chown it for a QEMU of another user). */
	if (chmod(path, 0600) || listen(fd, 64))
		goto err_io;
	snprintf(p->address, sizeof(p->address), "unix:%s", path);
	return fd;

err_io:
	ktm_error_set(errp, KTM_ERR_IO, errno, "cannot listen on unix socket %s: %s",
		      path, strerror(errno));
err_close:
	if (fd >= 0)
		close(fd);
	return -1;
}

static int listen_tcp(struct ktm_proxy *p, const struct addr *a,
		      struct ktm_error **errp)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct addrinfo *res, *ai;
	int fd = -1, err = 0, one = 1;

	res = resolve(a, true, errp);
	if (!res)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 64))
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		ktm_error_set(errp, KTM_ERR_IO, err, "cannot listen on %s: %s",
			      a->text, strerror(err));
		if (err == EADDRINUSE)
			ktm_error_hint_set(errp, "another process uses port %s",
					   a->port);
		return -1;
	}
	if (!getsockname(fd, (struct sockaddr *)&ss, &sl))
		sockaddr_text((struct sockaddr *)&ss, p->address, sizeof(p->address));
	return fd;
}

/* Connect to the plain side (destination end); the fd or -1 with *errp. */
static int connect_local(const struct addr *a, struct ktm_error **errp)
{
	struct addrinfo *res = NULL, *ai;
	int fd = -1, err = 0;

	if (a->is_unix) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		strcpy(sun.sun_path, a->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && !connect(fd, (struct sockaddr *)&sun, sizeof(sun)))
			return fd;
		err = errno;
	} else {
		res = resolve(a, false, errp);
		if (!res)
			return -1;
		for (ai = res; ai; ai = ai->ai_next) {
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
				    ai->ai_protocol);
			if (fd >= 0 && !connect(fd, ai->ai_addr, ai->ai_addrlen))
				break;
			err = errno;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		freeaddrinfo(res);
		if (fd >= 0)
			return fd;
	}
	if (fd >= 0)
		close(fd);
	ktm_error_set(errp, KTM_ERR_PEER, err, "cannot connect to %s: %s",
		      a->text, strerror(err));
	ktm_error_hint_set(errp, "is the destination QEMU waiting there "
			   "(-incoming, or migrate-incoming after -incoming defer)?");
	return -1;
}
/* ---- the proxy ------------------------------------------------------------- */

static void wake(struct ktm_proxy *p)
{
	ssize_t n;

	do {
		n = write(p->wake[1], "", 1);
	} while (n < 0 && errno == EINTR);
	/* EAGAIN: the pipe is full, the loop wakes anyway */
}

static void *conn_main(void *arg)
{
	struct ktm_proxy_conn *c = arg;
	struct ktm_proxy *p = c->p;
	sigset_t pipe_set;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
	ktm_relay_run(c);
	ktm_relay_conn_finish(c, p->report, p->opaque, &p->lock);
	pthread_mutex_lock(&p->lock);
	c->done = true;
	pthread_mutex_unlock(&p->lock);
	wake(p);
	return NULL;
}

struct ktm_proxy *ktm_proxy_new(const struct ktm_config *cfg,
				const char *local, const char *remote,
				struct ktm_error **errp)
{
	struct ktm_proxy *p;

	p = calloc(1, sizeof(*p));
	if (!p) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for a proxy");
		return NULL;
	}
	p->cfg = cfg;
	p->listen_fd = -1;
	p->wake[0] = p->wake[1] = -1;
	pthread_mutex_init(&p->lock, NULL);
	p->source = cfg->endpoint == KTM_ENDPOINT_CLIENT;
	if (!parse_addr(local, true, p->source, &p->local, errp) ||
	    !parse_addr(remote, false, !p->source, &p->remote, errp) ||
	    !check_loopback(&p->local, errp))
		goto err_free;
	if (pipe2(p->wake, O_CLOEXEC | O_NONBLOCK)) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot make a pipe: %s",
			      strerror(errno));
		goto err_free;
	}
	if (p->source && p->local.is_unix)
		p->listen_fd = listen_unix(p, errp);
	else
		p->listen_fd = listen_tcp(p, p->source ? &p->local : &p->remote,
					  errp);
	if (p->listen_fd < 0)
		goto err_free;
	return p;

err_free:
	ktm_proxy_free(p);
	return NULL;
}

const char *ktm_proxy_address(const struct ktm_proxy *p)
{
	return p->address;
}

void ktm_proxy_set_report(struct ktm_proxy *p, ktm_proxy_report_fn fn,
			  void *opaque)
{
	p->report = fn;
	p->opaque = opaque;
}

void ktm_proxy_set_peer_end(struct ktm_proxy *p, enum ktm_peer_end end)
{
	p->peer_end = end;
}

bool ktm_proxy_conn_peer_fin(const struct ktm_proxy_conn *conn)
{
	return conn->peer_fin;
}

void ktm_proxy_stop(struct ktm_proxy *p)
{
	int saved = errno;

	p->stopping = 1;
	if (write(p->wake[1], "", 1) < 0) {
		/* full pipe: the loop wakes anyway */
	}
	errno = saved;
}

/*
 * Set up one connection: accept on the listener, make the session (source:
 * connect to the destination end; destination: handshake on the accepted
 * socket, then connect to QEMU).  Returns the connection ready to relay,
 * or NULL when it failed (already reported; *failed counts it) or the
 * accept found nothing.
 */
static struct ktm_proxy_conn *conn_establish(struct ktm_proxy *p,
					     unsigned int *failed,
					     struct ktm_error **fatal)
{
	struct ktm_proxy_conn *c;
	struct ktm_error *e = NULL;
	int fd;

	fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED ||
		    errno == EPROTO)
			return NULL;
		ktm_error_set(fatal, KTM_ERR_IO, errno,
			      "cannot accept a connection on %s: %s",
			      p->address, strerror(errno));
		return NULL;
	}
	c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		(*failed)++;
		return NULL;
	}
	ktm_relay_conn_init(c);
	c->p = p;
	c->id = ++p->next_id;
	c->fin_ok = p->peer_end == KTM_PEER_END_QEMU_TLS;
	if (p->source) {
		c->local = fd;
		if (p->local.is_unix)
			snprintf(c->local_name, sizeof(c->local_name), "%s",
				 p->address);
		else
			ktm_proxy_peer_text(fd, c->local_name, sizeof(c->local_name));
		snprintf(c->peer, sizeof(c->peer), "%s", p->remote.text);
		c->s = ktm_session_connect(p->cfg, p->remote.host,
					   p->remote.port, &e);
	} else {
		ktm_proxy_peer_text(fd, c->peer, sizeof(c->peer));
		snprintf(c->local_name, sizeof(c->local_name), "%s",
			 p->local.text);
		/* takes fd, also on failure */
		c->s = ktm_session_new_fd(p->cfg, fd, NULL, &e);
		/* Only an authenticated peer gets to reach QEMU. */
		if (c->s)
			c->local = connect_local(&p->local, &e);
	}
	if (c->s)
		c->tls = ktm_session_fd(c->s);
	if (!c->s || c->local < 0) {
		c->err = e;
		c->aborted = true;
		ktm_relay_conn_finish(c, p->report, p->opaque, &p->lock);
		ktm_error_free(c->err);
		pthread_mutex_destroy(&c->lock);
		free(c);
		(*failed)++;
		return NULL;
	}
	return c;
}

/* Join the connections that ended; count the failed ones. */
static unsigned int reap(struct ktm_proxy *p, unsigned int *failed, bool all)
{
	struct ktm_proxy_conn **pp = &p->conns, *c;
	unsigned int active = 0;

	for (;;) {
		bool done;

		pthread_mutex_lock(&p->lock);
		c = *pp;
		done = c && c->done;
		pthread_mutex_unlock(&p->lock);
		if (!c)
			break;
		if (!done && !all) {
			active++;
			pp = &c->next;
			continue;
		}
		pthread_join(c->thread, NULL);
		if (c->err)
			(*failed)++;
		ktm_error_free(c->err);
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_lock(&p->lock);
		*pp = c->next;
		pthread_mutex_unlock(&p->lock);
		free(c);
	}
	return active;
}

static void drain_wake(struct ktm_proxy *p)
{
	char buf[64];

	while (read(p->wake[0], buf, sizeof(buf)) > 0)
		;
}

int ktm_proxy_run(struct ktm_proxy *p, unsigned int max_conns,
		  struct ktm_error **errp)
{
	struct ktm_error *fatal = NULL;
	unsigned int failed = 0, accepted = 0, active;
	struct ktm_proxy_conn *c;
	int ret;

	for (;;) {
		bool accepting = !max_conns || accepted < max_conns;
		struct pollfd pf[2] = {
			{ .fd = p->wake[0], .events = POLLIN },
			{ .fd = accepting ? p->listen_fd : -1, .events = POLLIN },
		};

		active = reap(p, &failed, false);
		if (p->stopping || (!accepting && !active))
			break;
		if (poll(pf, 2, -1) < 0 && errno != EINTR) {
			ktm_error_set(&fatal, KTM_ERR_IO, errno, "poll failed: %s",
				      strerror(errno));
			break;
		}
		if (pf[0].revents)
			drain_wake(p);
		if (!(pf[1].revents & POLLIN) || p->stopping)
			continue;
		c = conn_establish(p, &failed, &fatal);
		if (fatal)
			break;
		accepted++;
		if (!c)
			continue;
		ret = pthread_create(&c->thread, NULL, conn_main, c);
		if (ret) {
			ktm_error_set(&c->err, KTM_ERR_IO, ret, "cannot start a "
				      "thread for the connection from %s: %s",
				      p->source ? c->local_name : c->peer,
				      strerror(ret));
			c->aborted = true;
			ktm_relay_conn_finish(c, p->report, p->opaque, &p->lock);
			ktm_error_free(c->err);
			pthread_mutex_destroy(&c->lock);
			free(c);
			failed++;
			continue;
		}
		pthread_mutex_lock(&p->lock);
		c->next = p->conns;
		p->conns = c;
		pthread_mutex_unlock(&p->lock);
	}

	/* Stopped or failed: cut what is still open, then wait for it. */
	pthread_mutex_lock(&p->lock);
	for (c = p->conns; c; c = c->next) {
		struct ktm_error *e = NULL;

		if (c->done)
			continue;
		ktm_error_set(&e, KTM_ERR_IO, ECANCELED, "proxy stopped while "
			      "the connection to %s was open", c->peer);
		ktm_relay_conn_fail(c, e);
	}
	pthread_mutex_unlock(&p->lock);
	reap(p, &failed, true);
	if (fatal) {
		if (errp)
			*errp = fatal;
		else
			ktm_error_free(fatal);
		return -1;
	}
	return (int)failed;
}

void ktm_proxy_free(struct ktm_proxy *p)
{
	if (!p)
		return;
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	if (p->unlink_path)
		unlink(p->local.path);
	if (p->wake[0] >= 0)
		close(p->wake[0]);
	if (p->wake[1] >= 0)
		close(p->wake[1]);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* ---- connection status ----------------------------------------------------- */

unsigned int ktm_proxy_conn_id(const struct ktm_proxy_conn *conn)
{
	return conn->id;
}

const char *ktm_proxy_conn_peer(const struct ktm_proxy_conn *conn)
{
	return conn->peer;
}

const char *ktm_proxy_conn_local(const struct ktm_proxy_conn *conn)
{
	return conn->local_name;
}

const struct ktm_session *ktm_proxy_conn_session(const struct ktm_proxy_conn *conn)
{
	return conn->s;
}

uint64_t ktm_proxy_conn_bytes(const struct ktm_proxy_conn *conn,
			      enum ktm_dir dir)
{
	return conn->bytes[dir == KTM_DIR_RX];
}

double ktm_proxy_conn_seconds(const struct ktm_proxy_conn *conn)
{
	const struct timespec *end = conn->t1.tv_sec || conn->t1.tv_nsec ?
				     &conn->t1 : &conn->t0;

	return (double)(end->tv_sec - conn->t0.tv_sec) +
	       (double)(end->tv_nsec - conn->t0.tv_nsec) / 1e9;
}
