// SPDX-License-Identifier: MIT
/*
 * OpenSSL's socket BIO writes with write(2): a peer that went away turns
 * the next alert, KeyUpdate or record into a SIGPIPE that kills the
 * caller unless it ignores the signal.  A library must not depend on its
 * caller's signal disposition, so every SSL of ours sits on this BIO: the
 * socket BIO's own ctrl (fd, close flag, retry state) and lifetime, with a
 * write that uses send(MSG_NOSIGNAL) and so returns EPIPE instead, and
 * reads and writes that go on after EINTR.
 *
 * The method table is built once per process and never changes after
 * (pthread_once); BIOs made from it belong to their SSL.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "internal.h"

static BIO_METHOD *nosig_method;
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

static int nosig_write(BIO *b, const char *buf, int len)
{
	int fd = -1;
	ssize_t n;

	BIO_get_fd(b, &fd);
	BIO_clear_retry_flags(b);
	do {
		n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && BIO_sock_should_retry((int)n))
		BIO_set_retry_write(b);
	return (int)n;
}

/* With SO_RCVTIMEO set a signal interrupts even an SA_RESTART read: go
 * on, so that only a timeout or the peer ends a read. */
static int nosig_read(BIO *b, char *buf, int len)
{
	int fd = -1;
	ssize_t n;

	BIO_get_fd(b, &fd);
	BIO_clear_retry_flags(b);
	do {
		n = recv(fd, buf, (size_t)len, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && BIO_sock_should_retry((int)n))
		BIO_set_retry_read(b);
	else if (n == 0)
		BIO_set_flags(b, BIO_FLAGS_IN_EOF);
	return (int)n;
}

static int nosig_puts(BIO *b, const char *str)
{
	return nosig_write(b, str, (int)strlen(str));
}

static void nosig_init(void)
{
	const BIO_METHOD *sock = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK |
				     BIO_TYPE_DESCRIPTOR, "ktm socket (no SIGPIPE)");

	if (!m)
		return;
	if (!BIO_meth_set_write(m, nosig_write) ||
	    !BIO_meth_set_puts(m, nosig_puts) ||
	    !BIO_meth_set_read(m, nosig_read) ||
	    !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock)) ||
	    !BIO_meth_set_create(m, BIO_meth_get_create(sock)) ||
	    !BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock))) {
		BIO_meth_free(m);
		return;
	}
	nosig_method = m;
}

bool ktm_bio_attach(struct ssl_st *ssl, int fd)
{
	BIO *b;

	pthread_once(&nosig_once, nosig_init);
	if (!nosig_method)
		return false;
	b = BIO_new(nosig_method);
	if (!b)
		return false;
	/* the fd stays the session's: SSL_free() neither closes it nor
	 * sends anything */
	BIO_set_fd(b, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, b, b);
	return true;
}
