// SPDX-License-Identifier: MIT
/* Small socket helpers shared inside the library. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"

int ktm_net_tcp_pair(int fds[2])
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t len = sizeof(addr);
	int lfd, cfd, afd, ret;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&addr, &len)) {
		ret = -errno;
		goto out_close_listen;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0) {
		ret = -errno;
		goto out_close_listen;
	}
	if (connect(cfd, (struct sockaddr *)&addr, sizeof(addr))) {
		ret = -errno;
		goto err_close_client;
	}
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (afd < 0) {
		ret = -errno;
		goto err_close_client;
	}
	fds[0] = cfd;
	fds[1] = afd;
	ret = 0;
	goto out_close_listen;

err_close_client:
	close(cfd);
out_close_listen:
	close(lfd);
	return ret;
}

void ktm_net_addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(a->sin_port));
	} else if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *a = (const struct sockaddr_un *)sa;

		snprintf(buf, len, "unix:%.*s", (int)sizeof(a->sun_path),
			 a->sun_path);
	} else {
		snprintf(buf, len, "?");
	}
}

const char *ktm_fd_addr_text(int fd, bool peer, char *buf, size_t len)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	int ret;

	ret = peer ? getpeername(fd, (struct sockaddr *)&ss, &sl) :
		     getsockname(fd, (struct sockaddr *)&ss, &sl);
	if (ret || sl <= offsetof(struct sockaddr_un, sun_path) ||
	    (ss.ss_family == AF_UNIX &&
	     !((struct sockaddr_un *)&ss)->sun_path[0]))
		snprintf(buf, len, "fd %d", fd);	/* unnamed: a socketpair */
	else
		ktm_net_addr_text((struct sockaddr *)&ss, buf, len);
	return buf;
}

#define KTM_TCP_CLOSE 7		/* include/net/tcp_states.h */

/*
 * Why the TCP connection on @fd ended, when the kernel knows better than
 * "end of file": a pending socket error; or the kernel gave up on it
 * (state CLOSE) after retransmitting or probing, or while the peer's
 * window was shut (a peer that stopped reading: TCP_USER_TIMEOUT ends the
 * zero-window probes, and a kernel-TLS send that had queued part of its
 * data takes the ETIMEDOUT without reporting it).  A peer's FIN leaves
 * none of these.  0 for a plain end of file.
 */
int ktm_net_end_cause(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (!getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) && soerr)
		return soerr;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
	    ti.tcpi_state != KTM_TCP_CLOSE)
		return 0;
	if (ti.tcpi_retransmits || ti.tcpi_probes || ti.tcpi_total_retrans)
		return ETIMEDOUT;
	if (len > offsetof(struct tcp_info, tcpi_snd_wnd) && !ti.tcpi_snd_wnd)
		return ETIMEDOUT;
	return 0;
}
