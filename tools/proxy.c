// SPDX-License-Identifier: MIT
/*
 * The tool's proxy: kTLS under migration code that speaks plain stream
 * sockets.  The accept loop and the socket policy (loopback only, an
 * owner-only unix socket) live here, in the tool, not in libktm; each
 * connection is relayed by the library (ktm_proxy_conn_*, "Relay" in
 * ktm.h) in its own thread.  See proxy.h for the two ends.
 *
 * Threads: the thread in ktm_proxy_run() accepts; each connection then
 * has one thread that relays (the library adds a second one on the kernel
 * path, one per direction).  The source connects its session to the
 * destination in the accepting thread, one after another, so connections
 * reach the destination in the order QEMU opened them.  The destination
 * runs each handshake in the connection's thread, so a peer that connects
 * and says nothing holds only its own thread, never the listener: at most
 * PROXY_HANDSHAKES handshakes run at once, and a new connection beyond
 * that cuts the oldest one still in its handshake (a real peer's takes
 * milliseconds; a stray's lasts until the handshake timeout).
 *
 * Order: QEMU tells its channels apart by the order they arrive (the main
 * channel first; postcopy's preempt channel and QEMU 7's multifd carry no
 * tag), so the destination connects to QEMU in accept order: a connection
 * whose handshake is done waits for every earlier one that is still in a
 * handshake it has started (sent bytes) or is connecting to QEMU.  An
 * earlier connection that has sent nothing is not waited for: the source
 * starts each handshake at once, so it cannot be one of its channels.
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "tool.h"

/* Handshakes in progress at once (see above). */
#define PROXY_HANDSHAKES 32
/* How long the destination waits for a new connection's first bytes (the
 * library's default handshake timeout). */
#define PROXY_FIRST_BYTE_MS 10000

/* One connection of the accept loop around the library's relay. */
struct proxy_conn {
	struct ktm_proxy *p;
	struct ktm_proxy_conn *c;	/* owned */
	int fd;				/* the accepted socket, until the thread takes it */
	/* under p->lock: in its handshake; hs_fd a duplicate of the
	 * destination's accepted socket (-1 on the source), to cut it */
	bool handshaking;
	int hs_fd;
	bool spoke;			/* under p->lock: its first bytes came */
	bool queued;			/* under p->lock: handshake done, QEMU next */
	unsigned int seq;		/* accept order, to find the oldest */
	bool done;			/* under p->lock: the thread may be joined */
	pthread_t thread;
	struct proxy_conn *next;
};

struct ktm_proxy {
	const struct ktm_config *cfg;	/* borrowed */
	bool source;			/* client config: plain listen, TLS connect */
	struct tool_addr local, remote;
	int listen_fd;
	char address[300];		/* the listening address as bound */
	bool unlink_path;		/* we created local.path */
	int wake[2];			/* self-pipe: stop, or a connection ended */
	volatile sig_atomic_t stopping;
	ktm_proxy_report_fn report;
	void *opaque;
	pthread_mutex_t lock;		/* conns, reports */
	pthread_cond_t turn;		/* a connection left a handshake or queue */
	struct proxy_conn *conns;
	unsigned int next_id;
	/* source on a unix socket: who may connect besides root and this
	 * process's user (SO_PEERCRED); -1 when unset */
	long peer_uid, peer_gid;
	enum ktm_peer_end peer_end;	/* how the TLS peer may end */
	unsigned int io_ms;		/* TCP_USER_TIMEOUT + keepalive; 0: off */
};

/* ---- addresses ------------------------------------------------------------- */

/*
 * "unix:PATH" (plain side only), "tcp:HOST:PORT", "HOST:PORT", "[V6]:PORT",
 * or "PORT" alone when listening (tool_addr_parse); the plain side's host
 * defaults to 127.0.0.1.
 */
static bool parse_addr(const char *s, bool plain, bool listening,
		       struct tool_addr *a, struct ktm_error **errp)
{
	if (!tool_addr_parse(s, (plain ? TOOL_ADDR_UNIX : 0) |
			     (listening ? TOOL_ADDR_LISTEN : 0),
			     plain ? "plain (QEMU) address" : "TLS address",
			     a, errp))
		return false;
	if (plain && !a->is_unix && !a->host[0])
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

static struct addrinfo *resolve(const struct tool_addr *a, bool passive,
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
static bool check_loopback(const struct tool_addr *a, struct ktm_error **errp)
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
	int fd, probe, e;

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
	e = errno;
	ktm_error_set(errp, KTM_ERR_IO, e, "cannot listen on unix socket %s: %s",
		      path, strerror(e));
	if (e == ENOENT && strrchr(path, '/'))
		ktm_error_hint_set(errp, "create its directory first: mkdir -p %.*s",
				   (int)(strrchr(path, '/') - path), path);
	else if (e == EACCES)
		ktm_error_hint_set(errp, "this process (uid %u) may not create "
				   "files in the socket's directory",
				   (unsigned int)geteuid());
err_close:
	if (fd >= 0)
		close(fd);
	return -1;
}

static int listen_tcp(struct ktm_proxy *p, const struct tool_addr *a,
		      struct ktm_error **errp)
{
	int fd = tool_addr_listen(a, errp);

	if (fd >= 0)
		ktm_fd_addr_text(fd, false, p->address, sizeof(p->address));
	return fd;
}

/* Connect to the plain side (destination end); the fd or -1 with *errp. */
static int connect_local(const struct tool_addr *a, struct ktm_error **errp)
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

/* The user's report, one at a time. */
static void report_locked(const struct ktm_proxy_conn *c,
			  const struct ktm_error *err, void *opaque)
{
	struct ktm_proxy *p = opaque;

	if (!p->report)
		return;
	pthread_mutex_lock(&p->lock);
	p->report(c, err, p->opaque);
	pthread_mutex_unlock(&p->lock);
}

static bool conn_connect(struct ktm_proxy *p, struct proxy_conn *pc);

static void *conn_main(void *arg)
{
	struct proxy_conn *pc = arg;
	struct ktm_proxy *p = pc->p;

	if (p->source || conn_connect(p, pc))
		ktm_proxy_conn_run(pc->c);
	ktm_proxy_conn_finish(pc->c, report_locked, p);
	pthread_mutex_lock(&p->lock);
	pc->done = true;
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
	p->peer_uid = p->peer_gid = -1;
	p->wake[0] = p->wake[1] = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->turn, NULL);
	p->source = ktm_config_endpoint(cfg) == KTM_ENDPOINT_CLIENT;
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

bool ktm_proxy_set_unix_access(struct ktm_proxy *p, long owner, long group,
			       unsigned int mode, struct ktm_error **errp)
{
	const char *path = p->local.path;

	if (!p->source || !p->local.is_unix) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "socket owner, group and mode are for the source "
			      "end's unix socket");
		return false;
	}
	if (mode & ~0777u) {
		ktm_error_set(errp, KTM_ERR_CONFIG, EINVAL,
			      "mode %o for unix socket %s is not a permission "
			      "mode (0 to 0777)", mode, path);
		return false;
	}
	if ((owner >= 0 || group >= 0) &&
	    chown(path, owner >= 0 ? (uid_t)owner : (uid_t)-1,
		  group >= 0 ? (gid_t)group : (gid_t)-1)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot give unix socket %s to uid %ld gid %ld: %s",
			      path, owner, group, strerror(errno));
		return false;
	}
	if (mode && chmod(path, mode)) {
		ktm_error_set(errp, KTM_ERR_CONFIG, errno,
			      "cannot set mode %04o on unix socket %s: %s", mode,
			      path, strerror(errno));
		return false;
	}
	p->peer_uid = owner;
	p->peer_gid = group;
	return true;
}

/*
 * Whoever connects to the source's socket feeds the destination QEMU as
 * if it were the migrating QEMU, so the file mode is not the only lock:
 * the peer's credentials must be root, this process's user, the socket's
 * owner or its group (SO_PEERCRED: the primary group only).
 */
static bool unix_peer_allowed(const struct ktm_proxy *p, int fd,
			      struct ktm_error **errp)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char uid[32] = "", gid[32] = "";

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len)) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot learn who connected "
			      "to %s (SO_PEERCRED): %s", p->address,
			      strerror(errno));
		return false;
	}
	if (cr.uid == 0 || cr.uid == geteuid() ||
	    (p->peer_uid >= 0 && cr.uid == (uid_t)p->peer_uid) ||
	    (p->peer_gid >= 0 && cr.gid == (gid_t)p->peer_gid))
		return true;
	ktm_error_set(errp, KTM_ERR_PEER, EACCES,
		      "local process %ld (uid %u, gid %u) is not allowed to "
		      "migrate through %s", (long)cr.pid, (unsigned int)cr.uid,
		      (unsigned int)cr.gid, p->address);
	if (p->peer_uid >= 0)
		snprintf(uid, sizeof(uid), ", uid %ld", p->peer_uid);
	if (p->peer_gid >= 0)
		snprintf(gid, sizeof(gid), ", gid %ld", p->peer_gid);
	ktm_error_hint_set(errp, "allowed: root, uid %u%s%s; give the socket to "
			   "QEMU's user with --unix-owner/--unix-group",
			   (unsigned int)geteuid(), uid, gid);
	return false;
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

void ktm_proxy_set_io_timeout(struct ktm_proxy *p, unsigned int ms)
{
	p->io_ms = ms;
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

/* A connection that failed before it could relay: report it, count it. */
static void conn_failed(struct ktm_proxy *p, struct ktm_proxy_conn *c,
			struct ktm_error *e, unsigned int *failed)
{
	ktm_proxy_conn_fail(c, e);
	ktm_proxy_conn_finish(c, report_locked, p);
	ktm_proxy_conn_free(c);
	(*failed)++;
}

/* A relay connection named for its peer and its plain side. */
static struct ktm_proxy_conn *conn_named(struct ktm_proxy *p, int fd)
{
	char peer[300], local[300];

	if (p->source) {
		if (p->local.is_unix)
			snprintf(local, sizeof(local), "%s", p->address);
		else
			ktm_fd_addr_text(fd, true, local, sizeof(local));
		snprintf(peer, sizeof(peer), "%s", p->remote.text);
	} else {
		ktm_fd_addr_text(fd, true, peer, sizeof(peer));
		snprintf(local, sizeof(local), "%s", p->local.text);
	}
	return ktm_proxy_conn_new(++p->next_id, peer, local, NULL);
}

/* The handshake of @pc is over (either way): it can no longer be cut by
 * conn_evict().  When @queue (the destination's handshake succeeded) it
 * is queued for QEMU in the same step, so no later connection can slip
 * past it in between (see Order).  true when it was cut meanwhile (the
 * reason is on it; then it is not queued). */
static bool handshake_over(struct ktm_proxy *p, struct proxy_conn *pc,
			   bool queue)
{
	bool cut;

	pthread_mutex_lock(&p->lock);
	pc->handshaking = false;
	if (pc->hs_fd >= 0)
		close(pc->hs_fd);
	pc->hs_fd = -1;
	cut = ktm_proxy_conn_error(pc->c) != NULL;
	pc->queued = queue && !cut;
	pthread_cond_broadcast(&p->turn);
	pthread_mutex_unlock(&p->lock);
	return cut;
}

/* Wait up to PROXY_FIRST_BYTE_MS for the peer's first bytes (a ClientHello
 * or anything else: the handshake judges them) and note that they came.
 * false with *errp when none did. */
static bool first_bytes(struct ktm_proxy *p, struct proxy_conn *pc, int fd,
			struct ktm_error **errp)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	int n;

	do {
		n = poll(&pf, 1, PROXY_FIRST_BYTE_MS);
	} while (n < 0 && errno == EINTR);
	if (n <= 0) {
		ktm_error_set(errp, KTM_ERR_PEER, ETIMEDOUT, "%s connected and "
			      "sent nothing for %d s; refused",
			      ktm_proxy_conn_peer(pc->c), PROXY_FIRST_BYTE_MS / 1000);
		ktm_error_hint_set(errp, "a migration source starts its TLS "
				   "handshake at once; this is a port scan, a "
				   "health check or a stalled peer");
		return false;
	}
	pthread_mutex_lock(&p->lock);
	pc->spoke = true;
	pthread_mutex_unlock(&p->lock);
	return true;
}

/* Under p->lock: whether @c, in its handshake, has had bytes from its
 * peer: noted by its thread, or (its thread not run yet) waiting unread
 * on its socket. */
static bool spoke_locked(struct proxy_conn *c)
{
	int n = 0;

	if (!c->spoke && c->hs_fd >= 0 && !ioctl(c->hs_fd, FIONREAD, &n) && n > 0)
		c->spoke = true;
	return c->spoke;
}

/* Under p->lock: a connection accepted before @pc still has to reach QEMU
 * (see Order above). */
static bool earlier_pending_locked(const struct ktm_proxy *p,
				   const struct proxy_conn *pc)
{
	struct proxy_conn *c;

	for (c = p->conns; c; c = c->next)
		if (c->seq < pc->seq &&
		    (c->queued || (c->handshaking && spoke_locked(c))))
			return true;
	return false;
}

/* The destination's turn to connect @pc (queued by handshake_over()) to
 * QEMU; then connect_local(); the fd or -1 with *errp. */
static int connect_in_order(struct ktm_proxy *p, struct proxy_conn *pc,
			    struct ktm_error **errp)
{
	int fd;

	pthread_mutex_lock(&p->lock);
	while (!p->stopping && earlier_pending_locked(p, pc)) {
		struct timespec ts;

		/* timed: stopping comes from a signal handler */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->turn, &p->lock, &ts);
	}
	pthread_mutex_unlock(&p->lock);
	fd = p->stopping ? -1 : connect_local(&p->local, errp);
	pthread_mutex_lock(&p->lock);
	pc->queued = false;
	pthread_cond_broadcast(&p->turn);
	pthread_mutex_unlock(&p->lock);
	return fd;
}

/*
 * A peer that stops taking our bytes (frozen, partitioned) ends the
 * connection after p->io_ms (TCP_USER_TIMEOUT, also for zero-window
 * probes), and one that vanished while idle after about the same
 * (keepalive every io_ms/3, 3 probes).  No receive timeout: a QEMU
 * connection may be idle for long (the return path, a paused migration).
 */
static void tune_tls_socket(const struct ktm_proxy *p, int fd)
{
	int on = 1, uto = (int)p->io_ms, cnt = 3;
	int idle = p->io_ms >= 3000 ? (int)(p->io_ms / 3000) : 1;

	if (!p->io_ms || fd < 0)
		return;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/*
 * The session and the plain socket of @pc, around its accepted socket
 * (taken): source: it is the plain side, connect a session to the
 * destination (in the accepting thread); destination: handshake on it,
 * then connect to QEMU (in the connection's thread).  false (with the
 * reason recorded on the connection) when either failed.
 */
static bool conn_connect(struct ktm_proxy *p, struct proxy_conn *pc)
{
	struct ktm_proxy_conn *c = pc->c;
	struct ktm_session *s = NULL;
	struct ktm_error *e = NULL;
	int local_fd = -1, fd = pc->fd;

	pc->fd = -1;
	if (p->source) {
		local_fd = fd;
		if (!p->local.is_unix || unix_peer_allowed(p, fd, &e))
			s = ktm_session_connect(p->cfg, p->remote.host,
						p->remote.port, &e);
		tune_tls_socket(p, s ? ktm_session_fd(s) : -1);
	} else if (first_bytes(p, pc, fd, &e)) {
		tune_tls_socket(p, fd);
		/* takes fd, also on failure */
		s = ktm_session_new_fd(p->cfg, fd, NULL, &e);
	} else {
		close(fd);
	}
	/* Only an authenticated peer gets to reach QEMU. */
	if (!handshake_over(p, pc, s && !p->source) && s && !p->source)
		local_fd = connect_in_order(p, pc, &e);
	ktm_proxy_conn_attach(c, s, local_fd);
	if (s && local_fd >= 0 && !e)
		return true;
	ktm_proxy_conn_fail(c, e);
	return false;
}

/* Under p->lock: cut the oldest connection still in its handshake when
 * PROXY_HANDSHAKES are, to make room for the one just accepted. */
static void conn_evict_locked(struct ktm_proxy *p)
{
	struct proxy_conn *c, *oldest = NULL;
	struct ktm_error *e = NULL;
	unsigned int n = 0;

	for (c = p->conns; c; c = c->next) {
		if (!c->handshaking)
			continue;
		n++;
		if (!oldest || c->seq < oldest->seq)
			oldest = c;
	}
	if (n < PROXY_HANDSHAKES || !oldest || oldest->hs_fd < 0)
		return;
	ktm_error_set(&e, KTM_ERR_PEER, ETIMEDOUT, "%s was the oldest of %d "
		      "connections still in their TLS handshake; refused to "
		      "make room for a new one", ktm_proxy_conn_peer(oldest->c),
		      PROXY_HANDSHAKES);
	ktm_error_hint_set(&e, "a migration source completes its handshake "
			   "at once; this is a port scan or a stalled peer");
	ktm_proxy_conn_fail(oldest->c, e);
	shutdown(oldest->hs_fd, SHUT_RDWR);	/* closed by handshake_over() */
	oldest->handshaking = false;
}

/*
 * Accept one connection on the listener and make its record; its thread
 * (conn_start) then makes the session.  NULL when the accept found
 * nothing or the record could not be made (then reported; *failed
 * counts it).
 */
static struct proxy_conn *conn_establish(struct ktm_proxy *p,
					 unsigned int *failed,
					 struct ktm_error **fatal)
{
	struct ktm_proxy_conn *c;
	struct proxy_conn *pc;
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
	c = conn_named(p, fd);
	pc = calloc(1, sizeof(*pc));
	if (!c || !pc) {
		ktm_proxy_conn_free(c);
		free(pc);
		close(fd);
		(*failed)++;
		return NULL;
	}
	ktm_proxy_conn_set_peer_end(c, p->peer_end);
	pc->p = p;
	pc->c = c;
	pc->fd = fd;
	pc->seq = p->next_id;
	pc->handshaking = true;
	pc->hs_fd = p->source ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (p->source && !conn_connect(p, pc)) {
		conn_failed(p, c, NULL, failed);
		free(pc);
		return NULL;
	}
	return pc;
}

/* Join the connections that ended; count the failed ones. */
static unsigned int reap(struct ktm_proxy *p, unsigned int *failed, bool all)
{
	struct proxy_conn **pp = &p->conns, *c;
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
		if (ktm_proxy_conn_error(c->c))
			(*failed)++;
		ktm_proxy_conn_free(c->c);
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

/* Give @c its thread and list it; when no thread starts, it fails. */
static void conn_start(struct ktm_proxy *p, struct proxy_conn *c,
		       unsigned int *failed)
{
	int ret;

	pthread_mutex_lock(&p->lock);
	conn_evict_locked(p);
	pthread_mutex_unlock(&p->lock);
	ret = pthread_create(&c->thread, NULL, conn_main, c);
	if (ret) {
		struct ktm_error *e = NULL;

		if (c->fd >= 0)
			close(c->fd);
		if (c->hs_fd >= 0)
			close(c->hs_fd);

		ktm_error_set(&e, KTM_ERR_IO, ret, "cannot start a thread for "
			      "the connection from %s: %s",
			      p->source ? ktm_proxy_conn_local(c->c) :
			      ktm_proxy_conn_peer(c->c), strerror(ret));
		conn_failed(p, c->c, e, failed);
		free(c);
		return;
	}
	pthread_mutex_lock(&p->lock);
	c->next = p->conns;
	p->conns = c;
	pthread_mutex_unlock(&p->lock);
}

/* Stopped or failed: cut what is still open, then wait for it. */
static void cut_all(struct ktm_proxy *p, unsigned int *failed)
{
	struct proxy_conn *c;

	pthread_mutex_lock(&p->lock);
	for (c = p->conns; c; c = c->next) {
		struct ktm_error *e = NULL;

		if (c->done)
			continue;
		ktm_error_set(&e, KTM_ERR_IO, ECANCELED, "proxy stopped while "
			      "the connection to %s was open",
			      ktm_proxy_conn_peer(c->c));
		ktm_proxy_conn_fail(c->c, e);
		if (c->handshaking && c->hs_fd >= 0)
			shutdown(c->hs_fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&p->lock);
	reap(p, failed, true);
}

int ktm_proxy_run(struct ktm_proxy *p, unsigned int max_conns,
		  struct ktm_error **errp)
{
	struct ktm_error *fatal = NULL;
	unsigned int failed = 0, accepted = 0, active;
	struct proxy_conn *c;

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
		if (c)
			conn_start(p, c, &failed);
	}
	cut_all(p, &failed);
	if (fatal) {
		ktm_error_propagate(errp, fatal);
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
	pthread_cond_destroy(&p->turn);
	free(p);
}
