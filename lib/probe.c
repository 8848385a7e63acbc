// SPDX-License-Identifier: MIT
/*
 * What this host's kernel TLS can do, found by trying it on throwaway
 * loopback connections and phrased for users.  A live session is never
 * touched: rekey support is read from the kernel's counters, because a
 * kernel >= 6.14 silently accepts a second key.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>
#include <liburing.h>

#include "internal.h"
#include "ktls.h"

#define KTM_REASON_LEN 192

struct ktm_probe_item {
	enum ktm_support support;
	char reason[KTM_REASON_LEN];
};

struct ktm_probe {
	char kernel[65];
	struct ktm_probe_item ktls;
	const char *ktls_hint;
	/* [0] TLS 1.2, [1] TLS 1.3; cipher enum minus one */
	struct ktm_probe_item cipher[2][KTM_CIPHER_COUNT];
	struct ktm_probe_item rekey;
	struct ktm_probe_item io_uring;
	struct ktm_probe_item offload;
};

static void item_set(struct ktm_probe_item *it, enum ktm_support s,
		     const char *fmt, ...) KTM_PRINTF(3, 4);

static void item_set(struct ktm_probe_item *it, enum ktm_support s,
		     const char *fmt, ...)
{
	va_list ap;

	it->support = s;
	va_start(ap, fmt);
	vsnprintf(it->reason, sizeof(it->reason), fmt, ap);
	va_end(ap);
}

static void close_pair(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
}

/* Try one direction's install with a throwaway all-zero key. */
static int try_install(int fd, enum ktm_ktls_dir dir, uint16_t version,
		       enum ktm_cipher cipher)
{
	static const uint8_t zero[32], iv[KTM_KTLS_IV_LEN];
	const struct ktm_ktls_cipher *row = ktm_ktls_cipher_find(cipher);
	struct ktm_ktls_crypto c;
	int ret;

	ret = ktm_ktls_crypto_fill(&c, version, cipher, zero, row->key_len,
				   iv, 0);
	if (!ret)
		ret = ktm_ktls_install(NULL, fd, dir, &c);
	ktm_ktls_crypto_wipe(&c);
	return ret;
}

static void probe_cipher(struct ktm_probe_item *it, uint16_t version,
			 enum ktm_cipher cipher)
{
	const char *vname = ktm_tls_version_name(version);
	const char *cname = ktm_cipher_name(cipher);
	char eb[24];
	int fds[2], ret;
	const char *dir = "TLS_TX";

	ret = ktm_net_tcp_pair(fds);
	if (ret) {
		item_set(it, KTM_PROBE_FAILED,
			 "cannot open a loopback TCP connection: %s",
			 ktm_errno_name(ret, eb));
		return;
	}
	ret = ktm_ktls_ulp_attach(NULL, fds[0]);
	if (!ret)
		ret = ktm_ktls_ulp_attach(NULL, fds[1]);
	if (ret) {
		item_set(it, KTM_PROBE_FAILED, "TCP_ULP \"tls\": %s",
			 ktm_errno_name(ret, eb));
		goto out_close;
	}
	ret = try_install(fds[0], KTM_KTLS_TX, version, cipher);
	if (!ret) {
		dir = "TLS_RX";
		ret = try_install(fds[1], KTM_KTLS_RX, version, cipher);
	}
	if (!ret)
		item_set(it, KTM_SUPPORTED, "send and receive");
	else if (ret == -ENOENT || ret == -EINVAL || ret == -ENOPROTOOPT ||
		 ret == -EOPNOTSUPP)
		item_set(it, KTM_UNSUPPORTED,
			 "kernel rejected %s for %s (%s: %s)", cname, vname,
			 dir, ktm_errno_name(ret, eb));
	else
		item_set(it, KTM_PROBE_FAILED, "installing %s for %s failed (%s: %s)",
			 cname, vname, dir, ktm_errno_name(ret, eb));
out_close:
	close_pair(fds);
}

/* 0: the ULP attached; otherwise the item says why not. */
static int probe_ulp(struct ktm_probe *p)
{
	char eb[24];
	int fds[2], ret;

	ret = ktm_net_tcp_pair(fds);
	if (ret) {
		item_set(&p->ktls, KTM_PROBE_FAILED,
			 "cannot open a loopback TCP connection to probe kernel TLS: %s",
			 ktm_errno_name(ret, eb));
		return ret;
	}
	ret = ktm_ktls_ulp_attach(NULL, fds[0]);
	close_pair(fds);
	if (!ret) {
		item_set(&p->ktls, KTM_SUPPORTED,
			 "the kernel has the \"tls\" TCP ULP");
		return 0;
	}
	/* Only ENOENT means "no tls ULP" (the kernel's own selftest draws
	 * the same line); anything else is a failure worth showing. */
	if (ret == -ENOENT) {
		item_set(&p->ktls, KTM_UNSUPPORTED,
			 "the kernel has no \"tls\" TCP ULP (TCP_ULP: ENOENT)");
		p->ktls_hint = "load the tls module (modprobe tls) or use a "
			       "kernel built with CONFIG_TLS";
	} else {
		item_set(&p->ktls, KTM_PROBE_FAILED,
			 "attaching the \"tls\" TCP ULP failed (TCP_ULP: %s)",
			 ktm_errno_name(ret, eb));
	}
	return ret;
}

/* The one answer to "can this kernel rekey": a throwaway loopback pair
 * takes a TX key, then a second one.  Kernels from 6.14 take it (and
 * would on a live socket too, silently: never try this on a session);
 * older ones say EBUSY (docs/design.md §3). */
static int rekey_answer = 1;	/* 1: not asked yet */
static pthread_once_t rekey_once = PTHREAD_ONCE_INIT;

static void rekey_try(void)
{
	int fds[2], ret;

	ret = ktm_net_tcp_pair(fds);
	if (ret) {
		rekey_answer = ret;
		return;
	}
	ret = ktm_ktls_ulp_attach(NULL, fds[0]);
	if (!ret)
		ret = try_install(fds[0], KTM_KTLS_TX, KTM_TLS_1_3,
				  KTM_CIPHER_AES_GCM_128);
	if (!ret)
		ret = try_install(fds[0], KTM_KTLS_TX, KTM_TLS_1_3,
				  KTM_CIPHER_AES_GCM_128);
	rekey_answer = ret;
	close(fds[0]);
	close(fds[1]);
}

int ktm_kernel_rekey_check(void)
{
	pthread_once(&rekey_once, rekey_try);
	return rekey_answer;
}

static void probe_rekey(struct ktm_probe *p)
{
	char eb[24];
	int ret = ktm_kernel_rekey_check();

	if (!ret)
		item_set(&p->rekey, KTM_SUPPORTED,
			 "TLS 1.3 KeyUpdate on a live socket");
	else if (ret == -EBUSY)
		item_set(&p->rekey, KTM_UNSUPPORTED,
			 "kernel %s cannot replace keys on a live socket "
			 "(needs 6.14 or later); long migrations reconnect instead",
			 p->kernel);
	else if (ret == -ENOENT)
		item_set(&p->rekey, KTM_UNSUPPORTED, "no kernel TLS to rekey "
			 "(TCP_ULP \"tls\" or the AES-GCM module: ENOENT)");
	else
		item_set(&p->rekey, KTM_PROBE_FAILED, "cannot tell whether "
			 "the kernel replaces keys (a second TLS_TX on a test "
			 "socket: %s)", ktm_errno_name(ret, eb));
}

static void probe_io_uring(struct ktm_probe *p)
{
	struct io_uring ring;
	char eb[24];
	int ret;

	ret = io_uring_queue_init(2, &ring, 0);
	if (ret) {
		item_set(&p->io_uring, KTM_UNSUPPORTED,
			 "io_uring_setup failed: %s", ktm_errno_name(ret, eb));
		return;
	}
	io_uring_queue_exit(&ring);
	item_set(&p->io_uring, KTM_SUPPORTED, "io_uring available");
}

/* NIC TLS offload: which interfaces offer tls-hw-tx/rx-offload. */
static const char *offload_word(bool on, bool avail)
{
	return on ? "on" : avail ? "off" : "no";
}

/* "eth0 (tx on, rx off), ..." for the interfaces that offer TLS offload;
 * false when none does. */
static bool offload_list(const struct ktm_ktls_offload *nics, int n,
			 char *list, size_t len)
{
	size_t used = 0;
	bool any = false;
	int i, w;

	list[0] = '\0';
	for (i = 0; i < n; i++) {
		const struct ktm_ktls_offload *o = &nics[i];

		if (!o->tx_avail && !o->rx_avail && !o->tx_on && !o->rx_on)
			continue;
		any = true;
		w = snprintf(list + used, len - used, "%s%s (tx %s, rx %s)",
			     used ? ", " : "", o->ifname,
			     offload_word(o->tx_on, o->tx_avail),
			     offload_word(o->rx_on, o->rx_avail));
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
	}
	return any;
}

static void probe_offload(struct ktm_probe *p)
{
	struct ktm_ktls_offload nics[16];
	char list[KTM_REASON_LEN];
	char eb[24];
	int n;

	n = ktm_ktls_offload_scan(nics, 16);
	if (n < 0) {
		item_set(&p->offload, KTM_PROBE_FAILED,
			 "cannot read NIC features (ethtool netlink: %s)",
			 ktm_errno_name(n, eb));
		return;
	}
	if (offload_list(nics, n < 16 ? n : 16, list, sizeof(list)))
		item_set(&p->offload, KTM_SUPPORTED, "%s", list);
	else if (n == 0)
		item_set(&p->offload, KTM_UNSUPPORTED,
			 "no network interface besides loopback");
	else
		item_set(&p->offload, KTM_UNSUPPORTED,
			 "none of %d interface(s) offers tls-hw-tx-offload or "
			 "tls-hw-rx-offload (needs e.g. mlx5 ConnectX-6 Dx)", n);
}

struct ktm_probe *ktm_probe_new(struct ktm_error **errp)
{
	static const uint16_t versions[2] = { KTM_TLS_1_2, KTM_TLS_1_3 };
	struct ktm_probe *p;
	struct utsname u;
	unsigned int v, c;

	p = calloc(1, sizeof(*p));
	if (!p) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory probing kernel TLS");
		return NULL;
	}
	if (uname(&u) == 0)
		snprintf(p->kernel, sizeof(p->kernel), "%s", u.release);

	if (probe_ulp(p)) {
		for (v = 0; v < 2; v++)
			for (c = 0; c < KTM_CIPHER_COUNT; c++)
				item_set(&p->cipher[v][c], p->ktls.support,
					 "%s", p->ktls.reason);
	} else {
		for (v = 0; v < 2; v++)
			for (c = 0; c < KTM_CIPHER_COUNT; c++)
				probe_cipher(&p->cipher[v][c], versions[v],
					     (enum ktm_cipher)(c + 1));
	}
	probe_rekey(p);
	probe_io_uring(p);
	probe_offload(p);
	return p;
}

void ktm_probe_free(struct ktm_probe *probe)
{
	free(probe);
}

const char *ktm_probe_kernel(const struct ktm_probe *probe)
{
	return probe->kernel;
}

static enum ktm_support item_get(const struct ktm_probe_item *it,
				 const char **reason)
{
	if (reason)
		*reason = it->reason;
	return it->support;
}

enum ktm_support ktm_probe_ktls(const struct ktm_probe *probe,
				const char **reason, const char **hint)
{
	if (hint)
		*hint = probe->ktls_hint;
	return item_get(&probe->ktls, reason);
}

enum ktm_support ktm_probe_cipher(const struct ktm_probe *probe,
				  enum ktm_tls_version version,
				  enum ktm_cipher cipher, const char **reason)
{
	static const struct ktm_probe_item bad = {
		.support = KTM_UNSUPPORTED,
		.reason = "unknown TLS version or cipher",
	};
	unsigned int v = version == KTM_TLS_1_3 ? 1 : 0;

	if ((version != KTM_TLS_1_2 && version != KTM_TLS_1_3) ||
	    cipher < 1 || cipher > KTM_CIPHER_COUNT)
		return item_get(&bad, reason);
	return item_get(&probe->cipher[v][cipher - 1], reason);
}

enum ktm_support ktm_probe_rekey(const struct ktm_probe *probe,
				 const char **reason)
{
	return item_get(&probe->rekey, reason);
}

enum ktm_support ktm_probe_io_uring(const struct ktm_probe *probe,
				    const char **reason)
{
	return item_get(&probe->io_uring, reason);
}

enum ktm_support ktm_probe_offload(const struct ktm_probe *probe,
				   const char **reason)
{
	return item_get(&probe->offload, reason);
}
