/* SPDX-License-Identifier: MIT */
/*
 * Private to tools/: one entry point per ktls-migrate command.  Each takes
 * argc/argv from the command name on and returns the exit status.  Tools
 * see only the public header ktm.h.
 */
#ifndef KTM_TOOL_H
#define KTM_TOOL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "ktm.h"
#include "proxy.h"
#include "qmp.h"

extern const char *tool_prog;

/* Print "ktls-migrate: MESSAGE" and "  hint: HINT" to stderr; frees err. */
void tool_error(struct ktm_error *err);

/* The tool's one monotonic clock, in seconds.  The tool sees only ktm.h,
 * which has no clock (the library's own is internal: lib/clock.c). */
double tool_now_s(void);

/* "ktls-migrate: MESSAGE" and "Try 'ktls-migrate CMD --help'." on
 * stderr; returns 2, the usage exit status. */
int tool_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* "CMD A|B ...": 0 for A, 1 for B (argv[1]); -1 for -h/--help (print
 * the usage, exit 0); 2 after printing a usage error. */
/* @s as a decimal count in [@min, @max] (digits only: no sign, no
 * space, no overflow) into *@v; false when it is not. */
bool tool_parse_uint(const char *s, unsigned long long min,
		     unsigned long long max, unsigned int *v);
bool tool_parse_u64(const char *s, unsigned long long min,
		    unsigned long long max, unsigned long long *v);
int tool_pick_mode(int argc, char **argv, const char *a, const char *b,
		   const char *cmd);

/* ---- tls_opts.c: the TLS options of the networked commands ---- */

#define TOOL_MAX_PINS 8
#define TOOL_MAX_ALLOW 32

struct tool_tls {
	const char *creds, *hostname;
	/* who may connect, the key's passphrase, the check hook (proxy,
	 * qemu-*: --check-hook; migrate has its own) and its time limit */
	const char *allow[TOOL_MAX_ALLOW];
	unsigned int nallow;
	const char *allow_file, *passphrase_file, *hook, *hook_uri;
	unsigned int hook_timeout_ms;
	unsigned long long key_limit;
	enum ktm_ktls_policy policy;
	enum ktm_tls_version vmin, vmax;
	enum ktm_cipher ciphers[KTM_CIPHER_COUNT];
	size_t nciphers;
	const char *pins[TOOL_MAX_PINS];
	unsigned int npins;
};

/* getopt_long codes, above any command's own */
enum {
	TOOL_O_CREDS = 0x1000, TOOL_O_HOSTNAME, TOOL_O_KTLS, TOOL_O_TLS,
	TOOL_O_CIPHER, TOOL_O_PIN, TOOL_O_ALLOW, TOOL_O_ALLOW_FILE,
	TOOL_O_KEY_PW, TOOL_O_HOOK_TIMEOUT, TOOL_O_HOOK, TOOL_O_KEY_LIMIT,
};

/* Entries for a struct option array. */
#define TOOL_TLS_OPTIONS						\
	{ "creds", required_argument, NULL, TOOL_O_CREDS },		\
	{ "hostname", required_argument, NULL, TOOL_O_HOSTNAME },	\
	{ "ktls", required_argument, NULL, TOOL_O_KTLS },		\
	{ "tls", required_argument, NULL, TOOL_O_TLS },			\
	{ "cipher", required_argument, NULL, TOOL_O_CIPHER },		\
	{ "pin", required_argument, NULL, TOOL_O_PIN },			\
	{ "allow", required_argument, NULL, TOOL_O_ALLOW },		\
	{ "allow-file", required_argument, NULL, TOOL_O_ALLOW_FILE },	\
	{ "key-passphrase-file", required_argument, NULL, TOOL_O_KEY_PW }, \
	{ "hook-timeout", required_argument, NULL, TOOL_O_HOOK_TIMEOUT }

/* --check-hook and --key-limit for the commands without their own
 * (proxy, qemu-*). */
#define TOOL_CONN_OPTIONS						\
	{ "check-hook", required_argument, NULL, TOOL_O_HOOK },		\
	{ "key-limit", required_argument, NULL, TOOL_O_KEY_LIMIT }

#define TOOL_KEY_LIMIT_HELP						\
"  --key-limit N       (for tests) records one TLS key may seal before it is\n" \
"                      updated (default: the cipher's limit, 2^24.5 for\n"	\
"                      AES-GCM/CCM)\n"

/* The help lines for them, for a command's usage text. */
#define TOOL_TLS_HELP							\
"  --creds DIR         credentials in QEMU's tls-creds-x509 layout: ca-cert.pem,\n" \
"                      server-cert.pem + server-key.pem (accepting end),\n"	\
"                      client-cert.pem + client-key.pem (connecting end),\n"	\
"                      optional ca-crl.pem\n"					\
"  --ktls MODE         prefer: kernel TLS, else userspace TLS, and say why;\n" \
"                      require: fail unless kernel TLS; off: userspace TLS\n" \
"  --tls VERSION       1.2 or 1.3 (default: either, 1.3 chosen when both allow)\n" \
"  --cipher LIST       comma-separated: aes-gcm-128, aes-gcm-256, aes-ccm-128,\n" \
"                      chacha20-poly1305 (default: all, in that order)\n"	\
"  --hostname NAME     (connecting end) the name the peer's certificate must\n" \
"                      carry (default: the host connected to)\n"		\
"  --pin SHA256        accept only a peer whose public key (SPKI) has this\n" \
"                      SHA-256: 64 hex digits or sha256//BASE64; repeatable\n" \
TOOL_IDENTITY_HELP

/* Who may connect, the key passphrase, the hook's time limit. */
#define TOOL_IDENTITY_HELP						\
"  --allow RULE        admit only peers matching a rule (an allow-list, like\n" \
"                      QEMU's tls-authz): dn:SUBJECT (exact, RFC 2253, e.g.\n" \
"                      dn:CN=src.example,O=Example), dn-glob:PATTERN (fnmatch,\n" \
"                      e.g. 'dn-glob:CN=*.example,O=Example'), dns:NAME,\n"	\
"                      ip:ADDRESS (subjectAltName), spki:SHA256; repeatable.\n" \
"                      Default (no rule): ANY certificate the CA signed is\n" \
"                      admitted, so with a shared CA set an allow-list\n"	\
"  --allow-file FILE   more rules, one per line ('#' comments)\n"		\
"  --key-passphrase-file FILE  the passphrase of an encrypted private key\n" \
"                      (first line; the tool never prompts).  A key file may\n" \
"                      be readable by its group (0640), never by others\n"	\
"  --hook-timeout S    the check hook's limit for its whole run (default 30);\n" \
"                      at it the hook's process group is killed and the\n"	\
"                      connection refused\n"

void tool_tls_init(struct tool_tls *t, enum ktm_ktls_policy policy);
/* 1: @c was a TLS option and is taken; 0: not one of them; 2: a bad
 * value (the usage error is printed). */
int tool_tls_option(struct tool_tls *t, int c, const char *arg,
		    const char *cmd);
/* Print "authorization: ..." and the key and certificate notes on
 * standard error. */
void tool_identity_note(const struct ktm_config *cfg);
/* Print "warning: ..." when our own certificate has expired or is not
 * valid yet. */
void tool_cert_warning(const struct ktm_config *cfg);
/* A configuration for @ep from the options; NULL with *errp. */
struct ktm_config *tool_tls_config(const struct tool_tls *t,
				   enum ktm_endpoint ep,
				   struct ktm_error **errp);

/* ---- addr.c: the one address grammar and TCP listener ---- */

/* Flags of tool_addr_parse(). */
enum {
	TOOL_ADDR_LISTEN = 1,	/* a listening address: "PORT" alone (every
				 * address) and port 0 (any free port) */
	TOOL_ADDR_UNIX = 2,	/* "unix:PATH" allowed */
};

struct tool_addr {
	bool is_unix, listen;
	char path[108];		/* sun_path */
	char host[256];		/* "" when not given (listen on every address) */
	char port[16];		/* digits, 0-65535 */
	char text[300];		/* as given, for messages */
};

/*
 * "HOST:PORT", "[V6]:PORT", "tcp:" before either, with TOOL_ADDR_LISTEN
 * "PORT" alone, with TOOL_ADDR_UNIX "unix:PATH" into @a.  @what names the
 * address in the error ("listen address", "TLS address").  False with
 * *errp (KTM_ERR_CONFIG) for any other form, a port over 65535 or, when
 * connecting, port 0 or no host.
 */
bool tool_addr_parse(const char *s, unsigned int flags, const char *what,
		     struct tool_addr *a, struct ktm_error **errp);
/* A listening TCP socket on @a: the first of HOST's addresses that binds;
 * no host: every address, IPv6 with IPv4-mapped addresses (dual stack)
 * where the kernel has IPv6, else IPv4.  The fd, or -1 with *errp. */
int tool_addr_listen(const struct tool_addr *a, struct ktm_error **errp);
/* A listening TCP socket on "[HOST:]PORT" (errors printed), -1 on
 * failure; @announce prints "listening on ADDR:PORT" (the bound port) on
 * standard output. */
int tool_listen(const char *spec, bool announce);

int cmd_probe(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_qemu(int argc, char **argv);	/* qemu-send, qemu-recv */
int cmd_bench(int argc, char **argv);

#endif /* KTM_TOOL_H */
