// SPDX-License-Identifier: MIT
/* Parsers that need no kernel TLS: tls_stat text, sock_diag replies, record
 * type cmsgs, KeyUpdate bodies; and the error object. */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>

#include "harness.h"
#include "internal.h"
#include "ktls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* As printed by a 6.1 kernel (net/tls/tls_proc.c). */
static const char stat_61[] =
	"TlsCurrTxSw                     \t1\n"
	"TlsCurrRxSw                     \t1\n"
	"TlsCurrTxDevice                 \t0\n"
	"TlsCurrRxDevice                 \t0\n"
	"TlsTxSw                         \t12\n"
	"TlsRxSw                         \t11\n"
	"TlsTxDevice                     \t0\n"
	"TlsRxDevice                     \t0\n"
	"TlsDecryptError                 \t3\n"
	"TlsRxDeviceResync               \t0\n"
	"TlsDecryptRetry                 \t0\n"
	"TlsRxNoPadViolation             \t0\n";

TEST(stat_parses_kernel_text)
{
	struct ktm_ktls_stat st;
	uint64_t v = 99;

	ASSERT_EQ(ktm_ktls_stat_parse(stat_61, strlen(stat_61), &st), 12);
	ASSERT_EQ(ktm_ktls_stat_get(&st, "TlsTxSw", &v), 0);
	EXPECT_EQ(v, 12);
	ASSERT_EQ(ktm_ktls_stat_get(&st, "TlsDecryptError", &v), 0);
	EXPECT_EQ(v, 3);
	EXPECT_EQ(ktm_ktls_stat_get(&st, "TlsTxRekeyOk", &v), -ENOENT);
}

TEST(stat_rejects_malformed_lines)
{
	static const char *bad[] = {
		"TlsTxSw\n", "TlsTxSw 12x\n", "TlsTxSw -1\n",
		"TlsTxSw 99999999999999999999999\n",
		"AVeryLongCounterNameThatDoesNotFitInForty 1\n",
	};
	struct ktm_ktls_stat st;
	unsigned int i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_LT(ktm_ktls_stat_parse(bad[i], strlen(bad[i]), &st), 0);
	/* no trailing newline and blank lines are fine */
	EXPECT_EQ(ktm_ktls_stat_parse("A 1\n\nB 2", strlen("A 1\n\nB 2"), &st), 2);
}

TEST(stat_read_missing_file_is_enoent)
{
	struct ktm_ktls_stat st;

	EXPECT_EQ(ktm_ktls_stat_read("/nonexistent/tls_stat", &st), -ENOENT);
}

/* Build a SOCK_DIAG_BY_FAMILY reply the way the kernel nests it. */
struct nl_buf {
	union {
		char b[1024];
		struct nlmsghdr align;
	} u;
	size_t len;
};

static struct rtattr *nl_put(struct nl_buf *nb, uint16_t type,
			     const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)(nb->u.b + nb->len);

	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	nb->len += RTA_ALIGN(a->rta_len);
	return a;
}

static void nl_end(struct nl_buf *nb, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)(nb->u.b + nb->len - (char *)nest);
}

static void build_reply(struct nl_buf *nb, bool with_tls)
{
	struct nlmsghdr *nlh = &nb->u.align;
	struct rtattr *ulp, *tls;
	uint16_t v;

	memset(nb, 0, sizeof(*nb));
	nb->len = NLMSG_LENGTH(sizeof(struct inet_diag_msg));
	nl_put(nb, INET_DIAG_INFO, "xxxxxxxx", 8);	/* ignored */
	ulp = nl_put(nb, INET_DIAG_ULP_INFO | NLA_F_NESTED, NULL, 0);
	nl_put(nb, INET_ULP_INFO_NAME, "tls", 4);
	if (with_tls) {
		tls = nl_put(nb, INET_ULP_INFO_TLS | NLA_F_NESTED, NULL, 0);
		v = TLS_1_3_VERSION;
		nl_put(nb, TLS_INFO_VERSION, &v, 2);
		v = TLS_CIPHER_AES_GCM_256;
		nl_put(nb, TLS_INFO_CIPHER, &v, 2);
		v = TLS_CONF_SW;
		nl_put(nb, TLS_INFO_TXCONF, &v, 2);
		v = TLS_CONF_HW;
		nl_put(nb, TLS_INFO_RXCONF, &v, 2);
		nl_put(nb, TLS_INFO_RX_NO_PAD, NULL, 0);
		nl_end(nb, tls);
	}
	nl_end(nb, ulp);
	nlh->nlmsg_len = (uint32_t)nb->len;
	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
}

TEST(diag_parses_nested_tls_info)
{
	struct ktm_ktls_diag d;
	struct nl_buf nb;

	build_reply(&nb, true);
	ASSERT_EQ(ktm_ktls_diag_parse(nb.u.b, nb.len, &d), 0);
	EXPECT_TRUE(d.has_ulp);
	EXPECT_STREQ(d.ulp, "tls");
	EXPECT_TRUE(d.has_tls);
	EXPECT_EQ(d.version, TLS_1_3_VERSION);
	EXPECT_EQ(d.cipher, TLS_CIPHER_AES_GCM_256);
	EXPECT_EQ(d.txconf, TLS_CONF_SW);
	EXPECT_EQ(d.rxconf, TLS_CONF_HW);
	EXPECT_TRUE(d.rx_no_pad);
	EXPECT_FALSE(d.zc_ro_tx);
}

TEST(diag_without_tls_nest_or_errors)
{
	struct ktm_ktls_diag d;
	struct nl_buf nb;
	struct nlmsgerr *e;

	build_reply(&nb, false);
	ASSERT_EQ(ktm_ktls_diag_parse(nb.u.b, nb.len, &d), 0);
	EXPECT_TRUE(d.has_ulp);
	EXPECT_FALSE(d.has_tls);

	/* truncated */
	EXPECT_EQ(ktm_ktls_diag_parse(nb.u.b, 10, &d), -EBADMSG);
	/* NLMSG_ERROR carries -errno */
	memset(&nb, 0, sizeof(nb));
	nb.u.align.nlmsg_type = NLMSG_ERROR;
	nb.u.align.nlmsg_len = NLMSG_LENGTH(sizeof(*e));
	e = NLMSG_DATA(&nb.u.align);
	e->error = -ENOENT;
	EXPECT_EQ(ktm_ktls_diag_parse(nb.u.b, nb.u.align.nlmsg_len, &d),
		  -ENOENT);
}

TEST(cmsg_record_type_found_missing_truncated)
{
	union {
		char buf[CMSG_SPACE(1)];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg = { .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	uint8_t type = 0;

	memset(&ctl, 0, sizeof(ctl));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_TLS;
	c->cmsg_type = TLS_GET_RECORD_TYPE;
	c->cmsg_len = CMSG_LEN(1);
	*CMSG_DATA(c) = KTM_KTLS_REC_ALERT;
	ASSERT_EQ(ktm_ktls_cmsg_record_type(&msg, &type), 0);
	EXPECT_EQ(type, KTM_KTLS_REC_ALERT);

	msg.msg_flags = MSG_CTRUNC;
	EXPECT_EQ(ktm_ktls_cmsg_record_type(&msg, &type), -EMSGSIZE);

	msg.msg_flags = 0;
	c->cmsg_level = SOL_SOCKET;
	EXPECT_EQ(ktm_ktls_cmsg_record_type(&msg, &type), -ENOMSG);
	msg.msg_controllen = 0;
	EXPECT_EQ(ktm_ktls_cmsg_record_type(&msg, &type), -ENOMSG);
}

TEST(keyupdate_parse)
{
	static const uint8_t ok0[] = { 24, 0, 0, 1, 0 }, ok1[] = { 24, 0, 0, 1, 1 };
	static const uint8_t bad_type[] = { 20, 0, 0, 1, 0 };
	static const uint8_t bad_req[] = { 24, 0, 0, 1, 2 };
	bool req = true;

	ASSERT_EQ(ktm_ktls_keyupdate_parse(ok0, sizeof(ok0), &req), 0);
	EXPECT_FALSE(req);
	ASSERT_EQ(ktm_ktls_keyupdate_parse(ok1, sizeof(ok1), &req), 0);
	EXPECT_TRUE(req);
	EXPECT_EQ(ktm_ktls_keyupdate_parse(bad_type, 5, &req), -EBADMSG);
	EXPECT_EQ(ktm_ktls_keyupdate_parse(bad_req, 5, &req), -EBADMSG);
	EXPECT_EQ(ktm_ktls_keyupdate_parse(ok0, 4, &req), -EBADMSG);
}

TEST(error_object_set_once_with_hint)
{
	struct ktm_error *err = NULL;
	char eb[24];

	ktm_error_set(NULL, KTM_ERR_IO, EPIPE, "ignored %d", 1);
	ktm_error_set(&err, KTM_ERR_KTLS_UNSUPPORTED, -ENOENT,
		      "kernel TLS is not available (TCP_ULP \"%s\": %s)", "tls",
		      ktm_errno_name(-ENOENT, eb));
	ktm_error_hint_set(&err, "load the %s module", "tls");
	ASSERT_NE(err, NULL);
	EXPECT_EQ(ktm_error_class(err), KTM_ERR_KTLS_UNSUPPORTED);
	EXPECT_EQ(ktm_error_errno(err), ENOENT);
	EXPECT_STREQ(ktm_error_message(err),
		     "kernel TLS is not available (TCP_ULP \"tls\": ENOENT)");
	EXPECT_STREQ(ktm_error_hint(err), "load the tls module");
	ktm_error_free(err);
	ktm_error_free(NULL);
	EXPECT_STREQ(ktm_errno_name(EBUSY, eb), "EBUSY");
	EXPECT_STREQ(ktm_errno_name(-4242, eb), "errno 4242");
}

TEST(probe_without_tls_says_why)
{
	struct ktm_error *err = NULL;
	struct ktm_probe *p = ktm_probe_new(&err);
	const char *reason = NULL, *hint = NULL;
	enum ktm_support s;

	ASSERT_NE(p, NULL);
	ASSERT_EQ(err, NULL);
	s = ktm_probe_ktls(p, &reason, &hint);
	ASSERT_NE(reason, NULL);
	if (s == KTM_UNSUPPORTED) {
		/* this host: the only honest "no" is ENOENT from TCP_ULP */
		EXPECT_STRSTR(reason, "TCP_ULP: ENOENT");
		EXPECT_STRSTR(hint, "CONFIG_TLS");
		EXPECT_EQ(ktm_probe_cipher(p, KTM_TLS_1_3,
					   KTM_CIPHER_AES_GCM_128, &reason),
			  KTM_UNSUPPORTED);
	} else {
		EXPECT_EQ(s, KTM_SUPPORTED);
	}
	EXPECT_EQ(ktm_probe_cipher(p, (enum ktm_tls_version)0x0301,
				   KTM_CIPHER_AES_GCM_128, &reason),
		  KTM_UNSUPPORTED);
	ktm_probe_free(p);
}

TEST_HARNESS_MAIN
