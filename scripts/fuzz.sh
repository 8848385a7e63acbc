#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/fuzz.sh: run every libFuzzer target of `make fuzz` for a bounded
# time on a copy of its seed corpus (fuzz/corpus/TARGET; the tree's copy
# is never written) and print TAP: one case per target, "not ok" when the
# target crashed, leaked, hit a sanitizer or an oracle (abort).  A crash
# input is kept in BUILD/fuzz/crashes/TARGET/ and named in the output.
#
#   scripts/fuzz.sh [--build DIR] [--seconds N] [--jobs N] [TARGET...]
#
# --seconds  per target (default 30; FUZZ_SECONDS overrides)
# --jobs     targets run at once (default 1)
# The CPU time used is printed at the end (user+sys of the fuzzers).
set -uo pipefail

cd "$(dirname "$0")/.."
build=build
secs=${FUZZ_SECONDS:-30}
jobs=1
targets=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--seconds) secs=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	-h|--help) sed -n '3,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) targets+=("$1"); shift ;;
	esac
done
bindir=$build/fuzz/bin
if [ ${#targets[@]} -eq 0 ]; then
	for b in "$bindir"/*; do
		[ -x "$b" ] && targets+=("$(basename "$b")")
	done
fi
echo "TAP version 13"
echo "1..${#targets[@]}"
if [ ${#targets[@]} -eq 0 ]; then
	echo "# no fuzz targets in $bindir: run make fuzz"
	exit 1
fi

run_one() {	# index target
	local i=$1 t=$2 work=$build/fuzz/corpus-run/$2 crashes=$build/fuzz/crashes/$2
	local log=$build/fuzz/logs/$2.log rc
	rm -rf "$work"
	mkdir -p "$work" "$crashes" "$(dirname "$log")"
	[ -d "fuzz/corpus/$t" ] && cp -r "fuzz/corpus/$t/." "$work/"
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	/usr/bin/time -f '%U %S' -o "$log.cpu" \
		"$bindir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
		-max_len=4096 -print_final_stats=1 \
		-artifact_prefix="$crashes/" "$work" > "$log" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "ok $i fuzz.$t # $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs in ${secs}s"
	else
		echo "not ok $i fuzz.$t (exit $rc)"
		grep -m3 -E 'ERROR:|SUMMARY:|Test unit written to' "$log" | sed 's/^/# /'
	fi
}

i=0
pids=()
for t in "${targets[@]}"; do
	i=$((i + 1))
	run_one "$i" "$t" > "$build/fuzz/logs.$i" 2>&1 &
	pids+=($!)
	if [ ${#pids[@]} -ge "$jobs" ]; then
		wait "${pids[0]}"
		pids=("${pids[@]:1}")
	fi
done
wait
mkdir -p "$build/fuzz/logs"
for j in $(seq 1 $i); do
	cat "$build/fuzz/logs.$j"
	rm -f "$build/fuzz/logs.$j"
done
awk '{ u += $1; s += $2 } END { printf "# fuzz CPU time: %.1f s (%.1f CPU-minutes)\n", u + s, (u + s) / 60 }' \
	"$build"/fuzz/logs/*.log.cpu
