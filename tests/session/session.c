// SPDX-License-Identifier: MIT
/*
 * Sessions end to end on loopback: handshake, verification, the switch
 * into kernel TLS (or userspace TLS where this kernel has none), policies,
 * status, every failure of the error table, checks, fd hand-over.
 *
 * Runs natively (no kernel TLS: userspace path, require names the kernel's
 * reason) and in the QEMU guest tier (kernel path, TLS_INFO checked).  The
 * expected path follows what the probe says of this kernel; nothing skips.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <pthread.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "internal.h"
#include "ktls.h"
#include "peer.h"
#include "pki.h"
#include "proxy.h"	/* tools/: the proxy accept loop */

/* ---- helpers ------------------------------------------------------------ */

/* Connect, or record the failure into @o.  The session or NULL. */
static struct ktm_session *t_connect(const struct ktm_config *cfg,
				     const char *host, const char *port,
				     struct t_outcome *o)
{
	struct ktm_error *err = NULL;
	struct ktm_session *s = ktm_session_connect(cfg, host, port, &err);

	memset(o, 0, sizeof(*o));
	t_outcome_set(o, s, err);
	if (err)
		printf("# client: %s%s%s\n", o->msg, o->hint[0] ? " — hint: " : "",
		       o->hint);
	ktm_error_free(err);
	return s;
}

/* Send @len pattern bytes, read the echo back, compare.  0 or -1. */
static int t_echo_check(struct ktm_session *s, size_t len)
{
	struct ktm_error *err = NULL;
	uint8_t *out = malloc(len), *in = malloc(len);
	size_t have = 0, i;
	int ret = -1;

	if (!out || !in)
		goto out;
	for (i = 0; i < len; i++)
		out[i] = (uint8_t)(i * 7 + (i >> 8));
	if (!ktm_session_send(s, out, len, &err))
		goto out;
	while (have < len) {
		ssize_t n = ktm_session_recv(s, in + have, len - have, &err);

		if (n <= 0)
			goto out;
		have += (size_t)n;
	}
	ret = memcmp(in, out, len) ? -1 : 0;
out:
	if (err)
		printf("# echo: %s\n", ktm_error_message(err));
	ktm_error_free(err);
	free(out);
	free(in);
	return ret;
}

/* close_notify, then wait for the peer's. */
static void t_finish(struct ktm_session *s)
{
	char buf[64];

	ktm_session_shutdown(s, NULL);
	while (ktm_session_recv(s, buf, sizeof(buf), NULL) > 0)
		;
}

static int expected_path(void)
{
	return t_kernel_has_ktls() ? KTM_PATH_KERNEL_SW : KTM_PATH_USERSPACE;
}

/* ---- the happy paths, per TLS version x cipher ----------------------------- */

FIXTURE(session)
{
	char dir[64];
	struct t_server srv;
	struct ktm_config *ccfg, *scfg;
};

FIXTURE_VARIANT(session)
{
	enum ktm_tls_version version;
	enum ktm_cipher cipher;
};

#define KTM_CIPHER(name_, K, label_)				\
	FIXTURE_VARIANT_ADD(session, 12_##name_) {			\
		.version = KTM_TLS_1_2, .cipher = KTM_CIPHER_##K,	\
	};								\
	FIXTURE_VARIANT_ADD(session, 13_##name_) {			\
		.version = KTM_TLS_1_3, .cipher = KTM_CIPHER_##K,	\
	};
#include "ciphers.def"
#undef KTM_CIPHER

static struct ktm_config *variant_config(enum ktm_endpoint ep, const char *dir,
					 enum ktm_ktls_policy policy,
					 const FIXTURE_VARIANT(session) *v)
{
	struct ktm_config *cfg = t_config(ep, dir, policy);

	if (cfg && (!ktm_config_set_versions(cfg, v->version, v->version, NULL) ||
		    !ktm_config_set_ciphers(cfg, &v->cipher, 1, NULL))) {
		ktm_config_free(cfg);
		return NULL;
	}
	return cfg;
}

FIXTURE_SETUP(session)
{
	struct t_pki_opts o = { .server_dns = { "localhost" },
				.server_ip = { "127.0.0.1" } };

	self->srv.lfd = -1;
	ASSERT_EQ(t_pki_make_temp(self->dir, sizeof(self->dir), &o), 0);
	ASSERT_EQ(t_server_listen(&self->srv), 0);
}

FIXTURE_TEARDOWN(session)
{
	t_server_close(&self->srv);
	ktm_config_free(self->ccfg);
	ktm_config_free(self->scfg);
	t_pki_remove(self->dir);
}

static void start_pair(struct t_meta *_metadata, FIXTURE_DATA(session) *self,
		       const FIXTURE_VARIANT(session) *variant,
		       enum ktm_ktls_policy cpol, enum ktm_ktls_policy spol,
		       enum t_mode mode)
{
	self->ccfg = variant_config(KTM_ENDPOINT_CLIENT, self->dir, cpol, variant);
	self->scfg = variant_config(KTM_ENDPOINT_SERVER, self->dir, spol, variant);
	ASSERT_NE(self->ccfg, NULL);
	ASSERT_NE(self->scfg, NULL);
	ASSERT_EQ(t_server_start(&self->srv, self->scfg, mode), 0);
}

TEST_F_TIMEOUT(session, prefer_round_trip_both_ways, 60)
{
	struct t_outcome c;
	struct ktm_session *s;
	int path = expected_path();

	start_pair(_metadata, self, variant, KTM_KTLS_PREFER, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	EXPECT_EQ(c.version, variant->version);
	EXPECT_EQ(c.cipher, variant->cipher);
	EXPECT_EQ(c.path_tx, path);
	EXPECT_EQ(c.path_rx, path);
	EXPECT_STRSTR(c.subject, "CN=localhost");
	EXPECT_STRSTR(c.sans, "DNS:localhost");
	if (path == KTM_PATH_USERSPACE)
		EXPECT_STRSTR(c.fallback, "TCP_ULP \"tls\"");
	else
		EXPECT_EQ(ktm_session_fallback_reason(s), NULL);
	EXPECT_EQ(strlen(ktm_session_peer_cert_sha256(s)), 64);
	EXPECT_EQ(strlen(ktm_session_peer_spki_sha256(s)), 64);

	ASSERT_EQ(t_echo_check(s, 100000), 0);
	ASSERT_EQ(t_echo_check(s, 1), 0);
	EXPECT_EQ(ktm_session_bytes(s, KTM_DIR_TX), 100001);
	EXPECT_EQ(ktm_session_bytes(s, KTM_DIR_RX), 100001);
	EXPECT_GE(ktm_session_records(s, KTM_DIR_TX), 8);
	EXPECT_GE(ktm_session_records(s, KTM_DIR_RX), 7);

	EXPECT_FALSE(ktm_session_rx_no_pad(s));	/* not asked for */
	if (path != KTM_PATH_USERSPACE && geteuid() == 0) {
		struct ktm_ktls_diag d;

		ASSERT_EQ(ktm_ktls_diag_query(ktm_session_fd(s), &d), 0);
		EXPECT_TRUE(d.has_tls);
		EXPECT_EQ(d.version, variant->version);
		EXPECT_EQ(d.txconf, TLS_CONF_SW);
		EXPECT_EQ(d.rxconf, TLS_CONF_SW);
	}
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
	EXPECT_TRUE(self->srv.out->ok);
	EXPECT_EQ(self->srv.out->path_tx, path);
	EXPECT_EQ(self->srv.out->path_rx, path);
	EXPECT_STRSTR(self->srv.out->subject, "CN=" T_PKI_CLIENT_CN);
	EXPECT_EQ(self->srv.out->bytes_rx, 100001);
	EXPECT_STREQ(self->srv.out->msg, "");
}

/* A reader that takes one byte at a time still sees the peer's
 * close_notify as the clean end of the stream: on the kernel path a
 * short read must not split the alert record (the kernel drops what does
 * not fit). */
TEST_F_TIMEOUT(session, one_byte_reads_end_cleanly_at_close_notify, 60)
{
	struct ktm_error *err = NULL;
	struct t_outcome c;
	struct ktm_session *s;
	uint8_t byte;
	ssize_t n;

	start_pair(_metadata, self, variant, KTM_KTLS_PREFER, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	ASSERT_EQ(t_echo_check(s, 3), 0);
	ASSERT_TRUE(ktm_session_shutdown(s, &err));
	/* the echo server answers our close_notify with its own */
	n = ktm_session_recv(s, &byte, 1, &err);
	if (err)
		TH_LOG("recv: %s", ktm_error_message(err));
	EXPECT_EQ(n, 0);
	ktm_error_free(err);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
	EXPECT_TRUE(self->srv.out->ok);
}

TEST_F_TIMEOUT(session, require_takes_the_kernel_or_names_why, 60)
{
	struct t_outcome c;
	struct ktm_session *s;

	start_pair(_metadata, self, variant, KTM_KTLS_REQUIRE, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	if (t_kernel_has_ktls()) {
		ASSERT_NE(s, NULL);
		EXPECT_EQ(c.path_tx, KTM_PATH_KERNEL_SW);
		ASSERT_EQ(t_echo_check(s, 5000), 0);
		t_finish(s);
		ktm_session_free(s);
	} else {
		ASSERT_EQ(s, NULL);
		EXPECT_EQ(c.cls, KTM_ERR_KTLS_UNSUPPORTED);
		EXPECT_EQ(c.err, ENOENT);
		EXPECT_STREQ(c.msg, "kernel TLS is not available (TCP_ULP \"tls\") (ENOENT)");
		EXPECT_STRSTR(c.hint, "modprobe tls");
	}
	t_server_wait(&self->srv, 20);
}

TEST_F_TIMEOUT(session, rx_no_pad_applies_to_tls13_kernel_receive, 60)
{
	struct t_outcome c;
	struct ktm_session *s;
	bool want = t_kernel_has_ktls() && variant->version == KTM_TLS_1_3;

	self->ccfg = variant_config(KTM_ENDPOINT_CLIENT, self->dir,
				    KTM_KTLS_PREFER, variant);
	self->scfg = variant_config(KTM_ENDPOINT_SERVER, self->dir,
				    KTM_KTLS_PREFER, variant);
	ASSERT_NE(self->ccfg, NULL);
	ASSERT_NE(self->scfg, NULL);
	ktm_config_set_rx_no_pad(self->ccfg, true);
	ASSERT_EQ(t_server_start(&self->srv, self->scfg, T_ECHO), 0);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	EXPECT_EQ(ktm_session_rx_no_pad(s), want);
	ASSERT_EQ(t_echo_check(s, 70000), 0);
	if (want && geteuid() == 0) {
		struct ktm_ktls_diag d;

		ASSERT_EQ(ktm_ktls_diag_query(ktm_session_fd(s), &d), 0);
		EXPECT_TRUE(d.rx_no_pad);
	}
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
}

/* A KeyUpdate mid-session where the data path can (TLS 1.3: userspace
 * always, the kernel from 6.14); the record count spans both keys. */
TEST_F_TIMEOUT(session, rekey_in_place_or_refused_and_counts_go_on, 60)
{
	struct ktm_error *err = NULL;
	struct t_outcome c;
	struct ktm_session *s;
	uint64_t before;

	start_pair(_metadata, self, variant, KTM_KTLS_PREFER, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	ASSERT_EQ(t_echo_check(s, 40000), 0);
	before = ktm_session_records(s, KTM_DIR_TX);
	EXPECT_EQ(ktm_session_key_records(s, KTM_DIR_TX), before);
	/* the oracle, from the tier and the booted kernel's version */
	EXPECT_EQ(ktm_session_can_rekey(s), t_session_can_rekey(variant->version));
	if (!ktm_session_can_rekey(s)) {
		EXPECT_FALSE(ktm_session_rekey(s, &err));
		ASSERT_NE(err, NULL);
		EXPECT_EQ(ktm_error_class(err), KTM_ERR_KTLS_UNSUPPORTED);
		ktm_error_free(err);
	} else {
		ASSERT_TRUE(ktm_session_rekey(s, &err));
		EXPECT_EQ(ktm_session_rekeys(s, KTM_DIR_TX), 1);
		ASSERT_EQ(t_echo_check(s, 40000), 0);
		EXPECT_GE(ktm_session_records(s, KTM_DIR_TX), before + 3);
		EXPECT_LT(ktm_session_key_records(s, KTM_DIR_TX),
			  ktm_session_records(s, KTM_DIR_TX));
	}
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
}

TEST_F_TIMEOUT(session, off_stays_in_userspace, 60)
{
	struct t_outcome c;
	struct ktm_session *s;

	start_pair(_metadata, self, variant, KTM_KTLS_OFF, KTM_KTLS_OFF, T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	EXPECT_EQ(c.path_tx, KTM_PATH_USERSPACE);
	EXPECT_STRSTR(c.fallback, "--ktls=off");
	ASSERT_EQ(t_echo_check(s, 70000), 0);
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
	EXPECT_EQ(self->srv.out->path_rx, KTM_PATH_USERSPACE);
}

/*
 * The server stays in OpenSSL and writes at once after its handshake; the
 * client switches to the kernel (where it can) while those bytes are in
 * flight.  They must arrive intact and before everything else.
 */
TEST_F_TIMEOUT(session, bytes_written_through_openssl_before_switch_arrive, 60)
{
	struct ktm_error *err = NULL;
	struct t_outcome c;
	struct ktm_session *s;
	char buf[16];
	size_t have = 0;

	start_pair(_metadata, self, variant, KTM_KTLS_PREFER, KTM_KTLS_OFF,
		   T_EARLY);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	EXPECT_EQ(c.path_rx, expected_path());
	while (have < 5) {
		ssize_t n = ktm_session_recv(s, buf + have, 5 - have, &err);

		ASSERT_GT(n, 0);
		have += (size_t)n;
	}
	EXPECT_MEMEQ(buf, "early", 5);
	ASSERT_EQ(t_echo_check(s, 30000), 0);
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
	EXPECT_EQ(self->srv.out->path_tx, KTM_PATH_USERSPACE);
}

/* And the other way: a userspace client writes the moment its handshake
 * ends, the server (kernel where it can) echoes. */
TEST_F_TIMEOUT(session, userspace_peer_talks_to_kernel_peer, 60)
{
	struct t_outcome c;
	struct ktm_session *s;

	start_pair(_metadata, self, variant, KTM_KTLS_OFF, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	ASSERT_EQ(t_echo_check(s, 50000), 0);
	t_finish(s);
	ktm_session_free(s);
	ASSERT_EQ(t_server_wait(&self->srv, 20), 0);
	EXPECT_EQ(self->srv.out->path_rx, expected_path());
	EXPECT_EQ(self->srv.out->bytes_rx, 50000);
}

/* A ready kernel-TLS socket handed to another process keeps working; a
 * userspace session refuses to be handed over. */
TEST_F_TIMEOUT(session, detach_and_pass_the_socket, 60)
{
	struct ktm_error *err = NULL;
	struct t_outcome c;
	struct ktm_session *s;
	int sp[2], fd;
	pid_t pid;

	start_pair(_metadata, self, variant, KTM_KTLS_PREFER, KTM_KTLS_PREFER,
		   T_ECHO);
	s = t_connect(self->ccfg, "localhost", self->srv.port, &c);
	ASSERT_NE(s, NULL);
	if (c.path_tx == KTM_PATH_USERSPACE) {
		EXPECT_EQ(ktm_session_detach(s, &err), -1);
		ASSERT_NE(err, NULL);
		EXPECT_STRSTR(ktm_error_message(err), "runs in userspace TLS");
		ktm_error_free(err);
		t_finish(s);
		ktm_session_free(s);
		return;
	}
	fd = ktm_session_detach(s, &err);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	pid = fork();
	if (pid == 0) {
		/* the "QEMU": takes the fd, writes plaintext, reads the echo */
		char name[32], buf[5];
		int got = ktm_fd_recv(sp[1], name, sizeof(name), NULL);

		_exit(got < 0 || strcmp(name, "migfd") ||
		      send(got, "plain", 5, 0) != 5 ||
		      recv(got, buf, 5, MSG_WAITALL) != 5 || memcmp(buf, "plain", 5));
	}
	ASSERT_TRUE(ktm_fd_send(sp[0], fd, "migfd", &err));
	close(fd);
	ASSERT_EQ(waitpid(pid, &fd, 0), pid);
	EXPECT_TRUE(WIFEXITED(fd) && WEXITSTATUS(fd) == 0);
	close(sp[0]);
	close(sp[1]);
}

/* ---- failures: one test per row of the error table ------------------------- */

struct pair {
	char dir[64];
	struct t_server srv;
	struct ktm_config *ccfg, *scfg;
	struct t_outcome c;
	struct ktm_session *s;
};

static int pair_start(struct pair *p, const struct t_pki_opts *o,
		      enum t_mode mode)
{
	memset(p, 0, sizeof(*p));
	p->srv.lfd = -1;
	if (t_pki_make_temp(p->dir, sizeof(p->dir), o) || t_server_listen(&p->srv))
		return -1;
	p->ccfg = t_config(KTM_ENDPOINT_CLIENT, p->dir, KTM_KTLS_PREFER);
	p->scfg = t_config(KTM_ENDPOINT_SERVER, p->dir, KTM_KTLS_PREFER);
	if (!p->ccfg || !p->scfg)
		return -1;
	return mode == T_NONE ? 0 : t_server_start(&p->srv, p->scfg, mode);
}

static void pair_end(struct pair *p)
{
	ktm_session_free(p->s);
	t_server_close(&p->srv);
	ktm_config_free(p->ccfg);
	ktm_config_free(p->scfg);
	t_pki_remove(p->dir);
}

/* Run a handshake where the client must fail verifying the server. */
static void client_rejects(struct t_meta *_metadata, enum t_pki_flaw flaw,
			   const char *want, const char *hint)
{
	struct t_pki_opts o = { .flaw = flaw, .with_crl = flaw == T_PKI_REVOKED };
	char expect[128];
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	snprintf(expect, sizeof(expect), "server certificate of localhost:%s %s",
		 p.srv.port, want);
	EXPECT_STRSTR(p.c.msg, expect);
	if (hint)
		EXPECT_STRSTR(p.c.hint, hint);
	t_server_wait(&p.srv, 20);
	/* the server saw the client's alert */
	EXPECT_FALSE(p.srv.out->ok);
	EXPECT_NE(p.srv.out->msg[0], '\0');
	pair_end(&p);
}

TEST(unknown_ca)
{
	client_rejects(_metadata, T_PKI_UNKNOWN_CA, "is not signed by a trusted CA",
		       "ca-cert.pem must hold the CA");
}

TEST(expired_certificate)
{
	client_rejects(_metadata, T_PKI_EXPIRED, "has expired (not after ", "renew");
}

TEST(not_yet_valid_certificate)
{
	client_rejects(_metadata, T_PKI_NOT_YET_VALID,
		       "is not valid yet (not before ", "clocks");
}

TEST(revoked_by_crl)
{
	client_rejects(_metadata, T_PKI_REVOKED, "has been revoked", "ca-crl.pem");
}

/* ---- strict verification: chains, CRLs, names ------------------------------ */

/* A session over the set @o: refused by the client with @want (and the
 * server saw the failure), or, when @want is NULL, an echo round trip. */
static void chain_case(struct t_meta *_metadata, const struct t_pki_opts *o,
		       const char *host, const char *want)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, o, want ? T_ACCEPT : T_ECHO), 0);
	if (host)
		ASSERT_TRUE(ktm_config_set_hostname(p.ccfg, host, NULL));
	p.s = t_connect(p.ccfg, "127.0.0.1", p.srv.port, &p.c);
	if (!want) {
		ASSERT_NE(p.s, NULL);
		EXPECT_EQ(t_echo_check(p.s, 1000), 0);
		t_finish(p.s);
		EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
		EXPECT_TRUE(p.srv.out->ok);
	} else {
		EXPECT_EQ(p.s, NULL);
		EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
		EXPECT_STRSTR(p.c.msg, want);
		t_server_wait(&p.srv, 20);
		EXPECT_FALSE(p.srv.out->ok);
	}
	pair_end(&p);
}

TEST(chain_through_an_intermediate_in_the_cert_files)
{
	struct t_pki_opts o = { .intermediate = true, .with_crl = true };

	chain_case(_metadata, &o, "localhost", NULL);
}

TEST(chain_through_an_intermediate_in_a_two_cert_ca_file)
{
	struct t_pki_opts o = { .intermediate = true, .intermediate_in_ca = true,
				.with_crl = true };

	chain_case(_metadata, &o, "localhost", NULL);
}

static void t_read_error(struct ktm_session *s, char *msg, size_t len);

/* The serial of certificate @index of @dir/@file, as the CRL lists it,
 * read with OpenSSL here (hex, upper case). */
static void t_serial(const char *dir, const char *file, int index, char *buf,
		     size_t len)
{
	char path[128];
	X509 *x = NULL;
	BIGNUM *bn;
	char *h;
	FILE *f;
	int i;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "r");
	for (i = 0; f && i <= index; i++) {
		X509_free(x);
		x = PEM_read_X509(f, NULL, NULL, NULL);
	}
	if (f)
		fclose(f);
	bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
	h = bn ? BN_bn2hex(bn) : NULL;
	snprintf(buf, len, "%s", h ? h : "?");
	OPENSSL_free(h);
	BN_free(bn);
	X509_free(x);
}

/* Revoked: the message names the subject and serial, the hint the CRL
 * file; @index is the revoked one's place in server-cert.pem. */
static void revoked_case(struct t_meta *_metadata, const struct t_pki_opts *o,
			 int index, const char *subject)
{
	char want[300], serial[80], crl[128];
	struct pair p;

	ASSERT_EQ(pair_start(&p, o, T_ACCEPT), 0);
	t_serial(p.dir, T_PKI_SERVER_CERT, index, serial, sizeof(serial));
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	snprintf(want, sizeof(want), "has been revoked (serial %s): %s", serial,
		 subject);
	EXPECT_STRSTR(p.c.msg, want);
	snprintf(crl, sizeof(crl), "%s/" T_PKI_CA_CRL " lists it", p.dir);
	EXPECT_STRSTR(p.c.hint, crl);
	t_server_wait(&p.srv, 20);
	EXPECT_STRSTR(p.srv.out->msg, "rejected our certificate as revoked");
	pair_end(&p);
}

TEST(leaf_under_a_revoked_intermediate_is_refused)
{
	struct t_pki_opts o = { .flaw = T_PKI_REVOKED_INTERMEDIATE };

	revoked_case(_metadata, &o, 1, "CN=" T_PKI_INT_CN);
}

TEST(revoked_leaf_found_in_the_second_crl)
{
	struct t_pki_opts o = { .flaw = T_PKI_REVOKED, .intermediate = true };

	revoked_case(_metadata, &o, 0, "CN=localhost");
}

TEST(untrusted_chain_names_the_issuer_and_the_ca_file_on_both_sides)
{
	struct t_pki_opts o = { .flaw = T_PKI_UNKNOWN_CA };
	char want[200];
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_STRSTR(p.c.msg, "is not signed by a trusted CA: CN=localhost "
			       "(issuer CN=ktm-test-foreign-ca)");
	snprintf(want, sizeof(want), "%s/" T_PKI_CA_CERT " must hold the CA that "
		 "issued it: CN=ktm-test-foreign-ca", p.dir);
	EXPECT_STRSTR(p.c.hint, want);
	t_server_wait(&p.srv, 20);
	/* the server, told by the alert, names its own certificate's CA */
	EXPECT_STRSTR(p.srv.out->msg, "does not trust the CA of our certificate");
	EXPECT_STRSTR(p.srv.out->hint, "issued our certificate");
	EXPECT_STRSTR(p.srv.out->hint, ": CN=ktm-test-foreign-ca");
	pair_end(&p);
}

TEST(client_rejected_for_its_ca_is_named_by_its_issuer)
{
	struct t_pki_opts o = { .flaw = T_PKI_CLIENT_UNKNOWN_CA };
	char msg[1100];
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	if (p.s)
		t_read_error(p.s, msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "%s — hint: %s", p.c.msg, p.c.hint);
	EXPECT_STRSTR(msg, "does not trust the CA of our certificate");
	EXPECT_STRSTR(msg, ": CN=ktm-test-foreign-ca");
	t_server_wait(&p.srv, 20);
	EXPECT_STRSTR(p.srv.out->msg, "client certificate of 127.0.0.1:");
	EXPECT_STRSTR(p.srv.out->msg, "is not signed by a trusted CA: CN="
				      T_PKI_CLIENT_CN " (issuer CN=ktm-test-foreign-ca)");
	pair_end(&p);
}

/* Replace the server's certificate and key in @dir with a self-signed one
 * whose only SANs are a 1-byte iPAddress and a DNS name holding a newline
 * and a comma (what an attacker sends before any trust decision). */
static int t_hostile_server_cert(const char *dir)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	ASN1_OCTET_STRING *ip = ASN1_OCTET_STRING_new();
	ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
	GENERAL_NAME *g1 = GENERAL_NAME_new(), *g2 = GENERAL_NAME_new();
	X509 *x = X509_new();
	char path[128];
	FILE *f;
	int ok;

	ok = k && names && ip && dns && g1 && g2 && x &&
	     ASN1_STRING_set(ip, "\x7f", 1) &&
	     ASN1_STRING_set(dns, "a.example\nKTM_DATA_PATH=kernel, DNS:b", -1);
	if (ok) {
		GENERAL_NAME_set0_value(g1, GEN_IPADD, ip);
		GENERAL_NAME_set0_value(g2, GEN_DNS, dns);
		ip = NULL, dns = NULL;
		ok = sk_GENERAL_NAME_push(names, g1) && (g1 = NULL, 1) &&
		     sk_GENERAL_NAME_push(names, g2) && (g2 = NULL, 1);
	}
	ok = ok && X509_set_version(x, X509_VERSION_3) &&
	     ASN1_INTEGER_set(X509_get_serialNumber(x), 99) &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
	     X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
	     X509_set_pubkey(x, k) &&
	     X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName,
					MBSTRING_ASC, (const unsigned char *)"evil",
					-1, -1, 0) &&
	     X509_set_issuer_name(x, X509_get_subject_name(x)) &&
	     X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0) == 1 &&
	     X509_sign(x, k, EVP_sha256());
	snprintf(path, sizeof(path), "%s/" T_PKI_SERVER_CERT, dir);
	f = ok ? fopen(path, "w") : NULL;
	ok = f && PEM_write_X509(f, x);
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/" T_PKI_SERVER_KEY, dir);
	f = ok ? fopen(path, "w") : NULL;
	ok = f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	if (f)
		fclose(f);
	chmod(path, 0600);
	GENERAL_NAME_free(g1);
	GENERAL_NAME_free(g2);
	ASN1_OCTET_STRING_free(ip);
	ASN1_IA5STRING_free(dns);
	GENERAL_NAMES_free(names);
	X509_free(x);
	EVP_PKEY_free(k);
	return ok ? 0 : -1;
}

TEST(hostile_self_signed_server_is_refused_without_reading_past_its_sans)
{
	struct pair p;

	memset(&p, 0, sizeof(p));
	p.srv.lfd = -1;
	ASSERT_EQ(t_pki_make_temp(p.dir, sizeof(p.dir), NULL), 0);
	ASSERT_EQ(t_hostile_server_cert(p.dir), 0);
	ASSERT_EQ(t_server_listen(&p.srv), 0);
	p.ccfg = t_config(KTM_ENDPOINT_CLIENT, p.dir, KTM_KTLS_PREFER);
	p.scfg = t_config(KTM_ENDPOINT_SERVER, p.dir, KTM_KTLS_PREFER);
	ASSERT_NE(p.scfg, NULL);
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ACCEPT), 0);
	/* the 1-byte iPAddress went through verify_cb (ASan: no over-read) */
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.c.msg, "is self-signed and not trusted: CN=evil");
	t_server_wait(&p.srv, 20);
	pair_end(&p);
}

TEST(partial_wildcard_never_matches)
{
	struct t_pki_opts o = { .server_dns = { "dst*.example" } };

	chain_case(_metadata, &o, "dst7.example",
		   "does not match expected host 'dst7.example'");
}

TEST(full_wildcard_matches_one_label)
{
	struct t_pki_opts o = { .server_dns = { "*.dst.example" } };

	chain_case(_metadata, &o, "m7.dst.example", NULL);
}

TEST(common_name_is_ignored_when_the_cert_has_sans)
{
	/* CN=localhost with only an IP SAN: OpenSSL alone would take the CN */
	struct t_pki_opts o = { .server_cn = "localhost",
				.server_ip = { "10.9.9.9" } };

	chain_case(_metadata, &o, "localhost",
		   "does not match expected host 'localhost'");
}

/* ---- authorization: the allow-list ----------------------------------------- */

/* Read until the session ends; the error message (or "") into @msg. */
static void t_read_error(struct ktm_session *s, char *msg, size_t len)
{
	struct ktm_error *err = NULL;
	char buf[256];
	ssize_t n;

	msg[0] = '\0';
	/* read only: writing first would turn the alert into a reset */
	while ((n = ktm_session_recv(s, buf, sizeof(buf), &err)) > 0)
		;
	if (err)
		snprintf(msg, len, "%s — hint: %s", ktm_error_message(err),
			 ktm_error_hint(err) ? ktm_error_hint(err) : "");
	ktm_error_free(err);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* The admitted case: start the echo server, connect, echo, finish; both
 * ends must succeed. */
static void pair_echo_ok(struct t_meta *_metadata, struct pair *p)
{
	ASSERT_EQ(t_server_start(&p->srv, p->scfg, T_ECHO), 0);
	p->s = t_connect(p->ccfg, "localhost", p->srv.port, &p->c);
	ASSERT_NE(p->s, NULL);
	EXPECT_EQ(t_echo_check(p->s, 100), 0);
	t_finish(p->s);
	EXPECT_EQ(t_server_wait(&p->srv, 20), 0);
	EXPECT_TRUE(p->srv.out->ok);
}

TEST(allow_list_admits_an_exact_subject_and_a_glob_from_a_file)
{
	char file[128];
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	snprintf(file, sizeof(file), "%s/allow", p.dir);
	write_file(file, "# the sources\n\n  dn-glob:CN=ktm-test-*  \n");
	ASSERT_TRUE(ktm_config_load_allow_file(p.scfg, file, NULL));
	ASSERT_TRUE(ktm_config_add_allow(p.ccfg, "dn:CN=localhost", NULL));
	pair_echo_ok(_metadata, &p);
	pair_end(&p);
}

TEST(allow_list_admits_by_san_and_by_spki)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	ASSERT_TRUE(ktm_config_add_allow(p.scfg, "dns:KTM-TEST-CLIENT", NULL));
	ASSERT_TRUE(ktm_config_add_allow(p.ccfg, "ip:10.1.2.3", NULL));
	ASSERT_TRUE(ktm_config_add_allow(p.ccfg, "dns:localhost", NULL));
	pair_echo_ok(_metadata, &p);
	pair_end(&p);
}

TEST(same_ca_client_outside_the_allow_list_is_refused_on_both_sides)
{
	char file[128], want[400], msg[1100];
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	snprintf(file, sizeof(file), "%s/allow", p.dir);
	write_file(file, "dn:CN=src-01.example\nspki:"
		   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
	ASSERT_TRUE(ktm_config_load_allow_file(p.scfg, file, NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	/* TLS 1.3: the client's handshake ends before the server's verdict,
	 * which arrives as an alert at the first read */
	if (p.s) {
		t_read_error(p.s, msg, sizeof(msg));
	} else {
		snprintf(msg, sizeof(msg), "%s — hint: %s", p.c.msg, p.c.hint);
	}
	printf("# client: %s\n", msg);
	EXPECT_STRSTR(msg, "rejected our certificate (bad certificate)");
	EXPECT_STRSTR(msg, "allow-list");
	t_server_wait(&p.srv, 20);
	EXPECT_FALSE(p.srv.out->ok);
	EXPECT_EQ(p.srv.out->bytes_rx, 0);
	snprintf(want, sizeof(want), "is not allowed by the allow-list %s (2 rules): "
		 "subject CN=" T_PKI_CLIENT_CN ", names DNS:" T_PKI_CLIENT_CN, file);
	EXPECT_STRSTR(p.srv.out->msg, "client 127.0.0.1:");
	EXPECT_STRSTR(p.srv.out->msg, want);
	EXPECT_STRSTR(p.srv.out->hint, "dn:CN=" T_PKI_CLIENT_CN);
	pair_end(&p);
}

TEST(server_outside_the_clients_allow_list_is_refused)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_ACCEPT), 0);
	ASSERT_TRUE(ktm_config_add_allow(p.ccfg, "dn-glob:CN=dst-*.example", NULL));
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.c.msg, "is not allowed by the allow-list of --allow rules "
			       "(1 rule): subject CN=localhost, names DNS:localhost");
	t_server_wait(&p.srv, 20);
	EXPECT_FALSE(p.srv.out->ok);
	EXPECT_STRSTR(p.srv.out->msg, "rejected our certificate (bad certificate)");
	pair_end(&p);
}

TEST(allow_rules_and_files_that_are_wrong_are_named)
{
	struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	struct ktm_error *err = NULL;
	char dir[] = "/tmp/ktm-allow-XXXXXX", file[128], desc[256];

	ASSERT_NE(mkdtemp(dir), NULL);
	EXPECT_FALSE(ktm_config_add_allow(cfg, "cn:foo", &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "allow rule 'cn:foo' is not one of dn:");
	ktm_error_free(err);
	err = NULL;
	EXPECT_FALSE(ktm_config_add_allow(cfg, "ip:10.0.0", &err));
	ktm_error_free(err);
	err = NULL;
	snprintf(file, sizeof(file), "%s/allow", dir);
	write_file(file, "# nothing\n");
	EXPECT_FALSE(ktm_config_load_allow_file(cfg, file, &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "holds no rule");
	ktm_error_free(err);
	err = NULL;
	write_file(file, "dns:a.example\nspki:abc\n");
	EXPECT_FALSE(ktm_config_load_allow_file(cfg, file, &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "allow rule 'spki:abc' in ");
	EXPECT_STRSTR(ktm_error_message(err), "/allow:2 is not one of");
	ktm_error_free(err);
	ktm_config_authz(cfg, desc, sizeof(desc));
	EXPECT_STRSTR(desc, "(no allow-list)");
	unlink(file);
	rmdir(dir);
	ktm_config_free(cfg);
}

/* ---- the proxy: allow-list and the source's unix socket -------------------- */

struct t_proxy {
	struct ktm_proxy *p;
	pthread_t thread;
	unsigned int max;
	int failed;
	unsigned int nreports;
	char msg[4][700];
	unsigned int rekeys_tx;
	uint64_t records_tx;
};

static void t_proxy_report(const struct ktm_proxy_conn *conn,
			   const struct ktm_error *err, void *opaque)
{
	struct t_proxy *tp = opaque;

	if (ktm_proxy_conn_session(conn)) {
		tp->rekeys_tx = ktm_session_rekeys(ktm_proxy_conn_session(conn),
						   KTM_DIR_TX);
		tp->records_tx = ktm_session_records(ktm_proxy_conn_session(conn),
						     KTM_DIR_TX);
	}
	if (tp->nreports < 4)
		snprintf(tp->msg[tp->nreports], sizeof(tp->msg[0]), "%s — hint: %s",
			 err ? ktm_error_message(err) : "ok",
			 err && ktm_error_hint(err) ? ktm_error_hint(err) : "");
	tp->nreports++;
}

static void *t_proxy_main(void *arg)
{
	struct t_proxy *tp = arg;

	tp->failed = ktm_proxy_run(tp->p, tp->max, NULL);
	return NULL;
}

static int t_proxy_start(struct t_proxy *tp, const struct ktm_config *cfg,
			 const char *local, const char *remote, unsigned int max)
{
	memset(tp, 0, sizeof(*tp));
	tp->max = max;
	tp->p = ktm_proxy_new(cfg, local, remote, NULL);
	if (!tp->p)
		return -1;
	ktm_proxy_set_report(tp->p, t_proxy_report, tp);
	return pthread_create(&tp->thread, NULL, t_proxy_main, tp) ? -1 : 0;
}

static void t_proxy_end(struct t_proxy *tp)
{
	pthread_join(tp->thread, NULL);
	ktm_proxy_free(tp->p);
}

/* Connect to unix socket @path as @uid (a child; 0: as we are), write a
 * little, read to the end.  The child's exit status: 0 when it got EOF
 * or a reset, 2 when it could not connect. */
static int t_unix_client(const char *path, uid_t uid)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	pid_t pid = fork();
	int st = -1;

	if (pid == 0) {
		char buf[64];
		int fd;

		if (uid && (setgid(uid) || setuid(uid)))
			_exit(3);
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)))
			_exit(2);
		if (send(fd, "QEVM", 4, MSG_NOSIGNAL) < 0)
			_exit(0);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

TEST(proxy_same_ca_peer_outside_the_allow_list_is_refused_on_both_ends)
{
	struct t_proxy src, dst;
	char sock[128], dst_addr[64], qemu_addr[64];
	struct pair p;
	int qemu_fd;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	/* the destination "QEMU": a listener that must never see a connection */
	qemu_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(bind(qemu_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ASSERT_EQ(listen(qemu_fd, 4), 0);
	ASSERT_EQ(getsockname(qemu_fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(qemu_addr, sizeof(qemu_addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	ASSERT_TRUE(ktm_config_add_allow(p.scfg, "dn:CN=src-01.example", NULL));
	ASSERT_EQ(t_proxy_start(&dst, p.scfg, qemu_addr, "127.0.0.1:0", 1), 0);
	/* the server certificate names localhost */
	snprintf(dst_addr, sizeof(dst_addr), "localhost%s",
		 strrchr(ktm_proxy_address(dst.p), ':'));
	snprintf(sock, sizeof(sock), "unix:%s/src.sock", p.dir);
	ASSERT_EQ(t_proxy_start(&src, p.ccfg, sock, dst_addr, 1), 0);
	EXPECT_EQ(t_unix_client(sock + 5, 0), 0);
	t_proxy_end(&src);
	t_proxy_end(&dst);
	EXPECT_EQ(src.failed, 1);
	EXPECT_EQ(dst.failed, 1);
	printf("# source: %s\n# dest: %s\n", src.msg[0], dst.msg[0]);
	EXPECT_STRSTR(dst.msg[0], "is not allowed by the allow-list of --allow "
				  "rules (1 rule): subject CN=" T_PKI_CLIENT_CN);
	EXPECT_STRSTR(src.msg[0], "rejected our certificate");
	EXPECT_STRSTR(src.msg[0], "allow-list");
	EXPECT_LT(accept(qemu_fd, NULL, NULL), 0);	/* QEMU saw nothing */
	close(qemu_fd);
	pair_end(&p);
}

/* Write @len pattern bytes into unix socket @path, half-close, read to
 * the end.  0, or -1 when it could not connect. */
static int t_unix_feed(const char *path, size_t len)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	uint8_t buf[65536];
	size_t done = 0, i;
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)))
		return -1;
	while (done < len) {
		size_t n = len - done < sizeof(buf) ? len - done : sizeof(buf);
		ssize_t w;

		for (i = 0; i < n; i++)
			buf[i] = t_pattern(done + i);
		w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return 0;
}

/* The running kernel is at least @maj.@min (from uname, not the library). */
/* 2 MiB through a source and a dest proxy whose source may seal only
 * @limit records per key, TLS @version; the outcome in the structs. */
static void key_limit_run(struct t_meta *_metadata, struct pair *p,
			  enum ktm_tls_version version, uint64_t limit,
			  struct t_proxy *src, struct t_proxy *dst,
			  struct t_sink *sink)
{
	char sock[128], dst_addr[64];

	ASSERT_EQ(pair_start(p, NULL, T_NONE), 0);
	ASSERT_TRUE(ktm_config_set_versions(p->ccfg, version, version, NULL));
	ktm_config_set_key_limit(p->ccfg, limit);
	ASSERT_EQ(t_sink_start(sink), 0);
	ASSERT_EQ(t_proxy_start(dst, p->scfg, sink->addr, "127.0.0.1:0", 1), 0);
	snprintf(dst_addr, sizeof(dst_addr), "localhost%s",
		 strrchr(ktm_proxy_address(dst->p), ':'));
	snprintf(sock, sizeof(sock), "unix:%s/src.sock", p->dir);
	ASSERT_EQ(t_proxy_start(src, p->ccfg, sock, dst_addr, 1), 0);
	EXPECT_EQ(t_unix_feed(sock + 5, 2 << 20), 0);
	t_proxy_end(src);
	t_proxy_end(dst);
	t_sink_end(sink);
	printf("# source: %s (%u rekeys, %llu records)\n# dest: %s\n# QEMU got "
	       "%llu bytes\n", src->msg[0], src->rekeys_tx,
	       (unsigned long long)src->records_tx, dst->msg[0],
	       (unsigned long long)sink->bytes);
}

TEST(proxy_rekeys_before_a_tiny_key_limit_or_stops_with_the_reason)
{
	struct t_proxy src, dst;
	struct t_sink sink;
	struct pair p;

	key_limit_run(_metadata, &p, KTM_TLS_1_3, 8, &src, &dst, &sink);
	/* userspace TLS 1.3 always rekeys; kernel TLS from 6.14 */
	if (t_session_can_rekey(KTM_TLS_1_3)) {
		EXPECT_EQ(src.failed, 0);
		EXPECT_EQ(dst.failed, 0);
		EXPECT_EQ(sink.bytes, 2u << 20);
		EXPECT_TRUE(sink.pattern_ok);
		/* 128 full records at most 7 per key: 18 keys at least */
		EXPECT_GE(src.rekeys_tx, 17);
	} else {
		EXPECT_EQ(src.failed, 1);
		EXPECT_STRSTR(src.msg[0], "before its TLS key's usage limit");
		EXPECT_STRSTR(src.msg[0], "needs 6.14");
		EXPECT_LE(sink.bytes, 7u * 16384);
	}
	pair_end(&p);
}

TEST(proxy_stops_before_the_key_limit_when_tls12_cannot_rekey)
{
	struct t_proxy src, dst;
	struct t_sink sink;
	struct pair p;

	key_limit_run(_metadata, &p, KTM_TLS_1_2, 8, &src, &dst, &sink);
	EXPECT_EQ(src.failed, 1);
	EXPECT_STRSTR(src.msg[0], "stopped the connection to localhost:");
	EXPECT_STRSTR(src.msg[0], "before its TLS key's usage limit (");
	EXPECT_STRSTR(src.msg[0], "TLS 1.2 has no KeyUpdate");
	/* nothing past the limit left the source */
	EXPECT_LE(sink.bytes, 7u * 16384);
	EXPECT_LE(src.records_tx, 8);
	pair_end(&p);
}

TEST(proxy_source_unix_socket_refuses_a_local_uid_not_allowed)
{
	char sock[128], path[128];
	struct t_proxy src;
	struct pair p;
	struct stat st;

	if (geteuid() != 0)
		SKIP(return, "needs root to connect as other uids");
	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	/* other users must reach the socket to be refused by SO_PEERCRED */
	ASSERT_EQ(chmod(p.dir, 0755), 0);
	snprintf(sock, sizeof(sock), "unix:%s/src.sock", p.dir);
	snprintf(path, sizeof(path), "%s/src.sock", p.dir);
	/* no destination at all: a refused peer never gets that far */
	ASSERT_EQ(t_proxy_start(&src, p.ccfg, sock, "127.0.0.1:9", 2), 0);
	ASSERT_TRUE(ktm_proxy_set_unix_access(src.p, 65533, -1, 0666, NULL));
	ASSERT_EQ(stat(path, &st), 0);
	EXPECT_EQ(st.st_uid, 65533);
	EXPECT_EQ(st.st_mode & 0777, 0666);
	EXPECT_EQ(t_unix_client(path, 65534), 0);
	EXPECT_EQ(t_unix_client(path, 65533), 0);
	t_proxy_end(&src);
	EXPECT_EQ(src.nreports, 2);
	printf("# 65534: %s\n# 65533: %s\n", src.msg[0], src.msg[1]);
	EXPECT_STRSTR(src.msg[0], "(uid 65534, gid 65534) is not allowed to "
				  "migrate through unix:");
	EXPECT_STRSTR(src.msg[0], "allowed: root, uid 0, uid 65533");
	/* the owner got in: its connection failed only at the destination */
	EXPECT_EQ(strstr(src.msg[1], "is not allowed"), NULL);
	EXPECT_STRSTR(src.msg[1], "127.0.0.1:9");
	pair_end(&p);
}

TEST(hostname_mismatch_names_expected_host_and_sans)
{
	struct t_pki_opts o = { .server_dns = { "dst-07.example", "dst-07" },
				.server_ip = { "10.0.0.7" } };
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ACCEPT), 0);
	ASSERT_TRUE(ktm_config_set_hostname(p.ccfg, "dst-7.example", NULL));
	p.s = t_connect(p.ccfg, "127.0.0.1", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STREQ(p.c.msg, "server certificate does not match expected host "
			      "'dst-7.example'");
	EXPECT_STREQ(p.c.hint, "names in the certificate: DNS:dst-07.example, "
			       "DNS:dst-07, IP:10.0.0.7; connect by one of them, "
			       "or name the one to expect with --hostname "
			       "(QEMU's tls-hostname)");
	pair_end(&p);
}

TEST(ip_address_mismatch_and_match)
{
	struct t_pki_opts o = { .server_dns = { "dst.example" },
				.server_ip = { "127.0.0.1" } };
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "127.0.0.1", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	ASSERT_EQ(t_echo_check(p.s, 10), 0);
	t_finish(p.s);
	t_server_wait(&p.srv, 20);
	pair_end(&p);

	o.server_ip[0] = "10.9.9.9";
	ASSERT_EQ(pair_start(&p, &o, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "127.0.0.1", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_STRSTR(p.c.msg, "does not match expected host '127.0.0.1'");
	EXPECT_STRSTR(p.c.hint, "IP:10.9.9.9");
	pair_end(&p);
}

/* A client that sends no certificate, made with plain OpenSSL. */
TEST(client_sends_no_certificate)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char ca[128], buf[8];
	struct pair p;
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;

	ASSERT_EQ(pair_start(&p, NULL, T_ACCEPT), 0);
	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", p.dir);
	ctx = SSL_CTX_new(TLS_client_method());
	ASSERT_NE(ctx, NULL);
	ASSERT_EQ(SSL_CTX_load_verify_file(ctx, ca), 1);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = htons((uint16_t)atoi(p.srv.port));
	ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	/* TLS 1.3: our handshake completes, the server's verdict comes as
	 * an alert on the first read */
	if (SSL_connect(ssl) == 1)
		EXPECT_LE(SSL_read(ssl, buf, sizeof(buf)), 0);
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	EXPECT_FALSE(p.srv.out->ok);
	EXPECT_EQ(p.srv.out->cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.srv.out->msg, "client 127.0.0.1:");
	EXPECT_STRSTR(p.srv.out->msg, "sent no certificate");
	EXPECT_STRSTR(p.srv.out->hint, "client-cert.pem");
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	ERR_clear_error();
	pair_end(&p);
}

TEST(client_without_certificate_files_is_refused_early)
{
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	char dir[64], path[128];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), NULL), 0);
	snprintf(path, sizeof(path), "%s/client-cert.pem", dir);
	ASSERT_EQ(unlink(path), 0);
	cfg = ktm_config_new(KTM_ENDPOINT_CLIENT, NULL);
	EXPECT_FALSE(ktm_config_set_creds_dir(cfg, dir, &err));
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CONFIG);
	EXPECT_EQ(ktm_error_errno(err), ENOENT);
	EXPECT_STRSTR(ktm_error_message(err), path);
	EXPECT_STRSTR(ktm_error_hint(err), "tls-creds-x509");
	ktm_error_free(err);
	ktm_config_free(cfg);
	t_pki_remove(dir);
}

TEST(key_does_not_match_certificate)
{
	struct t_pki_opts o = { .flaw = T_PKI_KEY_MISMATCH };
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	char dir[64];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	EXPECT_FALSE(ktm_config_set_creds_dir(cfg, dir, &err));
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CONFIG);
	EXPECT_STRSTR(ktm_error_message(err), "server-key.pem does not match "
			                     "server certificate");
	ktm_error_free(err);
	ktm_config_free(cfg);
	t_pki_remove(dir);
}

TEST(private_key_readable_by_others_is_refused)
{
	struct t_pki_opts o = { .key_mode = 0604 };
	struct ktm_error *err = NULL;
	struct ktm_config *cfg;
	char dir[64], key[128], hint[160];

	ASSERT_EQ(t_pki_make_temp(dir, sizeof(dir), &o), 0);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	EXPECT_FALSE(ktm_config_set_creds_dir(cfg, dir, &err));
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_CONFIG);
	EXPECT_STRSTR(ktm_error_message(err), "is readable by others (mode 0604)");
	snprintf(hint, sizeof(hint), "chmod 600 %s", key);
	EXPECT_STRSTR(ktm_error_hint(err), hint);
	ktm_error_free(err);
	ktm_config_free(cfg);
	t_pki_remove(dir);
}

TEST(group_readable_key_is_accepted_and_reported)
{
	struct t_pki_opts o = { .key_mode = 0640 };
	char note[512], want[200];
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_ECHO), 0);
	snprintf(want, sizeof(want), "private key %s/server-key.pem is readable "
		 "by its group (mode 0640)", p.dir);
	ASSERT_NE(ktm_config_key_note(p.scfg, note, sizeof(note)), NULL);
	EXPECT_STREQ(note, want);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	EXPECT_EQ(t_echo_check(p.s, 100), 0);
	t_finish(p.s);
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	pair_end(&p);
}

/* Our own certificate out of its validity: the config loads (the peer is
 * the one to refuse it, see expired_certificate) and says so for the
 * report; a valid one says nothing. */
static void own_cert_note(struct t_meta *_metadata, enum t_pki_flaw flaw,
			  const char *want)
{
	struct t_pki_opts o = { .flaw = flaw };
	char note[512], expect[400];
	struct pair p;

	ASSERT_EQ(pair_start(&p, &o, T_NONE), 0);
	EXPECT_EQ(ktm_config_cert_note(p.ccfg, note, sizeof(note)), NULL);
	ASSERT_NE(ktm_config_cert_note(p.scfg, note, sizeof(note)), NULL);
	snprintf(expect, sizeof(expect), "certificate %s/server-cert.pem %s",
		 p.dir, want);
	EXPECT_STRSTR(note, expect);
	pair_end(&p);
}

TEST(own_expired_certificate_is_reported)
{
	own_cert_note(_metadata, T_PKI_EXPIRED, "has expired (not after ");
}

TEST(own_not_yet_valid_certificate_is_reported)
{
	own_cert_note(_metadata, T_PKI_NOT_YET_VALID, "is not valid yet (not before ");
}

/* A creds dir with encrypted keys, and a passphrase file holding @pw. */
static void encrypted_set(struct t_meta *_metadata, char *dir, size_t len,
			  char *pwfile, size_t pwlen, const char *pw)
{
	struct t_pki_opts o = { .key_passphrase = "correct horse" };

	ASSERT_EQ(t_pki_make_temp(dir, len, &o), 0);
	snprintf(pwfile, pwlen, "%s/passphrase", dir);
	write_file(pwfile, pw);
	ASSERT_EQ(chmod(pwfile, 0600), 0);
}

TEST(encrypted_key_works_with_the_passphrase_file)
{
	struct ktm_config *scfg, *ccfg;
	char dir[64], pw[128];
	struct t_server srv = { .lfd = -1 };
	struct t_outcome c;
	struct ktm_session *s;

	encrypted_set(_metadata, dir, sizeof(dir), pw, sizeof(pw),
		      "correct horse\n");
	scfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	ccfg = ktm_config_new(KTM_ENDPOINT_CLIENT, NULL);
	ASSERT_TRUE(ktm_config_set_key_passphrase_file(scfg, pw, NULL));
	ASSERT_TRUE(ktm_config_set_key_passphrase_file(ccfg, pw, NULL));
	ASSERT_TRUE(ktm_config_set_creds_dir(scfg, dir, NULL));
	ASSERT_TRUE(ktm_config_set_creds_dir(ccfg, dir, NULL));
	ASSERT_EQ(t_server_listen(&srv), 0);
	ASSERT_EQ(t_server_start(&srv, scfg, T_ECHO), 0);
	s = t_connect(ccfg, "localhost", srv.port, &c);
	ASSERT_NE(s, NULL);
	EXPECT_EQ(t_echo_check(s, 100), 0);
	t_finish(s);
	ktm_session_free(s);
	EXPECT_EQ(t_server_wait(&srv, 20), 0);
	t_server_close(&srv);
	ktm_config_free(scfg);
	ktm_config_free(ccfg);
	t_pki_remove(dir);
}

TEST(encrypted_key_without_or_with_a_wrong_passphrase_is_named)
{
	struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_SERVER, NULL);
	struct ktm_error *err = NULL;
	char dir[64], pw[128];

	/* stdin is not read: a prompt would hang here, not fail */
	encrypted_set(_metadata, dir, sizeof(dir), pw, sizeof(pw), "wrong\n");
	EXPECT_FALSE(ktm_config_set_creds_dir(cfg, dir, &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "server-key.pem is encrypted and no "
			                     "passphrase was given");
	EXPECT_STRSTR(ktm_error_hint(err), "--key-passphrase-file");
	ktm_error_free(err);
	err = NULL;
	ASSERT_TRUE(ktm_config_set_key_passphrase_file(cfg, pw, NULL));
	EXPECT_FALSE(ktm_config_set_creds_dir(cfg, dir, &err));
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "cannot decrypt private key ");
	EXPECT_STRSTR(ktm_error_message(err), "with the passphrase from ");
	ktm_error_free(err);
	ktm_config_free(cfg);
	t_pki_remove(dir);
}

TEST(credentials_are_read_once_and_reloaded_on_request)
{
	struct t_pki_opts other = { .server_dns = { "other.example" } };
	struct pair p;
	int i;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	t_finish(p.s);
	ktm_session_free(p.s);
	p.s = NULL;
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	/* a new set (new CA) on disk: sessions keep using what was loaded */
	ASSERT_EQ(t_pki_make(p.dir, &other), 0);
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
		p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
		ASSERT_NE(p.s, NULL);
		t_finish(p.s);
		ktm_session_free(p.s);
		p.s = NULL;
		EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	}
	EXPECT_EQ(p.ccfg->ctx_builds, 1);
	/* reload: the client now trusts the new CA only, and the old server
	 * (still on the old set) is refused */
	ASSERT_TRUE(ktm_config_reload(p.ccfg, NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_STRSTR(p.c.msg, "is not signed by a trusted CA");
	t_server_wait(&p.srv, 20);
	EXPECT_EQ(p.ccfg->ctx_builds, 2);
	pair_end(&p);
}

TEST(peer_speaks_http)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_HTTP), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_PROTOCOL);
	EXPECT_STRSTR(p.c.msg, "answered in HTTP, not TLS");
	pair_end(&p);
}

TEST(client_speaks_http)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct pair p;
	char buf[64];
	int fd;

	ASSERT_EQ(pair_start(&p, NULL, T_ACCEPT), 0);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = htons((uint16_t)atoi(p.srv.port));
	ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ASSERT_EQ(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	EXPECT_EQ(p.srv.out->cls, KTM_ERR_TLS_PROTOCOL);
	EXPECT_STRSTR(p.srv.out->msg, "sent an HTTP request, not a TLS handshake");
	close(fd);
	pair_end(&p);
}

TEST(peer_speaks_plain_tcp_and_stays_silent)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_SILENT), 0);
	ktm_config_set_timeouts(p.ccfg, 1000, 700);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_PEER);
	EXPECT_EQ(p.c.err, ETIMEDOUT);
	EXPECT_STRSTR(p.c.msg, "TLS handshake with localhost:");
	EXPECT_STRSTR(p.c.msg, "timed out after 700 ms");
	pair_end(&p);
}

TEST(connection_refused)
{
	char port[8];
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	/* a port nobody listens on: ours, closed */
	snprintf(port, sizeof(port), "%s", p.srv.port);
	close(p.srv.lfd);
	p.srv.lfd = -1;
	p.s = t_connect(p.ccfg, "127.0.0.1", port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_PEER);
	EXPECT_EQ(p.c.err, ECONNREFUSED);
	EXPECT_STRSTR(p.c.msg, "cannot connect to 127.0.0.1:");
	EXPECT_STRSTR(p.c.msg, "Connection refused");
	EXPECT_STRSTR(p.c.hint, "listening");
	pair_end(&p);
}

TEST(name_does_not_resolve)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	p.s = t_connect(p.ccfg, "no-such-host.invalid", "4444", &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_CONFIG);
	EXPECT_STRSTR(p.c.msg, "cannot resolve host 'no-such-host.invalid'");
	pair_end(&p);
}

TEST(no_common_tls_version)
{
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	ASSERT_TRUE(ktm_config_set_versions(p.ccfg, KTM_TLS_1_2, KTM_TLS_1_2, NULL));
	ASSERT_TRUE(ktm_config_set_versions(p.scfg, KTM_TLS_1_3, KTM_TLS_1_3, NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_PROTOCOL);
	EXPECT_STRSTR(p.c.msg, "TLS version in common");
	t_server_wait(&p.srv, 20);
	EXPECT_EQ(p.srv.out->cls, KTM_ERR_TLS_PROTOCOL);
	EXPECT_STRSTR(p.srv.out->msg, "no TLS version in common with 127.0.0.1:");
	EXPECT_STRSTR(p.srv.out->msg, "(we allow TLS 1.3 to TLS 1.3)");
	pair_end(&p);
}

TEST(spki_pin_match_and_mismatch)
{
	struct pair p;
	char pin[65];

	ASSERT_EQ(pair_start(&p, NULL, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	snprintf(pin, sizeof(pin), "%s", ktm_session_peer_spki_sha256(p.s));
	t_finish(p.s);
	ktm_session_free(p.s);
	p.s = NULL;
	t_server_wait(&p.srv, 20);

	/* the right pin passes */
	ASSERT_TRUE(ktm_config_add_pin(p.ccfg, pin, NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	t_finish(p.s);
	ktm_session_free(p.s);
	p.s = NULL;
	t_server_wait(&p.srv, 20);
	ktm_config_free(p.ccfg);

	/* a wrong one does not, and says what the key hashes to */
	p.ccfg = t_config(KTM_ENDPOINT_CLIENT, p.dir, KTM_KTLS_PREFER);
	ASSERT_NE(p.ccfg, NULL);
	ASSERT_TRUE(ktm_config_add_pin(p.ccfg, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL));
	EXPECT_FALSE(ktm_config_add_pin(p.ccfg, "not-a-pin", NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ACCEPT), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_TLS_VERIFY);
	EXPECT_STRSTR(p.c.msg, "matches no configured pin");
	EXPECT_STRSTR(p.c.msg, pin);
	pair_end(&p);
}

/*
 * A kernel that has the tls ULP but not the cipher: faked through the
 * configuration's kernel-call table, so it runs on any machine.
 */
static int no_cipher_set(void *priv, int fd, int level, int name,
			 const void *val, socklen_t len)
{
	(void)priv, (void)fd, (void)name, (void)val, (void)len;
	if (level == IPPROTO_TCP)
		return 0;	/* "attached": the socket stays plain TCP */
	return -ENOENT;		/* TLS_TX: no such cipher here */
}

static int no_cipher_get(void *priv, int fd, int level, int name, void *val,
			 socklen_t *len)
{
	(void)priv, (void)fd, (void)level, (void)name, (void)val, (void)len;
	return -ENOENT;
}

TEST(kernel_without_the_cipher_require_fails_prefer_falls_back)
{
	static const struct ktm_ktls_ops ops = { no_cipher_set, no_cipher_get, NULL };
	enum ktm_cipher gcm256 = KTM_CIPHER_AES_GCM_256;
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	ASSERT_TRUE(ktm_config_set_ciphers(p.ccfg, &gcm256, 1, NULL));
	ASSERT_TRUE(ktm_config_set_versions(p.ccfg, KTM_TLS_1_3, KTM_TLS_1_3, NULL));
	p.ccfg->ktls_ops = &ops;
	ktm_config_set_ktls(p.ccfg, KTM_KTLS_REQUIRE);
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_KTLS_UNSUPPORTED);
	EXPECT_EQ(p.c.err, ENOENT);
	EXPECT_STRSTR(p.c.msg, "kernel rejected AES-GCM-256 for TLS 1.3 on fd ");
	EXPECT_STRSTR(p.c.msg, "(TLS_TX) (ENOENT)");
	EXPECT_STRSTR(p.c.hint, "--ktls=prefer");
	t_server_wait(&p.srv, 20);

	ktm_config_set_ktls(p.ccfg, KTM_KTLS_PREFER);
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	EXPECT_EQ(p.c.path_tx, KTM_PATH_USERSPACE);
	EXPECT_STRSTR(p.c.fallback, "kernel rejected AES-GCM-256 for TLS 1.3");
	ASSERT_EQ(t_echo_check(p.s, 40000), 0);
	t_finish(p.s);
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	pair_end(&p);
}

/* ---- pre-migration checks --------------------------------------------------- */

static bool veto_cb(const struct ktm_session *s, void *opaque, char *reason,
		    size_t len)
{
	int *calls = opaque;

	(*calls)++;
	snprintf(reason, len, "destination %s is on the deny list",
		 ktm_session_peer_subject(s));
	return false;
}

TEST(check_callback_vetoes_before_any_data)
{
	struct pair p;
	int calls = 0;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	ktm_config_set_check(p.ccfg, veto_cb, &calls);
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(calls, 1);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STREQ(p.c.msg, "pre-migration check vetoed the migration: "
			      "destination CN=localhost is on the deny list");
	EXPECT_EQ(t_server_wait(&p.srv, 20), 0);
	/* The server learns of the veto during or right after its own
	 * handshake: from the kernel path an access_denied alert, from the
	 * userspace path a close_notify.  No data either way. */
	EXPECT_EQ(p.srv.out->bytes_rx, 0);
	if (t_kernel_has_ktls())
		EXPECT_STRSTR(p.srv.out->msg, "denied access");
	pair_end(&p);
}

static void write_script(const char *path, const char *body)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fprintf(f, "#!/bin/sh\n%s\n", body);
		fclose(f);
	}
	chmod(path, 0700);
}

TEST(check_hook_executable_vetoes_with_its_stderr)
{
	char hook[128];
	struct pair p;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", p.dir);
	write_script(hook, "echo 'not enough memory on the destination' >&2\n"
			   "echo second line >&2\nexit 3");
	ASSERT_TRUE(ktm_config_set_check_exec(p.ccfg, hook, "vm1",
					      "tcp://dst:4444", NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STRSTR(p.c.msg, "vetoed the migration to tcp://dst:4444 (exit "
			       "status 3): not enough memory on the destination");
	EXPECT_EQ(strstr(p.c.msg, "second line"), NULL);
	t_server_wait(&p.srv, 20);
	EXPECT_EQ(p.srv.out->bytes_rx, 0);
	pair_end(&p);
}

/* Connect with @hook (body of a sh script) as the client's check hook,
 * @sigchld_ignored set while connecting; the outcome in p->c. */
static void hook_connect(struct t_meta *_metadata, struct pair *p,
			 const char *body, unsigned int timeout_ms,
			 bool sigchld_ignored)
{
	char hook[128];

	ASSERT_EQ(pair_start(p, NULL, T_NONE), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", p->dir);
	write_script(hook, body);
	ASSERT_TRUE(ktm_config_set_check_exec(p->ccfg, hook, "vm1",
					      "tcp://dst:4444", NULL));
	ktm_config_set_check_timeout(p->ccfg, timeout_ms);
	ASSERT_EQ(t_server_start(&p->srv, p->scfg, T_ECHO), 0);
	if (sigchld_ignored)
		signal(SIGCHLD, SIG_IGN);
	p->s = t_connect(p->ccfg, "localhost", p->srv.port, &p->c);
	signal(SIGCHLD, SIG_DFL);
}

TEST(check_hook_veto_holds_when_sigchld_is_ignored)
{
	struct pair p;

	hook_connect(_metadata, &p, "echo no >&2; exit 1", 0, true);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STRSTR(p.c.msg, "check hook ");
	t_server_wait(&p.srv, 20);
	EXPECT_EQ(p.srv.out->bytes_rx, 0);
	pair_end(&p);
}

TEST(check_hook_status_lost_to_ignored_sigchld_refuses)
{
	struct pair p;

	/* even an "allow" whose status nobody can read is no allow */
	hook_connect(_metadata, &p, "exit 0", 0, true);
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STRSTR(p.c.msg, "cannot learn the exit status of check hook");
	EXPECT_STRSTR(p.c.hint, "SIGCHLD");
	t_server_wait(&p.srv, 20);
	pair_end(&p);
}

/* Whether @pid is gone (or a zombie nobody reaped yet). */
static bool t_pid_gone(pid_t pid)
{
	char path[64], st[256];
	FILE *f;
	bool gone = true;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f) {
		gone = fgets(st, sizeof(st), f) && strstr(st, ") Z ");
		fclose(f);
	}
	return gone;
}

TEST(check_hook_that_closes_stderr_and_sleeps_is_killed_at_its_timeout)
{
	char body[512], pidf[128], buf[32] = "";
	uint64_t t0 = ktm_now_ms(), took;
	struct pair p;
	pid_t child;
	FILE *f;
	int i;

	memset(&p, 0, sizeof(p));
	snprintf(pidf, sizeof(pidf), "/tmp/ktm-hook-%d.pid", (int)getpid());
	snprintf(body, sizeof(body), "exec 2>&-\nsleep 30 &\necho $! > %s\nwait",
		 pidf);
	hook_connect(_metadata, &p, body, 700, false);
	took = ktm_now_ms() - t0;
	EXPECT_EQ(p.s, NULL);
	EXPECT_EQ(p.c.cls, KTM_ERR_CHECK);
	EXPECT_STRSTR(p.c.msg, "did not finish within 700 ms: killed, "
			       "connection refused");
	EXPECT_LT(took, 10000);
	f = fopen(pidf, "r");
	ASSERT_NE(f, NULL);
	ASSERT_NE(fgets(buf, sizeof(buf), f), NULL);
	fclose(f);
	unlink(pidf);
	child = (pid_t)atoi(buf);
	ASSERT_GT(child, 0);
	/* the hook's own child, in its process group, went with it */
	for (i = 0; i < 100 && !t_pid_gone(child); i++)
		usleep(20000);
	EXPECT_TRUE(t_pid_gone(child));
	t_server_wait(&p.srv, 20);
	EXPECT_EQ(p.srv.out->bytes_rx, 0);
	pair_end(&p);
}

TEST(check_hook_inherits_no_descriptors)
{
	struct pair p;
	int fd = open("/dev/null", O_RDONLY);	/* no O_CLOEXEC on purpose */

	ASSERT_EQ(dup2(fd, 50), 50);
	hook_connect(_metadata, &p,
		     "if [ -e /proc/$$/fd/50 ] || ls -l /proc/$$/fd | grep -q "
		     "socket; then echo leaked a descriptor >&2; exit 1; fi", 0,
		     false);
	EXPECT_NE(p.s, NULL);
	if (p.s)
		t_finish(p.s);
	t_server_wait(&p.srv, 20);
	close(50);
	close(fd);
	pair_end(&p);
}

TEST(check_hook_sees_the_verified_peer)
{
	char hook[128], out[128], body[512], env[4096];
	struct pair p;
	FILE *f;
	size_t n;

	ASSERT_EQ(pair_start(&p, NULL, T_NONE), 0);
	snprintf(hook, sizeof(hook), "%s/hook.sh", p.dir);
	snprintf(out, sizeof(out), "%s/hook.out", p.dir);
	snprintf(body, sizeof(body),
		 "{ echo \"ARGS=$*\"; env | grep '^KTM_' | sort; } > %s", out);
	write_script(hook, body);
	ASSERT_TRUE(ktm_config_set_check_exec(p.scfg, hook, "vm1",
					      "tcp://dst:4444", NULL));
	ASSERT_EQ(t_server_start(&p.srv, p.scfg, T_ECHO), 0);
	p.s = t_connect(p.ccfg, "localhost", p.srv.port, &p.c);
	ASSERT_NE(p.s, NULL);
	ASSERT_EQ(t_echo_check(p.s, 100), 0);
	t_finish(p.s);
	ASSERT_EQ(t_server_wait(&p.srv, 20), 0);
	f = fopen(out, "r");
	ASSERT_NE(f, NULL);
	n = fread(env, 1, sizeof(env) - 1, f);
	env[n] = '\0';
	fclose(f);
	EXPECT_STRSTR(env, "ARGS=vm1 migrate pmc tcp://dst:4444");
	EXPECT_STRSTR(env, "KTM_ENDPOINT=server");
	EXPECT_STRSTR(env, "KTM_PEER_SUBJECT=CN=" T_PKI_CLIENT_CN);
	EXPECT_STRSTR(env, "KTM_PEER_SANS=DNS:" T_PKI_CLIENT_CN);
	EXPECT_STRSTR(env, "KTM_PEER_ISSUER=CN=" T_PKI_CA_CN);
	EXPECT_STRSTR(env, "KTM_TLS_VERSION=TLS 1.3");
	EXPECT_STRSTR(env, t_kernel_has_ktls() ? "KTM_DATA_PATH=kernel" :
						 "KTM_DATA_PATH=userspace");
	EXPECT_STRSTR(env, "KTM_PEER_SPKI_SHA256=");
	EXPECT_STRSTR(env, "KTM_PEER_CERT_SHA256=");
	pair_end(&p);
}

TEST(fd_pass_round_trip)
{
	struct ktm_error *err = NULL;
	char name[16], buf[4];
	int sp[2], pp[2], got;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	ASSERT_EQ(pipe(pp), 0);
	ASSERT_TRUE(ktm_fd_send(sp[0], pp[1], "mig0", &err));
	got = ktm_fd_recv(sp[1], name, sizeof(name), &err);
	ASSERT_GE(got, 0);
	EXPECT_STREQ(name, "mig0");
	EXPECT_NE(got, pp[1]);
	ASSERT_EQ(write(got, "abc", 3), 3);
	ASSERT_EQ(read(pp[0], buf, 3), 3);
	EXPECT_MEMEQ(buf, "abc", 3);
	/* a message without an fd is an error, not a silent -1 */
	ASSERT_EQ(write(sp[0], "x", 1), 1);
	EXPECT_EQ(ktm_fd_recv(sp[1], NULL, 0, &err), -1);
	ASSERT_NE(err, NULL);
	EXPECT_STRSTR(ktm_error_message(err), "without exactly one fd");
	ktm_error_free(err);
	close(got);
	close(sp[0]);
	close(sp[1]);
	close(pp[0]);
	close(pp[1]);
}

TEST_HARNESS_MAIN
