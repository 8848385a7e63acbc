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
#include <unistd.h>
#include <sys/wait.h>

#include "internal.h"
#include "tls.h"

#define KTM_HOOK_TIMEOUT_MS 30000
#define KTM_HOOK_VARS 8

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

		if (now >= deadline || poll(&p, 1, (int)(deadline - now)) == 0)
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

static bool run_exec(const struct ktm_config *cfg,
		     const struct ktm_check_facts *f, struct ktm_error **errp)
{
	char *argv[] = { cfg->hook_path, cfg->hook_object, (char *)"migrate",
			 (char *)"pmc", cfg->hook_uri, NULL };
	char line[256], *nl;
	char **env;
	int pipefd[2], status = 0;
	bool finished;
	pid_t pid;

	env = hook_env(cfg, f);
	if (!env) {
		ktm_error_set(errp, KTM_ERR_INTERNAL, ENOMEM,
			      "out of memory for the check hook's environment");
		return false;
	}
	if (pipe2(pipefd, O_CLOEXEC)) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot run check hook %s: %s",
			      cfg->hook_path, strerror(errno));
		goto err_free_env;
	}
	pid = fork();
	if (pid < 0) {
		ktm_error_set(errp, KTM_ERR_IO, errno, "cannot run check hook %s: %s",
			      cfg->hook_path, strerror(errno));
		goto err_close_pipe;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		dup2(pipefd[1], 2);
		execve(cfg->hook_path, argv, env);
		_exit(127);
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	finished = read_first_line(pipefd[0], line, sizeof(line),
				   ktm_now_ms() + KTM_HOOK_TIMEOUT_MS);
	if (!finished)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	close(pipefd[0]);
	free_env(env);
	nl = strchr(line, '\n');
	if (nl)
		*nl = '\0';
	if (!finished) {
		ktm_error_set(errp, KTM_ERR_CHECK, ETIMEDOUT,
			      "check hook %s did not finish within %d s",
			      cfg->hook_path, KTM_HOOK_TIMEOUT_MS / 1000);
		return false;
	}
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
			      cfg->hook_path, WTERMSIG(status),
			      line[0] ? ": " : "", line);
	return false;

err_close_pipe:
	close(pipefd[0]);
	close(pipefd[1]);
err_free_env:
	free_env(env);
	return false;
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
