// SPDX-License-Identifier: MIT
/* ktls-migrate migrate: placeholder until the command lands (not listed in --help). */
#include "tool.h"

int cmd_migrate(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "%s: 'migrate' is not built yet\n", tool_prog);
	return 2;
}
