// SPDX-License-Identifier: MIT
/*
 * The error contract of ktm.h (QEMU's errp rules) and the harness's own
 * comparisons.  Expected values come from C's arithmetic and the contract
 * text, not from the code under test.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>

#include "harness.h"
#include "ktm.h"

/* Run @fn in a child; its wait status. */
static int in_child(void (*fn)(void))
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		/* no core file, no sanitizer report for the expected abort */
		signal(SIGABRT, SIG_DFL);
		fn();
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static void set_twice(void)
{
	struct ktm_error *err = NULL;

	ktm_error_set(&err, KTM_ERR_IO, EIO, "first");
	ktm_error_set(&err, KTM_ERR_IO, EIO, "second");
}

static void propagate_over_set(void)
{
	struct ktm_error *err = NULL, *other = NULL;

	ktm_error_set(&err, KTM_ERR_IO, EIO, "first");
	ktm_error_set(&other, KTM_ERR_PEER, EPIPE, "second");
	ktm_error_propagate(&err, other);
}

TEST(error_set_twice_aborts)
{
	int st = in_child(set_twice);

	ASSERT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGABRT);
}

TEST(error_propagate_over_set_aborts)
{
	int st = in_child(propagate_over_set);

	ASSERT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGABRT);
}

TEST(error_propagate_moves_or_frees)
{
	struct ktm_error *src = NULL, *dst = NULL;

	ktm_error_set(&src, KTM_ERR_PEER, -EPIPE, "peer %s left", "h:1");
	ktm_error_hint_set(&src, "restart %d", 2);
	ktm_error_propagate(&dst, src);
	ASSERT_TRUE(dst == src);
	EXPECT_EQ(ktm_error_class(dst), KTM_ERR_PEER);
	EXPECT_EQ(ktm_error_errno(dst), EPIPE);
	EXPECT_STREQ(ktm_error_message(dst), "peer h:1 left");
	EXPECT_STREQ(ktm_error_hint(dst), "restart 2");
	ktm_error_free(dst);

	/* NULL destination: freed (ASan's leak check sees it otherwise) */
	src = NULL;
	ktm_error_set(&src, KTM_ERR_IO, EIO, "dropped");
	ktm_error_propagate(NULL, src);
	/* NULL error: nothing happens */
	dst = NULL;
	ktm_error_propagate(&dst, NULL);
	EXPECT_TRUE(dst == NULL);
}

TEST(error_null_errp_ignored)
{
	ktm_error_set(NULL, KTM_ERR_IO, EIO, "nobody listens");
	ktm_error_hint_set(NULL, "none");
}

/* ---- the harness compares in each operand's own type ---- */

static bool cmp(int op, uint64_t a, int64_t b)
{
	struct t_meta m = { 0 };
	struct t_operand oa = { 0, sizeof(a), &a }, ob = { 1, sizeof(b), &b };

	return t_check_cmp(&m, __FILE__, __LINE__, "probe", op, oa, ob) &&
	       m.result == T_PASS;
}

TEST(harness_compares_64_bit_values_exactly)
{
	uint64_t big = UINT64_MAX, two63 = (uint64_t)1 << 63;
	int64_t minus1 = -1;

	/* through long long, UINT64_MAX == -1 and 2^63 < 0 */
	EXPECT_FALSE(cmp(T_OP_EQ, big, minus1));
	EXPECT_TRUE(cmp(T_OP_GT, big, minus1));
	EXPECT_TRUE(cmp(T_OP_GT, two63, INT64_MAX));
	EXPECT_FALSE(cmp(T_OP_LT, two63, 0));
	EXPECT_TRUE(cmp(T_OP_EQ, 5, 5));
	EXPECT_NE(big, (uint64_t)minus1 - 1);
	EXPECT_GT(two63, INT64_MAX);
	EXPECT_LT(-1, 0u + 1);
	EXPECT_NE(0.5, 0);
}

TEST_HARNESS_MAIN
