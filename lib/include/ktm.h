/* SPDX-License-Identifier: MIT */
/*
 * ktls-migrate: encrypted VM migration through Linux kernel TLS.
 *
 * The only installed header of libktm.  Every type is opaque; callers pass
 * file descriptors, paths, host names and the plain enums below.  No kernel,
 * OpenSSL or libnl type appears here.
 *
 * The library's boundary: configuration and credentials, the handshake, the
 * session (switch into kernel TLS, fallback, rekey, status), the migration
 * stream, pre-migration checks, fd passing, and the relay (a session seen
 * as a plain fd).  Accepting connections, address policy and talking to
 * QEMU (QMP) are the application's: ktls-migrate's proxy and QMP client
 * (tools/proxy.c, tools/qmp.c) are built on this header alone.
 *
 * Error convention (all calls that can fail): the last parameter is
 * `struct ktm_error **errp`.  It may be NULL.  On success it is left
 * untouched; on failure it is set exactly once to an error the caller owns
 * and releases with ktm_error_free().  The return value alone tells success:
 * true, a non-NULL pointer, or a non-negative number.  Setting an error over
 * one already set is a programming error and aborts (unless built with
 * -DNDEBUG); pass errors up with ktm_error_propagate().
 *
 * Event loops: ktm_session_start() and ktm_session_handshake() step the
 * same handshake the blocking ktm_session_connect()/_accept()/_new_fd()
 * run, never blocking (see "Sessions").
 *
 * Threads: objects are not shared between threads unless a function says so.
 */
#ifndef KTM_H
#define KTM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KTM_VERSION_MAJOR 0
#define KTM_VERSION_MINOR 1
#define KTM_VERSION_PATCH 0
#define KTM_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

struct ktm_error;

/* What kind of failure; callers branch on this and on the errno, never on
 * the message text. */
enum ktm_error_class {
	KTM_ERR_CONFIG = 1,	/* bad input: a path, a key, an option */
	KTM_ERR_TLS_VERIFY,	/* the peer's certificate was rejected */
	KTM_ERR_TLS_PROTOCOL,	/* the handshake or a record failed */
	KTM_ERR_KTLS_UNSUPPORTED, /* this kernel lacks tls or the cipher */
	KTM_ERR_KTLS_INSTALL,	/* the kernel refused keys it should take */
	KTM_ERR_IO,		/* a system call failed */
	KTM_ERR_PEER,		/* the peer went away, refused or stayed silent */
	KTM_ERR_CHECK,		/* a pre-migration check vetoed */
	KTM_ERR_INTERNAL,	/* a bug in ktls-migrate */
	KTM_ERR_CANCELLED,	/* ktm_migration_cancel() stopped it */
};

enum ktm_error_class ktm_error_class(const struct ktm_error *err);
/* The OS errno behind the failure, or 0. */
int ktm_error_errno(const struct ktm_error *err);
/* One phrase naming the object and value, no trailing newline.  Owned by
 * the error. */
const char *ktm_error_message(const struct ktm_error *err);
/* What the user can do about it, or NULL.  Owned by the error. */
const char *ktm_error_hint(const struct ktm_error *err);
/* Accepts NULL. */
void ktm_error_free(struct ktm_error *err);

#define KTM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/*
 * For code that links the library and reports in its terms (callbacks,
 * the tool's own modules).  Set *errp (when errp is not NULL) to a new
 * error of @cls with the OS errno @errnum (0 for none) and a message from
 * @fmt: one phrase naming the object and value, without trailing period or
 * newline.  *errp must be NULL: an error is set exactly once (a debug build
 * aborts otherwise, as QEMU's error_setv asserts).
 */
void ktm_error_set(struct ktm_error **errp, enum ktm_error_class cls,
		   int errnum, const char *fmt, ...) KTM_PRINTF(4, 5);
/* Attach the remedy to an error just set; no-op when errp is NULL. */
void ktm_error_hint_set(struct ktm_error **errp, const char *fmt, ...)
	KTM_PRINTF(2, 3);
/*
 * Hand @err (taken; may be NULL: nothing happens) to the caller: into
 * *dst_errp when @dst_errp is not NULL (*dst_errp must be NULL, as for
 * ktm_error_set), else freed.  QEMU's error_propagate.
 */
void ktm_error_propagate(struct ktm_error **dst_errp, struct ktm_error *err);

/* ------------------------------------------------------------------ */
/* TLS versions and ciphers                                            */
/* ------------------------------------------------------------------ */

enum ktm_tls_version {
	KTM_TLS_1_2 = 0x0303,
	KTM_TLS_1_3 = 0x0304,
};

/* The AEAD ciphers kernel TLS can take (the rows of ktls/ciphers.def). */
enum ktm_cipher {
	KTM_CIPHER_AES_GCM_128 = 1,
	KTM_CIPHER_AES_GCM_256,
	KTM_CIPHER_AES_CCM_128,
	KTM_CIPHER_CHACHA20_POLY1305,
};
#define KTM_CIPHER_COUNT 4

/* "AES-GCM-128", ...; "TLS 1.3", ...; NULL for a value out of range. */
const char *ktm_cipher_name(enum ktm_cipher cipher);
const char *ktm_tls_version_name(enum ktm_tls_version version);

/* ------------------------------------------------------------------ */
/* Probe: what this host's kernel can do                               */
/* ------------------------------------------------------------------ */

struct ktm_probe;

enum ktm_support {
	KTM_SUPPORTED = 0,
	KTM_UNSUPPORTED,	/* the kernel lacks it; the reason says what */
	KTM_PROBE_FAILED,	/* the probe itself failed; the reason says how */
};

/*
 * Probe kernel TLS on this host: attach the "tls" ULP to a throwaway
 * loopback TCP connection, then try every TLS version x cipher for send
 * and receive on fresh connections, check rekey support (from the kernel's
 * TLS counters; a live session is never touched) and io_uring.
 *
 * Needs no privileges.  Takes well under a second.  Returns NULL only when
 * the probe could not run at all (no loopback, no memory), with *errp set.
 */
struct ktm_probe *ktm_probe_new(struct ktm_error **errp);
void ktm_probe_free(struct ktm_probe *probe);

/* Kernel release (uname -r).  Owned by the probe. */
const char *ktm_probe_kernel(const struct ktm_probe *probe);

/*
 * Each query returns the support level and, through *reason (may be NULL),
 * one phrase saying why, e.g. "the kernel has no \"tls\" TCP ULP
 * (TCP_ULP: ENOENT)"; for KTM_SUPPORTED a short description.  With a
 * non-NULL *hint the remedy, or NULL.  Strings are owned by the probe.
 */
enum ktm_support ktm_probe_ktls(const struct ktm_probe *probe,
				const char **reason, const char **hint);
enum ktm_support ktm_probe_cipher(const struct ktm_probe *probe,
				  enum ktm_tls_version version,
				  enum ktm_cipher cipher, const char **reason);
enum ktm_support ktm_probe_rekey(const struct ktm_probe *probe,
				 const char **reason);
enum ktm_support ktm_probe_io_uring(const struct ktm_probe *probe,
				    const char **reason);
/* NIC TLS offload (tls-hw-tx-offload / tls-hw-rx-offload via ethtool
 * netlink): supported when some interface offers it; the reason lists
 * them with their state. */
enum ktm_support ktm_probe_offload(const struct ktm_probe *probe,
				   const char **reason);


/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

struct ktm_config;
struct ktm_session;

enum ktm_endpoint {
	KTM_ENDPOINT_CLIENT = 1,	/* connects; the migration source */
	KTM_ENDPOINT_SERVER,		/* accepts; the migration destination */
};

/* What to do when the kernel cannot take the keys. */
enum ktm_ktls_policy {
	KTM_KTLS_PREFER = 0,	/* kernel TLS, else userspace TLS (status says why) */
	KTM_KTLS_REQUIRE,	/* kernel TLS or fail, naming the missing piece */
	KTM_KTLS_OFF,		/* userspace TLS always (for comparison) */
};

/*
 * A configuration is built once, then read by any number of sessions
 * (read-only after setup; sessions may be created from several threads).
 * Defaults: verify the peer, TLS 1.2 to 1.3 (1.3 negotiated when both
 * allow it), every cipher of enum ktm_cipher, kernel TLS preferred,
 * connect and handshake timeouts 10 s each.
 */
struct ktm_config *ktm_config_new(enum ktm_endpoint endpoint,
				  struct ktm_error **errp);
void ktm_config_free(struct ktm_config *cfg);
/* The endpoint @cfg was made for. */
enum ktm_endpoint ktm_config_endpoint(const struct ktm_config *cfg);

/*
 * Credentials directory in QEMU's tls-creds-x509 layout: ca-cert.pem,
 * server-cert.pem + server-key.pem (server), client-cert.pem +
 * client-key.pem (client), optional ca-crl.pem.  The files this endpoint
 * needs are read and checked now: they parse, the key matches the
 * certificate, and the key is not readable by others (its group may
 * read it: see ktm_config_key_note()).  ca-cert.pem may hold several CA
 * certificates (a root and intermediates), the certificate file a chain,
 * and ca-crl.pem one CRL per CA; every certificate of the peer's chain is
 * checked against its issuer's CRL when ca-crl.pem exists.
 */
bool ktm_config_set_creds_dir(struct ktm_config *cfg, const char *dir,
			      struct ktm_error **errp);
/*
 * The credentials are read once: every session, channel and reconnect made
 * from this config shares one TLS context (CA, CRLs, certificate, key)
 * built at the first session.  ktm_config_reload() reads the credentials
 * directory again (all checks as above) for the sessions made after it;
 * running sessions keep what they had.  On failure the old credentials
 * stay in use.  Safe to call while other threads create sessions.
 */
bool ktm_config_reload(struct ktm_config *cfg, struct ktm_error **errp);
/*
 * The passphrase of an encrypted PEM private key: the first line of
 * @path (a file not readable by others).  Call before
 * ktm_config_set_creds_dir().  Without it an encrypted key is an error
 * ("... is encrypted and no passphrase was given"); the library never
 * prompts on a terminal.
 */
bool ktm_config_set_key_passphrase_file(struct ktm_config *cfg,
					const char *path,
					struct ktm_error **errp);
/* A note for reports when the key file is readable by its group (mode
 * 0640: accepted; readable by others is refused), in @buf; else NULL. */
const char *ktm_config_key_note(const struct ktm_config *cfg, char *buf,
				size_t len);
/* A warning for reports when our own certificate has expired or is not
 * valid yet (peers will refuse it; QEMU refuses to load such a
 * certificate), in @buf; else NULL. */
const char *ktm_config_cert_note(const struct ktm_config *cfg, char *buf,
				 size_t len);
/* Verify the peer's certificate (default true).  Off only for tests. */
void ktm_config_set_verify_peer(struct ktm_config *cfg, bool verify);
/* The name (DNS or IP) the server certificate must carry, instead of the
 * host connected to (QEMU's tls-hostname).  Client only. */
bool ktm_config_set_hostname(struct ktm_config *cfg, const char *name,
			     struct ktm_error **errp);
/* Allowed versions, default TLS 1.2 to TLS 1.3 (1.3 is chosen when both
 * ends allow it). */
bool ktm_config_set_versions(struct ktm_config *cfg,
			     enum ktm_tls_version min,
			     enum ktm_tls_version max,
			     struct ktm_error **errp);
/* Allowed ciphers, in order of preference. */
bool ktm_config_set_ciphers(struct ktm_config *cfg,
			    const enum ktm_cipher *ciphers, size_t count,
			    struct ktm_error **errp);
/* Also require the peer's SubjectPublicKeyInfo SHA-256 to equal one of the
 * pins: 64 hex digits, or "sha256//" + base64 (as curl takes them). */
bool ktm_config_add_pin(struct ktm_config *cfg, const char *pin,
			struct ktm_error **errp);
/*
 * Who may connect.  By default any peer whose certificate the CA in
 * ca-cert.pem signed (and that passes the pins and, on the client, the
 * hostname check).  With rules, the peer must also match one of them (an
 * allow-list, default deny, like QEMU's tls-authz with authz-simple or
 * authz-list-file):
 *   dn:SUBJECT       the subject exactly, as ktm_session_peer_subject()
 *                    shows it (RFC 2253, e.g. "CN=src.example,O=Example")
 *   dn-glob:PATTERN  the subject against an fnmatch(3) pattern
 *                    (e.g. "CN=*.example,O=Example")
 *   dns:NAME         a DNS subjectAltName (exact, case-insensitive)
 *   ip:ADDRESS       an iPAddress subjectAltName
 *   spki:SHA256      the public key's SHA-256 (64 hex digits)
 * The check runs right after the chain verified, inside the handshake, so
 * a refused peer never sees or sends an application byte; it gets a
 * bad_certificate alert, and the error here names the peer's subject and
 * SANs and the rule set.  An allow file holds one rule per line ('#'
 * comments, blank lines ignored); a second file replaces the first, the
 * --allow rules stay.  A file without rules is an error.
 */
bool ktm_config_add_allow(struct ktm_config *cfg, const char *rule,
			  struct ktm_error **errp);
bool ktm_config_load_allow_file(struct ktm_config *cfg, const char *path,
				struct ktm_error **errp);
/* Who may connect, in words for a report: "any certificate signed by the
 * CA in PATH (no allow-list)" or "the allow-list FILE (N rules)". */
void ktm_config_authz(const struct ktm_config *cfg, char *buf, size_t len);
void ktm_config_set_ktls(struct ktm_config *cfg, enum ktm_ktls_policy policy);
/* Promise that the peer sends TLS 1.3 records without padding, so kernel
 * TLS may decrypt straight into the reader's buffer (TLS_RX_EXPECT_NO_PAD,
 * Linux 6.0+).  Applied to TLS 1.3 kernel-path receive only; a padded
 * record still arrives intact (the kernel retries it), just slower.
 * ktm_session_rx_no_pad() tells whether it took effect. */
void ktm_config_set_rx_no_pad(struct ktm_config *cfg, bool on);
/* Milliseconds; 0 keeps the default. */
void ktm_config_set_timeouts(struct ktm_config *cfg, unsigned int connect_ms,
			     unsigned int handshake_ms);

/*
 * Pre-migration checks.  Both run on a session whose peer is verified and
 * whose data path is set up, before any application data moves; a veto
 * fails session creation with KTM_ERR_CHECK.
 *
 * In-process: @fn returns true to allow; to veto it returns false and may
 * write one phrase into @reason.  It may call the ktm_session_* status
 * accessors on @s; it must not send or receive.
 */
typedef bool (*ktm_check_fn)(const struct ktm_session *s, void *opaque,
			     char *reason, size_t reason_len);
void ktm_config_set_check(struct ktm_config *cfg, ktm_check_fn fn,
			  void *opaque);
/*
 * External: run @path like a libvirt hook, as
 *   PATH OBJECT migrate pmc URI
 * with the verified peer in the environment: KTM_PEER_SUBJECT,
 * KTM_PEER_SANS (", " separated, escaped as ktm_cert_names() says),
 * KTM_PEER_ISSUER, KTM_PEER_CERT_SHA256,
 * KTM_PEER_SPKI_SHA256 (hex), KTM_TLS_VERSION, KTM_TLS_CIPHER,
 * KTM_DATA_PATH ("kernel" or "userspace"), KTM_ENDPOINT ("client" or
 * "server").  Exit status 0 allows; anything else vetoes, and the error
 * carries the hook's first line of stderr.  The hook runs in its own
 * process group with stdin/stdout on /dev/null and no other inherited
 * descriptor.  It fails closed: fork, exec or waitpid failing (e.g. the
 * process ignores SIGCHLD), death by a signal, or the timeout (30 s by
 * default, for the whole run; its process group is then killed) refuse
 * the connection like a veto.
 */
bool ktm_config_set_check_exec(struct ktm_config *cfg, const char *path,
			       const char *object, const char *uri,
			       struct ktm_error **errp);
/*
 * Records one key may protect in one direction, for the proxy and fd mode
 * (0: the cipher's limit, 2^24.5 for AES-GCM and AES-CCM in TLS 1.3, none
 * for ChaCha20-Poly1305).  A tiny value is for tests.
 */
void ktm_config_set_key_limit(struct ktm_config *cfg, uint64_t records);
/* The limit in effect for @cipher (0: none). */
uint64_t ktm_config_key_limit(const struct ktm_config *cfg,
			      enum ktm_cipher cipher);
/* The check hook's time limit in milliseconds (0: the default, 30 s). */
void ktm_config_set_check_timeout(struct ktm_config *cfg, unsigned int ms);

/* ------------------------------------------------------------------ */
/* Sessions                                                            */
/* ------------------------------------------------------------------ */

/*
 * Connect to @host:@port (TCP), run the TLS handshake, verify the server
 * (its certificate must name the hostname override or else @host), run the
 * checks, and switch the socket into kernel TLS per the policy.  Blocks up
 * to the connect + handshake timeouts.
 */
struct ktm_session *ktm_session_connect(const struct ktm_config *cfg,
					const char *host, const char *port,
					struct ktm_error **errp);
/* Accept one connection on @listen_fd (borrowed) and do the same as a
 * server: the client must present a certificate the CA signed. */
struct ktm_session *ktm_session_accept(const struct ktm_config *cfg,
				       int listen_fd, struct ktm_error **errp);
/* The same on a connected stream socket @fd, which the session takes (it
 * is closed on failure too).  @peer_name is the host the server certificate
 * must name (client; NULL uses the hostname override) and appears in
 * messages. */
struct ktm_session *ktm_session_new_fd(const struct ktm_config *cfg, int fd,
				       const char *peer_name,
				       struct ktm_error **errp);

/*
 * The event-loop handshake (the shape of QEMU's
 * qcrypto_tls_session_handshake: "start, or continue"), for callers with
 * their own poll loop.  The blocking calls above are this loop with
 * poll(2) and the configured timeouts; errors (class, errno, message,
 * hint) are the same.
 *
 *   fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
 *   s = ktm_session_start(cfg, fd, "dst.example", &err);
 *   for (;;) {
 *           r = ktm_session_handshake(s, &err);
 *           if (r == KTM_HANDSHAKE_DONE || r == KTM_HANDSHAKE_ERROR)
 *                   break;
 *           p.fd = ktm_session_poll_fd(s, &p.events);
 *           poll(&p, 1, ktm_session_poll_timeout(s));   (or your loop)
 *   }
 *   ... on error: ktm_session_free(s); close(fd);
 *
 * ktm_session_start() makes a session on the connected stream socket @fd
 * for @cfg's endpoint (client or server).  @fd must already be
 * non-blocking (O_NONBLOCK), or start fails with KTM_ERR_CONFIG.  @fd stays
 * the caller's: the session borrows it, never closes it (not on failure,
 * not in ktm_session_free()) and never changes its O_NONBLOCK flag, so
 * after done it is still non-blocking: ktm_session_send() and
 * ktm_session_recv() block only on a blocking socket, so clear O_NONBLOCK
 * before using them (or read and write the kernel-TLS fd from the loop).
 * Close @fd after ktm_session_free() (or own it via ktm_session_detach()).
 * @peer_name is as for ktm_session_new_fd().  NULL with *errp.
 *
 * ktm_session_handshake() advances the handshake by what the socket
 * allows now and never blocks.  It returns KTM_HANDSHAKE_WANT_READ or
 * _WANT_WRITE (wait for ktm_session_poll_fd() with the events it names,
 * at most ktm_session_poll_timeout() ms, then call again), _DONE, or
 * _ERROR with *errp.  The handshake's end happens within these steps:
 * the peer checks (chain, hostname, allow-list, pins), the switch into
 * kernel TLS or the userspace fallback per the policy, then the checks
 * of ktm_config_set_check() (inline, in this call) and
 * ktm_config_set_check_exec() (a child process; while it runs the step
 * returns _WANT_READ on a descriptor of the hook's, and the hook's
 * timeout is checked on each step).  Past the handshake timeout
 * (ktm_config_set_timeouts()) or the hook's, the next step fails.  After
 * _DONE it returns _DONE again; after _ERROR the session is only good for
 * ktm_session_free().  On an error the peer has been told (an alert)
 * where the protocol allows.
 *
 * ktm_session_poll_fd() returns the descriptor to wait on (the socket,
 * or the running hook's; -1, which poll(2) ignores, when there is none
 * and only the timeout matters) and sets *events to POLLIN or POLLOUT.
 * ktm_session_poll_timeout() returns the milliseconds until the current
 * deadline (0 when it passed: call the step), -1 after done or error.
 */
enum ktm_handshake {
	KTM_HANDSHAKE_ERROR = -1,
	KTM_HANDSHAKE_DONE = 0,
	KTM_HANDSHAKE_WANT_READ,
	KTM_HANDSHAKE_WANT_WRITE,
};
struct ktm_session *ktm_session_start(const struct ktm_config *cfg, int fd,
				      const char *peer_name,
				      struct ktm_error **errp);
enum ktm_handshake ktm_session_handshake(struct ktm_session *s,
					 struct ktm_error **errp);
int ktm_session_poll_fd(const struct ktm_session *s, short *events);
int ktm_session_poll_timeout(const struct ktm_session *s);

/* Send all @len bytes (blocks).  Returns true, or false with *errp. */
bool ktm_session_send(struct ktm_session *s, const void *buf, size_t len,
		      struct ktm_error **errp);
/* Receive up to @len bytes (blocks for at least one).  Returns the count,
 * 0 when the peer ended the session with close_notify, or -1 with *errp
 * (a connection closed without close_notify is an error: truncation). */
ssize_t ktm_session_recv(struct ktm_session *s, void *buf, size_t len,
			 struct ktm_error **errp);
/* Send close_notify; the socket stays open until ktm_session_free(). */
bool ktm_session_shutdown(struct ktm_session *s, struct ktm_error **errp);
/* Close the socket (no close_notify unless shutdown was called) and free.
 * Accepts NULL. */
void ktm_session_free(struct ktm_session *s);

/* The socket (borrowed; valid until free or detach).  On the kernel path
 * plaintext written to it is encrypted by the kernel. */
int ktm_session_fd(const struct ktm_session *s);
/* Hand the kernel-TLS socket to the caller, who owns it from then on, and
 * free the session.  Only when both directions run in the kernel; on
 * failure the session is left as it was.  Returns the fd or -1. */
int ktm_session_detach(struct ktm_session *s, struct ktm_error **errp);

/* ---- status ---- */

enum ktm_dir {
	KTM_DIR_TX = 0,
	KTM_DIR_RX = 1,
};

enum ktm_path {
	KTM_PATH_KERNEL_SW = 1,	/* kernel TLS, crypto on the CPU */
	KTM_PATH_KERNEL_HW,	/* kernel TLS, crypto on the NIC */
	KTM_PATH_USERSPACE,	/* OpenSSL in this process */
};

enum ktm_path ktm_session_path(const struct ktm_session *s, enum ktm_dir dir);
/* "kernel", "kernel-hw", "userspace". */
const char *ktm_path_name(enum ktm_path path);
/* Why the session runs in userspace (NULL on the kernel path). */
const char *ktm_session_fallback_reason(const struct ktm_session *s);
enum ktm_tls_version ktm_session_version(const struct ktm_session *s);
enum ktm_cipher ktm_session_cipher(const struct ktm_session *s);
/* The verified peer: subject (one line, RFC 2253), subject alternative
 * names ("DNS:a, IP:10.0.0.7"), SHA-256 of the certificate and of its
 * SubjectPublicKeyInfo (hex).  "" when the peer sent no certificate.
 * Owned by the session. */
const char *ktm_session_peer_subject(const struct ktm_session *s);
const char *ktm_session_peer_sans(const struct ktm_session *s);
/* The issuer of the peer's certificate, RFC 2253 like the subject. */
const char *ktm_session_peer_issuer(const struct ktm_session *s);
const char *ktm_session_peer_cert_sha256(const struct ktm_session *s);
const char *ktm_session_peer_spki_sha256(const struct ktm_session *s);
/*
 * The identity text of a DER certificate (@der_len bytes at @der), as the
 * session accessors above give it: @subject in RFC 2253 form, @sans as
 * "DNS:a, IP:10.0.0.7".  Each SAN is decoded by its type with its length
 * checked (an iPAddress of other than 4 or 16 bytes reads
 * "IP:invalid(N bytes)"); every byte outside printable ASCII and every
 * ',', '\\' or '"' inside a name is written as \xHH, so no name can pass
 * for two, end a line or a JSON string.  Only whole names are written,
 * with ", ..." when some did not fit (1024 and 2048 bytes always hold a
 * legal subject and a longest DNS name).  A pure function of its input
 * (the fuzz target tests/fuzz/cert_names.c calls it).  false with *errp
 * when @der is not a certificate.
 */
bool ktm_cert_names(const void *der, size_t der_len, char *subject,
		    size_t subject_len, char *sans, size_t sans_len,
		    struct ktm_error **errp);
/* Whether TLS_RX_EXPECT_NO_PAD is in effect on this session. */
bool ktm_session_rx_no_pad(const struct ktm_session *s);
/* Application bytes and TLS records moved in @dir since the switch. */
uint64_t ktm_session_bytes(const struct ktm_session *s, enum ktm_dir dir);
uint64_t ktm_session_records(const struct ktm_session *s, enum ktm_dir dir);

/* ---- key usage ---- */

/* Records protected by the current key of @dir (the key-usage limit of
 * AES-GCM in TLS 1.3 is 2^24.5 full records, RFC 8446 §5.5). */
uint64_t ktm_session_key_records(const struct ktm_session *s,
				 enum ktm_dir dir);
/* Whether ktm_session_rekey() can work: TLS 1.3, and on the kernel path a
 * kernel that replaces keys on a live socket (6.14 or later). */
bool ktm_session_can_rekey(const struct ktm_session *s);
/* Send a TLS 1.3 KeyUpdate and move to the next send key.  The peer's
 * session follows on its next receive (kernel path: needs 6.14 there too;
 * userspace path: OpenSSL does it).  False with *errp (KTM_ERR_KTLS_UNSUPPORTED
 * when in-place rekey is impossible; then reconnect instead). */
bool ktm_session_rekey(struct ktm_session *s, struct ktm_error **errp);
/* Whether the peer asked for our KeyUpdate and it is not sent yet (kernel
 * path).  ktm_session_send() sends it first; a caller that writes to
 * ktm_session_fd() itself (splice) calls ktm_session_rekey() from the
 * thread that sends.  Any thread may ask. */
bool ktm_session_rekey_owed(const struct ktm_session *s);
/*
 * The kernel's record sequence of @dir on a kernel-TLS socket @fd (e.g. a
 * detached session's, dup'ed before it went to QEMU): how many records the
 * current key sealed (TLS 1.3; TLS 1.2 started at 1).  @cipher is the
 * session's.  false with *errp when @fd has no kernel TLS in @dir.
 */
bool ktm_fd_key_records(int fd, enum ktm_cipher cipher, enum ktm_dir dir,
			uint64_t *records, struct ktm_error **errp);
/* ktm_config_key_limit() of the session's config for its cipher. */
uint64_t ktm_session_key_limit(const struct ktm_session *s);
/* How many times @dir moved to a new key. */
unsigned int ktm_session_rekeys(const struct ktm_session *s, enum ktm_dir dir);

/* ------------------------------------------------------------------ */
/* Fd hand-over (SCM_RIGHTS)                                           */
/* ------------------------------------------------------------------ */

/*
 * Pass @fd (borrowed; the caller may close it afterwards) over the
 * connected unix socket @unix_fd, with a short @name (may be NULL) as the
 * payload, e.g. for QEMU's `getfd` (the name travels in the QMP command
 * there; see README).  Returns true or false with *errp.
 */
bool ktm_fd_send(int unix_fd, int fd, const char *name,
		 struct ktm_error **errp);
/* Receive one fd (owned by the caller) and its name into @name (may be
 * NULL).  Returns the fd or -1 with *errp. */
int ktm_fd_recv(int unix_fd, char *name, size_t name_len,
		struct ktm_error **errp);

/*
 * The address of @fd's peer (@peer true) or of @fd itself, as messages
 * print it: "10.0.0.7:4444", "[::1]:4444", "unix:PATH"; "fd N" when the
 * socket has none.  Written into @buf, which is returned.
 */
const char *ktm_fd_addr_text(int fd, bool peer, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* Migration stream (lib/migrate.c, lib/stream.c)                      */
/* ------------------------------------------------------------------ */

/*
 * A migration moves one memory image (a file, a /dev/shm file, a memfd)
 * from a source to a destination over N parallel sessions ("channels"),
 * framed as described in lib/STREAM.md: page runs with offsets, zero pages
 * elided, an end marker with a digest of the image (XXH3-128 by default,
 * SHA-256 on request) that covers every byte committed, small messages
 * both ways.  The destination writes into PATH.ktm-partial and renames it
 * to PATH only after the digest matches; a failed or truncated migration
 * leaves no file at PATH.
 */
struct ktm_migration;

/* How page runs go into the socket on the kernel path.  The userspace
 * path always batches into full 16 KiB records through OpenSSL. */
enum ktm_send_path {
	KTM_SEND_AUTO = 0,	/* sendfile for files, writev otherwise */
	KTM_SEND_SENDFILE,
	KTM_SEND_SPLICE,
	KTM_SEND_IO_URING,
	KTM_SEND_WRITEV,
};

/* The end-to-end image check.  The AEAD authenticates every record
 * already; the digest proves every committed byte is the byte the source
 * read, at its offset, and that nothing is missing.  XXH3-128 costs about
 * a tenth of SHA-256; SHA-256 gives a cryptographic digest to keep. */
enum ktm_digest {
	KTM_DIGEST_XXH3_128 = 1,
	KTM_DIGEST_SHA256 = 2,
};
/* "xxh3" or "sha256" (NULL for another value). */
const char *ktm_digest_name(enum ktm_digest d);

/* Where a migration's time went, summed over the channel threads
 * (seconds of wall time inside each phase). */
enum ktm_phase {
	KTM_PHASE_SCAN,		/* source: finding zero pages */
	KTM_PHASE_SEND,		/* source: framing, TLS and socket writes */
	KTM_PHASE_RECV,		/* destination: socket reads and TLS */
	KTM_PHASE_WRITE,	/* destination: copying into the image */
	KTM_PHASE_HASH,		/* both: the image digest */
	KTM_PHASE_FINISH,	/* both: digest exchange, verdict, commit */
	KTM_PHASE_COUNT,
};
/* "scan", "send", "recv", "write", "hash", "finish". */
const char *ktm_phase_name(enum ktm_phase p);

/* The configuration is borrowed and must outlive the migration. */
struct ktm_migration *ktm_migration_new(const struct ktm_config *cfg,
					struct ktm_error **errp);
void ktm_migration_free(struct ktm_migration *m);

/* Parallel sessions, 1 to 16 (default 1).  Source only: the destination
 * takes what the source announces. */
bool ktm_migration_set_channels(struct ktm_migration *m, unsigned int n,
				struct ktm_error **errp);
void ktm_migration_set_send_path(struct ktm_migration *m,
				 enum ktm_send_path path);
/* TLS_TX_ZEROCOPY_RO for sendfile: only for a source that cannot change
 * until TCP has it acknowledged (never live guest memory: a page changed
 * before a retransmit breaks the record's tag). */
void ktm_migration_set_zerocopy_ro(struct ktm_migration *m, bool on);
/* Records one key may protect before the channel rekeys (TLS 1.3 KeyUpdate
 * where the kernel can) or moves to a fresh connection.  0 (default): the
 * AEAD limit, 2^24.5 full records for AES-GCM/CCM, none for ChaCha20. */
void ktm_migration_set_key_limit(struct ktm_migration *m, uint64_t records);
/* Called from the migrating thread about every 0.25 s and at the end. */
typedef void (*ktm_progress_fn)(uint64_t done, uint64_t total, void *opaque);
void ktm_migration_set_progress(struct ktm_migration *m, ktm_progress_fn fn,
				void *opaque);
/* Destination: how long to wait for each channel's connection (default
 * 30 s). */
void ktm_migration_set_accept_timeout(struct ktm_migration *m,
				      unsigned int ms);
/* Source: the image digest (default XXH3-128).  Destination: 0 (default)
 * accepts the source's choice; a digest here refuses any other. */
void ktm_migration_set_digest(struct ktm_migration *m, enum ktm_digest d);
/* Destination: ask the source for these bytes first (a page request on
 * the return path, as postcopy does); up to 8 ranges, page aligned. */
bool ktm_migration_request_pages(struct ktm_migration *m, uint64_t offset,
				 uint64_t len, struct ktm_error **errp);
/* Both sides: the longest wait for the peer once the channels are up
 * (default 30 s): a poll, a blocked send or receive (SO_SNDTIMEO,
 * SO_RCVTIMEO), unacknowledged data (TCP_USER_TIMEOUT) and a silent
 * connection (TCP keepalive) all end in an error naming the peer and the
 * timeout.  0 keeps the default. */
void ktm_migration_set_io_timeout(struct ktm_migration *m, unsigned int ms);
/* Destination: the largest image accepted.  0 (default): the free space
 * of the target's filesystem.  Either way the image is reserved with
 * posix_fallocate() before the source is told to start. */
void ktm_migration_set_max_image_size(struct ktm_migration *m,
				      uint64_t bytes);
/* Destination: replace an existing PATH (at commit, by rename over it;
 * until then the old file stays).  Off by default: an existing PATH is
 * refused before any connection is accepted. */
void ktm_migration_set_force(struct ktm_migration *m, bool on);
/* Destination: called from the accepting thread with one phrase for each
 * connection that was refused while the migration went on (a port scan,
 * a non-TLS peer, an unauthorized certificate, another migration). */
typedef void (*ktm_log_fn)(const char *msg, void *opaque);
void ktm_migration_set_log(struct ktm_migration *m, ktm_log_fn fn,
			   void *opaque);
/*
 * Destination: whether the image can be written to @path: its directory
 * exists and is writable, no PATH.ktm-partial is left from an earlier run
 * (the hint says how to remove it), and PATH does not exist unless
 * forced.  ktm_migration_recv() runs it before accepting; a caller may run
 * it earlier to say so at start.  false with *errp (KTM_ERR_CONFIG).
 */
bool ktm_migration_check_target(struct ktm_migration *m, const char *path,
				struct ktm_error **errp);

/*
 * Source: connect @n channels to @host:@port and send the image in
 * @image_fd (borrowed; a regular file, /dev/shm file or memfd, read from
 * offset 0 to its size).  Returns true only after the destination reported
 * that the digest matched and the image is committed.
 */
bool ktm_migration_send(struct ktm_migration *m, const char *host,
			const char *port, int image_fd,
			struct ktm_error **errp);
/*
 * Destination: accept the source's channels on @listen_fd (borrowed) and
 * write the image to @path (see above).  @path "-" is not accepted here;
 * the tool spools to stdout itself.
 */
bool ktm_migration_recv(struct ktm_migration *m, int listen_fd,
			const char *path, struct ktm_error **errp);
/*
 * Stop a running (or the next) ktm_migration_send()/_recv() of @m from
 * another thread or from a signal handler (async-signal-safe: an atomic
 * flag and a write(2); errno is kept).  @by names who cancelled, e.g.
 * "SIGINT" (a string that outlives @m; NULL: "the caller").  The call
 * returns false within about 2 s with KTM_ERR_CANCELLED (ECANCELED),
 * "... was cancelled by @by"; the peer is told so over ABORT when the
 * stream allows it (it fails with KTM_ERR_PEER, ECANCELED and that
 * sentence), and the destination commits nothing and removes its partial
 * file.  A cancel during the handshake cuts the connection (the peer sees
 * a stray connection).  Once cancelled, @m stays cancelled.
 */
void ktm_migration_cancel(struct ktm_migration *m, const char *by);

/* ---- the report (valid after send/recv returned, also on failure) ---- */

uint64_t ktm_migration_image_bytes(const struct ktm_migration *m);
/* Payload bytes of non-zero pages moved; zero pages skipped. */
uint64_t ktm_migration_page_bytes(const struct ktm_migration *m);
uint64_t ktm_migration_zero_bytes(const struct ktm_migration *m);
/* Application bytes on all sessions (frames included), this direction. */
uint64_t ktm_migration_wire_bytes(const struct ktm_migration *m);
double ktm_migration_seconds(const struct ktm_migration *m);
unsigned int ktm_migration_channels(const struct ktm_migration *m);
/* The data path of channel @i ("kernel", "kernel-hw", "userspace"). */
enum ktm_path ktm_migration_path(const struct ktm_migration *m,
				 unsigned int i);
/* Why channel 0 runs in userspace, or NULL. */
const char *ktm_migration_fallback_reason(const struct ktm_migration *m);
/* Channel 0's verified peer, as the session names it (escaped text, see
 * ktm_session_peer_subject()); "" until a session was up.  Owned by @m,
 * valid after the migration ended too. */
enum ktm_peer_field {
	KTM_PEER_SUBJECT,
	KTM_PEER_SANS,
	KTM_PEER_ISSUER,
	KTM_PEER_SPKI_SHA256,
};
const char *ktm_migration_peer(const struct ktm_migration *m,
			       enum ktm_peer_field f);
enum ktm_tls_version ktm_migration_version(const struct ktm_migration *m);
enum ktm_cipher ktm_migration_cipher(const struct ktm_migration *m);
/* "sendfile", "splice", "io_uring", "writev", "userspace". */
const char *ktm_migration_send_path_name(const struct ktm_migration *m);
unsigned int ktm_migration_rekeys(const struct ktm_migration *m);
unsigned int ktm_migration_reconnects(const struct ktm_migration *m);
/* The image digest (hex), its algorithm, and whether both ends agreed. */
const char *ktm_migration_digest(const struct ktm_migration *m);
enum ktm_digest ktm_migration_digest_type(const struct ktm_migration *m);
bool ktm_migration_digest_ok(const struct ktm_migration *m);
/* Destination: how many requested page ranges arrived marked as such. */
unsigned int ktm_migration_requests_served(const struct ktm_migration *m);
/* Seconds spent in phase @p (see enum ktm_phase). */
double ktm_migration_phase_seconds(const struct ktm_migration *m,
				   enum ktm_phase p);

/* ------------------------------------------------------------------ */
/* Relay (lib/relay.c): a plain-fd view of a session                   */
/* ------------------------------------------------------------------ */

/*
 * A relay moves the bytes of one session to and from a plain stream socket
 * (for migration code that speaks plain sockets, such as QEMU's
 * `migrate unix:PATH`).  Accepting connections, choosing addresses and the
 * socket policy (loopback only, owner-only unix sockets) belong to the
 * caller: the tool's proxy (`ktls-migrate proxy`, tools/proxy.c) is one,
 * built on these calls alone.
 *
 * Bytes move with splice(2) on the kernel-TLS path (plain socket -> pipe ->
 * kTLS socket and back; one thread per direction) and through
 * ktm_session_send()/recv() on the userspace path (one thread, poll).  End
 * of stream: EOF from one side becomes close_notify and a half close
 * towards the other; close_notify becomes shutdown(SHUT_WR) of the plain
 * socket.  A connection closed without close_notify is a truncation error.
 */
/* One relayed connection. */
struct ktm_proxy_conn;

/*
 * Called once per connection when it ended, from the thread that ran
 * it.  @err (borrowed; NULL when both directions ended cleanly) says why
 * it failed.
 */
typedef void (*ktm_proxy_report_fn)(const struct ktm_proxy_conn *conn,
				    const struct ktm_error *err, void *opaque);

/*
 * A connection numbered @id, named @peer (the TLS side, "10.0.0.7:4444")
 * and @local (the plain side, "unix:PATH") in messages; its clock starts
 * now.  It relays nothing until ktm_proxy_conn_attach().  NULL with *errp
 * (KTM_ERR_INTERNAL) when out of memory.
 */
struct ktm_proxy_conn *ktm_proxy_conn_new(unsigned int id, const char *peer,
					  const char *local,
					  struct ktm_error **errp);
/* Give @c the session @s and the connected plain socket @local_fd; takes
 * both (either may be NULL / -1 for a connection that failed before it
 * had one).  Once, before ktm_proxy_conn_run(). */
void ktm_proxy_conn_attach(struct ktm_proxy_conn *c, struct ktm_session *s,
			   int local_fd);
/* Relay, blocking, until both directions ended or one failed.  Blocks
 * SIGPIPE in the calling thread. */
void ktm_proxy_conn_run(struct ktm_proxy_conn *c);
/* Record @err (taken; the first failure wins) and cut the connection both
 * ways so a running ktm_proxy_conn_run() returns.  Any thread. */
void ktm_proxy_conn_fail(struct ktm_proxy_conn *c, struct ktm_error *err);
/* Stop the clock, call @report (may be NULL), then close both sockets and
 * free the session.  Once, after run (or instead of it). */
void ktm_proxy_conn_finish(struct ktm_proxy_conn *c, ktm_proxy_report_fn report,
			   void *opaque);
/* The first failure, or NULL.  Owned by @c. */
const struct ktm_error *ktm_proxy_conn_error(const struct ktm_proxy_conn *c);
/* Accepts NULL.  After ktm_proxy_conn_finish(). */
void ktm_proxy_conn_free(struct ktm_proxy_conn *c);
/*
 * How the TLS peer may end a connection.  KTM_PEER_END_CLOSE_NOTIFY (the
 * default, for a peer that is another ktls-migrate end): only a TLS
 * close_notify ends a direction; a bare TCP FIN is a truncation error.
 * KTM_PEER_END_QEMU_TLS, for a peer that is a QEMU using its own
 * tls-creds-x509 (GnuTLS): QEMU 7.2 ends every migration channel, and QEMU
 * 10 its main channel and its destination-side channels, with a TCP FIN
 * and no close_notify, or with a reset when it closes without reading our
 * close_notify.  A FIN that arrives between two TLS records, or a reset
 * after our close_notify was sent, is then passed on to the plain side as
 * end of file, and QEMU's own framing of the migration stream
 * (QEMU_VM_EOF, multifd sync packets) decides whether the stream was
 * complete, as it does under QEMU's own TLS; a FIN inside a record, a
 * reset or a bad record stay errors.  Before ktm_proxy_conn_run().
 */
enum ktm_peer_end {
	KTM_PEER_END_CLOSE_NOTIFY,
	KTM_PEER_END_QEMU_TLS,
};
void ktm_proxy_conn_set_peer_end(struct ktm_proxy_conn *c,
				  enum ktm_peer_end end);
/* Whether the peer ended its direction without close_notify, as
 * KTM_PEER_END_QEMU_TLS lets it. */
bool ktm_proxy_conn_peer_fin(const struct ktm_proxy_conn *conn);

/*
 * Relay one connection in the calling thread: bytes both ways between the
 * connected plain stream socket @local_fd and the session @s, as the proxy
 * does, until both directions ended or one failed.  Takes both (they are
 * closed and freed before it returns, also on failure).  @report (may be
 * NULL) is called once at the end, before the session is freed.  Returns
 * true when both directions ended cleanly, false with *errp.  Used by
 * `ktls-migrate qemu-send --ktls=prefer` to serve QEMU a socketpair when
 * the kernel cannot take the keys.
 */
bool ktm_proxy_relay(struct ktm_session *s, int local_fd,
		     ktm_proxy_report_fn report, void *opaque,
		     struct ktm_error **errp);

/* The number given to ktm_proxy_conn_new() (0 for ktm_proxy_relay). */
unsigned int ktm_proxy_conn_id(const struct ktm_proxy_conn *conn);
/* The TLS peer ("10.0.0.7:4444") and the plain side ("unix:PATH"). */
const char *ktm_proxy_conn_peer(const struct ktm_proxy_conn *conn);
const char *ktm_proxy_conn_local(const struct ktm_proxy_conn *conn);
/* The session, or NULL when none was made (connect or handshake failed). */
const struct ktm_session *ktm_proxy_conn_session(const struct ktm_proxy_conn *conn);
/* Plaintext bytes relayed: KTM_DIR_TX from the plain side to the TLS peer,
 * KTM_DIR_RX from the TLS peer to the plain side. */
uint64_t ktm_proxy_conn_bytes(const struct ktm_proxy_conn *conn,
			      enum ktm_dir dir);
/* Seconds from ktm_proxy_conn_new() to ktm_proxy_conn_finish(). */
double ktm_proxy_conn_seconds(const struct ktm_proxy_conn *conn);

#ifdef __cplusplus
}
#endif

#endif /* KTM_H */
