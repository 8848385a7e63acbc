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

TEST(ipv4_host_and_port)
{
	struct tool_addr a;
	char msg[256];

	ASSERT_TRUE(parse("127.0.0.1:4444", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.host, "127.0.0.1");
	EXPECT_STREQ(a.port, "4444");
	EXPECT_FALSE(a.is_unix);
	ASSERT_TRUE(parse("tcp:dst.example:65535", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.host, "dst.example");
	EXPECT_STREQ(a.port, "65535");
	EXPECT_STREQ(a.text, "tcp:dst.example:65535");
}

TEST(ipv6_in_brackets)
{
	struct tool_addr a;
	char msg[256];

	ASSERT_TRUE(parse("[::1]:4444", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.host, "::1");
	EXPECT_STREQ(a.port, "4444");
	ASSERT_TRUE(parse("[2001:db8::7]:0", TOOL_ADDR_LISTEN, &a, msg,
			  sizeof(msg)));
	EXPECT_STREQ(a.host, "2001:db8::7");
	EXPECT_STREQ(a.port, "0");
}

TEST(bare_port_only_when_listening)
{
	struct tool_addr a;
	char msg[256];

	ASSERT_TRUE(parse("4444", TOOL_ADDR_LISTEN, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.host, "");
	EXPECT_STREQ(a.port, "4444");
	ASSERT_TRUE(parse(":4444", TOOL_ADDR_LISTEN, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.host, "");
	EXPECT_FALSE(parse("4444", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "test address '4444' needs a host: HOST:PORT");
	EXPECT_FALSE(parse(":4444", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "test address ':4444' needs a host: HOST:PORT");
}

TEST(port_zero_only_when_listening)
{
	struct tool_addr a;
	char msg[256];

	ASSERT_TRUE(parse("0", TOOL_ADDR_LISTEN, &a, msg, sizeof(msg)));
	EXPECT_STREQ(a.port, "0");
	EXPECT_FALSE(parse("127.0.0.1:0", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "test address '127.0.0.1:0' has port 0");
	EXPECT_FALSE(parse("127.0.0.1:000", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "test address '127.0.0.1:000' has port 0");
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
	EXPECT_FALSE(parse("dst.example", 0, &a, msg, sizeof(msg)));
	EXPECT_STREQ(msg, "test address 'dst.example' needs a host: HOST:PORT");
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
