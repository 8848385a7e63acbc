// SPDX-License-Identifier: MIT
/*
 * NIC TLS offload features through ethtool netlink (libnl): one
 * ETHTOOL_MSG_FEATURES_GET per interface, answered with four bitsets
 * (hw_features, wanted, active, NETIF_F_NEVER_CHANGE) in the verbose form,
 * which names every bit.  Bit indices differ between kernel versions, so
 * features are matched by name only.  Format:
 * Documentation/networking/ethtool-netlink.rst ("Bit sets", FEATURES_GET);
 * the kernel side is net/ethtool/features.c and net/ethtool/bitset.c.
 *
 * libnl allocates internally (sockets, messages, the link cache); every
 * such object is released on every path.  libnl returns its own NLE_*
 * codes; they are turned into errnos in one place (nle_errno), and the
 * kernel's own errno is taken from the NLMSG_ERROR itself, not from
 * libnl's lossy translation.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <linux/ethtool_netlink.h>
#include <linux/if.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "ktls.h"

enum {
	FEAT_TLS_TX,
	FEAT_TLS_RX,
	FEAT_TLS_RECORD,
	FEAT_COUNT,
};

/* netdev_features_strings[] in net/ethtool/common.c */
static const char *const feat_names[FEAT_COUNT] = {
	[FEAT_TLS_TX] = "tls-hw-tx-offload",
	[FEAT_TLS_RX] = "tls-hw-rx-offload",
	[FEAT_TLS_RECORD] = "tls-hw-record",
};

#define FEAT_BIT(f) (1u << (f))

/* libnl error codes to errno, for failures that are not the kernel's own
 * NLMSG_ERROR (those are read directly, see on_error). */
static int nle_errno(int nle)
{
	static const int map[] = {
		[NLE_INTR] = EINTR,		[NLE_BAD_SOCK] = EBADF,
		[NLE_AGAIN] = EAGAIN,		[NLE_NOMEM] = ENOMEM,
		[NLE_EXIST] = EEXIST,		[NLE_INVAL] = EINVAL,
		[NLE_RANGE] = ERANGE,		[NLE_MSGSIZE] = EMSGSIZE,
		[NLE_OPNOTSUPP] = EOPNOTSUPP,	[NLE_AF_NOSUPPORT] = EAFNOSUPPORT,
		[NLE_OBJ_NOTFOUND] = ENOENT,	[NLE_SEQ_MISMATCH] = EPROTO,
		[NLE_MSG_OVERFLOW] = EOVERFLOW,	[NLE_MSG_TRUNC] = EBADMSG,
		[NLE_MSG_TOOSHORT] = EBADMSG,	[NLE_BUSY] = EBUSY,
		[NLE_PROTO_MISMATCH] = EPROTONOSUPPORT,
		[NLE_NOACCESS] = EACCES,	[NLE_PERM] = EPERM,
		[NLE_NODEV] = ENODEV,		[NLE_DUMP_INTR] = EINTR,
		[NLE_NOADDR] = EADDRNOTAVAIL,
	};
	unsigned int i = (unsigned int)(nle < 0 ? -nle : nle);

	if (i < sizeof(map) / sizeof(map[0]) && map[i])
		return -map[i];
	return -EIO;
}

/*
 * libnl's nla_parse() silently ignores bytes left over after the last
 * whole attribute, so a reply cut short inside an attribute would parse as
 * a shorter, valid one.  Walk each level first and call leftovers what they
 * are.  A negative remainder is only the missing pad of the last attribute.
 */
static int attrs_check(const struct nlattr *head, int len)
{
	const struct nlattr *a;
	int rem;

	nla_for_each_attr(a, head, len, rem)
		;
	return rem > 0 ? -EBADMSG : 0;
}

static int parse_nested(struct nlattr **tb, int max, const struct nlattr *nest,
			const struct nla_policy *policy)
{
	if (attrs_check(nla_data(nest), nla_len(nest)))
		return -EBADMSG;
	/* libnl takes a non-const pointer but does not write through it */
	if (nla_parse_nested(tb, max, (struct nlattr *)nest, policy) < 0)
		return -EBADMSG;
	return 0;
}

static const struct nla_policy bit_policy[ETHTOOL_A_BITSET_BIT_MAX + 1] = {
	[ETHTOOL_A_BITSET_BIT_INDEX] = { .type = NLA_U32 },
	[ETHTOOL_A_BITSET_BIT_NAME] = { .type = NLA_STRING },
	[ETHTOOL_A_BITSET_BIT_VALUE] = { .type = NLA_FLAG },
};

static const struct nla_policy bitset_policy[ETHTOOL_A_BITSET_MAX + 1] = {
	[ETHTOOL_A_BITSET_NOMASK] = { .type = NLA_FLAG },
	[ETHTOOL_A_BITSET_SIZE] = { .type = NLA_U32 },
	[ETHTOOL_A_BITSET_BITS] = { .type = NLA_NESTED },
};

static const struct nla_policy header_policy[ETHTOOL_A_HEADER_MAX + 1] = {
	[ETHTOOL_A_HEADER_DEV_INDEX] = { .type = NLA_U32 },
	[ETHTOOL_A_HEADER_DEV_NAME] = { .type = NLA_STRING },
	[ETHTOOL_A_HEADER_FLAGS] = { .type = NLA_U32 },
};

static const struct nla_policy features_policy[ETHTOOL_A_FEATURES_MAX + 1] = {
	[ETHTOOL_A_FEATURES_HEADER] = { .type = NLA_NESTED },
	[ETHTOOL_A_FEATURES_HW] = { .type = NLA_NESTED },
	[ETHTOOL_A_FEATURES_WANTED] = { .type = NLA_NESTED },
	[ETHTOOL_A_FEATURES_ACTIVE] = { .type = NLA_NESTED },
	[ETHTOOL_A_FEATURES_NOCHANGE] = { .type = NLA_NESTED },
};

/* One ETHTOOL_A_BITSET_BITS_BIT: which of our features it names and is set. */
static int parse_bit(const struct nlattr *bit, bool nomask, unsigned int *set)
{
	struct nlattr *tb[ETHTOOL_A_BITSET_BIT_MAX + 1];
	const char *name;
	unsigned int f;
	int ret;

	ret = parse_nested(tb, ETHTOOL_A_BITSET_BIT_MAX, bit, bit_policy);
	if (ret)
		return ret;
	/* A bit known only by index cannot be identified without the
	 * ETH_SS_FEATURES string set; the verbose form always names it. */
	if (!tb[ETHTOOL_A_BITSET_BIT_NAME])
		return 0;
	/* With NOMASK the list is the set itself and the kernel puts no
	 * VALUE flags (bitset.c, ethnl_put_bitset32 with mask == NULL);
	 * otherwise the list is the mask and VALUE marks the set bits.  The
	 * kernel uses both in one reply: 6.18 sends HW masked by every
	 * known feature, WANTED/ACTIVE/NOCHANGE as NOMASK lists. */
	if (!nomask && !tb[ETHTOOL_A_BITSET_BIT_VALUE])
		return 0;
	name = nla_data(tb[ETHTOOL_A_BITSET_BIT_NAME]);
	for (f = 0; f < FEAT_COUNT; f++)
		if (!strcmp(name, feat_names[f]))
			*set |= FEAT_BIT(f);
	return 0;
}

static int parse_bitset(const struct nlattr *nest, unsigned int *set)
{
	struct nlattr *tb[ETHTOOL_A_BITSET_MAX + 1];
	const struct nlattr *bit;
	bool nomask;
	int ret, rem;

	*set = 0;
	if (!nest)
		return 0;
	ret = parse_nested(tb, ETHTOOL_A_BITSET_MAX, nest, bitset_policy);
	if (ret)
		return ret;
	if (!tb[ETHTOOL_A_BITSET_BITS]) {
		/* compact: bitmaps without names, which we never request */
		if (tb[ETHTOOL_A_BITSET_VALUE] || tb[ETHTOOL_A_BITSET_MASK])
			return -EPROTO;
		return 0;
	}
	nomask = tb[ETHTOOL_A_BITSET_NOMASK] != NULL;
	if (attrs_check(nla_data(tb[ETHTOOL_A_BITSET_BITS]),
			nla_len(tb[ETHTOOL_A_BITSET_BITS])))
		return -EBADMSG;
	nla_for_each_nested(bit, tb[ETHTOOL_A_BITSET_BITS], rem) {
		if (nla_type(bit) != ETHTOOL_A_BITSET_BITS_BIT)
			continue;
		ret = parse_bit(bit, nomask, set);
		if (ret)
			return ret;
	}
	return 0;
}

static int parse_header(const struct nlattr *nest, struct ktm_ktls_offload *out)
{
	struct nlattr *tb[ETHTOOL_A_HEADER_MAX + 1];
	const struct nlattr *name;
	size_t n;
	int ret;

	if (!nest)
		return 0;
	ret = parse_nested(tb, ETHTOOL_A_HEADER_MAX, nest, header_policy);
	if (ret)
		return ret;
	name = tb[ETHTOOL_A_HEADER_DEV_NAME];
	if (!name)
		return 0;
	/* dev->name always fits IFNAMSIZ; the policy made it NUL-terminated */
	n = strlen(nla_data(name));
	if (n >= sizeof(out->ifname))
		return -EBADMSG;
	memcpy(out->ifname, nla_data(name), n + 1);
	return 0;
}

int ktm_ktls_offload_parse(const void *attrs, size_t len,
			   struct ktm_ktls_offload *out)
{
	static const int sets[] = {
		ETHTOOL_A_FEATURES_HW, ETHTOOL_A_FEATURES_ACTIVE,
		ETHTOOL_A_FEATURES_NOCHANGE,
	};
	struct nlattr *tb[ETHTOOL_A_FEATURES_MAX + 1];
	unsigned int bits[3], hw, on, nochange, f;
	struct nlattr *head = (struct nlattr *)attrs;
	bool avail[FEAT_COUNT], active[FEAT_COUNT], fixed[FEAT_COUNT];
	int ret;

	memset(out, 0, sizeof(*out));
	if (len > INT_MAX || attrs_check(head, (int)len))
		return -EBADMSG;
	if (nla_parse(tb, ETHTOOL_A_FEATURES_MAX, head, (int)len,
		      features_policy) < 0)
		return -EBADMSG;
	ret = parse_header(tb[ETHTOOL_A_FEATURES_HEADER], out);
	if (ret)
		return ret;
	/* WANTED (what the user asked for) is not reported: ACTIVE is what
	 * the device does, and that decides TLS_CONF_HW. */
	for (f = 0; f < sizeof(sets) / sizeof(sets[0]); f++) {
		ret = parse_bitset(tb[sets[f]], &bits[f]);
		if (ret)
			return ret;
	}
	hw = bits[0];
	on = bits[1];
	nochange = bits[2];
	for (f = 0; f < FEAT_COUNT; f++) {
		avail[f] = hw & FEAT_BIT(f);
		active[f] = on & FEAT_BIT(f);
		/* ethtool's "[fixed]": netlink/features.c in ethtool(8) */
		fixed[f] = !avail[f] || (nochange & FEAT_BIT(f));
	}
	out->tx_avail = avail[FEAT_TLS_TX];
	out->tx_on = active[FEAT_TLS_TX];
	out->tx_fixed = fixed[FEAT_TLS_TX];
	out->rx_avail = avail[FEAT_TLS_RX];
	out->rx_on = active[FEAT_TLS_RX];
	out->rx_fixed = fixed[FEAT_TLS_RX];
	out->record_avail = avail[FEAT_TLS_RECORD];
	out->record_on = active[FEAT_TLS_RECORD];
	return 0;
}

/* ---- talking to the kernel ---------------------------------------------- */

struct query_ctx {
	struct ktm_ktls_offload *out;
	int ret;		/* first failure, or 0 */
	bool got_reply;
	bool done;		/* the ACK or the kernel's error arrived */
};

static int on_reply(struct nl_msg *msg, void *arg)
{
	struct query_ctx *ctx = arg;
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct genlmsghdr *gnlh;
	int ret;

	/* Keep reading to the ACK whatever happens here: a reply left in the
	 * socket would break the next request's sequence check (scan). */
	if (ctx->ret || ctx->got_reply)
		return NL_SKIP;
	if (!genlmsg_valid_hdr(nlh, 0)) {
		ctx->ret = -EBADMSG;
		return NL_SKIP;
	}
	gnlh = nlmsg_data(nlh);
	if (gnlh->cmd != ETHTOOL_MSG_FEATURES_GET_REPLY)
		return NL_SKIP;
	ret = ktm_ktls_offload_parse(genlmsg_attrdata(gnlh, 0),
				     (size_t)genlmsg_attrlen(gnlh, 0), ctx->out);
	if (ret)
		ctx->ret = ret;
	else
		ctx->got_reply = true;
	return NL_SKIP;
}

static int on_ack(struct nl_msg *msg, void *arg)
{
	struct query_ctx *ctx = arg;

	(void)msg;
	ctx->done = true;
	return NL_STOP;
}

static int on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
	struct query_ctx *ctx = arg;

	(void)nla;
	/* the kernel's errno as sent, e.g. -ENODEV for an unknown name */
	if (!ctx->ret)
		ctx->ret = e->error < 0 ? e->error : -EPROTO;
	ctx->done = true;
	return NL_STOP;
}

/* The FEATURES_GET request for @ifname (or @ifindex); 0 or -errno. */
static int build_request(struct nl_msg *msg, int family, const char *ifname,
			 int ifindex)
{
	struct nlattr *hdr;
	int ret;

	/* No ETHTOOL_A_HEADER_FLAGS: the verbose bitsets carry the names.
	 * The kernel validates strictly, so nests must say NLA_F_NESTED. */
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0,
			 ETHTOOL_MSG_FEATURES_GET, ETHTOOL_GENL_VERSION))
		return -ENOMEM;
	hdr = nla_nest_start(msg, ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED);
	if (!hdr)
		return -ENOMEM;
	ret = ifname ? nla_put_string(msg, ETHTOOL_A_HEADER_DEV_NAME, ifname)
		     : nla_put_u32(msg, ETHTOOL_A_HEADER_DEV_INDEX,
				   (uint32_t)ifindex);
	if (ret < 0)
		return nle_errno(ret);
	nla_nest_end(msg, hdr);
	return 0;
}

/* Send @msg and read until the reply and its ACK (or an error) came. */
static int exchange(struct nl_sock *sk, struct nl_msg *msg, struct nl_cb *cb,
		    struct query_ctx *ctx)
{
	int ret = nl_send_auto(sk, msg);

	if (ret < 0)
		return nle_errno(ret);
	/* the reply, then the ACK libnl asked for; or only an error */
	while (!ctx->done) {
		ret = nl_recvmsgs(sk, cb);
		if (ret < 0 && !ctx->done) {
			ctx->ret = ctx->ret ? ctx->ret : nle_errno(ret);
			break;
		}
	}
	if (ctx->ret)
		return ctx->ret;
	return ctx->got_reply ? 0 : -ENODATA;
}

/* One FEATURES_GET on a connected genetlink socket, by name or index. */
static int query_on(struct nl_sock *sk, int family, const char *ifname,
		    int ifindex, struct ktm_ktls_offload *out)
{
	struct query_ctx ctx = { .out = out };
	struct nl_msg *msg;
	struct nl_cb *cb;
	int ret;

	memset(out, 0, sizeof(*out));
	msg = nlmsg_alloc();
	if (!msg)
		return -ENOMEM;
	ret = build_request(msg, family, ifname, ifindex);
	if (ret)
		goto out_free_msg;
	cb = nl_cb_alloc(NL_CB_DEFAULT);
	if (!cb) {
		ret = -ENOMEM;
		goto out_free_msg;
	}
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_reply, &ctx);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, on_ack, &ctx);
	nl_cb_err(cb, NL_CB_CUSTOM, on_error, &ctx);
	ret = exchange(sk, msg, cb, &ctx);
	if (ret)
		memset(out, 0, sizeof(*out));
	nl_cb_put(cb);
out_free_msg:
	nlmsg_free(msg);
	return ret;
}

/* A connected generic netlink socket and the ethtool family id. */
static int genl_open(struct nl_sock **skp, int *family)
{
	struct nl_sock *sk;
	int ret;

	sk = nl_socket_alloc();
	if (!sk)
		return -ENOMEM;
	ret = genl_connect(sk);
	if (ret < 0) {
		ret = nle_errno(ret);
		goto err_free_sock;
	}
	/* replies with four verbose bitsets run to several KiB: let libnl
	 * peek at the size instead of truncating to its default buffer */
	nl_socket_enable_msg_peek(sk);
	ret = genl_ctrl_resolve(sk, ETHTOOL_GENL_NAME);
	if (ret < 0) {
		/* CTRL_CMD_GETFAMILY answers ENOENT: no CONFIG_ETHTOOL_NETLINK */
		ret = ret == -NLE_OBJ_NOTFOUND ? -EOPNOTSUPP : nle_errno(ret);
		goto err_free_sock;
	}
	*family = ret;
	*skp = sk;
	return 0;

err_free_sock:
	nl_socket_free(sk);
	return ret;
}

int ktm_ktls_offload_query(const char *ifname, struct ktm_ktls_offload *out)
{
	struct nl_sock *sk;
	int family, ret;

	memset(out, 0, sizeof(*out));
	if (!ifname || !*ifname)
		return -EINVAL;
	/* longer than any name or altname the kernel accepts */
	if (strnlen(ifname, ALTIFNAMSIZ) >= ALTIFNAMSIZ)
		return -ENODEV;
	ret = genl_open(&sk, &family);
	if (ret)
		return ret;
	ret = query_on(sk, family, ifname, 0, out);
	nl_socket_free(sk);
	return ret;
}

int ktm_ktls_offload_scan(struct ktm_ktls_offload *out, unsigned int max)
{
	struct ktm_ktls_offload one;
	struct nl_sock *rtnl, *genl;
	struct nl_cache *links;
	struct nl_object *obj;
	unsigned int n = 0;
	int family, ret;

	rtnl = nl_socket_alloc();
	if (!rtnl)
		return -ENOMEM;
	ret = nl_connect(rtnl, NETLINK_ROUTE);
	if (ret < 0) {
		ret = nle_errno(ret);
		goto out_free_rtnl;
	}
	ret = rtnl_link_alloc_cache(rtnl, AF_UNSPEC, &links);
	if (ret < 0) {
		ret = nle_errno(ret);
		goto out_free_rtnl;
	}
	ret = genl_open(&genl, &family);
	if (ret)
		goto out_free_links;

	for (obj = nl_cache_get_first(links); obj; obj = nl_cache_get_next(obj)) {
		struct rtnl_link *link = (struct rtnl_link *)obj;

		if (rtnl_link_get_flags(link) & IFF_LOOPBACK)
			continue;
		/* by index: a rename between the dump and now cannot make
		 * us ask about another device */
		ret = query_on(genl, family, NULL, rtnl_link_get_ifindex(link),
			       &one);
		if (ret == -ENODEV)
			continue;	/* went away since the dump */
		if (ret)
			goto out_free_genl;
		if (!one.ifname[0] && rtnl_link_get_name(link))
			strncpy(one.ifname, rtnl_link_get_name(link),
				sizeof(one.ifname) - 1);
		if (out && n < max)
			out[n] = one;
		if (n == INT_MAX) {
			ret = -EOVERFLOW;
			goto out_free_genl;
		}
		n++;
	}
	ret = (int)n;
out_free_genl:
	nl_socket_free(genl);
out_free_links:
	nl_cache_free(links);
out_free_rtnl:
	nl_socket_free(rtnl);
	return ret;
}
