// SPDX-License-Identifier: MIT
/*
 * The tool's one address grammar and TCP listener (tools/addr.c): the
 * forms every --connect/--listen and the proxy's ends take, the sentence
 * each bad form gets, and what a listening socket really accepts (the
 * kernel's answer to a connect is the oracle, not the parser's fields).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "harness.h"
#include "tool.h"

/* Parse @s with @flags; the error's message into @msg ("" on success). */
static bool parse(const char *s, unsigned int flags, struct tool_addr *a,
		  char *msg, size_t len)
{
	struct ktm_error *err = NULL;
	bool ok = tool_addr_parse(s, flags, "test address", a, &err);

	snprintf(msg, len, "%s", err ? ktm_error_message(err) : "");
	if (err && !ktm_error_hint(err))
		snprintf(msg, len, "(no hint)");
	ktm_error_free(err);
	return ok;
}

#define L TOOL_ADDR_LISTEN

/* Each form as written by hand: the host and port it means, or the
 * sentence it gets (connecting, or with L listening). */
static const struct form {
	const char *in;
	unsigned int flags;
	const char *host, *port, *msg;
} forms[] = {
	{ "127.0.0.1:4444", 0, "127.0.0.1", "4444", NULL },
	{ "tcp:dst.example:65535", 0, "dst.example", "65535", NULL },
	{ "[::1]:4444", 0, "::1", "4444", NULL },
	{ "[2001:db8::7]:0", L, "2001:db8::7", "0", NULL },
	{ "4444", L, "", "4444", NULL },
	{ ":4444", L, "", "4444", NULL },
	{ "0", L, "", "0", NULL },
	{ "4444", 0, NULL, NULL, "test address '4444' needs a host: HOST:PORT" },
	{ ":4444", 0, NULL, NULL, "test address ':4444' needs a host: HOST:PORT" },
	{ "dst.example", 0, NULL, NULL,
	  "test address 'dst.example' needs a host: HOST:PORT" },
	{ "127.0.0.1:0", 0, NULL, NULL, "test address '127.0.0.1:0' has port 0" },
	{ "127.0.0.1:000", 0, NULL, NULL,
	  "test address '127.0.0.1:000' has port 0" },
};

TEST(forms_mean_what_they_say)
{
	struct tool_addr a;
	char msg[256];
	size_t i;

	for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		const struct form *f = &forms[i];
		bool ok = parse(f->in, f->flags, &a, msg, sizeof(msg));

		TH_LOG("'%s'%s: %s", f->in, f->flags ? " (listening)" : "",
		       ok ? "parsed" : msg);
		EXPECT_EQ(ok, f->msg == NULL);
		if (ok && !f->msg) {
			EXPECT_STREQ(a.host, f->host);
			EXPECT_STREQ(a.port, f->port);
			EXPECT_FALSE(a.is_unix);
			EXPECT_STREQ(a.text, f->in);
		} else if (!ok && f->msg) {
			EXPECT_STREQ(msg, f->msg);
		}
	}
}

TEST(unix_only_where_allowed)
{
	struct tool_addr a;
	char msg[256], longp[200];

	ASSERT_TRUE(parse("unix:/run/mig.sock", TOOL_ADDR_UNIX, &a, msg,
			  sizeof(msg)));
	EXPECT_TRUE(a.is_unix);
	EXPECT_STREQ(a.path, "/run/mig.sock");
	EXPECT_FALSE(parse("unix:/run/mig.sock", TOOL_ADDR_LISTEN, &a, msg,
			   sizeof(msg)));
	EXPECT_STREQ(msg, "test address 'unix:/run/mig.sock' must be "
		     "HOST:PORT, not a unix socket");
	EXPECT_FALSE(parse("unix:", TOOL_ADDR_UNIX, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "unix socket path '' is empty or longer than 107 "
		     "bytes");
	memset(longp, 'p', sizeof(longp));
	memcpy(longp, "unix:/", 6);
	longp[5 + 108] = '\0';		/* a 108-byte path: no room for NUL */
	EXPECT_FALSE(parse(longp, TOOL_ADDR_UNIX, &a, msg, sizeof(msg)));
}

/* Each bad form, connecting and listening: one sentence naming it. */
TEST(bad_forms_are_named)
{
	static const char *const bad[] = {
		"127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:44a", "h:-1",
		"[::1]", "[::1]4444", "[]:4444", "[::1:4444", "h:99999999999999999",
	};
	struct tool_addr a;
	char msg[256], want[256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(want, sizeof(want), "test address '%s' is not HOST:PORT "
			 "with a port from 0 to 65535", bad[i]);
		EXPECT_FALSE(parse(bad[i], 0, &a, msg, sizeof(msg)));
		EXPECT_STREQ(msg, want);
		EXPECT_FALSE(parse(bad[i], TOOL_ADDR_LISTEN, &a, msg,
				   sizeof(msg)));
		EXPECT_STREQ(msg, want);
	}
}

/* A listening socket on @spec and its port (host order). */
static int listen_on(const char *spec, unsigned int *port)
{
	struct ktm_error *err = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct tool_addr a;
	int fd;

	if (!tool_addr_parse(spec, TOOL_ADDR_LISTEN, "listen address", &a, &err))
		return ktm_error_free(err), -1;
	fd = tool_addr_listen(&a, &err);
	ktm_error_free(err);
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -1;
	*port = ntohs(ss.ss_family == AF_INET6 ?
		      ((struct sockaddr_in6 *)&ss)->sin6_port :
		      ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* Whether a TCP connect to @ip:@port succeeds. */
static bool connects(int family, const char *ip, unsigned int port)
{
	struct sockaddr_storage ss = { .ss_family = (sa_family_t)family };
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (family == AF_INET) {
		a4->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, ip, &a4->sin_addr);
	} else {
		a6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, ip, &a6->sin6_addr);
	}
	ok = fd >= 0 && !connect(fd, (struct sockaddr *)&ss, sizeof(ss));
	if (fd >= 0)
		close(fd);
	return ok;
}

static bool have_ipv6_loopback(void)
{
	unsigned int port;
	int fd = listen_on("[::1]:0", &port);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

TEST(bare_port_listens_dual_stack)
{
	unsigned int port = 0;
	int fd;

	if (!have_ipv6_loopback())
		SKIP(return, "no IPv6 loopback (::1) in this network namespace");
	fd = listen_on("0", &port);
	ASSERT_GE(fd, 0);
	EXPECT_NE(port, 0);
	EXPECT_TRUE(connects(AF_INET, "127.0.0.1", port));
	EXPECT_TRUE(connects(AF_INET6, "::1", port));
	close(fd);
}

TEST(host_listens_on_that_address_only)
{
	unsigned int port = 0;
	int fd = listen_on("127.0.0.1:0", &port);

	ASSERT_GE(fd, 0);
	EXPECT_TRUE(connects(AF_INET, "127.0.0.1", port));
	if (have_ipv6_loopback())
		EXPECT_FALSE(connects(AF_INET6, "::1", port));
	close(fd);
}

TEST(port_in_use_is_named_with_a_hint)
{
	struct ktm_error *err = NULL;
	unsigned int port = 0;
	struct tool_addr a;
	char spec[32], want[64];
	int fd = listen_on("127.0.0.1:0", &port), fd2;

	ASSERT_GE(fd, 0);
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	ASSERT_TRUE(tool_addr_parse(spec, TOOL_ADDR_LISTEN, "listen address",
				    &a, NULL));
	fd2 = tool_addr_listen(&a, &err);
	EXPECT_EQ(fd2, -1);
	ASSERT_TRUE(err != NULL);
	snprintf(want, sizeof(want), "cannot listen on %s: %s", spec,
		 strerror(EADDRINUSE));
	EXPECT_STREQ(ktm_error_message(err), want);
	EXPECT_EQ(ktm_error_errno(err), EADDRINUSE);
	EXPECT_TRUE(ktm_error_hint(err) != NULL);
	ktm_error_free(err);
	close(fd);
}

TEST_HARNESS_MAIN
