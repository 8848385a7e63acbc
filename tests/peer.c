// SPDX-License-Identifier: MIT
/* See peer.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "internal.h"
#include "peer.h"

int t_server_listen(struct t_server *srv)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(srv, 0, sizeof(*srv));
	srv->pid = -1;
	srv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv->lfd < 0)
		return -errno;
	if (bind(srv->lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(srv->lfd, 8) ||
	    getsockname(srv->lfd, (struct sockaddr *)&a, &len))
		return -errno;
	snprintf(srv->port, sizeof(srv->port), "%u", ntohs(a.sin_port));
	srv->out = mmap(NULL, sizeof(*srv->out), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (srv->out == MAP_FAILED) {
		srv->out = NULL;
		return -ENOMEM;
	}
	memset(srv->out, 0, sizeof(*srv->out));
	return 0;
}

void t_outcome_set(struct t_outcome *o, const struct ktm_session *s,
		   const struct ktm_error *err)
{
	o->done = true;
	o->ok = s != NULL;
	if (err) {
		const char *h = ktm_error_hint(err);

		o->cls = ktm_error_class(err);
		o->err = ktm_error_errno(err);
		snprintf(o->msg, sizeof(o->msg), "%s", ktm_error_message(err));
		snprintf(o->hint, sizeof(o->hint), "%s", h ? h : "");
	}
	if (s) {
		const char *fb = ktm_session_fallback_reason(s);

		o->path_tx = ktm_session_path(s, KTM_DIR_TX);
		o->path_rx = ktm_session_path(s, KTM_DIR_RX);
		o->version = ktm_session_version(s);
		o->cipher = ktm_session_cipher(s);
		snprintf(o->subject, sizeof(o->subject), "%s",
			 ktm_session_peer_subject(s));
		snprintf(o->sans, sizeof(o->sans), "%s", ktm_session_peer_sans(s));
		snprintf(o->fallback, sizeof(o->fallback), "%s", fb ? fb : "");
	}
}

static void echo(struct ktm_session *s, struct t_outcome *o)
{
	struct ktm_error *err = NULL;
	char buf[65536];
	size_t first = 0;
	ssize_t n;

	while ((n = ktm_session_recv(s, buf, sizeof(buf), &err)) > 0) {
		if (first < sizeof(o->echoed) - 1) {
			size_t take = (size_t)n < sizeof(o->echoed) - 1 - first ?
				      (size_t)n : sizeof(o->echoed) - 1 - first;

			memcpy(o->echoed + first, buf, take);
			first += take;
		}
		if (!ktm_session_send(s, buf, (size_t)n, &err))
			break;
	}
	o->bytes_rx = ktm_session_bytes(s, KTM_DIR_RX);
	o->bytes_tx = ktm_session_bytes(s, KTM_DIR_TX);
	if (err) {
		/* keep the handshake outcome, add the data-phase error */
		o->cls = ktm_error_class(err);
		snprintf(o->msg, sizeof(o->msg), "%s", ktm_error_message(err));
		ktm_error_free(err);
		return;
	}
	ktm_session_shutdown(s, NULL);
}

static void serve(struct t_server *srv, const struct ktm_config *cfg,
		  enum t_mode mode)
{
	struct ktm_error *err = NULL;
	struct ktm_session *s;
	char buf[512];
	int fd;

	if (mode == T_SILENT || mode == T_HTTP) {
		fd = accept(srv->lfd, NULL, NULL);
		if (fd < 0)
			return;
		if (mode == T_HTTP) {
			static const char resp[] = "HTTP/1.1 400 Bad Request\r\n"
						   "Content-Length: 0\r\n\r\n";

			if (read(fd, buf, sizeof(buf)) > 0 &&
			    write(fd, resp, sizeof(resp) - 1) < 0)
				return;
		}
		/* hold the connection until the client gives up */
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		srv->out->done = true;
		close(fd);
		return;
	}
	s = ktm_session_accept(cfg, srv->lfd, &err);
	t_outcome_set(srv->out, s, err);
	ktm_error_free(err);
	if (!s)
		return;
	if (mode == T_EARLY)
		ktm_session_send(s, "early", 5, NULL);
	if (mode == T_ECHO || mode == T_EARLY)
		echo(s, srv->out);
	else
		while (ktm_session_recv(s, buf, sizeof(buf), NULL) > 0)
			;
	ktm_session_free(s);
}

int t_server_start(struct t_server *srv, const struct ktm_config *cfg,
		   enum t_mode mode)
{
	fflush(stdout);
	srv->pid = fork();
	if (srv->pid < 0)
		return -errno;
	if (srv->pid == 0) {
		serve(srv, cfg, mode);
		_exit(0);
	}
	return 0;
}

int t_server_wait(struct t_server *srv, int timeout_s)
{
	int status = 0, i;

	if (srv->pid <= 0)
		return -1;
	for (i = 0; i < timeout_s * 100; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
			srv->pid = -1;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		}
		nanosleep(&ts, NULL);
	}
	kill(srv->pid, SIGKILL);
	waitpid(srv->pid, &status, 0);
	srv->pid = -1;
	return 124;
}

void t_server_close(struct t_server *srv)
{
	if (srv->pid > 0) {
		kill(srv->pid, SIGKILL);
		waitpid(srv->pid, NULL, 0);
		srv->pid = -1;
	}
	if (srv->lfd >= 0)
		close(srv->lfd);
	srv->lfd = -1;
	if (srv->out)
		munmap(srv->out, sizeof(*srv->out));
	srv->out = NULL;
}

struct ktm_config *t_config(enum ktm_endpoint ep, const char *dir,
			    enum ktm_ktls_policy policy)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg = ktm_config_new(ep, &err);

	if (cfg && dir && !ktm_config_set_creds_dir(cfg, dir, &err)) {
		ktm_config_free(cfg);
		cfg = NULL;
	}
	if (!cfg) {
		printf("# t_config: %s\n", ktm_error_message(err));
		ktm_error_free(err);
		return NULL;
	}
	ktm_config_set_ktls(cfg, policy);
	ktm_config_set_timeouts(cfg, 5000, 5000);
	return cfg;
}

/*
 * The test's own knowledge of the tier, never the library's probe: under
 * KTLS_REQUIRE=1 (the guest tier, CI) kernel TLS is there by definition,
 * so a session that falls back is a failure; otherwise ask the kernel
 * directly (TCP_ULP "tls" on a throwaway connection, raw setsockopt).
 */
bool t_kernel_has_ktls(void)
{
	const char *req = getenv("KTLS_REQUIRE");
	int fds[2];
	bool yes;

	if (req && !strcmp(req, "1"))
		return true;
	if (ktm_net_tcp_pair(fds))
		return false;
	yes = setsockopt(fds[0], IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	close(fds[0]);
	close(fds[1]);
	return yes;
}

bool t_kernel_at_least(unsigned int major, unsigned int minor)
{
	struct utsname u;
	unsigned int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%u.%u", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

bool t_kernel_can_rekey(void)
{
	return t_kernel_at_least(6, 14);
}

bool t_session_can_rekey(enum ktm_tls_version v)
{
	return v == KTM_TLS_1_3 && (!t_kernel_has_ktls() || t_kernel_can_rekey());
}

uint8_t *t_prng_bytes(size_t len, uint32_t seed)
{
	uint8_t *buf = malloc(len);
	uint32_t x = seed;
	size_t i;

	for (i = 0; buf && i + 4 <= len; i += 4) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		memcpy(buf + i, &x, 4);
	}
	return buf;
}

int t_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && write(fd, buf, len) == (ssize_t)len;

	if (fd >= 0)
		ok = !close(fd) && ok;
	return ok ? 0 : -1;
}

int t_prng_file(const char *path, size_t len, uint32_t seed)
{
	uint8_t *buf = t_prng_bytes(len, seed);
	int ret = buf ? t_write_file(path, buf, len) : -1;

	free(buf);
	return ret;
}

uint8_t t_pattern(uint64_t i)
{
	return (uint8_t)(i * 7 + (i >> 9));
}

static void *sink_main(void *arg)
{
	struct t_sink *k = arg;
	uint8_t buf[65536];
	int fd = accept(k->lfd, NULL, NULL);
	ssize_t n = -1, i;

	k->pattern_ok = true;
	while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0) {
		for (i = 0; i < n; i++)
			if (buf[i] != t_pattern(k->bytes + (uint64_t)i))
				k->pattern_ok = false;
		k->bytes += (uint64_t)n;
	}
	k->eof = fd >= 0 && n == 0;
	if (fd >= 0)
		close(fd);
	return NULL;
}

int t_sink_start(struct t_sink *k)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);

	memset(k, 0, sizeof(*k));
	k->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (k->lfd < 0 || bind(k->lfd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    listen(k->lfd, 4) || getsockname(k->lfd, (struct sockaddr *)&sin, &sl))
		return -1;
	snprintf(k->addr, sizeof(k->addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	return pthread_create(&k->thread, NULL, sink_main, k) ? -1 : 0;
}

void t_sink_end(struct t_sink *k)
{
	shutdown(k->lfd, SHUT_RDWR);	/* an accept that never came */
	pthread_join(k->thread, NULL);
	close(k->lfd);
}
