// SPDX-License-Identifier: MIT
/*
 * Pre-migration checks: an in-process callback and an external executable
 * called like a libvirt hook, both given the verified peer, both able to
 * veto before any application data moves.
 *
 * The executable never blocks its caller: ktm_hook_start() forks it and
 * each ktm_hook_step() takes what is there without waiting (its stderr
 * through a non-blocking pipe, then its exit through a pidfd), so the
 * session's handshake step can hand the caller's event loop a descriptor
 * to poll and a deadline.
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
#include <sys/types.h>
#include <sys/wait.h>

#include "internal.h"
#include "tls.h"

#define KTM_HOOK_VARS 9

extern char **environ;

bool ktm_check_callback(const struct ktm_config *cfg,
			const struct ktm_session *s, struct ktm_error **errp)
{
	char reason[256] = "";

	if (!cfg->check_fn || cfg->check_fn(s, cfg->check_opaque, reason, sizeof(reason)))
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


/* One run of the check hook (see internal.h). */
struct ktm_hook_run {
	const struct ktm_config *cfg;
	pid_t pid;		/* -1 once reaped (or gone) */
	int errfd;		/* read end of the child's stderr, non-blocking */
	int pidfd;		/* readable when the child exits; -1 without */
	uint64_t deadline;	/* the whole run, monotonic ms */
	bool eof;		/* stderr closed */
	char line[256];		/* the first line of stderr */
	size_t used;
};

/* Kill the hook's process group and reap it (bounded: SIGKILL). */
static void hook_kill(struct ktm_hook_run *h)
{
	int status;

	if (h->pid <= 0)
		return;
	kill(-h->pid, SIGKILL);
	kill(h->pid, SIGKILL);
	while (waitpid(h->pid, &status, 0) < 0 && errno == EINTR)
		;
	h->pid = -1;
}

void ktm_hook_free(struct ktm_hook_run *h)
{
	if (!h)
		return;
	hook_kill(h);
	if (h->errfd >= 0)
		close(h->errfd);
	if (h->pidfd >= 0)
		close(h->pidfd);
	free(h);
}

/* Fork and exec the hook with @env; false with *errp. */
static bool hook_spawn(struct ktm_hook_run *h, char **env,
		       struct ktm_error **errp)
{
	const struct ktm_config *cfg = h->cfg;
	char *argv[] = { cfg->hook_path, cfg->hook_object, (char *)"migrate",
			 (char *)"pmc", cfg->hook_uri, NULL };
	int pipefd[2];

	if (pipe2(pipefd, O_CLOEXEC)) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno, "cannot run check hook "
			      "%s: %s: connection refused", cfg->hook_path,
			      strerror(errno));
		return false;
	}
	h->pid = fork();
	if (h->pid == 0)
		hook_child(cfg, argv, env, pipefd[1]);
	close(pipefd[1]);
	h->errfd = pipefd[0];
	if (h->pid < 0) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno, "cannot run check hook "
			      "%s (fork: %s): connection refused", cfg->hook_path,
			      strerror(errno));
		return false;
	}
	setpgid(h->pid, h->pid);	/* also here: no race with a kill */
	/* Only our end is non-blocking (its own open file description): the
	 * hook's writes to stderr still block as usual. */
	fcntl(h->errfd, F_SETFL, fcntl(h->errfd, F_GETFL) | O_NONBLOCK);
	/* Without a pidfd (a kernel before 5.3, or the child already gone
	 * when SIGCHLD is ignored) ktm_hook_step() asks waitpid every few
	 * milliseconds instead. */
	h->pidfd = (int)syscall(SYS_pidfd_open, h->pid, 0U);
	return true;
}

struct ktm_hook_run *ktm_hook_start(const struct ktm_config *cfg,
				    const struct ktm_check_facts *f,
				    struct ktm_error **errp)
{
	struct ktm_hook_run *h = calloc(1, sizeof(*h));
	char **env = h ? hook_env(cfg, f) : NULL;
	bool ok;

	if (!env) {
		ktm_error_set(errp, KTM_ERR_CHECK, ENOMEM,
			      "out of memory for the check hook's environment: "
			      "connection refused");
		free(h);
		return NULL;
	}
	h->cfg = cfg;
	h->pid = -1;
	h->errfd = h->pidfd = -1;
	h->deadline = ktm_now_ms() + cfg->hook_timeout_ms;
	ok = hook_spawn(h, env, errp);
	free_env(env);
	if (!ok) {
		ktm_hook_free(h);
		return NULL;
	}
	return h;
}

/* Take what the hook wrote to stderr, keeping the first line; true once
 * it closed stderr (EOF or a read error), false when it would block. */
static bool hook_drain(struct ktm_hook_run *h)
{
	char buf[512];

	for (;;) {
		ssize_t n = read(h->errfd, buf, sizeof(buf));
		size_t room = sizeof(h->line) - 1 - h->used, take;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return false;
		if (n <= 0)
			break;
		if (!room || memchr(h->line, '\n', h->used))
			continue;
		take = (size_t)n < room ? (size_t)n : room;
		memcpy(h->line + h->used, buf, take);
		h->used += take;
		h->line[h->used] = '\0';
	}
	h->eof = true;
	h->line[strcspn(h->line, "\n")] = '\0';
	return true;
}

/* The exit status, once it is there: 1 allowed, 0 not yet, -1 refused. */
static int hook_reap(struct ktm_hook_run *h, struct ktm_error **errp)
{
	const struct ktm_config *cfg = h->cfg;
	int status = -1;
	pid_t r = waitpid(h->pid, &status, WNOHANG);

	if (r == 0 || (r < 0 && errno == EINTR))
		return 0;
	h->pid = -1;
	if (r < 0) {
		ktm_error_set(errp, KTM_ERR_CHECK, errno,
			      "cannot learn the exit status of check hook %s "
			      "(waitpid: %s): connection refused", cfg->hook_path,
			      strerror(errno));
		ktm_error_hint_set(errp, "the process must not ignore SIGCHLD "
				   "while hooks run");
		return -1;
	}
	return hook_verdict(cfg, status, h->line, errp) ? 1 : -1;
}

/*
 * Fails closed: a timeout kills its process group, and a status that
 * cannot be read (waitpid fails, as when the process ignores SIGCHLD) is
 * a refusal, never a pass.
 */
int ktm_hook_step(struct ktm_hook_run *h, struct ktm_error **errp)
{
	if (ktm_now_ms() >= h->deadline) {
		hook_kill(h);
		ktm_error_set(errp, KTM_ERR_CHECK, ETIMEDOUT,
			      "check hook %s did not finish within %u ms: killed, "
			      "connection refused", h->cfg->hook_path,
			      h->cfg->hook_timeout_ms);
		return -1;
	}
	if (!h->eof && !hook_drain(h))
		return 0;
	return hook_reap(h, errp);
}

int ktm_hook_poll_fd(const struct ktm_hook_run *h)
{
	return h->eof ? h->pidfd : h->errfd;
}

int ktm_hook_timeout_ms(const struct ktm_hook_run *h)
{
	uint64_t now = ktm_now_ms();
	uint64_t left = h->deadline > now ? h->deadline - now : 0;

	/* nothing to poll: look again soon */
	if (ktm_hook_poll_fd(h) < 0 && left > 5)
		left = 5;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}
