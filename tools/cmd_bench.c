// SPDX-License-Identifier: MIT
/*
 * ktls-migrate bench: the comparison matrix.
 *
 * One stream of random bytes (a memfd filled once) crosses loopback per row,
 * split evenly over 1..N channels.  The two ends are two forked processes,
 * one thread per channel each, so getrusage(RUSAGE_SELF) gives each end's
 * CPU time (io_uring workers included); the parent only starts them at the
 * same moment, times the transfer and reads /proc/stat.  The receiver
 * checksums every byte and compares with the checksum of its range.
 *
 * Rows are data (bench_modes[] x bench_ciphers[] x channels); a mode names
 * a transport (plain TCP, a ktm session in userspace or kernel TLS, raw
 * OpenSSL, the libvirt-style tunnel) and a way to send.  Runs are interleaved: run 1 of
 * every row, then run 2, ...
 *
 * This file: the options and the main loop.  The mode and cipher tables
 * are in bench_table.c; the other bench_*.c files are listed in bench.h.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bench.h"

static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10, end++; break;
	case 'm': case 'M': v <<= 20, end++; break;
	case 'g': case 'G': v <<= 30, end++; break;
	default: break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end)
		return false;
	*out = v;
	return true;
}

/* ---- options -------------------------------------------------------------------- */

/* "    NAME                 text..." wrapped at 79 columns. */
static void print_wrapped(FILE *out, const char *name, const char *text)
{
	int col = fprintf(out, "    %-20s", name);

	while (*text) {
		size_t w = strcspn(text, " ");

		if (col + 1 + (int)w > 79)
			col = fprintf(out, "\n%24s", "");
		col += fprintf(out, " %.*s", (int)w, text);
		text += w;
		text += strspn(text, " ");
	}
	fputc('\n', out);
}

/* bench --help: name, synopsis and description, up to the list of modes. */
static void usage_head(FILE *out)
{
	fprintf(out,
"NAME\n"
"    %s bench - comparison matrix: plaintext, userspace TLS,\n"
"    kernel TLS and peers over loopback, both ends measured\n"
"\n"
"SYNOPSIS\n"
"    %s bench --creds DIR [OPTIONS]\n"
"    %s bench --smoke --creds DIR [--csv FILE]\n"
"\n"
"DESCRIPTION\n"
"    Fills a memfd with random bytes once, then for every row (mode x\n"
"    cipher x channel count) sends all of it over loopback TCP, split\n"
"    evenly over the channels.  Sender and receiver are two processes with\n"
"    one thread per channel; each end's CPU time comes from getrusage, the\n"
"    wall time from the sender's start to the receiver's last byte.  The\n"
"    receiver checksums every byte and the row fails unless all of it\n"
"    arrived intact.  Runs are interleaved (run 1 of every row, then run\n"
"    2, ...) and reported as median (min-max).  TLS rows use TLS 1.3 with\n"
"    the client and server certificates of --creds.\n"
"\n"
"    Kernel-TLS rows need a kernel with kTLS (checked with the probe, per\n"
"    cipher); elsewhere they are reported as \"n/a: no kTLS on this\n"
"    kernel\".  The openssl-ktls peer always runs and says whether OpenSSL\n"
"    really used kTLS (BIO_get_ktls_send) or stayed in userspace.  Under\n"
"    an emulated CPU use --functional: kTLS speed there means nothing.\n"
"\n"
"MODES\n",
		tool_prog, tool_prog, tool_prog);
}

/* bench --help: the mode groups and the options. */
static void usage_options(FILE *out)
{
	fprintf(out,
"    Groups: all, plain (tcp-*), tls (tls-user, ktls-*, openssl-ktls,\n"
"    tunnel), ktls (ktls-*), peers (openssl-ktls, tunnel).\n"
"\n"
"OPTIONS\n"
"    --creds DIR        Certificates in QEMU's tls-creds-x509 layout, with\n"
"                       127.0.0.1 in the server certificate (make one with\n"
"                       scripts/make-creds.sh DIR).  Needed for TLS modes.\n"
"    --modes LIST       Comma-separated modes or groups (default all).\n"
"    --ciphers LIST     aes-gcm-128, aes-gcm-256, chacha20-poly1305 (default\n"
"                       all three; TLS rows only).\n"
"    --cipher LIST      The same as --ciphers, as the other commands spell it.\n"
"    --channels LIST    Parallel streams per row (default 1,2,4; max %d).\n"
"                       tunnel is one stream and runs with 1 only.\n"
"    --size SIZE        Bytes per row, with K, M or G (default 512M).\n"
"    --runs N           Interleaved runs per row (default 3, max %d).\n"
"    --chunk SIZE       Bytes per send/receive call (default 256K).\n"
"    --timeout SECONDS  Per transfer, handshakes included (default 300).\n"
"    --time-budget S    Stop after the run that would make the next one\n"
"                       end past S seconds (never before 3 runs).\n"
"    --no-ceiling       Skip `openssl speed -evp` (run once per run and\n"
"                       cipher otherwise: the one-core crypto ceiling).\n"
"    --functional       Record no speed or CPU figure, only that each row\n"
"                       moved verified data (for emulated guests).\n"
"    --smoke            A tiny pass: --size 4M --runs 1 --channels 1,2\n"
"                       --no-ceiling, unless given after --smoke.\n"
"    --csv FILE         Write the rows as CSV (one line per row; per-run\n"
"                       MB/s in mbps_runs).\n"
"    --md FILE          Write the Markdown report to FILE instead of\n"
"                       standard output.\n"
"    -q, --quiet        No progress lines on standard error.\n"
"    -h, --help         This text.\n"
"\n",
		BENCH_MAX_CH, BENCH_MAX_RUNS);
}

/* bench --help: output, exit status and examples. */
static void usage_tail(FILE *out)
{
	fprintf(out,
"OUTPUT\n"
"    Progress on standard error, one line per transfer.  The Markdown\n"
"    report (kernel, kTLS native/emulated/absent, CPU, date, ceiling, one\n"
"    table per channel count with ratios to tcp-write and tls-user, rows\n"
"    not measured and why) goes to standard output or --md.  MB/s are\n"
"    10^6 bytes per second; CPU is user+system seconds per GiB per end.\n"
"\n"
"EXIT STATUS\n"
"    0 every runnable row moved verified data; 1 a row or the setup\n"
"    (credentials, memory) failed; 2 bad usage.  Rows that are n/a do not\n"
"    fail.\n"
"\n"
"EXAMPLES\n"
"    scripts/make-creds.sh /tmp/creds\n"
"    %s bench --creds /tmp/creds --csv out.csv --md out.md\n"
"    %s bench --creds /tmp/creds --modes tcp-write,tls-user,ktls \\\n"
"        --ciphers aes-gcm-128 --channels 1 --size 1G --runs 5\n"
"    make bench        (bench/run.sh: the whole matrix, CSV, report, plots)\n",
		tool_prog, tool_prog);
}

static void usage(FILE *out)
{
	usage_head(out);
	for (size_t i = 0; i < BENCH_NMODES; i++)
		print_wrapped(out, bench_modes[i].name, bench_modes[i].what);
	usage_options(out);
	usage_tail(out);
}

/* Does the --modes word @t (a mode's name or a group) take @m? */
static bool mode_in_group(const struct bench_mode *m, const char *t)
{
	if (!strcmp(t, m->name) || !strcmp(t, "all"))
		return true;
	if (!strcmp(t, "plain"))
		return m->xport == XP_TCP;
	if (!strcmp(t, "tls"))
		return m->xport != XP_TCP;
	if (!strcmp(t, "ktls"))
		return m->xport == XP_KTLS;
	if (!strcmp(t, "peers"))
		return m->xport == XP_OPENSSL || m->xport == XP_TUNNEL;
	return false;
}

static bool select_modes(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t;
	bool ok = dup != NULL;
	size_t i;

	memset(o->mode_on, 0, sizeof(o->mode_on));
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		bool hit = false;

		for (i = 0; i < BENCH_NMODES; i++)
			if (mode_in_group(&bench_modes[i], t))
				o->mode_on[i] = hit = true;
		if (!hit) {
			fprintf(stderr, "%s: unknown mode '%s' (see --help)\n",
				tool_prog, t);
			ok = false;
		}
	}
	free(dup);
	return ok;
}

static bool select_ciphers(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t;
	bool ok = dup != NULL;
	size_t i;

	memset(o->cipher_on, 0, sizeof(o->cipher_on));
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < BENCH_NCIPHERS; i++)
			if (!strcasecmp(t, bench_ciphers[i].name) ||
			    !strcmp(t, "all"))
				o->cipher_on[i] = true;
		if (strcmp(t, "all")) {
			for (i = 0; i < BENCH_NCIPHERS; i++)
				if (!strcasecmp(t, bench_ciphers[i].name))
					break;
			if (i == BENCH_NCIPHERS) {
				fprintf(stderr, "%s: unknown cipher '%s' (use "
					"aes-gcm-128, aes-gcm-256 or "
					"chacha20-poly1305)\n", tool_prog, t);
				ok = false;
			}
		}
	}
	free(dup);
	return ok;
}

static bool select_channels(struct bench_opts *o, const char *list)
{
	char *dup = strdup(list), *save = NULL, *t, *end;
	bool ok = dup != NULL;

	o->n_channels = 0;
	for (t = dup ? strtok_r(dup, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save)) {
		long v = strtol(t, &end, 10);

		if (*end || v < 1 || v > BENCH_MAX_CH ||
		    o->n_channels == BENCH_MAX_CH) {
			fprintf(stderr, "%s: bad channel count '%s' (1 to %d)\n",
				tool_prog, t, BENCH_MAX_CH);
			ok = false;
		} else {
			o->channels[o->n_channels++] = (int)v;
		}
	}
	free(dup);
	return ok && o->n_channels > 0;
}

enum {
	OPT_CREDS = 256, OPT_MODES, OPT_CIPHERS, OPT_CHANNELS, OPT_SIZE,
	OPT_RUNS, OPT_CHUNK, OPT_TIMEOUT, OPT_BUDGET, OPT_NO_CEILING,
	OPT_FUNCTIONAL,
	OPT_SMOKE, OPT_CSV, OPT_MD,
};

/* The options with a number (--size, --chunk, --runs, --timeout,
 * --time-budget): -1 to go on, else what parse_opts() returns. */
static int parse_number(struct bench_opts *o, int c)
{
	uint64_t v;
	char *end;

	switch (c) {
	case OPT_SIZE:
		if (!parse_size(optarg, &v) || v < 65536) {
			fprintf(stderr, "%s: bad --size '%s' (at least "
				"64K)\n", tool_prog, optarg);
			return 2;
		}
		o->size = v;
		return -1;
	case OPT_CHUNK:
		if (!parse_size(optarg, &v) || v < 4096 || v > (64u << 20)) {
			fprintf(stderr, "%s: bad --chunk '%s' (4K to 64M)\n",
				tool_prog, optarg);
			return 2;
		}
		o->chunk = (size_t)v;
		return -1;
	case OPT_RUNS:
		o->runs = (int)strtol(optarg, &end, 10);
		if (*end || o->runs < 1 || o->runs > BENCH_MAX_RUNS) {
			fprintf(stderr, "%s: bad --runs '%s' (1 to %d)\n",
				tool_prog, optarg, BENCH_MAX_RUNS);
			return 2;
		}
		return -1;
	case OPT_TIMEOUT:
		o->timeout_s = (unsigned int)strtoul(optarg, &end, 10);
		if (*end || !o->timeout_s) {
			fprintf(stderr, "%s: bad --timeout '%s'\n",
				tool_prog, optarg);
			return 2;
		}
		return -1;
	default:
		o->budget_s = (unsigned int)strtoul(optarg, &end, 10);
		if (*end || !o->budget_s) {
			fprintf(stderr, "%s: bad --time-budget '%s'\n",
				tool_prog, optarg);
			return 2;
		}
		return -1;
	}
}

/* One option of parse_opts(): -1 to go on, else what parse_opts()
 * returns (0 after --help). */
static int parse_opt(struct bench_opts *o, int c)
{
	switch (c) {
	case OPT_CREDS: o->creds = optarg; return -1;
	case OPT_MODES:
		if (!select_modes(o, optarg))
			return 2;
		return -1;
	case OPT_CIPHERS:
		if (!select_ciphers(o, optarg))
			return 2;
		return -1;
	case OPT_CHANNELS:
		if (!select_channels(o, optarg))
			return 2;
		return -1;
	case OPT_SIZE:
	case OPT_CHUNK:
	case OPT_RUNS:
	case OPT_TIMEOUT:
	case OPT_BUDGET:
		return parse_number(o, c);
	case OPT_NO_CEILING: o->ceiling = false; return -1;
	case OPT_FUNCTIONAL: o->functional = true; return -1;
	case OPT_SMOKE:
		o->smoke = true;
		o->size = 4u << 20;
		o->runs = 1;
		o->ceiling = false;
		select_channels(o, "1,2");
		return -1;
	case OPT_CSV: o->csv = optarg; return -1;
	case OPT_MD: o->md = optarg; return -1;
	case 'q': o->quiet = true; return -1;
	case 'h':
		usage(stdout);
		return 0;
	default:
		fprintf(stderr, "Try '%s bench --help'.\n", tool_prog);
		return 2;
	}
}

static int parse_opts(struct bench_opts *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "creds", required_argument, NULL, OPT_CREDS },
		{ "modes", required_argument, NULL, OPT_MODES },
		{ "ciphers", required_argument, NULL, OPT_CIPHERS },
		{ "cipher", required_argument, NULL, OPT_CIPHERS },
		{ "channels", required_argument, NULL, OPT_CHANNELS },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "runs", required_argument, NULL, OPT_RUNS },
		{ "chunk", required_argument, NULL, OPT_CHUNK },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "time-budget", required_argument, NULL, OPT_BUDGET },
		{ "no-ceiling", no_argument, NULL, OPT_NO_CEILING },
		{ "functional", no_argument, NULL, OPT_FUNCTIONAL },
		{ "smoke", no_argument, NULL, OPT_SMOKE },
		{ "csv", required_argument, NULL, OPT_CSV },
		{ "md", required_argument, NULL, OPT_MD },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c, ret;

	memset(o, 0, sizeof(*o));
	select_modes(o, "all");
	select_ciphers(o, "all");
	select_channels(o, "1,2,4");
	o->size = 512ull << 20;
	o->chunk = 256u << 10;
	o->runs = 3;
	o->timeout_s = 300;
	o->ceiling = true;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		ret = parse_opt(o, c);
		if (ret != -1)
			return ret;
	}
	if (optind < argc) {
		fprintf(stderr, "%s: bench: unexpected argument '%s'\n",
			tool_prog, argv[optind]);
		return 2;
	}
	if (o->size / 4096 < (uint64_t)BENCH_MAX_CH)
		o->size = (uint64_t)BENCH_MAX_CH * 4096;
	return -1;
}

/* ---- the matrix ------------------------------------------------------------------ */

static int rows_build(const struct bench_opts *o, const struct bench_env *v,
		      struct bench_row **out)
{
	struct bench_row *rows = calloc(BENCH_NMODES * BENCH_NCIPHERS *
					BENCH_MAX_CH, sizeof(*rows));
	int n = 0, k;
	size_t m, c;

	if (!rows)
		return -1;
	for (k = 0; k < o->n_channels; k++) {
		for (m = 0; m < BENCH_NMODES; m++) {
			const struct bench_mode *md = &bench_modes[m];

			if (!o->mode_on[m] ||
			    (md->xport == XP_TUNNEL && o->channels[k] > 1))
				continue;
			for (c = 0; c < BENCH_NCIPHERS; c++) {
				struct bench_row *r;

				if (md->xport != XP_TCP && !o->cipher_on[c])
					continue;
				r = &rows[n++];
				r->mode = md;
				r->cipher = md->xport == XP_TCP ? NULL :
					    &bench_ciphers[c];
				r->channels = o->channels[k];
				if (md->xport == XP_KTLS && !v->cipher_ktls[c]) {
					r->state = ROW_NA;
					snprintf(r->note, sizeof(r->note),
						 "n/a: no kTLS on this kernel (%s)",
						 v->cipher_reason[c]);
				} else if (md->send == SEND_URING &&
					   v->uring != KTM_SUPPORTED) {
					r->state = ROW_NA;
					snprintf(r->note, sizeof(r->note),
						 "n/a: io_uring unavailable (%s)",
						 v->uring_reason);
				}
				if (md->xport == XP_TCP)
					break;
			}
		}
	}
	*out = rows;
	return n;
}

static void progress(const struct bench_opts *o, int run,
		     const struct bench_row *r, bool ok, const char *err)
{
	int i = r->done - 1;

	if (o->quiet)
		return;
	fprintf(stderr, "[run %d/%d] %-20s %-18s x%d  ", run + 1, o->runs,
		r->mode->name, r->cipher ? r->cipher->name : "none",
		r->channels);
	if (!ok)
		fprintf(stderr, "FAILED: %s\n", err);
	else if (o->functional)
		fprintf(stderr, "ok (verified; %s/%s)\n", r->tx_path, r->rx_path);
	else
		fprintf(stderr, "%8.0f MB/s  send %.2f  recv %.2f CPU s/GiB "
			"(%s/%s)\n", r->mbps[i], r->send_cpu[i], r->recv_cpu[i],
			r->tx_path, r->rx_path);
}

/* Check --creds once, up front, for both ends (each end reads it again). */
static bool creds_ok(const char *dir)
{
	static const enum ktm_endpoint ends[2] = { KTM_ENDPOINT_CLIENT,
						    KTM_ENDPOINT_SERVER };
	struct ktm_error *ke = NULL;
	int i;

	for (i = 0; i < 2; i++) {
		struct ktm_config *cfg = ktm_config_new(ends[i], &ke);
		bool ok = cfg && ktm_config_set_creds_dir(cfg, dir, &ke);

		ktm_config_free(cfg);
		if (!ok) {
			tool_error(ke);
			return false;
		}
	}
	return true;
}

/* Whether a selected mode runs over TLS (and so needs --creds). */
static bool want_tls(const struct bench_opts *o)
{
	bool tls = false;
	size_t m;

	for (m = 0; m < BENCH_NMODES; m++)
		tls |= o->mode_on[m] && bench_modes[m].xport != XP_TCP;
	return tls;
}

/* One `openssl speed` per selected cipher: the crypto ceiling of @run. */
static void run_ceilings(const struct bench_opts *o, struct bench_env *v,
			 int run)
{
	size_t c;

	for (c = 0; c < BENCH_NCIPHERS; c++) {
		double b;

		if (!o->cipher_on[c])
			continue;
		b = bench_ceiling_once(&bench_ciphers[c]);
		if (b > 0)
			v->ceiling[c][v->n_ceiling[c]++] = b;
		if (!o->quiet)
			fprintf(stderr, "[run %d/%d] openssl speed -evp "
				"%s: %.0f MB/s\n", run + 1, o->runs,
				bench_ciphers[c].name, b / 1e6);
	}
}

/* Run @run of every row still runnable; returns how many failed. */
static int run_rows(const struct bench_opts *o, struct bench_data *d,
		    struct bench_row *rows, int n, int run)
{
	int i, failed = 0;

	for (i = 0; i < n; i++) {
		struct bench_row *r = &rows[i];
		char err[256];
		bool ok;

		if (r->state == ROW_NA || r->state == ROW_FAIL)
			continue;
		ok = bench_run_once(o, d, r, err, sizeof(err));
		if (!ok) {
			r->state = ROW_FAIL;
			snprintf(r->note, sizeof(r->note), "FAILED in run "
				 "%d: %s", run + 1, err);
			failed++;
		} else {
			r->state = ROW_OK;
		}
		progress(o, run, r, ok, err);
	}
	return failed;
}

/* After @run (0-based) ended, since @t0: would another pass the budget? */
static bool over_budget(const struct bench_opts *o, int run, double t0)
{
	double el;

	if (!o->budget_s || run + 1 < 3 || run + 1 >= o->runs)
		return false;
	el = tool_now_s() - t0;
	if (el + el / (run + 1) <= o->budget_s)
		return false;
	if (!o->quiet)
		fprintf(stderr, "bench: stopping after %d "
			"runs: another would pass the %u s "
			"budget\n", run + 1, o->budget_s);
	return true;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_env *v;
	struct bench_data d;
	struct bench_row *rows = NULL;
	double t0 = tool_now_s();
	int n, run, ret, failed = 0;
	bool tls;

	ret = parse_opts(&o, argc, argv);
	if (ret >= 0)
		return ret;
	tls = want_tls(&o);
	if (tls && !o.creds) {
		fprintf(stderr, "%s: bench: TLS modes need --creds DIR\n  hint: "
			"make a throwaway PKI with scripts/make-creds.sh DIR, "
			"or pick --modes plain\n", tool_prog);
		return 2;
	}
	if (tls && !creds_ok(o.creds))
		return 1;
	v = malloc(sizeof(*v));
	if (!v)
		return 1;
	bench_env_collect(v);
	n = rows_build(&o, v, &rows);
	if (n < 0 || !bench_data_make(&d, o.size)) {
		free(v);
		free(rows);
		return 1;
	}
	for (run = 0; run < o.runs; run++) {
		if (o.ceiling && tls)
			run_ceilings(&o, v, run);
		failed += run_rows(&o, &d, rows, n, run);
		v->runs_done = run + 1;
		if (over_budget(&o, run, t0))
			break;
	}
	v->load1 = bench_loadavg();
	v->elapsed = tool_now_s() - t0;
	v->sum_gbps = d.sum_gbps;
	ret = bench_write_outputs(&o, v, rows, n) ? (failed ? 1 : 0) : 2;
	bench_data_free(&d);
	free(rows);
	free(v);
	return ret;
}
