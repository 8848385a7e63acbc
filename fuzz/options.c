// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the option parsers of the tool and the library's pin
 * parser: --cipher lists, --tls, --ktls (tools/tls_opts.c), HOST:PORT
 * (tool_split_hostport), --pin (ktm_config_add_pin).  The first byte picks
 * the parser, the rest is the argument.  Oracles: the parsers' own
 * contracts (a taken cipher list names only known ciphers, at most one of
 * each row; a failing library call sets its error and a succeeding one
 * does not; a split address has a port that fits its buffer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FILE *null = fopen("/dev/null", "w");

	(void)argc, (void)argv;
	/* The usage errors the parsers print are not findings.  Only the C
	 * stream moves: libFuzzer and the sanitizers keep fd 2. */
	if (null)
		stderr = null;
	return 0;
}

static void tls_option(int c, const char *arg)
{
	struct tool_tls t;
	size_t i;

	tool_tls_init(&t, KTM_KTLS_PREFER);
	if (tool_tls_option(&t, c, arg, "fuzz") != 1)
		return;
	if (t.nciphers > KTM_CIPHER_COUNT)
		abort();
	for (i = 0; i < t.nciphers; i++)
		if (!ktm_cipher_name(t.ciphers[i]))
			abort();
	if (t.vmin > t.vmax)
		abort();
}

static void pin(const char *arg)
{
	struct ktm_config *cfg = ktm_config_new(KTM_ENDPOINT_CLIENT, NULL);
	struct ktm_error *err = NULL;
	bool ok;

	if (!cfg)
		return;
	ok = ktm_config_add_pin(cfg, arg, &err);
	if (ok == (err != NULL))
		abort();	/* the errp contract of ktm.h */
	if (err && !ktm_error_message(err)[0])
		abort();
	ktm_error_free(err);
	ktm_config_free(cfg);
}

static void hostport(const char *arg)
{
	char host[64], port[8];

	memset(port, 'x', sizeof(port));
	if (!tool_split_hostport(arg, host, sizeof(host), port, sizeof(port)))
		return;
	if (!memchr(host, '\0', sizeof(host)) || !memchr(port, '\0', sizeof(port)) ||
	    !port[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *arg;

	if (!size)
		return 0;
	arg = malloc(size);
	if (!arg)
		return 0;
	memcpy(arg, data + 1, size - 1);
	arg[size - 1] = '\0';
	switch (data[0] % 5) {
	case 0: tls_option(TOOL_O_CIPHER, arg); break;
	case 1: tls_option(TOOL_O_TLS, arg); break;
	case 2: tls_option(TOOL_O_KTLS, arg); break;
	case 3: pin(arg); break;
	default: hostport(arg); break;
	}
	free(arg);
	return 0;
}
