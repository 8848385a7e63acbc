// SPDX-License-Identifier: MIT
/*
 * The event-loop handshake (ktm_session_start/_handshake/_poll_fd/
 * _poll_timeout): client and server driven from one thread with poll(2),
 * on loopback TCP pairs, on every TLS version x cipher; then data both
 * ways.  Natively the sessions take the userspace path; in the guest tier
 * (KTLS_REQUIRE=1) the tier says kernel TLS is there, so both ends must
 * report the kernel path.
 *
 * A step never blocks: against a silent peer it answers at once (a step
 * that blocked would hang here until the harness's timeout failed the
 * test).  Failures give the blocking handshake's class and sentence (the
 * texts of tests/session/session.c): untrusted CA, hostname mismatch,
 * allow-list refusal, a vetoing hook, a hook past its timeout (while the
 * loop serves another pair to the end), a peer that closes mid-handshake.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "harness.h"
#include "internal.h"
#include "peer.h"
#include "pki.h"

/* ---- one thread, many sessions ----------------------------------------- */

/* One end of a pair as the loop sees it. */
struct t_end {
	int fd;
	struct ktm_session *s;	/* NULL once it failed (freed) */
	enum ktm_handshake last;
	int cls, err;
	char msg[512], hint[512];
	unsigned int done_at;	/* loop round it ended in (done or error) */
	unsigned int steps;
};

struct t_pair {
	char dir[64];
	struct ktm_config *ccfg, *scfg;
	struct t_end c, s;
};

static int t_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* Credentials from @o, both configs (prefer), no sessions yet. */
static int t_pair_init(struct t_pair *p, const struct t_pki_opts *o)
{
	memset(p, 0, sizeof(*p));
	p->c.fd = p->s.fd = -1;
	if (t_pki_make_temp(p->dir, sizeof(p->dir), o))
		return -1;
	p->ccfg = t_config(KTM_ENDPOINT_CLIENT, p->dir, KTM_KTLS_PREFER);
	p->scfg = t_config(KTM_ENDPOINT_SERVER, p->dir, KTM_KTLS_PREFER);
	return p->ccfg && p->scfg ? 0 : -1;
}

/* A loopback TCP pair, non-blocking, and a session on @start ends (the
 * client verifies "localhost").  0 or -1. */
static int t_end_start(struct t_end *e, const struct ktm_config *cfg,
		       const char *name)
{
	struct ktm_error *err = NULL;

	e->last = KTM_HANDSHAKE_WANT_WRITE;
	e->s = ktm_session_start(cfg, e->fd, name, &err);
	if (!e->s)
		printf("# start: %s\n", ktm_error_message(err));
	ktm_error_free(err);
	return e->s ? 0 : -1;
}

static int t_pair_connect(struct t_pair *p, bool client, bool server)
{
	int fds[2];

	if (ktm_net_tcp_pair(fds))
		return -1;
	p->c.fd = fds[0];
	p->s.fd = fds[1];
	if (t_nonblock(fds[0], true) || t_nonblock(fds[1], true))
		return -1;
	if (client && t_end_start(&p->c, p->ccfg, "localhost"))
		return -1;
	if (server && t_end_start(&p->s, p->scfg, NULL))
		return -1;
	return 0;
}

static void t_pair_end(struct t_pair *p)
{
	ktm_session_free(p->c.s);
	ktm_session_free(p->s.s);
	if (p->c.fd >= 0)
		close(p->c.fd);
	if (p->s.fd >= 0)
		close(p->s.fd);
	ktm_config_free(p->ccfg);
	ktm_config_free(p->scfg);
	t_pki_remove(p->dir);
}

static bool t_end_running(const struct t_end *e)
{
	return e->s && e->last != KTM_HANDSHAKE_DONE &&
	       e->last != KTM_HANDSHAKE_ERROR;
}

/* One step of @e; a failed end records its error, frees its session and
 * closes its socket, as a caller would. */
static void t_end_step(struct t_end *e, unsigned int round)
{
	struct ktm_error *err = NULL;

	e->last = ktm_session_handshake(e->s, &err);
	e->steps++;
	if (e->last == KTM_HANDSHAKE_DONE)
		e->done_at = round;
	if (e->last != KTM_HANDSHAKE_ERROR)
		return;
	e->done_at = round;
	if (err) {
		e->cls = ktm_error_class(err);
		e->err = ktm_error_errno(err);
		snprintf(e->msg, sizeof(e->msg), "%s", ktm_error_message(err));
		snprintf(e->hint, sizeof(e->hint), "%s",
			 ktm_error_hint(err) ? ktm_error_hint(err) : "");
		printf("# step: %s\n", e->msg);
	}
	ktm_error_free(err);
	ktm_session_free(e->s);
	e->s = NULL;
	close(e->fd);
	e->fd = -1;
}

/*
 * Drive every running end of @ends (n of them) in this thread: step each,
 * then one poll(2) over what they wait for, with the nearest deadline,
 * until none runs or @rounds passed.  The rounds it took.
 */
static unsigned int t_drive(struct t_end **ends, size_t n, unsigned int rounds)
{
	unsigned int round;

	for (round = 1; round <= rounds; round++) {
		struct pollfd p[8];
		int timeout = -1;
		size_t i, np = 0;

		for (i = 0; i < n; i++)
			if (t_end_running(ends[i]))
				t_end_step(ends[i], round);
		for (i = 0; i < n && np < 8; i++) {
			int t;

			if (!t_end_running(ends[i]))
				continue;
			p[np].fd = ktm_session_poll_fd(ends[i]->s, &p[np].events);
			p[np++].revents = 0;
			t = ktm_session_poll_timeout(ends[i]->s);
			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		if (!np)
			return round;
		poll(p, np, timeout);
	}
	return round;
}

static unsigned int t_drive_pair(struct t_pair *p)
{
	struct t_end *ends[2] = { &p->c, &p->s };

	return t_drive(ends, 2, 10000);
}

/* @msg from @a to @b (blocking calls, O_NONBLOCK cleared as ktm.h says);
 * true when it arrived whole. */
static bool t_pass(struct ktm_session *a, struct ktm_session *b,
		   const char *msg)
{
	struct ktm_error *err = NULL;
	size_t len = strlen(msg), have = 0;
	char buf[256];

	if (t_nonblock(ktm_session_fd(a), false) ||
	    t_nonblock(ktm_session_fd(b), false) ||
	    !ktm_session_send(a, msg, len, &err))
		goto out;
	while (have < len) {
		ssize_t n = ktm_session_recv(b, buf + have, sizeof(buf) - have,
					     &err);

		if (n <= 0)
			goto out;
		have += (size_t)n;
	}
out:
	if (err)
		printf("# pass: %s\n", ktm_error_message(err));
	ktm_error_free(err);
	return have == len && !memcmp(buf, msg, len);
}

static int expected_path(void)
{
	return t_kernel_has_ktls() ? KTM_PATH_KERNEL_SW : KTM_PATH_USERSPACE;
}

static void write_script(const char *path, const char *body)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fprintf(f, "#!/bin/sh\n%s\n", body);
		fclose(f);
	}
	chmod(path, 0700);
}

/* ---- both handshakes in one thread, per TLS version x cipher ---------- */

FIXTURE(evloop)
{
	struct t_pair p;
};

FIXTURE_VARIANT(evloop)
{
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
};

#define KTM_CIPHER(name_, K, label_)				\
	FIXTURE_VARIANT_ADD(evloop, 12_##name_) {			\
		.version = KTM_TLS_1_2, .cipher = KTM_CIPHER_##K,	\
	};								\
	FIXTURE_VARIANT_ADD(evloop, 13_##name_) {			\
		.version = KTM_TLS_1_3, .cipher = KTM_CIPHER_##K,	\
	};
#include "ciphers.def"
#undef KTM_CIPHER

FIXTURE_SETUP(evloop)
{
	struct t_pki_opts o = { .server_dns = { "localhost" } };

	ASSERT_EQ(t_pair_init(&self->p, &o), 0);
	ASSERT_TRUE(ktm_config_set_versions(self->p.ccfg, variant->version,
					    variant->version, NULL));
	ASSERT_TRUE(ktm_config_set_versions(self->p.scfg, variant->version,
					    variant->version, NULL));
	ASSERT_TRUE(ktm_config_set_ciphers(self->p.ccfg, &variant->cipher, 1,
					   NULL));
	ASSERT_TRUE(ktm_config_set_ciphers(self->p.scfg, &variant->cipher, 1,
					   NULL));
}

FIXTURE_TEARDOWN(evloop)
{
	t_pair_end(&self->p);
}

TEST_F_TIMEOUT(evloop, two_handshakes_in_one_thread_then_data_both_ways, 30)
{
	struct t_pair *p = &self->p;
	int path = expected_path();

	ASSERT_EQ(t_pair_connect(p, true, true), 0);
	t_drive_pair(p);
	ASSERT_EQ(p->c.last, KTM_HANDSHAKE_DONE);
	ASSERT_EQ(p->s.last, KTM_HANDSHAKE_DONE);
	/* it took steps of both: one thread interleaved them */
	EXPECT_GT(p->c.steps, 1);
	EXPECT_GT(p->s.steps, 1);
	/* done stays done */
	EXPECT_EQ(ktm_session_handshake(p->c.s, NULL), KTM_HANDSHAKE_DONE);
	EXPECT_EQ(ktm_session_poll_timeout(p->c.s), -1);

	EXPECT_EQ(ktm_session_version(p->c.s), variant->version);
	EXPECT_EQ(ktm_session_cipher(p->s.s), variant->cipher);
	EXPECT_EQ(ktm_session_path(p->c.s, KTM_DIR_TX), path);
	EXPECT_EQ(ktm_session_path(p->c.s, KTM_DIR_RX), path);
	EXPECT_EQ(ktm_session_path(p->s.s, KTM_DIR_TX), path);
	EXPECT_EQ(ktm_session_path(p->s.s, KTM_DIR_RX), path);
	EXPECT_STRSTR(ktm_session_peer_subject(p->c.s), "CN=localhost");
	EXPECT_STRSTR(ktm_session_peer_subject(p->s.s), "CN=" T_PKI_CLIENT_CN);
	/* the session left the caller's O_NONBLOCK alone */
	EXPECT_TRUE(fcntl(p->c.fd, F_GETFL) & O_NONBLOCK);

	EXPECT_TRUE(t_pass(p->c.s, p->s.s, "from the client"));
	EXPECT_TRUE(t_pass(p->s.s, p->c.s, "and back from the server"));
	EXPECT_EQ(ktm_session_bytes(p->s.s, KTM_DIR_RX), 15);
	EXPECT_EQ(ktm_session_bytes(p->c.s, KTM_DIR_RX), 24);
}

/* ---- never blocking ------------------------------------------------------ */

TEST_TIMEOUT(step_against_a_silent_peer_returns_at_once, 10)
{
	struct t_pair p;
	int i;

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	/* a handshake timeout far past the harness's 10 s: a step that
	 * waited for the peer would hang until the harness failed us */
	ktm_config_set_timeouts(p.ccfg, 0, 120000);
	ASSERT_EQ(t_pair_connect(&p, true, false), 0);
	for (i = 0; i < 3; i++) {
		short ev = 0;

		EXPECT_EQ(ktm_session_handshake(p.c.s, NULL),
			  KTM_HANDSHAKE_WANT_READ);
		EXPECT_EQ(ktm_session_poll_fd(p.c.s, &ev), p.c.fd);
		EXPECT_EQ(ev, POLLIN);
		EXPECT_GT(ktm_session_poll_timeout(p.c.s), 60000);
	}
	t_pair_end(&p);
}

TEST_TIMEOUT(silent_peer_times_out_with_the_blocking_sentence, 10)
{
	struct t_end *ends[1];
	struct t_pair p;

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	ktm_config_set_timeouts(p.ccfg, 0, 300);
	ASSERT_EQ(t_pair_connect(&p, true, false), 0);
	ends[0] = &p.c;
	t_drive(ends, 1, 10000);
	EXPECT_EQ(p.c.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(p.c.cls, KTM_ERR_PEER);
	EXPECT_EQ(p.c.err, ETIMEDOUT);
	EXPECT_STREQ(p.c.msg, "TLS handshake with localhost timed out after 300 ms");
	EXPECT_STRSTR(p.c.hint, "is it a TLS migration endpoint?");
	t_pair_end(&p);
}

TEST(start_refuses_a_blocking_socket)
{
	struct ktm_error *err = NULL;
	struct t_pair p;
	int fds[2];

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	ASSERT_EQ(ktm_net_tcp_pair(fds), 0);
	EXPECT_EQ(ktm_session_start(p.ccfg, fds[0], "localhost", &err), NULL);
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CONFIG);
	EXPECT_STRSTR(ktm_error_message(err), "is in blocking mode");
	ktm_error_free(err);
	/* the fd is still the caller's: open */
	EXPECT_GE(fcntl(fds[0], F_GETFL), 0);
	close(fds[0]);
	close(fds[1]);
	t_pair_end(&p);
}

/* ---- failures: the blocking handshake's class and sentence ---------------- */

TEST_TIMEOUT(untrusted_ca_is_refused_by_the_client, 20)
{
	struct t_pki_opts o = { .flaw = T_PKI_UNKNOWN_CA };
	struct t_pair p;

	ASSERT_EQ(t_pair_init(&p, &o), 0);
	ASSERT_EQ(t_pair_connect(&p, true, true), 0);
	t_drive_pair(&p);
	EXPECT_EQ(p.c.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.c.msg, "server certificate of localhost is not signed "
			       "by a trusted CA");
	EXPECT_STRSTR(p.c.hint, "ca-cert.pem must hold the CA");
	/* the server read the client's alert */
	EXPECT_EQ(p.s.last, KTM_HANDSHAKE_ERROR);
	EXPECT_NE(p.s.msg[0], '\0');
	t_pair_end(&p);
}

TEST_TIMEOUT(hostname_mismatch_names_the_expected_host, 20)
{
	struct t_pki_opts o = { .server_dns = { "dst-07.example" } };
	struct t_pair p;

	ASSERT_EQ(t_pair_init(&p, &o), 0);
	ASSERT_TRUE(ktm_config_set_hostname(p.ccfg, "dst-7.example", NULL));
	ASSERT_EQ(t_pair_connect(&p, true, true), 0);
	t_drive_pair(&p);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STREQ(p.c.msg, "server certificate does not match expected host "
			      "'dst-7.example'");
	EXPECT_STRSTR(p.c.hint, "names in the certificate: DNS:dst-07.example");
	EXPECT_EQ(p.s.last, KTM_HANDSHAKE_ERROR);
	t_pair_end(&p);
}

TEST_TIMEOUT(allow_list_refusal_is_named_on_both_sides, 20)
{
	struct ktm_error *err = NULL;
	struct t_pair p;
	char buf[64];

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	ASSERT_TRUE(ktm_config_add_allow(p.scfg, "dn:CN=src-01.example", NULL));
	ASSERT_EQ(t_pair_connect(&p, true, true), 0);
	t_drive_pair(&p);
	EXPECT_EQ(p.s.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(p.s.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.s.msg, "is not allowed by the allow-list of --allow "
			       "rules (1 rule): subject CN=" T_PKI_CLIENT_CN);
	/* In TLS 1.3 the client's handshake ends before the server's
	 * verdict: the refusal reaches it at its first read, as it does the
	 * blocking client (tests/session/session.c, allow-list tests). */
	EXPECT_EQ(p.c.last, KTM_HANDSHAKE_DONE);
	ASSERT_NE(p.c.s, NULL);
	ASSERT_EQ(t_nonblock(p.c.fd, false), 0);
	EXPECT_EQ(ktm_session_recv(p.c.s, buf, sizeof(buf), &err), -1);
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "rejected our certificate");
	EXPECT_STRSTR(ktm_error_hint(err), "allow-list");
	ktm_error_free(err);
	t_pair_end(&p);
}

TEST_TIMEOUT(vetoing_hook_refuses_with_its_stderr, 20)
{
	char hook[128];
	struct t_pair p;

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", p.dir);
	write_script(hook, "echo 'not enough memory on the destination' >&2\n"
			   "echo second line >&2\nexit 3");
	ASSERT_TRUE(ktm_config_set_check_exec(p.ccfg, hook, "vm1",
					      "tcp://dst:4444", NULL));
	ASSERT_EQ(t_pair_connect(&p, true, true), 0);
	t_drive_pair(&p);
	EXPECT_EQ(p.c.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STRSTR(p.c.msg, "vetoed the migration to tcp://dst:4444 (exit "
			       "status 3): not enough memory on the destination");
	EXPECT_EQ(strstr(p.c.msg, "second line"), NULL);
	t_pair_end(&p);
}

/* While one client's hook sleeps past its timeout, the same loop takes a
 * second pair through both handshakes and a message each way. */
TEST_TIMEOUT(hook_past_its_timeout_is_killed_while_the_loop_serves_another, 20)
{
	struct t_pair a, b;
	struct t_end *ends[4] = { &a.c, &a.s, &b.c, &b.s };
	char hook[128];

	ASSERT_EQ(t_pair_init(&a, NULL), 0);
	ASSERT_EQ(t_pair_init(&b, NULL), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", a.dir);
	write_script(hook, "sleep 30");
	ASSERT_TRUE(ktm_config_set_check_exec(a.ccfg, hook, "vm1",
					      "tcp://dst:4444", NULL));
	ktm_config_set_check_timeout(a.ccfg, 700);
	ASSERT_EQ(t_pair_connect(&a, true, true), 0);
	ASSERT_EQ(t_pair_connect(&b, true, true), 0);
	t_drive(ends, 4, 100000);
	EXPECT_EQ(b.c.last, KTM_HANDSHAKE_DONE);
	EXPECT_EQ(b.s.last, KTM_HANDSHAKE_DONE);
	EXPECT_EQ(a.c.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(a.c.cls, KTM_ERR_CHECK);
	EXPECT_EQ(a.c.err, ETIMEDOUT);
	EXPECT_STRSTR(a.c.msg, "did not finish within 700 ms: killed, "
			       "connection refused");
	/* b ended rounds before a's hook was given up on: the loop went on */
	EXPECT_LT(b.c.done_at, a.c.done_at);
	EXPECT_LT(b.s.done_at, a.c.done_at);
	EXPECT_TRUE(t_pass(b.c.s, b.s.s, "served"));
	EXPECT_TRUE(t_pass(b.s.s, b.c.s, "meanwhile"));
	t_pair_end(&a);
	t_pair_end(&b);
}

TEST_TIMEOUT(peer_that_closes_mid_handshake, 20)
{
	struct t_end *ends[1];
	struct t_pair p;
	char buf[4096];
	struct pollfd pf;

	ASSERT_EQ(t_pair_init(&p, NULL), 0);
	ASSERT_EQ(t_pair_connect(&p, true, false), 0);
	/* the client's first step sends its ClientHello ... */
	EXPECT_EQ(ktm_session_handshake(p.c.s, NULL), KTM_HANDSHAKE_WANT_READ);
	pf.fd = p.s.fd;
	pf.events = POLLIN;
	ASSERT_EQ(poll(&pf, 1, 5000), 1);
	/* ... which the "server" reads, then it closes */
	EXPECT_GT(read(p.s.fd, buf, sizeof(buf)), 0);
	close(p.s.fd);
	p.s.fd = -1;
	ends[0] = &p.c;
	t_drive(ends, 1, 10000);
	EXPECT_EQ(p.c.last, KTM_HANDSHAKE_ERROR);
	EXPECT_EQ(p.c.cls, KTM_ERR_PEER);
	EXPECT_STREQ(p.c.msg, "localhost closed the connection during the TLS "
			      "handshake");
	t_pair_end(&p);
}

/* ---- examples/poll_pair --------------------------------------------------- */

/*
 * The example, built in the tree next to the tests (O/tests/examples),
 * on a fresh credentials set: both handshakes in its one thread, a
 * message each way, and both sessions on this tier's data path (in the
 * guest tier it runs with "require": kernel TLS or exit 1).
 */
TEST_TIMEOUT(example_poll_pair_completes_both_handshakes, 30)
{
	const char *want = expected_path() == KTM_PATH_KERNEL_SW ? "kernel" :
			   "userspace";
	char exe[512], cmd[1024], out[4096], line[160], dir[64];
	size_t used = 0;
	ssize_t n;
	FILE *f;
	char *slash;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	ASSERT_GT(n, 0);
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	ASSERT_NE(slash, NULL);
	*slash = '\0';
	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), NULL), 0);
	snprintf(cmd, sizeof(cmd), "%s/../examples/poll_pair %s %s 2>&1", exe,
		 dir, t_kernel_has_ktls() ? "require" : "prefer");
	f = popen(cmd, "r");
	ASSERT_NE(f, NULL);
	while (used < sizeof(out) - 1 &&
	       (n = (ssize_t)fread(out + used, 1, sizeof(out) - 1 - used, f)) > 0)
		used += (size_t)n;
	out[used] = '\0';
	EXPECT_EQ(pclose(f), 0);
	for (slash = out; *slash; slash = strchr(slash, '\n') + 1) {
		printf("# %.*s\n", (int)strcspn(slash, "\n"), slash);
		if (!strchr(slash, '\n'))
			break;
	}
	snprintf(line, sizeof(line), "client data path: %s (", want);
	EXPECT_STRSTR(out, line);
	snprintf(line, sizeof(line), "server data path: %s (", want);
	EXPECT_STRSTR(out, line);
	EXPECT_STRSTR(out, "server got: ping\n");
	EXPECT_STRSTR(out, "client got: pong\n");
	t_pki_remove(dir);
}

TEST_HARNESS_MAIN
