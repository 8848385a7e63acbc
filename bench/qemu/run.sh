#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/qemu/run.sh [--build DIR] [--size MIB] [--runs N] [--out DIR] [--only LIST]
#                   [--versions LIST]
#
# Migrate a paused QEMU guest whose RAM (a memory-backend-file, random data,
# no zero pages) is SIZE MiB, N times each way, interleaved (run 1 of every
# version and variant, then run 2, ...), on this host, with each QEMU
# version of --versions (default "7.2,10": the system's QEMU and Debian 13's
# from tests/qemu/fetch-qemu10.sh, when cached):
#
#   plain-unix   QEMU to QEMU over a unix socket, no encryption
#   plain-tcp    the same over loopback TCP
#   qemu-tls     QEMU's built-in TLS (GnuTLS): tls-creds-x509 + tls-creds
#   proxy        QEMU -> unix -> ktls-migrate proxy source -> TLS over
#                loopback TCP -> proxy dest -> unix -> QEMU; kernel TLS
#                where the kernel has it, else the userspace fallback
#   fd           ktls-migrate qemu-send / qemu-recv (fd mode; --ktls=prefer:
#                the kernel socket where the kernel has kTLS, else a
#                socketpair and userspace TLS in the command)
#   mixed-to     QEMU -> proxy source -> a destination QEMU doing its own
#                TLS (--peer qemu-tls): an upgraded host to an old one
#   mixed-from   a source QEMU doing its own TLS -> proxy dest -> QEMU
#   stunnel      QEMU -> tcp -> stunnel client -> TLS -> stunnel server ->
#                tcp -> QEMU (when stunnel4 is installed)
#
# One credentials directory (scripts/make-creds.sh) serves all TLS variants,
# all pinned to TLS 1.3 AES-256-GCM (GnuTLS's TLS 1.3 default): the proxy
# and fd mode with --cipher aes-gcm-256, stunnel with TLS_AES_256_GCM_SHA384,
# QEMU's tls-creds-x509 with a GnuTLS priority string.
# Throughput is RAM size / QEMU's total-time (source side), in MB/s
# (10^6).  CPU is user+system seconds from /proc/PID/stat of every process
# involved (both QEMUs, both proxy ends / stunnels) between `migrate` and
# "completed" (fd mode: the whole qemu-send / qemu-recv run), per GiB of RAM.  The table gives medians and ratios of
# medians from this one invocation, and goes to
# OUT/qemu-<host>-<date>.md (OUT defaults to bench/results) and stdout.
#
# Defaults: 2048 MiB, 3 runs; about 6 minutes on the 2-core dev machine.
# RAM files live in /dev/shm (KTM_QEMU_TMP overrides): 2 x SIZE.
# Not a test: it asserts nothing, except that every migration completed.
set -uo pipefail
# set by qt_qemu and qt_proxy (printf -v NAME_pid / NAME_addr)
src_pid='' dst_pid='' ps_pid='' pd_pid='' pd_addr=''

here=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$here/../.." && pwd)
BUILD=$TOP/build
size=2048
runs=3
out=$TOP/bench/results
only="plain-unix,plain-tcp,qemu-tls,proxy,fd,mixed-to,mixed-from,stunnel"
versions_arg="7.2,10"
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "$2" && pwd) || exit 2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	--versions) versions_arg=$2; shift 2 ;;
	-h|--help) sed -n '3,46p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/qemu/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
[[ $size =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ ]] || {
	echo "bench/qemu/run.sh: --size and --runs take positive numbers" >&2; exit 2; }
TOOL=$BUILD/ktls-migrate
[ -x "$TOOL" ] || { echo "bench/qemu/run.sh: $TOOL is missing; run make" >&2; exit 2; }

IFS=, read -r -a variants <<< "$only"
if [[ ,$only, == *,stunnel,* ]] && ! command -v stunnel4 >/dev/null; then
	echo "# stunnel4 not installed (apt-get install stunnel4): no stunnel row" >&2
	variants=("${variants[@]/stunnel/}")
fi

tmp=${KTM_QEMU_TMP:-/dev/shm}
WORK=$(mktemp -d "$tmp/ktm-qemu-bench.XXXXXX") || exit 1
. "$TOP/tests/qemu/lib.sh"
trap qt_cleanup EXIT
trap 'exit 130' INT TERM

# versions: "7.2" is the system's QEMU ($QEMU_BIN), "10" the cached one
IFS=, read -r -a versions <<< "$versions_arg"
declare -A qbin
for ver in "${versions[@]}"; do
	case $ver in
	7.2) qbin[$ver]=$QEMU_BIN ;;
	10) qbin[$ver]=$(qt_qemu10) || {
		echo "bench/qemu/run.sh: QEMU 10 is not cached (run tests/qemu/fetch-qemu10.sh as root)" >&2
		exit 2; } ;;
	*) echo "bench/qemu/run.sh: --versions takes 7.2 and/or 10, not '$ver'" >&2; exit 2 ;;
	esac
done
# the same cipher everywhere: TLS 1.3 AES-256-GCM
gnutls_prio="NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM"

say() { printf '# %s\n' "$*" >&2; }

free_port() {
	perl -MIO::Socket::INET -e \
		'print IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1)->sockport, "\n"'
}

bash "$TOP/scripts/make-creds.sh" "$WORK/creds" >/dev/null || exit 1
say "filling $size MiB of random guest RAM"
qt_fill_ram "$WORK/src.ram" "$size" nozero || exit 1
# The destination file is written once with zeros and reused: every run then
# finds its pages allocated, so page allocation (slow and erratic in these
# VMs: tmpfs clears a page at its first touch) does not land in any run.
dd if=/dev/zero of="$WORK/dst.ram" bs=1M count="$size" status=none || exit 1

stunnel_conf() {	# NAME client|server ACCEPT CONNECT
	local c=$WORK/creds
	{
		echo "foreground = yes"
		echo "pid ="
		echo "output = $WORK/$1.log"
		echo "[mig]"
		if [ "$2" = client ]; then
			echo "client = yes"
			echo "cert = $c/client-cert.pem"
			echo "key = $c/client-key.pem"
			echo "checkHost = localhost"
		else
			echo "cert = $c/server-cert.pem"
			echo "key = $c/server-key.pem"
		fi
		echo "CAfile = $c/ca-cert.pem"
		echo "verifyChain = yes"
		echo "sslVersionMin = TLSv1.3"
		echo "ciphersuites = TLS_AES_256_GCM_SHA384"
		echo "accept = $3"
		echo "connect = $4"
	} > "$WORK/$1.conf"
}

# fd_run: qemu-recv and qemu-send, each timed by the shell (user and
# system seconds of the whole command in $WORK/{recv,send}.time)
fd_run() {
	local addr c=(--creds "$WORK/creds" --ktls prefer --cipher aes-gcm-256) TIMEFORMAT='%U %S'
	{ time "$TOOL" qemu-recv --qmp "$WORK/dst.qmp" --listen 127.0.0.1:0 "${c[@]}" \
		--accept-timeout 60 > "$WORK/recv.out" 2> "$WORK/recv.err"; } 2> "$WORK/recv.time" &
	local rpid=$!
	qt_track $rpid
	qt_wait_line "$WORK/recv.out" '^listening on ' 30 || return 1
	addr=$(sed -n 's/^listening on //p' "$WORK/recv.out")
	{ time "$TOOL" qemu-send --qmp "$WORK/src.qmp" --connect "$addr" "${c[@]}" \
		> "$WORK/send.out" 2> "$WORK/send.err"; } 2> "$WORK/send.time" || return 1
	wait "$rpid" 2>/dev/null
	perl "$QMP_PL" --wait-migrate 60 "$WORK/src.qmp" > "$WORK/mig.json"
}

cpu_pid() { if [ "$1" = - ]; then echo -; else qt_cpu "$1"; fi; }

# cpu_of FILE: user+system seconds from a "%U %S" time line
cpu_of() { awk '{ printf "%.2f\n", $1 + $2 }' "$1" 2>/dev/null; }

# run_one VERSION VARIANT: one migration; prints "MBPS CPU_SRC CPU_DST CPU_H1 CPU_H2"
run_one() {
	local ver=$1 v=$2 uri duri helpers=() p1 p2 p3 c0=() c1=() pid i ms
	local src_extra=() dst_extra=() tls_s tls_d
	local QT_BIN=${qbin[$ver]}
	rm -f "$WORK"/*.qmp "$WORK"/*.sock "$WORK"/*.out "$WORK"/*.err "$WORK"/*.time
	tls_s=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=client,priority=$gnutls_prio")
	tls_d=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=server,priority=$gnutls_prio")
	case $v in
	qemu-tls) src_extra=("${tls_s[@]}"); dst_extra=("${tls_d[@]}") ;;
	mixed-to) dst_extra=("${tls_d[@]}") ;;
	mixed-from) src_extra=("${tls_s[@]}") ;;
	esac
	qt_qemu src "$WORK/src.ram" "$size" "${src_extra[@]}" || return 1
	qt_qemu dst "$WORK/dst.ram" "$size" -incoming defer "${dst_extra[@]}" || return 1
	qt_params src '"max-bandwidth":107374182400' || return 1
	if [ "$v" = fd ]; then
		c0=("$(qt_cpu "$src_pid")" "$(qt_cpu "$dst_pid")")
		fd_run || { say "$ver $v: $(cat "$WORK/send.err" "$WORK/recv.err" 2>/dev/null | tr '\n' ' ')"; qt_kill_all; return 1; }
		c1=("$(qt_cpu "$src_pid")" "$(qt_cpu "$dst_pid")")
		c0+=(0 0)
		c1+=("$(cpu_of "$WORK/send.time")" "$(cpu_of "$WORK/recv.time")")
		ms=$(jq -r '."total-time"' "$WORK/mig.json")
		qt_kill_all
		cpu_line "$ms" "${c0[*]}" "${c1[*]}"
		return
	fi
	case $v in
	plain-unix)
		duri=unix:$WORK/dst.sock; uri=$duri ;;
	plain-tcp)
		duri=tcp:127.0.0.1:$(free_port); uri=$duri ;;
	qemu-tls)
		qt_params src '"tls-creds":"tls0","tls-hostname":"localhost"' || return 1
		qt_params dst '"tls-creds":"tls0"' || return 1
		duri=tcp:127.0.0.1:$(free_port); uri=$duri ;;
	proxy)
		duri=unix:$WORK/dst.sock; uri=unix:$WORK/src.sock
		qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.sock" \
			--creds "$WORK/creds" --cipher aes-gcm-256 || return 1
		qt_proxy ps source --unix "$WORK/src.sock" --connect "$pd_addr" \
			--creds "$WORK/creds" --cipher aes-gcm-256 || return 1
		helpers=("$ps_pid" "$pd_pid") ;;
	mixed-to)
		qt_params dst '"tls-creds":"tls0"' || return 1
		duri=tcp:127.0.0.1:$(free_port); uri=unix:$WORK/src.sock
		qt_proxy ps source --unix "$WORK/src.sock" --connect "${duri#tcp:}" \
			--creds "$WORK/creds" --cipher aes-gcm-256 --peer qemu-tls || return 1
		helpers=("$ps_pid") ;;
	mixed-from)
		qt_params src '"tls-creds":"tls0","tls-hostname":"localhost"' || return 1
		duri=unix:$WORK/dst.sock
		qt_proxy pd dest --listen 127.0.0.1:0 --unix "$WORK/dst.sock" \
			--creds "$WORK/creds" --cipher aes-gcm-256 --peer qemu-tls || return 1
		uri=tcp:$pd_addr
		helpers=(- "$pd_pid") ;;
	stunnel)
		p1=$(free_port); p2=$(free_port); p3=$(free_port)
		duri=tcp:127.0.0.1:$p3; uri=tcp:127.0.0.1:$p1
		stunnel_conf st-dst server "127.0.0.1:$p2" "127.0.0.1:$p3"
		stunnel_conf st-src client "127.0.0.1:$p1" "127.0.0.1:$p2"
		for i in st-dst st-src; do
			stunnel4 "$WORK/$i.conf" >/dev/null 2>&1 &
			pid=$!
			qt_track "$pid"
			helpers+=("$pid")
		done
		for i in "$p1" "$p2"; do	# wait until both listen
			for _ in $(seq 50); do
				perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new("127.0.0.1:'"$i"'")' && break
				sleep 0.1
			done
		done ;;
	esac
	qt_qmp dst "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$duri\"}}" >/dev/null || return 1
	# mixed-to: the proxy source connects only when QEMU does; its port
	# must be listening first (migrate-incoming returned: it is)
	for pid in "$src_pid" "$dst_pid" "${helpers[@]}"; do c0+=("$(cpu_pid "$pid")"); done
	qt_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$uri\"}}" >/dev/null || return 1
	if ! perl "$QMP_PL" --wait-migrate 600 "$WORK/src.qmp" > "$WORK/mig.json"; then
		say "$ver $v: migration did not complete: $(jq -c '{status, "error-desc"}' "$WORK/mig.json" 2>/dev/null) $(tail -n 2 "$WORK/dst.log" "$WORK"/p?.err 2>/dev/null | tr '\n' ' ')"
		qt_kill_all
		return 1
	fi
	for pid in "$src_pid" "$dst_pid" "${helpers[@]}"; do c1+=("$(cpu_pid "$pid")"); done
	ms=$(jq -r '."total-time"' "$WORK/mig.json")
	qt_kill_all
	cpu_line "$ms" "${c0[*]}" "${c1[*]}"
}

# cpu_line MS "CPU0..." "CPU1...": MB/s and CPU s/GiB per process ("-" for
# a process the variant does not have)
cpu_line() {
	awk -v mib="$size" -v ms="$1" -v a="$2" -v b="$3" 'BEGIN {
		n = split(a, x, " "); split(b, y, " ")
		gib = mib / 1024
		printf "%.0f", mib * 1048576 / 1e6 / (ms / 1000)
		for (i = 1; i <= 4; i++)
			printf " %s", i <= n && x[i] != "-" ? sprintf("%.2f", (y[i] - x[i]) / gib) : "-"
		printf "\n"
	}'
}

declare -A results
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
	for ver in "${versions[@]}"; do
		for v in "${variants[@]}"; do
			[ -n "$v" ] || continue
			line=$(run_one "$ver" "$v") || line="fail"
			say "run $r QEMU $ver $v: $line (MB/s, CPU s/GiB: src QEMU, dst QEMU, helpers)"
			results[$ver/$v]+="$line;"
		done
	done
done

median() {	# numbers on stdin -> median
	sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit }
		if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

col() {	# VERSION/VARIANT FIELD -> median of that field over the good runs
	tr ';' '\n' <<< "${results[$1]}" | awk -v f="$2" 'NF >= 5 && $f != "-" { print $f }' | median
}

helpers() {	# VERSION/VARIANT -> median over the good runs of src + dst helper CPU
	tr ';' '\n' <<< "${results[$1]}" |
		awk 'NF >= 5 && $4 != "-" && $5 != "-" { printf "%.2f\n", $4 + $5 }' | median
}

ratio() {	# A B -> A/B with 2 decimals, "-" when either is missing
	if [ "$1" = - ] || [ "$2" = - ] || [ -z "$2" ]; then echo -; return; fi
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

host=$(hostname -s 2>/dev/null || hostname)
date=$(date +%Y-%m-%d-%H%M)
mkdir -p "$out"
file=$out/qemu-$host-$date.md
ktls_state=$("$TOOL" probe 2>/dev/null | head -n 1)
vers_text=
for ver in "${versions[@]}"; do
	vers_text+="${vers_text:+, }$("${qbin[$ver]}" --version | head -n 1 | awk '{print $4}')"
done
{
	echo "# QEMU migration: plain, QEMU TLS, ktls-migrate proxy, fd mode, mixed pairs, stunnel"
	echo
	echo "Host $host, kernel $(uname -r), $(nproc) CPUs, QEMU $vers_text, $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo "Paused guest (-S), ${size} MiB of random RAM in a memory-backend-file (/dev/shm), loopback only."
	echo "Every TLS row: TLS 1.3 AES-256-GCM (proxy/fd --cipher aes-gcm-256, stunnel TLS_AES_256_GCM_SHA384, QEMU priority $gnutls_prio)."
	echo "$runs interleaved runs per row (versions and variants in turn); medians; ratios are of medians from this run, within each QEMU version."
	echo "Proxy data path here: ${ktls_state:-unknown}."
	echo
	echo "Load average at the start: $load0; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 shared CPUs: MB/s spread, CPU s/GiB much less)."
	echo
	echo "| QEMU | variant | MB/s (median) | x plain-unix | x qemu-tls | x stunnel | CPU s/GiB src QEMU | dst QEMU | src helper | dst helper | both helpers | x stunnel's helpers | runs MB/s |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	for ver in "${versions[@]}"; do
		plain=$(col "$ver/plain-unix" 1)
		qtls=$(col "$ver/qemu-tls" 1)
		stun=$(col "$ver/stunnel" 1)
		stun_h=$(helpers "$ver/stunnel")
		for v in "${variants[@]}"; do
			[ -n "$v" ] || continue
			k=$ver/$v
			m=$(col "$k" 1)
			h=$(helpers "$k")
			all=$(tr ';' '\n' <<< "${results[$k]}" | awk 'NF { printf "%s%s", sep, $1; sep = ", " }')
			echo "| $ver | $v | $m | $(ratio "$m" "$plain") | $(ratio "$m" "$qtls") | $(ratio "$m" "$stun") | $(col "$k" 2) | $(col "$k" 3) | $(col "$k" 4) | $(col "$k" 5) | $h | $(ratio "$h" "$stun_h") | $all |"
		done
	done
	echo
	echo "both helpers: median over the runs of source + destination helper CPU s/GiB (the proxy's two ends, stunnel's two ends); x stunnel's helpers: that against stunnel's, same version, same run."
	echo
	echo "Helpers: proxy = ktls-migrate proxy source / dest; fd = qemu-send / qemu-recv (whole command);"
	echo "mixed-to = proxy source only (the destination QEMU does TLS); mixed-from = proxy dest only;"
	echo "stunnel = stunnel4 client / server."
	echo "Reproduce: \`bench/qemu/run.sh --build build --size $size --runs $runs --versions $versions_arg\`."
} > "$file"
cat "$file"
say "written to $file"
