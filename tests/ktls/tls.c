// SPDX-License-Identifier: MIT
/*
 * Kernel TLS, tested on a real kernel: a connected loopback TCP pair with
 * fixed keys (no handshake), one variant per TLS version x cipher row of
 * ktls/ciphers.def.  Needs a kernel with the tls module (or run through
 * tests/vm/ in a QEMU guest).  A kernel without the tls ULP is a SKIP,
 * concluded only from ENOENT; any other errno is a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal.h"
#include "ktls.h"
#include "peer.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* ---- helpers ----------------------------------------------------------- */

/* Deterministic bytes: a test's data can be regenerated to compare. */
static void t_fill(uint8_t *buf, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
}

/* Keys for one direction: @dir_seed tells the two directions apart,
 * @gen the generation (rekey). */
static int t_crypto(struct ktm_ktls_crypto *c, uint16_t version,
		    enum ktm_cipher cipher, uint32_t dir_seed, uint32_t gen)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(cipher);
	uint8_t key[32], iv[KTM_KTLS_IV_LEN];

	t_fill(key, sizeof(key), dir_seed * 100 + gen);
	t_fill(iv, sizeof(iv), dir_seed * 100 + gen + 50);
	return ktm_ktls_crypto_fill(c, version, cipher, key, row->key_len, iv,
				    0);
}

static bool t_wait_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* Send all of @buf; 0 or -errno. */
static int t_send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Receive exactly @len bytes; 0, -EPIPE at early end, or -errno. */
static int t_recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n;

		if (!t_wait_readable(fd, 20000))
			return -ETIMEDOUT;
		n = recv(fd, p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Run @fn(@arg) in a child process; the parent reads meanwhile.  Returns
 * the pid; t_reap() returns the child's exit status (0 = it succeeded). */
static pid_t t_spawn(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(fn(arg) ? 1 : 0);
	return pid;
}

static int t_reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static uint64_t t_stat(const char *name)
{
	struct ktm_ktls_stat st;
	uint64_t v = 0;

	if (ktm_ktls_stat_read(NULL, &st) > 0)
		ktm_ktls_stat_get(&st, name, &v);
	return v;
}

/* ---- fixture: a pair keyed both ways ---------------------------------- */

FIXTURE(tls)
{
	int fd;		/* TX with key A, RX with key B */
	int cfd;	/* RX with key A, TX with key B */
};

FIXTURE_VARIANT(tls)
{
	uint16_t version;
	enum ktm_cipher cipher;
};

#define KTM_CIPHER(name_, K, label_)				\
	FIXTURE_VARIANT_ADD(tls, 12_##name_) {				\
		.version = TLS_1_2_VERSION, .cipher = KTM_CIPHER_##K,	\
	};								\
	FIXTURE_VARIANT_ADD(tls, 13_##name_) {				\
		.version = TLS_1_3_VERSION, .cipher = KTM_CIPHER_##K,	\
	};
#include "ciphers.def"
#undef KTM_CIPHER

enum { KEY_A = 1, KEY_B = 2 };

static int install(int fd, enum ktm_ktls_dir dir,
		   const FIXTURE_VARIANT(tls) *variant, uint32_t key,
		   uint32_t gen)
{
	struct ktm_ktls_crypto c;
	int ret;

	ret = t_crypto(&c, variant->version, variant->cipher, key, gen);
	if (!ret)
		ret = ktm_ktls_install(NULL, fd, dir, &c);
	ktm_ktls_crypto_wipe(&c);
	return ret;
}

/* Attach the ULP to both ends of a fresh pair; SKIP only for ENOENT. */
#define T_ULP_PAIR(fds)							\
	do {								\
		int _r;							\
		ASSERT_EQ(ktm_net_tcp_pair(fds), 0);			\
		_r = ktm_ktls_ulp_attach(NULL, (fds)[0]);		\
		if (_r == -ENOENT)					\
			SKIP(return, "kernel has no tls ULP (TCP_ULP: ENOENT): " \
			     "load tls.ko or build with CONFIG_TLS");	\
		ASSERT_EQ(_r, 0);					\
		ASSERT_EQ(ktm_ktls_ulp_attach(NULL, (fds)[1]), 0);	\
	} while (0)

FIXTURE_SETUP(tls)
{
	int fds[2], ret;

	self->fd = self->cfd = -1;
	T_ULP_PAIR(fds);
	self->fd = fds[0];
	self->cfd = fds[1];

	ret = install(self->fd, KTM_KTLS_TX, variant, KEY_A, 0);
	/* The kernel's answer for a cipher whose crypto module is absent is
	 * ENOENT (tls looks the AEAD up at setsockopt time; docs/design.md §3).
	 * Anything else, EINVAL above all (a malformed crypto_info, the very
	 * thing under test), is a failure, not a missing feature. */
	if (ret == -ENOENT)
		SKIP(return, "kernel lacks the %s crypto module for TLS 1.%d "
		     "(TLS_TX: ENOENT)", ktm_cipher_name(variant->cipher),
		     variant->version == TLS_1_3_VERSION ? 3 : 2);
	ASSERT_EQ(ret, 0);
	ASSERT_EQ(install(self->cfd, KTM_KTLS_RX, variant, KEY_A, 0), 0);
	ASSERT_EQ(install(self->cfd, KTM_KTLS_TX, variant, KEY_B, 0), 0);
	ASSERT_EQ(install(self->fd, KTM_KTLS_RX, variant, KEY_B, 0), 0);
}

FIXTURE_TEARDOWN(tls)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->cfd >= 0)
		close(self->cfd);
}

TEST_F(tls, round_trip_both_ways)
{
	uint8_t out[10000], in[10000];

	t_fill(out, sizeof(out), 1);
	ASSERT_EQ(t_send_all(self->fd, out, sizeof(out)), 0);
	ASSERT_EQ(t_recv_all(self->cfd, in, sizeof(in)), 0);
	ASSERT_MEMEQ(in, out, sizeof(out));

	t_fill(out, sizeof(out), 2);
	ASSERT_EQ(t_send_all(self->cfd, out, sizeof(out)), 0);
	ASSERT_EQ(t_recv_all(self->fd, in, sizeof(in)), 0);
	ASSERT_MEMEQ(in, out, sizeof(out));
}

struct big_send {
	int fd;
	size_t len;
};

static int big_sender(void *arg)
{
	struct big_send *bs = arg;
	uint8_t *buf = malloc(bs->len);
	int ret;

	if (!buf)
		return -ENOMEM;
	t_fill(buf, bs->len, 3);
	ret = t_send_all(bs->fd, buf, bs->len);
	free(buf);
	return ret;
}

TEST_F_TIMEOUT(tls, many_records_stay_intact, 120)
{
	struct big_send bs = { .fd = self->fd, .len = 4 << 20 };
	uint8_t *want = malloc(bs.len), *got = malloc(bs.len);
	pid_t pid;

	ASSERT_NE(want, NULL);
	ASSERT_NE(got, NULL);
	t_fill(want, bs.len, 3);
	pid = t_spawn(big_sender, &bs);
	ASSERT_GT(pid, 0);
	ASSERT_EQ(t_recv_all(self->cfd, got, bs.len), 0);
	ASSERT_EQ(t_reap(pid), 0);
	ASSERT_MEMEQ(got, want, bs.len);
	free(want);
	free(got);
}

TEST_F(tls, read_back_gives_key_and_live_rec_seq)
{
	struct ktm_ktls_crypto want, got;
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(variant->cipher);
	uint8_t buf[100], in[300];
	int i;

	for (i = 0; i < 3; i++) {	/* three sends, three records */
		t_fill(buf, sizeof(buf), (uint32_t)i);
		ASSERT_EQ(t_send_all(self->fd, buf, sizeof(buf)), 0);
	}
	ASSERT_EQ(t_recv_all(self->cfd, in, sizeof(in)), 0);

	ASSERT_EQ(t_crypto(&want, variant->version, variant->cipher, KEY_A, 0), 0);
	ASSERT_EQ(ktm_ktls_read_back(NULL, self->fd, KTM_KTLS_TX,
				     variant->cipher, &got), 0);
	EXPECT_EQ(got.u.info.version, variant->version);
	EXPECT_EQ(got.u.info.cipher_type, row->kernel_type);
	EXPECT_EQ(ktm_ktls_crypto_rec_seq(&got), 3);
	/* key right after the header and iv, salt after the key */
	EXPECT_MEMEQ((uint8_t *)&got.u + 4 + row->iv_len,
		     (uint8_t *)&want.u + 4 + row->iv_len,
		     row->key_len + row->salt_len);
	ktm_ktls_crypto_wipe(&got);

	ASSERT_EQ(ktm_ktls_read_back(NULL, self->cfd, KTM_KTLS_RX,
				     variant->cipher, &got), 0);
	EXPECT_EQ(ktm_ktls_crypto_rec_seq(&got), 3);
	ktm_ktls_crypto_wipe(&got);
	ktm_ktls_crypto_wipe(&want);
}

TEST_F(tls, read_back_needs_exact_size)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(variant->cipher);
	struct ktm_ktls_crypto got;
	socklen_t len = row->info_len - 1;

	EXPECT_EQ(getsockopt(self->fd, SOL_TLS, TLS_TX, &got.u, &len), -1);
	EXPECT_EQ(errno, EINVAL);
	ktm_ktls_crypto_wipe(&got);
}

TEST_F(tls, msg_more_fills_one_record)
{
	struct ktm_ktls_crypto got;
	uint8_t buf[300], in[300];

	t_fill(buf, sizeof(buf), 9);
	ASSERT_EQ(send(self->fd, buf, 100, MSG_MORE), 100);
	ASSERT_EQ(send(self->fd, buf + 100, 100, MSG_MORE), 100);
	ASSERT_EQ(send(self->fd, buf + 200, 100, 0), 100);
	ASSERT_EQ(t_recv_all(self->cfd, in, sizeof(in)), 0);
	ASSERT_MEMEQ(in, buf, sizeof(buf));
	ASSERT_EQ(ktm_ktls_read_back(NULL, self->fd, KTM_KTLS_TX,
				     variant->cipher, &got), 0);
	EXPECT_EQ(ktm_ktls_crypto_rec_seq(&got), 1);
	ktm_ktls_crypto_wipe(&got);
}

/* A file of @len deterministic bytes in /tmp, unlinked; returns the fd. */
static int t_tmpfile(size_t len, uint32_t seed)
{
	char path[] = "/tmp/ktm-test-XXXXXX";
	uint8_t *buf = malloc(len);
	int fd = mkstemp(path);

	if (fd < 0 || !buf) {
		free(buf);
		return -1;
	}
	unlink(path);
	t_fill(buf, len, seed);
	if (write(fd, buf, len) != (ssize_t)len) {
		close(fd);
		fd = -1;
	}
	free(buf);
	return fd;
}

struct file_send {
	int sock, file;
	size_t len;
	bool splice;
};

static int file_sender(void *arg)
{
	struct file_send *fs = arg;
	off_t off = 0;
	int p[2];

	if (!fs->splice) {
		while ((size_t)off < fs->len)
			if (sendfile(fs->sock, fs->file, &off, fs->len - (size_t)off) <= 0)
				return -errno;
		return 0;
	}
	if (pipe(p))
		return -errno;
	while ((size_t)off < fs->len) {
		ssize_t n = splice(fs->file, &off, p[1], NULL,
				   fs->len - (size_t)off, 0);

		if (n <= 0)
			return -EIO;
		while (n > 0) {
			ssize_t m = splice(p[0], NULL, fs->sock, NULL,
					   (size_t)n, 0);

			if (m <= 0)
				return -errno;
			n -= m;
		}
	}
	return 0;
}

static void check_file_send(struct t_meta *_metadata, int sock, int cfd,
			    bool use_splice)
{
	struct file_send fs = { .sock = sock, .len = 256 << 10,
				.splice = use_splice };
	uint8_t *want = malloc(fs.len), *got = malloc(fs.len);
	pid_t pid;

	ASSERT_NE(want, NULL);
	ASSERT_NE(got, NULL);
	fs.file = t_tmpfile(fs.len, 5);
	ASSERT_GE(fs.file, 0);
	t_fill(want, fs.len, 5);
	pid = t_spawn(file_sender, &fs);
	ASSERT_GT(pid, 0);
	ASSERT_EQ(t_recv_all(cfd, got, fs.len), 0);
	ASSERT_EQ(t_reap(pid), 0);
	ASSERT_MEMEQ(got, want, fs.len);
	close(fs.file);
	free(want);
	free(got);
}

TEST_F_TIMEOUT(tls, sendfile_into_tx, 60)
{
	check_file_send(_metadata, self->fd, self->cfd, false);
}

TEST_F_TIMEOUT(tls, splice_into_tx, 60)
{
	check_file_send(_metadata, self->fd, self->cfd, true);
}

/* The kernel takes the flag on a software socket and reports it back, but
 * only device offload sends file pages without a copy (TLS_INFO_ZC_RO_TX
 * then shows in sock_diag); the data must arrive intact either way. */
TEST_F_TIMEOUT(tls, sendfile_with_zerocopy_ro, 60)
{
	socklen_t len = sizeof(int);
	int val = 0;

	ASSERT_EQ(ktm_ktls_tx_zerocopy_ro(NULL, self->fd, true), 0);
	ASSERT_EQ(getsockopt(self->fd, SOL_TLS, TLS_TX_ZEROCOPY_RO, &val, &len), 0);
	EXPECT_EQ(val, 1);
	check_file_send(_metadata, self->fd, self->cfd, false);
}

TEST_F_TIMEOUT(tls, splice_out_of_rx, 60)
{
	struct big_send bs = { .fd = self->fd, .len = 256 << 10 };
	uint8_t *want = malloc(bs.len), *got = malloc(bs.len);
	size_t have = 0;
	pid_t pid;
	int p[2];

	ASSERT_NE(want, NULL);
	ASSERT_NE(got, NULL);
	ASSERT_EQ(pipe(p), 0);
	t_fill(want, bs.len, 3);
	pid = t_spawn(big_sender, &bs);
	ASSERT_GT(pid, 0);
	while (have < bs.len) {
		ssize_t n = splice(self->cfd, NULL, p[1], NULL,
				   bs.len - have, 0);

		ASSERT_GT(n, 0);
		while (n > 0) {
			ssize_t m = read(p[0], got + have, (size_t)n);

			ASSERT_GT(m, 0);
			have += (size_t)m;
			n -= m;
		}
	}
	ASSERT_EQ(t_reap(pid), 0);
	ASSERT_MEMEQ(got, want, bs.len);
	close(p[0]);
	close(p[1]);
	free(want);
	free(got);
}

TEST_F(tls, io_uring_send_and_recv)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	uint8_t out[8000], in[8000];
	size_t have = 0;
	int ret;

	ret = io_uring_queue_init(4, &ring, 0);
	if (ret == -ENOSYS || ret == -EPERM) {
		char eb[24];

		SKIP(return, "io_uring unavailable (io_uring_setup: %s): "
		     "CONFIG_IO_URING or kernel.io_uring_disabled",
		     ktm_errno_name(ret, eb));
	}
	ASSERT_EQ(ret, 0);
	t_fill(out, sizeof(out), 11);
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_send(sqe, self->fd, out, sizeof(out), 0);
	ASSERT_EQ(io_uring_submit(&ring), 1);
	ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
	EXPECT_EQ(cqe->res, (int)sizeof(out));
	io_uring_cqe_seen(&ring, cqe);

	while (have < sizeof(in)) {
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_recv(sqe, self->cfd, in + have, sizeof(in) - have, 0);
		ASSERT_EQ(io_uring_submit(&ring), 1);
		ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
		ASSERT_GT(cqe->res, 0);
		have += (size_t)cqe->res;
		io_uring_cqe_seen(&ring, cqe);
	}
	ASSERT_MEMEQ(in, out, sizeof(out));
	io_uring_queue_exit(&ring);
}

TEST_F(tls, alert_is_a_control_record)
{
	static const uint8_t alert[2] = { 1, 0 };	/* warning, close_notify */
	struct ktm_ktls_rec rec = { 0 };
	uint8_t buf[64];
	ssize_t n;

	ASSERT_EQ(ktm_ktls_send_record(self->fd, KTM_KTLS_REC_ALERT, alert,
				       sizeof(alert), 0), 2);
	ASSERT_TRUE(t_wait_readable(self->cfd, 10000));
	/* Without a cmsg buffer the kernel will not hand out a control
	 * record: EIO, and the record stays queued. */
	EXPECT_EQ(recv(self->cfd, buf, sizeof(buf), 0), -1);
	EXPECT_EQ(errno, EIO);
	EXPECT_EQ(recv(self->cfd, buf, sizeof(buf), 0), -1);
	EXPECT_EQ(errno, EIO);
	n = ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec);
	ASSERT_EQ(n, 2);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_ALERT);
	EXPECT_MEMEQ(buf, alert, 2);
}

TEST_F(tls, data_and_control_records_do_not_mix)
{
	static const uint8_t hs[4] = { 1, 2, 3, 4 };
	struct ktm_ktls_rec rec = { 0 };
	uint8_t buf[64];

	ASSERT_EQ(t_send_all(self->fd, "hello", 5), 0);
	ASSERT_EQ(ktm_ktls_send_record(self->fd, KTM_KTLS_REC_HANDSHAKE, hs,
				       sizeof(hs), 0), 4);
	ASSERT_EQ(t_send_all(self->fd, "world", 5), 0);
	ASSERT_TRUE(t_wait_readable(self->cfd, 10000));
	usleep(100000);		/* let all three records arrive */

	ASSERT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec), 5);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_DATA);
	EXPECT_MEMEQ(buf, "hello", 5);
	ASSERT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec), 4);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_HANDSHAKE);
	EXPECT_MEMEQ(buf, hs, 4);
	ASSERT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec), 5);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_DATA);
	EXPECT_MEMEQ(buf, "world", 5);
}

/* Read one whole TLS record (header + body) from a plain TCP socket. */
static ssize_t t_read_raw_record(int fd, uint8_t *buf, size_t cap)
{
	size_t body;

	if (t_recv_all(fd, buf, 5))
		return -1;
	body = (size_t)buf[3] << 8 | buf[4];
	if (5 + body > cap || t_recv_all(fd, buf + 5, body))
		return -1;
	return (ssize_t)(5 + body);
}

/*
 * A userspace relay between the two ends: the sender's pair carries
 * ciphertext to a plain socket, the test copies records into a second
 * pair whose far end decrypts.  One record passes intact, the next has
 * one byte flipped.
 */
TEST_F(tls, tampered_record_is_ebadmsg)
{
	int a[2], b[2];
	uint8_t rec[512], buf[64];
	uint64_t errs;
	ssize_t n;

	ASSERT_EQ(ktm_net_tcp_pair(a), 0);
	ASSERT_EQ(ktm_net_tcp_pair(b), 0);
	ASSERT_EQ(ktm_ktls_ulp_attach(NULL, a[0]), 0);
	ASSERT_EQ(install(a[0], KTM_KTLS_TX, variant, KEY_A, 7), 0);
	ASSERT_EQ(ktm_ktls_ulp_attach(NULL, b[1]), 0);
	ASSERT_EQ(install(b[1], KTM_KTLS_RX, variant, KEY_A, 7), 0);

	ASSERT_EQ(t_send_all(a[0], "intact", 6), 0);
	n = t_read_raw_record(a[1], rec, sizeof(rec));
	ASSERT_GT(n, 6);
	EXPECT_EQ(rec[0], KTM_KTLS_REC_DATA);	/* outer type */
	ASSERT_EQ(t_send_all(b[0], rec, (size_t)n), 0);
	ASSERT_EQ(t_recv_all(b[1], buf, 6), 0);
	EXPECT_MEMEQ(buf, "intact", 6);

	errs = t_stat("TlsDecryptError");
	ASSERT_EQ(t_send_all(a[0], "flipped", 7), 0);
	n = t_read_raw_record(a[1], rec, sizeof(rec));
	ASSERT_GT(n, 7);
	rec[n / 2] ^= 0x01;
	ASSERT_EQ(t_send_all(b[0], rec, (size_t)n), 0);
	ASSERT_TRUE(t_wait_readable(b[1], 10000));
	EXPECT_EQ(recv(b[1], buf, sizeof(buf), 0), -1);
	EXPECT_EQ(errno, EBADMSG);
	EXPECT_EQ(t_stat("TlsDecryptError"), errs + 1);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

TEST_F(tls, rx_expect_no_pad_only_for_tls13)
{
	uint8_t out[3000], in[3000];
	int ret = ktm_ktls_rx_expect_no_pad(NULL, self->cfd, true);

	if (variant->version == TLS_1_2_VERSION) {
		EXPECT_EQ(ret, -EINVAL);
		return;
	}
	ASSERT_EQ(ret, 0);
	t_fill(out, sizeof(out), 12);
	ASSERT_EQ(t_send_all(self->fd, out, sizeof(out)), 0);
	ASSERT_EQ(t_recv_all(self->cfd, in, sizeof(in)), 0);
	ASSERT_MEMEQ(in, out, sizeof(out));
	if (geteuid() == 0) {
		struct ktm_ktls_diag d;

		ASSERT_EQ(ktm_ktls_diag_query(self->cfd, &d), 0);
		EXPECT_TRUE(d.rx_no_pad);
	}
}

TEST_F(tls, tls_info_says_software_both_ways)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(variant->cipher);
	struct ktm_ktls_diag d;

	if (geteuid() != 0)
		SKIP(return, "sock_diag ULP info needs CAP_NET_ADMIN: run as root");
	ASSERT_EQ(ktm_ktls_diag_query(self->fd, &d), 0);
	ASSERT_TRUE(d.has_ulp);
	EXPECT_STREQ(d.ulp, "tls");
	ASSERT_TRUE(d.has_tls);
	EXPECT_EQ(d.version, variant->version);
	EXPECT_EQ(d.cipher, row->kernel_type);
	EXPECT_EQ(d.txconf, TLS_CONF_SW);
	EXPECT_EQ(d.rxconf, TLS_CONF_SW);
	EXPECT_FALSE(d.zc_ro_tx);
}

TEST_F(tls, tls_stat_counters_move)
{
	uint64_t tx = t_stat("TlsTxSw"), rx = t_stat("TlsRxSw");
	uint64_t cur = t_stat("TlsCurrTxSw");
	int p[2];

	T_ULP_PAIR(p);
	ASSERT_EQ(install(p[0], KTM_KTLS_TX, variant, KEY_A, 3), 0);
	ASSERT_EQ(install(p[1], KTM_KTLS_RX, variant, KEY_A, 3), 0);
	EXPECT_EQ(t_stat("TlsTxSw"), tx + 1);
	EXPECT_EQ(t_stat("TlsRxSw"), rx + 1);
	EXPECT_EQ(t_stat("TlsCurrTxSw"), cur + 1);
	close(p[0]);
	close(p[1]);
	EXPECT_EQ(t_stat("TlsCurrTxSw"), cur);
}

/*
 * A second key on a live socket.  Before 6.14 the kernel says EBUSY for
 * both directions; from 6.14 TLS 1.3 rekeys (KeyUpdate, then the new TX
 * key; the receiver gets EKEYEXPIRED after the KeyUpdate until it installs
 * the new RX key), and TLS 1.2 still says EBUSY.
 */
TEST_F(tls, second_key_rekeys_or_is_ebusy)
{
	struct ktm_ktls_rec rec = { 0 };
	uint64_t txok, rxok, rxrecv;
	uint8_t buf[64];
	bool req;

	if (!t_kernel_can_rekey() || variant->version == TLS_1_2_VERSION) {
		EXPECT_EQ(install(self->fd, KTM_KTLS_TX, variant, KEY_A, 1), -EBUSY);
		EXPECT_EQ(install(self->cfd, KTM_KTLS_RX, variant, KEY_A, 1), -EBUSY);
		/* and the old keys still work */
		ASSERT_EQ(t_send_all(self->fd, "still", 5), 0);
		ASSERT_EQ(t_recv_all(self->cfd, buf, 5), 0);
		EXPECT_MEMEQ(buf, "still", 5);
		return;
	}

	txok = t_stat("TlsTxRekeyOk");
	rxok = t_stat("TlsRxRekeyOk");
	rxrecv = t_stat("TlsRxRekeyReceived");
	ASSERT_EQ(t_send_all(self->fd, "before", 6), 0);
	ASSERT_EQ(ktm_ktls_keyupdate_send(self->fd, false), 0);
	ASSERT_EQ(install(self->fd, KTM_KTLS_TX, variant, KEY_A, 1), 0);
	ASSERT_EQ(t_send_all(self->fd, "after", 5), 0);
	EXPECT_EQ(t_stat("TlsTxRekeyOk"), txok + 1);

	ASSERT_TRUE(t_wait_readable(self->cfd, 10000));
	usleep(100000);
	ASSERT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec), 6);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_DATA);
	EXPECT_MEMEQ(buf, "before", 6);
	ASSERT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec),
		  KTM_KTLS_KEYUPDATE_LEN);
	EXPECT_EQ(rec.type, KTM_KTLS_REC_HANDSHAKE);
	EXPECT_EQ(ktm_ktls_keyupdate_parse(buf, KTM_KTLS_KEYUPDATE_LEN, &req), 0);
	EXPECT_FALSE(req);
	EXPECT_EQ(ktm_ktls_recv_record(self->cfd, buf, sizeof(buf), 0, &rec),
		  -EKEYEXPIRED);
	ASSERT_EQ(install(self->cfd, KTM_KTLS_RX, variant, KEY_A, 1), 0);
	ASSERT_EQ(t_recv_all(self->cfd, buf, 5), 0);
	EXPECT_MEMEQ(buf, "after", 5);
	EXPECT_EQ(t_stat("TlsRxRekeyReceived"), rxrecv + 1);
	EXPECT_EQ(t_stat("TlsRxRekeyOk"), rxok + 1);
}

TEST_F(tls, probe_agrees_with_the_kernel)
{
	struct ktm_error *err = NULL;
	struct ktm_probe *p = ktm_probe_new(&err);
	const char *reason = NULL;

	ASSERT_NE(p, NULL);
	EXPECT_EQ(ktm_probe_ktls(p, NULL, NULL), KTM_SUPPORTED);
	EXPECT_EQ(ktm_probe_cipher(p, (enum ktm_tls_version)variant->version,
				   variant->cipher, &reason), KTM_SUPPORTED);
	EXPECT_STREQ(reason, "send and receive");
	/* the library tries a second key on a throwaway pair; the test
	 * knows the answer from the kernel version */
	EXPECT_EQ(ktm_probe_rekey(p, NULL),
		  t_kernel_can_rekey() ? KTM_SUPPORTED : KTM_UNSUPPORTED);
	ktm_probe_free(p);
}

TEST_HARNESS_MAIN
