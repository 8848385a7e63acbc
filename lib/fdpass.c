// SPDX-License-Identifier: MIT
/*
 * Handing a ready kernel-TLS socket to another process (SCM_RIGHTS), e.g.
 * to QEMU, which then writes plaintext the kernel encrypts.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "internal.h"

bool ktm_fd_send(int unix_fd, int fd, const char *name, struct ktm_error **errp)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	const char *payload = name && *name ? name : "fd";
	struct iovec iov = { .iov_base = (void *)payload,
			     .iov_len = strlen(payload) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	ssize_t n;

	memset(&ctl, 0, sizeof(ctl));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do {
		n = sendmsg(unix_fd, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot pass fd %d over unix socket fd %d: %s", fd,
			      unix_fd, strerror(errno));
		return false;
	}
	return true;
}

int ktm_fd_recv(int unix_fd, char *name, size_t name_len,
		struct ktm_error **errp)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	char payload[256];
	struct iovec iov = { .iov_base = payload, .iov_len = sizeof(payload) - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	int fd = -1;
	ssize_t n;

	do {
		n = recvmsg(unix_fd, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno,
			      "cannot receive an fd on unix socket fd %d: %s",
			      unix_fd, strerror(errno));
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		size_t i, count;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < count; i++) {
			int got;

			memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fd < 0)
				fd = got;
			else
				close(got);	/* only one was asked for */
		}
	}
	if (fd < 0 || (msg.msg_flags & MSG_CTRUNC)) {
		if (fd >= 0)
			close(fd);
		ktm_error_set(errp, KTM_ERR_PEER, EBADMSG,
			      "unix socket fd %d delivered %s", unix_fd,
			      n == 0 ? "end of file instead of an fd" :
			      "a message without exactly one fd");
		return -1;
	}
	if (name && name_len) {
		size_t l = (size_t)n < name_len - 1 ? (size_t)n : name_len - 1;

		memcpy(name, payload, l);
		name[l] = '\0';
	}
	return fd;
}
