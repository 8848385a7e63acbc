// SPDX-License-Identifier: MIT
/*
 * The bench's report: what the host is (kernel, CPU, OpenSSL, what kernel
 * TLS and io_uring can do here), the statistics of each row's runs
 * (median, min, max; ratios within one file), and the two outputs, CSV
 * (one line per row) and Markdown.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/utsname.h>
#include <openssl/crypto.h>

#include "bench.h"

/* ---- statistics ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct bench_stat { double min, med, max; };

static struct bench_stat stat_of(const double *v, int n)
{
	double s[BENCH_MAX_RUNS];
	struct bench_stat r = { -1, -1, -1 };

	if (n <= 0)
		return r;
	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), cmp_double);
	r.min = s[0];
	r.max = s[n - 1];
	r.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	return r;
}

/* ---- the report ---------------------------------------------------------------- */

/* The first "model name" of /proc/cpuinfo, or "unknown". */
static void env_cpu_model(struct bench_env *v)
{
	char line[256];
	FILE *f;

	bench_copy_str(v->cpu, sizeof(v->cpu), "unknown");
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');

		if (strncmp(line, "model name", 10) || !c)
			continue;
		c += strspn(c + 1, " \t") + 1;
		c[strcspn(c, "\n")] = '\0';
		bench_copy_str(v->cpu, sizeof(v->cpu), c);
		break;
	}
	if (f)
		fclose(f);
}

/* What kernel TLS (per cipher) and io_uring can do here. */
static void env_probe(struct bench_env *v)
{
	struct ktm_error *ke = NULL;
	struct ktm_probe *p;
	const char *reason = "", *hint = NULL;
	size_t i;

	p = ktm_probe_new(&ke);
	if (!p) {
		v->ktls = KTM_PROBE_FAILED;
		bench_copy_str(v->ktls_reason, sizeof(v->ktls_reason),
			       ke ? ktm_error_message(ke) : "probe failed");
		ktm_error_free(ke);
		v->uring = KTM_PROBE_FAILED;
		bench_copy_str(v->uring_reason, sizeof(v->uring_reason),
			       "probe failed");
		return;
	}
	v->ktls = ktm_probe_ktls(p, &reason, &hint);
	bench_copy_str(v->ktls_reason, sizeof(v->ktls_reason), reason);
	for (i = 0; i < BENCH_NCIPHERS; i++) {
		reason = "";
		v->cipher_ktls[i] = v->ktls == KTM_SUPPORTED &&
			ktm_probe_cipher(p, KTM_TLS_1_3, bench_ciphers[i].id,
					 &reason) == KTM_SUPPORTED;
		bench_copy_str(v->cipher_reason[i], sizeof(v->cipher_reason[i]),
			       v->ktls == KTM_SUPPORTED ? reason : v->ktls_reason);
	}
	v->uring = ktm_probe_io_uring(p, &reason);
	bench_copy_str(v->uring_reason, sizeof(v->uring_reason), reason);
	ktm_probe_free(p);
}

/* The 1-minute load average, or -1 when /proc/loadavg is unreadable. */
double bench_loadavg(void)
{
	double load = -1;
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fscanf(f, "%lf", &load) != 1)
			load = -1;
		fclose(f);
	}
	return load;
}

void bench_env_collect(struct bench_env *v)
{
	struct utsname u;
	time_t t = time(NULL);

	memset(v, 0, sizeof(*v));
	uname(&u);
	bench_copy_str(v->host, sizeof(v->host), u.nodename);
	bench_copy_str(v->kernel, sizeof(v->kernel), u.release);
	env_cpu_model(v);
	v->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	strftime(v->date, sizeof(v->date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	bench_copy_str(v->ossl, sizeof(v->ossl),
		       OpenSSL_version(OPENSSL_VERSION));
	v->load0 = bench_loadavg();
	env_probe(v);
}

static const char *ktls_word(const struct bench_opts *o,
			     const struct bench_env *v)
{
	if (v->ktls != KTM_SUPPORTED)
		return "absent";
	return o->functional ? "emulated (functional-only)" : "native";
}

static const struct bench_row *find_row(const struct bench_row *rows, int n,
					const char *mode,
					const struct bench_cipher *c, int ch)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(rows[i].mode->name, mode) && rows[i].cipher == c &&
		    rows[i].channels == ch && rows[i].state == ROW_OK)
			return &rows[i];
	return NULL;
}

/* Median MB/s of @r over that of @base, or -1. */
static double ratio(const struct bench_row *r, const struct bench_row *base)
{
	if (!r || !base || r->state != ROW_OK || !r->done || !base->done)
		return -1;
	return stat_of(r->mbps, r->done).med / stat_of(base->mbps, base->done).med;
}

static void csv_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void csv_num(FILE *f, double v, int prec)
{
	if (v >= 0)
		fprintf(f, ",%.*f", prec, v);
	else
		fputs(",", f);
}

static const char *state_word(enum row_state s)
{
	switch (s) {
	case ROW_OK: return "ok";
	case ROW_NA: return "n/a";
	case ROW_FAIL: return "failed";
	case ROW_TODO: break;
	}
	return "not run";
}

/* Median over runs of both ends' CPU s/GiB together: on loopback the
 * kernel's TCP receive work runs in whichever end drains it, so the split
 * between the ends moves with scheduling while the sum does not. */
static double both_med(const struct bench_row *r)
{
	double both[BENCH_MAX_RUNS];
	int i;

	for (i = 0; i < r->done; i++)
		both[i] = r->send_cpu[i] + r->recv_cpu[i];
	return stat_of(both, r->done).med;
}

static void csv_header(FILE *f, const struct bench_opts *o,
		       const struct bench_env *v)
{
	fprintf(f, "# ktls-migrate bench %s; host %s; kernel %s; kernel TLS %s; "
		"cpu %s x%d; %s; %s\n", KTM_VERSION_STRING, v->host, v->kernel,
		ktls_word(o, v), v->cpu, v->ncpu, v->ossl, v->date);
	fprintf(f, "# %" PRIu64 " bytes per row, chunk %zu, %d interleaved "
		"run(s); MB/s = 1e6 bytes/s of wall time; CPU in seconds per "
		"GiB moved\n", o->size, o->chunk, v->runs_done);
	fputs("measurement,mode,cipher,channels,status,tx_path,rx_path,"
	      "bytes_per_run,runs,mbps_min,mbps_median,mbps_max,"
	      "send_cpu_s_per_gib_min,send_cpu_s_per_gib_median,"
	      "send_cpu_s_per_gib_max,recv_cpu_s_per_gib_min,"
	      "recv_cpu_s_per_gib_median,recv_cpu_s_per_gib_max,"
	      "both_cpu_s_per_gib_median,host_cpu_s_per_gib_median,ratio_vs_tcp_write,"
	      "ratio_vs_tls_user,mbps_runs,note\n", f);
}

/* One line per cipher whose `openssl speed` ceiling was measured. */
static void csv_ceiling(FILE *f, const struct bench_opts *o,
			const struct bench_env *v, const char *kind)
{
	size_t c;

	for (c = 0; c < BENCH_NCIPHERS && !o->functional; c++) {
		struct bench_stat s = stat_of(v->ceiling[c], v->n_ceiling[c]);

		if (!v->n_ceiling[c])
			continue;
		fprintf(f, "%s,openssl-speed,%s,1,ceiling,-,-,16384,%d", kind,
			bench_ciphers[c].name, v->n_ceiling[c]);
		csv_num(f, s.min / 1e6, 0);
		csv_num(f, s.med / 1e6, 0);
		csv_num(f, s.max / 1e6, 0);
		fputs(",,,,,,,,,,,,", f);
		csv_str(f, "openssl speed -evp -bytes 16384 -seconds 1: one "
			"core, encryption only");
		fputc('\n', f);
	}
}

/* The figures of one measured row: stats, ratios, per-run MB/s. */
static void csv_speed(FILE *f, const struct bench_row *r,
		      const struct bench_row *rows, int n)
{
	struct bench_stat m = stat_of(r->mbps, r->done),
			  sc = stat_of(r->send_cpu, r->done),
			  rc = stat_of(r->recv_cpu, r->done),
			  hc = stat_of(r->host_cpu, r->done);
	int k;

	csv_num(f, m.min, 1), csv_num(f, m.med, 1), csv_num(f, m.max, 1);
	csv_num(f, sc.min, 3), csv_num(f, sc.med, 3), csv_num(f, sc.max, 3);
	csv_num(f, rc.min, 3), csv_num(f, rc.med, 3), csv_num(f, rc.max, 3);
	csv_num(f, both_med(r), 3);
	csv_num(f, hc.med, 3);
	csv_num(f, ratio(r, find_row(rows, n, "tcp-write", NULL,
				     r->channels)), 3);
	csv_num(f, r->cipher ? ratio(r, find_row(rows, n,
			"tls-user", r->cipher, r->channels)) : -1, 3);
	fputs(",\"", f);
	for (k = 0; k < r->done; k++)
		fprintf(f, "%s%.1f", k ? ";" : "", r->mbps[k]);
	fputs("\",", f);
}

static void write_csv(FILE *f, const struct bench_opts *o,
		      const struct bench_env *v, const struct bench_row *rows,
		      int n)
{
	const char *kind = o->functional ? "functional-only (emulated)" : "speed";
	int i;

	csv_header(f, o, v);
	csv_ceiling(f, o, v, kind);
	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];

		fprintf(f, "%s,%s,%s,%d,%s,%s,%s,%" PRIu64 ",%d", kind,
			r->mode->name, r->cipher ? r->cipher->name : "none",
			r->channels, state_word(r->state),
			r->tx_path[0] ? r->tx_path : "-",
			r->rx_path[0] ? r->rx_path : "-", o->size, r->done);
		if (!o->functional && r->state == ROW_OK)
			csv_speed(f, r, rows, n);
		else
			fputs(",,,,,,,,,,,,,,,", f);
		csv_str(f, r->note);
		fputc('\n', f);
	}
}

static void md_cell_stat(FILE *f, struct bench_stat s, int prec)
{
	fprintf(f, " %.*f (%.*f–%.*f) |", prec, s.med, prec, s.min, prec, s.max);
}

static void md_ratio(FILE *f, double r)
{
	if (r < 0)
		fputs(" – |", f);
	else
		fprintf(f, " %.2f× |", r);
}

static void write_md_rows(FILE *f, const struct bench_opts *o,
			  const struct bench_row *rows, int n, int ch)
{
	int i;

	if (o->functional) {
		fputs("| mode | cipher | TX path | RX path | bytes | received "
		      "data | note |\n|---|---|---|---|---|---|---|\n", f);
	} else {
		fputs("| mode | cipher | TX path | RX path | MB/s median "
		      "(min–max) | × tcp-write | × tls-user | send CPU s/GiB | "
		      "recv CPU s/GiB | both ends s/GiB | host CPU s/GiB | "
		      "note |\n"
		      "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
		      f);
	}
	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];

		if (r->channels != ch || (r->state != ROW_OK &&
					  r->state != ROW_FAIL))
			continue;
		fprintf(f, "| %s | %s | %s | %s |", r->mode->name,
			r->cipher ? r->cipher->name : "none",
			r->tx_path[0] ? r->tx_path : "-",
			r->rx_path[0] ? r->rx_path : "-");
		if (r->state == ROW_FAIL) {
			fprintf(f, o->functional ? " – | FAILED |" :
				" FAILED | – | – | – | – | – | – |");
		} else if (o->functional) {
			fprintf(f, " %" PRIu64 " × %d | checksum matched |",
				o->size, r->done);
		} else {
			md_cell_stat(f, stat_of(r->mbps, r->done), 0);
			md_ratio(f, ratio(r, find_row(rows, n, "tcp-write",
						      NULL, ch)));
			md_ratio(f, r->cipher ? ratio(r, find_row(rows, n,
					"tls-user", r->cipher, ch)) : -1);
			md_cell_stat(f, stat_of(r->send_cpu, r->done), 2);
			md_cell_stat(f, stat_of(r->recv_cpu, r->done), 2);
			fprintf(f, " %.2f | %.2f |", both_med(r),
				stat_of(r->host_cpu, r->done).med);
		}
		fprintf(f, " %s |\n", r->note);
	}
}

static void list_add(char *buf, size_t len, const char *item)
{
	size_t used = strlen(buf);
	const char *p = buf;
	size_t il = strlen(item);

	/* whole-item match in the ", "-separated list */
	while ((p = strstr(p, item))) {
		if ((p == buf || p[-1] == ' ') && (p[il] == ',' || !p[il]))
			return;
		p += il;
	}
	snprintf(buf + used, len - used, "%s%s", used ? ", " : "", item);
}

/* Rows not measured, one line per reason. */
static void write_md_na(FILE *f, const struct bench_row *rows, int n)
{
	int i, j;

	for (i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];
		char ms[512] = "", cs[128] = "", chs[64] = "";

		if (r->state != ROW_NA)
			continue;
		for (j = 0; j < i; j++)
			if (rows[j].state == ROW_NA && !strcmp(rows[j].note, r->note))
				break;
		if (j < i)
			continue;
		for (j = i; j < n; j++) {
			const struct bench_row *q = &rows[j];
			char one[48];

			if (q->state != ROW_NA || strcmp(q->note, r->note))
				continue;
			snprintf(one, sizeof(one), "`%s`", q->mode->name);
			list_add(ms, sizeof(ms), one);
			if (q->cipher)
				list_add(cs, sizeof(cs), q->cipher->name);
			snprintf(one, sizeof(one), "%d", q->channels);
			list_add(chs, sizeof(chs), one);
		}
		fprintf(f, "- %s (%s%schannels %s): %s\n", ms, cs,
			cs[0] ? "; " : "", chs, r->note);
	}
}

/* Share of all CPUs' time during the transfers that neither end used:
 * other processes, or kernel threads working for the transfer.  -1 when
 * /proc/stat was unreadable. */
static double busy_pct(const struct bench_env *v, const struct bench_row *rows,
		       int n)
{
	double other = 0, wall = 0;
	int i;

	for (i = 0; i < n; i++)
		other += rows[i].other_s, wall += rows[i].wall_s;
	if (wall <= 0 || v->ncpu <= 0)
		return -1;
	other = other < 0 ? 0 : other;
	return 100 * other / (wall * v->ncpu);
}

/* The title and the table of what the host is and how the runs went. */
static void md_header(FILE *f, const struct bench_opts *o,
		      const struct bench_env *v, double busy)
{
	fprintf(f, "# ktls-migrate bench: %s, %s\n\n", v->host, v->date);
	if (o->functional)
		fputs("**Functional-only (emulated)**: the kernel below ran "
		      "under emulation; these rows show that each path moves "
		      "verified data.  No speed or CPU figure is recorded, and "
		      "none of these rows may be quoted as a speed.\n\n", f);
	fprintf(f, "| | |\n|---|---|\n| host | %s |\n| date | %s |\n"
		"| kernel | %s |\n| kernel TLS | %s: %s |\n"
		"| CPU | %s, %d online |\n| OpenSSL | %s |\n",
		v->host, v->date, v->kernel, ktls_word(o, v), v->ktls_reason,
		v->cpu, v->ncpu, v->ossl);
	fprintf(f, "| data | %" PRIu64 " MiB of random bytes per row (memfd), "
		"split evenly over the channels; sent in %zu KiB calls |\n",
		o->size >> 20, o->chunk >> 10);
	fprintf(f, "| runs | %d", v->runs_done);
	if (v->runs_done < o->runs)
		fprintf(f, " of %d asked (stopped by the %u s time budget)",
			o->runs, o->budget_s);
	fputs(", interleaved (run 1 of every row, then run 2, ...); "
	      "median (min–max) |\n", f);
	if (!o->functional && v->sum_gbps > 0)
		fprintf(f, "| checksum | the receiver checksums every byte "
			"(%.1f GB/s on one core here: about %.2f s/GiB of its "
			"CPU) |\n", v->sum_gbps, GIB / 1e9 / v->sum_gbps);
	if (!o->functional && busy >= 0)
		fprintf(f, "| other work | about %.0f%% of the host's CPU time "
			"during the transfers went to neither end (/proc/stat "
			"busy time minus both ends' getrusage; tick-based, "
			"approximate) |\n", busy);
	fprintf(f, "| load average | %.2f before, %.2f after |\n"
		"| wall time | %.0f s |\n\n", v->load0, v->load1, v->elapsed);
	if (!o->functional && busy > 15)
		fprintf(f, "**Busy host**: other work took about %.0f%% of the "
			"%d CPUs during the transfers, competing with the two "
			"ends.  Wall-time figures (MB/s) are unreliable here and "
			"spread widely; the per-end CPU seconds per GiB do not "
			"count waiting and are the figures to compare.\n\n",
			busy, v->ncpu);
}

/* The `openssl speed` table, when a ceiling was measured. */
static void md_ceiling(FILE *f, const struct bench_opts *o,
		       const struct bench_env *v)
{
	size_t c;

	if (o->functional)
		return;
	for (c = 0; c < BENCH_NCIPHERS; c++)
		if (v->n_ceiling[c])
			break;
	if (c == BENCH_NCIPHERS)
		return;
	fputs("## Crypto ceiling\n\n`openssl speed -evp CIPHER "
	      "-bytes 16384 -seconds 1`, one core, encryption only, "
	      "once per run:\n\n| cipher | MB/s median (min–max) |\n"
	      "|---|---:|\n", f);
	for (c = 0; c < BENCH_NCIPHERS; c++) {
		struct bench_stat s = stat_of(v->ceiling[c], v->n_ceiling[c]);

		if (!v->n_ceiling[c])
			continue;
		fprintf(f, "| %s | %.0f (%.0f–%.0f) |\n",
			bench_ciphers[c].name, s.med / 1e6,
			s.min / 1e6, s.max / 1e6);
	}
	fputc('\n', f);
}

/* "## Results": one table per channel count that has a measured row. */
static void md_results(FILE *f, const struct bench_opts *o,
		       const struct bench_row *rows, int n)
{
	int k;

	fputs("## Results\n\n", f);
	if (!o->functional)
		fputs("MB/s: 10^6 bytes per second of wall time, from the "
		      "sender's start to the receiver's last byte.  CPU: user + "
		      "system seconds of each end's process per GiB; both ends: "
		      "the median of their per-run sum (on loopback the kernel's "
		      "TCP receive work runs in whichever end drains it, so the "
		      "split between the ends moves with scheduling; the sum "
		      "is the steadier figure); host CPU: busy time of all CPUs "
		      "from /proc/stat (includes softirq threads and anything "
		      "else running).\n\n", f);
	for (k = 0; k < o->n_channels; k++) {
		int i;

		for (i = 0; i < n; i++)
			if (rows[i].channels == o->channels[k] &&
			    (rows[i].state == ROW_OK || rows[i].state == ROW_FAIL))
				break;
		if (i == n)
			continue;
		fprintf(f, "### %d channel%s\n\n", o->channels[k],
			o->channels[k] > 1 ? "s" : "");
		write_md_rows(f, o, rows, n, o->channels[k]);
		fputc('\n', f);
	}
}

static void write_md(FILE *f, const struct bench_opts *o,
		     const struct bench_env *v, const struct bench_row *rows,
		     int n)
{
	size_t c;
	int k;
	bool any_na = false;

	md_header(f, o, v, busy_pct(v, rows, n));
	md_ceiling(f, o, v);
	md_results(f, o, rows, n);
	for (k = 0; k < n; k++)
		any_na |= rows[k].state == ROW_NA;
	if (any_na) {
		fputs("## Not measured\n\n", f);
		write_md_na(f, rows, n);
		fputc('\n', f);
	}
	fputs("## Modes\n\n", f);
	for (c = 0; c < BENCH_NMODES; c++) {
		for (k = 0; k < n; k++)
			if (rows[k].mode == &bench_modes[c])
				break;
		if (k < n)
			fprintf(f, "- `%s`: %s\n", bench_modes[c].name,
				bench_modes[c].what);
	}
}

bool bench_write_outputs(const struct bench_opts *o, const struct bench_env *v,
			 const struct bench_row *rows, int n)
{
	FILE *f;

	if (o->csv) {
		f = fopen(o->csv, "w");
		if (!f) {
			fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog,
				o->csv, strerror(errno));
			return false;
		}
		write_csv(f, o, v, rows, n);
		if (fclose(f)) {
			fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog,
				o->csv, strerror(errno));
			return false;
		}
	}
	f = o->md ? fopen(o->md, "w") : stdout;
	if (!f) {
		fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog, o->md,
			strerror(errno));
		return false;
	}
	write_md(f, o, v, rows, n);
	if (o->md && fclose(f)) {
		fprintf(stderr, "%s: cannot write %s: %s\n", tool_prog, o->md,
			strerror(errno));
		return false;
	}
	return true;
}

