/* SPDX-License-Identifier: MIT */
/*
 * A small test harness in the shape of the kernel's kselftest harness
 * (FIXTURE, FIXTURE_VARIANT, TEST_F, ASSERT_*, EXPECT_*, SKIP), written for
 * this project.  Every test runs in its own forked process with a timeout;
 * results are TAP.  Options: -l list, -t TEST, -v VARIANT, -f FIXTURE
 * (each repeatable; a test runs when every given kind matches).
 *
 * SKIP is for a missing environment, said precisely.  With KTLS_REQUIRE=1
 * or CI=true in the environment a skip is reported as a failure.
 */
#ifndef KTM_TEST_HARNESS_H
#define KTM_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { T_PASS = 0, T_FAIL = 1, T_SKIP = 2 };

struct t_meta {
	int result;
	bool setup_done;
	char reason[512];
};

struct t_variant {
	const char *name;
	const void *data;
	struct t_variant *next;
};

struct t_fixture {
	const char *name;
	struct t_variant *variants, **vtail;
	struct t_fixture *next;
};

/* phase 0: setup, 1: body, 2: teardown */
typedef void (*t_fn)(struct t_meta *m, void *self, const void *variant,
		     int phase);

struct t_test {
	const char *name;
	struct t_fixture *fixture;	/* NULL for TEST() */
	t_fn fn;
	size_t self_size;
	unsigned int timeout;
	struct t_test *next;
};

void t_register_fixture(struct t_fixture *f);
void t_register_variant(struct t_fixture *f, struct t_variant *v);
void t_register_test(struct t_test *t);
int t_main(int argc, char **argv);

void t_log(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One side of a comparison in its own type: its kind (_T_KIND), size and
 * bytes.  No value is truncated or converted before the comparison. */
struct t_operand {
	int kind;
	size_t size;
	const void *p;
};
enum { T_OP_EQ, T_OP_NE, T_OP_LT, T_OP_LE, T_OP_GT, T_OP_GE };
/* Compare @a @op @b mathematically (a negative signed value is less than
 * any unsigned one); on failure print both sides, each in its own type,
 * and mark the test failed.  Returns whether the comparison held. */
bool t_check_cmp(struct t_meta *m, const char *file, int line,
		 const char *expr, int op, struct t_operand a,
		 struct t_operand b);
void t_fail_msg(struct t_meta *m, const char *file, int line,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void t_skip(struct t_meta *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Leave the current phase (after a fatal assert or SKIP). */
void t_bail(struct t_meta *m) __attribute__((noreturn));

#define T_DEFAULT_TIMEOUT 30

#define FIXTURE_DATA(f) struct _t_self_##f
#define FIXTURE_VARIANT(f) struct _t_variant_##f

#define FIXTURE(f)							\
	static struct t_fixture _t_fixture_##f = { .name = #f };	\
	__attribute__((constructor)) static void _t_fixture_reg_##f(void) \
	{								\
		t_register_fixture(&_t_fixture_##f);			\
	}								\
	FIXTURE_DATA(f)

#define FIXTURE_VARIANT_ADD(f, v)					\
	static const FIXTURE_VARIANT(f) _t_vdata_##f##_##v;		\
	static struct t_variant _t_var_##f##_##v = {			\
		.name = #v, .data = &_t_vdata_##f##_##v };		\
	__attribute__((constructor)) static void _t_var_reg_##f##_##v(void) \
	{								\
		t_register_variant(&_t_fixture_##f, &_t_var_##f##_##v); \
	}								\
	static const FIXTURE_VARIANT(f) _t_vdata_##f##_##v =

#define FIXTURE_SETUP(f)						\
	static void _t_setup_##f(struct t_meta *_metadata __attribute__((unused)),		\
				 FIXTURE_DATA(f) *self __attribute__((unused)),			\
				 const FIXTURE_VARIANT(f) *variant __attribute__((unused)))

#define FIXTURE_TEARDOWN(f)						\
	static void _t_teardown_##f(struct t_meta *_metadata __attribute__((unused)),		\
				    FIXTURE_DATA(f) *self __attribute__((unused)),		\
				    const FIXTURE_VARIANT(f) *variant __attribute__((unused)))

#define TEST_F_TIMEOUT(f, t, secs)					\
	static void _t_body_##f##_##t(struct t_meta *_metadata __attribute__((unused)),		\
				      FIXTURE_DATA(f) *self __attribute__((unused)),		\
				      const FIXTURE_VARIANT(f) *variant __attribute__((unused))); \
	static void _t_fn_##f##_##t(struct t_meta *m, void *self,	\
				    const void *variant, int phase)	\
	{								\
		if (phase == 0)						\
			_t_setup_##f(m, self, variant);			\
		else if (phase == 1)					\
			_t_body_##f##_##t(m, self, variant);		\
		else							\
			_t_teardown_##f(m, self, variant);		\
	}								\
	static struct t_test _t_test_##f##_##t = {			\
		.name = #t, .fixture = &_t_fixture_##f,			\
		.fn = _t_fn_##f##_##t, .self_size = sizeof(FIXTURE_DATA(f)), \
		.timeout = secs };					\
	__attribute__((constructor)) static void _t_reg_##f##_##t(void)	\
	{								\
		t_register_test(&_t_test_##f##_##t);			\
	}								\
	static void _t_body_##f##_##t(struct t_meta *_metadata __attribute__((unused)),		\
				      FIXTURE_DATA(f) *self __attribute__((unused)),		\
				      const FIXTURE_VARIANT(f) *variant __attribute__((unused)))

#define TEST_F(f, t) TEST_F_TIMEOUT(f, t, T_DEFAULT_TIMEOUT)

#define TEST(t) TEST_TIMEOUT(t, T_DEFAULT_TIMEOUT)

#define TEST_TIMEOUT(t, secs)						\
	static void _t_body_##t(struct t_meta *_metadata __attribute__((unused)));		\
	static void _t_fn_##t(struct t_meta *m, void *self,		\
			      const void *variant, int phase)		\
	{								\
		(void)self, (void)variant;				\
		if (phase == 1)						\
			_t_body_##t(m);					\
	}								\
	static struct t_test _t_test_##t = {				\
		.name = #t, .fn = _t_fn_##t,				\
		.timeout = secs };					\
	__attribute__((constructor)) static void _t_reg_##t(void)	\
	{								\
		t_register_test(&_t_test_##t);				\
	}								\
	static void _t_body_##t(struct t_meta *_metadata __attribute__((unused)))

#define TEST_HARNESS_MAIN						\
	int main(int argc, char **argv)					\
	{								\
		return t_main(argc, argv);				\
	}

#define TH_LOG(fmt, ...) t_log(__FILE__, __LINE__, fmt, ##__VA_ARGS__)

/* Record a skip with a reason, then run @statement (usually `return`). */
#define SKIP(statement, fmt, ...)					\
	do {								\
		t_skip(_metadata, fmt, ##__VA_ARGS__);			\
		statement;						\
	} while (0)

/* 1: signed integer, 2: floating point, 0: anything else (unsigned
 * integers, bool, enums, pointers: compared as unsigned). */
#define _T_KIND(x) _Generic((x),					\
	float: 2, double: 2, long double: 2,				\
	signed char: 1, short: 1, int: 1, long: 1, long long: 1,	\
	char: (char)-1 < 0, default: 0)

#define _T_CMP(a, op, b, opcode, fatal)					\
	do {								\
		__typeof__(a) _t_a = (a);				\
		__typeof__(b) _t_b = (b);				\
		struct t_operand _t_oa = { _T_KIND(_t_a), sizeof(_t_a), &_t_a }; \
		struct t_operand _t_ob = { _T_KIND(_t_b), sizeof(_t_b), &_t_b }; \
		if (!t_check_cmp(_metadata, __FILE__, __LINE__,		\
				 #a " " #op " " #b, opcode, _t_oa, _t_ob) && \
		    (fatal))						\
			t_bail(_metadata);				\
	} while (0)

#define _T_TRUE(c, fatal)						\
	do {								\
		if (!(c)) {						\
			t_fail_msg(_metadata, __FILE__, __LINE__,	\
				   "expected: %s", #c);			\
			if (fatal)					\
				t_bail(_metadata);			\
		}							\
	} while (0)

#define _T_STREQ(a, b, fatal)						\
	do {								\
		const char *_t_a = (a), *_t_b = (b);			\
		if (!_t_a || !_t_b || strcmp(_t_a, _t_b)) {		\
			t_fail_msg(_metadata, __FILE__, __LINE__,	\
				   "%s == %s: \"%s\" vs \"%s\"", #a, #b, \
				   _t_a ? _t_a : "(null)",		\
				   _t_b ? _t_b : "(null)");		\
			if (fatal)					\
				t_bail(_metadata);			\
		}							\
	} while (0)

#define _T_STRSTR(hay, needle, fatal)					\
	do {								\
		const char *_t_h = (hay), *_t_n = (needle);		\
		if (!_t_h || !strstr(_t_h, _t_n)) {			\
			t_fail_msg(_metadata, __FILE__, __LINE__,	\
				   "%s does not contain \"%s\": \"%s\"", \
				   #hay, _t_n, _t_h ? _t_h : "(null)");	\
			if (fatal)					\
				t_bail(_metadata);			\
		}							\
	} while (0)

#define _T_MEMEQ(a, b, len, fatal)					\
	do {								\
		if (memcmp((a), (b), (len))) {				\
			t_fail_msg(_metadata, __FILE__, __LINE__,	\
				   "%s and %s differ in %zu bytes", #a, #b, \
				   (size_t)(len));			\
			if (fatal)					\
				t_bail(_metadata);			\
		}							\
	} while (0)

#define ASSERT_EQ(a, b) _T_CMP(a, ==, b, T_OP_EQ, 1)
#define ASSERT_NE(a, b) _T_CMP(a, !=, b, T_OP_NE, 1)
#define ASSERT_LT(a, b) _T_CMP(a, <, b, T_OP_LT, 1)
#define ASSERT_LE(a, b) _T_CMP(a, <=, b, T_OP_LE, 1)
#define ASSERT_GT(a, b) _T_CMP(a, >, b, T_OP_GT, 1)
#define ASSERT_GE(a, b) _T_CMP(a, >=, b, T_OP_GE, 1)
#define ASSERT_TRUE(c) _T_TRUE(c, 1)
#define ASSERT_FALSE(c) _T_TRUE(!(c), 1)
#define ASSERT_STREQ(a, b) _T_STREQ(a, b, 1)
#define ASSERT_STRSTR(h, n) _T_STRSTR(h, n, 1)
#define ASSERT_MEMEQ(a, b, len) _T_MEMEQ(a, b, len, 1)
#define EXPECT_EQ(a, b) _T_CMP(a, ==, b, T_OP_EQ, 0)
#define EXPECT_NE(a, b) _T_CMP(a, !=, b, T_OP_NE, 0)
#define EXPECT_LT(a, b) _T_CMP(a, <, b, T_OP_LT, 0)
#define EXPECT_LE(a, b) _T_CMP(a, <=, b, T_OP_LE, 0)
#define EXPECT_GT(a, b) _T_CMP(a, >, b, T_OP_GT, 0)
#define EXPECT_GE(a, b) _T_CMP(a, >=, b, T_OP_GE, 0)
#define EXPECT_TRUE(c) _T_TRUE(c, 0)
#define EXPECT_FALSE(c) _T_TRUE(!(c), 0)
#define EXPECT_STREQ(a, b) _T_STREQ(a, b, 0)
#define EXPECT_STRSTR(h, n) _T_STRSTR(h, n, 0)
#define EXPECT_MEMEQ(a, b, len) _T_MEMEQ(a, b, len, 0)

#endif /* KTM_TEST_HARNESS_H */
