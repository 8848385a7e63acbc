// SPDX-License-Identifier: MIT
/*
 * examples/client.c: connect to examples/server with libktm, send a
 * message, print the reply and the session's data path.
 *
 *   cc -o client client.c $(pkg-config --cflags --libs libktm)
 *   ./client CREDS_DIR HOST PORT MESSAGE
 *
 * CREDS_DIR holds ca-cert.pem, client-cert.pem and client-key.pem; the
 * server's certificate must name HOST (ktls-migrate-creds(5)).  The
 * session takes kernel TLS when this kernel has it and says why not
 * otherwise (KTM_KTLS_PREFER).
 */
#include <stdio.h>
#include <string.h>

#include <ktm.h>

static int fail(struct ktm_error *err)
{
	const char *hint = ktm_error_hint(err);

	fprintf(stderr, "client: %s\n", ktm_error_message(err));
	if (hint)
		fprintf(stderr, "  hint: %s\n", hint);
	ktm_error_free(err);
	return 1;
}

/* Send @msg, half-close with close_notify, print everything that comes back. */
static int talk(struct ktm_session *s, const char *msg)
{
	struct ktm_error *err = NULL;
	char buf[4096];
	ssize_t n;

	if (!ktm_session_send(s, msg, strlen(msg), &err) ||
	    !ktm_session_shutdown(s, &err))
		return fail(err);
	printf("reply: ");
	while ((n = ktm_session_recv(s, buf, sizeof(buf), &err)) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	printf("\n");
	return n < 0 ? fail(err) : 0;
}

int main(int argc, char **argv)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	struct ktm_session *s;
	const char *why;
	int ret;

	if (argc != 5) {
		fprintf(stderr, "usage: client CREDS_DIR HOST PORT MESSAGE\n");
		return 2;
	}
	cfg = ktm_config_new(KTM_ENDPOINT_CLIENT, &err);
	if (!cfg || !ktm_config_set_creds_dir(cfg, argv[1], &err)) {
		ktm_config_free(cfg);
		return fail(err);
	}
	ktm_config_set_ktls(cfg, KTM_KTLS_PREFER);
	s = ktm_session_connect(cfg, argv[2], argv[3], &err);
	if (!s) {
		ktm_config_free(cfg);
		return fail(err);
	}
	why = ktm_session_fallback_reason(s);
	printf("server %s, %s %s, data path %s%s%s\n",
	       ktm_session_peer_subject(s),
	       ktm_tls_version_name(ktm_session_version(s)),
	       ktm_cipher_name(ktm_session_cipher(s)),
	       ktm_path_name(ktm_session_path(s, KTM_DIR_TX)),
	       why ? ": " : "", why ? why : "");
	ret = talk(s, argv[4]);
	ktm_session_free(s);
	ktm_config_free(cfg);
	return ret;
}
