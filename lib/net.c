// SPDX-License-Identifier: MIT
/* Small socket helpers shared inside the library. */
#include <errno.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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
