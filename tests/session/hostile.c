// SPDX-License-Identifier: MIT
/*
 * Faults and hostile input against `ktls-migrate migrate`, as an operator
 * and an attacker on the same network would try them: a relay of our own
 * between the two ends that flips a bit, cuts with FIN or RST, freezes or
 * signals a side mid-transfer; strays at the destination's port during a
 * live migration (bare connect, HTTP, garbage, an unauthorized
 * certificate, a second source); a full filesystem; SIGKILL, SIGSTOP and
 * SIGINT; a crafted source with an overflowing image size.  Each case
 * checks the exit status, the sentence, what is left on disk and a
 * generous time bound (liveness, not speed).
 *
 * Runs natively (userspace TLS) and in the guest tier (kernel TLS) like
 * the other session tests; the tool is build/ktls-migrate, found next to
 * this binary's directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"
#include "peer.h"
#include "pki.h"
#include "stream.h"

#define IMG_MIB 16u

struct env {
	char dir[64], img[128], out[160], partial[200], tool[4200];
};

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int env_setup_size(struct env *e, const struct t_pki_opts *pki,
			  unsigned int mib)
{
	char self[4000];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	memset(e, 0, sizeof(*e));
	if (n <= 0)
		return -1;
	self[n] = '\0';
	/* BUILD/tests/session/hostile -> BUILD/ktls-migrate */
	slash = strrchr(self, '/');
	*slash = '\0';
	snprintf(e->tool, sizeof(e->tool), "%s/../../ktls-migrate", self);
	if (t_pki_make_temp(e->dir, sizeof(e->dir), pki))
		return -1;
	snprintf(e->img, sizeof(e->img), "%s/image", e->dir);
	snprintf(e->out, sizeof(e->out), "%s/received", e->dir);
	snprintf(e->partial, sizeof(e->partial), "%s.ktm-partial", e->out);
	/* PRNG bytes, no zero pages: every byte crosses the wire */
	return t_prng_file(e->img, (size_t)mib << 20, 0x9e3779b9);
}

static int env_setup(struct env *e, const struct t_pki_opts *pki)
{
	return env_setup_size(e, pki, IMG_MIB);
}

static void env_teardown(struct env *e)
{
	char p[256];

	unlink(e->img);
	unlink(e->out);
	unlink(e->partial);
	snprintf(p, sizeof(p), "%s/src.out", e->dir), unlink(p);
	snprintf(p, sizeof(p), "%s/src.err", e->dir), unlink(p);
	snprintf(p, sizeof(p), "%s/dst.out", e->dir), unlink(p);
	snprintf(p, sizeof(p), "%s/dst.err", e->dir), unlink(p);
	snprintf(p, sizeof(p), "%s/other.err", e->dir), unlink(p);
	snprintf(p, sizeof(p), "%s/other.out", e->dir), unlink(p);
	t_pki_remove(e->dir);
}

/* ---- the tool in a child ----------------------------------------------------- */

struct run {
	pid_t pid;
	double t0, secs;
	int status;		/* exit status, 128+N for signal N, -1 hung */
	char err_path[256], err[8192];
};

static void run_start(struct run *r, const struct env *e, const char *name,
		      const char *const args[])
{
	char out[256];
	const char *argv[40];
	int i, n = 0;

	memset(r, 0, sizeof(*r));
	snprintf(out, sizeof(out), "%s/%s.out", e->dir, name);
	snprintf(r->err_path, sizeof(r->err_path), "%s/%s.err", e->dir, name);
	argv[n++] = e->tool;
	for (i = 0; args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	/* emptied before the child runs: nobody reads the last run's words */
	close(open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
	fflush(stdout);
	r->t0 = ktm_now_s();
	r->pid = fork();
	if (r->pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int er = open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(o, 1);
		dup2(er, 2);
		signal(SIGPIPE, SIG_DFL);
		execv(e->tool, (char *const *)argv);
		_exit(127);
	}
}

static void run_read_err(struct run *r)
{
	int fd = open(r->err_path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, r->err, sizeof(r->err) - 1) : 0;

	r->err[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

/* Wait up to @secs; a child still running then is killed (status -1). */
static int run_wait(struct run *r, double secs)
{
	int st;

	while (ktm_now_s() - r->t0 < secs + 60) {
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			r->secs = ktm_now_s() - r->t0;
			r->status = WIFEXITED(st) ? WEXITSTATUS(st) :
				    128 + WTERMSIG(st);
			r->pid = 0;
			run_read_err(r);
			return r->status;
		}
		if (ktm_now_s() - r->t0 > secs) {
			kill(r->pid, SIGKILL);
			waitpid(r->pid, NULL, 0);
			r->pid = 0;
			r->status = -1;
			r->secs = ktm_now_s() - r->t0;
			run_read_err(r);
			return -1;
		}
		usleep(10000);
	}
	return -1;
}

/* The destination's port from "waiting for the source on 127.0.0.1:N". */
static bool dest_port(struct run *r, char port[8])
{
	double end = ktm_now_s() + 20;
	const char *p;

	while (ktm_now_s() < end) {
		run_read_err(r);
		p = strstr(r->err, "waiting for the source on 127.0.0.1:");
		if (p) {
			snprintf(port, 8, "%u", (unsigned int)atoi(strchr(p + 30, ':') + 1));
			return true;
		}
		if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
			r->pid = 0;
			return false;
		}
		usleep(10000);
	}
	return false;
}

static void start_dest(struct run *r, const struct env *e, const char *io_s,
		       const char *extra)
{
	const char *args[] = { "migrate", "recv", "--listen", "127.0.0.1:0",
			       "--image", e->out, "--creds", e->dir, "--quiet",
			       "--io-timeout", io_s, "--accept-timeout", "20",
			       extra, NULL };

	run_start(r, e, "dst", args);
}

static void start_source(struct run *r, const struct env *e, const char *port,
			 const char *io_s)
{
	char to[32];
	const char *args[] = { "migrate", "send", "--to", to, "--image", e->img,
			       "--creds", e->dir, "--quiet", "--io-timeout", io_s,
			       NULL };

	snprintf(to, sizeof(to), "localhost:%s", port);
	run_start(r, e, "src", args);
}

static void run_kill(struct run *r)
{
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		r->pid = 0;
	}
}

/* ---- the relay --------------------------------------------------------------- */

enum relay_act {
	R_FLIP,		/* flip one bit of the byte at @after */
	R_FIN,		/* close both sides after @after bytes */
	R_RST,		/* reset both sides after @after bytes */
	R_FREEZE,	/* stop forwarding after @after bytes, keep both open */
	R_SIGNAL,	/* send @sig to @victim after @after bytes, go on */
	R_STALL,	/* stop for @stall_ms after @after bytes, go on */
	R_EAT_BACK,	/* after @after bytes, drop what the destination
			 * answers and close the source's side: a lost
			 * VERDICT */
};

struct relay {
	enum relay_act act;
	uint64_t after;
	int sig;
	pid_t victim;
	unsigned int stall_ms;
	unsigned int conn;	/* the connection acted on: 0 first, 1 second */
	pid_t pid;
	char port[8];
	double *acted;		/* shared: when the relay acted (monotonic s) */
};

static void reset_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

/* Source to destination, acting once at @after. */
static bool relay_fwd(struct relay *rl, int in, int out, uint64_t *seen,
		      bool *frozen)
{
	char buf[65536];
	ssize_t n = read(in, buf, sizeof(buf));
	uint64_t at = rl->after - *seen;

	if (n <= 0)
		return false;
	if (*seen + (uint64_t)n > rl->after && *seen <= rl->after) {
		*rl->acted = ktm_now_s();
		switch (rl->act) {
		case R_FLIP:
			buf[at] ^= 0x10;
			break;
		case R_FIN:
		case R_RST:
			if (write(out, buf, at) < 0)
				return false;
			if (rl->act == R_RST) {
				reset_close(in);
				reset_close(out);
			}
			_exit(0);
		case R_FREEZE:
			if (write(out, buf, at) < 0)
				return false;
			*frozen = true;
			return true;
		case R_SIGNAL:
			kill(rl->victim, rl->sig);
			break;
		case R_STALL:
			usleep(rl->stall_ms * 1000);
			break;
		case R_EAT_BACK:
			*frozen = true;	/* read by relay_run: eat the answers */
			break;
		}
	}
	*seen += (uint64_t)n;
	return write(out, buf, (size_t)n) == n;
}

/* One relayed connection @in (a process of its own); acts when @victim. */
static void relay_pair(struct relay *rl, int in, const char *dst_port,
		       bool victim)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)atoi(dst_port)) };
	int out = socket(AF_INET, SOCK_STREAM, 0);
	uint64_t seen = 0;
	bool frozen = false;
	char buf[65536];

	if (!victim)
		rl->after = UINT64_MAX;	/* passes everything through */
	if (in < 0 || out < 0 || connect(out, (struct sockaddr *)&a, sizeof(a)))
		_exit(1);
	for (;;) {
		struct pollfd p[2] = { { .fd = in, .events = POLLIN },
				       { .fd = out, .events = POLLIN } };

		if (frozen && rl->act != R_EAT_BACK) {
			pause();	/* a partition: nothing moves */
			continue;
		}
		if (poll(p, 2, 60000) <= 0)
			_exit(1);
		if (p[1].revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(out, buf, sizeof(buf));

			if (n > 0 && frozen) {
				/* the verdict goes nowhere; the source's
				 * connection ends with a FIN */
				close(in);
				for (;;)
					if (read(out, buf, sizeof(buf)) <= 0)
						_exit(0);
			}
			if (n <= 0 || write(in, buf, (size_t)n) != n)
				_exit(0);
		}
		if ((p[0].revents & (POLLIN | POLLHUP)) &&
		    !relay_fwd(rl, in, out, &seen, &frozen))
			_exit(0);
	}
}

/* Every connection to the relay gets a process of its own (gone with the
 * relay); connection number @rl->conn is the one acted on. */
static void relay_run(struct relay *rl, int lfd, const char *dst_port)
{
	unsigned int k;

	for (k = 0;; k++) {
		int in = accept(lfd, NULL, NULL);
		pid_t pid;

		if (in < 0)
			_exit(1);
		pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(lfd);
			relay_pair(rl, in, dst_port, k == rl->conn);
		}
		close(in);
	}
}

static int relay_start(struct relay *rl, const char *dst_port)
{
	struct t_server s;

	if (t_server_listen(&s))
		return -1;
	munmap(s.out, sizeof(*s.out));
	rl->acted = mmap(NULL, sizeof(double), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rl->acted == MAP_FAILED)
		return -1;
	*rl->acted = 0;
	snprintf(rl->port, sizeof(rl->port), "%s", s.port);
	fflush(stdout);
	rl->pid = fork();
	if (rl->pid == 0)
		relay_run(rl, s.lfd, dst_port);
	close(s.lfd);
	return rl->pid > 0 ? 0 : -1;
}

static void relay_stop(struct relay *rl)
{
	if (rl->pid > 0) {
		kill(rl->pid, SIGKILL);
		waitpid(rl->pid, NULL, 0);
		rl->pid = 0;
	}
	if (rl->acted && rl->acted != MAP_FAILED)
		munmap(rl->acted, sizeof(double));
	rl->acted = NULL;
}

/* After a freeze the source still fills the loopback socket buffers
 * (several MiB) before its sends block: under emulation that takes up to
 * a second, which is allowed for on top of "the I/O timeout plus 2 s". */
#define T_FILL_S 1

/* Seconds from the relay's act to the end of @r. */
static double since_act(const struct relay *rl, const struct run *r)
{
	return r->t0 + r->secs - *rl->acted;
}

/* ---- the cases --------------------------------------------------------------- */

/* One migration through a relay; both ends' runs come back. */
static void through_relay(struct t_meta *_metadata, struct env *e,
			  struct relay *rl, const char *io_s, struct run *src,
			  struct run *dst)
{
	char port[8];

	start_dest(dst, e, io_s, NULL);
	ASSERT_TRUE(dest_port(dst, port));
	rl->victim = dst->pid;
	ASSERT_EQ(relay_start(rl, port), 0);
	start_source(src, e, rl->port, io_s);
}

static void expect_nothing_left(struct t_meta *_metadata, const struct env *e)
{
	EXPECT_FALSE(exists(e->out));
	EXPECT_FALSE(exists(e->partial));
}

FIXTURE(relay)
{
	struct env e;
	struct run src, dst;
	struct relay rl;
};

FIXTURE_VARIANT(relay)
{
	enum relay_act act;
	const char *src_says, *dst_says;
};

/* A flipped bit fails the record's authentication at the destination. */
FIXTURE_VARIANT_ADD(relay, bit_flip) {
	R_FLIP, "channel 0: ", "failed authentication (tampered or corrupted"
};
FIXTURE_VARIANT_ADD(relay, fin_cut) {
	R_FIN, "channel 0: ", "without TLS close_notify (truncated)"
};
FIXTURE_VARIANT_ADD(relay, rst_cut) {
	R_RST, "channel 0: ", "channel 0: "
};

FIXTURE_SETUP(relay)
{
	ASSERT_EQ(env_setup(&self->e, NULL), 0);
}

FIXTURE_TEARDOWN(relay)
{
	run_kill(&self->src);
	run_kill(&self->dst);
	relay_stop(&self->rl);
	env_teardown(&self->e);
}

TEST_F_TIMEOUT(relay, fault_named_on_both_sides_nothing_left, 120)
{
	self->rl.act = variant->act;
	self->rl.after = 4u << 20;
	through_relay(_metadata, &self->e, &self->rl, "5", &self->src, &self->dst);
	EXPECT_EQ(run_wait(&self->src, 30), 1);
	EXPECT_EQ(run_wait(&self->dst, 30), 1);
	TH_LOG("source (%.1f s): %s", self->src.secs, self->src.err);
	TH_LOG("destination (%.1f s): %s", self->dst.secs, self->dst.err);
	EXPECT_STRSTR(self->src.err, "ktls-migrate: ");
	EXPECT_STRSTR(self->src.err, variant->src_says);
	EXPECT_STRSTR(self->dst.err, variant->dst_says);
	/* the peer is named */
	EXPECT_STRSTR(self->src.err, "localhost:");
	EXPECT_STRSTR(self->dst.err, "127.0.0.1:");
	/* within the I/O timeout plus 2 s at most */
	EXPECT_LT(since_act(&self->rl, &self->src), 5 + 2);
	EXPECT_LT(since_act(&self->rl, &self->dst), 5 + 2);
	expect_nothing_left(_metadata, &self->e);
}

/* One bad channel of two: a bit flipped on channel 1's connection.  The
 * destination names channel 1 and the cause, and its sentence reaches
 * the source over channel 0 (ABORT), which must stay able to send. */
TEST_TIMEOUT(bad_second_channel_reason_reaches_the_source, 120)
{
	struct relay rl = { .act = R_FLIP, .after = 2u << 20, .conn = 1 };
	const char *args[] = { "migrate", "send", "--to", NULL, "--image", NULL,
			       "--creds", NULL, "--quiet", "--io-timeout", "5",
			       "--channels", "2", NULL };
	struct run src, dst;
	struct env e;
	char port[8], to[32];

	ASSERT_EQ(env_setup_size(&e, NULL, 16), 0);
	start_dest(&dst, &e, "5", NULL);
	ASSERT_TRUE(dest_port(&dst, port));
	rl.victim = dst.pid;
	ASSERT_EQ(relay_start(&rl, port), 0);
	snprintf(to, sizeof(to), "localhost:%s", rl.port);
	args[3] = to;
	args[5] = e.img;
	args[7] = e.dir;
	run_start(&src, &e, "src", args);
	EXPECT_EQ(run_wait(&src, 30), 1);
	EXPECT_EQ(run_wait(&dst, 30), 1);
	TH_LOG("source (%.1f s): %s", src.secs, src.err);
	TH_LOG("destination (%.1f s): %s", dst.secs, dst.err);
	EXPECT_STRSTR(dst.err, "channel 1: ");
	EXPECT_STRSTR(dst.err, "failed authentication");
	/* the destination's own sentence, not a bare broken connection */
	EXPECT_STRSTR(src.err, "stopped the migration");
	EXPECT_STRSTR(src.err, "failed authentication");
	expect_nothing_left(_metadata, &e);
	relay_stop(&rl);
	env_teardown(&e);
}

/* A partition (nothing moves, both connections stay open), and a
 * destination stopped with SIGSTOP: the source ends within the I/O timeout
 * plus 2 s, naming the peer and the timeout. */
TEST_TIMEOUT(frozen_connection_fails_both_within_io_timeout, 120)
{
	struct env e;
	struct run src, dst;
	struct relay rl = { .act = R_FREEZE, .after = 4u << 20 };

	/* more than loopback socket buffers hold, so the freeze is felt
	 * while pages move (a source that sent everything waits for the
	 * verdict instead: also a timeout) */
	ASSERT_EQ(env_setup_size(&e, NULL, 64), 0);
	through_relay(_metadata, &e, &rl, "2", &src, &dst);
	EXPECT_EQ(run_wait(&src, 30), 1);
	EXPECT_EQ(run_wait(&dst, 30), 1);
	TH_LOG("source (%.1f s): %s", src.secs, src.err);
	TH_LOG("destination (%.1f s): %s", dst.secs, dst.err);
	EXPECT_STRSTR(src.err, "channel 0: ");
	EXPECT_STRSTR(src.err, "timed out");
	EXPECT_STRSTR(src.err, "of 2000 ms");
	EXPECT_STRSTR(dst.err, "timed out");
	EXPECT_GT(*rl.acted, 0);
	EXPECT_LT(since_act(&rl, &src), 2 + 2 + T_FILL_S);
	EXPECT_LT(since_act(&rl, &dst), 2 + 2 + T_FILL_S);
	expect_nothing_left(_metadata, &e);
	relay_stop(&rl);
	env_teardown(&e);
}

TEST_TIMEOUT(stopped_destination_fails_source_within_io_timeout, 120)
{
	struct env e;
	struct run src, dst;
	struct relay rl = { .act = R_SIGNAL, .sig = SIGSTOP, .after = 4u << 20 };
	int st;

	ASSERT_EQ(env_setup_size(&e, NULL, 64), 0);
	through_relay(_metadata, &e, &rl, "2", &src, &dst);
	EXPECT_EQ(run_wait(&src, 30), 1);
	TH_LOG("source (%.1f s): %s", src.secs, src.err);
	EXPECT_STRSTR(src.err, "channel 0: ");
	EXPECT_STRSTR(src.err, "timed out");
	EXPECT_STRSTR(src.err, "of 2000 ms");
	EXPECT_GT(*rl.acted, 0);
	EXPECT_LT(since_act(&rl, &src), 2 + 2 + T_FILL_S);
	/* woken again, the destination either finds its source gone and
	 * keeps nothing, or had every byte buffered and commits: then the
	 * source said the outcome is unknown */
	kill(dst.pid, SIGCONT);
	st = run_wait(&dst, 30);
	TH_LOG("destination (%.1f s, exit %d): %s", dst.secs, st, dst.err);
	if (st == 0) {
		EXPECT_STRSTR(src.err, "the outcome is unknown");
		EXPECT_TRUE(exists(e.out));
		EXPECT_FALSE(exists(e.partial));
	} else {
		EXPECT_EQ(st, 1);
		expect_nothing_left(_metadata, &e);
	}
	relay_stop(&rl);
	env_teardown(&e);
}

/* SIGINT of the destination mid-transfer: exit 130, its partial file
 * gone, the source fails with a sentence (not a signal). */
TEST_TIMEOUT(interrupted_destination_removes_its_partial_file, 120)
{
	struct env e;
	struct run src, dst;
	struct relay rl = { .act = R_SIGNAL, .sig = SIGINT, .after = 4u << 20 };

	ASSERT_EQ(env_setup(&e, NULL), 0);
	through_relay(_metadata, &e, &rl, "5", &src, &dst);
	EXPECT_EQ(run_wait(&dst, 30), 130);
	EXPECT_EQ(run_wait(&src, 30), 1);
	TH_LOG("destination: %s", dst.err);
	TH_LOG("source: %s", src.err);
	EXPECT_STRSTR(dst.err, "interrupted by SIGINT");
	EXPECT_STRSTR(src.err, "ktls-migrate: channel 0: ");
	/* the destination's reason reached the source (ABORT) */
	EXPECT_STRSTR(src.err, "stopped the migration: ");
	EXPECT_STRSTR(src.err, "was cancelled by SIGINT on the destination");
	EXPECT_LT(since_act(&rl, &src), 5 + 2);
	EXPECT_LT(since_act(&rl, &dst), 5 + 2);
	expect_nothing_left(_metadata, &e);
	relay_stop(&rl);
	env_teardown(&e);
}

/* SIGTERM of the source while the relay holds its stream: exit 143 with
 * the sentence; the destination fails in time and keeps nothing. */
TEST_TIMEOUT(terminated_source_says_so_and_destination_keeps_nothing, 120)
{
	struct env e;
	struct run src, dst;
	struct relay rl = { .act = R_STALL, .stall_ms = 3000, .after = 4u << 20 };
	double end;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	through_relay(_metadata, &e, &rl, "5", &src, &dst);
	for (end = ktm_now_s() + 60; !*rl.acted && ktm_now_s() < end; )
		usleep(10000);
	ASSERT_GT(*rl.acted, 0);
	kill(src.pid, SIGTERM);
	EXPECT_EQ(run_wait(&src, 30), 128 + SIGTERM);
	EXPECT_EQ(run_wait(&dst, 30), 1);
	TH_LOG("source: %s", src.err);
	TH_LOG("destination: %s", dst.err);
	EXPECT_STRSTR(src.err, "interrupted by SIGTERM");
	/* the stall outlasts the cancel's grace: the source cuts its
	 * stream, and its ABORT gets through only when it was sent before */
	EXPECT_STRSTR(dst.err, "channel 0: ");
	EXPECT_LT(since_act(&rl, &dst), 3 + 5 + 2);
	expect_nothing_left(_metadata, &e);
	relay_stop(&rl);
	env_teardown(&e);
}

/* SIGINT of the source mid-transfer: exit 130 with its sentence, and the
 * destination prints the source's reason (ABORT), not a truncated stream,
 * in time, and keeps nothing. */
TEST_TIMEOUT(interrupted_source_tells_the_destination_why, 120)
{
	struct env e;
	struct run src, dst;
	struct relay rl = { .act = R_STALL, .stall_ms = 300, .after = 4u << 20 };
	double end, t_sig;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	through_relay(_metadata, &e, &rl, "5", &src, &dst);
	for (end = ktm_now_s() + 60; !*rl.acted && ktm_now_s() < end; )
		usleep(2000);
	ASSERT_GT(*rl.acted, 0);
	kill(src.pid, SIGINT);
	t_sig = ktm_now_s();
	EXPECT_EQ(run_wait(&src, 30), 128 + SIGINT);
	EXPECT_EQ(run_wait(&dst, 30), 1);
	TH_LOG("source: %s", src.err);
	TH_LOG("destination: %s", dst.err);
	EXPECT_STRSTR(src.err, "interrupted by SIGINT");
	EXPECT_STRSTR(dst.err, "stopped the migration on channel 0: ");
	EXPECT_STRSTR(dst.err, "was cancelled by SIGINT");
	EXPECT_LT(src.t0 + src.secs - t_sig, 2 + 1);
	EXPECT_LT(dst.t0 + dst.secs - t_sig, 2 + 1);
	expect_nothing_left(_metadata, &e);
	relay_stop(&rl);
	env_teardown(&e);
}

/* SIGKILL of the destination: the source says why; the leftover partial
 * file is named at the next start with the command that removes it. */
TEST_TIMEOUT(killed_destination_leftover_is_named_at_next_start, 120)
{
	struct env e;
	struct run src, dst, again;
	struct relay rl = { .act = R_SIGNAL, .sig = SIGKILL, .after = 4u << 20 };
	char rm[300];

	ASSERT_EQ(env_setup(&e, NULL), 0);
	through_relay(_metadata, &e, &rl, "5", &src, &dst);
	EXPECT_EQ(run_wait(&dst, 30), 128 + SIGKILL);
	EXPECT_EQ(run_wait(&src, 30), 1);
	TH_LOG("source: %s", src.err);
	EXPECT_STRSTR(src.err, "ktls-migrate: channel 0: ");
	EXPECT_LT(since_act(&rl, &src), 5 + 2);
	EXPECT_FALSE(exists(e.out));
	ASSERT_TRUE(exists(e.partial));
	start_dest(&again, &e, "5", NULL);
	EXPECT_EQ(run_wait(&again, 10), 1);
	TH_LOG("next start: %s", again.err);
	EXPECT_STRSTR(again.err, "from an earlier migration is in the way");
	snprintf(rm, sizeof(rm), "rm -- '%s'", e.partial);
	EXPECT_STRSTR(again.err, rm);
	EXPECT_LT(again.secs, 5);
	relay_stop(&rl);
	env_teardown(&e);
}

/* The destination commits and answers, the answer is lost: the source
 * says the outcome is unknown and how to check it. */
TEST_TIMEOUT(lost_verdict_says_outcome_unknown, 120)
{
	struct env e;
	struct run src, dst;
	/* everything the source sends for the image, less the digest frame */
	struct relay rl = { .act = R_EAT_BACK, .after = (IMG_MIB << 20) + 4096 };

	ASSERT_EQ(env_setup(&e, NULL), 0);
	through_relay(_metadata, &e, &rl, "5", &src, &dst);
	EXPECT_EQ(run_wait(&src, 60), 1);
	EXPECT_EQ(run_wait(&dst, 60), 0);
	TH_LOG("source: %s", src.err);
	EXPECT_STRSTR(src.err, "was lost");
	EXPECT_STRSTR(src.err, "the outcome is unknown");
	EXPECT_STRSTR(src.err, "hint: ");
	EXPECT_TRUE(exists(e.out));
	relay_stop(&rl);
	env_teardown(&e);
}

/* ---- strays -------------------------------------------------------------- */

static int connect_to(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)atoi(port)) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	return fd;
}

static int connect_to_port_v6(int port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6,
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT,
				  .sin6_port = htons((uint16_t)port) };
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* What a port scan, a health check, curl and a confused peer do. */
static void strays(const char *port)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	static const char junk[] = "\x16\x03\x01\xff\xffnot really TLS";
	char buf[256];
	int fd, i;

	for (i = 0; i < 3; i++) {		/* nc -z */
		fd = connect_to(port);
		if (fd >= 0)
			close(fd);
	}
	fd = connect_to(port);			/* curl */
	if (fd >= 0 && write(fd, http, sizeof(http) - 1) > 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 3000) == 1 && read(fd, buf, sizeof(buf)) < 0)
			buf[0] = 0;
	}
	if (fd >= 0)
		close(fd);
	fd = connect_to(port);			/* garbage */
	if (fd >= 0 && write(fd, junk, sizeof(junk) - 1) > 0)
		usleep(100000);
	if (fd >= 0)
		reset_close(fd);
}

/* A client whose certificate the destination does not trust. */
static void untrusted_client(const char *port)
{
	struct t_pki_opts bad = { .flaw = T_PKI_CLIENT_UNKNOWN_CA };
	char dir[64];
	struct ktm_config *cfg;
	struct ktm_session *s;

	if (t_pki_make_temp(dir, sizeof(dir), &bad))
		return;
	cfg = t_config(KTM_ENDPOINT_CLIENT, dir, KTM_KTLS_PREFER);
	s = cfg ? ktm_session_connect(cfg, "localhost", port, NULL) : NULL;
	if (s) {	/* TLS 1.3: the refusal comes with the first read */
		char b[16];

		ktm_session_recv(s, b, sizeof(b), NULL);
	}
	ktm_session_free(s);
	ktm_config_free(cfg);
	t_pki_remove(dir);
}

TEST_TIMEOUT(strays_and_a_second_source_leave_the_migration_alone, 180)
{
	struct env e;
	struct run src, dst, other;
	struct relay rl = { .act = R_STALL, .stall_ms = 4000, .after = 2u << 20 };
	const char *args[] = { "migrate", "send", "--to", NULL, "--image", NULL,
			       "--creds", NULL, "--quiet", NULL };
	char port[8], to[32];
	int idle;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	start_dest(&dst, &e, "20", NULL);
	ASSERT_TRUE(dest_port(&dst, port));
	ASSERT_EQ(relay_start(&rl, port), 0);
	start_source(&src, &e, rl.port, "20");
	/* while the relay holds the live migration at 2 MiB */
	usleep(1500000);
	idle = connect_to(port);		/* half-open: says nothing */
	strays(port);
	untrusted_client(port);
	snprintf(to, sizeof(to), "localhost:%s", port);
	args[3] = to;
	args[5] = e.img;
	args[7] = e.dir;
	run_start(&other, &e, "other", args);
	EXPECT_EQ(run_wait(&other, 30), 1);
	TH_LOG("second source: %s", other.err);
	EXPECT_STRSTR(other.err, "receiving another migration");
	EXPECT_EQ(run_wait(&src, 120), 0);
	/* the half-open stray does not hold the finished destination */
	dst.t0 = ktm_now_s();
	EXPECT_EQ(run_wait(&dst, 120), 0);
	EXPECT_LT(dst.secs, 5);
	if (idle >= 0)
		close(idle);
	TH_LOG("destination: %s", dst.err);
	EXPECT_STRSTR(dst.err, "refused a connection from 127.0.0.1:");
	EXPECT_STRSTR(dst.err, "another migration");
	EXPECT_TRUE(exists(e.out));
	EXPECT_FALSE(exists(e.partial));
	relay_stop(&rl);
	env_teardown(&e);
}

static bool same_content(const char *a, const char *b)
{
	static char ba[65536], bb[65536];
	int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
	bool same = fa >= 0 && fb >= 0;

	while (same) {
		ssize_t na = read(fa, ba, sizeof(ba)), nb = read(fb, bb, sizeof(bb));

		same = na == nb && na >= 0 && !memcmp(ba, bb, (size_t)na);
		if (na <= 0)
			break;
	}
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return same;
}

#define FLOOD_IDLE 64
#define FLOOD_PARTIAL 8

/*
 * 64 connections that send nothing and 8 that send the start of a
 * ClientHello and stall, all kept open, then a real migration: it
 * completes and verifies well inside the handshake timeout (10 s; the
 * bound would fail if the source had to wait for a slot to time out), and
 * each dropped connection is logged with its address and reason.
 */
TEST_TIMEOUT(half_open_flood_does_not_starve_the_source, 120)
{
	/* a handshake record announcing 512 bytes, a ClientHello header
	 * announcing 508, then silence */
	static const char part[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
	int fds[FLOOD_IDLE + FLOOD_PARTIAL], i;
	struct env e;
	struct run src, dst;
	char port[8];

	ASSERT_EQ(env_setup(&e, NULL), 0);
	start_dest(&dst, &e, "20", NULL);
	ASSERT_TRUE(dest_port(&dst, port));
	for (i = 0; i < FLOOD_IDLE + FLOOD_PARTIAL; i++) {
		fds[i] = connect_to(port);
		if (fds[i] >= 0 && i >= FLOOD_IDLE &&
		    write(fds[i], part, sizeof(part) - 1) < 0)
			TH_LOG("partial ClientHello %d: %s", i, strerror(errno));
	}
	usleep(200000);		/* all of them in before the source */
	start_source(&src, &e, port, "20");
	EXPECT_EQ(run_wait(&src, 60), 0);
	EXPECT_EQ(run_wait(&dst, 60), 0);
	TH_LOG("source %.1f s, destination %.1f s", src.secs, dst.secs);
	EXPECT_LT(src.secs, 8);
	TH_LOG("source: %s", src.err);
	EXPECT_TRUE(same_content(e.img, e.out));
	EXPECT_FALSE(exists(e.partial));
	EXPECT_STRSTR(dst.err, "dropped a connection from 127.0.0.1:");
	EXPECT_STRSTR(dst.err, "it sent nothing for ");
	for (i = 0; i < FLOOD_IDLE + FLOOD_PARTIAL; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	env_teardown(&e);
}

/* The destination refuses the source's certificate: the source hears
 * that alert, not a reset (the destination reads what the source sent
 * after its Finished before it closes). */
TEST_TIMEOUT(untrusted_source_hears_the_alert, 120)
{
	struct t_pki_opts bad = { .flaw = T_PKI_CLIENT_UNKNOWN_CA };
	struct env e, foreign;
	struct run src, dst;
	char port[8], ca[300], fca[300];
	int i;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	ASSERT_EQ(env_setup(&foreign, &bad), 0);
	/* the foreign source trusts the destination's CA */
	snprintf(ca, sizeof(ca), "%s/" T_PKI_CA_CERT, e.dir);
	snprintf(fca, sizeof(fca), "%s/" T_PKI_CA_CERT, foreign.dir);
	{
		char buf[8192];
		int in = open(ca, O_RDONLY), out = open(fca, O_WRONLY | O_TRUNC);
		ssize_t n = in >= 0 ? read(in, buf, sizeof(buf)) : -1;

		ASSERT_GT(n, 0);
		ASSERT_EQ(write(out, buf, (size_t)n), n);
		close(in);
		close(out);
	}
	for (i = 0; i < 3; i++) {
		start_dest(&dst, &e, "5", NULL);
		ASSERT_TRUE(dest_port(&dst, port));
		start_source(&src, &foreign, port, "5");
		EXPECT_EQ(run_wait(&src, 30), 1);
		TH_LOG("source: %s", src.err);
		EXPECT_STRSTR(src.err, "does not trust the CA");
		EXPECT_TRUE(strstr(src.err, "reset") == NULL);
		run_kill(&dst);
		unlink(e.partial);
	}
	env_teardown(&foreign);
	env_teardown(&e);
}

/* ---- space, clobbering, crafted sizes ----------------------------------------- */

/* A 16 MiB image for an 8 MiB tmpfs, mounted in a mount namespace of the
 * destination's own, so nothing outlives the test. */
TEST_TIMEOUT(full_filesystem_is_named_on_both_sides, 60)
{
	struct env e;
	struct run src, dst;
	char port[8], mnt[128], listing[64];
	pid_t ns;
	int st;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	snprintf(mnt, sizeof(mnt), "%s/small", e.dir);
	ASSERT_EQ(mkdir(mnt, 0700), 0);
	snprintf(e.out, sizeof(e.out), "%s/received", mnt);
	snprintf(e.partial, sizeof(e.partial), "%s.ktm-partial", e.out);
	/* the destination runs inside a child that owns the mount */
	fflush(stdout);
	ns = fork();
	if (ns == 0) {
		if (unshare(CLONE_NEWNS) ||
		    mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
		    mount("tmpfs", mnt, "tmpfs", 0, "size=8m"))
			_exit(77);
		start_dest(&dst, &e, "5", NULL);
		st = run_wait(&dst, 30);
		/* what is left on the tmpfs, before it goes */
		snprintf(listing, sizeof(listing), "%d", exists(e.out) ||
			 exists(e.partial));
		_exit(st == 1 && listing[0] == '0' ? 0 : 10 + (st & 0x3f));
	}
	ASSERT_GT(ns, 0);
	/* its port: from its stderr file, written by the grandchild */
	memset(&dst, 0, sizeof(dst));
	snprintf(dst.err_path, sizeof(dst.err_path), "%s/dst.err", e.dir);
	dst.pid = ns;
	if (!dest_port(&dst, port)) {
		waitpid(ns, &st, 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
			SKIP(env_teardown(&e); return,
			     "cannot mount a tmpfs in a new mount namespace "
			     "(needs CAP_SYS_ADMIN)");
		ASSERT_TRUE(false);
	}
	start_source(&src, &e, port, "5");
	EXPECT_EQ(run_wait(&src, 20), 1);
	TH_LOG("source (%.2f s): %s", src.secs, src.err);
	EXPECT_STRSTR(src.err, "not enough space on the filesystem of ");
	EXPECT_STRSTR(src.err, "need 16777216 bytes");
	EXPECT_LT(src.secs, 2 + 3);
	ASSERT_EQ(waitpid(ns, &st, 0), ns);
	/* exit 1 with nothing left on the tmpfs */
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	run_read_err(&dst);
	TH_LOG("destination: %s", dst.err);
	EXPECT_STRSTR(dst.err, "not enough space on the filesystem of ");
	rmdir(mnt);
	env_teardown(&e);
}

TEST_TIMEOUT(image_over_max_size_is_refused_before_any_page, 60)
{
	struct env e;
	struct run src, dst;
	char port[8];

	ASSERT_EQ(env_setup(&e, NULL), 0);
	start_dest(&dst, &e, "5", "--max-image-size=8M");
	ASSERT_TRUE(dest_port(&dst, port));
	start_source(&src, &e, port, "5");
	EXPECT_EQ(run_wait(&src, 30), 1);
	EXPECT_EQ(run_wait(&dst, 30), 1);
	TH_LOG("source: %s", src.err);
	EXPECT_STRSTR(src.err, "stopped the migration: the image (16777216 "
			       "bytes) is larger than the limit for ");
	EXPECT_STRSTR(src.err, "(--max-image-size 8388608)");
	EXPECT_STRSTR(dst.err, "is larger than the limit for ");
	expect_nothing_left(_metadata, &e);
	env_teardown(&e);
}

TEST_TIMEOUT(existing_image_is_refused_unless_forced, 120)
{
	struct env e;
	struct run src, dst;
	char port[8];
	struct stat st;
	int fd;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	fd = open(e.out, O_WRONLY | O_CREAT, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "old image", 9), 9);
	close(fd);
	start_dest(&dst, &e, "5", NULL);
	EXPECT_EQ(run_wait(&dst, 10), 1);
	TH_LOG("without --force: %s", dst.err);
	EXPECT_STRSTR(dst.err, "exists already and would be replaced");
	EXPECT_STRSTR(dst.err, "--force");
	ASSERT_EQ(stat(e.out, &st), 0);
	EXPECT_EQ(st.st_size, 9);
	start_dest(&dst, &e, "5", "--force");
	ASSERT_TRUE(dest_port(&dst, port));
	start_source(&src, &e, port, "5");
	EXPECT_EQ(run_wait(&src, 60), 0);
	EXPECT_EQ(run_wait(&dst, 60), 0);
	ASSERT_EQ(stat(e.out, &st), 0);
	EXPECT_EQ(st.st_size, (off_t)IMG_MIB << 20);
	EXPECT_EQ(st.st_mode & 07777, 0600);	/* documented */
	EXPECT_FALSE(exists(e.partial));
	env_teardown(&e);
}

/* ---- a crafted source, built from the library's own framing -------------- */

struct crafted {
	struct ktm_config *cfg;
	struct ktm_session *s;
};

/* @len bytes from @s, however the records fall. */
static bool recv_all(struct ktm_session *s, void *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len &&
	       (n = ktm_session_recv(s, (char *)buf + got, len - got, NULL)) > 0)
		got += (size_t)n;
	return got == len;
}

/* The destination's next frame into @f, and its text (an ABORT's
 * reason, NUL-terminated) into @text. */
static bool crafted_answer(struct crafted *c, struct ktm_frame *f,
			   char *text, size_t len)
{
	uint8_t hdr[KTM_FRAME_LEN];

	memset(text, 0, len);
	return recv_all(c->s, hdr, sizeof(hdr)) && !ktm_frame_decode(hdr, f) &&
	       f->len < len && recv_all(c->s, text, f->len);
}

/* Connect to @port with @e's credentials and send @h as the HELLO with
 * @flags. */
static bool crafted_connect(struct crafted *c, const struct env *e,
			    const char *port, const struct ktm_hello *h,
			    uint8_t flags)
{
	struct ktm_frame hf = { .type = KTM_F_HELLO, .flags = flags,
				.len = KTM_HELLO_LEN };
	uint8_t hdr[KTM_FRAME_LEN], body[KTM_HELLO_LEN];

	c->cfg = t_config(KTM_ENDPOINT_CLIENT, e->dir, KTM_KTLS_PREFER);
	c->s = c->cfg ? ktm_session_connect(c->cfg, "localhost", port, NULL) :
			NULL;
	if (!c->s)
		return false;
	ktm_frame_encode(&hf, hdr);
	ktm_hello_encode(h, body);
	return ktm_session_send(c->s, hdr, sizeof(hdr), NULL) &&
	       ktm_session_send(c->s, body, sizeof(body), NULL);
}

/* crafted_connect() without flags; the answer in @f and @text. */
static bool crafted_hello(struct crafted *c, const struct env *e,
			  const char *port, const struct ktm_hello *h,
			  struct ktm_frame *f, char *text, size_t len)
{
	return crafted_connect(c, e, port, h, 0) &&
	       crafted_answer(c, f, text, len);
}

/* One frame without payload from a crafted source. */
static bool crafted_frame(struct crafted *c, const struct ktm_frame *f)
{
	uint8_t hdr[KTM_FRAME_LEN];

	ktm_frame_encode(f, hdr);
	return ktm_session_send(c->s, hdr, sizeof(hdr), NULL);
}

/* Whether the destination said anything on @c within @ms. */
static bool crafted_answers_within(const struct crafted *c, int ms)
{
	struct pollfd p = { .fd = ktm_session_fd(c->s), .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

static void crafted_end(struct crafted *c)
{
	ktm_session_free(c->s);
	ktm_config_free(c->cfg);
}

/* A destination (I/O timeout 5 s) and a crafted source's first session
 * for a 4 MiB image on one channel (HELLO in @h), answered HELLO_ACK. */
static bool crafted_start(struct env *e, struct run *dst, char port[8],
			  struct ktm_hello *h, struct crafted *c)
{
	struct ktm_frame f;
	char text[512];

	*h = (struct ktm_hello){ .version = KTM_STREAM_VERSION,
				 .nchannels = 1, .page_size = KTM_PAGE_SIZE,
				 .chunk_size = KTM_CHUNK_SIZE,
				 .image_size = 4u << 20,
				 .features = KTM_FEAT_ZERO_PAGES,
				 .digest = KTM_DIG_XXH3_128 };
	memset(h->stream_id, 0x5a, sizeof(h->stream_id));
	if (env_setup(e, NULL))
		return false;
	start_dest(dst, e, "5", NULL);
	return dest_port(dst, port) &&
	       crafted_hello(c, e, port, h, &f, text, sizeof(text)) &&
	       f.type == KTM_F_HELLO_ACK;
}

/* A crafted source: a HELLO announcing an image near 2^64 bytes. */
TEST_TIMEOUT(overflowing_image_size_is_a_malformed_stream, 60)
{
	struct env e;
	struct run dst;
	struct crafted c;
	struct ktm_hello h = { .version = KTM_STREAM_VERSION, .nchannels = 1,
			       .page_size = KTM_PAGE_SIZE,
			       .chunk_size = KTM_CHUNK_SIZE,
			       .image_size = UINT64_MAX - KTM_PAGE_SIZE + 1 };
	struct ktm_frame f;
	char port[8], text[512];

	ASSERT_EQ(env_setup(&e, NULL), 0);
	start_dest(&dst, &e, "5", NULL);
	ASSERT_TRUE(dest_port(&dst, port));
	/* the answer is an ABORT with the reason, not a HELLO_ACK */
	ASSERT_TRUE(crafted_hello(&c, &e, port, &h, &f, text, sizeof(text)));
	EXPECT_EQ(f.type, KTM_F_ABORT);
	TH_LOG("ABORT: %s", text);
	EXPECT_TRUE(strstr(text, "malformed") || strstr(text, "sane sizes"));
	crafted_end(&c);
	/* channel 0 of a migration that cannot be: it fails, with the
	 * same sentence, and creates nothing */
	/* a HELLO that cannot be never starts a migration: the destination
	 * is still waiting after the refusal (killed here) */
	EXPECT_EQ(run_wait(&dst, 3), -1);
	TH_LOG("destination: %s", dst.err);
	/* a HELLO that cannot be is a refused connection (logged with its
	 * reason), not the start of a migration: the destination goes on
	 * waiting for a real source until its accept timeout */
	EXPECT_STRSTR(dst.err, "sane sizes");
	expect_nothing_left(_metadata, &e);
	env_teardown(&e);
}

/* A crafted source: a proper HELLO, then pages out of their order.  The
 * destination's reason comes back as an ABORT before it closes. */
TEST_TIMEOUT(destination_reason_reaches_the_source_mid_stream, 60)
{
	struct env e;
	struct run dst;
	struct crafted c;
	struct ktm_hello h;
	struct ktm_frame f;
	struct ktm_frame z = { .type = KTM_F_ZERO, .offset = 2u << 20,
			       .aux = KTM_PAGE_SIZE };
	char port[8], text[512];

	ASSERT_TRUE(crafted_start(&e, &dst, port, &h, &c));
	/* chunk 2 first: channel 0 of 1 must start with chunk 0 */
	ASSERT_TRUE(crafted_frame(&c, &z));
	ASSERT_TRUE(crafted_answer(&c, &f, text, sizeof(text)));
	EXPECT_EQ(f.type, KTM_F_ABORT);
	EXPECT_EQ(f.aux, EBADMSG);
	TH_LOG("ABORT: %s", text);
	EXPECT_STRSTR(text, "channel 0: ");
	EXPECT_STRSTR(text, "malformed migration stream");
	crafted_end(&c);
	EXPECT_EQ(run_wait(&dst, 10), 1);
	EXPECT_STRSTR(dst.err, "malformed migration stream");
	expect_nothing_left(_metadata, &e);
	env_teardown(&e);
}

/*
 * A crafted source reconnecting channel 0 (lib/STREAM.md, order of events
 * 3): the destination answers the new connection's HELLO only after the
 * old session ended, refuses a second reconnection while one waits, and
 * one that resumes at another chunk than the RECONNECT named.  A source
 * going through short sessions faster than the destination reads them
 * once had its third session taken for its second (pages out of order).
 */
TEST_TIMEOUT(reconnections_are_answered_in_order, 60)
{
	struct env e;
	struct run dst;
	struct crafted c1, c2, c3, c4;
	struct ktm_hello h;
	struct ktm_frame zero = { .type = KTM_F_ZERO, .aux = KTM_CHUNK_SIZE };
	struct ktm_frame rc = { .type = KTM_F_RECONNECT, .offset = 1 };
	struct ktm_frame f;
	char port[8], text[512];

	ASSERT_TRUE(crafted_start(&e, &dst, port, &h, &c1));
	/* chunk 0, then RECONNECT at chunk 1; the session stays open */
	ASSERT_TRUE(crafted_frame(&c1, &zero));
	ASSERT_TRUE(crafted_frame(&c1, &rc));
	h.first_chunk = 1;
	ASSERT_TRUE(crafted_connect(&c2, &e, port, &h, KTM_FF_RESUME));
	EXPECT_FALSE(crafted_answers_within(&c2, 1000));
	/* a second one while the first waits: refused at once */
	ASSERT_TRUE(crafted_connect(&c3, &e, port, &h, KTM_FF_RESUME));
	ASSERT_TRUE(crafted_answer(&c3, &f, text, sizeof(text)));
	EXPECT_EQ(f.type, KTM_F_ABORT);
	EXPECT_STRSTR(text, "second reconnection");
	crafted_end(&c3);
	/* the old session ends: now the waiting one is answered */
	EXPECT_TRUE(ktm_session_shutdown(c1.s, NULL));
	ASSERT_TRUE(crafted_answer(&c2, &f, text, sizeof(text)));
	EXPECT_EQ(f.type, KTM_F_HELLO_ACK);
	crafted_end(&c1);
	/* RECONNECT at chunk 1 again, and a connection that resumes at 3 */
	ASSERT_TRUE(crafted_frame(&c2, &rc));
	EXPECT_TRUE(ktm_session_shutdown(c2.s, NULL));
	h.first_chunk = 3;
	ASSERT_TRUE(crafted_connect(&c4, &e, port, &h, KTM_FF_RESUME));
	ASSERT_TRUE(crafted_answer(&c4, &f, text, sizeof(text)));
	EXPECT_EQ(f.type, KTM_F_ABORT);
	EXPECT_STRSTR(text, "resumes at another chunk");
	crafted_end(&c2);
	crafted_end(&c4);
	EXPECT_EQ(run_wait(&dst, 10), 1);
	TH_LOG("destination: %s", dst.err);
	EXPECT_STRSTR(dst.err, "resumes at another chunk");
	expect_nothing_left(_metadata, &e);
	env_teardown(&e);
}

/* ---- the library with SIGPIPE's default disposition ------------------------------ */

/* The caller keeps SIGPIPE at its default: a destination that resets the
 * connection mid-transfer is an error, not the caller's death. */
TEST_TIMEOUT(library_needs_no_sigpipe_handling, 120)
{
	struct env e;
	struct run dst;
	struct relay rl = { .act = R_RST, .after = 4u << 20 };
	char port[8];
	pid_t child;
	int st;

	ASSERT_EQ(env_setup(&e, NULL), 0);
	start_dest(&dst, &e, "5", NULL);
	ASSERT_TRUE(dest_port(&dst, port));
	ASSERT_EQ(relay_start(&rl, port), 0);
	fflush(stdout);
	child = fork();
	if (child == 0) {
		struct ktm_config *cfg = t_config(KTM_ENDPOINT_CLIENT, e.dir,
						  KTM_KTLS_PREFER);
		struct ktm_migration *m = ktm_migration_new(cfg, NULL);
		struct ktm_error *err = NULL;
		int fd = open(e.img, O_RDONLY);
		bool ok;

		signal(SIGPIPE, SIG_DFL);
		ok = ktm_migration_send(m, "localhost", rl.port, fd, &err);
		_exit(!ok && err && strstr(ktm_error_message(err), "channel ") ?
		      3 : 4);
	}
	ASSERT_EQ(waitpid(child, &st, 0), child);
	EXPECT_TRUE(WIFEXITED(st));
	if (WIFSIGNALED(st))
		TH_LOG("the source died of signal %d", WTERMSIG(st));
	EXPECT_EQ(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 3);
	run_wait(&dst, 30);
	relay_stop(&rl);
	expect_nothing_left(_metadata, &e);
	env_teardown(&e);
}

/* --listen 127.0.0.1:0 says the port (the tests above rely on it); a bare
 * --listen PORT takes IPv6 and IPv4 where the host has IPv6, else IPv4. */
TEST_TIMEOUT(bare_port_listens_dual_stack, 60)
{
	struct env e;
	struct run dst;
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int probe = socket(AF_INET6, SOCK_STREAM, 0), fd, port = 0;
	bool v6 = probe >= 0 && !bind(probe, (struct sockaddr *)&a6, sizeof(a6));
	const char *want = v6 ? "waiting for the source on [::]:" :
				"waiting for the source on 0.0.0.0:";
	const char *args[] = { "migrate", "recv", "--listen", "0", "--image",
			       NULL, "--creds", NULL, "--accept-timeout", "3",
			       NULL };
	const char *p = NULL;
	char ps[16];

	if (probe >= 0)
		close(probe);
	TH_LOG("IPv6 loopback: %s", v6 ? "yes" : "no");
	ASSERT_EQ(env_setup(&e, NULL), 0);
	args[5] = e.out;
	args[7] = e.dir;
	run_start(&dst, &e, "dst", args);
	while (!p && ktm_now_s() - dst.t0 < 10) {
		usleep(10000);
		run_read_err(&dst);
		p = strstr(dst.err, want);
	}
	ASSERT_NE(p, NULL);
	port = atoi(p + strlen(want));
	ASSERT_GT(port, 0);
	snprintf(ps, sizeof(ps), "%d", port);
	fd = connect_to(ps);
	EXPECT_GE(fd, 0);
	if (fd >= 0)
		close(fd);
	if (v6) {
		fd = connect_to_port_v6(port);
		EXPECT_GE(fd, 0);
		if (fd >= 0)
			close(fd);
	}
	run_kill(&dst);
	env_teardown(&e);
}

TEST_HARNESS_MAIN
