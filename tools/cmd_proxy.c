// SPDX-License-Identifier: MIT
/*
 * ktls-migrate proxy source|dest: put kernel TLS under QEMU's plain
 * `migrate unix:` (or loopback tcp:) migration.  The work is in lib/proxy.c;
 * this file parses options and prints one line per connection.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* proxy --help: synopsis and how the two ends work */
static void usage_intro(FILE *out)
{
	fprintf(out,
"Usage: %s proxy source (--unix PATH | --listen [HOST:]PORT --insecure-local-tcp)\n"
"                          --connect HOST:PORT\n"
"                          --creds DIR [OPTIONS]\n"
"       %s proxy dest --listen [HOST:]PORT (--unix PATH | --connect HOST:PORT)\n"
"                          --creds DIR [OPTIONS]\n"
"\n"
"Encrypt an unmodified QEMU migration with mutually authenticated TLS whose\n"
"keys go into kernel TLS.  QEMU migrates in plaintext to a local socket; the\n"
"source end turns each connection QEMU opens into one TLS session to the\n"
"destination end, which hands the bytes to the destination QEMU's local\n"
"socket.  QEMU's multifd channels become parallel TLS streams (one session\n"
"and thread each); the return path (postcopy, return-path) flows back the\n"
"same way.\n"
"\n"
"  source: QEMU runs  migrate unix:PATH  (or tcp:127.0.0.1:PORT with --listen\n"
"          and --insecure-local-tcp)\n"
"          the proxy connects to the destination end at --connect HOST:PORT\n"
"  dest:   QEMU runs  -incoming unix:PATH  (or migrate-incoming after\n"
"          -incoming defer); the proxy accepts sessions on --listen and, only\n"
"          after the peer's certificate is verified, connects to QEMU at\n"
"          --unix PATH (or --connect 127.0.0.1:PORT)\n"
"\n"
"With kernel TLS, bytes move with splice(2) (socket -> pipe -> kTLS socket\n"
"and back) and never enter this process; without it (--ktls=prefer or off)\n"
"OpenSSL encrypts here.  When QEMU closes its side, the proxy sends TLS\n"
"close_notify and half-closes; close_notify from the peer becomes end of\n"
"file for QEMU.  A connection cut without close_notify is an error, and the\n"
"proxy cuts the QEMU side too, so QEMU's migration fails rather than\n"
"finishing on a truncated stream.\n"
"\n",
		tool_prog, tool_prog);
}

/* proxy --help: the options up to --pin */
static void usage_options(FILE *out)
{
	fprintf(out,
"Options:\n"
"  --creds DIR         credentials in QEMU's tls-creds-x509 layout: ca-cert.pem,\n"
"                      client-cert.pem + client-key.pem (source), server-cert.pem\n"
"                      + server-key.pem (dest), optional ca-crl.pem\n"
"  --unix PATH         QEMU's unix socket: created by the source end (mode 0600;\n"
"                      a stale socket is replaced, removed at exit), connected\n"
"                      to by the dest end\n"
"  --unix-owner USER   source: give the socket to USER (name or uid), e.g.\n"
"                      libvirt-qemu; that user may then connect\n"
"  --unix-group GROUP  source: give the socket to GROUP (name or gid); a process\n"
"                      whose primary group it is may connect\n"
"  --unix-mode MODE    source: the socket's mode, octal (default 0600)\n"
"                      Every connection is checked (SO_PEERCRED): only root,\n"
"                      the proxy's user, --unix-owner and --unix-group get in\n"
"  --listen ADDR       source: a loopback TCP port for QEMU instead of --unix,\n"
"                      only with --insecure-local-tcp; dest: where to accept\n"
"                      TLS sessions ([HOST:]PORT, no host: every address;\n"
"                      port 0: any free port)\n"
"  --insecure-local-tcp  source: allow --listen.  RISK: any local user can\n"
"                      connect to a TCP port and inject a migration stream\n"
"                      into the destination QEMU; prefer --unix\n"
"  --connect ADDR      source: the destination end (HOST:PORT, [IPv6]:PORT);\n"
"                      dest: QEMU's loopback TCP port instead of --unix\n"
"  --hostname NAME     source: the name the destination's certificate must\n"
"                      carry (default: the --connect host), as QEMU's\n"
"                      tls-hostname\n"
"  --ktls MODE         prefer (default): kernel TLS, else userspace TLS (the\n"
"                      summary says why); require: refuse a connection that\n"
"                      cannot get kernel TLS, naming what is missing; off:\n"
"                      userspace TLS always (for comparison)\n"
"  --tls VERSION       1.2 or 1.3 (default: either, 1.3 when both allow it)\n"
"  --cipher LIST       comma-separated: aes-gcm-128, aes-gcm-256, aes-ccm-128,\n"
"                      chacha20-poly1305 (default: all, in that order)\n"
"  --pin SHA256        also require the peer's public key (SPKI) SHA-256: 64\n"
"                      hex digits or sha256//BASE64; repeatable\n");
}

/* proxy --help: the identity, hook and connection options */
static void usage_options_more(FILE *out)
{
	fprintf(out,
TOOL_IDENTITY_HELP
"  --check-hook PATH   pre-connection check, run as PATH - migrate pmc ADDR with\n"
"                      the verified peer in KTM_PEER_* variables (as migrate's);\n"
"                      a non-zero exit, a signal or the timeout refuses the\n"
"                      connection before any byte reaches QEMU\n"
TOOL_KEY_LIMIT_HELP
"  --max-conns N       serve N connections, then exit (default: until SIGINT\n"
"                      or SIGTERM).  A plain QEMU migration is 1 connection,\n"
"                      multifd with C channels is C + 1.  Every accepted\n"
"                      connection counts, also one refused (a port scan on\n"
"                      the dest port): leave it out on a reachable port\n"
"  --io-timeout S      a TLS peer that takes none of our bytes for S seconds\n"
"                      (frozen, partitioned) or, idle, stops answering TCP\n"
"                      keepalive fails its connection (default 30; 0: the\n"
"                      kernel's, about 15 minutes).  A peer that is merely\n"
"                      silent is waited for: QEMU's connections may idle\n"
"  --peer KIND         what the TLS peer is: ktm (default), another\n"
"                      ktls-migrate end, which ends each connection with\n"
"                      close_notify; qemu-tls, a QEMU using its own\n"
"                      tls-creds-x509 (mixed fleets), which ends channels with\n"
"                      a bare TCP FIN (or a reset after our close_notify): one\n"
"                      between two records is then passed\n"
"                      to the local QEMU as end of file, whose own stream\n"
"                      framing checks completeness (see docs/qemu.md)\n"
"  --quiet             no startup line and no line for clean connections\n"
"  -h, --help          show this text\n"
"\n");
}

/* proxy --help: addresses, output, examples and exit status */
static void usage_output(FILE *out)
{
	fprintf(out,
"Plain TCP (--listen on the source, --connect on the dest) must be a loopback\n"
"address: guest memory is plaintext there.  Plain and TLS addresses alike are\n"
"given without scheme or as tcp:HOST:PORT; --unix PATH is unix:PATH.\n"
"\n"
"Output: at start, on standard output, \"listening on ADDRESS\" (the bound\n"
"port when 0 was asked for), and on standard error who may connect\n"
"(\"authorization: any certificate signed by the CA in ...\" by default).\n"
"SIGHUP reads the credentials directory again for new connections and says\n"
"so on standard error.  At the end of each connection one line:\n"
"\n"
"  conn 1 unix:/run/mig.sock -> 10.0.0.7:4444: ok: sent 4294967296 bytes,\n"
"  received 31 bytes, 4.12 s, 1042 MB/s, path kernel, TLS 1.3 AES-GCM-128,\n"
"  peer CN=dst.example [DNS:dst.example] issuer CN=ca spki 3f2a...\n"
"\n"
"(one line; path kernel, kernel-hw or userspace with the reason).  A failed\n"
"connection prints the same line with \"failed\" and then the error on\n"
"standard error, e.g.\n"
"\n"
"  %s: conn 1: server certificate does not match expected host 'dst.example'\n"
"    hint: names in the certificate: DNS:dst-7.example, IP:10.0.0.7\n"
"\n"
"Examples:\n"
"  dest:   %s proxy dest --listen 4444 --unix /run/mig-in.sock --creds /etc/pki/qemu\n"
"          (QEMU: -incoming unix:/run/mig-in.sock)\n"
"  source: %s proxy source --unix /run/mig-out.sock --connect dst.example:4444 \\\n"
"              --creds /etc/pki/qemu\n"
"          (QMP: {\"execute\": \"migrate\", \"arguments\": {\"uri\": \"unix:/run/mig-out.sock\"}})\n"
"\n"
"Exit status: 0 every connection ended cleanly, 1 a connection failed or the\n"
"proxy could not start, 2 usage.\n",
		tool_prog, tool_prog, tool_prog);
}

static void usage(FILE *out)
{
	usage_intro(out);
	usage_options(out);
	usage_options_more(out);
	usage_output(out);
}

struct opts {
	bool source, quiet, insecure_tcp, peer_qemu_tls;
	long unix_owner, unix_group;
	unsigned int unix_mode;
	const char *creds, *unix_path, *listen, *connect;
	unsigned int max_conns, io_s;
	struct tool_tls tls;
};

#define bad_usage(...) tool_usage_error("proxy", __VA_ARGS__)

/* --unix-owner/--unix-group (name or number), --unix-mode (octal). */
static int parse_access(struct opts *o, char what, const char *arg)
{
	char *end = NULL;
	unsigned long v = strtoul(arg, &end, what == 'm' ? 8 : 10);

	if (what == 'm') {
		if (*end || !*arg || v > 0777)
			return bad_usage("--unix-mode takes an octal mode, not '%s'", arg);
		o->unix_mode = (unsigned int)v;
	} else if (*arg && !*end) {
		*(what == 'u' ? &o->unix_owner : &o->unix_group) = (long)v;
	} else if (what == 'u') {
		struct passwd *pw = getpwnam(arg);

		if (!pw)
			return bad_usage("--unix-owner: no user '%s'", arg);
		o->unix_owner = (long)pw->pw_uid;
	} else {
		struct group *gr = getgrnam(arg);

		if (!gr)
			return bad_usage("--unix-group: no group '%s'", arg);
		o->unix_group = (long)gr->gr_gid;
	}
	return 0;
}

enum { O_UNIX = 256, O_LISTEN, O_CONNECT, O_MAX, O_QUIET, O_OWNER,
       O_GROUP, O_MODE, O_INSECURE, O_PEER, O_IO };

/* One option of parse(): 0 to go on, else what parse() returns (-1 after
 * --help). */
static int parse_one(struct opts *o, int c)
{
	int ret;

	switch (c) {
	case O_UNIX: o->unix_path = optarg; return 0;
	case O_LISTEN: o->listen = optarg; return 0;
	case O_CONNECT: o->connect = optarg; return 0;
	case O_QUIET: o->quiet = true; return 0;
	case O_INSECURE: o->insecure_tcp = true; return 0;
	case O_OWNER:
	case O_GROUP:
	case O_MODE:
		ret = parse_access(o, c == O_OWNER ? 'u' : c == O_GROUP ?
				   'g' : 'm', optarg);
		if (ret)
			return ret;
		return 0;
	case O_PEER:
		if (strcmp(optarg, "qemu-tls") && strcmp(optarg, "ktm"))
			return bad_usage("--peer takes ktm or qemu-tls, not '%s'", optarg);
		o->peer_qemu_tls = !strcmp(optarg, "qemu-tls");
		return 0;
	case O_MAX:
		if (!tool_parse_uint(optarg, 1, 1000000, &o->max_conns))
			return bad_usage("--max-conns takes a count (1 to 1000000), not '%s'", optarg);
		return 0;
	case O_IO:
		if (!tool_parse_uint(optarg, 0, 86400, &o->io_s))
			return bad_usage("--io-timeout takes seconds (0 to 86400), not '%s'", optarg);
		return 0;
	case 'h':
		usage(stdout);
		return -1;
	default:
		ret = tool_tls_option(&o->tls, c, optarg, "proxy");
		if (ret == 1)
			return 0;
		return ret ? ret : bad_usage("bad option");
	}
}

/* parse(): the options each end needs, and those it must not have. */
static int check_ends(const struct opts *o)
{
	if (o->source) {
		if (!o->connect)
			return bad_usage("source needs --connect HOST:PORT (the destination end)");
		if (!!o->unix_path == !!o->listen)
			return bad_usage("source needs one of --unix PATH or --listen [HOST:]PORT (where QEMU migrates to)");
		if (o->listen && !o->insecure_tcp)
			return bad_usage("source --listen opens a TCP port any local user can inject a migration stream into; use --unix PATH, or add --insecure-local-tcp to accept that risk");
		if (!o->unix_path && (o->unix_owner >= 0 || o->unix_group >= 0 || o->unix_mode))
			return bad_usage("--unix-owner, --unix-group and --unix-mode need --unix PATH");
	} else {
		if (!o->listen)
			return bad_usage("dest needs --listen [HOST:]PORT (where the source end connects)");
		if (!!o->unix_path == !!o->connect)
			return bad_usage("dest needs one of --unix PATH or --connect HOST:PORT (QEMU's -incoming)");
		if (o->tls.hostname)
			return bad_usage("--hostname is for the source end");
	}
	return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "unix-owner", required_argument, NULL, O_OWNER },
		{ "unix-group", required_argument, NULL, O_GROUP },
		{ "unix-mode", required_argument, NULL, O_MODE },
		{ "insecure-local-tcp", no_argument, NULL, O_INSECURE },
		{ "unix", required_argument, NULL, O_UNIX },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "max-conns", required_argument, NULL, O_MAX },
		{ "io-timeout", required_argument, NULL, O_IO },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "peer", required_argument, NULL, O_PEER },
		{ "help", no_argument, NULL, 'h' },
		TOOL_TLS_OPTIONS,
		TOOL_CONN_OPTIONS,
		{ 0 }
	};
	int c, ret;

	tool_tls_init(&o->tls, KTM_KTLS_PREFER);
	o->unix_owner = o->unix_group = -1;
	o->io_s = 30;
	ret = tool_pick_mode(argc, argv, "source", "dest", "proxy");
	if (ret == -1)
		usage(stdout);
	if (ret < 0 || ret > 1)
		return ret;
	o->source = ret == 0;
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
	if (!o->tls.creds)
		return bad_usage("--creds DIR is required");
	return check_ends(o);
}

static struct ktm_proxy *the_proxy;

static void on_signal(int sig)
{
	(void)sig;
	if (the_proxy)
		ktm_proxy_stop(the_proxy);
}

struct report_ctx {
	bool quiet;
};

static void report(const struct ktm_proxy_conn *conn,
		   const struct ktm_error *err, void *opaque)
{
	const struct report_ctx *r = opaque;
	const struct ktm_session *s = ktm_proxy_conn_session(conn);
	uint64_t tx = ktm_proxy_conn_bytes(conn, KTM_DIR_TX);
	uint64_t rx = ktm_proxy_conn_bytes(conn, KTM_DIR_RX);
	double sec = ktm_proxy_conn_seconds(conn);
	const char *hint;

	if (!err && r->quiet)
		return;
	printf("conn %u %s -> %s: %s: sent %llu bytes, received %llu bytes, "
	       "%.2f s, %.0f MB/s", ktm_proxy_conn_id(conn),
	       ktm_proxy_conn_local(conn), ktm_proxy_conn_peer(conn),
	       err ? "failed" : "ok", (unsigned long long)tx,
	       (unsigned long long)rx, sec,
	       sec > 0 ? (double)(tx > rx ? tx : rx) / sec / 1e6 : 0.0);
	if (s) {
		const char *why = ktm_session_fallback_reason(s);

		printf(", path %s%s%s%s, %s %s",
		       ktm_path_name(ktm_session_path(s, KTM_DIR_TX)),
		       why ? " (" : "", why ? why : "", why ? ")" : "",
		       ktm_tls_version_name(ktm_session_version(s)),
		       ktm_cipher_name(ktm_session_cipher(s)));
		/* the verified peer; the library escapes these strings */
		if (ktm_session_peer_subject(s)[0])
			printf(", peer %s [%s] issuer %s spki %s",
			       ktm_session_peer_subject(s),
			       ktm_session_peer_sans(s),
			       ktm_session_peer_issuer(s),
			       ktm_session_peer_spki_sha256(s));
	}
	if (ktm_proxy_conn_peer_fin(conn))
		printf(", peer ended without close_notify (--peer qemu-tls)");
	printf("\n");
	fflush(stdout);
	if (err) {
		fprintf(stderr, "%s: conn %u: %s\n", tool_prog,
			ktm_proxy_conn_id(conn), ktm_error_message(err));
		hint = ktm_error_hint(err);
		if (hint)
			fprintf(stderr, "  hint: %s\n", hint);
	}
}

static struct ktm_config *make_config(struct opts *o)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;

	o->tls.hook_uri = o->source ? o->connect : o->listen;
	cfg = tool_tls_config(&o->tls, o->source ? KTM_ENDPOINT_CLIENT :
			      KTM_ENDPOINT_SERVER, &err);
	if (!cfg)
		tool_error(err);
	else if (!o->quiet)
		tool_identity_note(cfg);
	return cfg;
}

/* SIGHUP: read the credentials again, in a thread of its own (never in a
 * signal handler); sessions made after it use them. */
static void *reload_thread(void *arg)
{
	struct ktm_config *cfg = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	while (sigwait(&set, &sig) == 0) {
		struct ktm_error *err = NULL;

		if (ktm_config_reload(cfg, &err)) {
			fprintf(stderr, "%s: SIGHUP: reloaded the credentials "
				"for new connections\n", tool_prog);
		} else {
			fprintf(stderr, "%s: SIGHUP: kept the old credentials: ",
				tool_prog);
			tool_error(err);
		}
	}
	return NULL;
}

/* Block SIGHUP in every thread (the proxy's inherit the mask) and serve
 * it in one.  false when the thread cannot start. */
static bool reload_on_sighup(struct ktm_config *cfg, pthread_t *tid)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(tid, NULL, reload_thread, cfg))
		return false;
	pthread_detach(*tid);
	return true;
}

/* The QEMU side's address, for ktm_proxy_new() and the startup line. */
static void local_address(const struct opts *o, char *buf, size_t len)
{
	if (o->unix_path)
		snprintf(buf, len, "unix:%s", o->unix_path);
	else
		snprintf(buf, len, "%s", o->source ? o->listen : o->connect);
}

/* --unix-owner, --unix-group, --unix-mode on the source's socket; true
 * when none was given. */
static bool set_access(struct ktm_proxy *p, const struct opts *o,
		       struct ktm_error **errp)
{
	if (!(o->source && o->unix_path &&
	      (o->unix_owner >= 0 || o->unix_group >= 0 || o->unix_mode)))
		return true;
	return ktm_proxy_set_unix_access(p, o->unix_owner, o->unix_group,
					 o->unix_mode, errp);
}

/* SIGINT and SIGTERM stop the proxy; SIGPIPE is ignored. */
static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* The startup line on standard output. */
static void print_listening(struct ktm_proxy *p, const struct opts *o,
			    const char *local)
{
	static const char *policy_name[] = { "prefer", "require", "off" };

	printf("listening on %s (%s end, %s %s, kTLS %s)\n",
	       ktm_proxy_address(p), o->source ? "source" : "dest",
	       o->source ? "sessions to" : "QEMU at",
	       o->source ? o->connect : local, policy_name[o->tls.policy]);
	fflush(stdout);
}

int cmd_proxy(int argc, char **argv)
{
	struct report_ctx rctx = { 0 };
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	struct ktm_proxy *p;
	pthread_t reloader;
	char local[300];
	struct opts o = { 0 };
	int ret, failed;

	ret = parse(argc, argv, &o);
	if (ret)
		return ret < 0 ? 0 : ret;
	cfg = make_config(&o);
	if (!cfg)
		return 1;
	if (!reload_on_sighup(cfg, &reloader))
		fprintf(stderr, "%s: SIGHUP will not reload the credentials "
			"(no thread for it)\n", tool_prog);
	local_address(&o, local, sizeof(local));
	p = ktm_proxy_new(cfg, local, o.source ? o.connect : o.listen, &err);
	if (!p) {
		tool_error(err);
		ktm_config_free(cfg);
		return 1;
	}
	if (!set_access(p, &o, &err)) {
		tool_error(err);
		ktm_proxy_free(p);
		ktm_config_free(cfg);
		return 1;
	}
	rctx.quiet = o.quiet;
	if (o.peer_qemu_tls)
		ktm_proxy_set_peer_end(p, KTM_PEER_END_QEMU_TLS);
	ktm_proxy_set_io_timeout(p, o.io_s * 1000);
	ktm_proxy_set_report(p, report, &rctx);
	the_proxy = p;
	catch_signals();
	if (!o.quiet)
		print_listening(p, &o, local);
	failed = ktm_proxy_run(p, o.max_conns, &err);
	the_proxy = NULL;
	if (failed < 0)
		tool_error(err);
	ktm_proxy_free(p);
	ktm_config_free(cfg);
	return failed == 0 ? 0 : 1;
}
