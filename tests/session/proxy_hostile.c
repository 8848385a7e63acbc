// SPDX-License-Identifier: MIT
/*
 * The proxy (`ktls-migrate proxy source|dest`) under hostile peers and
 * operator mistakes, driven from the outside as a user would: the tool
 * (build/ktls-migrate, found next to this binary as hostile.c finds it) in
 * child processes, on loopback.  A sink thread stands for the destination
 * QEMU (a plain TCP listener), a feeder thread for the source QEMU (it
 * writes into the source end's unix socket).  What each test expects comes
 * from the scenario: the bytes fed, the options given, the timeouts set.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"
#include "peer.h"
#include "pki.h"

#define FEED_BYTES (4u << 20)

struct env {
	char dir[64], tool[4200], sock[128];
};

static int env_setup(struct env *e)
{
	char self[4000];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	memset(e, 0, sizeof(*e));
	if (n <= 0)
		return -1;
	self[n] = '\0';
	*strrchr(self, '/') = '\0';	/* BUILD/tests/session */
	snprintf(e->tool, sizeof(e->tool), "%s/../../ktls-migrate", self);
	if (t_pki_make_temp(e->dir, sizeof(e->dir), NULL))
		return -1;
	snprintf(e->sock, sizeof(e->sock), "%s/src.sock", e->dir);
	return 0;
}

static void env_teardown(struct env *e)
{
	static const char *const names[] = { "src.out", "src.err", "dst.out",
					     "dst.err", "bad.out", "bad.err" };
	char p[256];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", e->dir, names[i]);
		unlink(p);
	}
	unlink(e->sock);
	t_pki_remove(e->dir);
}

/* ---- the tool in a child ----------------------------------------------------- */

struct run {
	pid_t pid;
	double t0, secs;
	int status;		/* exit status, 128+N for signal N, -1 hung */
	char out_path[256], err_path[256], err[8192];
};

static void run_start(struct run *r, const struct env *e, const char *name,
		      const char *const args[])
{
	const char *argv[40];
	int i, n = 0;

	memset(r, 0, sizeof(*r));
	snprintf(r->out_path, sizeof(r->out_path), "%s/%s.out", e->dir, name);
	snprintf(r->err_path, sizeof(r->err_path), "%s/%s.err", e->dir, name);
	argv[n++] = e->tool;
	for (i = 0; args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	close(open(r->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
	close(open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
	fflush(stdout);
	r->t0 = ktm_now_s();
	r->pid = fork();
	if (r->pid == 0) {
		int o = open(r->out_path, O_WRONLY | O_TRUNC);
		int er = open(r->err_path, O_WRONLY | O_TRUNC);

		dup2(o, 1);
		dup2(er, 2);
		signal(SIGPIPE, SIG_DFL);
		execv(e->tool, (char *const *)argv);
		_exit(127);
	}
}

static void read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, size - 1) : 0;

	buf[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

/* Wait up to @secs; a child still running then is killed (status -1). */
static int run_wait(struct run *r, double secs)
{
	int st;

	while (r->pid > 0) {
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			r->status = WIFEXITED(st) ? WEXITSTATUS(st) :
				    128 + WTERMSIG(st);
			r->pid = 0;
		} else if (ktm_now_s() - r->t0 > secs) {
			kill(r->pid, SIGKILL);
			waitpid(r->pid, NULL, 0);
			r->pid = 0;
			r->status = -1;
		} else {
			usleep(10000);
		}
	}
	r->secs = ktm_now_s() - r->t0;
	read_file(r->err_path, r->err, sizeof(r->err));
	printf("# %s: status %d after %.2f s:\n%s", r->err_path, r->status,
	       r->secs, r->err);
	return r->status;
}

/* The port of "listening on 127.0.0.1:PORT" on the child's stdout. */
static bool listen_port(struct run *r, char port[8])
{
	double end = ktm_now_s() + 20;
	char out[1024];
	const char *p;

	while (ktm_now_s() < end && waitpid(r->pid, NULL, WNOHANG) == 0) {
		read_file(r->out_path, out, sizeof(out));
		p = strstr(out, "listening on 127.0.0.1:");
		if (p) {
			snprintf(port, 8, "%d", atoi(p + 23));
			return true;
		}
		usleep(10000);
	}
	return false;
}

/* Count the lines of @text that contain @what. */
static unsigned int count_lines(const char *text, const char *what)
{
	unsigned int n = 0;
	const char *p = text;

	while ((p = strstr(p, what))) {
		n++;
		p += strlen(what);
	}
	return n;
}

static int write_text(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* ---- the two QEMUs ----------------------------------------------------------- */

/* The source QEMU: @len pattern bytes into the source end's socket, a
 * half-close, then read to the end.  ok: every byte was taken. */
struct feed {
	const char *path;
	uint64_t len, sent;
	bool ok;
	pthread_t thread;
};

static void *feed_main(void *arg)
{
	struct feed *f = arg;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	uint8_t buf[65536];
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while (f->sent < f->len) {
		size_t n = f->len - f->sent < sizeof(buf) ?
			   (size_t)(f->len - f->sent) : sizeof(buf), i;
		ssize_t w;

		for (i = 0; i < n; i++)
			buf[i] = t_pattern(f->sent + i);
		w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		f->sent += (uint64_t)w;
	}
	f->ok = f->sent == f->len;
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return NULL;
}

static int feed_start(struct feed *f, const char *path, uint64_t len)
{
	memset(f, 0, sizeof(*f));
	f->path = path;
	f->len = len;
	return pthread_create(&f->thread, NULL, feed_main, f) ? -1 : 0;
}

/* ---- the two proxy ends ------------------------------------------------------ */

static bool start_dest(struct run *r, const struct env *e,
		       const struct t_sink *k, const char *io_s, char port[8])
{
	const char *args[] = { "proxy", "dest", "--listen", "127.0.0.1:0",
			       "--connect", k->addr, "--creds", e->dir,
			       "--io-timeout", io_s, NULL };

	run_start(r, e, "dst", args);
	return listen_port(r, port);
}

static void start_source(struct run *r, const struct env *e, const char *port,
			 const char *io_s)
{
	char to[32];
	const char *args[] = { "proxy", "source", "--unix", e->sock,
			       "--connect", to, "--creds", e->dir,
			       "--max-conns", "1", "--io-timeout", io_s, NULL };
	struct stat st;
	double end = ktm_now_s() + 20;

	snprintf(to, sizeof(to), "localhost:%s", port);
	run_start(r, e, "src", args);
	while (stat(e->sock, &st) && ktm_now_s() < end)
		usleep(10000);
}

/* @n TCP connections to @port that say nothing; the fds in @fds. */
static void idle_connections(int *fds, unsigned int n, const char *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	unsigned int i;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)atoi(port));
	for (i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] >= 0 &&
		    connect(fds[i], (struct sockaddr *)&sin, sizeof(sin))) {
			close(fds[i]);
			fds[i] = -1;
		}
	}
}

/*
 * A migration through both ends while @nidle connections to the dest port
 * stay open saying nothing: it must get through whole, well inside the
 * handshake timeout (10 s) a stray could hold the listener for.
 */
static void relay_beside_idle(struct t_meta *_metadata, unsigned int nidle,
			      struct run *dst)
{
	struct env e;
	struct t_sink k;
	struct feed f;
	struct run src;
	char port[8];
	int fds[64];
	unsigned int i;

	ASSERT_EQ(env_setup(&e), 0);
	ASSERT_EQ(t_sink_start(&k), 0);
	ASSERT_TRUE(start_dest(dst, &e, &k, "30", port));
	idle_connections(fds, nidle, port);
	usleep(200000);		/* the strays are accepted first */
	start_source(&src, &e, port, "30");
	ASSERT_EQ(feed_start(&f, e.sock, FEED_BYTES), 0);
	EXPECT_EQ(run_wait(&src, 30), 0);
	EXPECT_LT(src.secs, 8.0);
	pthread_join(f.thread, NULL);
	EXPECT_TRUE(f.ok);
	kill(dst->pid, SIGTERM);
	run_wait(dst, 20);
	t_sink_end(&k);
	EXPECT_EQ(k.bytes, (uint64_t)FEED_BYTES);
	EXPECT_TRUE(k.pattern_ok);
	EXPECT_TRUE(k.eof);
	for (i = 0; i < nidle; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	env_teardown(&e);
}

/* ---- the tests --------------------------------------------------------------- */

TEST_TIMEOUT(idle_strays_do_not_hold_the_dest_listener, 90)
{
	struct run dst;

	relay_beside_idle(_metadata, 3, &dst);
	/* each stray is named with its address when the proxy stops */
	EXPECT_GE(count_lines(dst.err, "proxy stopped while the connection "
				       "to 127.0.0.1:"), 3);
	EXPECT_EQ(dst.status, 1);	/* the strays failed */
}

TEST_TIMEOUT(flood_of_idle_connections_makes_room_for_the_source, 90)
{
	struct run dst;

	relay_beside_idle(_metadata, 40, &dst);
	/* 40 strays and the source in their handshakes, 32 at most at once:
	 * the 40 + 1 - 32 oldest were cut, each named */
	EXPECT_EQ(count_lines(dst.err, "was the oldest of 32 connections still "
				       "in their TLS handshake"), 40 + 1 - 32);
}

/* Both proxy ends (I/O timeout @io_s) with a sink and an endless feed,
 * once the first MiB reached the sink. */
static bool stream_through(struct env *e, struct t_sink *k, struct feed *f,
			   struct run *src, struct run *dst, const char *io_s)
{
	char port[8];

	if (env_setup(e) || t_sink_start(k) ||
	    !start_dest(dst, e, k, io_s, port))
		return false;
	start_source(src, e, port, io_s);
	/* more than every socket buffer on the way can hold */
	if (feed_start(f, e->sock, 1ull << 40))
		return false;
	while (k->bytes < (1u << 20) && ktm_now_s() - src->t0 < 20)
		usleep(10000);
	return k->bytes >= (1u << 20);
}

TEST_TIMEOUT(frozen_destination_fails_the_source_within_io_timeout, 90)
{
	struct env e;
	struct t_sink k;
	struct feed f;
	struct run src, dst;
	double t_stop;

	ASSERT_TRUE(stream_through(&e, &k, &f, &src, &dst, "2"));
	kill(dst.pid, SIGSTOP);
	t_stop = ktm_now_s();
	EXPECT_EQ(run_wait(&src, 30), 1);
	printf("# the source failed %.2f s after the destination stopped\n",
	       ktm_now_s() - t_stop);
	EXPECT_LT(ktm_now_s() - t_stop, 2.0 + 2.0 + 1.0);
	/* The peer is named, and the cause: on the kernel path the relay's
	 * receiving thread may see the socket end first, and asks the kernel
	 * why it ended (ktm_net_end_cause) rather than say "truncated". */
	EXPECT_STRSTR(src.err, "conn 1: ");
	EXPECT_STRSTR(src.err, "localhost:");
	EXPECT_STRSTR(src.err, "timed out");
	pthread_join(f.thread, NULL);
	EXPECT_FALSE(f.ok);		/* the source QEMU saw its stream fail */
	kill(dst.pid, SIGCONT);
	kill(dst.pid, SIGTERM);
	run_wait(&dst, 20);
	t_sink_end(&k);
	EXPECT_LT(k.bytes, f.sent);
	env_teardown(&e);
}

/* The source proxy dies mid-stream: the destination proxy names the
 * truncation and cuts the destination QEMU's TCP connection with a reset,
 * so it never reads a clean end of stream (a FIN) where the stream broke. */
TEST_TIMEOUT(broken_stream_resets_the_plain_tcp_side, 90)
{
	struct env e;
	struct t_sink k;
	struct feed f;
	struct run src, dst;

	ASSERT_TRUE(stream_through(&e, &k, &f, &src, &dst, "5"));
	kill(src.pid, SIGKILL);
	run_wait(&src, 10);
	pthread_join(f.thread, NULL);
	EXPECT_FALSE(f.ok);
	pthread_join(k.thread, NULL);	/* the sink's connection ended */
	close(k.lfd);
	EXPECT_TRUE(k.pattern_ok);
	EXPECT_FALSE(k.eof);		/* a reset, not a FIN */
	kill(dst.pid, SIGTERM);
	run_wait(&dst, 20);
	EXPECT_STRSTR(dst.err, "without TLS close_notify (truncated)");
	env_teardown(&e);
}

/* Option values out of range are usage errors (status 2) naming the
 * option, never taken (a "-1" read as 2^64-1 by strtoul, an overflow). */
TEST_TIMEOUT(bad_option_values_are_usage_errors, 60)
{
	static const char *const cases[][2] = {
		{ "--max-conns", "-1" }, { "--max-conns", "99999999999" },
		{ "--io-timeout", "-3" }, { "--io-timeout", "5s" },
		{ "--key-limit", "-5" }, { "--key-limit", "99999999999999999999" },
		{ "--hook-timeout", "-1" }, { "--cipher", "," },
	};
	struct env e;
	size_t i;

	ASSERT_EQ(env_setup(&e), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[] = { "proxy", "dest", "--listen", "127.0.0.1:0",
				       "--connect", "127.0.0.1:1", "--creds",
				       e.dir, cases[i][0], cases[i][1], NULL };
		struct run r;

		run_start(&r, &e, "bad", args);
		EXPECT_EQ(run_wait(&r, 10), 2);
		EXPECT_STRSTR(r.err, cases[i][0]);
		EXPECT_STRSTR(r.err, cases[i][1]);
	}
	env_teardown(&e);
}

/* The destination QEMU of the order test: @n connections accepted one
 * after another, the first byte of each (its tag) in accept order; then
 * each read to its end. */
struct order_sink {
	int lfd;
	unsigned int n;
	char tags[8];
	volatile int seen;	/* connections accepted and tagged */
	pthread_t thread;
	char addr[32];
};

static void *order_sink_main(void *arg)
{
	struct order_sink *k = arg;
	char buf[65536];
	int fds[8];
	unsigned int i;

	for (i = 0; i < k->n; i++) {
		fds[i] = accept(k->lfd, NULL, NULL);
		if (fds[i] < 0 || read(fds[i], &k->tags[i], 1) != 1)
			k->tags[i] = '?';
		__atomic_add_fetch(&k->seen, 1, __ATOMIC_SEQ_CST);
	}
	for (i = 0; i < k->n; i++) {
		while (fds[i] >= 0 && read(fds[i], buf, sizeof(buf)) > 0)
			;
		if (fds[i] >= 0)
			close(fds[i]);
	}
	return NULL;
}

/* A source QEMU channel: 64 KiB of its tag byte, and its end only once
 * every channel reached the destination QEMU (a real channel stays open:
 * one that ends before the destination's handshake is through is another
 * case). */
struct tagged {
	const char *path;
	char tag;
	struct order_sink *k;
	pthread_t thread;
};

static void *tagged_main(void *arg)
{
	struct tagged *t = arg;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char buf[65536];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	double end = ktm_now_s() + 30;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", t->path);
	memset(buf, t->tag, sizeof(buf));
	if (fd >= 0 && !connect(fd, (struct sockaddr *)&sun, sizeof(sun)) &&
	    send(fd, buf, sizeof(buf), MSG_NOSIGNAL) == (ssize_t)sizeof(buf)) {
		while (__atomic_load_n(&t->k->seen, __ATOMIC_SEQ_CST) <
		       (int)t->k->n && ktm_now_s() < end)
			usleep(10000);
		shutdown(fd, SHUT_WR);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

/*
 * QEMU tells its channels apart by the order they arrive (the main channel
 * first), so the destination must hand them to QEMU in the order the
 * source QEMU opened them, even when the first one's check takes longer
 * than the second's whole handshake (a hook that sleeps on its first run).
 * Strays in between (an idle connection) change nothing.
 */
TEST_TIMEOUT(channels_reach_qemu_in_the_order_qemu_opened_them, 90)
{
	struct env e;
	struct order_sink k = { .n = 3 };
	struct tagged t[3];
	struct run src, dst;
	char port[8], hook[128], to[32];
	const char *dargs[] = { "proxy", "dest", "--listen", "127.0.0.1:0",
				"--connect", k.addr, "--creds", NULL,
				"--check-hook", hook, NULL };
	const char *sargs[] = { "proxy", "source", "--unix", NULL, "--connect",
				to, "--creds", NULL, "--max-conns", "3", NULL };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct stat st;
	char script[300];
	int idle, i;

	ASSERT_EQ(env_setup(&e), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", e.dir);
	snprintf(script, sizeof(script), "#!/bin/sh\nif mkdir %s/first 2>/dev/null; "
		 "then sleep 1; fi\nexit 0\n", e.dir);
	ASSERT_EQ(write_text(hook, script, strlen(script)), 0);
	ASSERT_EQ(chmod(hook, 0700), 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	k.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_EQ(bind(k.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ASSERT_EQ(listen(k.lfd, 8), 0);
	ASSERT_EQ(getsockname(k.lfd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(k.addr, sizeof(k.addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	ASSERT_EQ(pthread_create(&k.thread, NULL, order_sink_main, &k), 0);
	dargs[7] = e.dir;
	run_start(&dst, &e, "dst", dargs);
	ASSERT_TRUE(listen_port(&dst, port));
	idle_connections(&idle, 1, port);
	snprintf(to, sizeof(to), "localhost:%s", port);
	sargs[3] = e.sock;
	sargs[7] = e.dir;
	run_start(&src, &e, "src", sargs);
	while (stat(e.sock, &st) && ktm_now_s() - src.t0 < 20)
		usleep(10000);
	for (i = 0; i < 3; i++) {
		t[i].path = e.sock;
		t[i].tag = (char)('A' + i);
		t[i].k = &k;
		ASSERT_EQ(pthread_create(&t[i].thread, NULL, tagged_main, &t[i]), 0);
		usleep(100000);	/* QEMU opens its channels one by one */
	}
	for (i = 0; i < 3; i++)
		pthread_join(t[i].thread, NULL);
	EXPECT_EQ(run_wait(&src, 30), 0);
	if (src.status != 0) {
		/* the sink would wait for connections that never come */
		kill(dst.pid, SIGTERM);
		run_wait(&dst, 20);
		shutdown(k.lfd, SHUT_RDWR);
	}
	pthread_join(k.thread, NULL);
	printf("# QEMU saw the channels in the order %.3s\n", k.tags);
	EXPECT_EQ(memcmp(k.tags, "ABC", 3), 0);
	if (dst.pid > 0) {
		kill(dst.pid, SIGTERM);
		run_wait(&dst, 20);
	}
	close(idle);
	close(k.lfd);
	snprintf(script, sizeof(script), "%s/first", e.dir);
	rmdir(script);
	unlink(hook);
	env_teardown(&e);
}

/* ---- the creds dir and the identity options ---------------------------------- */

/* An allow file as the manual describes it: one rule per line, '#' at the
 * start of a line or after a blank starts a comment, blanks around a rule
 * and CRLF line ends do not count; a line longer than any buffer is one
 * rule; a NUL byte or a directory is an error naming the file. */
TEST(allow_file_lines_are_read_as_documented)
{
	static const char text[] = "# sources\r\n\r\n  dn:CN=a,O=Example  # one\r\n"
				   "dns:a#b.example\n\tip:192.0.2.1\t#two\n";
	char path[128], big[6000];
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	struct env e;

	ASSERT_EQ(env_setup(&e), 0);
	cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	ASSERT_NE(cfg, NULL);
	snprintf(path, sizeof(path), "%s/allow", e.dir);
	ASSERT_EQ(write_text(path, text, sizeof(text) - 1), 0);
	ASSERT_TRUE(ktm_config_load_allow_file(cfg, path, NULL));
	ASSERT_EQ(cfg->n_allow_f, 3u);
	EXPECT_STREQ(cfg->allow_f[0].text, "dn:CN=a,O=Example");
	EXPECT_STREQ(cfg->allow_f[1].text, "dns:a#b.example");
	EXPECT_STREQ(cfg->allow_f[2].text, "ip:192.0.2.1");
	/* one long rule (a DN of 5000 bytes), not two */
	memset(big, 'a', sizeof(big));
	memcpy(big, "dn:CN=", 6);
	big[5000] = '\n';
	ASSERT_EQ(write_text(path, big, 5001), 0);
	ASSERT_TRUE(ktm_config_load_allow_file(cfg, path, NULL));
	EXPECT_EQ(cfg->n_allow_f, 1u);
	EXPECT_EQ(strlen(cfg->allow_f[0].text), 5000u);
	ASSERT_EQ(write_text(path, "dn:CN=a\0dns:b.example\n", 22), 0);
	EXPECT_FALSE(ktm_config_load_allow_file(cfg, path, &err));
	EXPECT_STRSTR(ktm_error_message(err), "allow:1 holds a NUL byte");
	ktm_error_free(err);
	err = NULL;
	EXPECT_FALSE(ktm_config_load_allow_file(cfg, e.dir, &err));
	EXPECT_STRSTR(ktm_error_message(err), "Is a directory");
	EXPECT_STRSTR(ktm_error_message(err), e.dir);
	ktm_error_free(err);
	unlink(path);
	ktm_config_free(cfg);
	env_teardown(&e);
}

/* A certificate file whose second PEM block was cut (a partial copy of a
 * leaf + intermediate file) is refused at start, naming the file, rather
 * than loaded without its intermediate. */
TEST(cut_chain_block_in_a_certificate_file_is_named)
{
	static const char cut[] = "-----BEGIN CERTIFICATE-----\n"
				  "MIIBszCCAVmgAwIBAgIUd2Vy\n";
	static const struct { enum ktm_endpoint ep; const char *file, *role; } c[] = {
		{ KTM_ENDPOINT_SERVER, T_PKI_SERVER_CERT, "server certificate" },
		{ KTM_ENDPOINT_CLIENT, T_PKI_CLIENT_CERT, "client certificate" },
	};
	struct env e;
	size_t i;

	ASSERT_EQ(env_setup(&e), 0);
	for (i = 0; i < 2; i++) {
		struct ktm_error *err = NULL;
		struct ktm_config *cfg = ktm_config_new(c[i].ep, NULL);
		char path[128], want[200];
		int fd;

		snprintf(path, sizeof(path), "%s/%s", e.dir, c[i].file);
		ASSERT_TRUE(ktm_config_set_creds_dir(cfg, e.dir, NULL));
		fd = open(path, O_WRONLY | O_APPEND);
		ASSERT_EQ(write(fd, cut, sizeof(cut) - 1), (ssize_t)sizeof(cut) - 1);
		close(fd);
		EXPECT_FALSE(ktm_config_set_creds_dir(cfg, e.dir, &err));
		snprintf(want, sizeof(want), "%s %s: the PEM block after "
			 "certificate 1 is damaged", c[i].role, path);
		EXPECT_STRSTR(ktm_error_message(err), want);
		ktm_error_free(err);
		ktm_config_free(cfg);
	}
	env_teardown(&e);
}

/* The creds dir's message in a child running as @uid (0: as we are);
 * "ok" when the directory loads. */
static void creds_message_as(const char *dir, uid_t uid, char *msg, size_t len)
{
	int pfd[2];
	pid_t pid;
	ssize_t n;

	msg[0] = '\0';
	if (pipe(pfd))
		return;
	pid = fork();
	if (pid == 0) {
		struct ktm_error *err = NULL;
		struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
		char buf[1500];

		if (uid && (setgid(uid) || setuid(uid)))
			_exit(3);
		if (ktm_config_set_creds_dir(cfg, dir, &err))
			snprintf(buf, sizeof(buf), "ok");
		else
			snprintf(buf, sizeof(buf), "%s — hint: %s",
				 ktm_error_message(err),
				 ktm_error_hint(err) ? ktm_error_hint(err) : "");
		n = write(pfd[1], buf, strlen(buf));
		_exit(n > 0 ? 0 : 1);
	}
	close(pfd[1]);
	n = read(pfd[0], msg, len - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	waitpid(pid, NULL, 0);
	printf("# creds %s as uid %u: %s\n", dir, (unsigned int)uid, msg);
}

/* A creds path that is a file is "not a directory" (was: "does not
 * exist"); a key this process may not read names who it runs as and what
 * it needs, not the directory layout. */
TEST(creds_dir_access_problems_say_what_is_wrong)
{
	char path[128], msg[1500], want[200];
	struct env e;

	ASSERT_EQ(env_setup(&e), 0);
	snprintf(path, sizeof(path), "%s/" T_PKI_CA_CERT, e.dir);
	creds_message_as(path, 0, msg, sizeof(msg));
	snprintf(want, sizeof(want), "credentials directory %s is not a "
		 "directory", path);
	EXPECT_STRSTR(msg, want);
	if (geteuid() != 0) {
		env_teardown(&e);
		SKIP(return, "needs root to run as another uid");
	}
	/* everything readable by all but the key (0600, root's) */
	ASSERT_EQ(chmod(e.dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/" T_PKI_SERVER_CERT, e.dir);
	ASSERT_EQ(chmod(path, 0644), 0);
	snprintf(path, sizeof(path), "%s/" T_PKI_CA_CERT, e.dir);
	ASSERT_EQ(chmod(path, 0644), 0);
	snprintf(path, sizeof(path), "%s/" T_PKI_SERVER_KEY, e.dir);
	ASSERT_EQ(chmod(path, 0600), 0);
	creds_message_as(e.dir, 65534, msg, sizeof(msg));
	snprintf(want, sizeof(want), "cannot open private key %s: Permission "
		 "denied", path);
	EXPECT_STRSTR(msg, want);
	EXPECT_STRSTR(msg, "runs as uid 65534");
	EXPECT_STRSTR(msg, "read permission");
	env_teardown(&e);
}

TEST_HARNESS_MAIN
