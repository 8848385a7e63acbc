// SPDX-License-Identifier: MIT
/* ktls-migrate bench: placeholder until the command lands (not listed in --help). */
#include "tool.h"

int cmd_bench(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "%s: 'bench' is not built yet\n", tool_prog);
	return 2;
}
