#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/smoke.sh --build DIR [--no-ktls]: one tiny pass over every bench
# mode (cipher x channels 1 and 2, 4 MiB each, `ktls-migrate bench
# --smoke`), printed as TAP: one line per row, "ok" when the row moved all
# its bytes and the receiver's checksum matched what was sent, with what
# the row noted (e.g. whether TLS_RX_EXPECT_NO_PAD took effect).  Rows this
# kernel cannot run (no kTLS, no io_uring) are "# SKIP" with the reason;
# under CI=true or KTLS_REQUIRE=1 a row skipped for want of kernel TLS
# fails.
#   --no-ktls  run only the modes that need no kernel TLS (tcp-*, tls-user,
#              openssl-ktls, tunnel): the native tier on a host without
#              kTLS, so that it has no kTLS row to skip.  Without it every
#              mode runs (the guest tier).
# Exit status 1 when any row failed.  Takes under 2 s natively and 40-75 s
# inside a TCG guest (tests/vm/run.sh K -- bench/smoke.sh ...).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=build
modes=all
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=${2:?--build needs a directory}; shift 2 ;;
	--no-ktls) modes=plain,tls-user,openssl-ktls,tunnel; shift ;;
	-h|--help) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/smoke.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
case $build in /*) ;; *) build=$top/$build ;; esac
require=0
if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
	require=1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "TAP version 13"
if [ ! -x "$build/ktls-migrate" ]; then
	echo "1..1"
	echo "not ok 1 bench.smoke # $build/ktls-migrate is missing; run make first"
	exit 1
fi
if ! "$top/scripts/make-creds.sh" "$tmp/creds" >/dev/null 2>"$tmp/err"; then
	echo "1..1"
	echo "not ok 1 bench.smoke # make-creds.sh failed: $(tail -n1 "$tmp/err")"
	exit 1
fi
"$build/ktls-migrate" bench --smoke --quiet --modes "$modes" \
	--creds "$tmp/creds" --csv "$tmp/smoke.csv" --md "$tmp/smoke.md" \
	2>"$tmp/err"
rc=$?
if [ ! -s "$tmp/smoke.csv" ]; then
	echo "1..1"
	echo "not ok 1 bench.smoke # ktls-migrate bench exit status $rc: $(tail -n1 "$tmp/err")"
	exit 1
fi
sed 's/^/# /' "$tmp/err"

# CSV columns: 2 mode 3 cipher 4 channels 5 status 6/7 paths 8 bytes
# 9 runs; the note is the last field and the only one that may hold commas.
awk -F, -v require="$require" '
	/^#/ || $1 == "measurement" || $5 == "ceiling" { next }
	{
		note = $0
		for (k = 0; k < 23; k++)
			note = substr(note, index(note, ",") + 1)
		gsub(/^"|"$/, "", note); gsub(/""/, "\"", note)
		name = "bench." $2 "." $3 ".ch" $4
		n++
		if ($5 == "ok" && $8 > 0 && $9 > 0)
			line[n] = "ok " n " " name " # " $6 "/" $7 ", " $8 \
				" bytes, checksum matched" (note != "" ? "; " note : "")
		else if ($5 == "n/a" && require && note ~ /no kTLS/) {
			line[n] = "not ok " n " " name " # " note " (kernel TLS required)"
			bad++
		} else if ($5 == "n/a")
			line[n] = "ok " n " " name " # SKIP " note
		else {
			line[n] = "not ok " n " " name " # " ($5 == "failed" ? note : "status " $5)
			bad++
		}
	}
	END {
		print "1.." n
		for (i = 1; i <= n; i++) print line[i]
		exit bad > 0
	}' "$tmp/smoke.csv"
