#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/qemu/run.sh - end-to-end QEMU migrations through ktls-migrate, TAP.
#
#   tests/qemu/run.sh [--build DIR] [--list] TIER [CASE-PATTERN]
#
# TIER:
#   native  on this host: the proxy and fd mode under --ktls=prefer (on a
#           kernel without kTLS: the userspace fallback), 1 GiB plain and
#           multifd (2 channels) migrations, multifd 4, postcopy and
#           postcopy-preempt, cut streams, the wrong-hostname and wrong-CA
#           failures, require refusing to run without kTLS, and fd mode's
#           relay updating its key past a tiny --key-limit; mixed
#           deployments (mixed.*: one end is a QEMU doing its own TLS);
#           all with Debian 12's QEMU 7.2 (the system's) and again (q10.*)
#           with Debian 13's QEMU 10 (tests/qemu/fetch-qemu10.sh), and
#           between the two versions (upgrade.*)
#   guest   kernel-TLS cases with --ktls=require and 128 MiB guests: the
#           proxy (plain, multifd) and fd mode (qemu-send/qemu-recv), a
#           wrong hostname in fd mode, and fd mode's key limit (qemu-send
#           cancels the migration before the socket QEMU writes to seals
#           more records than --key-limit, counted on the wire by
#           tests/qemu/tlsrec.pl); all with QEMU 7.2 and again (q10.*, 64
#           MiB guests: QEMU 10 runs TCG-in-TCG in the guests at about
#           half 7.2's speed) with QEMU 10.  Run it where the kernel has kTLS,
#           e.g. inside tests/vm/run.sh (that is what "vm" does)
#   vm      "guest" inside a QEMU guest on every cached kernel
#           (tests/vm/fetch-kernels.sh --list), one TAP stream per kernel
#
# Each case starts paused QEMU guests (-S) whose RAM is a memory-backend-file
# filled with random data and zero pages, migrates over QMP and, when it
# must succeed, checks query-migrate on both QEMUs and compares the two RAM
# files with cmp.  Each case is bounded in
# time (KTM_QEMU_CASE_TIMEOUT, default 300 s native, 900 s guest) and kills
# every process and removes every file it made.  A case that cannot run for
# want of kernel TLS is skipped, or fails under CI=true or KTLS_REQUIRE=1.
# Work files go to $KTM_QEMU_TMP, else /dev/shm, else $TMPDIR or /tmp.
set -uo pipefail
# set by qt_qemu and qt_proxy (printf -v NAME_pid / NAME_addr)
src_pid='' dst_pid='' ps_pid='' pd_pid='' pd_addr='' wire_pid='' wire_addr=''
# per case (run_case): the QEMU binaries, machine type, extra QEMU options
src_bin='' dst_bin='' machine=q35 src_extra=() dst_extra=()

here=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$here/../.." && pwd)
BUILD=$TOP/build
list=0
one=
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "$2" && pwd); shift 2 ;;
	--list) list=1; shift ;;
	--one) one=$2; shift 2 ;;		# internal: run one case
	-h|--help) sed -n '3,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) break ;;
	esac
done
tier=${1:-native}
pattern=${2:-*}
TOOL=$BUILD/ktls-migrate

require=0
if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
	require=1
fi

native_cases=(proxy.prefer.plain_1g proxy.prefer.multifd2_1g
	proxy.prefer.multifd4_256m proxy.prefer.postcopy_256m
	proxy.prefer.postcopy_preempt_256m proxy.killed_midstream
	proxy.stopped_midstream proxy.bad_hostname proxy.wrong_ca
	fd.prefer.userspace_256m fd.bad_hostname fd.require_without_ktls
	fd.off.key_limit_userspace
	mixed.to_qemu_tls_256m mixed.to_qemu_tls_multifd2_256m
	mixed.from_qemu_tls_256m mixed.from_qemu_tls_multifd2_256m
	mixed.from_qemu_tls_strict mixed.from_qemu_tls_cut
	q10.proxy.prefer.plain_256m q10.proxy.prefer.multifd2_256m
	q10.proxy.prefer.multifd4_256m q10.proxy.prefer.postcopy_256m
	q10.proxy.prefer.postcopy_preempt_256m q10.proxy.killed_midstream
	q10.proxy.stopped_midstream q10.fd.prefer.userspace_256m
	q10.mixed.to_qemu_tls_256m q10.mixed.to_qemu_tls_multifd2_256m
	q10.mixed.from_qemu_tls_256m q10.mixed.from_qemu_tls_multifd2_256m
	q10.mixed.from_qemu_tls_strict q10.mixed.from_qemu_tls_cut
	upgrade.q72_to_q10_multifd2 upgrade.q10_to_q72_multifd2)
guest_cases=(guest.proxy.ktls_plain_128m guest.proxy.ktls_multifd2_128m
	guest.proxy.stopped_midstream guest.fd.ktls_128m guest.fd.bad_hostname
	guest.fd.key_limit
	q10.guest.proxy.ktls_plain_64m q10.guest.proxy.ktls_multifd2_64m
	q10.guest.proxy.stopped_midstream_64m q10.guest.fd.ktls_64m
	q10.guest.fd.bad_hostname q10.guest.fd.key_limit)

# ---- helpers for one case (run in a child: bash run.sh --one CASE) ----------

note() { printf '# %s\n' "$*"; }
bad=0
check() {	# check DESCRIPTION COMMAND...: record a failed expectation
	local what=$1
	shift
	if "$@"; then
		return 0
	fi
	note "FAILED: $what"
	bad=1
	return 1
}
show() {	# show FILE: a file's lines as TAP comments
	[ -s "$1" ] && sed 's/^/#   /' "$1"
	return 0
}

has_ktls() { "$TOOL" probe >/dev/null 2>&1; }

pick_tmp() {
	local d
	for d in ${KTM_QEMU_TMP:-} /dev/shm "${TMPDIR:-/tmp}" /tmp; do
		[ -d "$d" ] && [ -w "$d" ] && { echo "$d"; return; }
	done
	echo /tmp
}

# setup MIB [SHARED-IMAGE]: creds, the source RAM file, both QEMUs (the
# destination with -incoming defer), migration speed unlimited.
setup() {
	local mib=$1 image=${2:-}
	if [ -n "${KTM_QEMU_CREDS:-}" ] && [ -f "$KTM_QEMU_CREDS/ca-cert.pem" ]; then
		cp -a "$KTM_QEMU_CREDS" "$WORK/creds" || return 1
	else
		bash "$TOP/scripts/make-creds.sh" "$WORK/creds" >/dev/null || return 1
	fi
	if [ -n "$image" ] && [ "$(stat -c %s "$image" 2>/dev/null)" = $((mib << 20)) ]; then
		cp "$image" "$WORK/src.ram" || return 1
	else
		qt_fill_ram "$WORK/src.ram" "$mib" || return 1
	fi
	QT_BIN=$src_bin QT_MACHINE=$machine \
		qt_qemu src "$WORK/src.ram" "$mib" "${src_extra[@]}" || return 1
	QT_BIN=$dst_bin QT_MACHINE=$machine \
		qt_qemu dst "$WORK/dst.ram" "$mib" -incoming defer "${dst_extra[@]}" || return 1
	note "QEMU: source $(qt_version src), destination $(qt_version dst), machine $machine"
	qt_params src '"max-bandwidth":107374182400' || return 1
}

qt_version() {	# NAME -> "10.0.13"
	qt_qmp "$1" '{"execute":"query-version"}' 2>/dev/null |
		jq -r '.qemu | "\(.major).\(.minor).\(.micro)"'
}

# dst_completed: the destination QEMU's own query-migrate says completed
# (it may finish loading a moment after the source reported completed)
dst_completed() {
	local st n=50
	while ((n-- > 0)); do
		st=$(qt_migration_status dst)
		[ "$st" = completed ] && return 0
		sleep 0.2
	done
	note "destination query-migrate status: $st"
	return 1
}

# both CAP...: the same capabilities on both QEMUs
both_caps() { qt_caps src "$@" && qt_caps dst "$@"; }

incoming() { qt_qmp dst "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$1\"}}" >/dev/null; }
migrate() { qt_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$1\"}}" >/dev/null; }

# wait_migrate SECONDS: 0 completed, else failed; the reply in $WORK/mig.json
wait_migrate() {
	perl "$QMP_PL" --wait-migrate "$1" "$WORK/src.qmp" > "$WORK/mig.json"
}

ram_equal() {
	# the destination has written its RAM through the shared mapping
	cmp -s "$WORK/src.ram" "$WORK/dst.ram"
}

# wait_exit PID SECONDS: the process's exit status, 124 when still running
wait_exit() {
	local pid=$1 n=$(($2 * 10))
	while ((n-- > 0)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			return $?
		fi
		sleep 0.1
	done
	return 124
}

exits_with() {	# STATUS PID: the process ends within 30 s with STATUS
	wait_exit "$2" 30
	[ $? = "$1" ]
}
proxies_exit() { exits_with "$1" "$ps_pid" && exits_with "$1" "$pd_pid"; }

summary_ok() {	# FILE N PATH: N "ok" connection lines on path PATH
	local n
	n=$(grep -c "^conn [0-9]* .*: ok: .*path $3" "$1")
	[ "$n" = "$2" ]
}

# ---- proxy cases ------------------------------------------------------------

# proxy_migrate MIB POLICY CHANNELS: a successful migration through both
# proxy ends; PATH is what the summaries must say ("" for any)
proxy_migrate() {
	local mib=$1 policy=$2 channels=$3 path=$4 conns=1 timeout=$5
	setup "$mib" "${SHARED_IMAGE:-}" || return 1
	both_caps return-path || return 1
	if [ "$channels" -gt 0 ]; then
		both_caps multifd || return 1
		qt_params src "\"multifd-channels\":$channels" &&
			qt_params dst "\"multifd-channels\":$channels" || return 1
		conns=$((channels + 1))
	fi
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$WORK/creds" --ktls "$policy" --max-conns "$conns" || return 1
	qt_proxy ps source --unix "$WORK/src.mig" --connect "$pd_addr" \
		--creds "$WORK/creds" --ktls "$policy" --max-conns "$conns" || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	local t0=$SECONDS
	migrate "unix:$WORK/src.mig" || return 1
	check "QEMU reports the migration completed" wait_migrate "$timeout"
	note "source QEMU: $(jq -c '{status, "total-time", "error-desc", transferred: .ram.transferred}' "$WORK/mig.json" 2>/dev/null) ($((SECONDS - t0)) s)"
	check "both proxies exit 0 after $conns connection(s)" proxies_exit 0
	show "$WORK/ps.out"; show "$WORK/ps.err"; show "$WORK/pd.out"; show "$WORK/pd.err"
	check "source proxy: $conns clean connection(s), path ${path:-any}" \
		summary_ok "$WORK/ps.out" "$conns" "$path"
	check "destination proxy: $conns clean connection(s), path ${path:-any}" \
		summary_ok "$WORK/pd.out" "$conns" "$path"
	check "destination QEMU's query-migrate says completed" dst_completed
	check "destination RAM file equals the source's (cmp)" ram_equal
	note "destination status: $(qt_status dst)"
}

# proxy_reject WHAT: a migration the handshake must stop
proxy_reject() {
	local what=$1 dcreds src_extra=() expect st
	setup 64 || return 1
	dcreds=$WORK/creds
	case $what in
	hostname)
		src_extra=(--hostname wrong.example)
		expect="server certificate does not match expected host 'wrong.example'"
		;;
	ca)
		bash "$TOP/scripts/make-creds.sh" "$WORK/other" >/dev/null || return 1
		dcreds=$WORK/other
		expect="server certificate of .*(is not signed by a trusted CA|chains to a root CA that is not trusted)"
		;;
	esac
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$dcreds" --max-conns 1 || return 1
	qt_proxy ps source --unix "$WORK/src.mig" --connect "$pd_addr" \
		--creds "$WORK/creds" --max-conns 1 "${src_extra[@]}" || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	migrate "unix:$WORK/src.mig" || return 1
	wait_migrate 60
	check "source QEMU reports the migration failed" \
		test "$(jq -r .status "$WORK/mig.json")" = failed
	note "source QEMU error-desc: $(jq -r '."error-desc" // "-"' "$WORK/mig.json")"
	check "source proxy exits 1" exits_with 1 "$ps_pid"
	check "destination proxy exits 1" exits_with 1 "$pd_pid"
	show "$WORK/ps.out"; show "$WORK/ps.err"; show "$WORK/pd.out"; show "$WORK/pd.err"
	check "source proxy says: $expect" grep -qE "$expect" "$WORK/ps.err"
	check "destination proxy names the failed connection" \
		grep -q "^ktls-migrate: conn 1: " "$WORK/pd.err"
	st=$(qt_status dst)
	note "destination QEMU status: $st"
	check "destination QEMU is not running the guest (inmigrate)" \
		test "$st" = inmigrate
}

# proxy_postcopy MIB [preempt]: precopy at 32 MiB/s, then
# migrate-start-postcopy; the rest of RAM moves in postcopy with the return
# path open both ways.  With preempt, QEMU's postcopy-preempt channel (page
# requests answered on their own connection) is a second TLS session.
proxy_postcopy() {
	local mib=$1 rx caps=(postcopy-ram) conns=1
	if [ "${2:-}" = preempt ]; then
		caps+=(postcopy-preempt)
		conns=2
	fi
	setup "$mib" || return 1
	if ! qt_caps src "${caps[@]}" 2>"$WORK/caps.err" ||
	   ! qt_caps dst "${caps[@]}" 2>>"$WORK/caps.err"; then
		note "FAILED: ${caps[*]} not available: $(head -n 1 "$WORK/caps.err")"
		return 1
	fi
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$WORK/creds" --max-conns $conns || return 1
	qt_proxy ps source --unix "$WORK/src.mig" --connect "$pd_addr" \
		--creds "$WORK/creds" --max-conns $conns || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	qt_params src '"max-bandwidth":33554432' || return 1
	migrate "unix:$WORK/src.mig" || return 1
	sleep 1
	check "migrate-start-postcopy accepted" \
		qt_qmp src '{"execute":"migrate-start-postcopy"}' >/dev/null
	qt_params src '"max-bandwidth":107374182400,"max-postcopy-bandwidth":0'
	check "QEMU reports the migration completed" wait_migrate 120
	note "source QEMU: $(jq -c '{status, "total-time", "postcopy-bytes": .ram."postcopy-bytes"}' "$WORK/mig.json")"
	check "part of RAM moved in postcopy" \
		test "$(jq -r '.ram."postcopy-bytes" // 0' "$WORK/mig.json")" -gt 0
	check "both proxies exit 0 after $conns connection(s)" proxies_exit 0
	show "$WORK/ps.out"; show "$WORK/pd.out"; show "$WORK/ps.err"; show "$WORK/pd.err"
	check "source proxy: $conns clean connection(s)" summary_ok "$WORK/ps.out" "$conns" ""
	rx=$(sed -n 's/.*: ok: sent [0-9]* bytes, received \([0-9]*\) bytes.*/\1/p' "$WORK/ps.out" | sort -n | tail -n 1)
	check "the return path carried bytes back to the source (${rx:-0})" \
		test "${rx:-0}" -gt 0
	check "destination QEMU's query-migrate says completed" dst_completed
	check "destination RAM file equals the source's (cmp)" ram_equal
}

# proxy_cut POLICY SIGNAL: stop the source proxy mid-stream with SIGNAL
# (KILL: the kernel closes its sockets; TERM: it cuts its connections
# itself); the destination must see a truncation, never a complete migration
proxy_cut() {
	local policy=$1 sig=$2 st rc
	setup "${3:-128}" || return 1
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$WORK/creds" --ktls "$policy" --max-conns 1 || return 1
	qt_proxy ps source --unix "$WORK/src.mig" --connect "$pd_addr" \
		--creds "$WORK/creds" --ktls "$policy" --max-conns 1 || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	qt_params src '"max-bandwidth":16777216' || return 1
	migrate "unix:$WORK/src.mig" || return 1
	sleep 2	# let part of the stream pass (16 MiB/s)
	{ kill -"$sig" "$ps_pid"; wait "$ps_pid"; rc=$?; } 2>/dev/null
	if [ "$sig" = TERM ]; then
		check "source proxy exits 1 on SIGTERM with a connection open" test "$rc" = 1
		show "$WORK/ps.err"
		check "source proxy says it cut the connection" \
			grep -q "proxy stopped while the connection to .* was open" "$WORK/ps.err"
	fi
	wait_migrate 60
	check "source QEMU reports the migration failed" \
		test "$(jq -r .status "$WORK/mig.json")" = failed
	note "source QEMU error-desc: $(jq -r '."error-desc" // "-"' "$WORK/mig.json")"
	check "destination proxy exits 1" exits_with 1 "$pd_pid"
	show "$WORK/pd.out"; show "$WORK/pd.err"
	check "destination proxy reports the truncation" \
		grep -q "closed the connection without TLS close_notify (truncated)" "$WORK/pd.err"
	sleep 1
	if kill -0 "$dst_pid" 2>/dev/null; then
		st=$(qt_status dst)
	else
		st="exited ($(tail -n 1 "$WORK/dst.log"))"
	fi
	note "destination QEMU: $st"
	check "destination QEMU is not running the guest" test "$st" != running
	check "destination RAM is not complete" eval '! ram_equal'
}

# ---- mixed deployments: one end is a QEMU with its own TLS (GnuTLS) ----------

# QEMU's own TLS: tls-creds-x509 on the named side(s) of the case
qemu_tls_creds() {	# src|dst
	if [ "$1" = src ]; then
		src_extra=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=client")
	else
		dst_extra=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=server")
	fi
}

# multifd_both CHANNELS: multifd on both QEMUs (nothing for 0)
multifd_both() {
	[ "$1" -gt 0 ] || return 0
	both_caps multifd &&
		qt_params src "\"multifd-channels\":$1" &&
		qt_params dst "\"multifd-channels\":$1"
}

# mixed_done CONNS PROXY: the checks of a successful mixed migration
mixed_done() {
	local conns=$1 px=$2
	check "QEMU reports the migration completed" wait_migrate 300
	note "source QEMU: $(jq -c '{status, "total-time", "error-desc"}' "$WORK/mig.json" 2>/dev/null)"
	check "the proxy exits 0 after $conns connection(s)" exits_with 0 "$(eval echo "\$${px}_pid")"
	show "$WORK/$px.out"; show "$WORK/$px.err"; tail -n 3 "$WORK/dst.log" | sed 's/^/#   dst: /'
	check "the proxy: $conns clean TLS session(s), one per QEMU connection" \
		summary_ok "$WORK/$px.out" "$conns" ""
	check "destination QEMU's query-migrate says completed" dst_completed
	check "destination RAM file equals the source's (cmp)" ram_equal
}

# mixed_to CHANNELS: QEMU (plain) -> proxy source -> TLS -> a destination
# QEMU that does TLS itself (tls-creds-x509 endpoint=server, tls-creds)
mixed_to() {
	local ch=$1 conns=$(($1 > 0 ? $1 + 1 : 1)) port
	qemu_tls_creds dst
	setup 256 || return 1
	both_caps return-path && multifd_both "$ch" || return 1
	qt_params dst '"tls-creds":"tls0"' || return 1
	port=$(qt_free_port)
	incoming "tcp:127.0.0.1:$port" || return 1
	qt_proxy ps source --unix "$WORK/src.mig" --connect "127.0.0.1:$port" \
		--creds "$WORK/creds" --peer qemu-tls --max-conns "$conns" || return 1
	migrate "unix:$WORK/src.mig" || return 1
	mixed_done "$conns" ps
}

# mixed_from CHANNELS [strict]: a source QEMU doing TLS itself (tls-creds,
# endpoint=client) -> proxy dest -> QEMU (plain).  strict: the proxy is not
# told its peer is QEMU's TLS, so the peer's bare FIN is a truncation
mixed_from() {
	local ch=$1 conns=$(($1 > 0 ? $1 + 1 : 1)) peer=(--peer qemu-tls)
	[ "${2:-}" = strict ] && peer=()
	qemu_tls_creds src
	setup 256 || return 1
	both_caps return-path && multifd_both "$ch" || return 1
	qt_params src '"tls-creds":"tls0","tls-hostname":"localhost"' || return 1
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$WORK/creds" "${peer[@]}" --max-conns "$conns" || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	migrate "tcp:$pd_addr" || return 1
	[ "${2:-}" = strict ] && return 0
	mixed_done "$conns" pd
	channel_ends "$conns"
}

# channel_ends CONNS: how the source QEMU ended its TLS channels, as its
# version documents it: QEMU 7.2 ends every channel with a bare FIN; QEMU
# 10 sends close_notify on its multifd channels (the
# multifd-clean-tls-termination change) but not on the main channel
channel_ends() {
	local want=$1 got
	case $(qt_version src) in
	7.*) ;;
	*) want=1 ;;
	esac
	got=$(grep -c 'ok: .*peer ended without close_notify' "$WORK/pd.out")
	check "source QEMU $(qt_version src): $want of $1 channel(s) ended without close_notify (got $got)" \
		test "$got" = "$want"
}

# mixed_strict: without --peer qemu-tls a QEMU-TLS source's bare FIN is
# reported as a truncation, never counted as a clean end
mixed_strict() {
	mixed_from 0 strict || return 1
	wait_migrate 120
	note "source QEMU: $(jq -c '{status, "error-desc"}' "$WORK/mig.json" 2>/dev/null)"
	check "the proxy exits 1" exits_with 1 "$pd_pid"
	show "$WORK/pd.out"; show "$WORK/pd.err"
	check "the proxy reports the end without close_notify as a failure" \
		grep -qE "closed the connection without TLS close_notify \(truncated\)|went away without closing the TLS session" "$WORK/pd.err"
}

# mixed_cut: the TLS-doing source QEMU is killed mid-stream; under
# --peer qemu-tls the destination QEMU must still fail, not run the guest
mixed_cut() {
	local st
	qemu_tls_creds src
	setup 256 || return 1
	qt_params src '"tls-creds":"tls0","tls-hostname":"localhost","max-bandwidth":16777216' || return 1
	qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.mig" \
		--creds "$WORK/creds" --peer qemu-tls --max-conns 1 || return 1
	incoming "unix:$WORK/dst.mig" || return 1
	migrate "tcp:$pd_addr" || return 1
	sleep 2	# part of the stream (16 MiB/s)
	{ kill -KILL "$src_pid"; wait "$src_pid"; } 2>/dev/null
	wait_exit "$pd_pid" 30
	show "$WORK/pd.out"; show "$WORK/pd.err"
	sleep 1
	if kill -0 "$dst_pid" 2>/dev/null; then
		st=$(qt_status dst)/$(qt_migration_status dst)
	else
		st="exited ($(tail -n 1 "$WORK/dst.log"))"
	fi
	note "destination QEMU: $st"
	check "destination QEMU is not running the guest" test "${st%%/*}" != running
	check "destination QEMU did not complete the migration" \
		test "${st#*/}" != completed
	check "destination RAM is not complete" eval '! ram_equal'
}

# ---- fd mode cases ------------------------------------------------------------

# fd_migrate MIB POLICY PATH TIMEOUT
fd_migrate() {
	local mib=$1 policy=$2 path=$3 timeout=$4 addr rc_s rc_r
	setup "$mib" || return 1
	both_caps return-path || return 1
	"$TOOL" qemu-recv --qmp "$WORK/dst.qmp" --listen 127.0.0.1:0 \
		--creds "$WORK/creds" --ktls "$policy" --accept-timeout 60 \
		--timeout "$timeout" > "$WORK/recv.out" 2> "$WORK/recv.err" &
	local rpid=$!
	qt_track $rpid
	check "qemu-recv listens" qt_wait_line "$WORK/recv.out" '^listening on ' 30 || return 1
	addr=$(sed -n 's/^listening on //p' "$WORK/recv.out")
	"$TOOL" qemu-send --qmp "$WORK/src.qmp" --connect "$addr" \
		--creds "$WORK/creds" --ktls "$policy" --timeout "$timeout" \
		> "$WORK/send.out" 2> "$WORK/send.err"
	rc_s=$?
	wait_exit $rpid 60
	rc_r=$?
	show "$WORK/send.out"; show "$WORK/send.err"; show "$WORK/recv.out"; show "$WORK/recv.err"
	check "qemu-send exits 0 (QEMU reports completed)" test "$rc_s" = 0
	check "qemu-recv exits 0 (QEMU reports completed)" test "$rc_r" = 0
	check "qemu-send ran on path $path" grep -q "^migration completed.*path $path" "$WORK/send.out"
	check "destination QEMU's query-migrate says completed" dst_completed
	check "destination RAM file equals the source's (cmp)" ram_equal
	note "destination status: $(qt_status dst)"
}

# fd_reject POLICY: qemu-send with a wrong --hostname
fd_reject() {
	local policy=$1 addr rc_s rc_r st
	local expect="server certificate does not match expected host 'wrong.example'"
	setup 64 || return 1
	"$TOOL" qemu-recv --qmp "$WORK/dst.qmp" --listen 127.0.0.1:0 \
		--creds "$WORK/creds" --ktls "$policy" --accept-timeout 60 \
		> "$WORK/recv.out" 2> "$WORK/recv.err" &
	local rpid=$!
	qt_track $rpid
	check "qemu-recv listens" qt_wait_line "$WORK/recv.out" '^listening on ' 30 || return 1
	addr=$(sed -n 's/^listening on //p' "$WORK/recv.out")
	"$TOOL" qemu-send --qmp "$WORK/src.qmp" --connect "$addr" \
		--hostname wrong.example --creds "$WORK/creds" --ktls "$policy" \
		> "$WORK/send.out" 2> "$WORK/send.err"
	rc_s=$?
	wait_exit $rpid 60
	rc_r=$?
	show "$WORK/send.err"; show "$WORK/recv.err"
	check "qemu-send exits 1" test "$rc_s" = 1
	check "qemu-recv exits 1" test "$rc_r" = 1
	check "qemu-send says: $expect" grep -qF "$expect" "$WORK/send.err"
	check "qemu-recv says why" grep -q "^ktls-migrate: " "$WORK/recv.err"
	st=$(qt_status dst)
	note "destination QEMU status: $st; source: $(qt_status src)"
	check "destination QEMU is not running the guest (inmigrate)" test "$st" = inmigrate
	check "source QEMU did not migrate" test "$(qt_status src)" = prelaunch
}

fd_require_without_ktls() {
	setup 16 || return 1
	"$TOOL" qemu-recv --qmp "$WORK/dst.qmp" --listen 127.0.0.1:0 \
		--creds "$WORK/creds" --accept-timeout 30 \
		> "$WORK/recv.out" 2> "$WORK/recv.err" &
	local rpid=$! addr rc_s
	qt_track $rpid
	qt_wait_line "$WORK/recv.out" '^listening on ' 30 || return 1
	addr=$(sed -n 's/^listening on //p' "$WORK/recv.out")
	"$TOOL" qemu-send --qmp "$WORK/src.qmp" --connect "$addr" \
		--creds "$WORK/creds" > "$WORK/send.out" 2> "$WORK/send.err"
	rc_s=$?
	wait_exit $rpid 30
	show "$WORK/send.err"; show "$WORK/recv.err"
	check "qemu-send --ktls=require exits 1" test "$rc_s" = 1
	check "qemu-send names the missing kernel TLS" \
		grep -q "kernel TLS is not available" "$WORK/send.err"
	check "destination QEMU stays inmigrate" test "$(qt_status dst)" = inmigrate
}

# wire_counter ADDR: start tests/qemu/tlsrec.pl relaying to ADDR (the
# test's own count of the TLS records the connecting end sends, in
# $WORK/wire.count when the connection ends); sets wire_addr and wire_pid
wire_counter() {
	perl "$here/tlsrec.pl" "$1" "$WORK/wire.count" > "$WORK/wire.out" \
		2> "$WORK/wire.err" &
	wire_pid=$!
	qt_track "$wire_pid"
	qt_wait_line "$WORK/wire.out" '^listening on ' 30 || return 1
	wire_addr=$(sed -n 's/^listening on //p' "$WORK/wire.out")
}

# wire_app: the application-data records (type 23) the wire counter saw
# from qemu-send: the records sealed under the traffic key, plus the one to
# three encrypted handshake records of TLS 1.3 (so an upper bound)
wire_app() {
	[ -s "$WORK/wire.count" ] && ! grep -q bad "$WORK/wire.count" &&
		awk '{ print $4 }' "$WORK/wire.count"
}

# fd_key_limit POLICY LIMIT: a 64 MiB fd-mode migration (some 3600 records
# of 16 KiB) through the wire counter with qemu-send --key-limit LIMIT.
# require (kernel path): QEMU writes into the kernel-TLS socket itself and
# cannot update its key, so qemu-send must cancel the migration over QMP
# with the sentence before the socket seals LIMIT records.  off (the
# userspace path): qemu-send's relay owns the TLS session and updates the
# key in place (TLS 1.3 KeyUpdate), so the migration completes.
fd_key_limit() {
	local policy=$1 limit=$2 addr rc_s rc_r st app rpid sealed updates
	setup 64 || return 1
	both_caps return-path || return 1
	"$TOOL" qemu-recv --qmp "$WORK/dst.qmp" --listen 127.0.0.1:0 \
		--creds "$WORK/creds" --ktls "$policy" --accept-timeout 60 \
		--timeout 300 > "$WORK/recv.out" 2> "$WORK/recv.err" &
	rpid=$!
	qt_track $rpid
	check "qemu-recv listens" qt_wait_line "$WORK/recv.out" '^listening on ' 30 || return 1
	addr=$(sed -n 's/^listening on //p' "$WORK/recv.out")
	check "the wire counter listens" wire_counter "$addr" || return 1
	"$TOOL" qemu-send --qmp "$WORK/src.qmp" --connect "$wire_addr" \
		--creds "$WORK/creds" --ktls "$policy" --key-limit "$limit" \
		--timeout 300 > "$WORK/send.out" 2> "$WORK/send.err"
	rc_s=$?
	wait_exit $rpid 60
	rc_r=$?
	wait_exit "$wire_pid" 30
	show "$WORK/send.out"; show "$WORK/send.err"; show "$WORK/recv.out"; show "$WORK/recv.err"
	note "wire: $(cat "$WORK/wire.count" 2>/dev/null) $(cat "$WORK/wire.err")"
	app=$(wire_app)
	check "the wire counter read TLS records from qemu-send" test -n "$app" || return 1
	if [ "$policy" = off ]; then
		check "qemu-send exits 0 (QEMU reports completed)" test "$rc_s" = 0
		check "qemu-send ran on the userspace path" \
			grep -q "^migration completed.*path userspace" "$WORK/send.out"
		check "more records went ($app) than one key may seal ($limit)" \
			test "$app" -gt $((limit + 3))
		# each key sealed at most LIMIT records: at least
		# ceil(app / LIMIT) - 1 updates (the handshake's few included)
		updates=$(sed -n 's/^migration completed.*, \([0-9]*\) key update(s).*/\1/p' "$WORK/send.out")
		check "qemu-send updated the key at least $(((app + limit - 1) / limit - 1)) time(s) (said ${updates:-none})" \
			test "${updates:-0}" -ge $(((app + limit - 1) / limit - 1))
		check "destination QEMU's query-migrate says completed" dst_completed
		check "destination RAM file equals the source's (cmp)" ram_equal
		return 0
	fi
	check "qemu-send exits 1" test "$rc_s" = 1
	check "qemu-send says it cancelled the migration before the limit of $limit" \
		grep -qE "cancelled the migration \(migrate_cancel\): .* usage limit of $limit, and QEMU cannot update" "$WORK/send.err"
	check "qemu-recv exits 1" test "$rc_r" = 1
	st=$(qt_migration_status src)
	note "source QEMU query-migrate: $st"
	check "source QEMU's query-migrate says cancelled or failed" \
		test "$st" = cancelled -o "$st" = failed
	if kill -0 "$dst_pid" 2>/dev/null; then
		st=$(qt_status dst)/$(qt_migration_status dst)
	else
		st="exited ($(tail -n 1 "$WORK/dst.log"))"
	fi
	note "destination QEMU: $st"
	check "destination QEMU is not running the guest" test "${st%%/*}" != running
	check "destination RAM is not complete" eval '! ram_equal'
	check "records on the wire ($app, the handshake's included) never exceeded the limit ($limit)" \
		test "$app" -le "$limit"
	# what the kernel counted on qemu-send's duplicate of the socket, once
	# QEMU stopped: sealed records, sent or not
	sealed=$(sed -n 's/.*QEMU stopped ([a-z]*) after \([0-9]*\) records.*/\1/p' "$WORK/send.err")
	check "records sealed in all (${sealed:-none}, the kernel's count) never exceeded the limit" \
		test "${sealed:-999999999}" -le "$limit"
	check "more than half the limit went ($app > $((limit / 2))): the stop came at the limit" \
		test "$app" -gt $((limit / 2))
}

run_case() {	# in the child; returns 0 pass, 1 fail, 77 skip
	local c=$1 nt=300 q10
	src_bin=$QEMU_BIN dst_bin=$QEMU_BIN
	case $c in
	q10.* | upgrade.*)
		if ! q10=$(qt_qemu10); then
			note "QEMU 10 is not cached: run 'make deps' (tests/qemu/fetch-qemu10.sh, as root)"
			return 77
		fi ;;
	esac
	case $c in
	q10.*) src_bin=$q10 dst_bin=$q10; c=${c#q10.} ;;
	# one host upgraded: machine type of the older QEMU on both
	upgrade.q72_to_q10_*) dst_bin=$q10 machine=pc-q35-7.2 ;;
	upgrade.q10_to_q72_*) src_bin=$q10 machine=pc-q35-7.2 ;;
	esac
	case $c in
	guest.*)
		if ! has_ktls; then
			note "no kernel TLS here: $("$TOOL" probe 2>&1 | head -n 1)"
			return 77
		fi ;;
	fd.require_without_ktls)
		if has_ktls; then
			note "this kernel has kTLS, so require cannot fail here"
			return 77
		fi ;;
	esac
	case $c in
	proxy.prefer.plain_1g) proxy_migrate 1024 prefer 0 "" $nt ;;
	proxy.prefer.multifd2_1g) proxy_migrate 1024 prefer 2 "" $nt ;;
	proxy.prefer.plain_256m) proxy_migrate 256 prefer 0 "" $nt ;;
	proxy.prefer.multifd2_256m) proxy_migrate 256 prefer 2 "" $nt ;;
	proxy.prefer.multifd4_256m) proxy_migrate 256 prefer 4 "" $nt ;;
	proxy.prefer.postcopy_256m) proxy_postcopy 256 ;;
	proxy.prefer.postcopy_preempt_256m) proxy_postcopy 256 preempt ;;
	mixed.to_qemu_tls_256m) mixed_to 0 ;;
	mixed.to_qemu_tls_multifd2_256m) mixed_to 2 ;;
	mixed.from_qemu_tls_256m) mixed_from 0 ;;
	mixed.from_qemu_tls_multifd2_256m) mixed_from 2 ;;
	mixed.from_qemu_tls_strict) mixed_strict ;;
	mixed.from_qemu_tls_cut) mixed_cut ;;
	# the old host keeps QEMU 7.2 and its own TLS; the upgraded host runs
	# QEMU 10 behind ktls-migrate
	upgrade.q72_to_q10_multifd2) mixed_from 2 ;;
	upgrade.q10_to_q72_multifd2) mixed_to 2 ;;
	proxy.killed_midstream) proxy_cut prefer KILL ;;
	proxy.stopped_midstream) proxy_cut prefer TERM ;;
	proxy.bad_hostname) proxy_reject hostname ;;
	proxy.wrong_ca) proxy_reject ca ;;
	fd.prefer.userspace_256m) fd_migrate 256 prefer "" $nt ;;
	fd.bad_hostname) fd_reject prefer ;;
	fd.require_without_ktls) fd_require_without_ktls ;;
	guest.proxy.ktls_plain_128m) proxy_migrate 128 require 0 kernel 600 ;;
	guest.proxy.ktls_multifd2_128m) proxy_migrate 128 require 2 kernel 600 ;;
	guest.proxy.stopped_midstream) proxy_cut require TERM ;;
	guest.proxy.stopped_midstream_64m) proxy_cut require TERM 64 ;;
	guest.fd.ktls_128m) fd_migrate 128 require kernel 600 ;;
	guest.proxy.ktls_plain_64m) proxy_migrate 64 require 0 kernel 600 ;;
	guest.proxy.ktls_multifd2_64m) proxy_migrate 64 require 2 kernel 600 ;;
	guest.fd.ktls_64m) fd_migrate 64 require kernel 600 ;;
	guest.fd.bad_hostname) fd_reject require ;;
	guest.fd.key_limit) fd_key_limit require 2000 ;;
	fd.off.key_limit_userspace) fd_key_limit off 2000 ;;
	*) note "unknown case $c"; return 1 ;;
	esac
	case $? in
	0) ;;
	77) return 77 ;;
	*) bad=1 ;;
	esac
	return $bad
}

if [ -n "$one" ]; then
	WORK=$(mktemp -d "$(pick_tmp)/ktm-qemu.XXXXXX") || exit 1
	. "$TOP/tests/qemu/lib.sh"
	trap qt_cleanup EXIT
	trap 'note "case timed out or interrupted"; exit 143' TERM INT
	run_case "$one"
	exit $?
fi

# ---- the runner ---------------------------------------------------------------

run_tier() {	# cases...
	local n=0 c rc t0 limit total=$# creds
	echo "TAP version 13"
	echo "1..$total"
	# one set of credentials for the whole run, copied into each case
	# (making them costs seconds in a TCG guest)
	creds=$(mktemp -d "$(pick_tmp)/ktm-qemu-creds.XXXXXX") &&
		bash "$TOP/scripts/make-creds.sh" "$creds/creds" >/dev/null &&
		export KTM_QEMU_CREDS=$creds/creds
	for c in "$@"; do
		n=$((n + 1))
		t0=$SECONDS
		case $c in guest.*) limit=${KTM_QEMU_CASE_TIMEOUT:-900} ;;
			   *) limit=${KTM_QEMU_CASE_TIMEOUT:-300} ;; esac
		timeout -k 10 "$limit" bash "$0" --build "$BUILD" --one "$c"
		rc=$?
		[ $rc = 124 ] && note "$c: stopped after $limit s"
		note "$c: $((SECONDS - t0)) s"
		if [ $rc = 0 ]; then
			echo "ok $n $c"
		elif [ $rc = 77 ] && [ $require = 0 ]; then
			echo "ok $n $c # SKIP see the note above"
		else
			[ $rc = 77 ] && note "$c: skipped, which KTLS_REQUIRE=1/CI=true forbids"
			echo "not ok $n $c"
		fi
	done
	[ -n "$creds" ] && rm -rf "$creds"
}

select_cases() {	# cases... filtered by the pattern, into the array "cases"
	local c
	cases=()
	for c in "$@"; do
		# shellcheck disable=SC2053
		[[ $c == $pattern ]] && cases+=("$c")
	done
}

if [ ! -x "$TOOL" ]; then
	echo "TAP version 13"; echo "1..1"
	echo "not ok 1 build # $TOOL missing: run make"
	exit 1
fi
command -v "${KTM_QEMU:-qemu-system-x86_64}" >/dev/null || {
	echo "TAP version 13"; echo "1..1"
	echo "ok 1 qemu # SKIP qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
	exit 0
}

case $tier in
native)
	select_cases "${native_cases[@]}"
	[ "$list" = 1 ] && { printf '%s\n' "${cases[@]}"; exit 0; }
	# One random 1 GiB image for the big cases, copied per case.
	shared=$(mktemp -d "$(pick_tmp)/ktm-qemu-img.XXXXXX") || exit 1
	trap 'rm -rf "$shared"' EXIT
	. "$TOP/tests/qemu/lib.sh"
	if printf '%s\n' "${cases[@]}" | grep -q _1g; then
		qt_fill_ram "$shared/src-1g.ram" 1024 || exit 1
		export SHARED_IMAGE=$shared/src-1g.ram
	fi
	run_tier "${cases[@]}" | tee "$shared/tap"
	! grep -q '^not ok' "$shared/tap"
	;;
guest)
	select_cases "${guest_cases[@]}"
	[ "$list" = 1 ] && { printf '%s\n' "${cases[@]}"; exit 0; }
	note "kernel $(uname -r): $("$TOOL" probe 2>&1 | head -n 1)"
	out=$(mktemp)
	run_tier "${cases[@]}" | tee "$out"
	rc=0; grep -q '^not ok' "$out" && rc=1
	rm -f "$out"
	exit $rc
	;;
vm)
	select_cases "${guest_cases[@]}"
	[ "$list" = 1 ] && { printf '%s\n' "${cases[@]}"; exit 0; }
	kernels=$(bash "$TOP/tests/vm/fetch-kernels.sh" --list 2>/dev/null)
	if [ -z "$kernels" ]; then
		echo "TAP version 13"; echo "1..1"
		if [ $require = 1 ]; then
			echo "not ok 1 vm # no guest kernel cached; run 'make deps'"
			exit 1
		fi
		echo "ok 1 vm # SKIP no guest kernel cached; run 'make deps'"
		exit 0
	fi
	rc=0
	cd "$TOP" || exit 1
	# QEMU 10's cached root, for the guest (HOME=/root there)
	export KTM_CACHE_DIR=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
	for k in $kernels; do
		note "== vm: kernel $(cat "$k/release" 2>/dev/null || basename "$k") =="
		bash tests/vm/run.sh --timeout "${KTM_VM_TIMEOUT:-3600}" --mem 2048 "$k" -- \
			bash tests/qemu/run.sh --build "$BUILD" guest "$pattern" || rc=1
	done
	exit $rc
	;;
*)
	echo "tests/qemu/run.sh: unknown tier '$tier' (native, guest or vm)" >&2
	exit 2
	;;
esac
