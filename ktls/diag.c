// SPDX-License-Identifier: MIT
/*
 * Per-socket TLS state from the kernel: a NETLINK_SOCK_DIAG request for one
 * exact TCP 4-tuple, answered with INET_DIAG_ULP_INFO → INET_ULP_INFO_TLS →
 * TLS_INFO_* (net/tls/tls_main.c, tls_get_info).  The kernel only adds the
 * ULP part for a requester with CAP_NET_ADMIN and when INET_DIAG_INFO is
 * requested (net/ipv4/inet_diag.c).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>

#include "ktls.h"

/* Walk the nested attributes of one level; netlink attributes and rtattr
 * share the same header layout. */
#define for_each_attr(a, buf, len)					\
	for (a = (const struct rtattr *)(buf);				\
	     RTA_OK(a, len); a = RTA_NEXT(a, len))

static uint16_t attr_u16(const struct rtattr *a)
{
	uint16_t v = 0;

	if (RTA_PAYLOAD(a) >= sizeof(v))
		memcpy(&v, RTA_DATA(a), sizeof(v));
	return v;
}

static void parse_tls(const struct rtattr *nest, struct ktm_ktls_diag *d)
{
	unsigned int len = RTA_PAYLOAD(nest);
	const struct rtattr *a;

	d->has_tls = true;
	for_each_attr(a, RTA_DATA(nest), len) {
		switch (a->rta_type & NLA_TYPE_MASK) {
		case TLS_INFO_VERSION:
			d->version = attr_u16(a);
			break;
		case TLS_INFO_CIPHER:
			d->cipher = attr_u16(a);
			break;
		case TLS_INFO_TXCONF:
			d->txconf = attr_u16(a);
			break;
		case TLS_INFO_RXCONF:
			d->rxconf = attr_u16(a);
			break;
		case TLS_INFO_ZC_RO_TX:
			d->zc_ro_tx = true;
			break;
		case TLS_INFO_RX_NO_PAD:
			d->rx_no_pad = true;
			break;
		}
	}
}

static void parse_ulp(const struct rtattr *nest, struct ktm_ktls_diag *d)
{
	unsigned int len = RTA_PAYLOAD(nest);
	const struct rtattr *a;

	d->has_ulp = true;
	for_each_attr(a, RTA_DATA(nest), len) {
		switch (a->rta_type & NLA_TYPE_MASK) {
		case INET_ULP_INFO_NAME: {
			size_t n = RTA_PAYLOAD(a);

			if (n >= sizeof(d->ulp))
				n = sizeof(d->ulp) - 1;
			memcpy(d->ulp, RTA_DATA(a), n);
			d->ulp[n] = '\0';
			break;
		}
		case INET_ULP_INFO_TLS:
			parse_tls(a, d);
			break;
		}
	}
}

int ktm_ktls_diag_parse(const void *buf, size_t len, struct ktm_ktls_diag *d)
{
	const struct nlmsghdr *nlh = buf;
	const struct inet_diag_msg *msg;
	const struct rtattr *a;
	unsigned int alen;

	memset(d, 0, sizeof(*d));
	if (len < sizeof(*nlh) || !NLMSG_OK(nlh, len))
		return -EBADMSG;
	if (nlh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(nlh);

		if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			return -EBADMSG;
		return e->error ? e->error : -ENOENT;
	}
	if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    nlh->nlmsg_len < NLMSG_LENGTH(sizeof(*msg)))
		return -EBADMSG;
	msg = NLMSG_DATA(nlh);
	alen = nlh->nlmsg_len - NLMSG_LENGTH(sizeof(*msg));
	for_each_attr(a, (const char *)msg + NLMSG_ALIGN(sizeof(*msg)), alen)
		if ((a->rta_type & NLA_TYPE_MASK) == INET_DIAG_ULP_INFO)
			parse_ulp(a, d);
	return 0;
}

static int fill_req(int fd, struct inet_diag_req_v2 *req)
{
	struct sockaddr_storage local, peer;
	socklen_t llen = sizeof(local), plen = sizeof(peer);

	if (getsockname(fd, (struct sockaddr *)&local, &llen) ||
	    getpeername(fd, (struct sockaddr *)&peer, &plen))
		return -errno;
	memset(req, 0, sizeof(*req));
	req->sdiag_family = (uint8_t)local.ss_family;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_ext = 1 << (INET_DIAG_INFO - 1);
	req->idiag_states = ~0u;
	req->id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (local.ss_family == AF_INET) {
		const struct sockaddr_in *l = (void *)&local, *p = (void *)&peer;

		req->id.idiag_sport = l->sin_port;
		req->id.idiag_dport = p->sin_port;
		memcpy(req->id.idiag_src, &l->sin_addr, 4);
		memcpy(req->id.idiag_dst, &p->sin_addr, 4);
	} else if (local.ss_family == AF_INET6) {
		const struct sockaddr_in6 *l = (void *)&local, *p = (void *)&peer;

		req->id.idiag_sport = l->sin6_port;
		req->id.idiag_dport = p->sin6_port;
		memcpy(req->id.idiag_src, &l->sin6_addr, 16);
		memcpy(req->id.idiag_dst, &p->sin6_addr, 16);
	} else {
		return -EAFNOSUPPORT;
	}
	return 0;
}

int ktm_ktls_diag_query(int fd, struct ktm_ktls_diag *d)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg;
	union {
		char buf[8192];
		struct nlmsghdr align;
	} reply;
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	ssize_t n;
	int sk, ret;

	ret = fill_req(fd, &msg.req);
	if (ret)
		return ret;
	msg.nlh = (struct nlmsghdr){
		.nlmsg_len = sizeof(msg),
		.nlmsg_type = SOCK_DIAG_BY_FAMILY,
		.nlmsg_flags = NLM_F_REQUEST,
		.nlmsg_seq = 1,
	};

	sk = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (sk < 0)
		return -errno;
	n = sendto(sk, &msg, sizeof(msg), 0, (struct sockaddr *)&nl,
		   sizeof(nl));
	if (n < 0) {
		ret = -errno;
		goto out_close;
	}
	do {
		n = recv(sk, reply.buf, sizeof(reply.buf), 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = ktm_ktls_diag_parse(reply.buf, (size_t)n, d);
out_close:
	close(sk);
	return ret;
}
