// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the proxy's address parser (tools/proxy.c, parse_addr:
 * "unix:PATH", "tcp:HOST:PORT", "HOST:PORT", "[V6]:PORT", "PORT").  Built
 * from the tool's source so the static parser is reachable.  The first
 * byte picks plain/TLS side and listening.  Oracles: the errp contract,
 * and a parsed address is one the grammar allows (a port of 0-65535 in
 * digits, or a non-empty unix path).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/proxy.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktm_error *err = NULL;
	struct addr a;
	char *arg;
	bool ok;

	if (!size)
		return 0;
	arg = malloc(size);
	if (!arg)
		return 0;
	memcpy(arg, data + 1, size - 1);
	arg[size - 1] = '\0';
	ok = parse_addr(arg, data[0] & 1, data[0] & 2, &a, &err);
	if (ok == (err != NULL))
		abort();
	if (ok && a.is_unix && !a.path[0])
		abort();
	if (ok && !a.is_unix &&
	    (!a.port[0] || strspn(a.port, "0123456789") != strlen(a.port) ||
	     atol(a.port) > 65535))
		abort();
	ktm_error_free(err);
	free(arg);
	return 0;
}
