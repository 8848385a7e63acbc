// SPDX-License-Identifier: MIT
/*
 * What every ktls-migrate command shares: the program name, the error
 * printer and the clock.  The commands call this; it calls none of them.
 */
#include <stdio.h>
#include <time.h>

#include "tool.h"

const char *tool_prog = "ktls-migrate";

void tool_error(struct ktm_error *err)
{
	const char *hint = ktm_error_hint(err);

	fprintf(stderr, "%s: %s\n", tool_prog, ktm_error_message(err));
	if (hint)
		fprintf(stderr, "  hint: %s\n", hint);
	ktm_error_free(err);
}

double tool_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
