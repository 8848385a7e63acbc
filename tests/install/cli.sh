#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/install/cli.sh [--build DIR]: one vocabulary across the commands.
# TAP.
#
#   cli.usage_is_2.CMD       a bad option exits 2, naming the option, in
#                            every command; 2 means usage and nothing else
#   cli.probe_help           probe --help is probe's own help
#   cli.probe_json_schema    probe --json carries "schema": 1
#   cli.migrate_cipher       migrate --cipher aes-gcm-128 (the spelling of
#                            bench and proxy) moves an image; the JSON report
#                            carries "schema": 1 and names the cipher
#   cli.bench_cipher         bench --ciphers aes-gcm-128 runs a TLS row
#   cli.accept_timeout_seconds  migrate recv --accept-timeout 1 gives up
#                            after about a second (not 1 ms, not 30 s)
#   cli.creds_no_ca_key      make-creds.sh leaves no CA key in the creds dir
#                            and refuses --ca-key inside it
#   cli.closed_stdout.HOW    standard output a pipe whose reader is gone, a
#                            full device, or closed: every command that
#                            prints fails (1; never 0, never 141 SIGPIPE)
#                            and names standard output
set -uo pipefail

. "$(dirname "$0")/lib.sh"
build_arg "$@"
tool=$build/ktls-migrate
work=$(mktemp -d /tmp/ktm-cli.XXXXXX)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cmds=("" probe "migrate send" "migrate recv" "proxy source" "proxy dest"
      qemu-send qemu-recv bench)
echo "TAP version 13"
echo "1..$((${#cmds[@]} + 9))"

for c in "${cmds[@]}"; do
	# shellcheck disable=SC2086 # c is words
	err=$("$tool" $c --no-such-option 2>&1 >/dev/null); rc=$?
	out=
	[ $rc = 2 ] || out+="exit status $rc, not 2"$'\n'
	grep -q -- 'no-such-option' <<< "$err" || out+="stderr does not name the option: $err"$'\n'
	name=${c:-main}
	check "cli.usage_is_2.${name// /_}" "$out"
done

out=$("$tool" probe --help 2>&1 | head -1)
[[ $out == "Usage: ktls-migrate probe"* ]] && out= || out="probe --help begins: $out"
check cli.probe_help "$out"

out=$("$tool" probe --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print("" if d.get("schema") == 1 and "ktls" in d else d)' 2>&1)
check cli.probe_json_schema "$out"

bash scripts/make-creds.sh "$work/creds" localhost 127.0.0.1 >/dev/null
head -c 1M /dev/urandom > "$work/src.img"
port=$(free_port)
"$tool" migrate recv --listen "127.0.0.1:$port" --image "$work/dst.img" \
	--creds "$work/creds" --cipher aes-gcm-128 --accept-timeout 20 --json \
	> "$work/recv.json" 2> "$work/recv.err" &
rpid=$!
sent=
for _ in $(seq 50); do
	if "$tool" migrate send --connect "localhost:$port" --image "$work/src.img" \
		--creds "$work/creds" --cipher aes-gcm-128 --json > "$work/send.json" 2> "$work/send.err"; then
		sent=1; break
	fi
	grep -q 'refused' "$work/send.err" || break
	sleep 0.1
done
wait $rpid; rrc=$?
out=
[ -n "$sent" ] || out+="send failed: $(cat "$work/send.err")"$'\n'
[ $rrc = 0 ] || out+="recv exit $rrc: $(cat "$work/recv.err")"$'\n'
cmp -s "$work/src.img" "$work/dst.img" || out+="images differ"$'\n'
# each report names the verified peer: the other end's certificate as
# scripts/make-creds.sh issued it (CN and SAN), under the demo CA
for f in send:localhost recv:ktm-demo-client; do
	out+=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d.get("peer") or {}; want=sys.argv[2]; print("" if d.get("schema") == 1 and d.get("cipher") == "AES-GCM-128" and d.get("ok") is True and p.get("subject") == "CN=" + want and "DNS:" + want in p.get("sans", "") and p.get("issuer") == "CN=ktm-demo-ca" and len(p.get("spki_sha256", "")) == 64 else sys.argv[1] + ": " + str(d))' "$work/${f%%:*}.json" "${f#*:}" 2>&1)
done
check cli.migrate_cipher "$out"

out=$("$tool" bench --creds "$work/creds" --modes tls-user --ciphers aes-gcm-128 \
	--channels 1 --size 256K --runs 1 --no-ceiling -q --csv "$work/b.csv" 2>&1 >/dev/null) ||
	out="bench failed: $out"
[ -n "$out" ] || grep -q ',aes-gcm-128,' "$work/b.csv" || out="no aes-gcm-128 row in the CSV: $(cat "$work/b.csv")"
check cli.bench_cipher "$out"

port=$(free_port)
t0=$(date +%s.%N)
"$tool" migrate recv --listen "127.0.0.1:$port" --image "$work/never.img" \
	--creds "$work/creds" --accept-timeout 1 >/dev/null 2>"$work/to.err"; rc=$?
t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
out=
[ $rc = 1 ] || out+="exit status $rc, not 1: $(cat "$work/to.err")"$'\n'
awk -v t="$t" 'BEGIN { exit !(t >= 0.9 && t < 10) }' || out+="gave up after $t s, not about 1 s"$'\n'
[ ! -e "$work/never.img" ] || out+="left $work/never.img behind"$'\n'
check cli.accept_timeout_seconds "$out"

out=$(cd "$work/creds" && ls | tr '\n' ' ')
[ "$out" = "ca-cert.pem client-cert.pem client-key.pem server-cert.pem server-key.pem " ] && out= ||
	out="creds dir holds: $out"$'\n'
bash scripts/make-creds.sh --ca-key "$work/creds/ca-key.pem" "$work/creds" >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || out+="--ca-key inside the creds dir: exit status $rc, not 2"$'\n'
[ ! -e "$work/creds/ca-key.pem" ] || out+="--ca-key wrote the CA key into the creds dir"$'\n'
bash scripts/make-creds.sh --ca-key "$work/ca-key.pem" "$work/c2" >/dev/null 2>&1; rc=$?
# no process substitution: the guest tier has no /dev/fd
pub_cert=$(openssl x509 -in "$work/c2/ca-cert.pem" -noout -pubkey 2>&1)
pub_key=$(openssl pkey -in "$work/ca-key.pem" -pubout 2>&1)
[ $rc = 0 ] && [ "$pub_cert" = "$pub_key" ] ||
	out+="--ca-key FILE (exit $rc) does not hold the key of ca-cert.pem: $pub_key"$'\n'
[ ! -e "$work/c2/ca-key.pem" ] || out+="--ca-key FILE also left ca-key.pem in the creds dir"$'\n'
[ "$(stat -c %a "$work/ca-key.pem")" = 600 ] || out+="--ca-key FILE is not mode 0600: $(stat -c %a "$work/ca-key.pem")"$'\n'
check cli.creds_no_ca_key "$out"

# A pipe whose read end is closed before the tool writes (no race with a
# reader that exits), a full device, a closed descriptor.
closed_pipe() {
	python3 -c '
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)
sys.stderr.buffer.write(p.stderr)
sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)' "$@"
}
for how in pipe full closed; do
	out=
	for c in "probe" "probe --json" "--help" "--version" "proxy --help" \
		 "migrate --help" "qemu-send --help"; do
		# shellcheck disable=SC2086 # c is words
		case $how in
		pipe) err=$(closed_pipe "$tool" $c 2>&1) ;;
		full) err=$("$tool" $c 2>&1 >/dev/full) ;;
		closed) err=$("$tool" $c 2>&1 >&-) ;;
		esac
		rc=$?
		# 1, or probe's own failure status (1: no kTLS, 3)
		[ $rc -ge 1 ] && [ $rc -lt 128 ] && [ $rc != 2 ] ||
			out+="$c: exit status $rc, not a failure (1)"$'\n'
		grep -q 'cannot write to standard output' <<< "$err" ||
			out+="$c: stderr does not name standard output: $err"$'\n'
	done
	check "cli.closed_stdout.$how" "$out"
done
