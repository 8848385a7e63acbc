// SPDX-License-Identifier: MIT
/*
 * examples/server.c: accept one TLS client with libktm, echo what it sends
 * back in upper case, and say which data path the session took.
 *
 *   cc -o server server.c $(pkg-config --cflags --libs libktm)
 *   ./server CREDS_DIR PORT        (PORT 0: any free port, printed)
 *
 * CREDS_DIR holds ca-cert.pem, server-cert.pem and server-key.pem
 * (ktls-migrate-creds(5)).  Only the installed header is used.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ktm.h>

static int fail(struct ktm_error *err)
{
	const char *hint = ktm_error_hint(err);

	fprintf(stderr, "server: %s\n", ktm_error_message(err));
	if (hint)
		fprintf(stderr, "  hint: %s\n", hint);
	ktm_error_free(err);
	return 1;
}

/* A loopback listener on @port; prints the port it got. */
static int listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((unsigned short)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), on = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 1) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		close(fd);
		return -1;
	}
	printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
	fflush(stdout);
	return fd;
}

static int serve(struct ktm_session *s)
{
	struct ktm_error *err = NULL;
	char buf[4096];
	ssize_t n, i;

	while ((n = ktm_session_recv(s, buf, sizeof(buf), &err)) > 0) {
		for (i = 0; i < n; i++)
			buf[i] = (char)toupper((unsigned char)buf[i]);
		if (!ktm_session_send(s, buf, (size_t)n, &err))
			return fail(err);
	}
	if (n < 0)
		return fail(err);
	if (!ktm_session_shutdown(s, &err))
		return fail(err);
	return 0;
}

int main(int argc, char **argv)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	struct ktm_session *s;
	int lfd, ret;

	if (argc != 3) {
		fprintf(stderr, "usage: server CREDS_DIR PORT\n");
		return 2;
	}
	cfg = ktm_config_new(KTM_ENDPOINT_SERVER, &err);
	if (!cfg || !ktm_config_set_creds_dir(cfg, argv[1], &err)) {
		ktm_config_free(cfg);
		return fail(err);
	}
	lfd = listen_on(atoi(argv[2]));
	if (lfd < 0) {
		perror("server: listen");
		ktm_config_free(cfg);
		return 1;
	}
	s = ktm_session_accept(cfg, lfd, &err);
	close(lfd);
	if (!s) {
		ktm_config_free(cfg);
		return fail(err);
	}
	printf("client %s, %s %s, data path %s\n", ktm_session_peer_subject(s),
	       ktm_tls_version_name(ktm_session_version(s)),
	       ktm_cipher_name(ktm_session_cipher(s)),
	       ktm_path_name(ktm_session_path(s, KTM_DIR_RX)));
	ret = serve(s);
	ktm_session_free(s);
	ktm_config_free(cfg);
	return ret;
}
