// SPDX-License-Identifier: MIT
/*
 * ktls-migrate qemu-send | qemu-recv: fd mode.  Make the authenticated
 * kernel-TLS connection here, then give the socket itself to QEMU over QMP
 * (getfd + migrate / migrate-incoming "fd:NAME") and follow query-migrate.
 * QEMU then writes and reads plaintext; the kernel does the crypto.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "tool.h"

/* qemu-send/qemu-recv --help: synopsis and what the commands do */
static void usage_intro(FILE *out)
{
	fprintf(out,
"Usage: %s qemu-send --qmp PATH --connect HOST:PORT --creds DIR [OPTIONS]\n"
"       %s qemu-recv --qmp PATH --listen [HOST:]PORT --creds DIR [OPTIONS]\n"
"\n"
"Migrate a QEMU guest over a kernel-TLS socket that QEMU itself writes to.\n"
"This command connects (qemu-send) or accepts (qemu-recv) one TCP\n"
"connection, runs the TLS handshake with mutual x509 verification, puts the\n"
"keys into kernel TLS, and passes the socket to QEMU through its QMP socket:\n"
"\n"
"  {\"execute\": \"qmp_capabilities\"}\n"
"  {\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"NAME\"}}   (fd by SCM_RIGHTS)\n"
"  {\"execute\": \"migrate\", \"arguments\": {\"uri\": \"fd:NAME\"}}  (qemu-send)\n"
"  {\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"fd:NAME\"}}  (qemu-recv)\n"
"\n"
"then polls query-migrate until QEMU reports completed or failed, and prints\n"
"QEMU's error description on failure.  The destination QEMU must have been\n"
"started with -incoming defer.  QEMU needs no TLS configuration; set\n"
"migration capabilities and parameters over QMP before running this.  One\n"
"connection only: multifd needs the proxy (see '%s proxy --help').\n"
"\n",
		tool_prog, tool_prog, tool_prog);
}

/* qemu-send/qemu-recv --help: the options up to --pin */
static void usage_options(FILE *out)
{
	fprintf(out,
"Options:\n"
"  --qmp PATH          QEMU's QMP unix socket (-qmp unix:PATH,server=on,wait=off)\n"
"  --creds DIR         credentials in QEMU's tls-creds-x509 layout: ca-cert.pem,\n"
"                      client-cert.pem + client-key.pem (send), server-cert.pem\n"
"                      + server-key.pem (recv), optional ca-crl.pem\n"
"  --connect HOST:PORT qemu-send: where qemu-recv listens\n"
"  --listen [HOST:]PORT  qemu-recv: where to accept (port 0: any free port;\n"
"                      the bound address is printed as \"listening on ADDR\")\n"
"  --hostname NAME     qemu-send: the name the destination's certificate must\n"
"                      carry (default: the --connect host)\n"
"  --ktls MODE         require (default here, because QEMU writes plaintext\n"
"                      into the socket): fail unless the kernel takes the keys;\n"
"                      prefer: without kernel TLS, give QEMU one end of a\n"
"                      socketpair and encrypt here in userspace (as the proxy);\n"
"                      off: always that\n"
"  --tls VERSION       1.2 or 1.3 (default: either, 1.3 when both allow it)\n"
"  --cipher LIST       comma-separated: aes-gcm-128, aes-gcm-256, aes-ccm-128,\n"
"                      chacha20-poly1305 (default: all, in that order)\n"
"  --pin SHA256        also require the peer's public key (SPKI) SHA-256;\n"
"                      repeatable\n");
}

/* qemu-send/qemu-recv --help: the other options, output and exit status */
static void usage_rest(FILE *out)
{
	fprintf(out,
TOOL_IDENTITY_HELP
"  --check-hook PATH   pre-migration check, run as PATH - migrate pmc ADDR with\n"
"                      the verified peer in KTM_PEER_* variables (as migrate's);\n"
"                      a non-zero exit, a signal or the timeout refuses before\n"
"                      QEMU gets the socket\n"
TOOL_KEY_LIMIT_HELP
"  --fd-name NAME      the name of the fd in QEMU (default ktm-migrate)\n"
"  --accept-timeout S  qemu-recv: give up when no source connects within S\n"
"                      seconds (default: wait)\n"
"  --timeout S         give up when QEMU has not completed within S seconds of\n"
"                      the start (default: wait)\n"
"  -h, --help          show this text\n"
"\n"
"Output: one line on success, e.g.\n"
"  migration completed: 134217728 bytes in 1.20 s (112 MB/s), path kernel,\n"
"  TLS 1.3 AES-GCM-128, peer 10.0.0.7:4444 CN=dst.example [DNS:dst.example]\n"
"  issuer CN=ca spki 3f2a...\n"
"and, first, on standard error who may connect (\"authorization: ...\").\n"
"On failure the reason on standard error, as QEMU or the handshake gave it:\n"
"  %s: QEMU reports the migration failed: Unable to write to socket: ...\n"
"  %s: server certificate does not match expected host 'dst.example'\n"
"A failed handshake never reaches QEMU: the destination QEMU keeps waiting\n"
"(status inmigrate) and qemu-recv can be run again.  A destination QEMU\n"
"exits when its incoming migration fails; qemu-recv then reports that QEMU\n"
"closed its QMP socket.\n"
"\n"
"Exit status: 0 only when QEMU reports the migration completed, 1 failed,\n"
"2 usage.\n",
		tool_prog, tool_prog);
}

static void usage(FILE *out)
{
	usage_intro(out);
	usage_options(out);
	usage_rest(out);
}

struct opts {
	bool send;
	const char *qmp, *connect, *listen, *fd_name;
	unsigned int accept_s, timeout_s;
	struct tool_tls tls;
};

static const char *cmd_name = "qemu-send";

#define bad_usage(...) tool_usage_error(cmd_name, __VA_ARGS__)

static int parse_seconds(const char *arg, const char *opt, unsigned int *out)
{
	char *end = NULL;
	unsigned long v = strtoul(arg, &end, 10);

	if (*end || !v || v > 4000000)
		return bad_usage("%s takes seconds, not '%s'", opt, arg);
	*out = (unsigned int)v;
	return 0;
}

enum { O_QMP = 256, O_CONNECT, O_LISTEN, O_FDNAME, O_ACCEPT, O_TIMEOUT };

/* One option of parse(): 0 to go on, else what parse() returns (-1 after --help). */
static int parse_one(struct opts *o, int c)
{
	int ret;

	switch (c) {
	case O_QMP: o->qmp = optarg; return 0;
	case O_CONNECT: o->connect = optarg; return 0;
	case O_LISTEN: o->listen = optarg; return 0;
	case O_FDNAME: o->fd_name = optarg; return 0;
	case O_ACCEPT:
		if (parse_seconds(optarg, "--accept-timeout", &o->accept_s))
			return 2;
		return 0;
	case O_TIMEOUT:
		if (parse_seconds(optarg, "--timeout", &o->timeout_s))
			return 2;
		return 0;
	case 'h':
		usage(stdout);
		return -1;
	default:
		ret = tool_tls_option(&o->tls, c, optarg, cmd_name);
		if (ret == 1)
			return 0;
		return ret ? ret : bad_usage("bad option");
	}
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "qmp", required_argument, NULL, O_QMP },
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "fd-name", required_argument, NULL, O_FDNAME },
		{ "accept-timeout", required_argument, NULL, O_ACCEPT },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "help", no_argument, NULL, 'h' },
		TOOL_TLS_OPTIONS,
		TOOL_CONN_OPTIONS,
		{ 0 }
	};
	int c, ret;

	o->send = !strcmp(argv[0], "qemu-send");
	cmd_name = o->send ? "qemu-send" : "qemu-recv";
	tool_tls_init(&o->tls, KTM_KTLS_REQUIRE);
	o->fd_name = "ktm-migrate";
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		ret = parse_one(o, c);
		if (ret)
			return ret;
	}
	if (optind != argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (!o->qmp || !o->tls.creds)
		return bad_usage("--qmp PATH and --creds DIR are required");
	if (o->send && (!o->connect || o->listen))
		return bad_usage("qemu-send needs --connect HOST:PORT (and no --listen)");
	if (!o->send && (!o->listen || o->connect || o->tls.hostname))
		return bad_usage("qemu-recv needs --listen [HOST:]PORT (and no --connect or --hostname)");
	return 0;
}

static struct ktm_config *make_config(struct opts *o)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;

	o->tls.hook_uri = o->send ? o->connect : o->listen;
	cfg = tool_tls_config(&o->tls, o->send ? KTM_ENDPOINT_CLIENT :
			      KTM_ENDPOINT_SERVER, &err);
	if (!cfg)
		tool_error(err);
	else
		tool_identity_note(cfg);
	return cfg;
}

/* ", peer ADDR SUBJECT [SANS] issuer ISSUER spki SHA256" (escaped by the
 * library) for the success line. */
static void peer_identity(const struct opts *o, const struct ktm_session *s,
			  char *buf, size_t len)
{
	snprintf(buf, len, ", peer%s%s %s [%s] issuer %s spki %s",
		 o->send ? " " : "", o->send ? o->connect : "",
		 ktm_session_peer_subject(s), ktm_session_peer_sans(s),
		 ktm_session_peer_issuer(s), ktm_session_peer_spki_sha256(s));
}

static struct ktm_session *make_session(const struct opts *o,
					const struct ktm_config *cfg,
					struct ktm_error **errp)
{
	struct tool_addr to;
	struct pollfd pf;
	struct ktm_session *s;
	int lfd, ret;

	if (o->send) {
		if (!tool_addr_parse(o->connect, 0, "--connect", &to, NULL)) {
			fprintf(stderr, "%s: --connect '%s' is not HOST:PORT\n",
				tool_prog, o->connect);
			return NULL;
		}
		s = ktm_session_connect(cfg, to.host, to.port, errp);
		if (!s)
			tool_error(*errp), *errp = NULL;
		return s;
	}
	lfd = tool_listen(o->listen, true);
	if (lfd < 0)
		return NULL;
	pf.fd = lfd;
	pf.events = POLLIN;
	do {
		ret = poll(&pf, 1, o->accept_s ? (int)o->accept_s * 1000 : -1);
	} while (ret < 0 && errno == EINTR);
	if (ret <= 0) {
		fprintf(stderr, "%s: no source connected to %s within %u s\n",
			tool_prog, o->listen, o->accept_s);
		close(lfd);
		return NULL;
	}
	s = ktm_session_accept(cfg, lfd, errp);
	close(lfd);	/* one migration per run: refuse later connections */
	if (!s)
		tool_error(*errp), *errp = NULL;
	return s;
}

struct relay {
	struct ktm_session *s;
	int fd;
	struct ktm_error *err;
	unsigned int rekeys;	/* TLS 1.3 KeyUpdates it sent */
	pthread_t thread;
};

/* At the relay's end, before its session is freed. */
static void relay_report(const struct ktm_proxy_conn *conn,
			 const struct ktm_error *err, void *opaque)
{
	struct relay *r = opaque;

	(void)err;
	r->rekeys = ktm_session_rekeys(ktm_proxy_conn_session(conn), KTM_DIR_TX);
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;

	ktm_proxy_relay(r->s, r->fd, relay_report, r, &r->err);
	return NULL;
}

/* What fd mode watches on the socket QEMU writes to. */
struct key_watch {
	int fd;			/* a duplicate of QEMU's socket, or -1 */
	enum ktm_cipher cipher;
	uint64_t limit;		/* 0: none */
	uint64_t seen;		/* the record count at the last look */
	uint64_t peak;		/* the most records sealed between two looks */
	uint64_t at;		/* the count when it stopped the socket */
	pthread_t thread;
	atomic_bool quit;	/* the watcher thread is to end */
	atomic_bool tripped;	/* it shut the socket down at the limit */
	bool cancelled;		/* it cancelled the migration (and said why) */
};

/* Records QEMU may still seal before it stops: at most one more gap
 * between two looks, the sending call QEMU may be in when the socket is
 * shut down, one to spare; never less than a quarter of the limit (after
 * the shutdown the kernel still seals records for QEMU's next writes, which
 * fail and never reach the wire: QEMU 10 made up to 164 more with a limit
 * of 2000 in the guest tests, QEMU 7.2 up to 10). */
static uint64_t key_watch_margin(const struct key_watch *w)
{
	uint64_t m = w->limit / 4;

	if (m < 3 * w->peak)
		m = 3 * w->peak;
	return m ? m : 1;
}

/*
 * The watcher thread.  QEMU owns the kernel-TLS socket and cannot update
 * its key, so look at the live record count (the kernel's rec_seq,
 * through our duplicate fd) every 5 ms and, before the key-usage limit,
 * shut the socket down: QEMU's next write fails, whatever its main loop
 * and QMP are doing, and no further record is sealed.
 */
static void *key_watch_main(void *arg)
{
	const struct timespec tick = { 0, 5 * 1000 * 1000 };
	struct key_watch *w = arg;
	uint64_t n;

	while (!atomic_load(&w->quit)) {
		if (ktm_fd_key_records(w->fd, w->cipher, KTM_DIR_TX, &n, NULL)) {
			if (n > w->seen && n - w->seen > w->peak)
				w->peak = n - w->seen;
			w->seen = n;
			if (n + key_watch_margin(w) >= w->limit) {
				shutdown(w->fd, SHUT_RDWR);
				w->at = n;
				atomic_store(&w->tripped, true);
				break;
			}
		}
		nanosleep(&tick, NULL);
	}
	return NULL;
}

/* End the watcher thread (it may have ended itself). */
static void key_watch_join(struct key_watch *w)
{
	atomic_store(&w->quit, true);
	pthread_join(w->thread, NULL);
}

/* The watcher stopped the socket: cancel the migration over QMP (QEMU's
 * writes fail already; this makes its status say so) with the sentence. */
static void key_watch_cancel(struct ktm_qmp *q, const struct key_watch *w)
{
	free(ktm_qmp_execute(q, "{\"execute\": \"migrate_cancel\"}", -1, NULL));
	fprintf(stderr, "%s: cancelled the migration (migrate_cancel): the "
		"kernel-TLS socket QEMU writes to has sealed %llu records under one "
		"key, close to the %s usage limit of %llu, and QEMU cannot update "
		"the key of a socket it was handed\n", tool_prog,
		(unsigned long long)w->at, ktm_cipher_name(w->cipher),
		(unsigned long long)w->limit);
	fprintf(stderr, "  hint: migrate this guest through '%s proxy' (it "
		"updates keys in place or stops cleanly), or use --cipher "
		"chacha20-poly1305\n", tool_prog);
}

/* After the stop: wait for QEMU to end the migration and say how many
 * records the socket sealed in all.  QEMU's "cancelled" or "failed" is
 * ours, already explained: false with *errp left NULL and @w->cancelled
 * set. */
static bool key_watch_end(struct ktm_qmp *q, struct key_watch *w,
			  struct ktm_error **errp)
{
	char status[64] = "";
	struct ktm_error *e = NULL;
	uint64_t n = 0;
	int ret, i;

	key_watch_cancel(q, w);
	for (i = 0; i < 200; i++) {	/* QEMU stops within 10 s */
		ktm_error_free(e);
		e = NULL;
		ret = ktm_qmp_migrate_poll(q, status, sizeof(status), NULL,
					   NULL, &e);
		if (ret)
			break;
		usleep(50 * 1000);
	}
	if (ktm_fd_key_records(w->fd, w->cipher, KTM_DIR_TX, &n, NULL))
		fprintf(stderr, "%s: QEMU stopped (%s) after %llu records under "
			"the key (limit %llu)\n", tool_prog,
			status[0] ? status : "status unknown",
			(unsigned long long)n, (unsigned long long)w->limit);
	w->cancelled = !strcmp(status, "cancelled") || !strcmp(status, "failed");
	if (w->cancelled || ret > 0)
		ktm_error_free(e);
	else
		*errp = e;
	return ret > 0;
}

/* ktm_qmp_migrate_wait() while the watcher thread looks at the key; asks
 * QEMU every 100 ms; @timeout_s 0: no limit.  At that limit it prints the
 * sentence itself and returns false with *errp left NULL. */
static bool wait_watching(struct ktm_qmp *q, unsigned int timeout_s,
			  struct key_watch *w, uint64_t *transferred,
			  uint64_t *total_ms, struct ktm_error **errp)
{
	char status[64];
	double t0;
	int ret;

	if (w->fd < 0 || !w->limit)
		return ktm_qmp_migrate_wait(q, timeout_s * 1000u, transferred,
					    total_ms, errp);
	ret = pthread_create(&w->thread, NULL, key_watch_main, w);
	if (ret) {
		/* never migrate past the limit unwatched */
		free(ktm_qmp_execute(q, "{\"execute\": \"migrate_cancel\"}",
				     -1, NULL));
		ktm_error_set(errp, KTM_ERR_IO, ret, "cancelled the migration "
			      "(migrate_cancel): cannot start the thread that "
			      "watches the key-usage limit (%s)", strerror(ret));
		return false;
	}
	t0 = tool_now_s();
	for (;;) {
		ret = ktm_qmp_migrate_poll(q, status, sizeof(status),
					   transferred, total_ms, errp);
		if (atomic_load(&w->tripped) && ret <= 0) {
			key_watch_join(w);
			ktm_error_free(*errp);
			*errp = NULL;
			return key_watch_end(q, w, errp);
		}
		if (ret) {
			key_watch_join(w);
			return ret > 0;
		}
		if (timeout_s && tool_now_s() - t0 >= timeout_s) {
			key_watch_join(w);
			fprintf(stderr, "%s: migration did not complete within "
				"%u s\n", tool_prog, timeout_s);
			return false;
		}
		usleep(100 * 1000);
	}
}

/* Both directions of @s in kernel TLS. */
static bool both_kernel(const struct ktm_session *s)
{
	return ktm_session_path(s, KTM_DIR_TX) != KTM_PATH_USERSPACE &&
	       ktm_session_path(s, KTM_DIR_RX) != KTM_PATH_USERSPACE;
}

/* What the success line says about the session. */
struct summary {
	char path[32], why[300], keys[48], peer_note[4096];
	const char *cipher, *version;
};

/* Fill @sum from @s, before QEMU gets the socket. */
static void describe(const struct opts *o, const struct ktm_session *s,
		     bool kernel, struct summary *sum)
{
	snprintf(sum->path, sizeof(sum->path), "%s",
		 ktm_path_name(ktm_session_path(s, KTM_DIR_TX)));
	if (!kernel)
		snprintf(sum->why, sizeof(sum->why), " (%s)",
			 ktm_session_fallback_reason(s));
	sum->version = ktm_tls_version_name(ktm_session_version(s));
	sum->cipher = ktm_cipher_name(ktm_session_cipher(s));
	peer_identity(o, s, sum->peer_note, sizeof(sum->peer_note));
}

/* The fd QEMU gets: the kernel-TLS socket itself, or one end of a
 * socketpair whose other end @relay will encrypt to @s.  -1 (printed, @s
 * freed) on failure. */
static int qemu_fd(struct ktm_session *s, bool kernel, struct relay *relay)
{
	struct ktm_error *err = NULL;
	int fd, pair[2];

	if (kernel) {
		/* QEMU gets the kernel-TLS socket itself. */
		fd = ktm_session_detach(s, &err);
		if (fd < 0) {
			tool_error(err);
			ktm_session_free(s);
			return -1;
		}
		return fd;
	}
	/* Userspace TLS: QEMU gets one end of a socketpair and a
	 * relay thread encrypts between the other end and s. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair)) {
		fprintf(stderr, "%s: cannot make a socketpair for QEMU: %s\n",
			tool_prog, strerror(errno));
		ktm_session_free(s);
		return -1;
	}
	relay->s = s;
	relay->fd = pair[1];
	return pair[0];
}

/* Free the relay's session and socket when it never ran. */
static void relay_drop(struct relay *relay)
{
	if (relay->s) {
		ktm_session_free(relay->s);
		close(relay->fd);
	}
}

/* Start the relay thread, if there is a relay; false (printed, relay
 * dropped) when it cannot start. */
static bool relay_start(struct relay *relay)
{
	int ret;

	if (!relay->s)
		return true;
	ret = pthread_create(&relay->thread, NULL, relay_main, relay);
	if (ret) {
		fprintf(stderr, "%s: cannot start the relay thread: %s\n",
			tool_prog, strerror(ret));
		ktm_session_free(relay->s);
		close(relay->fd);
		return false;
	}
	return true;
}

/* Give QEMU its socket over QMP (migrate or migrate-incoming) and start
 * the relay, if any; false (printed, session and relay freed) on failure. */
static bool hand_over(struct ktm_qmp *q, const struct opts *o,
		      struct ktm_session *s, bool kernel, struct relay *relay,
		      struct key_watch *watch)
{
	struct ktm_error *err = NULL;
	bool ok;
	int fd;

	watch->cipher = ktm_session_cipher(s);
	watch->limit = ktm_session_key_limit(s);
	fd = qemu_fd(s, kernel, relay);
	if (fd < 0)
		return false;
	/* the sender's key limit is ours to watch; the receiver's is the
	 * peer's to keep */
	if (kernel && o->send)
		watch->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	ok = ktm_qmp_migrate_fd(q, o->send ? KTM_ENDPOINT_CLIENT : KTM_ENDPOINT_SERVER,
				fd, o->fd_name, &err);
	close(fd);	/* QEMU holds its own copy now */
	if (!ok) {
		tool_error(err);
		relay_drop(relay);
		return false;
	}
	return relay_start(relay);
}

/* The migration failed or timed out: print @err, and cancel a timed-out
 * sending migration. */
static void wait_failed(struct ktm_qmp *q, const struct opts *o,
			struct ktm_error *err)
{
	bool timed_out = !err || ktm_error_errno(err) == ETIMEDOUT;

	if (err)
		tool_error(err);
	/* Giving up must not leave QEMU migrating behind our back. */
	if (timed_out && o->send) {
		free(ktm_qmp_execute(q, "{\"execute\": \"migrate_cancel\"}",
				     -1, NULL));
		fprintf(stderr, "%s: cancelled the migration (migrate_cancel)\n",
			tool_prog);
	}
}

/* Wait for the relay thread, if any; @ok: QEMU completed.  The key
 * updates it made go into @sum. */
static void relay_end(struct relay *relay, bool ok, struct summary *sum)
{
	if (!relay->s)
		return;
	/* QEMU closes its end when the migration ends either way, so
	 * the relay ends too (close_notify after a clean end). */
	pthread_join(relay->thread, NULL);
	if (relay->rekeys)
		snprintf(sum->keys, sizeof(sum->keys), ", %u key update(s)",
			 relay->rekeys);
	/* QEMU's verdict rules, as it does without us: a cut or
	 * tampered stream makes the destination fail, and with the
	 * return-path capability the source completes only after the
	 * destination confirmed.  After completed, a relay error (e.g.
	 * a peer whose QEMU wrote into kernel TLS itself and closed
	 * without close_notify) is only a note. */
	if (relay->err && ok) {
		fprintf(stderr, "%s: note: after QEMU completed: %s\n",
			tool_prog, ktm_error_message(relay->err));
	}
	ktm_error_free(relay->err);
}

/* The success line; @t0: when cmd_qemu() started. */
static void print_completed(const struct summary *sum,
			    double t0, uint64_t transferred,
			    uint64_t total_ms)
{
	double sec;

	sec = total_ms ? (double)total_ms / 1000 : tool_now_s() - t0;
	if (transferred)
		printf("migration completed: %llu bytes in %.2f s (%.0f MB/s), "
		       "path %s%s, %s %s%s%s\n", (unsigned long long)transferred,
		       sec, sec > 0 ? (double)transferred / sec / 1e6 : 0.0,
		       sum->path, sum->why, sum->version, sum->cipher,
		       sum->keys, sum->peer_note);
	else
		printf("migration completed after %.2f s, path %s%s, %s %s%s%s\n",
		       sec, sum->path, sum->why, sum->version, sum->cipher,
		       sum->keys, sum->peer_note);
}

int cmd_qemu(int argc, char **argv)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	struct ktm_session *s;
	struct ktm_qmp *q;
	struct relay relay = { .fd = -1 };
	struct key_watch watch = { .fd = -1 };
	double t0;
	struct opts o = { 0 };
	struct summary sum = { .why = "", .keys = "", .peer_note = "" };
	uint64_t transferred = 0, total_ms = 0;
	int ret;
	bool kernel, ok;

	ret = parse(argc, argv, &o);
	if (ret)
		return ret < 0 ? 0 : ret;
	signal(SIGPIPE, SIG_IGN);
	cfg = make_config(&o);
	if (!cfg)
		return 1;
	t0 = tool_now_s();
	/* QMP first: a wrong socket should fail before the peer is bothered. */
	q = ktm_qmp_open(o.qmp, 0, &err);
	if (!q) {
		tool_error(err);
		ktm_config_free(cfg);
		return 1;
	}
	s = make_session(&o, cfg, &err);
	if (!s)
		goto err_qmp;

	kernel = both_kernel(s);
	describe(&o, s, kernel, &sum);
	if (!hand_over(q, &o, s, kernel, &relay, &watch))
		goto err_qmp;
	ok = wait_watching(q, o.timeout_s, &watch, &transferred, &total_ms, &err);
	if (watch.fd >= 0)
		close(watch.fd);
	if (!ok && !watch.cancelled)
		wait_failed(q, &o, err);
	err = NULL;
	relay_end(&relay, ok, &sum);
	ktm_qmp_close(q);
	ktm_config_free(cfg);
	if (!ok)
		return 1;
	print_completed(&sum, t0, transferred, total_ms);
	return 0;

err_qmp:
	if (watch.fd >= 0)
		close(watch.fd);
	ktm_qmp_close(q);
	ktm_config_free(cfg);
	return 1;
}
