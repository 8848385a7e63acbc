/* SPDX-License-Identifier: MIT */
/*
 * What the option and address targets share: the first input byte picks
 * the parser (or its flags), the rest is the argument as a C string.
 */
#ifndef KTM_FUZZ_ARG_H
#define KTM_FUZZ_ARG_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* data[1..size) as a NUL-terminated string (free it), or NULL when the
 * input is empty or memory is short. */
static inline char *fuzz_arg(const uint8_t *data, size_t size)
{
	char *arg;

	if (!size)
		return NULL;
	arg = malloc(size);
	if (!arg)
		return NULL;
	memcpy(arg, data + 1, size - 1);
	arg[size - 1] = '\0';
	return arg;
}

#endif /* KTM_FUZZ_ARG_H */
