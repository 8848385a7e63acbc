// SPDX-License-Identifier: MIT
/*
 * Attaching the tls ULP and installing keys: the only place that calls
 * setsockopt(SOL_TLS) and getsockopt(SOL_TLS).
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "ktls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static int sys_setsockopt(void *priv, int fd, int level, int name,
			  const void *val, socklen_t len)
{
	(void)priv;
	return setsockopt(fd, level, name, val, len) ? -errno : 0;
}

static int sys_getsockopt(void *priv, int fd, int level, int name, void *val,
			  socklen_t *len)
{
	(void)priv;
	return getsockopt(fd, level, name, val, len) ? -errno : 0;
}

static const struct ktm_ktls_ops sys_ops = {
	.setsockopt = sys_setsockopt,
	.getsockopt = sys_getsockopt,
};

static const struct ktm_ktls_ops *ops_or_sys(const struct ktm_ktls_ops *ops)
{
	return ops ? ops : &sys_ops;
}

/* The single SOL_TLS setsockopt call site. */
static int tls_set(const struct ktm_ktls_ops *ops, int fd, int name,
		   const void *val, socklen_t len)
{
	ops = ops_or_sys(ops);
	return ops->setsockopt(ops->priv, fd, SOL_TLS, name, val, len);
}

int ktm_ktls_ulp_attach(const struct ktm_ktls_ops *ops, int fd)
{
	static const char ulp[] = "tls";

	ops = ops_or_sys(ops);
	return ops->setsockopt(ops->priv, fd, IPPROTO_TCP, TCP_ULP, ulp,
			       sizeof(ulp) - 1);
}

int ktm_ktls_install(const struct ktm_ktls_ops *ops, int fd,
		     enum ktm_ktls_dir dir, const struct ktm_ktls_crypto *c)
{
	if (dir != KTM_KTLS_TX && dir != KTM_KTLS_RX)
		return -EINVAL;
	return tls_set(ops, fd, (int)dir, &c->u, c->len);
}

int ktm_ktls_read_back(const struct ktm_ktls_ops *ops, int fd,
		       enum ktm_ktls_dir dir, unsigned int cipher,
		       struct ktm_ktls_crypto *out)
{
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(cipher);
	socklen_t len;
	int ret;

	if (!row)
		return -EPROTONOSUPPORT;
	if (dir != KTM_KTLS_TX && dir != KTM_KTLS_RX)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	/* The kernel rejects any length but the cipher's exact struct size
	 * (net/tls/tls_main.c, do_tls_getsockopt_conf). */
	len = row->info_len;
	ops = ops_or_sys(ops);
	ret = ops->getsockopt(ops->priv, fd, SOL_TLS, (int)dir, &out->u, &len);
	if (ret)
		return ret;
	if (out->u.info.cipher_type != row->kernel_type)
		return -EPROTO;
	out->len = len;
	return 0;
}

int ktm_ktls_rx_expect_no_pad(const struct ktm_ktls_ops *ops, int fd,
			      bool on)
{
#ifdef TLS_RX_EXPECT_NO_PAD
	int val = on;

	return tls_set(ops, fd, TLS_RX_EXPECT_NO_PAD, &val, sizeof(val));
#else
	(void)ops, (void)fd, (void)on;
	return -ENOPROTOOPT;
#endif
}

int ktm_ktls_tx_zerocopy_ro(const struct ktm_ktls_ops *ops, int fd, bool on)
{
	int val = on;

	return tls_set(ops, fd, TLS_TX_ZEROCOPY_RO, &val, sizeof(val));
}
