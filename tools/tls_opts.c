// SPDX-License-Identifier: MIT
/*
 * What the networked commands share: the TLS options (--creds, --ktls,
 * --tls, --cipher, --hostname, --pin), parsed once and turned into a
 * ktm_config.  Addresses: addr.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tool.h"

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", tool_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s %s --help'.\n", tool_prog, cmd);
	return 2;
}

bool tool_parse_u64(const char *s, unsigned long long min,
		    unsigned long long max, unsigned long long *v)
{
	char *end = NULL;
	unsigned long long x;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno || *end || x < min || x > max)
		return false;
	*v = x;
	return true;
}

bool tool_parse_uint(const char *s, unsigned long long min,
		     unsigned long long max, unsigned int *v)
{
	unsigned long long x;

	if (max > UINT_MAX || !tool_parse_u64(s, min, max, &x))
		return false;
	*v = (unsigned int)x;
	return true;
}

int tool_pick_mode(int argc, char **argv, const char *a, const char *b,
		   const char *cmd)
{
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
		return -1;
	if (argc >= 2 && !strcmp(argv[1], a))
		return 0;
	if (argc >= 2 && !strcmp(argv[1], b))
		return 1;
	return tool_usage_error(cmd, "%s needs '%s' or '%s'", cmd, a, b);
}

void tool_tls_init(struct tool_tls *t, enum ktm_ktls_policy policy)
{
	memset(t, 0, sizeof(*t));
	t->policy = policy;
	t->vmin = KTM_TLS_1_2;
	t->vmax = KTM_TLS_1_3;
}

static int parse_ciphers(struct tool_tls *t, const char *list, const char *cmd)
{
	static const struct { const char *name; enum ktm_cipher c; } names[] = {
		{ "aes-gcm-128", KTM_CIPHER_AES_GCM_128 },
		{ "aes-gcm-256", KTM_CIPHER_AES_GCM_256 },
		{ "aes-ccm-128", KTM_CIPHER_AES_CCM_128 },
		{ "chacha20-poly1305", KTM_CIPHER_CHACHA20_POLY1305 },
	};
	char *copy = strdup(list), *save = NULL, *tok;
	int ret = 1;

	t->nciphers = 0;
	for (tok = strtok_r(copy, ",", &save); tok && ret == 1;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcasecmp(tok, names[i].name))
				break;
		if (i == sizeof(names) / sizeof(names[0]) ||
		    t->nciphers == KTM_CIPHER_COUNT)
			ret = tool_usage_error(cmd, "unknown cipher '%s'", tok);
		else
			t->ciphers[t->nciphers++] = names[i].c;
	}
	free(copy);
	if (ret == 1 && !t->nciphers)
		ret = tool_usage_error(cmd, "--cipher takes a comma-separated "
				       "list of ciphers, not '%s'", list);
	return ret;
}

static int identity_option(struct tool_tls *t, int c, const char *arg,
			   const char *cmd)
{
	unsigned int v;

	switch (c) {
	case TOOL_O_ALLOW:
		if (t->nallow == TOOL_MAX_ALLOW)
			return tool_usage_error(cmd, "at most %d --allow rules "
						"(use --allow-file)", TOOL_MAX_ALLOW);
		t->allow[t->nallow++] = arg;
		return 1;
	case TOOL_O_ALLOW_FILE:
		t->allow_file = arg;
		return 1;
	case TOOL_O_KEY_PW:
		t->passphrase_file = arg;
		return 1;
	case TOOL_O_HOOK:
		t->hook = arg;
		return 1;
	case TOOL_O_KEY_LIMIT:
		if (!tool_parse_u64(arg, 2, ULLONG_MAX, &t->key_limit))
			return tool_usage_error(cmd, "--key-limit takes a record "
						"count of at least 2, not '%s'", arg);
		return 1;
	case TOOL_O_HOOK_TIMEOUT:
		if (!tool_parse_uint(arg, 1, 86400, &v))
			return tool_usage_error(cmd, "--hook-timeout takes seconds "
						"(1 to 86400), not '%s'", arg);
		t->hook_timeout_ms = v * 1000;
		return 1;
	}
	return 0;
}

void tool_identity_note(const struct ktm_config *cfg)
{
	char buf[1024];

	ktm_config_authz(cfg, buf, sizeof(buf));
	fprintf(stderr, "%s: authorization: %s\n", tool_prog, buf);
	if (ktm_config_key_note(cfg, buf, sizeof(buf)))
		fprintf(stderr, "%s: note: %s\n", tool_prog, buf);
	tool_cert_warning(cfg);
}

void tool_cert_warning(const struct ktm_config *cfg)
{
	char buf[1024];

	if (ktm_config_cert_note(cfg, buf, sizeof(buf)))
		fprintf(stderr, "%s: warning: %s\n", tool_prog, buf);
}

/* The identity options into @cfg; false with *errp. */
static bool identity_config(const struct tool_tls *t, struct ktm_config *cfg,
			    struct ktm_error **errp)
{
	unsigned int i;

	for (i = 0; i < t->nallow; i++)
		if (!ktm_config_add_allow(cfg, t->allow[i], errp))
			return false;
	if (t->allow_file && !ktm_config_load_allow_file(cfg, t->allow_file, errp))
		return false;
	if (t->hook && !ktm_config_set_check_exec(cfg, t->hook, "-",
						  t->hook_uri, errp))
		return false;
	ktm_config_set_check_timeout(cfg, t->hook_timeout_ms);
	ktm_config_set_key_limit(cfg, t->key_limit);
	return true;
}

int tool_tls_option(struct tool_tls *t, int c, const char *arg,
		    const char *cmd)
{
	switch (c) {
	case TOOL_O_CREDS:
		t->creds = arg;
		return 1;
	case TOOL_O_HOSTNAME:
		t->hostname = arg;
		return 1;
	case TOOL_O_KTLS:
		if (!strcmp(arg, "prefer"))
			t->policy = KTM_KTLS_PREFER;
		else if (!strcmp(arg, "require"))
			t->policy = KTM_KTLS_REQUIRE;
		else if (!strcmp(arg, "off"))
			t->policy = KTM_KTLS_OFF;
		else
			return tool_usage_error(cmd, "--ktls takes prefer, require "
						"or off, not '%s'", arg);
		return 1;
	case TOOL_O_TLS:
		if (!strcmp(arg, "1.2"))
			t->vmin = t->vmax = KTM_TLS_1_2;
		else if (!strcmp(arg, "1.3"))
			t->vmin = t->vmax = KTM_TLS_1_3;
		else
			return tool_usage_error(cmd, "--tls takes 1.2 or 1.3, not "
						"'%s'", arg);
		return 1;
	case TOOL_O_CIPHER:
		return parse_ciphers(t, arg, cmd);
	case TOOL_O_PIN:
		if (t->npins == TOOL_MAX_PINS)
			return tool_usage_error(cmd, "at most %d pins",
						TOOL_MAX_PINS);
		t->pins[t->npins++] = arg;
		return 1;
	}
	return identity_option(t, c, arg, cmd);
}

struct ktm_config *tool_tls_config(const struct tool_tls *t,
				   enum ktm_endpoint ep,
				   struct ktm_error **errp)
{
	struct ktm_config *cfg = ktm_config_new(ep, errp);
	unsigned int i;

	if (!cfg)
		return NULL;
	ktm_config_set_ktls(cfg, t->policy);
	if ((t->passphrase_file &&
	     !ktm_config_set_key_passphrase_file(cfg, t->passphrase_file, errp)) ||
	    !ktm_config_set_creds_dir(cfg, t->creds, errp) ||
	    !identity_config(t, cfg, errp) ||
	    !ktm_config_set_versions(cfg, t->vmin, t->vmax, errp) ||
	    (t->nciphers && !ktm_config_set_ciphers(cfg, t->ciphers, t->nciphers,
						    errp)) ||
	    (t->hostname && !ktm_config_set_hostname(cfg, t->hostname, errp)))
		goto err_free;
	for (i = 0; i < t->npins; i++)
		if (!ktm_config_add_pin(cfg, t->pins[i], errp))
			goto err_free;
	return cfg;
err_free:
	ktm_config_free(cfg);
	return NULL;
}
