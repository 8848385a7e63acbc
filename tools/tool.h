/* SPDX-License-Identifier: MIT */
/*
 * Private to tools/: one entry point per ktls-migrate command.  Each takes
 * argc/argv from the command name on and returns the exit status.  Tools
 * see only the public header ktm.h.
 */
#ifndef KTM_TOOL_H
#define KTM_TOOL_H

#include <stdio.h>

#include "ktm.h"

extern const char *tool_prog;

/* Print "ktls-migrate: MESSAGE" and "  hint: HINT" to stderr; frees err. */
void tool_error(struct ktm_error *err);

int cmd_probe(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_qemu(int argc, char **argv);	/* qemu-send, qemu-recv */
int cmd_bench(int argc, char **argv);

#endif /* KTM_TOOL_H */
