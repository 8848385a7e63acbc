// SPDX-License-Identifier: MIT
/*
 * ktls-migrate migrate send|recv: move a memory image through kernel TLS,
 * with a progress line on a terminal and a text or JSON report.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <netdb.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "tool.h"

/* migrate --help: synopsis and what it does */
static void usage_intro(FILE *out)
{
	fprintf(out,
"Usage: %s migrate send --connect HOST:PORT --image FILE|- --creds DIR [OPTIONS]\n"
"       %s migrate recv --listen [ADDR:]PORT --image FILE|- --creds DIR [OPTIONS]\n"
"\n"
"Move a memory image (a VM's RAM file, a /dev/shm file, or standard\n"
"input/output) from a source to a destination over TLS with mutual x509\n"
"authentication.  The keys go into kernel TLS when this kernel has it, so\n"
"pages leave with sendfile/splice/io_uring and the kernel encrypts.  Zero\n"
"pages are not sent.  The destination writes FILE.ktm-partial and renames\n"
"it to FILE only after the image digest matched; a failed or cut\n"
"migration leaves no FILE.  The source succeeds only when the destination\n"
"has committed.\n"
"\n",
		tool_prog, tool_prog);
}

/* migrate --help: the options of both sides and of the source */
static void usage_options(FILE *out)
{
	fprintf(out,
"Options (both sides):\n"
"  --image FILE|-      the image: read by send (-: standard input), written\n"
"                      by recv (-: standard output, see below)\n"
TOOL_TLS_HELP
"  --check-hook PATH   pre-migration check run as PATH VM migrate pmc URI with\n"
"                      the verified peer in KTM_* variables; exit status 0\n"
"                      allows, anything else vetoes before any page moves\n"
"  --vm NAME           the object name given to the hook (default: image name)\n"
"  --digest D          the end-to-end image check: xxh3 (default, XXH3-128,\n"
"                      fast) or sha256 (a cryptographic digest to keep); on\n"
"                      recv, refuse a source that uses the other one\n"
"  --json              print the report as JSON on standard output\n"
"  --quiet             no progress line\n"
"  --io-timeout S      the longest wait for the peer once the channels are up\n"
"                      (default 30): a frozen, cut or silent peer fails both\n"
"                      sides within S seconds (plus TCP keepalive and\n"
"                      TCP_USER_TIMEOUT for a partition)\n"
"  -h, --help          show this text\n"
"\n"
"Source (send) options:\n"
"  --connect HOST:PORT the destination ([IPv6]:PORT works too), as in proxy\n"
"                      and qemu-send\n"
"  --to HOST:PORT      the same as --connect (the older spelling)\n"
"  --channels N        parallel TLS sessions, 1-16 (default 1)\n"
"  --send-path P       auto (default), sendfile, splice, io_uring or writev:\n"
"                      how pages enter the kernel-TLS socket\n"
"  --zerocopy-ro       let sendfile skip the copy (TLS_TX_ZEROCOPY_RO); only\n"
"                      for an image that cannot change during the migration\n"
"  --key-limit N       records per key before a TLS 1.3 KeyUpdate (kernel 6.14+)\n"
"                      or a fresh connection (default: the AEAD limit, 2^24.5\n"
"                      records for AES-GCM)\n"
"\n");
}

/* migrate --help: the destination's options, standard input and output, exit status */
static void usage_recv(FILE *out)
{
	fprintf(out,
"Destination (recv) options:\n"
"  --listen [ADDR:]PORT  where to accept the source's channels\n"
"  --accept-timeout S    how long to wait for each connection, in seconds\n"
"                      (default 30);\n"
"                      other connections meanwhile (port scans, non-TLS\n"
"                      peers, unauthorized certificates, another migration)\n"
"                      are refused and logged, the migration goes on\n"
"  --max-image-size N  refuse larger images (suffix K, M, G, T; default: the\n"
"                      free space of FILE's filesystem); the image is\n"
"                      reserved with posix_fallocate before any page moves\n"
"  --force             replace an existing FILE, at commit (rename over it);\n"
"                      without it an existing FILE is refused at start.  The\n"
"                      committed FILE has mode 0600\n"
"  --request-pages OFFSET:LEN  ask for these bytes first, as postcopy does\n"
"                      (repeatable, page aligned)\n"
"\n"
"An image of '-' reads standard input into memory first (send), or writes the\n"
"verified image to standard output at the end (recv).\n"
"\n"
"A leftover FILE.ktm-partial (from a killed run) is refused at start with the\n"
"command that removes it.  SIGINT or SIGTERM cancels the migration: the peer\n"
"is told why, this run's partial file is removed (a second signal: at once).\n"
"With --listen ADDR:0 the bound port is printed.  A bare --listen PORT\n"
"accepts IPv6 and IPv4 where the host has IPv6.\n"
"\n"
"Exit status: 0 migrated and verified, 1 failed (the error says why), 2 usage,\n"
"128+N killed by signal N (SIGINT 130, SIGTERM 143) after cleaning up.\n");
}

static void usage(FILE *out)
{
	usage_intro(out);
	usage_options(out);
	usage_recv(out);
}

struct opts {
	bool send, json, quiet, zc_ro, force;
	unsigned int io_s;
	unsigned long long max_image;
	const char *to, *listen, *image, *hook, *vm;
	struct tool_tls tls;
	unsigned int channels, accept_ms;
	enum ktm_send_path send_path;
	enum ktm_digest digest;
	unsigned long long key_limit;
	struct { unsigned long long off, len; } req[8];
	unsigned int nreq;
};

#define bad_usage(...) tool_usage_error("migrate", __VA_ARGS__)

/* Long options of the fault handling, beside parse()'s own. */
enum { O_GUARD_IO = 400, O_GUARD_MAX, O_GUARD_FORCE };

/* A byte count with an optional K, M, G or T (powers of 1024). */
static bool parse_bytes(const char *arg, unsigned long long *out)
{
	static const char units[] = "KMGT";
	char *end = NULL;
	unsigned long long v;
	const char *u;
	int shift;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || !v)
		return false;
	if (!*end) {
		*out = v;
		return true;
	}
	u = strchr(units, *end);
	if (!u || !*u || end[1])
		return false;
	shift = 10 * (int)(u - units + 1);
	if (v > (~0ull >> shift))
		return false;	/* would overflow */
	*out = v << shift;
	return true;
}

/* The options of the fault handling (--io-timeout, --max-image-size,
 * --force). */
static int parse_guard(struct opts *o, int c, const char *arg)
{
	char *end = NULL;
	unsigned long v;

	switch (c) {
	case O_GUARD_IO:
		errno = 0;
		v = strtoul(arg, &end, 10);
		if (errno || *end || !v || v > 86400)
			return bad_usage("--io-timeout takes seconds (1 to 86400), "
					 "not '%s'", arg);
		o->io_s = (unsigned int)v;
		return 0;
	case O_GUARD_MAX:
		if (!parse_bytes(arg, &o->max_image))
			return bad_usage("--max-image-size takes bytes with an "
					 "optional K, M, G or T, not '%s'", arg);
		return 0;
	default:
		o->force = true;
		return 0;
	}
}

enum { O_TO = 256, O_LISTEN, O_IMAGE, O_HOOK, O_VM, O_JSON, O_QUIET,
       O_CHANNELS, O_SENDPATH, O_ZC, O_KEYLIMIT, O_ACCEPT, O_REQ,
       O_DIGEST };

/* The source's options with a value (--channels, --send-path,
 * --key-limit). */
static int parse_send(struct opts *o, int c)
{
	char *end = NULL;

	switch (c) {
	case O_CHANNELS:
		o->channels = (unsigned int)strtoul(optarg, &end, 10);
		if (*end || !o->channels || o->channels > 16)
			return bad_usage("--channels takes 1 to 16, not '%s'", optarg);
		return 0;
	case O_SENDPATH:
		if (!strcmp(optarg, "auto"))
			o->send_path = KTM_SEND_AUTO;
		else if (!strcmp(optarg, "sendfile"))
			o->send_path = KTM_SEND_SENDFILE;
		else if (!strcmp(optarg, "splice"))
			o->send_path = KTM_SEND_SPLICE;
		else if (!strcmp(optarg, "io_uring"))
			o->send_path = KTM_SEND_IO_URING;
		else if (!strcmp(optarg, "writev"))
			o->send_path = KTM_SEND_WRITEV;
		else
			return bad_usage("unknown send path '%s'", optarg);
		return 0;
	default:
		o->key_limit = strtoull(optarg, &end, 10);
		if (*end || !o->key_limit)
			return bad_usage("--key-limit takes a record count, not '%s'", optarg);
		return 0;
	}
}

/* The destination's options with a value (--accept-timeout,
 * --request-pages) and --digest. */
static int parse_recv(struct opts *o, int c)
{
	char *end = NULL;

	switch (c) {
	case O_ACCEPT:
		o->accept_ms = (unsigned int)strtoul(optarg, &end, 10);
		if (*end || !o->accept_ms || o->accept_ms > 4000000)
			return bad_usage("--accept-timeout takes seconds, not '%s'", optarg);
		o->accept_ms *= 1000;
		return 0;
	case O_REQ:
		if (o->nreq == 8 ||
		    sscanf(optarg, "%llu:%llu", &o->req[o->nreq].off,
			   &o->req[o->nreq].len) != 2)
			return bad_usage("--request-pages takes OFFSET:LEN, not '%s'", optarg);
		o->nreq++;
		return 0;
	default:
		if (!strcmp(optarg, "xxh3"))
			o->digest = KTM_DIGEST_XXH3_128;
		else if (!strcmp(optarg, "sha256"))
			o->digest = KTM_DIGEST_SHA256;
		else
			return bad_usage("--digest takes xxh3 or sha256, not '%s'", optarg);
		return 0;
	}
}

/* One option of parse(): 0 to go on, else what parse() returns (-1 after
 * --help). */
static int parse_one(struct opts *o, int c)
{
	int ret;

	switch (c) {
	case O_TO: o->to = optarg; return 0;
	case O_LISTEN: o->listen = optarg; return 0;
	case O_IMAGE: o->image = optarg; return 0;
	case O_HOOK: o->hook = optarg; return 0;
	case O_VM: o->vm = optarg; return 0;
	case O_JSON: o->json = true; return 0;
	case O_QUIET: o->quiet = true; return 0;
	case O_ZC: o->zc_ro = true; return 0;
	case O_CHANNELS:
	case O_SENDPATH:
	case O_KEYLIMIT:
		return parse_send(o, c);
	case O_ACCEPT:
	case O_REQ:
	case O_DIGEST:
		return parse_recv(o, c);
	case 'h':
		usage(stdout);
		return -1;
	case O_GUARD_IO:
	case O_GUARD_MAX:
	case O_GUARD_FORCE:
		return parse_guard(o, c, optarg);
	default:
		ret = tool_tls_option(&o->tls, c, optarg, "migrate");
		if (ret == 1)
			return 0;
		return ret ? ret : bad_usage("bad option");
	}
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "to", required_argument, NULL, O_TO },
		{ "connect", required_argument, NULL, O_TO },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "image", required_argument, NULL, O_IMAGE },
		{ "check-hook", required_argument, NULL, O_HOOK },
		{ "vm", required_argument, NULL, O_VM },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "channels", required_argument, NULL, O_CHANNELS },
		{ "send-path", required_argument, NULL, O_SENDPATH },
		{ "zerocopy-ro", no_argument, NULL, O_ZC },
		{ "key-limit", required_argument, NULL, O_KEYLIMIT },
		{ "accept-timeout", required_argument, NULL, O_ACCEPT },
		{ "request-pages", required_argument, NULL, O_REQ },
		{ "io-timeout", required_argument, NULL, O_GUARD_IO },
		{ "max-image-size", required_argument, NULL, O_GUARD_MAX },
		{ "force", no_argument, NULL, O_GUARD_FORCE },
		{ "digest", required_argument, NULL, O_DIGEST },
		{ "help", no_argument, NULL, 'h' },
		TOOL_TLS_OPTIONS,
		{ 0 }
	};
	int c, ret;

	o->channels = 1;
	tool_tls_init(&o->tls, KTM_KTLS_PREFER);
	ret = tool_pick_mode(argc, argv, "send", "recv", "migrate");
	if (ret == -1)
		usage(stdout);
	if (ret < 0 || ret > 1)
		return ret;
	o->send = ret == 0;
	argc--;
	argv++;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		ret = parse_one(o, c);
		if (ret)
			return ret;
	}
	if (optind != argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (!o->image || !o->tls.creds)
		return bad_usage("--image and --creds are required");
	if (o->send && !o->to)
		return bad_usage("send needs --connect HOST:PORT");
	if (!o->send && !o->listen)
		return bad_usage("recv needs --listen [ADDR:]PORT");
	return 0;
}

struct progress {
	bool on;
	double t0;
};

static void show_progress(uint64_t done, uint64_t total, void *opaque)
{
	struct progress *p = opaque;
	double t = tool_now_s() - p->t0, rate = t > 0 ? (double)done / t : 0;
	double eta = rate > 0 ? (double)(total - done) / rate : 0;

	if (!p->on || !total)
		return;
	fprintf(stderr, "\r  %8.1f / %.1f MiB  %3d%%  %7.1f MB/s  ETA %d:%02d ",
		(double)done / 1048576, (double)total / 1048576,
		(int)(100 * done / total), rate / 1e6, (int)eta / 60,
		(int)eta % 60);
	fflush(stderr);
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void json_str(const char *s)
{
	if (!s) {
		printf("null");
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* Where the time went, seconds and seconds per GiB of image. */
static void report_phases(const struct ktm_migration *m, bool json, double gib)
{
	int p;

	printf(json ? ", \"phases\": {" : "  phases   ");
	for (p = 0; p < KTM_PHASE_COUNT; p++) {
		double t = ktm_migration_phase_seconds(m, (enum ktm_phase)p);

		if (json)
			printf("%s\"%s\": %.3f", p ? ", " : "",
			       ktm_phase_name((enum ktm_phase)p), t);
		else if (t > 0)
			printf(" %s %.2f s (%.3f/GiB)",
			       ktm_phase_name((enum ktm_phase)p), t,
			       gib > 0 ? t / gib : 0);
	}
	printf(json ? "}" : "\n");
}

/* report() with --json: one object on standard output. */
static void report_json(const struct opts *o, const struct ktm_migration *m,
			bool ok, const char *error, double cpu)
{
	uint64_t size = ktm_migration_image_bytes(m);
	double secs = ktm_migration_seconds(m);
	double mbps = secs > 0 ? (double)size / secs / 1e6 : 0;
	double gib = (double)size / (1 << 30);
	unsigned int i, n = ktm_migration_channels(m);
	const char *fb = ktm_migration_fallback_reason(m);

	printf("{\"schema\": 1, \"role\": \"%s\", \"ok\": %s, \"image_bytes\": %llu, "
	       "\"page_bytes\": %llu, \"zero_bytes\": %llu, "
	       "\"wire_bytes\": %llu, \"seconds\": %.3f, "
	       "\"mb_per_s\": %.1f, \"cpu_seconds\": %.3f, "
	       "\"cpu_s_per_gib\": %.3f, \"channels\": %u, \"paths\": [",
	       o->send ? "send" : "recv", ok ? "true" : "false",
	       (unsigned long long)size,
	       (unsigned long long)ktm_migration_page_bytes(m),
	       (unsigned long long)ktm_migration_zero_bytes(m),
	       (unsigned long long)ktm_migration_wire_bytes(m), secs, mbps,
	       cpu, gib > 0 ? cpu / gib : 0, n);
	for (i = 0; i < n; i++)
		printf("%s\"%s\"", i ? ", " : "",
		       ktm_path_name(ktm_migration_path(m, i)));
	printf("], \"send_path\": \"%s\", \"tls_version\": ",
	       ktm_migration_send_path_name(m));
	json_str(ktm_tls_version_name(ktm_migration_version(m)));
	printf(", \"cipher\": ");
	json_str(ktm_cipher_name(ktm_migration_cipher(m)));
	printf(", \"fallback_reason\": ");
	json_str(fb);
	printf(", \"peer\": {\"subject\": ");
	json_str(ktm_migration_peer(m, KTM_PEER_SUBJECT));
	printf(", \"sans\": ");
	json_str(ktm_migration_peer(m, KTM_PEER_SANS));
	printf(", \"issuer\": ");
	json_str(ktm_migration_peer(m, KTM_PEER_ISSUER));
	printf(", \"spki_sha256\": ");
	json_str(ktm_migration_peer(m, KTM_PEER_SPKI_SHA256));
	printf("}");
	printf(", \"rekeys\": %u, \"reconnects\": %u, "
	       "\"requests_served\": %u, \"digest\": ",
	       ktm_migration_rekeys(m), ktm_migration_reconnects(m),
	       ktm_migration_requests_served(m));
	json_str(ktm_migration_digest(m)[0] ? ktm_migration_digest(m) : NULL);
	printf(", \"digest_type\": ");
	json_str(ktm_digest_name(ktm_migration_digest_type(m)));
	report_phases(m, true, gib);
	printf(", \"digest_ok\": %s, \"error\": ",
	       ktm_migration_digest_ok(m) ? "true" : "false");
	json_str(error);
	printf("}\n");
}

/* report() without --json, after a successful migration. */
static void report_text(const struct opts *o, const struct ktm_migration *m,
			double cpu)
{
	uint64_t size = ktm_migration_image_bytes(m);
	double secs = ktm_migration_seconds(m);
	double mbps = secs > 0 ? (double)size / secs / 1e6 : 0;
	double gib = (double)size / (1 << 30);
	unsigned int n = ktm_migration_channels(m);
	const char *fb = ktm_migration_fallback_reason(m);

	printf("migration %s: complete, image digest verified by both ends\n",
	       o->send ? "sent" : "received");
	printf("  image     %llu bytes (%.2f GiB); zero pages skipped: %llu bytes\n",
	       (unsigned long long)size, gib,
	       (unsigned long long)ktm_migration_zero_bytes(m));
	printf("  on wire   %llu bytes of pages and frames (before TLS)\n",
	       (unsigned long long)ktm_migration_wire_bytes(m));
	printf("  time      %.2f s, %.1f MB/s of image\n", secs, mbps);
	printf("  cpu       %.2f s, %.3f s per GiB (this process)\n", cpu,
	       gib > 0 ? cpu / gib : 0);
	printf("  tls       %s %s, %u channel(s), data path %s",
	       ktm_tls_version_name(ktm_migration_version(m)),
	       ktm_cipher_name(ktm_migration_cipher(m)), n,
	       ktm_path_name(ktm_migration_path(m, 0)));
	if (o->send && ktm_migration_path(m, 0) != KTM_PATH_USERSPACE)
		printf(" (%s)", ktm_migration_send_path_name(m));
	printf("\n");
	if (fb)
		printf("  fallback  %s\n", fb);
	printf("  peer      %s [%s], issuer %s, spki sha256 %s\n",
	       ktm_migration_peer(m, KTM_PEER_SUBJECT),
	       ktm_migration_peer(m, KTM_PEER_SANS),
	       ktm_migration_peer(m, KTM_PEER_ISSUER),
	       ktm_migration_peer(m, KTM_PEER_SPKI_SHA256));
	printf("  keys      %u rekey(s), %u reconnect(s)\n",
	       ktm_migration_rekeys(m), ktm_migration_reconnects(m));
	if (ktm_migration_requests_served(m))
		printf("  requests  %u page range(s) arrived ahead of their turn\n",
		       ktm_migration_requests_served(m));
	report_phases(m, false, gib);
	printf("  digest    %s %s\n",
	       ktm_digest_name(ktm_migration_digest_type(m)),
	       ktm_migration_digest(m));
}


static void report(const struct opts *o, const struct ktm_migration *m,
		   bool ok, const char *error, double cpu)
{
	if (o->json) {
		report_json(o, m, ok, error, cpu);
		return;
	}
	if (!ok)
		return;		/* the error was printed already */
	report_text(o, m, cpu);
}

static struct ktm_config *make_config(const struct opts *o,
				      struct ktm_error **errp)
{
	struct ktm_config *cfg = tool_tls_config(&o->tls, o->send ?
						 KTM_ENDPOINT_CLIENT :
						 KTM_ENDPOINT_SERVER, errp);

	if (cfg && o->hook &&
	    !ktm_config_set_check_exec(cfg, o->hook, o->vm ? o->vm : o->image,
				       o->send ? o->to : o->listen, errp)) {
		ktm_config_free(cfg);
		return NULL;
	}
	if (cfg)
		tool_cert_warning(cfg);
	return cfg;
}

/* Standard input into a memfd, since the stream needs the size first. */
static int spool_stdin(void)
{
	char buf[1 << 16];
	int fd = memfd_create("ktm-image", MFD_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	while ((n = read(0, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n)
			goto err;
	if (n < 0)
		goto err;
	return fd;
err:
	close(fd);
	return -1;
}

static bool copy_to_stdout(const char *path)
{
	char buf[1 << 16];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	bool ok = fd >= 0;

	while (ok && (n = read(fd, buf, sizeof(buf))) > 0)
		ok = write(1, buf, (size_t)n) == n;
	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * SIGINT and SIGTERM cancel the migration (ktm_migration_cancel): the
 * library tells the peer why (ABORT: "... cancelled by SIGINT") and the
 * destination removes its partial file; then the tool says so and exits
 * 128+N.  A second signal, or the library not returning within
 * KTM_STOP_GRACE_S, takes the hard way: remove this run's partial file
 * here, say so, _exit.  The start check refused a leftover partial file,
 * so one that exists now is this run's.  The handler's state is set once
 * before it is installed and only read after (async-signal-safe: the
 * cancel, alarm, unlink, write).
 */
#define KTM_STOP_GRACE_S 4
static char sig_partial[4200], sig_dir[64];
static char sig_msg[2][4400];
static struct ktm_migration *sig_m;
static volatile sig_atomic_t stop_sig;

static void on_stop_signal(int sig)
{
	const char *msg;

	if (sig == SIGALRM)
		sig = stop_sig;
	else if (!stop_sig && sig_m) {
		stop_sig = sig;
		ktm_migration_cancel(sig_m, sig == SIGTERM ? "SIGTERM" : "SIGINT");
		alarm(KTM_STOP_GRACE_S);
		return;
	}
	msg = sig_msg[sig == SIGTERM];

	if (sig_partial[0])
		unlink(sig_partial);
	if (sig_dir[0])
		rmdir(sig_dir);
	if (write(2, msg, strlen(msg)) < 0)
		_exit(128 + sig);
	_exit(128 + sig);
}

static void guard_signals(const struct opts *o, struct ktm_migration *m,
			  const char *target, const char *tmpdir)
{
	struct sigaction sa = { .sa_handler = on_stop_signal };
	static const char *names[2] = { "SIGINT", "SIGTERM" };
	int i;

	if (target) {
		snprintf(sig_partial, sizeof(sig_partial), "%s.ktm-partial", target);
		if (tmpdir)
			snprintf(sig_dir, sizeof(sig_dir), "%s", tmpdir);
	}
	for (i = 0; i < 2; i++) {
		if (target)
			snprintf(sig_msg[i], sizeof(sig_msg[i]), "%s: interrupted "
				 "by %s: the migration is not complete; no "
				 "partial file (%s) is left and nothing was "
				 "committed\n", tool_prog,
				 names[i], sig_partial);
		else
			snprintf(sig_msg[i], sizeof(sig_msg[i]), "%s: interrupted "
				 "by %s: the migration to %s is not complete and "
				 "the destination commits nothing\n", tool_prog,
				 names[i], o->to);
	}
	sig_m = m;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
}

/* The failure's sentence and the exit status: after a cancel by
 * SIGINT/SIGTERM the tool's sentence, not the library's, and 128+N. */
static int say_why(int ret, struct ktm_error **errp)
{
	const char *msg = sig_msg[stop_sig == SIGTERM];

	if (!stop_sig || !ret) {
		if (*errp)
			tool_error(*errp);
		return ret;
	}
	alarm(0);
	ktm_error_free(*errp);
	*errp = NULL;
	if (write(2, msg, strlen(msg)) < 0)
		return 128 + stop_sig;
	return 128 + stop_sig;
}

static void log_refused(const char *msg, void *opaque)
{
	(void)opaque;
	fprintf(stderr, "%s: %s\n", tool_prog, msg);
}

/* "waiting for the source on ADDR:PORT", always when port 0 was asked
 * for (the caller needs the port), else unless --quiet. */
static void announce(const struct opts *o, int fd)
{
	char where[300];
	size_t n = strlen(o->listen);
	bool zero = o->listen[n - 1] == '0' &&
		    (n == 1 || o->listen[n - 2] == ':');

	if (o->quiet && !zero)
		return;
	fprintf(stderr, "%s: waiting for the source on %s\n", tool_prog,
		ktm_fd_addr_text(fd, false, where, sizeof(where)));
}

/* The source's part: 0 migrated, 1 failed (*errp or printed), 2 usage. */
static int run_send(const struct opts *o, struct ktm_migration *m, int *fd,
		    struct ktm_error **errp)
{
	struct tool_addr to;

	if (!tool_addr_parse(o->to, 0, "--connect", &to, NULL))
		return bad_usage("--connect takes HOST:PORT, not '%s'", o->to);
	if (!ktm_migration_set_channels(m, o->channels, errp))
		return 1;
	ktm_migration_set_send_path(m, o->send_path);
	ktm_migration_set_zerocopy_ro(m, o->zc_ro);
	ktm_migration_set_key_limit(m, o->key_limit);
	if (o->digest)
		ktm_migration_set_digest(m, o->digest);
	*fd = strcmp(o->image, "-") ? open(o->image, O_RDONLY | O_CLOEXEC) :
				      spool_stdin();
	if (*fd < 0) {
		fprintf(stderr, "%s: cannot read image %s: %s\n", tool_prog,
			o->image, strerror(errno));
		return 1;
	}
	guard_signals(o, m, NULL, NULL);
	return ktm_migration_send(m, to.host, to.port, *fd, errp) ? 0 : 1;
}

/* The destination's part, as run_send. */
static int run_recv(const struct opts *o, struct ktm_migration *m, int *fd,
		    struct ktm_error **errp)
{
	char tmpdir[] = "/tmp/ktm-recv-XXXXXX", tmp[64];
	const char *target = o->image;
	unsigned int i;
	bool ok;

	ktm_migration_set_accept_timeout(m, o->accept_ms);
	ktm_migration_set_max_image_size(m, o->max_image);
	ktm_migration_set_force(m, o->force);
	ktm_migration_set_digest(m, o->digest);
	ktm_migration_set_log(m, log_refused, NULL);
	for (i = 0; i < o->nreq; i++)
		if (!ktm_migration_request_pages(m, o->req[i].off,
						 o->req[i].len, errp))
			return 1;
	*fd = tool_listen(o->listen, false);
	if (*fd < 0)
		return 1;
	if (!strcmp(o->image, "-")) {
		if (!mkdtemp(tmpdir)) {
			fprintf(stderr, "%s: mkdtemp: %s\n", tool_prog,
				strerror(errno));
			return 1;
		}
		snprintf(tmp, sizeof(tmp), "%s/image", tmpdir);
		target = tmp;
	}
	/* say what is in the way now, not after a source connected */
	ok = ktm_migration_check_target(m, target, errp);
	if (ok) {
		guard_signals(o, m, target, target == tmp ? tmpdir : NULL);
		announce(o, *fd);
		ok = ktm_migration_recv(m, *fd, target, errp);
	}
	if (ok && target == tmp)
		ok = copy_to_stdout(tmp);
	if (target == tmp) {
		unlink(tmp);
		rmdir(tmpdir);
	}
	return ok ? 0 : 1;
}

int cmd_migrate(int argc, char **argv)
{
	struct opts o = { 0 };
	struct ktm_error *err = NULL;
	struct ktm_config *cfg = NULL;
	struct ktm_migration *m = NULL;
	struct progress prog;
	double cpu0 = cpu_seconds();
	int ret = parse(argc, argv, &o), fd = -1;

	if (ret)
		return ret < 0 ? 0 : ret;
	/* a peer that went away is an error to report, not a signal */
	signal(SIGPIPE, SIG_IGN);
	prog.on = !o.quiet && !o.json && isatty(2);
	ret = 1;
	cfg = make_config(&o, &err);
	if (!cfg)
		goto out;
	m = ktm_migration_new(cfg, &err);
	if (!m)
		goto out;
	prog.t0 = tool_now_s();
	ktm_migration_set_progress(m, show_progress, &prog);
	ktm_migration_set_io_timeout(m, o.io_s * 1000);
	ret = o.send ? run_send(&o, m, &fd, &err) : run_recv(&o, m, &fd, &err);
	if (prog.on)
		fprintf(stderr, "\n");
out:
	if (m) {
		report(&o, m, ret == 0, err ? ktm_error_message(err) : NULL,
		       cpu_seconds() - cpu0);
	} else if (o.json && err) {
		printf("{\"schema\": 1, \"role\": \"%s\", \"ok\": false, \"error\": ",
		       o.send ? "send" : "recv");
		json_str(ktm_error_message(err));
		printf("}\n");
	}
	ret = say_why(ret, &err);
	if (fd >= 0)
		close(fd);
	sig_m = NULL;	/* a late signal takes the hard way */
	ktm_migration_free(m);
	ktm_config_free(cfg);
	return ret;
}
