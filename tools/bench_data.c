// SPDX-License-Identifier: MIT
/*
 * The bench's data: one memfd of random bytes, filled once and shared with
 * the forked ends, each channel's page-aligned share of it, and the
 * receiver's streaming checksum with the expected value per share.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "bench.h"

/* ---- checksum: 4 lanes of xxh64-style rounds, streaming ------------------- */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t sum_round(uint64_t acc, uint64_t in)
{
	acc += in * P2;
	return rotl64(acc, 31) * P1;
}

void bench_sum_init(struct bench_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = P1 + P2;
	s->v[1] = P2;
	s->v[3] = -P1;
}

static void sum_blocks(struct bench_sum *s, const uint8_t *p, size_t nblk)
{
	uint64_t a = s->v[0], b = s->v[1], c = s->v[2], d = s->v[3], w[4];

	for (; nblk; nblk--, p += 32) {
		memcpy(w, p, 32);
		a = sum_round(a, w[0]);
		b = sum_round(b, w[1]);
		c = sum_round(c, w[2]);
		d = sum_round(d, w[3]);
	}
	s->v[0] = a, s->v[1] = b, s->v[2] = c, s->v[3] = d;
}

void bench_sum_update(struct bench_sum *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	s->total += len;
	if (s->n) {
		size_t take = 32 - s->n < len ? 32 - s->n : len;

		memcpy(s->tail + s->n, p, take);
		s->n += take, p += take, len -= take;
		if (s->n < 32)
			return;
		sum_blocks(s, s->tail, 1);
		s->n = 0;
	}
	sum_blocks(s, p, len / 32);
	p += len & ~(size_t)31;
	s->n = len & 31;
	memcpy(s->tail, p, s->n);
}

uint64_t bench_sum_final(const struct bench_sum *s)
{
	uint64_t h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) +
		     rotl64(s->v[2], 12) + rotl64(s->v[3], 18) + s->total;
	size_t i;

	for (i = 0; i < s->n; i++)
		h = rotl64(h ^ (s->tail[i] * P3), 11) * P1;
	h ^= h >> 33, h *= P2, h ^= h >> 29, h *= P3, h ^= h >> 32;
	return h;
}

/* ---- data --------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

bool bench_data_make(struct bench_data *d, uint64_t size)
{
	uint64_t s[4], seed, t, i;

	memset(d, 0, sizeof(*d));
	d->size = size;
	d->memfd = memfd_create("ktm-bench", MFD_CLOEXEC);
	if (d->memfd < 0 || ftruncate(d->memfd, (off_t)size)) {
		fprintf(stderr, "%s: cannot make a %" PRIu64 "-byte memfd: %s\n",
			tool_prog, size, strerror(errno));
		return false;
	}
	d->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      d->memfd, 0);
	if (d->map == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map the memfd: %s\n", tool_prog,
			strerror(errno));
		return false;
	}
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)tool_now_s() ^ (uint64_t)getpid();
	for (i = 0; i < 4; i++)
		s[i] = splitmix(&seed);
	/* xoshiro256**: incompressible, fast enough to fill 1 GiB in ~0.2 s */
	for (i = 0; i + 8 <= size; i += 8) {
		uint64_t r = rotl64(s[1] * 5, 7) * 9;

		memcpy(d->map + i, &r, 8);
		t = s[1] << 17;
		s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
		s[2] ^= t, s[3] = rotl64(s[3], 45);
	}
	for (; i < size; i++)
		d->map[i] = (uint8_t)splitmix(&seed);
	return true;
}

void bench_chan_range(uint64_t size, int n, int i, uint64_t *off,
		      uint64_t *len)
{
	uint64_t per = (size / (uint64_t)n) & ~(uint64_t)4095;

	*off = per * (uint64_t)i;
	*len = i == n - 1 ? size - *off : per;
}

void bench_data_sums(struct bench_data *d, int n)
{
	struct bench_sum s;
	uint64_t off, len;
	double t0 = tool_now_s();
	int i;

	if (d->have_sums[n])
		return;
	for (i = 0; i < n; i++) {
		bench_chan_range(d->size, n, i, &off, &len);
		bench_sum_init(&s);
		bench_sum_update(&s, d->map + off, len);
		d->sums[n][i] = bench_sum_final(&s);
	}
	if (!d->sum_gbps)
		d->sum_gbps = (double)d->size / 1e9 / (tool_now_s() - t0);
	d->have_sums[n] = true;
}

void bench_data_free(struct bench_data *d)
{
	munmap(d->map, d->size);
	close(d->memfd);
}
