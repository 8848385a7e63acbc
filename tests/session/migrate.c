// SPDX-License-Identifier: MIT
/*
 * Whole migrations on loopback: every send path, 1 and 2 channels, zero
 * pages, the digest and the atomic commit; a killed sender, a cut stream
 * and a tampered record each leave a named error and no image; the
 * key-usage limit rekeys or reconnects; page requests arrive first.
 *
 * Runs natively (userspace TLS: this kernel has none) and in the guest
 * tier (kernel TLS).  What must happen follows from the probe; nothing
 * skips.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"
#include "ktls.h"
#include "peer.h"
#include "pki.h"

#define IMG_SIZE (64u << 20)
#define ZERO_OFF (8u << 20)
#define ZERO_LEN (6u << 20)

/* What the destination saw, shared with the test. */
struct dest_result {
	bool done, ok;
	int cls;
	char msg[512];
	uint64_t zero_bytes, page_bytes;
	unsigned int reconnects, rekeys, served;
	int path;
	char digest[65];
};

struct mig {
	char dir[64], img[96], out[96];
	int lfd;
	char port[8];
	pid_t dest;
	struct dest_result *res;
	struct ktm_config *ccfg, *scfg;
};

/* 64 MiB of PRNG bytes with a hole of zero pages and scattered zero
 * pages; deterministic so a failure can be reproduced. */
static int make_image(const char *path)
{
	uint8_t *buf = t_prng_bytes(IMG_SIZE, 0x12345678);
	size_t i;
	int ret;

	if (!buf)
		return -1;
	memset(buf + ZERO_OFF, 0, ZERO_LEN);
	for (i = 0; i < IMG_SIZE; i += 37 * KTM_KTLS_MAX_RECORD)
		memset(buf + (i & ~4095ul), 0, 4096);
	ret = t_write_file(path, buf, IMG_SIZE);
	free(buf);
	return ret;
}

static bool same_files(const char *a, const char *b)
{
	int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
	struct stat sa, sb;
	void *ma, *mb;
	bool same = false;

	if (fa < 0 || fb < 0 || fstat(fa, &sa) || fstat(fb, &sb) ||
	    sa.st_size != sb.st_size)
		goto out;
	ma = mmap(NULL, (size_t)sa.st_size, PROT_READ, MAP_SHARED, fa, 0);
	mb = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fb, 0);
	same = ma != MAP_FAILED && mb != MAP_FAILED &&
	       !memcmp(ma, mb, (size_t)sa.st_size);
	munmap(ma, (size_t)sa.st_size);
	munmap(mb, (size_t)sb.st_size);
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return same;
}

static int mig_setup(struct mig *g, enum ktm_ktls_policy policy)
{
	struct t_server tmp;

	memset(g, 0, sizeof(*g));
	g->lfd = -1;
	if (t_pki_make_temp(g->dir, sizeof(g->dir), NULL))
		return -1;
	snprintf(g->img, sizeof(g->img), "%s/image", g->dir);
	snprintf(g->out, sizeof(g->out), "%s/received", g->dir);
	if (make_image(g->img) || t_server_listen(&tmp))
		return -1;
	g->lfd = tmp.lfd;
	snprintf(g->port, sizeof(g->port), "%s", tmp.port);
	munmap(tmp.out, sizeof(*tmp.out));
	g->res = mmap(NULL, sizeof(*g->res), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g->ccfg = t_config(KTM_ENDPOINT_CLIENT, g->dir, policy);
	g->scfg = t_config(KTM_ENDPOINT_SERVER, g->dir, policy);
	return g->res != MAP_FAILED && g->ccfg && g->scfg ? 0 : -1;
}

static void mig_teardown(struct mig *g)
{
	char partial[128];

	if (g->dest > 0) {
		kill(g->dest, SIGKILL);
		waitpid(g->dest, NULL, 0);
	}
	if (g->lfd >= 0)
		close(g->lfd);
	ktm_config_free(g->ccfg);
	ktm_config_free(g->scfg);
	if (g->res && g->res != MAP_FAILED)
		munmap(g->res, sizeof(*g->res));
	unlink(g->img);
	unlink(g->out);
	snprintf(partial, sizeof(partial), "%s.ktm-partial", g->out);
	unlink(partial);
	t_pki_remove(g->dir);
}

/* The destination in a child process. */
static void start_dest(struct mig *g, uint64_t req_off, uint64_t req_len)
{
	fflush(stdout);
	g->dest = fork();
	if (g->dest == 0) {
		struct ktm_error *err = NULL;
		struct ktm_migration *m = ktm_migration_new(g->scfg, NULL);
		struct dest_result *r = g->res;

		ktm_migration_set_accept_timeout(m, 20000);
		if (req_len)
			ktm_migration_request_pages(m, req_off, req_len, NULL);
		r->ok = ktm_migration_recv(m, g->lfd, g->out, &err);
		if (err) {
			r->cls = ktm_error_class(err);
			snprintf(r->msg, sizeof(r->msg), "%s", ktm_error_message(err));
			ktm_error_free(err);
		}
		r->zero_bytes = ktm_migration_zero_bytes(m);
		r->page_bytes = ktm_migration_page_bytes(m);
		r->reconnects = ktm_migration_reconnects(m);
		r->rekeys = ktm_migration_rekeys(m);
		r->served = ktm_migration_requests_served(m);
		r->path = ktm_migration_path(m, 0);
		snprintf(r->digest, sizeof(r->digest), "%s", ktm_migration_digest(m));
		r->done = true;
		ktm_migration_free(m);
		_exit(0);
	}
}

static bool wait_dest(struct mig *g, int seconds)
{
	int i, st;

	for (i = 0; i < seconds * 50; i++) {
		if (waitpid(g->dest, &st, WNOHANG) == g->dest) {
			g->dest = -1;
			return true;
		}
		usleep(20000);
	}
	return false;
}

struct send_result {
	bool ok;
	int cls;
	char msg[512];
	uint64_t wire, zero;
	unsigned int rekeys, reconnects, channels;
	int path;
	char path_name[16];
	char digest[65];
};

static void run_source(struct mig *g, const char *port, unsigned int channels,
		       enum ktm_send_path sp, uint64_t key_limit,
		       struct send_result *sr)
{
	struct ktm_error *err = NULL;
	struct ktm_migration *m = ktm_migration_new(g->ccfg, NULL);
	int fd = open(g->img, O_RDONLY);

	memset(sr, 0, sizeof(*sr));
	ktm_migration_set_channels(m, channels, NULL);
	ktm_migration_set_send_path(m, sp);
	ktm_migration_set_key_limit(m, key_limit);
	sr->ok = ktm_migration_send(m, "localhost", port, fd, &err);
	if (err) {
		sr->cls = ktm_error_class(err);
		snprintf(sr->msg, sizeof(sr->msg), "%s", ktm_error_message(err));
		printf("# source: %s\n", sr->msg);
		ktm_error_free(err);
	}
	sr->wire = ktm_migration_wire_bytes(m);
	sr->zero = ktm_migration_zero_bytes(m);
	sr->rekeys = ktm_migration_rekeys(m);
	sr->reconnects = ktm_migration_reconnects(m);
	sr->channels = ktm_migration_channels(m);
	sr->path = ktm_migration_path(m, 0);
	snprintf(sr->path_name, sizeof(sr->path_name), "%s",
		 ktm_migration_send_path_name(m));
	snprintf(sr->digest, sizeof(sr->digest), "%s", ktm_migration_digest(m));
	close(fd);
	ktm_migration_free(m);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* ---- a migration per send path x channel count --------------------------- */

FIXTURE(migrate)
{
	struct mig g;
};

FIXTURE_VARIANT(migrate)
{
	enum ktm_send_path path;
	unsigned int channels;
	const char *name;
};

FIXTURE_VARIANT_ADD(migrate, sendfile_1ch) { KTM_SEND_SENDFILE, 1, "sendfile" };
FIXTURE_VARIANT_ADD(migrate, sendfile_2ch) { KTM_SEND_SENDFILE, 2, "sendfile" };
FIXTURE_VARIANT_ADD(migrate, splice_1ch) { KTM_SEND_SPLICE, 1, "splice" };
FIXTURE_VARIANT_ADD(migrate, splice_2ch) { KTM_SEND_SPLICE, 2, "splice" };
FIXTURE_VARIANT_ADD(migrate, io_uring_1ch) { KTM_SEND_IO_URING, 1, "io_uring" };
FIXTURE_VARIANT_ADD(migrate, io_uring_2ch) { KTM_SEND_IO_URING, 2, "io_uring" };
FIXTURE_VARIANT_ADD(migrate, writev_1ch) { KTM_SEND_WRITEV, 1, "writev" };
FIXTURE_VARIANT_ADD(migrate, writev_2ch) { KTM_SEND_WRITEV, 2, "writev" };

FIXTURE_SETUP(migrate)
{
	ASSERT_EQ(mig_setup(&self->g, KTM_KTLS_PREFER), 0);
}

FIXTURE_TEARDOWN(migrate)
{
	mig_teardown(&self->g);
}

TEST_F_TIMEOUT(migrate, image_arrives_whole_and_verified, 240)
{
	struct send_result sr;
	int path = t_kernel_has_ktls() ? KTM_PATH_KERNEL_SW : KTM_PATH_USERSPACE;

	start_dest(&self->g, 0, 0);
	run_source(&self->g, self->g.port, variant->channels, variant->path, 0, &sr);
	ASSERT_TRUE(wait_dest(&self->g, 60));
	if (self->g.res->msg[0])
		TH_LOG("destination: %s", self->g.res->msg);
	ASSERT_TRUE(sr.ok);
	ASSERT_TRUE(self->g.res->ok);
	EXPECT_STREQ(self->g.res->msg, "");
	EXPECT_TRUE(same_files(self->g.img, self->g.out));
	EXPECT_STREQ(sr.digest, self->g.res->digest);
	EXPECT_EQ(sr.channels, variant->channels);
	EXPECT_EQ(sr.path, path);
	EXPECT_EQ(self->g.res->path, path);
	EXPECT_STREQ(sr.path_name, path == KTM_PATH_USERSPACE ? "userspace" :
				   variant->name);
	/* zero pages stay home: at least the 6 MiB hole */
	EXPECT_GE(sr.zero, ZERO_LEN);
	EXPECT_EQ(self->g.res->zero_bytes, sr.zero);
	EXPECT_LT(sr.wire, IMG_SIZE);
	EXPECT_EQ(self->g.res->page_bytes + self->g.res->zero_bytes, IMG_SIZE);
}

/* ---- failures ---------------------------------------------------------------- */

/*
 * A relay between source and destination: after @after bytes from the
 * source it either cuts both connections (truncate) or flips one bit of
 * the next byte (tamper).  Runs in a child; returns its port.
 */
static pid_t start_relay(const char *dst_port, uint64_t after, bool tamper,
			 char port[8])
{
	struct t_server r;
	pid_t pid;

	if (t_server_listen(&r))
		return -1;
	snprintf(port, 8, "%s", r.port);
	munmap(r.out, sizeof(*r.out));
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
					 .sin_port = htons((uint16_t)atoi(dst_port)) };
		int in = accept(r.lfd, NULL, NULL);
		int out = socket(AF_INET, SOCK_STREAM, 0);
		uint64_t seen = 0;
		char buf[65536];

		if (in < 0 || out < 0 ||
		    connect(out, (struct sockaddr *)&a, sizeof(a)))
			_exit(1);
		for (;;) {
			struct pollfd p[2] = { { .fd = in, .events = POLLIN },
					       { .fd = out, .events = POLLIN } };
			ssize_t n;

			if (poll(p, 2, 30000) <= 0)
				_exit(1);
			if (p[1].revents & (POLLIN | POLLHUP)) {
				n = read(out, buf, sizeof(buf));
				if (n <= 0 || write(in, buf, (size_t)n) != n)
					_exit(0);
			}
			if (!(p[0].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(in, buf, sizeof(buf));
			if (n <= 0)
				_exit(0);
			if (seen + (uint64_t)n > after) {
				if (!tamper) {
					/* cut: pass the bytes before the
					 * limit, then drop both ends */
					if (write(out, buf, after - seen) < 0)
						_exit(1);
					_exit(0);
				}
				buf[after - seen] ^= 0x01;
				after = UINT64_MAX;
			}
			seen += (uint64_t)n;
			if (write(out, buf, (size_t)n) != n)
				_exit(0);
		}
	}
	close(r.lfd);
	return pid;
}

static void failing_transfer(struct t_meta *_metadata, bool tamper)
{
	struct send_result sr;
	char rport[8], partial[128];
	struct mig g;
	pid_t relay;

	ASSERT_EQ(mig_setup(&g, KTM_KTLS_PREFER), 0);
	start_dest(&g, 0, 0);
	relay = start_relay(g.port, 20u << 20, tamper, rport);
	ASSERT_GT(relay, 0);
	run_source(&g, rport, 1, KTM_SEND_AUTO, 0, &sr);
	EXPECT_FALSE(sr.ok);
	ASSERT_TRUE(wait_dest(&g, 60));
	EXPECT_FALSE(g.res->ok);
	if (tamper) {
		EXPECT_EQ(g.res->cls, KTM_ERR_TLS_PROTOCOL);
		EXPECT_STRSTR(g.res->msg, "failed authentication (tampered or "
				          "corrupted in transit)");
	} else {
		EXPECT_EQ(g.res->cls, KTM_ERR_PEER);
		EXPECT_STRSTR(g.res->msg, "closed the connection without TLS "
				          "close_notify (truncated)");
	}
	TH_LOG("destination: %s", g.res->msg);
	/* nothing that looks like an image */
	snprintf(partial, sizeof(partial), "%s.ktm-partial", g.out);
	EXPECT_FALSE(exists(g.out));
	EXPECT_FALSE(exists(partial));
	kill(relay, SIGKILL);
	waitpid(relay, NULL, 0);
	mig_teardown(&g);
}

TEST_TIMEOUT(tampered_record_is_named_and_not_committed, 120)
{
	failing_transfer(_metadata, true);
}

TEST_TIMEOUT(truncated_stream_is_named, 120)
{
	failing_transfer(_metadata, false);
}

TEST_TIMEOUT(killed_sender_leaves_no_image, 120)
{
	char partial[128];
	struct mig g;
	pid_t src;
	int i;

	ASSERT_EQ(mig_setup(&g, KTM_KTLS_PREFER), 0);
	start_dest(&g, 0, 0);
	fflush(stdout);
	src = fork();
	if (src == 0) {
		struct send_result sr;

		run_source(&g, g.port, 2, KTM_SEND_AUTO, 0, &sr);
		_exit(0);
	}
	snprintf(partial, sizeof(partial), "%s.ktm-partial", g.out);
	/* kill the source once 8 MiB have landed at the destination */
	for (i = 0; i < 6000; i++) {
		struct stat st;

		if (!stat(partial, &st) && st.st_blocks * 512ll >= (8 << 20))
			break;
		usleep(5000);
	}
	kill(src, SIGKILL);
	waitpid(src, NULL, 0);
	ASSERT_TRUE(wait_dest(&g, 60));
	EXPECT_FALSE(g.res->ok);
	/* a FIN ("closed ... without close_notify") or a reset ("broke"),
	 * depending on what the dying sender had unread: the peer is named
	 * either way */
	EXPECT_EQ(g.res->cls, KTM_ERR_PEER);
	EXPECT_STRSTR(g.res->msg, "127.0.0.1:");
	EXPECT_TRUE(strstr(g.res->msg, "without TLS close_notify") ||
		    strstr(g.res->msg, "went away without closing the TLS session"));
	TH_LOG("destination: %s", g.res->msg);
	EXPECT_FALSE(exists(g.out));
	EXPECT_FALSE(exists(partial));
	mig_teardown(&g);
}

/*
 * The key-usage limit, made tiny: TLS 1.3 rekeys where the data path can
 * (userspace TLS always, the kernel from 6.14), otherwise the channel
 * moves to a fresh connection; TLS 1.2 always reconnects.
 */
static void key_limit(struct t_meta *_metadata, enum ktm_tls_version v,
		      enum ktm_send_path sp)
{
	struct send_result sr;
	bool kernel = t_kernel_has_ktls();
	/* the oracle: userspace TLS always rekeys, the kernel from 6.14;
	 * io_uring on the kernel path reconnects (lib/migrate_send.c) */
	bool can_rekey = t_session_can_rekey(v) &&
			 !(kernel && sp == KTM_SEND_IO_URING);
	struct mig g;

	ASSERT_EQ(mig_setup(&g, KTM_KTLS_PREFER), 0);
	ASSERT_TRUE(ktm_config_set_versions(g.ccfg, v, v, NULL));
	start_dest(&g, 0, 0);
	/* 400 records of 16 KiB = 6.25 MiB per key: about 10 key changes */
	run_source(&g, g.port, 2, sp, 400, &sr);
	ASSERT_TRUE(wait_dest(&g, 120));
	if (!g.res->ok)
		TH_LOG("destination: %s", g.res->msg);
	ASSERT_TRUE(sr.ok);
	ASSERT_TRUE(g.res->ok);
	EXPECT_TRUE(same_files(g.img, g.out));
	TH_LOG("%s, %s path: %u rekeys, %u reconnects (destination %u/%u)",
	       ktm_tls_version_name(v), kernel ? "kernel" : "userspace",
	       sr.rekeys, sr.reconnects, g.res->rekeys, g.res->reconnects);
	if (can_rekey) {
		EXPECT_GE(sr.rekeys, 8);
		EXPECT_EQ(sr.reconnects, 0);
		if (kernel)
			EXPECT_EQ(g.res->rekeys, sr.rekeys);
	} else {
		EXPECT_EQ(sr.rekeys, 0);
		EXPECT_GE(sr.reconnects, 8);
		EXPECT_EQ(g.res->reconnects, sr.reconnects);
	}
	mig_teardown(&g);
}

TEST_TIMEOUT(key_limit_tls13_rekeys_or_reconnects, 300)
{
	key_limit(_metadata, KTM_TLS_1_3, KTM_SEND_AUTO);
}

/* io_uring: the chains in flight end before each reconnect */
TEST_TIMEOUT(key_limit_tls13_io_uring, 300)
{
	key_limit(_metadata, KTM_TLS_1_3, KTM_SEND_IO_URING);
}

TEST_TIMEOUT(key_limit_tls12_reconnects, 300)
{
	key_limit(_metadata, KTM_TLS_1_2, KTM_SEND_AUTO);
}

static void requested_pages(struct t_meta *_metadata, enum ktm_send_path sp)
{
	struct send_result sr;
	struct mig g;

	ASSERT_EQ(mig_setup(&g, KTM_KTLS_PREFER), 0);
	/* near the end of the image: would come last otherwise */
	start_dest(&g, IMG_SIZE - (2u << 20), 64u << 10);
	run_source(&g, g.port, 1, sp, 0, &sr);
	ASSERT_TRUE(sr.ok);
	ASSERT_TRUE(wait_dest(&g, 60));
	ASSERT_TRUE(g.res->ok);
	EXPECT_EQ(g.res->served, 1);
	EXPECT_TRUE(same_files(g.img, g.out));
	mig_teardown(&g);
}

TEST_TIMEOUT(requested_pages_arrive_first, 120)
{
	requested_pages(_metadata, KTM_SEND_AUTO);
}

/* io_uring: the request is served between chains, none in flight */
TEST_TIMEOUT(requested_pages_arrive_first_io_uring, 120)
{
	requested_pages(_metadata, KTM_SEND_IO_URING);
}

TEST_TIMEOUT(existing_partial_file_is_refused_not_overwritten, 60)
{
	char partial[128];
	struct mig g;
	struct stat st;
	int fd;

	ASSERT_EQ(mig_setup(&g, KTM_KTLS_PREFER), 0);
	snprintf(partial, sizeof(partial), "%s.ktm-partial", g.out);
	fd = open(partial, O_CREAT | O_WRONLY, 0600);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "old", 3), 3);
	close(fd);
	/* refused at start, before any connection is accepted */
	start_dest(&g, 0, 0);
	ASSERT_TRUE(wait_dest(&g, 5));
	EXPECT_FALSE(g.res->ok);
	EXPECT_EQ(g.res->cls, KTM_ERR_CONFIG);
	EXPECT_STRSTR(g.res->msg, "a leftover ");
	EXPECT_STRSTR(g.res->msg, ".ktm-partial from an earlier migration is in the way");
	EXPECT_FALSE(exists(g.out));
	ASSERT_EQ(stat(partial, &st), 0);
	EXPECT_EQ(st.st_size, 3);
	unlink(partial);
	mig_teardown(&g);
}

TEST_HARNESS_MAIN
