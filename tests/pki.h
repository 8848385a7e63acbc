/* SPDX-License-Identifier: MIT */
/*
 * Test-time x509 credentials, made with the OpenSSL 3 API (no openssl CLI),
 * in QEMU's tls-creds-x509 directory layout:
 *
 *   ca-cert.pem      the CA the peers are told to trust
 *   server-cert.pem  server-key.pem   leaf for serverAuth
 *   client-cert.pem  client-key.pem   leaf for clientAuth
 *   ca-crl.pem       optional CRL signed by the CA
 *
 * All keys are ECDSA P-256, certificates are v3, SHA-256 signed, with random
 * serials.  The CA has CN "ktm-test-ca"; the server leaf's CN is its first
 * DNS name, the client's "ktm-test-client" (also its only DNS SAN).
 *
 * No global state: the helpers may run in several threads or forked
 * children at once; OpenSSL errors go through the calling thread's queue.
 */
#ifndef KTM_TEST_PKI_H
#define KTM_TEST_PKI_H

#include <stdbool.h>
#include <stddef.h>

#define T_PKI_CA_CERT		"ca-cert.pem"
#define T_PKI_CA_CRL		"ca-crl.pem"
#define T_PKI_SERVER_CERT	"server-cert.pem"
#define T_PKI_SERVER_KEY	"server-key.pem"
#define T_PKI_CLIENT_CERT	"client-cert.pem"
#define T_PKI_CLIENT_KEY	"client-key.pem"

#define T_PKI_MAX_NAMES		4

#define T_PKI_CA_CN		"ktm-test-ca"
#define T_PKI_INT_CN		"ktm-test-intermediate-ca"
#define T_PKI_CLIENT_CN		"ktm-test-client"

/* What is wrong with the set; exactly one flaw per set. */
enum t_pki_flaw {
	T_PKI_GOOD = 0,
	/* server and client certs are signed by a different CA than
	 * ca-cert.pem holds (that CA is written nowhere) */
	T_PKI_UNKNOWN_CA,
	/* server cert notBefore 2 days ago, notAfter 1 day ago */
	T_PKI_EXPIRED,
	/* server cert notBefore 1 day in the future */
	T_PKI_NOT_YET_VALID,
	/* server cert listed in ca-crl.pem (a valid CRL signed by the CA,
	 * nextUpdate in a week); the CRL is written even without with_crl */
	T_PKI_REVOKED,
	/* server-key.pem is a different key than server-cert.pem's */
	T_PKI_KEY_MISMATCH,
	/* only the client cert is signed by a foreign CA */
	T_PKI_CLIENT_UNKNOWN_CA,
	/* implies .intermediate: the intermediate CA is listed in the root's
	 * CRL; ca-crl.pem holds that CRL and the intermediate's (empty) one */
	T_PKI_REVOKED_INTERMEDIATE,
	T_PKI_FLAW_COUNT
};

struct t_pki_opts {
	enum t_pki_flaw flaw;
	/* NULL-terminated (or all 4 used); {"localhost"} when [0] is NULL.
	 * Each must fit a CN (64 bytes) as the first becomes the CN. */
	const char *server_dns[T_PKI_MAX_NAMES];
	/* IP SANs, e.g. "127.0.0.1", "::1"; NULL-terminated (or all 4 used) */
	const char *server_ip[T_PKI_MAX_NAMES];
	/* write ca-cert's CRL (empty unless T_PKI_REVOKED) to ca-crl.pem;
	 * with an intermediate, its CRL follows (two CRLs in the file) */
	bool with_crl;
	/* the CN of the server leaf instead of server_dns[0]; when set and
	 * server_dns[0] is NULL the leaf has no DNS SAN (only server_ip) */
	const char *server_cn;
	/* both leaves are issued by an intermediate CA (CN T_PKI_INT_CN)
	 * that the root signed; the intermediate follows each leaf in its
	 * cert file (a chain file), or with intermediate_in_ca, follows the
	 * root in ca-cert.pem instead (a CA file with two certificates) */
	bool intermediate, intermediate_in_ca;
	/* encrypt both key files (PKCS#8, AES-256-CBC) with this passphrase */
	const char *key_passphrase;
	/* mode of the key files; 0 means 0600 */
	unsigned int key_mode;
};

/*
 * Create @dir (mode 0700) if missing and write a credential set into it.
 * Existing files of the same names are replaced (key files end up 0600,
 * the rest 0644); a ca-crl.pem not asked for is removed so a reused
 * directory never carries a stale CRL.  @opts may be NULL for a good set.
 *
 * Returns 0, -EINVAL for bad options (unknown flaw, unparsable IP), another
 * -errno from the file system, or -EPROTO when OpenSSL fails (the OpenSSL
 * error queue is then printed to stderr and left empty).  On failure the
 * directory may hold some of the files.
 */
int t_pki_make(const char *dir, const struct t_pki_opts *opts);

/*
 * mkdtemp("/tmp/ktm-pki-XXXXXX") and t_pki_make() into it.  On success the
 * path is written to @dir (@size >= 64 is plenty; less than the template
 * gives -EINVAL); on failure the directory is removed again and @dir is "".
 * Returns as t_pki_make().  The caller removes it with t_pki_remove().
 */
int t_pki_make_temp(char *dir, size_t size, const struct t_pki_opts *opts);

/*
 * Remove a directory made by the above: unlink every entry (one level,
 * regular files only), then rmdir.  NULL or "" does nothing; failures are
 * reported on stderr, as there is nobody to return them to.
 */
void t_pki_remove(const char *dir);

#endif /* KTM_TEST_PKI_H */
