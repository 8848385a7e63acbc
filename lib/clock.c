// SPDX-License-Identifier: MIT
/* The library's one monotonic clock (internal.h: ktm_now_s, ktm_now_ms). */
#include <time.h>

#include "internal.h"

double ktm_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
