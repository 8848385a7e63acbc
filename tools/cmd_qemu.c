// SPDX-License-Identifier: MIT
/* ktls-migrate qemu: placeholder until the command lands (not listed in --help). */
#include "tool.h"

int cmd_qemu(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "%s: 'qemu' is not built yet\n", tool_prog);
	return 2;
}
