// SPDX-License-Identifier: MIT
/*
 * The parent's side of one measured bench transfer: fork the receiver and
 * the sender (bench_ends.c), wait until both have set up every channel,
 * start them at the same moment, and turn their reports into one run of
 * the row (MB/s, CPU per GiB of each end and of the host).  Also the
 * crypto ceiling, `openssl speed`, run between transfers.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "bench.h"

/* Busy CPU seconds of the whole host (all CPUs) from /proc/stat, or -1. */
static double host_cpu_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
		   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 8)
		return -1;
	/* user nice system [idle iowait] irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
	       (double)sysconf(_SC_CLK_TCK);
}

struct bench_kid {
	pid_t pid;
	int ctl, res;
	struct bench_msg m;
};

static pid_t kid_start(struct bench_kid *k, struct bench_end *e)
{
	int ctl[2], res[2];

	if (pipe2(ctl, O_CLOEXEC))
		return -1;
	if (pipe2(res, O_CLOEXEC)) {
		close(ctl[0]), close(ctl[1]);
		return -1;
	}
	fflush(NULL);
	k->pid = fork();
	if (k->pid == 0) {
		close(ctl[1]);
		close(res[0]);
		if (!e->server)
			close(e->listen_fd);
		_exit(bench_end_main(e, ctl[0], res[1]));
	}
	close(ctl[0]);
	close(res[1]);
	k->ctl = ctl[1];
	k->res = res[0];
	if (k->pid < 0) {
		close(k->ctl), close(k->res);
		k->ctl = k->res = -1;
	}
	return k->pid;
}

/*
 * Read one report from each end, whichever comes first, so that one end
 * failing (say, the sender cannot connect) is seen at once even while the
 * other waits for it; fail by the deadline or when an end dies.
 */
/* Read what kid @i has ready into its message; 1 when the message is
 * complete, 0 for more to come, -1 on failure (@err says why). */
static int kid_read_one(struct bench_kid *k, size_t *got, const char *who,
			char *err, size_t errlen)
{
	ssize_t n = read(k->res, (char *)&k->m + *got, sizeof(k->m) - *got);

	if (n < 0 && errno == EINTR)
		return 0;
	if (n <= 0) {
		snprintf(err, errlen, "the %s died", who);
		return -1;
	}
	*got += (size_t)n;
	if (*got < sizeof(k->m))
		return 0;
	if (k->m.phase == 'E' || (k->m.phase == 'D' && !k->m.ok)) {
		snprintf(err, errlen, "%s: %s", who, k->m.err);
		return -1;
	}
	return 1;
}

static bool kids_read(struct bench_kid *kids[2], double deadline, char *err,
		      size_t errlen)
{
	static const char *const who[2] = { "receiver", "sender" };
	size_t got[2] = { 0, 0 };
	int left = 2, i;

	while (left) {
		struct pollfd p[2];
		int np = 0, map[2], r, j;
		double ms = (deadline - tool_now_s()) * 1000;

		for (i = 0; i < 2; i++)
			if (got[i] < sizeof(kids[i]->m)) {
				p[np].fd = kids[i]->res;
				p[np].events = POLLIN;
				map[np++] = i;
			}
		r = poll(p, (nfds_t)np, ms > 0 ? (int)ms + 1 : 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "timed out waiting for the %s",
				 who[map[0]]);
			return false;
		}
		for (j = 0; j < np; j++) {
			if (!p[j].revents)
				continue;
			i = map[j];
			r = kid_read_one(kids[i], &got[i], who[i], err, errlen);
			if (r < 0)
				return false;
			left -= r;
		}
	}
	return true;
}

static void kid_end(struct bench_kid *k, bool kill_it)
{
	int st;

	if (k->pid <= 0)
		return;
	if (kill_it)
		kill(k->pid, SIGKILL);
	close(k->ctl);
	close(k->res);
	while (waitpid(k->pid, &st, 0) < 0 && errno == EINTR)
		;
	k->pid = 0;
}

static int listen_loopback(char *port, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, BENCH_MAX_CH * 2) ||
	    getsockname(fd, (struct sockaddr *)&a, &sl)) {
		close(fd);
		return -1;
	}
	snprintf(port, len, "%u", ntohs(a.sin_port));
	return fd;
}

/* What an end said about its paths (once per row, however many runs). */
static void note_add(struct bench_row *row, const char *note)
{
	size_t used = strlen(row->note);

	if (note[0] && !strstr(row->note, note))
		snprintf(row->note + used, sizeof(row->note) - used, "%s%s",
			 used ? "; " : "", note);
}

/* Listen on loopback and fork the receiver, then the sender. */
static bool ends_start(struct bench_end *e, struct bench_kid *rx,
		       struct bench_kid *tx, char *err, size_t errlen)
{
	e->listen_fd = listen_loopback(e->port, sizeof(e->port));
	if (e->listen_fd < 0) {
		snprintf(err, errlen, "cannot listen on loopback: %s",
			 strerror(errno));
		return false;
	}
	e->server = true;
	if (kid_start(rx, e) < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(e->listen_fd);
		return false;
	}
	e->server = false;
	if (kid_start(tx, e) < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(e->listen_fd);
		kid_end(rx, true);
		return false;
	}
	close(e->listen_fd);
	return true;
}

/* One run's figures into @row, from the ends' reports and the host's CPU
 * time before (@h0) and after (@h1); -1 where /proc/stat was unreadable. */
static void run_record(struct bench_row *row, const struct bench_data *d,
		       const struct bench_kid *tx, const struct bench_kid *rx,
		       double h0, double h1)
{
	double gib = (double)d->size / GIB, wall = rx->m.t1 - tx->m.t0;

	row->mbps[row->done] = (double)d->size / 1e6 / wall;
	row->send_cpu[row->done] = tx->m.cpu / gib;
	row->recv_cpu[row->done] = rx->m.cpu / gib;
	row->host_cpu[row->done] = h0 < 0 || h1 < 0 ? -1 : (h1 - h0) / gib;
	if (h0 >= 0 && h1 >= 0) {
		row->other_s += h1 - h0 - tx->m.cpu - rx->m.cpu;
		row->wall_s += wall;
	}
	row->done++;
}

bool bench_run_once(const struct bench_opts *o, struct bench_data *d,
		    struct bench_row *row, char *err, size_t errlen)
{
	struct bench_end e = { .o = o, .row = row, .d = d };
	struct bench_kid rx = { 0 }, tx = { 0 };
	struct bench_kid *kids[2] = { &rx, &tx };
	double deadline, h0, h1;
	bool ok = false;

	bench_data_sums(d, row->channels);
	if (!ends_start(&e, &rx, &tx, err, errlen))
		return false;
	deadline = tool_now_s() + o->timeout_s;
	if (!kids_read(kids, deadline, err, errlen))
		goto out;
	bench_copy_str(row->tx_path, sizeof(row->tx_path), tx.m.path);
	bench_copy_str(row->rx_path, sizeof(row->rx_path), rx.m.path);
	note_add(row, tx.m.note);
	note_add(row, rx.m.note);
	h0 = host_cpu_s();
	if (write(rx.ctl, "g", 1) != 1 || write(tx.ctl, "g", 1) != 1) {
		snprintf(err, errlen, "cannot start the ends: %s",
			 strerror(errno));
		goto out;
	}
	if (!kids_read(kids, deadline, err, errlen))
		goto out;
	h1 = host_cpu_s();
	if (rx.m.bytes != d->size) {
		snprintf(err, errlen, "receiver got %" PRIu64 " of %" PRIu64
			 " bytes", rx.m.bytes, d->size);
		goto out;
	}
	run_record(row, d, &tx, &rx, h0, h1);
	ok = true;
out:
	kid_end(&tx, !ok);
	kid_end(&rx, !ok);
	return ok;
}

double bench_ceiling_once(const struct bench_cipher *c)
{
	char cmd[160], line[256];
	double v = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "openssl speed -evp %s -bytes 16384 "
		 "-seconds 1 -mr 2>/dev/null", c->evp);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "+F:", 3) && strrchr(line, ':'))
			v = strtod(strrchr(line, ':') + 1, NULL);
	if (pclose(f))
		return -1;
	return v;
}
