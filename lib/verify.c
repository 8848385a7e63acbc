// SPDX-License-Identifier: MIT
/*
 * Why a handshake failed, in one phrase: certificate verification codes
 * through one table, then the handshake's own failures (alerts, versions,
 * a peer that does not speak TLS).  QEMU's crypto/tlssession.c picks a
 * reason per failure the same way; unlike a bare status bit, ours name the
 * peer and the value that did not match.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "tls.h"

const char *ktm_ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (e)
		snprintf(buf, len, ": %s", r ? r : "unknown OpenSSL error");
	else
		buf[0] = '\0';
	ERR_clear_error();
	return buf;
}

/* What a hint must name besides the phrase. */
enum verify_detail {
	VD_NONE, VD_CA,		/* the issuer and the CA file */
	VD_CRL,			/* the serial and the CRL file */
	VD_CRL_FILE,		/* the CRL file */
};

/* Certificate verification codes → phrase after "certificate of PEER". */
static const struct verify_row {
	long code;
	const char *phrase;
	const char *hint;
	enum verify_detail detail;
} verify_rows[] = {
	{ X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
	  "is not signed by a trusted CA", "must hold the CA that issued it", VD_CA },
	{ X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
	  "is not signed by a trusted CA", "must hold the CA that issued it", VD_CA },
	{ X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
	  "is not signed by a trusted CA", "must hold the CA that issued it", VD_CA },
	{ X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
	  "is self-signed and not trusted", "must hold the CA that issued it "
	  "(issue the certificate from that CA)", VD_CA },
	{ X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
	  "chains to a root CA that is not trusted", "must hold that root CA", VD_CA },
	{ X509_V_ERR_CERT_SIGNATURE_FAILURE,
	  "has a signature that does not verify", NULL, VD_NONE },
	{ X509_V_ERR_CERT_HAS_EXPIRED, "has expired",
	  "renew the certificate (and check both hosts' clocks)", VD_NONE },
	{ X509_V_ERR_CERT_NOT_YET_VALID, "is not valid yet",
	  "check both hosts' clocks", VD_NONE },
	{ X509_V_ERR_CERT_REVOKED, "has been revoked",
	  "lists it; issue a new certificate", VD_CRL },
	{ X509_V_ERR_UNABLE_TO_GET_CRL,
	  "cannot be checked for revocation: ca-crl.pem has no CRL from its CA",
	  "needs the CRL of every CA in the chain; update it", VD_CRL_FILE },
	{ X509_V_ERR_CRL_HAS_EXPIRED,
	  "cannot be checked for revocation: ca-crl.pem has expired",
	  "is past its nextUpdate; update it", VD_CRL_FILE },
	{ X509_V_ERR_INVALID_PURPOSE,
	  "is not meant for this role (extendedKeyUsage)",
	  "servers need serverAuth, clients clientAuth", VD_NONE },
};

/* The hint of @r, naming what the user must look at. */
static void verify_hint(const struct verify_row *r, const struct ktm_hs *hs,
			const struct ktm_config *cfg, struct ktm_error **errp)
{
	const char *ca = cfg->ca_path ? cfg->ca_path : "ca-cert.pem";
	const char *crl = cfg->crl_path ? cfg->crl_path : "ca-crl.pem";

	switch (r->detail) {
	case VD_CA:
		ktm_error_hint_set(errp, "%s %s: %s", ca, r->hint,
				   hs->verify_issuer[0] ? hs->verify_issuer : "?");
		break;
	case VD_CRL:
		ktm_error_hint_set(errp, "%s %s", crl, r->hint);
		break;
	case VD_CRL_FILE:
		ktm_error_hint_set(errp, "%s %s", crl, r->hint);
		break;
	case VD_NONE:
		if (r->hint)
			ktm_error_hint_set(errp, "%s", r->hint);
		break;
	}
}

static void verify_error(const struct ktm_hs *hs, const struct ktm_config *cfg,
			 const char *peer, struct ktm_error **errp)
{
	const char *who = cfg->endpoint == KTM_ENDPOINT_CLIENT ? "server" : "client";
	char when[160] = "";
	size_t i;

	if (hs->authz_refused) {
		char rules[600];

		ktm_authz_describe(cfg, rules, sizeof(rules));
		ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
			      "%s %s is not allowed by %s: subject %s, names %s",
			      who, peer, rules, hs->verify_subject[0] ?
			      hs->verify_subject : "(empty)",
			      hs->verify_sans[0] ? hs->verify_sans : "(none)");
		ktm_error_hint_set(errp, "to admit it, add a rule such as "
				   "dn:%s (--allow, or a line of the allow file)",
				   hs->verify_subject);
		return;
	}
	if (hs->verify_err == X509_V_ERR_HOSTNAME_MISMATCH ||
	    hs->verify_err == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
			      "%s certificate does not match expected host '%s'",
			      who, hs->expected_host);
		ktm_error_hint_set(errp, "names in the certificate: %s; connect "
				   "by one of them, or name the one to expect "
				   "with --hostname (QEMU's tls-hostname)",
				   hs->verify_sans[0] ? hs->verify_sans : "(none)");
		return;
	}
	if (hs->verify_err == X509_V_ERR_CERT_HAS_EXPIRED)
		snprintf(when, sizeof(when), " (not after %s)", hs->not_after);
	else if (hs->verify_err == X509_V_ERR_CERT_NOT_YET_VALID)
		snprintf(when, sizeof(when), " (not before %s)", hs->not_before);
	else if (hs->verify_err == X509_V_ERR_CERT_REVOKED)
		snprintf(when, sizeof(when), " (serial %s)", hs->verify_serial);

	for (i = 0; i < sizeof(verify_rows) / sizeof(verify_rows[0]); i++) {
		const struct verify_row *r = &verify_rows[i];

		if (r->code != hs->verify_err)
			continue;
		ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
			      "%s certificate of %s %s%s: %s%s%s%s", who, peer,
			      r->phrase, when, hs->verify_subject,
			      r->detail == VD_CA ? " (issuer " : "",
			      r->detail == VD_CA ? hs->verify_issuer : "",
			      r->detail == VD_CA ? ")" : "");
		verify_hint(r, hs, cfg, errp);
		return;
	}
	ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
		      "%s certificate of %s rejected: %s: %s", who, peer,
		      X509_verify_cert_error_string(hs->verify_err),
		      hs->verify_subject);
}

/* An alert the peer sent, by reason code: it rejected something of ours. */
static const struct alert_row {
	int reason;
	const char *what;
	const char *hint;
} alert_rows[] = {
	{ SSL_R_TLSV1_ALERT_UNKNOWN_CA, "does not trust the CA of our certificate",
	  "the peer's ca-cert.pem must hold the CA that issued our certificate" },
	{ SSL_R_SSLV3_ALERT_BAD_CERTIFICATE, "rejected our certificate (bad certificate)",
	  "our certificate may be missing from the peer's allow-list "
	  "(--allow, --allow-file); the peer's log names the reason" },
	{ SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED, "rejected our certificate as expired",
	  "renew our certificate (and check both hosts' clocks)" },
	{ SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED, "rejected our certificate as revoked",
	  NULL },
	{ SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN, "rejected our certificate",
	  "see the peer's log for the reason" },
	{ SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED,
	  "requires a client certificate and we sent none",
	  "put client-cert.pem and client-key.pem in our credentials directory" },
	{ SSL_R_TLSV1_ALERT_ACCESS_DENIED, "denied access", NULL },
	{ SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, "has no TLS version in common with us",
	  "allow TLS 1.2 or 1.3 on both ends" },
	{ SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE,
	  "aborted the handshake (no common cipher or version?)", NULL },
};

/* The peer does not know our CA: say which CA that is. */
static void unknown_ca_hint(const struct ktm_config *cfg, struct ktm_error **errp)
{
	char issuer[KTM_ID_SUBJECT_MAX];

	ktm_x509_name_text(X509_get_issuer_name(cfg->cert), issuer, sizeof(issuer));
	ktm_error_hint_set(errp, "the peer's ca-cert.pem must hold the CA that "
			   "issued our certificate %s: %s", cfg->cert_path, issuer);
}

/* ktm_tls_handshake_error(): an alert the peer sent, from alert_rows;
 * false when @reason is none of them. */
static bool alert_error(int reason, const struct ktm_config *cfg,
			const char *peer, struct ktm_error **errp)
{
	size_t i;

	for (i = 0; i < sizeof(alert_rows) / sizeof(alert_rows[0]); i++) {
		if (alert_rows[i].reason != reason)
			continue;
		ERR_clear_error();
		ktm_error_set(errp, reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ?
			      KTM_ERR_TLS_PROTOCOL : KTM_ERR_TLS_VERIFY, EACCES,
			      "peer %s %s", peer, alert_rows[i].what);
		if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA && cfg->cert)
			unknown_ca_hint(cfg, errp);
		else if (alert_rows[i].hint)
			ktm_error_hint_set(errp, "%s", alert_rows[i].hint);
		return true;
	}
	return false;
}

/* ktm_tls_handshake_error(): the peer's first bytes were not TLS. */
static void not_tls_error(const char *peer, const char *first_bytes,
			  struct ktm_error **errp)
{
	if (first_bytes && !strncmp(first_bytes, "HTTP/", 5)) {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "%s answered in HTTP, not TLS", peer);
		ktm_error_hint_set(errp, "that port belongs to a web "
				   "server, not a migration destination");
	} else {
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "%s does not speak TLS (it sent \"%s\")",
			      peer, first_bytes ? first_bytes : "?");
		ktm_error_hint_set(errp, "is the peer a plain TCP "
				   "listener? both ends need TLS");
	}
}

/* ktm_tls_handshake_error(): the reasons OpenSSL gives for a handshake
 * that went wrong on our side; false when @reason is none of them. */
static bool reason_error(int reason, const struct ktm_config *cfg,
			 const char *peer, const char *first_bytes,
			 struct ktm_error **errp)
{
	switch (reason) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES,
			      "client %s sent no certificate", peer);
		ktm_error_hint_set(errp, "the client needs client-cert.pem and "
				   "client-key.pem in its credentials directory");
		return true;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_VERSION_TOO_HIGH:
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "no TLS version in common with %s (we allow %s to %s)",
			      peer, ktm_tls_version_name(cfg->min_version),
			      ktm_tls_version_name(cfg->max_version));
		return true;
	case SSL_R_NO_SHARED_CIPHER:
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "no cipher in common with %s", peer);
		return true;
	case SSL_R_HTTP_REQUEST:
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
			      "%s sent an HTTP request, not a TLS handshake", peer);
		ktm_error_hint_set(errp, "point the source at the migration "
				   "port, not a web server");
		return true;
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_UNKNOWN_PROTOCOL:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		ERR_clear_error();
		not_tls_error(peer, first_bytes, errp);
		return true;
	case 0:			/* no reason queued: the peer just went */
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		ERR_clear_error();
		ktm_error_set(errp, KTM_ERR_PEER, ECONNRESET,
			      "%s closed the connection during the TLS handshake",
			      peer);
		ktm_error_hint_set(errp, "the peer may have rejected our "
				   "certificate or settings; see its log");
		return true;
	}
	return false;
}

void ktm_tls_handshake_error(SSL *ssl, const struct ktm_config *cfg,
			     const char *peer, const char *first_bytes,
			     struct ktm_error **errp)
{
	const struct ktm_hs *hs = SSL_get_app_data(ssl);
	unsigned long e = ERR_peek_last_error();
	int reason = e ? ERR_GET_REASON(e) : 0;
	char why[256];

	if (hs && hs->verify_err != X509_V_OK) {
		ERR_clear_error();
		verify_error(hs, cfg, peer, errp);
		return;
	}
	if (alert_error(reason, cfg, peer, errp))
		return;
	if (reason_error(reason, cfg, peer, first_bytes, errp))
		return;
	ktm_error_set(errp, KTM_ERR_TLS_PROTOCOL, EPROTO,
		      "TLS handshake with %s failed%s", peer,
		      ktm_ossl_reason(why, sizeof(why)));
}

void ktm_tls_alert_error(const struct ktm_config *cfg, uint8_t level,
			 uint8_t desc, const char *peer, struct ktm_error **errp)
{
	/* OpenSSL's reason codes for received alerts are 1000 + the alert
	 * description (SSL_AD_REASON_OFFSET). */
	int reason = SSL_AD_REASON_OFFSET + desc;
	size_t i;

	for (i = 0; i < sizeof(alert_rows) / sizeof(alert_rows[0]); i++) {
		if (alert_rows[i].reason != reason)
			continue;
		ktm_error_set(errp, KTM_ERR_TLS_VERIFY, EACCES, "peer %s %s", peer,
			      alert_rows[i].what);
		if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA && cfg && cfg->cert)
			unknown_ca_hint(cfg, errp);
		else if (alert_rows[i].hint)
			ktm_error_hint_set(errp, "%s", alert_rows[i].hint);
		return;
	}
	ktm_error_set(errp, KTM_ERR_PEER, EPROTO,
		      "peer %s sent a %s TLS alert: %s", peer,
		      level == 2 ? "fatal" : "warning",
		      SSL_alert_desc_string_long(desc));
}
