// SPDX-License-Identifier: MIT
/*
 * Pre-migration checks: an in-process callback and an external executable
 * called like a libvirt hook, both given the verified peer, both able to
 * veto before any application data moves.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "internal.h"
#include "tls.h"

#define KTM_HOOK_VARS 9

extern char **environ;

static bool run_callback(const struct ktm_config *cfg,
			 const struct ktm_session *s, struct ktm_error **errp)
{
	char reason[256] = "";

	if (cfg->check_fn(s, cfg->check_opaque, reason, sizeof(reason)))
		return true;
	ktm_error_set(errp, KTM_ERR_CHECK, EPERM,
		      "pre-migration check vetoed the migration: %s",
		      reason[0] ? reason : "no reason given");
	return false;
}

/* environ without KTM_* plus our variables; NULL on ENOMEM.  Built before
 * fork, so the child only calls async-signal-safe functions. */
static char **hook_env(const struct ktm_config *cfg,
		       const struct ktm_check_facts *f)
{
	const char *path = f->kernel_path ? "kernel" : "userspace";
	size_t n = 0, i, j = 0;
	char **env;
	int ok = 1;

	while (environ[n])
		n++;
	env = calloc(n + KTM_HOOK_VARS + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "KTM_", 4))
			env[j++] = strdup(environ[i]);
	ok &= asprintf(&env[j++], "KTM_PEER_SUBJECT=%s", f->subject) > 0;
	ok &= asprintf(&env[j++], "KTM_PEER_SANS=%s", f->sans) > 0;
	ok &= asprintf(&env[j++], "KTM_PEER_ISSUER=%s", f->issuer) > 0;
	ok &= asprintf(&env[j++], "KTM_PEER_CERT_SHA256=%s", f->cert_sha256) > 0;
	ok &= asprintf(&env[j++], "KTM_PEER_SPKI_SHA256=%s", f->spki_sha256) > 0;
	ok &= asprintf(&env[j++], "KTM_TLS_VERSION=%s",
		       ktm_tls_version_name(f->version)) > 0;
	ok &= asprintf(&env[j++], "KTM_TLS_CIPHER=%s",
		       ktm_cipher_name(f->cipher)) > 0;
	ok &= asprintf(&env[j++], "KTM_DATA_PATH=%s", path) > 0;
	ok &= asprintf(&env[j++], "KTM_ENDPOINT=%s",
		       cfg->endpoint == KTM_ENDPOINT_CLIENT ? "client" : "server") > 0;
	for (i = 0; i < j; i++)
		ok &= env[i] != NULL;
	if (!ok) {
		for (i = 0; i < j; i++)
			free(env[i]);
		free(env);
		return NULL;
	}
	return env;
}

static void free_env(char **env)
{
	size_t i;

	for (i = 0; env[i]; i++)
		free(env[i]);
	free(env);
}

/* Read the child's stderr until EOF or the deadline; keep the first line. */
static bool read_first_line(int fd, char *line, size_t len, uint64_t deadline)
{
	size_t used = 0;
	char buf[512];

	line[0] = '\0';
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = ktm_now_ms();
		ssize_t n;
		int r;

		if (now >= deadline)
			return false;
		r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return false;
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return true;
		if (used + 1 < len && !memchr(line, '\n', used)) {
			size_t take = (size_t)n < len - 1 - used ? (size_t)n : len - 1 - used;

			memcpy(line + used, buf, take);
			used += take;
			line[used] = '\0';
		}
	}
}

/* In the child: its own process group (so a timeout kills everything it
 * started), stdin/stdout on /dev/null, stderr into the pipe, no other
 * descriptor inherited, default signal state.  Async-signal-safe calls
 * only. */
static void __attribute__((noreturn))
hook_child(const struct ktm_config *cfg, char **argv, char **env, int errfd)
{
	static const char msg[] = "cannot execute the hook\n";
	int null = open("/dev/null", O_RDWR);
	sigset_t none;

	setpgid(0, 0);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
	    dup2(errfd, 2) < 0)
		_exit(126);
	/* close_range(2) with a fallback: nothing above stderr survives */
	if (syscall(SYS_close_range, 3U, ~0U, 0U)) {
		int fd;

		for (fd = 3; fd < 65536; fd++)
			close(fd);
	}
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(cfg->hook_path, argv, env);
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(127);
	_exit(127);
}

/* Reap @pid by @deadline: 1 with *status, 0 on timeout, -1 (errno) when
 * its status cannot be had (e.g. SIGCHLD is ignored and it was reaped). */
static int wait_until(pid_t pid, int *status, uint64_t deadline)
{
	for (;;) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
		if (ktm_now_ms() >= deadline)
			return 0;
		nanosleep(&ts, NULL);
	}
}

/* The verdict from a finished hook's status; false with *errp. */
static bool hook_verdict(const struct ktm_config *cfg, int status,
			 const char *line, struct ktm_error **errp)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	if (WIFEXITED(status))
		ktm_error_set(errp, KTM_ERR_CHECK, EPERM,
			      "check hook %s vetoed the migration to %s "
			      "(exit status %d)%s%s", cfg->hook_path, cfg->hook_uri,
			      WEXITSTATUS(status), line[0] ? ": " : "", line);
	else
		ktm_error_set(errp, KTM_ERR_CHECK, EPERM,
			      "check hook %s was killed by signal %d%s%s",
			      cfg->hook_path, WIFSIGNALED(status) ?
			      WTERMSIG(status) : 0, line[0] ? ": " : "", line);
	return false;
}

/*
 * Wait for the hook: its stderr to close and its exit, both within one
 * deadline for the whole run.  Fails closed: a timeout kills its process
 * group, and a status that cannot be read (waitpid fails, as when the
 * process ignores SIGCHLD) is a refusal, never a pass.
 */
static bool hook_wait(const struct ktm_config *cfg, pid_t pid, int errfd,
		      struct ktm_error **errp)
{
	uint64_t deadline = ktm_now_ms() + cfg->hook_timeout_ms;
	char line[256], *nl;
	int status = -1, got = 0;

	if (read_first_line(errfd, line, sizeof(line), deadline))
		got = wait_until(pid, &status, deadline);
	nl = strchr(line, '\n');
	if (nl)
		*nl = '\0';
	if (got == 0) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		ktm_error_set(errp, KTM_ERR_CHECK, ETIMEDOUT,
			      "check hook %s did not finish within %u ms: killed, "
			      "connection refused", cfg->hook_path,
			      cfg->hook_timeout_ms);
		return false;
	}
	if (got < 0) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno,
			      "cannot learn the exit status of check hook %s "
			      "(waitpid: %s): connection refused", cfg->hook_path,
			      strerror(errno));
		ktm_error_hint_set(errp, "the process must not ignore SIGCHLD "
				   "while hooks run");
		return false;
	}
	return hook_verdict(cfg, status, line, errp);
}

static bool run_exec(const struct ktm_config *cfg,
		     const struct ktm_check_facts *f, struct ktm_error **errp)
{
	char *argv[] = { cfg->hook_path, cfg->hook_object, (char *)"migrate",
			 (char *)"pmc", cfg->hook_uri, NULL };
	char **env;
	int pipefd[2];
	bool ok;
	pid_t pid;

	env = hook_env(cfg, f);
	if (!env) {
		ktm_error_set(errp, KTM_ERR_CHECK, ENOMEM,
			      "out of memory for the check hook's environment: "
			      "connection refused");
		return false;
	}
	if (pipe2(pipefd, O_CLOEXEC)) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno, "cannot run check hook "
			      "%s: %s: connection refused", cfg->hook_path,
			      strerror(errno));
		free_env(env);
		return false;
	}
	pid = fork();
	if (pid == 0)
		hook_child(cfg, argv, env, pipefd[1]);
	close(pipefd[1]);
	if (pid < 0) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno, "cannot run check hook "
			      "%s (fork: %s): connection refused", cfg->hook_path,
			      strerror(errno));
		ok = false;
	} else {
		setpgid(pid, pid);	/* also here: no race with a kill */
		ok = hook_wait(cfg, pid, pipefd[0], errp);
	}
	close(pipefd[0]);
	free_env(env);
	return ok;
}

bool ktm_checks_run(const struct ktm_config *cfg, const struct ktm_session *s,
		    const struct ktm_check_facts *f, struct ktm_error **errp)
{
	if (cfg->check_fn && !run_callback(cfg, s, errp))
		return false;
	if (cfg->hook_path && !run_exec(cfg, f, errp))
		return false;
	return true;
}
