// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the tool's one address parser (tools/addr.c,
 * tool_addr_parse: "unix:PATH", "tcp:HOST:PORT", "HOST:PORT", "[V6]:PORT",
 * "PORT"), which the proxy's ends and every --connect/--listen use.  The
 * first byte picks the flags (unix allowed, listening).  Oracles: the errp
 * contract, and a parsed address is one the grammar allows (a port of
 * 0-65535 in digits, not 0 and with a host when connecting, or a
 * non-empty unix path only where allowed).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arg.h"
#include "tool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool port_ok(const struct tool_addr *a, bool listening)
{
	return a->port[0] && strspn(a->port, "0123456789") == strlen(a->port) &&
	       atol(a->port) <= 65535 &&
	       (listening || (atol(a->port) > 0 && a->host[0]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktm_error *err = NULL;
	char *arg = fuzz_arg(data, size);
	unsigned int flags;
	struct tool_addr a;
	bool ok;

	if (!arg)
		return 0;
	flags = (data[0] & 1 ? TOOL_ADDR_UNIX : 0) |
		(data[0] & 2 ? TOOL_ADDR_LISTEN : 0);
	ok = tool_addr_parse(arg, flags, "fuzz address", &a, &err);
	if (ok == (err != NULL))
		abort();
	if (ok && a.is_unix && (!a.path[0] || !(flags & TOOL_ADDR_UNIX)))
		abort();
	if (ok && !a.is_unix && !port_ok(&a, flags & TOOL_ADDR_LISTEN))
		abort();
	ktm_error_free(err);
	free(arg);
	return 0;
}
