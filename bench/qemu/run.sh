#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/qemu/run.sh [--build DIR] [--size MIB] [--runs N] [--out DIR] [--only LIST]
#
# Migrate a paused QEMU guest whose RAM (a memory-backend-file, random data,
# no zero pages) is SIZE MiB, N times each way, interleaved (run 1 of every
# variant, then run 2, ...), on this host:
#
#   plain-unix   QEMU to QEMU over a unix socket, no encryption
#   plain-tcp    the same over loopback TCP
#   qemu-tls     QEMU's built-in TLS (GnuTLS): tls-creds-x509 + tls-creds
#   proxy        QEMU -> unix -> ktls-migrate proxy source -> TLS over
#                loopback TCP -> proxy dest -> unix -> QEMU; kernel TLS
#                where the kernel has it, else the userspace fallback
#   stunnel      QEMU -> tcp -> stunnel client -> TLS -> stunnel server ->
#                tcp -> QEMU (when stunnel4 is installed)
#
# One credentials directory (scripts/make-creds.sh) serves all TLS variants.
# The proxy and stunnel use TLS 1.3 AES-128-GCM; QEMU's GnuTLS picks its own
# default.  Throughput is RAM size / QEMU's total-time (source side), in MB/s
# (10^6).  CPU is user+system seconds from /proc/PID/stat of every process
# involved (both QEMUs, both proxy ends / stunnels) between `migrate` and
# "completed", per GiB of RAM.  The table gives medians and ratios of
# medians from this one invocation, and goes to
# OUT/qemu-<host>-<date>.md (OUT defaults to bench/results) and stdout.
#
# Defaults: 4096 MiB, 3 runs; about 2.5 minutes on the 2-core dev machine.
# RAM files live in /dev/shm (KTM_QEMU_TMP overrides): 2 x SIZE.
# Not a test: it asserts nothing, except that every migration completed.
set -uo pipefail
# set by qt_qemu and qt_proxy (printf -v NAME_pid / NAME_addr)
src_pid='' dst_pid='' ps_pid='' pd_pid='' pd_addr=''

here=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$here/../.." && pwd)
BUILD=$TOP/build
size=4096
runs=3
out=$TOP/bench/results
only="plain-unix,plain-tcp,qemu-tls,proxy,stunnel"
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "$2" && pwd) || exit 2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	-h|--help) sed -n '3,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
		echo "ciphersuites = TLS_AES_128_GCM_SHA256"
		echo "accept = $3"
		echo "connect = $4"
	} > "$WORK/$1.conf"
}

# run_one VARIANT: one migration; prints "MBPS CPU_SRC CPU_DST CPU_H1 CPU_H2"
run_one() {
	local v=$1 uri duri helpers=() p1 p2 p3 c0=() c1=() pid i ms
	local src_extra=() dst_extra=()
	rm -f "$WORK"/*.qmp "$WORK"/*.sock
	case $v in
	qemu-tls)
		src_extra=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=client")
		dst_extra=(-object "tls-creds-x509,id=tls0,dir=$WORK/creds,endpoint=server")
		;;
	esac
	qt_qemu src "$WORK/src.ram" "$size" "${src_extra[@]}" || return 1
	qt_qemu dst "$WORK/dst.ram" "$size" -incoming defer "${dst_extra[@]}" || return 1
	qt_params src '"max-bandwidth":107374182400' || return 1
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
			--creds "$WORK/creds" || return 1
		qt_proxy ps source --unix "$WORK/src.sock" --connect "$pd_addr" \
			--creds "$WORK/creds" || return 1
		helpers=("$ps_pid" "$pd_pid") ;;
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
	for pid in "$src_pid" "$dst_pid" "${helpers[@]}"; do c0+=("$(qt_cpu "$pid")"); done
	qt_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$uri\"}}" >/dev/null || return 1
	if ! perl "$QMP_PL" --wait-migrate 600 "$WORK/src.qmp" > "$WORK/mig.json"; then
		say "$v: migration did not complete: $(jq -c '{status, "error-desc"}' "$WORK/mig.json" 2>/dev/null) $(tail -n 2 "$WORK/dst.log" "$WORK"/p?.err 2>/dev/null | tr '\n' ' ')"
		qt_kill_all
		return 1
	fi
	for pid in "$src_pid" "$dst_pid" "${helpers[@]}"; do c1+=("$(qt_cpu "$pid")"); done
	ms=$(jq -r '."total-time"' "$WORK/mig.json")
	qt_kill_all
	awk -v mib="$size" -v ms="$ms" -v a="${c0[*]}" -v b="${c1[*]}" 'BEGIN {
		n = split(a, x, " "); split(b, y, " ")
		gib = mib / 1024
		printf "%.0f", mib * 1048576 / 1e6 / (ms / 1000)
		for (i = 1; i <= 4; i++)
			printf " %s", i <= n ? sprintf("%.2f", (y[i] - x[i]) / gib) : "-"
		printf "\n"
	}'
}

declare -A results
for ((r = 1; r <= runs; r++)); do
	for v in "${variants[@]}"; do
		[ -n "$v" ] || continue
		line=$(run_one "$v") || line="fail"
		say "run $r $v: $line (MB/s, CPU s/GiB: src QEMU, dst QEMU, helpers)"
		results[$v]+="$line;"
	done
done

median() {	# numbers on stdin -> median
	sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit }
		if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

col() {	# VARIANT FIELD -> median of that field over the variant's good runs
	tr ';' '\n' <<< "${results[$1]}" | awk -v f="$2" 'NF >= 5 && $f != "-" { print $f }' | median
}

host=$(hostname -s 2>/dev/null || hostname)
date=$(date +%Y-%m-%d-%H%M)
mkdir -p "$out"
file=$out/qemu-$host-$date.md
plain=$(col plain-unix 1)
stun=$(col stunnel 1)
ktls_state=$("$TOOL" probe 2>/dev/null | head -n 1)
{
	echo "# QEMU migration: plain, QEMU TLS, ktls-migrate proxy, stunnel"
	echo
	echo "Host $host, kernel $(uname -r), $(nproc) CPUs, QEMU $("$QEMU_BIN" --version | head -n 1 | awk '{print $4}'), $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo "Paused guest (-S), ${size} MiB of random RAM in a memory-backend-file (/dev/shm), loopback only."
	echo "$runs interleaved runs per row; medians; ratios are of medians from this run."
	echo "Proxy data path here: ${ktls_state:-unknown}."
	echo
	echo "| variant | MB/s (median) | x plain-unix | x stunnel | CPU s/GiB src QEMU | dst QEMU | src helper | dst helper | runs MB/s |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
	for v in "${variants[@]}"; do
		[ -n "$v" ] || continue
		m=$(col "$v" 1)
		rp=-; rs=-
		[ "$m" != - ] && [ "$plain" != - ] && rp=$(awk -v a="$m" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')
		[ "$m" != - ] && [ "$stun" != - ] && rs=$(awk -v a="$m" -v b="$stun" 'BEGIN { printf "%.2f", a / b }')
		all=$(tr ';' '\n' <<< "${results[$v]}" | awk 'NF { printf "%s%s", sep, $1; sep = ", " }')
		echo "| $v | $m | $rp | $rs | $(col "$v" 2) | $(col "$v" 3) | $(col "$v" 4) | $(col "$v" 5) | $all |"
	done
	echo
	echo "Helpers: proxy = ktls-migrate proxy source / dest; stunnel = stunnel4 client / server."
	echo "Reproduce: \`bench/qemu/run.sh --build build --size $size --runs $runs\`."
} > "$file"
cat "$file"
say "written to $file"
