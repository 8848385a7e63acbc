// SPDX-License-Identifier: MIT
/*
 * The error contract of ktm.h (QEMU's errp rules) and the harness's own
 * comparisons.  Expected values come from C's arithmetic and the contract
 * text, not from the code under test.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"	/* ktm_net_tcp_pair */
#include "ktm.h"
#include "peer.h"
#include "pki.h"

/* Run @fn in a child; its wait status. */
static int in_child(void (*fn)(void))
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		/* no core file, no sanitizer report for the expected abort */
		signal(SIGABRT, SIG_DFL);
		fn();
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static void set_twice(void)
{
	struct ktm_error *err = NULL;

	ktm_error_set(&err, KTM_ERR_IO, EIO, "first");
	ktm_error_set(&err, KTM_ERR_IO, EIO, "second");
}

static void propagate_over_set(void)
{
	struct ktm_error *err = NULL, *other = NULL;

	ktm_error_set(&err, KTM_ERR_IO, EIO, "first");
	ktm_error_set(&other, KTM_ERR_PEER, EPIPE, "second");
	ktm_error_propagate(&err, other);
}

TEST(error_set_twice_aborts)
{
	int st = in_child(set_twice);

	ASSERT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGABRT);
}

TEST(error_propagate_over_set_aborts)
{
	int st = in_child(propagate_over_set);

	ASSERT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGABRT);
}

TEST(error_propagate_moves_or_frees)
{
	struct ktm_error *src = NULL, *dst = NULL;

	ktm_error_set(&src, KTM_ERR_PEER, -EPIPE, "peer %s left", "h:1");
	ktm_error_hint_set(&src, "restart %d", 2);
	ktm_error_propagate(&dst, src);
	ASSERT_TRUE(dst == src);
	EXPECT_EQ(ktm_error_class(dst), KTM_ERR_PEER);
	EXPECT_EQ(ktm_error_errno(dst), EPIPE);
	EXPECT_STREQ(ktm_error_message(dst), "peer h:1 left");
	EXPECT_STREQ(ktm_error_hint(dst), "restart 2");
	ktm_error_free(dst);

	/* NULL destination: freed (ASan's leak check sees it otherwise) */
	src = NULL;
	ktm_error_set(&src, KTM_ERR_IO, EIO, "dropped");
	ktm_error_propagate(NULL, src);
	/* NULL error: nothing happens */
	dst = NULL;
	ktm_error_propagate(&dst, NULL);
	EXPECT_TRUE(dst == NULL);
}

TEST(error_null_errp_ignored)
{
	ktm_error_set(NULL, KTM_ERR_IO, EIO, "nobody listens");
	ktm_error_hint_set(NULL, "none");
}

/* ---- every failing public call sets the error ------------------------- */

/*
 * "On failure it is set exactly once" (ktm.h): each row makes one public
 * call fail from the outside (bad input, a closed socket, a missing file)
 * and says whether the return value reported the failure; the table test
 * then asks for an error with a class and a message.
 */
struct c_ctx {
	char dir[64];
	struct ktm_config *ccfg, *scfg;	/* good credentials */
};

/* A client and a server session on a loopback pair, handshaken in this
 * thread (userspace TLS, version @v), fds blocking again; 0 or -1. */
static int c_pair(struct c_ctx *c, enum ktm_tls_version v,
		  struct ktm_session *s[2], int fds[2])
{
	struct ktm_config *cfg[2] = { c->ccfg, c->scfg };
	enum ktm_handshake r[2] = { KTM_HANDSHAKE_WANT_WRITE,
				    KTM_HANDSHAKE_WANT_WRITE };
	int i, rounds;

	s[0] = s[1] = NULL;
	if (ktm_net_tcp_pair(fds))
		return -1;
	for (i = 0; i < 2; i++) {
		ktm_config_set_versions(cfg[i], v, v, NULL);
		ktm_config_set_ktls(cfg[i], KTM_KTLS_OFF);
		fcntl(fds[i], F_SETFL, O_NONBLOCK);
		s[i] = ktm_session_start(cfg[i], fds[i], i ? NULL : "localhost",
					 NULL);
	}
	for (rounds = 0; s[0] && s[1] && rounds < 1000; rounds++) {
		struct pollfd p[2];

		for (i = 0; i < 2; i++) {
			if (r[i] != KTM_HANDSHAKE_DONE)
				r[i] = ktm_session_handshake(s[i], NULL);
			p[i].fd = ktm_session_poll_fd(s[i], &p[i].events);
			if (r[i] == KTM_HANDSHAKE_DONE || r[i] == KTM_HANDSHAKE_ERROR)
				p[i].fd = -1;
		}
		if (r[0] == KTM_HANDSHAKE_DONE && r[1] == KTM_HANDSHAKE_DONE) {
			fcntl(fds[0], F_SETFL, 0);
			fcntl(fds[1], F_SETFL, 0);
			return 0;
		}
		if (r[0] == KTM_HANDSHAKE_ERROR || r[1] == KTM_HANDSHAKE_ERROR)
			break;
		poll(p, 2, 1000);
	}
	ktm_session_free(s[0]);
	ktm_session_free(s[1]);
	close(fds[0]);
	close(fds[1]);
	return -1;
}

static void c_unpair(struct ktm_session *s[2], int fds[2])
{
	ktm_session_free(s[0]);
	ktm_session_free(s[1]);
	close(fds[0]);
	close(fds[1]);
}

static bool f_config_new(struct c_ctx *c, struct ktm_error **errp)
{
	(void)c;
	return !ktm_config_new((enum ktm_endpoint)7, errp);
}

static bool f_creds_dir(struct c_ctx *c, struct ktm_error **errp)
{
	(void)c;
	return !ktm_config_set_creds_dir(c->ccfg, "/nonexistent/creds", errp);
}

static bool f_reload(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_CLIENT, NULL);
	bool failed = !ktm_config_reload(cfg, errp);

	(void)c;
	ktm_config_free(cfg);
	return failed;
}

static bool f_passphrase(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_set_key_passphrase_file(c->ccfg, "/nonexistent/pass",
						   errp);
}

static bool f_hostname(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_set_hostname(c->ccfg, "", errp);
}

static bool f_versions(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_set_versions(c->ccfg, KTM_TLS_1_3, KTM_TLS_1_2, errp);
}

static bool f_ciphers(struct c_ctx *c, struct ktm_error **errp)
{
	enum ktm_cipher none = (enum ktm_cipher)99;

	return !ktm_config_set_ciphers(c->ccfg, &none, 1, errp);
}

static bool f_pin(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_add_pin(c->ccfg, "not-a-pin", errp);
}

static bool f_allow(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_add_allow(c->ccfg, "cn:foo", errp);
}

static bool f_allow_file(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_load_allow_file(c->ccfg, "/nonexistent/allow", errp);
}

static bool f_check_exec(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_config_set_check_exec(c->ccfg, "/nonexistent/hook", NULL,
					  NULL, errp);
}

static bool f_connect_server_cfg(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_session_connect(c->scfg, "127.0.0.1", "9", errp);
}

static bool f_connect_unresolvable(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_session_connect(c->ccfg, "no-such-host.invalid", "9", errp);
}

static bool f_accept_bad_fd(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_session_accept(c->scfg, -1, errp);
}

/* the path that returned NULL without an error before the event-loop
 * handshake: an fd whose O_NONBLOCK cannot be set */
static bool f_new_fd_bad_fd(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_session_new_fd(c->ccfg, 1 << 20, "localhost", errp);
}

static bool f_new_fd_no_creds(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_CLIENT, NULL);
	int fds[2];
	bool failed;

	(void)c;
	if (ktm_net_tcp_pair(fds))
		return false;
	failed = !ktm_session_new_fd(cfg, fds[0], "localhost", errp);
	close(fds[1]);
	ktm_config_free(cfg);
	return failed;
}

static bool f_start_bad_fd(struct c_ctx *c, struct ktm_error **errp)
{
	return !ktm_session_start(c->ccfg, 1 << 20, "localhost", errp);
}

static bool f_handshake_after_failure(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s;
	int fds[2];
	bool failed = false;

	if (ktm_net_tcp_pair(fds))
		return false;
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	close(fds[1]);	/* the peer is gone before the first step */
	s = ktm_session_start(c->ccfg, fds[0], "localhost", NULL);
	if (s && ktm_session_handshake(s, NULL) == KTM_HANDSHAKE_ERROR)
		failed = ktm_session_handshake(s, errp) == KTM_HANDSHAKE_ERROR;
	ktm_session_free(s);
	close(fds[0]);
	return failed;
}

static bool f_send_after_own_shutdown(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s[2];
	int fds[2];
	bool failed;

	if (c_pair(c, KTM_TLS_1_3, s, fds))
		return false;
	shutdown(fds[0], SHUT_WR);
	failed = !ktm_session_send(s[0], "x", 1, errp);
	c_unpair(s, fds);
	return failed;
}

static bool f_recv_truncated(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s[2];
	char buf[8];
	int fds[2];
	bool failed;

	if (c_pair(c, KTM_TLS_1_3, s, fds))
		return false;
	shutdown(fds[1], SHUT_WR);	/* FIN without close_notify */
	failed = ktm_session_recv(s[0], buf, sizeof(buf), errp) < 0;
	c_unpair(s, fds);
	return failed;
}

static bool f_shutdown_broken(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s[2];
	int fds[2];
	bool failed;

	if (c_pair(c, KTM_TLS_1_3, s, fds))
		return false;
	shutdown(fds[0], SHUT_WR);
	failed = !ktm_session_shutdown(s[0], errp);
	c_unpair(s, fds);
	return failed;
}

static bool f_detach_userspace(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s[2];
	int fds[2];
	bool failed;

	if (c_pair(c, KTM_TLS_1_3, s, fds))
		return false;
	failed = ktm_session_detach(s[0], errp) < 0;
	c_unpair(s, fds);
	return failed;
}

static bool f_rekey_tls12(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_session *s[2];
	int fds[2];
	bool failed;

	if (c_pair(c, KTM_TLS_1_2, s, fds))
		return false;
	failed = !ktm_session_rekey(s[0], errp);
	c_unpair(s, fds);
	return failed;
}

static bool f_cert_names(struct c_ctx *c, struct ktm_error **errp)
{
	char subject[64], sans[64];

	(void)c;
	return !ktm_cert_names("junk", 4, subject, sizeof(subject), sans,
			       sizeof(sans), errp);
}

static bool f_fd_key_records(struct c_ctx *c, struct ktm_error **errp)
{
	uint64_t n;
	int fds[2];
	bool failed;

	(void)c;
	if (ktm_net_tcp_pair(fds))
		return false;
	failed = !ktm_fd_key_records(fds[0], KTM_CIPHER_AES_GCM_128, KTM_DIR_TX,
				     &n, errp);
	close(fds[0]);
	close(fds[1]);
	return failed;
}

static bool f_fd_send(struct c_ctx *c, struct ktm_error **errp)
{
	(void)c;
	return !ktm_fd_send(-1, 0, "x", errp);
}

static bool f_fd_recv(struct c_ctx *c, struct ktm_error **errp)
{
	char name[8];

	(void)c;
	return ktm_fd_recv(-1, name, sizeof(name), errp) < 0;
}

static bool f_channels(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_migration *m = ktm_migration_new(c->ccfg, NULL);
	bool failed = m && !ktm_migration_set_channels(m, 0, errp);

	ktm_migration_free(m);
	return failed;
}

static bool f_request_pages(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_migration *m = ktm_migration_new(c->scfg, NULL);
	bool failed = m && !ktm_migration_request_pages(m, 1, 4096, errp);

	ktm_migration_free(m);
	return failed;
}

static bool f_check_target(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_migration *m = ktm_migration_new(c->scfg, NULL);
	bool failed = m && !ktm_migration_check_target(m, "/nonexistent/dir/img",
						       errp);

	ktm_migration_free(m);
	return failed;
}

static bool f_migration_send_refused(struct c_ctx *c, struct ktm_error **errp)
{
	struct ktm_migration *m = ktm_migration_new(c->ccfg, NULL);
	int fd = open("/dev/null", O_RDONLY);
	bool failed = m && fd >= 0 &&
		      !ktm_migration_send(m, "127.0.0.1", "9", fd, errp);

	if (fd >= 0)
		close(fd);
	ktm_migration_free(m);
	return failed;
}

static bool f_migration_recv_bad_target(struct c_ctx *c,
					struct ktm_error **errp)
{
	struct ktm_migration *m = ktm_migration_new(c->scfg, NULL);
	bool failed = m && !ktm_migration_recv(m, -1, "/nonexistent/dir/img",
					       errp);

	ktm_migration_free(m);
	return failed;
}

static const struct {
	const char *name;
	bool (*call)(struct c_ctx *c, struct ktm_error **errp);
} c_rows[] = {
	{ "ktm_config_new", f_config_new },
	{ "ktm_config_set_creds_dir", f_creds_dir },
	{ "ktm_config_reload", f_reload },
	{ "ktm_config_set_key_passphrase_file", f_passphrase },
	{ "ktm_config_set_hostname", f_hostname },
	{ "ktm_config_set_versions", f_versions },
	{ "ktm_config_set_ciphers", f_ciphers },
	{ "ktm_config_add_pin", f_pin },
	{ "ktm_config_add_allow", f_allow },
	{ "ktm_config_load_allow_file", f_allow_file },
	{ "ktm_config_set_check_exec", f_check_exec },
	{ "ktm_session_connect (server config)", f_connect_server_cfg },
	{ "ktm_session_connect (unresolvable)", f_connect_unresolvable },
	{ "ktm_session_accept", f_accept_bad_fd },
	{ "ktm_session_new_fd (bad fd)", f_new_fd_bad_fd },
	{ "ktm_session_new_fd (no credentials)", f_new_fd_no_creds },
	{ "ktm_session_start", f_start_bad_fd },
	{ "ktm_session_handshake (after a failure)", f_handshake_after_failure },
	{ "ktm_session_send", f_send_after_own_shutdown },
	{ "ktm_session_recv", f_recv_truncated },
	{ "ktm_session_shutdown", f_shutdown_broken },
	{ "ktm_session_detach", f_detach_userspace },
	{ "ktm_session_rekey", f_rekey_tls12 },
	{ "ktm_cert_names", f_cert_names },
	{ "ktm_fd_key_records", f_fd_key_records },
	{ "ktm_fd_send", f_fd_send },
	{ "ktm_fd_recv", f_fd_recv },
	{ "ktm_migration_set_channels", f_channels },
	{ "ktm_migration_request_pages", f_request_pages },
	{ "ktm_migration_check_target", f_check_target },
	{ "ktm_migration_send", f_migration_send_refused },
	{ "ktm_migration_recv", f_migration_recv_bad_target },
};

TEST_TIMEOUT(every_failing_public_call_sets_the_error, 60)
{
	struct t_pki_opts o = { .server_dns = { "localhost" } };
	struct c_ctx c;
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(t_pki_make_temp(c.dir, sizeof(c.dir), &o), 0);
	for (i = 0; i < sizeof(c_rows) / sizeof(c_rows[0]); i++) {
		struct ktm_error *err = NULL;
		bool failed;

		c.ccfg = t_config(KTM_ENDPOINT_CLIENT, c.dir, KTM_KTLS_PREFER);
		c.scfg = t_config(KTM_ENDPOINT_SERVER, c.dir, KTM_KTLS_PREFER);
		ASSERT_NE(c.ccfg, NULL);
		ASSERT_NE(c.scfg, NULL);
		ktm_config_set_timeouts(c.ccfg, 2000, 2000);
		failed = c_rows[i].call(&c, &err);
		printf("# %s: %s\n", c_rows[i].name,
		       err ? ktm_error_message(err) : "(no error)");
		if (!failed)
			TH_LOG("%s did not fail", c_rows[i].name);
		EXPECT_TRUE(failed);
		if (!err)
			TH_LOG("%s failed without setting the error",
			       c_rows[i].name);
		EXPECT_NE(err, NULL);
		if (err) {
			EXPECT_GE(ktm_error_class(err), KTM_ERR_CONFIG);
			EXPECT_LE(ktm_error_class(err), KTM_ERR_INTERNAL);
			EXPECT_GT(strlen(ktm_error_message(err)), 0);
		}
		ktm_error_free(err);
		ktm_config_free(c.ccfg);
		ktm_config_free(c.scfg);
	}
	t_pki_remove(c.dir);
}

/* ---- the harness compares in each operand's own type ---- */

static bool cmp(int op, uint64_t a, int64_t b)
{
	struct t_meta m = { 0 };
	struct t_operand oa = { 0, sizeof(a), &a }, ob = { 1, sizeof(b), &b };

	return t_check_cmp(&m, __FILE__, __LINE__, "probe", op, oa, ob) &&
	       m.result == T_PASS;
}

TEST(harness_compares_64_bit_values_exactly)
{
	uint64_t big = UINT64_MAX, two63 = (uint64_t)1 << 63;
	int64_t minus1 = -1;

	/* through long long, UINT64_MAX == -1 and 2^63 < 0 */
	EXPECT_FALSE(cmp(T_OP_EQ, big, minus1));
	EXPECT_TRUE(cmp(T_OP_GT, big, minus1));
	EXPECT_TRUE(cmp(T_OP_GT, two63, INT64_MAX));
	EXPECT_FALSE(cmp(T_OP_LT, two63, 0));
	EXPECT_TRUE(cmp(T_OP_EQ, 5, 5));
	EXPECT_NE(big, (uint64_t)minus1 - 1);
	EXPECT_GT(two63, INT64_MAX);
	EXPECT_LT(-1, 0u + 1);
	EXPECT_NE(0.5, 0);
}

TEST_HARNESS_MAIN
