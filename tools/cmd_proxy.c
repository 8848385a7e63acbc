// SPDX-License-Identifier: MIT
/* ktls-migrate proxy: placeholder until the command lands (not listed in --help). */
#include "tool.h"

int cmd_proxy(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "%s: 'proxy' is not built yet\n", tool_prog);
	return 2;
}
