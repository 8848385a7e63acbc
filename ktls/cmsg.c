// SPDX-License-Identifier: MIT
/*
 * Records of a chosen content type: TLS_SET_RECORD_TYPE on the way out,
 * TLS_GET_RECORD_TYPE on the way in.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "ktls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

ssize_t ktm_ktls_send_record(int fd, uint8_t type, const void *buf,
			     size_t len, int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	memset(&ctl, 0, sizeof(ctl));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_TLS;
	cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
	cmsg->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cmsg) = type;

	n = sendmsg(fd, &msg, flags);
	return n < 0 ? -errno : n;
}

int ktm_ktls_cmsg_record_type(const struct msghdr *msg, uint8_t *type)
{
	struct cmsghdr *cmsg;

	if (msg->msg_flags & MSG_CTRUNC)
		return -EMSGSIZE;
	for (cmsg = CMSG_FIRSTHDR(msg); cmsg;
	     cmsg = CMSG_NXTHDR((struct msghdr *)msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_TLS ||
		    cmsg->cmsg_type != TLS_GET_RECORD_TYPE)
			continue;
		if (cmsg->cmsg_len < CMSG_LEN(sizeof(uint8_t)))
			return -EMSGSIZE;
		*type = *CMSG_DATA(cmsg);
		return 0;
	}
	return -ENOMSG;
}

ssize_t ktm_ktls_recv_record(int fd, void *buf, size_t len, int flags,
			     struct ktm_ktls_rec *rec)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint8_t))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	ssize_t n;
	int ret;

	n = recvmsg(fd, &msg, flags);
	if (n < 0)
		return -errno;
	rec->eor = msg.msg_flags & MSG_EOR;
	ret = ktm_ktls_cmsg_record_type(&msg, &rec->type);
	if (ret == -ENOMSG) {
		/* Nothing decrypted (end of stream): no record to type. */
		if (n == 0) {
			rec->type = 0;
			return 0;
		}
		return -EPROTO;
	}
	if (ret)
		return ret;
	return n;
}

/* RFC 8446 §4.6.3: msg_type key_update(24), uint24 length 1,
 * KeyUpdateRequest (0 not requested, 1 requested). */
int ktm_ktls_keyupdate_send(int fd, bool request_update)
{
	uint8_t ku[KTM_KTLS_KEYUPDATE_LEN] = { 24, 0, 0, 1, request_update };
	ssize_t n;

	n = ktm_ktls_send_record(fd, KTM_KTLS_REC_HANDSHAKE, ku, sizeof(ku),
				 MSG_NOSIGNAL);
	if (n < 0)
		return (int)n;
	return n == sizeof(ku) ? 0 : -EIO;
}

int ktm_ktls_keyupdate_parse(const uint8_t *buf, size_t len,
			     bool *request_update)
{
	if (len != KTM_KTLS_KEYUPDATE_LEN || buf[0] != 24 || buf[1] != 0 ||
	    buf[2] != 0 || buf[3] != 1 || buf[4] > 1)
		return -EBADMSG;
	*request_update = buf[4];
	return 0;
}
