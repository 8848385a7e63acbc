// SPDX-License-Identifier: MIT
/* NIC TLS offload features over ethtool netlink: the reply parser on
 * hand-built attribute streams, then the live query on this machine. */
#include <errno.h>
#include <stdlib.h>
#include <linux/ethtool_netlink.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>

#include "harness.h"
#include "ktls.h"

/* One bit of a verbose bitset.  @value: put ETHTOOL_A_BITSET_BIT_VALUE. */
struct t_bit {
	const char *name;
	uint32_t index;
	bool value;
};

/* The indices are 6.1's; the parser must not care. */
#define T_RXCSUM { "rx-checksum", 29, true }
#define T_TLS_TX(v) { "tls-hw-tx-offload", 44, v }
#define T_TLS_RX(v) { "tls-hw-rx-offload", 52, v }
#define T_TLS_RECORD(v) { "tls-hw-record", 41, v }

static void t_put_bitset(struct nl_msg *msg, int type, bool nomask,
			 const struct t_bit *bits, unsigned int n)
{
	struct nlattr *set, *list, *bit;
	unsigned int i;

	set = nla_nest_start(msg, type | NLA_F_NESTED);
	if (nomask)
		nla_put_flag(msg, ETHTOOL_A_BITSET_NOMASK);
	nla_put_u32(msg, ETHTOOL_A_BITSET_SIZE, 64);
	list = nla_nest_start(msg, ETHTOOL_A_BITSET_BITS | NLA_F_NESTED);
	for (i = 0; i < n; i++) {
		bit = nla_nest_start(msg, ETHTOOL_A_BITSET_BITS_BIT |
				     NLA_F_NESTED);
		nla_put_u32(msg, ETHTOOL_A_BITSET_BIT_INDEX, bits[i].index);
		nla_put_string(msg, ETHTOOL_A_BITSET_BIT_NAME, bits[i].name);
		if (bits[i].value)
			nla_put_flag(msg, ETHTOOL_A_BITSET_BIT_VALUE);
		nla_nest_end(msg, bit);
	}
	nla_nest_end(msg, list);
	nla_nest_end(msg, set);
}

/* A FEATURES_GET_REPLY as the kernel builds it, header included. */
static struct nl_msg *t_reply_new(const char *ifname)
{
	struct nl_msg *msg = nlmsg_alloc();
	struct nlattr *hdr;

	if (!msg)
		return NULL;
	genlmsg_put(msg, 0, 0, 0x20, 0, 0, ETHTOOL_MSG_FEATURES_GET_REPLY,
		    ETHTOOL_GENL_VERSION);
	hdr = nla_nest_start(msg, ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED);
	nla_put_u32(msg, ETHTOOL_A_HEADER_DEV_INDEX, 7);
	nla_put_string(msg, ETHTOOL_A_HEADER_DEV_NAME, ifname);
	nla_nest_end(msg, hdr);
	return msg;
}

static void *t_attrs(struct nl_msg *msg, size_t *len)
{
	struct genlmsghdr *g = nlmsg_data(nlmsg_hdr(msg));

	*len = (size_t)genlmsg_attrlen(g, 0);
	return genlmsg_attrdata(g, 0);
}

/*
 * The kernel's own form, as 6.18 sends it: HW as a mask of every feature
 * with VALUE on the supported ones, the other sets as NOMASK lists without
 * VALUE flags.  TX in hw and active, RX in hw but off and never-change,
 * tls-hw-record listed in the HW mask but not supported.
 */
static struct nl_msg *t_reply_mlx5(void)
{
	static const struct t_bit hw[] = {
		T_RXCSUM, T_TLS_RECORD(false), T_TLS_TX(true), T_TLS_RX(true),
	};
	static const struct t_bit active[] = { T_RXCSUM, T_TLS_TX(false) };
	static const struct t_bit nochange[] = { T_TLS_RX(false) };
	struct nl_msg *msg = t_reply_new("enp1s0f0np0");

	if (!msg)
		return NULL;
	t_put_bitset(msg, ETHTOOL_A_FEATURES_HW, false, hw, 4);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_WANTED, true, active, 2);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_ACTIVE, true, active, 2);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_NOCHANGE, true, nochange, 1);
	return msg;
}

TEST(parse_tx_on_rx_off_fixed_no_record)
{
	struct nl_msg *msg = t_reply_mlx5();
	struct ktm_ktls_offload o;
	size_t len;
	void *a;

	ASSERT_NE(msg, NULL);
	a = t_attrs(msg, &len);
	ASSERT_EQ(ktm_ktls_offload_parse(a, len, &o), 0);
	EXPECT_STREQ(o.ifname, "enp1s0f0np0");
	EXPECT_TRUE(o.tx_avail);
	EXPECT_TRUE(o.tx_on);
	EXPECT_FALSE(o.tx_fixed);
	EXPECT_TRUE(o.rx_avail);
	EXPECT_FALSE(o.rx_on);
	EXPECT_TRUE(o.rx_fixed);
	EXPECT_FALSE(o.record_avail);
	EXPECT_FALSE(o.record_on);
	nlmsg_free(msg);
}

/* The other way round: a NOMASK HW list, masked ACTIVE with VALUE bits. */
TEST(parse_mask_form_reads_value_flags)
{
	static const struct t_bit hw[] = { T_TLS_TX(false), T_TLS_RX(false) };
	static const struct t_bit active[] = {
		T_TLS_TX(false), T_TLS_RX(true), T_TLS_RECORD(true),
	};
	struct nl_msg *msg = t_reply_new("eth1");
	struct ktm_ktls_offload o;
	size_t len;
	void *a;

	ASSERT_NE(msg, NULL);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_HW, true, hw, 2);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_ACTIVE, false, active, 3);
	t_put_bitset(msg, ETHTOOL_A_FEATURES_NOCHANGE, false, NULL, 0);
	a = t_attrs(msg, &len);
	ASSERT_EQ(ktm_ktls_offload_parse(a, len, &o), 0);
	EXPECT_STREQ(o.ifname, "eth1");
	EXPECT_TRUE(o.tx_avail);
	EXPECT_FALSE(o.tx_on);
	EXPECT_FALSE(o.tx_fixed);
	EXPECT_TRUE(o.rx_avail);
	EXPECT_TRUE(o.rx_on);
	EXPECT_FALSE(o.rx_fixed);
	/* active but not toggleable: on and fixed, not "available" */
	EXPECT_FALSE(o.record_avail);
	EXPECT_TRUE(o.record_on);
	nlmsg_free(msg);
}

TEST(parse_missing_sets_read_as_empty)
{
	static const struct t_bit hw[] = { T_TLS_TX(false) };
	struct nl_msg *msg = t_reply_new("eth0");
	struct ktm_ktls_offload o;
	size_t len;
	void *a;

	ASSERT_NE(msg, NULL);
	/* header only */
	a = t_attrs(msg, &len);
	ASSERT_EQ(ktm_ktls_offload_parse(a, len, &o), 0);
	EXPECT_STREQ(o.ifname, "eth0");
	EXPECT_FALSE(o.tx_avail);
	EXPECT_FALSE(o.tx_on);
	EXPECT_TRUE(o.tx_fixed);	/* not in hw_features: cannot toggle */
	EXPECT_FALSE(o.rx_avail);
	EXPECT_FALSE(o.record_on);

	/* hw only: available, not active */
	t_put_bitset(msg, ETHTOOL_A_FEATURES_HW, true, hw, 1);
	a = t_attrs(msg, &len);
	ASSERT_EQ(ktm_ktls_offload_parse(a, len, &o), 0);
	EXPECT_TRUE(o.tx_avail);
	EXPECT_FALSE(o.tx_on);
	EXPECT_FALSE(o.tx_fixed);

	/* nothing at all */
	ASSERT_EQ(ktm_ktls_offload_parse(a, 0, &o), 0);
	EXPECT_STREQ(o.ifname, "");
	EXPECT_FALSE(o.tx_avail);
	nlmsg_free(msg);
}

/*
 * Every prefix of a reply: a cut on a top-level attribute boundary is a
 * shorter valid reply, any other cut is -EBADMSG.  Each prefix is copied to
 * an exact-size buffer so ASan sees any read past it.
 */
TEST(parse_truncated_is_ebadmsg)
{
	struct nl_msg *msg = t_reply_mlx5();
	struct ktm_ktls_offload o;
	size_t len, cut, next = 0, bad = 0;
	uint8_t *a;

	ASSERT_NE(msg, NULL);
	a = t_attrs(msg, &len);
	ASSERT_GT(len, 64);
	for (cut = 1; cut < len; cut++) {
		void *copy = malloc(cut);
		int ret;

		ASSERT_NE(copy, NULL);
		memcpy(copy, a, cut);
		while (next < cut)	/* the next top-level boundary */
			next += NLA_ALIGN(((const struct nlattr *)
					   (a + next))->nla_len);
		ret = ktm_ktls_offload_parse(copy, cut, &o);
		if (cut == next) {
			EXPECT_EQ(ret, 0);
		} else {
			EXPECT_EQ(ret, -EBADMSG);
			bad++;
		}
		free(copy);
	}
	EXPECT_GT(bad, len / 2);

	/* a nested length that overruns its parent */
	EXPECT_EQ(ktm_ktls_offload_parse(a, len, &o), 0);
	((struct nlattr *)a)[1].nla_len = 200;	/* DEV_INDEX inside HEADER */
	EXPECT_EQ(ktm_ktls_offload_parse(a, len, &o), -EBADMSG);
	nlmsg_free(msg);
}

TEST(parse_compact_bitset_is_eproto)
{
	struct nl_msg *msg = t_reply_new("eth0");
	struct ktm_ktls_offload o;
	struct nlattr *set;
	uint32_t bits[2] = { 0, 1u << 12 };
	size_t len;
	void *a;

	ASSERT_NE(msg, NULL);
	set = nla_nest_start(msg, ETHTOOL_A_FEATURES_ACTIVE | NLA_F_NESTED);
	nla_put_flag(msg, ETHTOOL_A_BITSET_NOMASK);
	nla_put_u32(msg, ETHTOOL_A_BITSET_SIZE, 64);
	nla_put(msg, ETHTOOL_A_BITSET_VALUE, sizeof(bits), bits);
	nla_nest_end(msg, set);
	a = t_attrs(msg, &len);
	EXPECT_EQ(ktm_ktls_offload_parse(a, len, &o), -EPROTO);
	nlmsg_free(msg);
}

#define T_SCAN_MAX 64

TEST(live_scan_finds_interfaces)
{
	struct ktm_ktls_offload o[T_SCAN_MAX], q;
	int n, i;

	n = ktm_ktls_offload_scan(o, T_SCAN_MAX);
	if (n == -EOPNOTSUPP)
		SKIP(return, "kernel has no ethtool netlink family "
		     "(needs >= 5.6 with CONFIG_ETHTOOL_NETLINK)");
	if (n == -EPERM || n == -EACCES)
		SKIP(return, "no permission for netlink queries (%d)", n);
	ASSERT_GE(n, 1);	/* every test machine has a NIC besides lo */
	EXPECT_EQ(ktm_ktls_offload_scan(NULL, 0), n);
	for (i = 0; i < n && i < T_SCAN_MAX; i++) {
		TH_LOG("%s: tx %s%s%s rx %s%s%s record %s%s", o[i].ifname,
		       o[i].tx_avail ? "avail" : "-", o[i].tx_on ? ",on" : "",
		       o[i].tx_fixed ? ",fixed" : "",
		       o[i].rx_avail ? "avail" : "-", o[i].rx_on ? ",on" : "",
		       o[i].rx_fixed ? ",fixed" : "",
		       o[i].record_avail ? "avail" : "-",
		       o[i].record_on ? ",on" : "");
		EXPECT_NE(o[i].ifname[0], '\0');
		EXPECT_NE(strcmp(o[i].ifname, "lo"), 0);
		EXPECT_TRUE(!o[i].tx_on || o[i].tx_avail);
		EXPECT_TRUE(!o[i].rx_on || o[i].rx_avail);
		/* the single query agrees with the scan */
		ASSERT_EQ(ktm_ktls_offload_query(o[i].ifname, &q), 0);
		EXPECT_EQ(memcmp(&q, &o[i], sizeof(q)), 0);
	}
}

TEST(live_query_unknown_interface_is_enodev)
{
	struct ktm_ktls_offload o;
	char longname[300];
	int ret;

	ret = ktm_ktls_offload_query("nonexistent0", &o);
	if (ret == -EOPNOTSUPP)
		SKIP(return, "kernel has no ethtool netlink family "
		     "(needs >= 5.6 with CONFIG_ETHTOOL_NETLINK)");
	EXPECT_EQ(ret, -ENODEV);
	EXPECT_STREQ(o.ifname, "");
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	EXPECT_EQ(ktm_ktls_offload_query(longname, &o), -ENODEV);
	EXPECT_EQ(ktm_ktls_offload_query("", &o), -EINVAL);
	EXPECT_EQ(ktm_ktls_offload_query(NULL, &o), -EINVAL);
}

TEST_HARNESS_MAIN
