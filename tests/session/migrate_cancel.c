// SPDX-License-Identifier: MIT
/*
 * Cancelling a running migration from another thread
 * (ktm_migration_cancel): the source mid-transfer, the destination
 * mid-transfer, and both before the handshake completed.  Each case checks
 * both sides' error (class, errno and the sentence, which names who
 * cancelled as the test said it), that both ended within 2 s of the
 * cancel, and that no image and no partial file is left.
 *
 * The source reaches the destination through a relay of our own that
 * forwards at about 32 MB/s, so the 64 MiB transfer is still running when
 * the cancel comes (8 MiB in).  Runs natively (userspace TLS) and in the
 * guest tier (kernel TLS), once per send path.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"
#include "peer.h"
#include "pki.h"

#define IMG_SIZE (64u << 20)
#define CANCEL_AT (8u << 20)		/* bytes done before the cancel */
#define RELAY_PAUSE_US 2000		/* per 64 KiB: about 32 MB/s */
#define RELAY_BUF (128 << 10)		/* the relay's socket buffers */
#define BOUND_S 2.0			/* issue 9: both sides end within */
#define BY "the test"

/* One side's outcome, shared between processes. */
struct outcome {
	bool done, ok;
	int cls, no;
	char msg[512];
	double t_cancel, t_end;		/* CLOCK_MONOTONIC, 0: none */
};

struct cx {
	char dir[64], img[96], out[96], partial[128];
	int lfd;
	char port[8], rport[8];
	pid_t dest, relay;
	unsigned int accept_ms;		/* the destination's; 0: 20 s */
	struct outcome *src, *dst;	/* shared */
	struct ktm_config *ccfg, *scfg;
};

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int cx_setup(struct cx *g)
{
	struct t_server tmp;

	memset(g, 0, sizeof(*g));
	g->lfd = -1;
	if (t_pki_make_temp(g->dir, sizeof(g->dir), NULL))
		return -1;
	snprintf(g->img, sizeof(g->img), "%s/image", g->dir);
	snprintf(g->out, sizeof(g->out), "%s/received", g->dir);
	snprintf(g->partial, sizeof(g->partial), "%s.ktm-partial", g->out);
	if (t_prng_file(g->img, IMG_SIZE, 0x2545f491) || t_server_listen(&tmp))
		return -1;
	g->lfd = tmp.lfd;
	snprintf(g->port, sizeof(g->port), "%s", tmp.port);
	munmap(tmp.out, sizeof(*tmp.out));
	g->src = mmap(NULL, 2 * sizeof(*g->src), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g->src == MAP_FAILED)
		return -1;
	g->dst = g->src + 1;
	g->ccfg = t_config(KTM_ENDPOINT_CLIENT, g->dir, KTM_KTLS_PREFER);
	g->scfg = t_config(KTM_ENDPOINT_SERVER, g->dir, KTM_KTLS_PREFER);
	return g->ccfg && g->scfg ? 0 : -1;
}

static void reap(pid_t *pid, bool group)
{
	if (*pid > 0) {
		kill(group ? -*pid : *pid, SIGKILL);
		waitpid(*pid, NULL, 0);
	}
	*pid = 0;
}

static void cx_teardown(struct cx *g)
{
	reap(&g->dest, false);
	reap(&g->relay, true);
	if (g->lfd >= 0)
		close(g->lfd);
	ktm_config_free(g->ccfg);
	ktm_config_free(g->scfg);
	if (g->src && g->src != MAP_FAILED)
		munmap(g->src, 2 * sizeof(*g->src));
	unlink(g->img);
	unlink(g->out);
	unlink(g->partial);
	t_pki_remove(g->dir);
}

/* ---- the relay: one child per connection, throttled or silent ----------- */

static void relay_conn(int in, const char *dst_port, bool silent)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)atoi(dst_port)) };
	int out = socket(AF_INET, SOCK_STREAM, 0);
	int small = RELAY_BUF;
	char buf[65536];

	/* little queued in the relay: the time measured is the library's,
	 * not that of a long queue in front of the ABORT */
	setsockopt(in, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(in, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(out, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(out, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	if (silent)
		for (;;)
			pause();	/* holds the handshake: killed at the end */
	if (out < 0 || connect(out, (struct sockaddr *)&a, sizeof(a)))
		_exit(1);
	for (;;) {
		struct pollfd p[2] = { { .fd = in, .events = POLLIN },
				       { .fd = out, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, 30000) <= 0)
			_exit(1);
		if (p[1].revents) {
			n = read(out, buf, sizeof(buf));
			if (n <= 0 || write(in, buf, (size_t)n) != n)
				_exit(0);
		}
		if (!p[0].revents)
			continue;
		n = read(in, buf, sizeof(buf));
		if (n <= 0 || write(out, buf, (size_t)n) != n)
			_exit(0);
		usleep(RELAY_PAUSE_US);
	}
}

/* The relay in its own process group, listening on g->rport. */
static int start_relay(struct cx *g, bool silent)
{
	struct t_server r;

	if (t_server_listen(&r))
		return -1;
	snprintf(g->rport, sizeof(g->rport), "%s", r.port);
	munmap(r.out, sizeof(*r.out));
	fflush(stdout);
	g->relay = fork();
	if (g->relay == 0) {
		setpgid(0, 0);
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int in = accept(r.lfd, NULL, NULL);

			if (in < 0)
				_exit(1);
			if (fork() == 0)
				relay_conn(in, g->port, silent);
			close(in);
		}
	}
	setpgid(g->relay, g->relay);
	close(r.lfd);
	return g->relay > 0 ? 0 : -1;
}

/* ---- cancelling from another thread -------------------------------------- */

struct canceller {
	struct ktm_migration *m;
	uint64_t done;			/* from the progress callback */
	uint64_t at;			/* cancel once this much is done */
	double after_s;			/* or after this long (at == 0) */
	double *t;			/* when the cancel was made */
	pthread_t thr;
};

static void note_progress(uint64_t done, uint64_t total, void *opaque)
{
	struct canceller *k = opaque;

	(void)total;
	__atomic_store_n(&k->done, done, __ATOMIC_RELAXED);
}

static void *cancel_later(void *arg)
{
	struct canceller *k = arg;
	double start = ktm_now_s();

	while (ktm_now_s() - start < 60) {
		if (k->at ? __atomic_load_n(&k->done, __ATOMIC_RELAXED) >= k->at :
			    ktm_now_s() - start >= k->after_s)
			break;
		usleep(5000);
	}
	*k->t = ktm_now_s();
	ktm_migration_cancel(k->m, BY);
	return NULL;
}

/* Arm @k on @m when @on (at bytes done, or after_s), else do nothing. */
static void arm(struct canceller *k, struct ktm_migration *m, bool on,
		uint64_t at, double after_s, double *t)
{
	memset(k, 0, sizeof(*k));
	k->m = m;
	k->at = at;
	k->after_s = after_s;
	k->t = t;
	ktm_migration_set_progress(m, note_progress, k);
	if (on && pthread_create(&k->thr, NULL, cancel_later, k))
		k->m = NULL;
}

static void disarm(struct canceller *k, bool on)
{
	if (on && k->m)
		pthread_join(k->thr, NULL);
}

static void record(struct outcome *o, bool ok, struct ktm_error *err)
{
	o->t_end = ktm_now_s();
	o->ok = ok;
	if (err) {
		o->cls = ktm_error_class(err);
		o->no = ktm_error_errno(err);
		snprintf(o->msg, sizeof(o->msg), "%s", ktm_error_message(err));
		ktm_error_free(err);
	}
	o->done = true;
}

/* The destination in a child; cancelled from a thread there when @cancel
 * (after @at bytes, or @after_s with @at 0). */
static void start_dest(struct cx *g, bool cancel, uint64_t at, double after_s)
{
	fflush(stdout);
	g->dest = fork();
	if (g->dest == 0) {
		struct ktm_error *err = NULL;
		struct ktm_migration *m = ktm_migration_new(g->scfg, NULL);
		struct canceller k;
		bool ok;

		ktm_migration_set_accept_timeout(m, g->accept_ms ? g->accept_ms :
						  20000);
		arm(&k, m, cancel, at, after_s, &g->dst->t_cancel);
		ok = ktm_migration_recv(m, g->lfd, g->out, &err);
		record(g->dst, ok, err);
		disarm(&k, cancel);
		ktm_migration_free(m);
		_exit(0);
	}
}

static void run_source(struct cx *g, const char *port, unsigned int channels,
		       enum ktm_send_path sp, bool cancel, uint64_t at,
		       double after_s)
{
	struct ktm_error *err = NULL;
	struct ktm_migration *m = ktm_migration_new(g->ccfg, NULL);
	int fd = open(g->img, O_RDONLY);
	struct canceller k;
	bool ok;

	ktm_migration_set_channels(m, channels, NULL);
	ktm_migration_set_send_path(m, sp);
	arm(&k, m, cancel, at, after_s, &g->src->t_cancel);
	ok = ktm_migration_send(m, "localhost", port, fd, &err);
	record(g->src, ok, err);
	disarm(&k, cancel);
	close(fd);
	ktm_migration_free(m);
}

static bool wait_dest(struct cx *g, int seconds)
{
	int i;

	for (i = 0; i < seconds * 100; i++) {
		if (waitpid(g->dest, NULL, WNOHANG) == g->dest) {
			g->dest = 0;
			return true;
		}
		usleep(10000);
	}
	return false;
}

/* The side that cancelled: its own sentence, in time. */
static void expect_cancelled(struct t_meta *_metadata, const struct outcome *o)
{
	TH_LOG("cancelled side (%.2f s after the cancel): %s",
	       o->t_end - o->t_cancel, o->msg);
	EXPECT_TRUE(o->done);
	EXPECT_FALSE(o->ok);
	EXPECT_EQ(o->cls, KTM_ERR_CANCELLED);
	EXPECT_EQ(o->no, ECANCELED);
	EXPECT_STRSTR(o->msg, "was cancelled by " BY);
	EXPECT_GT(o->t_cancel, 0);
	EXPECT_LT(o->t_end - o->t_cancel, BOUND_S);
}

/* The other side: the peer's sentence (ABORT), in time. */
static void expect_told(struct t_meta *_metadata, const struct outcome *o,
			double t_cancel)
{
	TH_LOG("its peer (%.2f s after the cancel): %s", o->t_end - t_cancel,
	       o->msg);
	EXPECT_TRUE(o->done);
	EXPECT_FALSE(o->ok);
	EXPECT_EQ(o->cls, KTM_ERR_PEER);
	EXPECT_EQ(o->no, ECANCELED);
	EXPECT_STRSTR(o->msg, "stopped the migration");
	EXPECT_STRSTR(o->msg, "was cancelled by " BY);
	EXPECT_LT(o->t_end - t_cancel, BOUND_S);
}

/* ---- mid-transfer, per send path ------------------------------------------- */

FIXTURE(cancel)
{
	struct cx g;
};

FIXTURE_VARIANT(cancel)
{
	enum ktm_send_path path;
	unsigned int channels;
};

FIXTURE_VARIANT_ADD(cancel, sendfile_1ch) { KTM_SEND_SENDFILE, 1 };
FIXTURE_VARIANT_ADD(cancel, splice_2ch) { KTM_SEND_SPLICE, 2 };
FIXTURE_VARIANT_ADD(cancel, io_uring_1ch) { KTM_SEND_IO_URING, 1 };
FIXTURE_VARIANT_ADD(cancel, writev_2ch) { KTM_SEND_WRITEV, 2 };

FIXTURE_SETUP(cancel)
{
	ASSERT_EQ(cx_setup(&self->g), 0);
	ASSERT_EQ(start_relay(&self->g, false), 0);
}

FIXTURE_TEARDOWN(cancel)
{
	cx_teardown(&self->g);
}

TEST_F_TIMEOUT(cancel, source_mid_transfer_ends_both_sides, 120)
{
	struct cx *g = &self->g;

	start_dest(g, false, 0, 0);
	run_source(g, g->rport, variant->channels, variant->path, true,
		   CANCEL_AT, 0);
	ASSERT_TRUE(wait_dest(g, 30));
	expect_cancelled(_metadata, g->src);
	expect_told(_metadata, g->dst, g->src->t_cancel);
	EXPECT_FALSE(exists(g->out));
	EXPECT_FALSE(exists(g->partial));
}

TEST_F_TIMEOUT(cancel, destination_mid_transfer_ends_both_sides, 120)
{
	struct cx *g = &self->g;

	start_dest(g, true, CANCEL_AT, 0);
	run_source(g, g->rport, variant->channels, variant->path, false, 0, 0);
	ASSERT_TRUE(wait_dest(g, 30));
	expect_cancelled(_metadata, g->dst);
	expect_told(_metadata, g->src, g->dst->t_cancel);
	EXPECT_FALSE(exists(g->out));
	EXPECT_FALSE(exists(g->partial));
}

/* ---- before the handshake completed ------------------------------------------ */

/*
 * The source's handshake hangs on a relay that never answers; the
 * destination waits for a source that never comes: both are cancelled
 * 0.3 s in, and each ends with its own sentence.
 */
TEST_TIMEOUT(cancel_before_handshake_ends_both_sides, 60)
{
	struct cx g;

	ASSERT_EQ(cx_setup(&g), 0);
	ASSERT_EQ(start_relay(&g, true), 0);
	start_dest(&g, true, 0, 0.3);
	run_source(&g, g.rport, 2, KTM_SEND_AUTO, true, 0, 0.3);
	ASSERT_TRUE(wait_dest(&g, 30));
	expect_cancelled(_metadata, g.src);
	expect_cancelled(_metadata, g.dst);
	EXPECT_STRSTR(g.src->msg, "to localhost:");
	EXPECT_STRSTR(g.dst->msg, "on the destination");
	EXPECT_FALSE(exists(g.out));
	EXPECT_FALSE(exists(g.partial));
	cx_teardown(&g);
}

/* cancel_in_reconnection(): cancel once @path exists. */
struct file_canceller {
	struct ktm_migration *m;
	const char *path;
	double *t;
};

static void *cancel_when_file(void *arg)
{
	struct file_canceller *k = arg;
	double start = ktm_now_s();

	while (access(k->path, F_OK) && ktm_now_s() - start < 60)
		usleep(5000);
	*k->t = ktm_now_s();
	ktm_migration_cancel(k->m, BY);
	return NULL;
}

/*
 * A key-limit reconnection (TLS 1.2 always reconnects) whose handshake
 * hangs in the source's check hook: the cancel ends the source at once,
 * not at the handshake timeout.  The destination, told nothing more
 * (its old session ended with RECONNECT), fails at its accept timeout.
 */
TEST_TIMEOUT(cancel_in_a_reconnection_handshake_ends_both_sides, 60)
{
	struct ktm_error *err = NULL;
	struct ktm_migration *m;
	struct file_canceller k;
	char hook[128], started[128];
	pthread_t thr;
	struct cx g;
	FILE *f;
	int fd;
	bool ok;

	ASSERT_EQ(cx_setup(&g), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", g.dir);
	snprintf(started, sizeof(started), "%s/second-hook", g.dir);
	f = fopen(hook, "w");
	ASSERT_NE(f, NULL);
	/* the first handshake passes; the second (the reconnection) hangs */
	fprintf(f, "#!/bin/sh\nif [ -e %s/first-hook ]; then touch %s; "
		"exec sleep 30; fi\ntouch %s/first-hook\n", g.dir, started,
		g.dir);
	fclose(f);
	ASSERT_EQ(chmod(hook, 0700), 0);
	ASSERT_TRUE(ktm_config_set_versions(g.ccfg, KTM_TLS_1_2, KTM_TLS_1_2,
					    NULL));
	ASSERT_TRUE(ktm_config_set_check_exec(g.ccfg, hook, "vm", "uri",
					      NULL));
	g.accept_ms = 3000;
	start_dest(&g, false, 0, 0);
	m = ktm_migration_new(g.ccfg, NULL);
	ktm_migration_set_key_limit(m, 400);
	k = (struct file_canceller){ m, started, &g.src->t_cancel };
	ASSERT_EQ(pthread_create(&thr, NULL, cancel_when_file, &k), 0);
	fd = open(g.img, O_RDONLY);
	ok = ktm_migration_send(m, "localhost", g.port, fd, &err);
	record(g.src, ok, err);
	pthread_join(thr, NULL);
	close(fd);
	ktm_migration_free(m);
	ASSERT_TRUE(wait_dest(&g, 30));
	expect_cancelled(_metadata, g.src);
	TH_LOG("destination (%.2f s after the cancel): %s",
	       g.dst->t_end - g.src->t_cancel, g.dst->msg);
	EXPECT_FALSE(g.dst->ok);
	EXPECT_STRSTR(g.dst->msg, "did not reconnect within 3000 ms");
	/* it waits the accept timeout and up to 1 s more (wait_resume) */
	EXPECT_LT(g.dst->t_end - g.src->t_cancel, 3 + 1 + BOUND_S);
	EXPECT_FALSE(exists(g.out));
	EXPECT_FALSE(exists(g.partial));
	cx_teardown(&g);
}

/* A cancel made before the call: the call returns at once, cancelled. */
TEST_TIMEOUT(cancel_before_the_call_returns_at_once, 30)
{
	struct ktm_error *err = NULL;
	struct ktm_migration *m;
	struct cx g;
	double t0;
	int fd;

	ASSERT_EQ(cx_setup(&g), 0);
	m = ktm_migration_new(g.ccfg, NULL);
	ASSERT_NE(m, NULL);
	fd = open(g.img, O_RDONLY);
	ktm_migration_cancel(m, BY);
	t0 = ktm_now_s();
	EXPECT_FALSE(ktm_migration_send(m, "localhost", g.port, fd, &err));
	EXPECT_LT(ktm_now_s() - t0, BOUND_S);
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CANCELLED);
	EXPECT_STRSTR(ktm_error_message(err), "was cancelled by " BY);
	ktm_error_free(err);
	err = NULL;
	ktm_migration_free(m);
	m = ktm_migration_new(g.scfg, NULL);
	ktm_migration_cancel(m, NULL);
	t0 = ktm_now_s();
	EXPECT_FALSE(ktm_migration_recv(m, g.lfd, g.out, &err));
	EXPECT_LT(ktm_now_s() - t0, BOUND_S);
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CANCELLED);
	EXPECT_STRSTR(ktm_error_message(err), "was cancelled by the caller");
	EXPECT_FALSE(exists(g.partial));
	ktm_error_free(err);
	ktm_migration_free(m);
	close(fd);
	cx_teardown(&g);
}

TEST_HARNESS_MAIN
