// SPDX-License-Identifier: MIT
/*
 * Fuzz target: the QMP client's JSON reader (tools/qmp.c), which finds
 * members without building values.  Built into this target from the
 * tool's source so its static functions are reachable.  The oracle: a
 * value found lies inside the input, and a string read back is
 * NUL-terminated within its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/qmp.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void look_up(const char *text, size_t len, const char *key)
{
	const char *end = NULL, *v = member(text, key, &end);
	char out[64];

	if (!v)
		return;
	if (v < text || v > text + len || !end || end < v || end > text + len)
		abort();
	string_value(v, out, sizeof(out));
	if (!memchr(out, '\0', sizeof(out)))
		abort();
	/* a nested object: QMP's {"error": {"class": ..., "desc": ...}} */
	member(v, "desc", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	const char *end;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	end = skip_value(text, 0);
	if (end && (end < text || end > text + size))
		abort();
	look_up(text, size, "return");
	look_up(text, size, "error");
	look_up(text, size, "status");
	free(text);
	return 0;
}
