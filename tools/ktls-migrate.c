// SPDX-License-Identifier: MIT
/*
 * ktls-migrate: the command-line tool.  Parses arguments and prints; all
 * work is done by libktm through its public header.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *out)
{
	fprintf(out,
"Usage: %s COMMAND [OPTIONS]\n"
"\n"
"Encrypted VM migration through Linux kernel TLS (kTLS).\n"
"\n"
"Commands:\n"
"  probe [--json]   Say what this host's kernel TLS can do: the tls module,\n"
"                   each TLS version x cipher for send and receive, rekey\n"
"                   (TLS 1.3 KeyUpdate, kernel 6.14+), io_uring, NIC TLS\n"
"                   offload (ethtool features).  One line each; see\n"
"                   'probe --help'.\n"
"  migrate send|recv\n"
"                   Move a memory image (a VM's RAM file, /dev/shm file, or\n"
"                   stdin/stdout) over mutually authenticated TLS, in the\n"
"                   kernel where it can; see 'migrate --help'.\n"
"  proxy            Put kernel TLS under a QEMU that migrates over plain\n"
"                   unix/TCP sockets: one authenticated kTLS connection per\n"
"                   QEMU connection (multifd too); see 'proxy --help'.\n"
"  qemu-send, qemu-recv\n"
"                   Hand QEMU a ready kernel-TLS socket over QMP (getfd, then\n"
"                   migrate / migrate-incoming fd:NAME) and wait for the\n"
"                   result; see 'qemu-send --help'.\n"
"  bench            The comparison matrix: plaintext, userspace TLS, kernel\n"
"                   TLS and peers over loopback; see 'bench --help'.\n"
"\n"
"Options:\n"
"  -h, --help       Show this text.\n"
"  -V, --version    Show the version.\n",
		tool_prog);
}

static void probe_usage(FILE *out)
{
	fprintf(out,
"Usage: %s probe [--json]\n"
"\n"
"Say what this host's kernel TLS can do, one line each: whether the tls\n"
"TCP ULP exists, each TLS version x cipher for send and receive (tried on\n"
"a throwaway loopback connection), rekey (TLS 1.3 KeyUpdate, kernel\n"
"6.14+, read from the kernel's TLS counters), io_uring and NIC TLS offload\n"
"(ethtool features).\n"
"\n"
"Options:\n"
"  --json           print the result as one JSON object (\"schema\": 1)\n"
"  -h, --help       show this text\n"
"\n"
"Exit status: 0 kernel TLS works, 1 it is unavailable, 2 usage, 3 the\n"
"probe itself failed.\n",
		tool_prog);
}

static const char *support_word(enum ktm_support s)
{
	switch (s) {
	case KTM_SUPPORTED:
		return "yes";
	case KTM_UNSUPPORTED:
		return "no";
	case KTM_PROBE_FAILED:
		return "error";
	}
	return "?";
}

/* JSON string body: the probe's phrases hold quotes, nothing exotic. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_item_json(const char *key, enum ktm_support s,
			    const char *reason, int last)
{
	printf("  \"%s\": {\"supported\": \"%s\", \"reason\": ", key,
	       support_word(s));
	json_str(reason);
	printf("}%s\n", last ? "" : ",");
}

/* One probe line: "NAME: yes: reason" or a JSON member. */
static void print_item(bool json, const char *text_name, const char *json_key,
		       enum ktm_support s, const char *reason, int last)
{
	if (json)
		print_item_json(json_key, s, reason, last);
	else
		printf("%s: %s: %s\n", text_name, support_word(s), reason);
}

static void print_ktls(bool json, const struct ktm_probe *p,
		       enum ktm_support ktls, const char *reason,
		       const char *hint)
{
	if (json) {
		printf("{\n  \"schema\": 1,\n  \"kernel\": ");
		json_str(ktm_probe_kernel(p));
		printf(",\n");
		print_item_json("ktls", ktls, reason, 0);
	} else if (ktls == KTM_SUPPORTED) {
		printf("kernel TLS: yes (kernel %s): %s\n", ktm_probe_kernel(p),
		       reason);
	} else {
		printf("kernel TLS: %s (kernel %s): %s%s%s\n",
		       ktls == KTM_UNSUPPORTED ? "unavailable" : "probe failed",
		       ktm_probe_kernel(p), reason,
		       hint ? "; " : "", hint ? hint : "");
	}
}

/* Every TLS version x cipher row. */
static void print_ciphers(bool json, const struct ktm_probe *p)
{
	static const enum ktm_tls_version versions[] = { KTM_TLS_1_2,
							 KTM_TLS_1_3 };
	const char *reason;
	int v, n;

	for (v = 0; v < 2; v++) {
		for (n = 1; n <= KTM_CIPHER_COUNT; n++) {
			enum ktm_support s = ktm_probe_cipher(p, versions[v], n,
							      &reason);
			char name[64];

			snprintf(name, sizeof(name), "%s%s %s", json ? "" : "cipher ",
				 ktm_tls_version_name(versions[v]),
				 ktm_cipher_name(n));
			print_item(json, name, name, s, reason, 0);
		}
	}
}

/* --json (1), --help (-1), or a usage error (2). */
static int probe_options(int argc, char **argv, bool *json)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	*json = false;
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j') {
			*json = true;
		} else if (c == 'h') {
			probe_usage(stdout);
			return -1;
		} else {
			probe_usage(stderr);
			return 2;
		}
	}
	return 1;
}

int cmd_probe(int argc, char **argv)
{
	struct ktm_error *err = NULL;
	const char *reason, *hint;
	enum ktm_support ktls, s;
	struct ktm_probe *p;
	bool json;
	int ret = probe_options(argc, argv, &json);

	if (ret != 1)
		return ret < 0 ? 0 : ret;
	p = ktm_probe_new(&err);
	if (!p) {
		tool_error(err);
		return 3;
	}
	ktls = ktm_probe_ktls(p, &reason, &hint);
	print_ktls(json, p, ktls, reason, hint);
	if (ktls == KTM_SUPPORTED)
		print_ciphers(json, p);
	s = ktm_probe_rekey(p, &reason);
	print_item(json, "rekey", "rekey", s, reason, 0);
	s = ktm_probe_io_uring(p, &reason);
	print_item(json, "io_uring", "io_uring", s, reason, 0);
	s = ktm_probe_offload(p, &reason);
	print_item(json, "NIC offload", "nic_offload", s, reason, 1);
	if (json)
		printf("}\n");
	ktm_probe_free(p);
	return ktls == KTM_SUPPORTED ? 0 : ktls == KTM_UNSUPPORTED ? 1 : 3;
}

static int dispatch(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("%s %s\n", tool_prog, KTM_VERSION_STRING);
		return 0;
	}
	if (!strcmp(argv[1], "probe"))
		return cmd_probe(argc - 1, argv + 1);
	if (!strcmp(argv[1], "migrate"))
		return cmd_migrate(argc - 1, argv + 1);
	if (!strcmp(argv[1], "proxy"))
		return cmd_proxy(argc - 1, argv + 1);
	if (!strcmp(argv[1], "qemu-send") || !strcmp(argv[1], "qemu-recv"))
		return cmd_qemu(argc - 1, argv + 1);
	if (!strcmp(argv[1], "bench"))
		return cmd_bench(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown command '%s'\n", tool_prog, argv[1]);
	fprintf(stderr, "Try '%s --help'.\n", tool_prog);
	return 2;
}

/*
 * Standard output closed or a pipe whose reader is gone (`probe | head
 * -c1`): no death by SIGPIPE, and no report lost in silence either: the
 * write error is named and a run that would have succeeded exits 1.
 */
int main(int argc, char **argv)
{
	int ret, err;

	signal(SIGPIPE, SIG_IGN);
	ret = dispatch(argc, argv);
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return ret;
	err = errno ? errno : EIO;
	fprintf(stderr, "%s: cannot write to standard output: %s\n", tool_prog,
		strerror(err));
	fprintf(stderr, "  hint: what the command printed there (its report) "
		"is incomplete; keep standard output open until it exits\n");
	return ret ? ret : 1;
}
