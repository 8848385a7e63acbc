// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the option parsers of the tool and the library's pin
 * parser: --cipher lists, --tls, --ktls (tools/tls_opts.c), --pin
 * (ktm_config_add_pin); addresses are fuzz/proxy_addr.c.  The first byte
 * picks the parser, the rest is the argument.  Oracles: the parsers' own
 * contracts (a taken cipher list names only known ciphers, at most one of
 * each row; a failing library call sets its error and a succeeding one
 * does not).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arg.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *arg = fuzz_arg(data, size);

	if (!arg)
		return 0;
	switch (data[0] % 4) {
	case 0: tls_option(TOOL_O_CIPHER, arg); break;
	case 1: tls_option(TOOL_O_TLS, arg); break;
	case 2: tls_option(TOOL_O_KTLS, arg); break;
	default: pin(arg); break;
	}
	free(arg);
	return 0;
}
