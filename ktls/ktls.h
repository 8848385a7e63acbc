/* SPDX-License-Identifier: MIT */
/*
 * ktls/: the thin kernel-TLS layer.  Private to libktm and its tests.
 *
 * Every function returns 0 (or a non-negative count) on success and a
 * negative errno on failure.  Nothing here prints, logs, allocates or
 * touches errno as a side channel; lib/ turns the codes into sentences.
 *
 * Kernel facts this layer relies on are in Kconfig.notes and in
 * docs/design.md §3.
 */
#ifndef KTM_KTLS_H
#define KTM_KTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <linux/tls.h>

/* Record content types (RFC 8446 §5.1). */
#define KTM_KTLS_REC_ALERT 21
#define KTM_KTLS_REC_HANDSHAKE 22
#define KTM_KTLS_REC_DATA 23

/* Largest TLS plaintext record. */
#define KTM_KTLS_MAX_RECORD 16384

/* The 12-byte per-direction write IV both TLS versions derive. */
#define KTM_KTLS_IV_LEN 12

enum ktm_ktls_dir {
	KTM_KTLS_TX = TLS_TX,
	KTM_KTLS_RX = TLS_RX,
};

/* ---- crypto_info.c: the cipher table ---------------------------------- */

/* Row ids of ciphers.def: 1, 2, ... in file order (0 is no cipher). */
enum {
	KTM_KTLS_CIPHER_NONE = 0,
#define KTM_CIPHER(name_, K, label_) KTM_KTLS_CIPHER_##K,
#include "ciphers.def"
#undef KTM_CIPHER
	KTM_KTLS_CIPHER_END
};

struct ktm_ktls_cipher {
	unsigned int id;	/* KTM_KTLS_CIPHER_* */
	uint16_t kernel_type;	/* TLS_CIPHER_* */
	uint8_t key_len;
	uint8_t salt_len;	/* implicit part of the nonce in crypto_info */
	uint8_t iv_len;		/* crypto_info .iv */
	uint8_t rec_seq_len;
	uint8_t tag_len;
	uint16_t info_len;	/* sizeof(struct tls12_crypto_info_*) */
	const char *name;	/* "aes_gcm_128" */
	const char *label;	/* "AES-GCM-128" */
};

extern const struct ktm_ktls_cipher ktm_ktls_ciphers[];
extern const unsigned int ktm_ktls_cipher_count;

const struct ktm_ktls_cipher *ktm_ktls_cipher_find(unsigned int id);
const struct ktm_ktls_cipher *ktm_ktls_cipher_by_kernel_type(uint16_t type);

/* One crypto_info of any supported cipher, and the length the kernel wants
 * for it.  Holds key material: wipe it (ktm_ktls_crypto_wipe) when done. */
struct ktm_ktls_crypto {
	union {
		struct tls_crypto_info info;
		struct tls12_crypto_info_aes_gcm_128 aes_gcm_128;
		struct tls12_crypto_info_aes_gcm_256 aes_gcm_256;
		struct tls12_crypto_info_aes_ccm_128 aes_ccm_128;
		struct tls12_crypto_info_chacha20_poly1305 chacha20_poly1305;
	} u;
	socklen_t len;
};

/*
 * Fill @c for @version (TLS_1_2_VERSION / TLS_1_3_VERSION) and @cipher from the
 * traffic key, the 12-byte write IV as TLS derives it, and the sequence
 * number of the next record.  For AES-GCM/CCM the kernel splits the IV
 * into a 4-byte salt and an 8-byte iv; ChaCha20 takes all 12 bytes and no
 * salt (RFC 8446 §5.3, RFC 5288 §3, RFC 7905 §2).  For TLS 1.2 GCM/CCM
 * the last 8 bytes are the first explicit nonce the sender puts on the wire.
 *
 * Returns 0, -EINVAL for a key of the wrong length or an unknown version,
 * -EPROTONOSUPPORT for a cipher this build does not know.
 */
int ktm_ktls_crypto_fill(struct ktm_ktls_crypto *c, uint16_t version,
			 unsigned int cipher, const uint8_t *key,
			 size_t key_len, const uint8_t iv[KTM_KTLS_IV_LEN],
			 uint64_t seq);
/* The live record sequence number held in @c (big-endian on the wire). */
uint64_t ktm_ktls_crypto_rec_seq(const struct ktm_ktls_crypto *c);
/* Overwrite @c with zeros in a way the compiler cannot elide. */
void ktm_ktls_crypto_wipe(struct ktm_ktls_crypto *c);

/* ---- sockopt.c: attach, install, read back ---------------------------- */

/*
 * The two kernel calls this layer makes on a socket, so unit tests can
 * replace them and check level, option name and length.  NULL ops means
 * the real setsockopt/getsockopt.  Both return 0 or -errno.
 */
struct ktm_ktls_ops {
	int (*setsockopt)(void *priv, int fd, int level, int name,
			  const void *val, socklen_t len);
	int (*getsockopt)(void *priv, int fd, int level, int name, void *val,
			  socklen_t *len);
	void *priv;
};

/* Attach the "tls" TCP ULP.  -ENOENT: this kernel has no tls module. */
int ktm_ktls_ulp_attach(const struct ktm_ktls_ops *ops, int fd);
/* Install keys for one direction.  -ENOENT/-EINVAL: the cipher is missing
 * in this kernel; -EBUSY: keys already set and this kernel cannot rekey. */
int ktm_ktls_install(const struct ktm_ktls_ops *ops, int fd,
		     enum ktm_ktls_dir dir, const struct ktm_ktls_crypto *c);
/* Read the live crypto_info of @dir back into @out.  The kernel wants the
 * exact size of @cipher's struct.  Holds key material: wipe @out. */
int ktm_ktls_read_back(const struct ktm_ktls_ops *ops, int fd,
		       enum ktm_ktls_dir dir, unsigned int cipher,
		       struct ktm_ktls_crypto *out);
/* TLS 1.3 receive only: promise the peer sends no record padding, so the
 * kernel may decrypt straight into the caller's buffer. */
int ktm_ktls_rx_expect_no_pad(const struct ktm_ktls_ops *ops, int fd,
			      bool on);
/* sendfile only: let the kernel send file pages without copying.  Only for
 * sources that cannot change until TCP has them acknowledged. */
int ktm_ktls_tx_zerocopy_ro(const struct ktm_ktls_ops *ops, int fd, bool on);

/* ---- cmsg.c: records of a chosen type --------------------------------- */

/* Send @len bytes as records of content type @type (one sendmsg with a
 * TLS_SET_RECORD_TYPE cmsg).  Returns bytes sent or -errno. */
ssize_t ktm_ktls_send_record(int fd, uint8_t type, const void *buf,
			     size_t len, int flags);

struct ktm_ktls_rec {
	uint8_t type;	/* KTM_KTLS_REC_* */
	bool eor;	/* the kernel said the record ended here (MSG_EOR) */
};

/*
 * Receive from a kTLS RX socket with a cmsg buffer, so data and control
 * records (alert, handshake) come back distinctly: one call never mixes
 * types.  Returns bytes read (0 at end of stream) or -errno; -EBADMSG is a
 * record that failed authentication; -EKEYEXPIRED after a KeyUpdate until
 * the new RX key is installed.
 */
ssize_t ktm_ktls_recv_record(int fd, void *buf, size_t len, int flags,
			     struct ktm_ktls_rec *rec);
/* Find the record type in a received msghdr.  0 with *type set;
 * -ENOMSG when there is no TLS_GET_RECORD_TYPE cmsg; -EMSGSIZE when the
 * control buffer was truncated (MSG_CTRUNC). */
int ktm_ktls_cmsg_record_type(const struct msghdr *msg, uint8_t *type);

/* KeyUpdate (RFC 8446 §4.6.3): handshake type 24, length 1, one byte of
 * request_update.  Send it as a handshake record before the new TX key. */
#define KTM_KTLS_KEYUPDATE_LEN 5
int ktm_ktls_keyupdate_send(int fd, bool request_update);
/* 0 when @buf holds exactly one KeyUpdate; *request_update set. */
int ktm_ktls_keyupdate_parse(const uint8_t *buf, size_t len,
			     bool *request_update);

/* ---- stat.c: /proc/net/tls_stat ---------------------------------------- */

#define KTM_KTLS_STAT_MAX 64
struct ktm_ktls_stat {
	unsigned int count;
	struct {
		char name[40];
		uint64_t value;
	} e[KTM_KTLS_STAT_MAX];
};

/* Parse "Name<ws>value\n" lines.  Returns the number of counters or
 * -EINVAL for a malformed line, -E2BIG past KTM_KTLS_STAT_MAX. */
int ktm_ktls_stat_parse(const char *text, size_t len,
			struct ktm_ktls_stat *st);
/* Read and parse @path (NULL: /proc/net/tls_stat).  -ENOENT when the file
 * does not exist (no tls module loaded). */
int ktm_ktls_stat_read(const char *path, struct ktm_ktls_stat *st);
/* 0 and *value, or -ENOENT when this kernel has no such counter. */
int ktm_ktls_stat_get(const struct ktm_ktls_stat *st, const char *name,
		      uint64_t *value);

/* ---- diag.c: per-socket TLS_INFO via sock_diag -------------------------- */

struct ktm_ktls_diag {
	bool has_ulp;
	char ulp[16];		/* "tls" */
	bool has_tls;		/* INET_ULP_INFO_TLS present */
	uint16_t version;	/* TLS_1_x_VERSION */
	uint16_t cipher;	/* TLS_CIPHER_*, 0 before keys */
	uint16_t txconf;	/* TLS_CONF_BASE / _SW / _HW / _HW_RECORD */
	uint16_t rxconf;
	bool zc_ro_tx;
	bool rx_no_pad;
};

/* Ask the kernel (NETLINK_SOCK_DIAG, one exact 4-tuple) for @fd's ULP
 * info.  Needs CAP_NET_ADMIN for the ULP part; without it has_ulp is
 * false.  -ENOENT when the socket is not found. */
int ktm_ktls_diag_query(int fd, struct ktm_ktls_diag *d);
/* Parse one SOCK_DIAG_BY_FAMILY reply message (pure; for tests). */
int ktm_ktls_diag_parse(const void *buf, size_t len, struct ktm_ktls_diag *d);

/* ---- offload.c: NIC TLS offload features via ethtool netlink ---- */

/*
 * The three netdev features that matter for TLS device offload, as the
 * kernel names them (net/ethtool/common.c, netdev_features_strings).
 *
 * *_avail: in the device's hw_features (ETHTOOL_A_FEATURES_HW), i.e. the
 *          driver supports it and the user may toggle it.
 * *_on:    in the active features (ETHTOOL_A_FEATURES_ACTIVE).
 * *_fixed: the user cannot change it, as `ethtool -k` marks "[fixed]":
 *          not in hw_features, or in the never-change set
 *          (ETHTOOL_A_FEATURES_NOCHANGE).
 */
struct ktm_ktls_offload {
	char ifname[16];		/* IFNAMSIZ, from the reply header */
	bool tx_avail, tx_on, tx_fixed;	/* "tls-hw-tx-offload" */
	bool rx_avail, rx_on, rx_fixed;	/* "tls-hw-rx-offload" */
	bool record_avail, record_on;	/* "tls-hw-record" */
};

/*
 * Ask the kernel (generic netlink family "ethtool", ETHTOOL_MSG_FEATURES_GET,
 * verbose bitsets) for @ifname's TLS offload features.  @ifname may be an
 * alternative name; out->ifname is the device's real name.  Opens and closes
 * its own netlink socket; blocks until the kernel answers.  Needs no
 * privileges.  Kernel >= 5.6 with CONFIG_ETHTOOL_NETLINK.
 *
 * Returns 0; -EINVAL for a NULL or empty name; -ENODEV when no such
 * interface exists; -EOPNOTSUPP when the kernel has no ethtool netlink
 * family; -ENOMEM; -EBADMSG/-EPROTO for a reply this parser rejects; other
 * -errno from the kernel or the socket.
 */
int ktm_ktls_offload_query(const char *ifname, struct ktm_ktls_offload *out);

/*
 * Query every interface of the caller's network namespace except loopback,
 * in the kernel's link order; fill @out[0..max-1] (@out may be NULL when
 * @max is 0).  An interface that disappears while scanning is left out.
 * Returns how many interfaces there are (may exceed @max) or -errno as
 * ktm_ktls_offload_query; on error @out holds nothing meaningful.
 */
int ktm_ktls_offload_scan(struct ktm_ktls_offload *out, unsigned int max);

/*
 * Parse the attributes of one ETHTOOL_MSG_FEATURES_GET_REPLY (the bytes
 * after the genetlink header) into @out (pure; for tests and fuzzing).
 * Bitsets may come with ETHTOOL_A_BITSET_NOMASK (every listed bit is set)
 * or as mask lists (a listed bit is set when it carries
 * ETHTOOL_A_BITSET_BIT_VALUE); the kernel mixes both in one reply.  A
 * missing set reads as empty.
 * Returns 0, -EBADMSG for truncated or malformed attributes, -EPROTO for a
 * compact bitset (we never ask for one: it carries no names).
 */
int ktm_ktls_offload_parse(const void *attrs, size_t len,
			   struct ktm_ktls_offload *out);

#endif /* KTM_KTLS_H */
