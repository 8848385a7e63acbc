# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# tests/qemu/lib.sh - shared by tests/qemu/run.sh and bench/qemu/run.sh:
# start paused QEMU guests whose RAM is a memory-backend-file, drive them
# over QMP (tests/qemu/qmp.pl), start proxies, and clean everything up.
#
# The caller sets TOP (repo), BUILD (build dir) and WORK (a private temp
# dir) and calls qt_cleanup from its EXIT trap.

QT_PIDS=()
QEMU_BIN=${KTM_QEMU:-qemu-system-x86_64}
QMP_PL=$TOP/tests/qemu/qmp.pl

# Every process a case starts is recorded here and killed by qt_kill_all.
qt_track() { QT_PIDS+=("$1"); }

qt_kill_all() {
	local pid
	for pid in "${QT_PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${QT_PIDS[@]}"; do
		# QEMU and the proxy end within a second of SIGTERM
		for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	QT_PIDS=()
}

qt_cleanup() {
	qt_kill_all
	[ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# qt_fill_ram FILE MIB [ZEROS]: random data with, unless ZEROS is "nozero",
# a zero MiB every 8 MiB (QEMU sends those as zero pages), so a wrong or
# missing page shows in cmp.
qt_fill_ram() {
	local file=$1 mib=$2 off run=7
	[ "${3:-}" = nozero ] && run=8
	rm -f "$file"
	truncate -s "${mib}M" "$file" || return 1
	for ((off = 0; off < mib; off += 8)); do
		dd if=/dev/urandom of="$file" bs=1M seek="$off" \
			count=$((mib - off < run ? mib - off : run)) conv=notrunc \
			status=none iflag=fullblock || return 1
	done
}

# qt_qemu NAME RAMFILE MIB [QEMU ARGS...]: a paused guest (-S) whose RAM is
# RAMFILE, QMP on $WORK/NAME.qmp, stderr in $WORK/NAME.log.  Waits until
# QMP answers.  Sets NAME_pid.  QT_BIN (default $QEMU_BIN) picks the QEMU
# binary, QT_MACHINE (default q35) the machine type, e.g. pc-q35-7.2 for a
# migration between QEMU versions.
qt_qemu() {
	local name=$1 ram=$2 mib=$3 pid
	shift 3
	"${QT_BIN:-$QEMU_BIN}" -accel tcg -S -nodefaults -display none \
		-machine "${QT_MACHINE:-q35}" \
		-m "${mib}M" \
		-object "memory-backend-file,id=ram,size=${mib}M,mem-path=$ram,share=on" \
		-machine memory-backend=ram \
		-qmp "unix:$WORK/$name.qmp,server=on,wait=off" "$@" \
		> "$WORK/$name.log" 2>&1 &
	pid=$!
	qt_track "$pid"
	printf -v "${name}_pid" %s "$pid"
	if ! perl "$QMP_PL" --wait-socket "${QT_BOOT_S:-60}" "$WORK/$name.qmp"; then
		echo "# $name: QEMU did not open its QMP socket: $(tail -n 3 "$WORK/$name.log")"
		return 1
	fi
}

# qt_qmp NAME JSON...: run QMP commands, print the replies.
qt_qmp() {
	local name=$1
	shift
	perl "$QMP_PL" --timeout "${QT_QMP_S:-60}" "$WORK/$name.qmp" "$@"
}

# qt_caps NAME CAP... : migrate-set-capabilities CAP=true.
qt_caps() {
	local name=$1 cap list=""
	shift
	for cap in "$@"; do
		list+="${list:+,}{\"capability\":\"$cap\",\"state\":true}"
	done
	qt_qmp "$name" "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[$list]}}" >/dev/null
}

# qt_params NAME JSON-MEMBERS: migrate-set-parameters.
qt_params() {
	qt_qmp "$1" "{\"execute\":\"migrate-set-parameters\",\"arguments\":{$2}}" >/dev/null
}

qt_status() {	# NAME -> runstate ("inmigrate", "paused", ...)
	qt_qmp "$1" '{"execute":"query-status"}' 2>/dev/null | jq -r .status
}

# qt_wait_line FILE REGEX SECONDS: wait for a line in a growing file.
qt_wait_line() {
	local file=$1 re=$2 n=$(($3 * 10))
	while ((n-- > 0)); do
		grep -qE "$re" "$file" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# qt_proxy NAME ARGS...: start `ktls-migrate proxy ARGS`, stdout in
# $WORK/NAME.out, stderr in $WORK/NAME.err; wait for "listening on" and
# set NAME_addr to the bound address and NAME_pid.
qt_proxy() {
	local name=$1 pid
	shift
	"$BUILD/ktls-migrate" proxy "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
	pid=$!
	qt_track "$pid"
	printf -v "${name}_pid" %s "$pid"
	if ! qt_wait_line "$WORK/$name.out" '^listening on ' 30; then
		echo "# $name: the proxy did not start: $(head -n 3 "$WORK/$name.err")"
		return 1
	fi
	printf -v "${name}_addr" %s \
		"$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$WORK/$name.out" | head -n 1)"
}

# A free loopback TCP port (for QEMU's own tcp: listener).
qt_free_port() {
	perl -MIO::Socket::INET -e \
		'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1)->sockport, "\n"'
}

# The QEMU 10 wrapper made by tests/qemu/fetch-qemu10.sh, or nothing.
qt_qemu10() { bash "$TOP/tests/qemu/fetch-qemu10.sh" --print --quiet 2>/dev/null; }

# qt_migration_status NAME: QEMU's query-migrate "status" ("completed", ...)
qt_migration_status() {
	qt_qmp "$1" '{"execute":"query-migrate"}' 2>/dev/null | jq -r '.status // "none"'
}

# CPU seconds (user + system) of PID so far, from /proc/PID/stat.
qt_cpu() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v t="$tck" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' \
		"/proc/$1/stat" 2>/dev/null || echo 0
}
