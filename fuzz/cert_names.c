// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: ktm_cert_names() over arbitrary bytes as DER (the
 * identity text every hook, report and error shows of a peer).  Exercises
 * lib/verify.c: ktm_x509_sans, ktm_x509_name_text, ktm_cert_names.
 * Build and run: make fuzz (clang); seeds in fuzz/corpus/cert_names.
 */
#include <stdint.h>
#include <string.h>

#include "ktm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char subject[1024], sans[2048];

	if (ktm_cert_names(data, size, subject, sizeof(subject), sans,
			   sizeof(sans), NULL)) {
		/* the contract: terminated, nothing a reader splits on */
		if (!memchr(subject, 0, sizeof(subject)) ||
		    !memchr(sans, 0, sizeof(sans)) || strchr(sans, '\n') ||
		    strchr(subject, '\n') || strchr(sans, '"'))
			__builtin_trap();
	}
	return 0;
}
