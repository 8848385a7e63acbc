// SPDX-License-Identifier: MIT
/*
 * The harness runner: registration, filtering, one forked child per test
 * with a timeout, TAP output.  See harness.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"	/* ktm_now_s: the library's clock */

static struct t_fixture *fixtures, **fixtures_tail = &fixtures;
static struct t_test *tests, **tests_tail = &tests;
static sigjmp_buf t_env;

void t_register_fixture(struct t_fixture *f)
{
	if (!f->vtail)
		f->vtail = &f->variants;
	*fixtures_tail = f;
	fixtures_tail = &f->next;
}

void t_register_variant(struct t_fixture *f, struct t_variant *v)
{
	if (!f->vtail)
		f->vtail = &f->variants;
	*f->vtail = v;
	f->vtail = &v->next;
}

void t_register_test(struct t_test *t)
{
	*tests_tail = t;
	tests_tail = &t->next;
}

static void vlog(const char *file, int line, const char *fmt, va_list ap)
{
	printf("# %s:%d: ", file, line);
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
}

void t_log(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(file, line, fmt, ap);
	va_end(ap);
}

static void t_set_failed(struct t_meta *m)
{
	m->result = T_FAIL;
}

/* An operand as a number: exactly one of the three is meaningful. */
struct t_num {
	int kind;		/* as struct t_operand */
	long long s;
	unsigned long long u;
	long double f;
};

static struct t_num t_num_of(struct t_operand o)
{
	struct t_num n = { .kind = o.kind };
	unsigned char b[sizeof(long double)] = { 0 };

	memcpy(b, o.p, o.size < sizeof(b) ? o.size : sizeof(b));
	if (o.kind == 2) {
		if (o.size == sizeof(float))
			n.f = *(float *)(void *)b;
		else if (o.size == sizeof(double))
			n.f = *(double *)(void *)b;
		else
			n.f = *(long double *)(void *)b;
	} else if (o.kind == 1) {
		if (o.size == 1)
			n.s = *(signed char *)b;
		else if (o.size == 2)
			n.s = *(short *)(void *)b;
		else if (o.size == 4)
			n.s = *(int *)(void *)b;
		else
			n.s = *(long long *)(void *)b;
	} else {
		if (o.size == 1)
			n.u = *(unsigned char *)b;
		else if (o.size == 2)
			n.u = *(unsigned short *)(void *)b;
		else if (o.size == 4)
			n.u = *(unsigned int *)(void *)b;
		else
			n.u = *(unsigned long long *)(void *)b;
	}
	return n;
}

/* -1, 0, 1 as a < b, a == b, a > b, without converting either first. */
static int t_num_order(struct t_num a, struct t_num b)
{
	if (a.kind == 2 || b.kind == 2) {
		long double x = a.kind == 2 ? a.f : a.kind == 1 ? (long double)a.s :
				(long double)a.u;
		long double y = b.kind == 2 ? b.f : b.kind == 1 ? (long double)b.s :
				(long double)b.u;

		return x < y ? -1 : x > y;
	}
	if (a.kind == 1 && b.kind == 1)
		return a.s < b.s ? -1 : a.s > b.s;
	if (a.kind == 1)
		return a.s < 0 ? -1 : (unsigned long long)a.s < b.u ? -1 :
		       (unsigned long long)a.s > b.u;
	if (b.kind == 1)
		return b.s < 0 ? 1 : a.u < (unsigned long long)b.s ? -1 :
		       a.u > (unsigned long long)b.s;
	return a.u < b.u ? -1 : a.u > b.u;
}

static void t_num_text(struct t_num n, char *buf, size_t len)
{
	if (n.kind == 2)
		snprintf(buf, len, "%.17Lg", n.f);
	else if (n.kind == 1)
		snprintf(buf, len, "%lld", n.s);
	else if (n.u > 0xffff)
		snprintf(buf, len, "%llu (0x%llx)", n.u, n.u);
	else
		snprintf(buf, len, "%llu", n.u);
}

bool t_check_cmp(struct t_meta *m, const char *file, int line,
		 const char *expr, int op, struct t_operand a,
		 struct t_operand b)
{
	struct t_num x = t_num_of(a), y = t_num_of(b);
	int o = t_num_order(x, y);
	bool ok;
	char ta[64], tb[64];

	switch (op) {
	case T_OP_EQ: ok = o == 0; break;
	case T_OP_NE: ok = o != 0; break;
	case T_OP_LT: ok = o < 0; break;
	case T_OP_LE: ok = o <= 0; break;
	case T_OP_GT: ok = o > 0; break;
	default: ok = o >= 0; break;
	}
	if (ok)
		return true;
	t_num_text(x, ta, sizeof(ta));
	t_num_text(y, tb, sizeof(tb));
	printf("# %s:%d: expected %s (%s vs %s)\n", file, line, expr, ta, tb);
	fflush(stdout);
	t_set_failed(m);
	return false;
}

void t_fail_msg(struct t_meta *m, const char *file, int line,
		const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(file, line, fmt, ap);
	va_end(ap);
	t_set_failed(m);
}

static bool skip_is_failure(void)
{
	const char *req = getenv("KTLS_REQUIRE");
	const char *ci = getenv("CI");

	return (req && !strcmp(req, "1")) || (ci && !strcmp(ci, "true"));
}

void t_skip(struct t_meta *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
	va_end(ap);
	if (m->result != T_FAIL)
		m->result = T_SKIP;
}

void t_bail(struct t_meta *m)
{
	(void)m;
	siglongjmp(t_env, 1);
}

/* In the child: setup, body unless setup failed or skipped, teardown when
 * setup completed.  A fatal assert or SKIP jumps out of the phase. */
static void run_child(const struct t_test *t, const struct t_variant *v,
		      struct t_meta *m)
{
	void *volatile self = NULL;

	if (t->self_size) {
		self = calloc(1, t->self_size);
		if (!self) {
			m->result = T_FAIL;
			snprintf(m->reason, sizeof(m->reason), "out of memory");
			return;
		}
	}
	if (!sigsetjmp(t_env, 1)) {
		t->fn(m, self, v ? v->data : NULL, 0);
		m->setup_done = true;
		if (m->result == T_PASS)
			t->fn(m, self, v ? v->data : NULL, 1);
	}
	if (m->setup_done && !sigsetjmp(t_env, 1)) {
		m->setup_done = false;	/* a jump out of teardown ends it */
		t->fn(m, self, v ? v->data : NULL, 2);
	}
	free(self);
}

/* Wait for @pid up to @timeout seconds (SIGCHLD is blocked). */
static int wait_child(pid_t pid, unsigned int timeout, int *status,
		      bool *timed_out)
{
	double deadline = ktm_now_s() + timeout;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	*timed_out = false;
	for (;;) {
		struct timespec ts;
		double left;
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		left = deadline - ktm_now_s();
		if (left <= 0) {
			*timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return 0;
		}
		if (left > 0.2)
			left = 0.2;	/* SIGCHLD of a grandchild also wakes us */
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		sigtimedwait(&set, NULL, &ts);
	}
}

/*
 * The kernel log around each test, with KTM_KMSG_CHECK=1 (the kernel-TLS
 * tiers set it): /dev/kmsg is opened at its end before the test and read
 * after it; a WARNING, BUG, Oops, call trace, or a warning-or-worse line
 * naming TLS fails the test.  -1 when not asked.
 */
static int kmsg_open(struct t_meta *m)
{
	const char *want = getenv("KTM_KMSG_CHECK");
	int fd;

	if (!want || strcmp(want, "1"))
		return -1;
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		m->result = T_FAIL;
		snprintf(m->reason, sizeof(m->reason), "KTM_KMSG_CHECK=1 but "
			 "/dev/kmsg cannot be read: %s", strerror(errno));
		return -1;
	}
	lseek(fd, 0, SEEK_END);
	return fd;
}

static bool kmsg_bad(const char *rec)
{
	const char *text = strchr(rec, ';');
	int level = atoi(rec) & 7;

	if (!text)
		return false;
	text++;
	return strstr(text, "WARNING:") || strstr(text, "BUG:") ||
	       strstr(text, "Oops") || strstr(text, "Call Trace") ||
	       (level <= 4 && (strstr(text, "tls") || strstr(text, "TLS")));
}

static void kmsg_check(int fd, struct t_meta *m)
{
	char rec[1024];
	ssize_t n;

	if (fd < 0)
		return;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten records: go on */
		if (n <= 0)
			break;
		rec[n] = '\0';
		if (!kmsg_bad(rec))
			continue;
		rec[strcspn(rec, "\n")] = '\0';
		printf("# kernel log: %s\n", rec);
		if (m->result != T_FAIL) {
			m->result = T_FAIL;
			snprintf(m->reason, sizeof(m->reason),
				 "the kernel logged a warning: %.400s", rec);
		}
	}
	close(fd);
}

static int run_one(const struct t_test *t, const struct t_variant *v,
		   unsigned int num, struct t_meta *m)
{
	int kmsg;
	char name[256];
	bool timed_out;
	int status = 0;
	pid_t pid;

	if (t->fixture && v)
		snprintf(name, sizeof(name), "%s.%s.%s", t->fixture->name,
			 v->name, t->name);
	else
		snprintf(name, sizeof(name), "%s.%s",
			 t->fixture ? t->fixture->name : "global", t->name);

	memset(m, 0, sizeof(*m));
	printf("#  RUN           %s ...\n", name);
	fflush(stdout);
	kmsg = kmsg_open(m);
	pid = fork();
	if (pid < 0) {
		printf("not ok %u %s # fork: %s\n", num, name, strerror(errno));
		if (kmsg >= 0)
			close(kmsg);
		return T_FAIL;
	}
	if (pid == 0) {
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, SIGCHLD);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		setpgid(0, 0);
		run_child(t, v, m);
		fflush(stdout);
		_exit(0);
	}
	setpgid(pid, pid);
	wait_child(pid, t->timeout, &status, &timed_out);
	if (timed_out) {
		m->result = T_FAIL;
		snprintf(m->reason, sizeof(m->reason), "timeout after %u s",
			 t->timeout);
	} else if (WIFSIGNALED(status)) {
		m->result = T_FAIL;
		snprintf(m->reason, sizeof(m->reason), "killed by signal %d",
			 WTERMSIG(status));
	} else if (WEXITSTATUS(status) != 0) {
		m->result = T_FAIL;
		snprintf(m->reason, sizeof(m->reason), "exit status %d",
			 WEXITSTATUS(status));
	}
	/* kill what the test left behind in its process group */
	kill(-pid, SIGKILL);
	kmsg_check(kmsg, m);

	if (m->result == T_SKIP && skip_is_failure()) {
		printf("# %s: skipped, which KTLS_REQUIRE=1/CI=true forbids: %s\n",
		       name, m->reason);
		m->result = T_FAIL;
	}
	switch (m->result) {
	case T_PASS:
		printf("ok %u %s\n", num, name);
		break;
	case T_SKIP:
		printf("ok %u %s # SKIP %s\n", num, name, m->reason);
		break;
	default:
		printf("not ok %u %s%s%s\n", num, name, m->reason[0] ? " # " : "",
		       m->reason);
		break;
	}
	fflush(stdout);
	return m->result;
}

struct t_filter {
	const char *tests[32], *variants[32], *fixtures[32];
	int nt, nv, nf;
};

static bool match(const char *const *list, int n, const char *name)
{
	int i;

	if (!n)
		return true;
	for (i = 0; i < n; i++)
		if (name && !strcmp(list[i], name))
			return true;
	return false;
}

static bool selected(const struct t_filter *flt, const struct t_test *t,
		     const struct t_variant *v)
{
	return match(flt->tests, flt->nt, t->name) &&
	       match(flt->variants, flt->nv, v ? v->name : NULL) &&
	       match(flt->fixtures, flt->nf,
		     t->fixture ? t->fixture->name : "global");
}

/* Call @fn for every (test, variant) pair the filter selects. */
static unsigned int for_each_case(const struct t_filter *flt,
				  void (*fn)(const struct t_test *,
					     const struct t_variant *, void *),
				  void *arg)
{
	const struct t_test *t;
	unsigned int n = 0;

	for (t = tests; t; t = t->next) {
		const struct t_variant *v = t->fixture ? t->fixture->variants
						       : NULL;

		if (!v) {
			if (selected(flt, t, NULL)) {
				if (fn)
					fn(t, NULL, arg);
				n++;
			}
			continue;
		}
		for (; v; v = v->next) {
			if (selected(flt, t, v)) {
				if (fn)
					fn(t, v, arg);
				n++;
			}
		}
	}
	return n;
}

static void list_case(const struct t_test *t, const struct t_variant *v,
		      void *arg)
{
	(void)arg;
	if (v)
		printf("%s.%s.%s\n", t->fixture->name, v->name, t->name);
	else
		printf("%s.%s\n", t->fixture ? t->fixture->name : "global",
		       t->name);
}

struct t_totals {
	struct t_meta *m;
	unsigned int num, pass, fail, skip;
};

static void run_case(const struct t_test *t, const struct t_variant *v,
		     void *arg)
{
	struct t_totals *tot = arg;

	switch (run_one(t, v, ++tot->num, tot->m)) {
	case T_PASS:
		tot->pass++;
		break;
	case T_SKIP:
		tot->skip++;
		break;
	default:
		tot->fail++;
		break;
	}
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-l] [-t TEST] [-v VARIANT] [-f FIXTURE]\n"
		"  -l  list the test cases and exit\n"
		"  -t, -v, -f  run only matching cases (each repeatable)\n",
		prog);
}

int t_main(int argc, char **argv)
{
	struct t_filter flt = { 0 };
	struct t_totals tot = { 0 };
	bool list = false;
	sigset_t set;
	unsigned int total;
	int c;

	while ((c = getopt(argc, argv, "lt:v:f:h")) != -1) {
		switch (c) {
		case 'l':
			list = true;
			break;
		case 't':
			if (flt.nt < 32)
				flt.tests[flt.nt++] = optarg;
			break;
		case 'v':
			if (flt.nv < 32)
				flt.variants[flt.nv++] = optarg;
			break;
		case 'f':
			if (flt.nf < 32)
				flt.fixtures[flt.nf++] = optarg;
			break;
		default:
			usage(argv[0]);
			return 2;
		}
	}
	if (list) {
		for_each_case(&flt, list_case, NULL);
		return 0;
	}

	tot.m = mmap(NULL, sizeof(*tot.m), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (tot.m == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	total = for_each_case(&flt, NULL, NULL);
	printf("TAP version 13\n1..%u\n", total);
	fflush(stdout);
	for_each_case(&flt, run_case, &tot);
	printf("# Totals: pass:%u fail:%u skip:%u\n", tot.pass, tot.fail,
	       tot.skip);
	munmap(tot.m, sizeof(*tot.m));
	return tot.fail ? 1 : 0;
}
