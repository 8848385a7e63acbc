// SPDX-License-Identifier: MIT
/*
 * examples/poll_pair.c: two sessions, a client and a server on the two
 * ends of one loopback TCP connection, handshaken by one thread with
 * poll(2) through libktm's event-loop calls; then a message each way and
 * each session's data path.
 *
 *   cc -o poll_pair poll_pair.c $(pkg-config --cflags --libs libktm)
 *   ./poll_pair CREDS_DIR [prefer|require]
 *
 * CREDS_DIR holds both ends' credentials (ca-cert.pem, server-cert.pem,
 * server-key.pem, client-cert.pem, client-key.pem; ktls-migrate-creds(5)),
 * the server's certificate naming "localhost".  "require" (default
 * "prefer") fails unless the kernel takes the keys.  Exit status 0 when
 * both handshakes completed and both messages arrived.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ktm.h>

static int fail(const char *who, struct ktm_error *err)
{
	const char *hint = ktm_error_hint(err);

	fprintf(stderr, "poll_pair: %s: %s\n", who, ktm_error_message(err));
	if (hint)
		fprintf(stderr, "  hint: %s\n", hint);
	ktm_error_free(err);
	return 1;
}

static int set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK :
				   fl & ~O_NONBLOCK);
}

/* A connected loopback TCP pair: fds[0] the client's end, fds[1] the
 * server's.  0 or -1 (errno). */
static int tcp_pair(int fds[2])
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	int ret = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	fds[1] = -1;
	if (lfd >= 0 && fds[0] >= 0 &&
	    !bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) && !listen(lfd, 1) &&
	    !getsockname(lfd, (struct sockaddr *)&sin, &sl) &&
	    !connect(fds[0], (struct sockaddr *)&sin, sizeof(sin))) {
		fds[1] = accept(lfd, NULL, NULL);
		ret = fds[1] < 0 ? -1 : 0;
	}
	if (lfd >= 0)
		close(lfd);
	if (ret && fds[0] >= 0)
		close(fds[0]);
	return ret;
}

static struct ktm_config *config(enum ktm_endpoint ep, const char *dir,
				 enum ktm_ktls_policy policy,
				 struct ktm_error **errp)
{
	struct ktm_config *cfg = ktm_config_new(ep, errp);

	if (cfg && !ktm_config_set_creds_dir(cfg, dir, errp)) {
		ktm_config_free(cfg);
		return NULL;
	}
	if (cfg)
		ktm_config_set_ktls(cfg, policy);
	return cfg;
}

/*
 * The event loop: step each session whose handshake is not done, then
 * wait in one poll(2) for whatever they want, at most until the nearer
 * deadline.  0 when both are done, else 1 (the error printed).
 */
static int handshake_both(struct ktm_session *s[2])
{
	static const char *const who[2] = { "client", "server" };
	enum ktm_handshake r[2] = { KTM_HANDSHAKE_WANT_WRITE,
				    KTM_HANDSHAKE_WANT_WRITE };

	for (;;) {
		struct pollfd p[2];
		int i, n = 0, timeout = -1;

		for (i = 0; i < 2; i++) {
			struct ktm_error *err = NULL;
			int t;

			if (r[i] == KTM_HANDSHAKE_DONE)
				continue;
			r[i] = ktm_session_handshake(s[i], &err);
			if (r[i] == KTM_HANDSHAKE_ERROR)
				return fail(who[i], err);
			if (r[i] == KTM_HANDSHAKE_DONE)
				continue;
			p[n].fd = ktm_session_poll_fd(s[i], &p[n].events);
			n++;
			t = ktm_session_poll_timeout(s[i]);
			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		if (!n)
			return 0;
		if (poll(p, (nfds_t)n, timeout) < 0 && errno != EINTR) {
			perror("poll_pair: poll");
			return 1;
		}
	}
}

/* @msg from @a to @b; 0 or 1 (printed). */
static int pass(struct ktm_session *a, struct ktm_session *b,
		const char *who, const char *msg)
{
	struct ktm_error *err = NULL;
	size_t len = strlen(msg), have = 0;
	char buf[64];

	if (!ktm_session_send(a, msg, len, &err))
		return fail(who, err);
	while (have < len) {
		ssize_t n = ktm_session_recv(b, buf + have, sizeof(buf) - 1 - have,
					     &err);

		if (n < 0)
			return fail(who, err);
		if (n == 0)
			break;
		have += (size_t)n;
	}
	buf[have] = '\0';
	printf("%s got: %s\n", strcmp(who, "client") ? "client" : "server", buf);
	return strcmp(buf, msg) != 0;
}

static void report(const char *who, const struct ktm_session *s)
{
	const char *why = ktm_session_fallback_reason(s);

	printf("%s data path: %s (%s, %s)\n", who,
	       ktm_path_name(ktm_session_path(s, KTM_DIR_TX)),
	       ktm_tls_version_name(ktm_session_version(s)),
	       ktm_cipher_name(ktm_session_cipher(s)));
	if (why)
		printf("%s userspace because: %s\n", who, why);
}

static int run(const char *dir, enum ktm_ktls_policy policy, int fds[2])
{
	struct ktm_error *err = NULL;
	struct ktm_config *ccfg, *scfg = NULL;
	struct ktm_session *s[2] = { NULL, NULL };
	int ret = 1;

	ccfg = config(KTM_ENDPOINT_CLIENT, dir, policy, &err);
	if (ccfg)
		scfg = config(KTM_ENDPOINT_SERVER, dir, policy, &err);
	/* the fds are ours; the sessions borrow them, non-blocking */
	if (scfg && (set_nonblock(fds[0], 1) || set_nonblock(fds[1], 1)))
		perror("poll_pair: O_NONBLOCK");
	else if (scfg)
		s[0] = ktm_session_start(ccfg, fds[0], "localhost", &err);
	if (s[0])
		s[1] = ktm_session_start(scfg, fds[1], NULL, &err);
	if (err)
		ret = fail("setup", err);
	else if (s[1] && !handshake_both(s)) {
		report("client", s[0]);
		report("server", s[1]);
		/* the blocking send and receive want blocking sockets */
		ret = set_nonblock(fds[0], 0) || set_nonblock(fds[1], 0) ||
		      pass(s[0], s[1], "client", "ping") ||
		      pass(s[1], s[0], "server", "pong");
	}
	ktm_session_free(s[0]);
	ktm_session_free(s[1]);
	ktm_config_free(ccfg);
	ktm_config_free(scfg);
	return ret;
}

int main(int argc, char **argv)
{
	enum ktm_ktls_policy policy = KTM_KTLS_PREFER;
	int fds[2], ret;

	if (argc == 3 && !strcmp(argv[2], "require"))
		policy = KTM_KTLS_REQUIRE;
	else if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "prefer"))) {
		fprintf(stderr, "usage: poll_pair CREDS_DIR [prefer|require]\n");
		return 2;
	}
	if (tcp_pair(fds)) {
		perror("poll_pair: loopback connection");
		return 1;
	}
	ret = run(argv[1], policy, fds);
	close(fds[0]);
	close(fds[1]);
	return ret;
}
