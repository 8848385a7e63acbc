#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/make-creds.sh [--ca-key FILE] DIR [SERVER_NAME...]
#
# Make a throwaway PKI in DIR, in QEMU's tls-creds-x509 layout (ca-cert.pem,
# server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), with
# the openssl command.  The server certificate names SERVER_NAME(s)
# (default: localhost and 127.0.0.1).  ECDSA P-256, valid for 30 days.
# The CA's private key never enters DIR: it lives in a private temporary
# directory and is deleted at the end, or is kept in FILE with --ca-key
# (which must be outside DIR).  For demos and benchmarks; real deployments
# use their own CA (ktls-migrate-creds(5)).
set -euo pipefail

usage='usage: make-creds.sh [--ca-key FILE] DIR [SERVER_NAME...]'
ca_out=
if [ "${1:-}" = --ca-key ]; then
	ca_out=${2:?$usage}
	shift 2
fi
dir=${1:?$usage}
shift
[ $# -gt 0 ] || set -- localhost 127.0.0.1
mkdir -p "$dir"
chmod 700 "$dir"
dir=$(cd "$dir" && pwd)
if [ -n "$ca_out" ]; then
	case $(cd "$(dirname "$ca_out")" && pwd)/ in
	"$dir"/*) echo "make-creds.sh: --ca-key $ca_out is inside the creds dir $dir; keep the CA key elsewhere" >&2
		  exit 2 ;;
	esac
fi
ca=$(mktemp -d)
trap 'rm -rf "$ca"' EXIT
cd "$dir"

sans=""
for n in "$@"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
		sans+="${sans:+,}IP:$n"
	else
		sans+="${sans:+,}DNS:$n"
	fi
done

umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "$ca/ca-key.pem"
openssl req -x509 -new -key "$ca/ca-key.pem" -subj "/CN=ktm-demo-ca" -days 30 \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" -out ca-cert.pem 2>/dev/null

leaf() {	# name cn san eku
	key "$1-key.pem"
	openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
		"$4" "$3" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca-cert.pem -CAkey "$ca/ca-key.pem" \
		-CAserial "$ca/ca-cert.srl" -CAcreateserial -days 30 -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}
leaf server "$1" "$sans" serverAuth
leaf client ktm-demo-client "DNS:ktm-demo-client" clientAuth
if [ -n "$ca_out" ]; then
	cd - >/dev/null
	install -m 600 "$ca/ca-key.pem" "$ca_out"
	cd "$dir"
fi
chmod 600 ./*-key.pem
chmod 644 ./*-cert.pem
