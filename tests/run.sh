#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/run.sh — run test tiers, read their TAP, print one total.
#
#   tests/run.sh [--build DIR] [--san-build DIR] TIER...
#
# TIER is one of
#   unit   the unit tests and the session tests (no kernel TLS needed:
#          sessions take the userspace path), natively; with --san-build
#          also the ASan+UBSan build of them
#   ktls   the kernel-TLS and session tests natively (this kernel must
#          have tls)
#   vm     the kernel-TLS and session tests in a QEMU guest, once per
#          cached kernel
#          (tests/vm/fetch-kernels.sh --list)
#   fuzz   every libFuzzer target of `make fuzz` for FUZZ_SECONDS (30) each
#   package  the Debian packages built, linted and tried in a cached
#          bookworm root (tests/package/run.sh; root, skipped otherwise)
#   all    unit, package, then ktls when this kernel has the tls ULP,
#          else vm
#
# Results are read from TAP, not exit codes: a test binary that stops
# before its plan is complete counts the missing cases as failed.  With
# CI=true or KTLS_REQUIRE=1 a kernel-TLS test that skips counts as failed
# (the harness reports it so), and so does having no kernel to test on.
# The last line is "N passed, N failed, N skipped"; the exit status is 1
# when anything failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=build
san=
tiers=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--san-build) san=$2; shift 2 ;;
	-h|--help) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) tiers+=("$1"); shift ;;
	esac
done
[ ${#tiers[@]} -gt 0 ] || tiers=(all)
cd "$top" || exit 1

require=0
if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
	require=1
	export KTLS_REQUIRE=1
fi
logs=$build/test-logs
mkdir -p "$logs"
passed=0 failed=0 skipped=0

# Count one TAP stream (a file holding one or more harness runs).
count_tap() {
	local counts
	counts=$(awk '
		function close_run() {
			if (plan >= 0 && seen < plan) miss += plan - seen
			plan = -1; seen = 0
		}
		BEGIN { plan = -1 }
		/^TAP version/ { close_run(); next }
		/^1\.\.[0-9]+/ { plan = substr($1, 4) + 0; next }
		/^ok [0-9]+ .*# SKIP/ { skip++; seen++; next }
		/^ok [0-9]+ / { pass++; seen++; next }
		/^not ok [0-9]+ / { fail++; seen++; next }
		END { close_run(); printf "%d %d %d %d\n", pass, fail, skip, miss }
	' "$1")
	local p f s miss
	read -r p f s miss <<< "$counts"
	passed=$((passed + p))
	failed=$((failed + f + miss))
	skipped=$((skipped + s))
	if [ "$miss" -gt 0 ]; then
		echo "# $(basename "$1"): $miss planned test(s) never reported (crash or timeout): counted as failed"
	fi
}

# Run every binary in a directory, tee TAP into a log, count it.
run_bins() {	# name dir
	local name=$1 dir=$2 log=$logs/$1.tap bin
	: > "$log"
	if ! ls "$dir"/* >/dev/null 2>&1; then
		echo "# $name: no test binaries in $dir (run make first)"
		failed=$((failed + 1))
		return
	fi
	for bin in "$dir"/*; do
		[ -x "$bin" ] || continue
		echo "# == $name: $bin =="
		"$bin" 2>&1 | tee -a "$log"
	done
	count_tap "$log"
}

# A TAP-printing script, teed into a log and counted like the binaries.
run_script() {	# name command...
	local name=$1 log=$logs/$1.tap
	shift
	echo "# == $name: $* =="
	"$@" 2>&1 | tee "$log"
	count_tap "$log"
}

tier_unit() {
	local req=${KTLS_REQUIRE:-}

	# On a kernel without kTLS this tier is the userspace path by
	# definition: the tests expect it (KTLS_REQUIRE=1 would tell them to
	# expect the kernel path, as the kernel-TLS tiers do).
	native_ktls || unset KTLS_REQUIRE
	run_bins unit "$build/tests/unit"
	run_bins session "$build/tests/session"
	# the bench must not rot: one tiny pass of every mode this kernel can
	# run without kernel TLS (the guest tier runs the kTLS modes)
	if native_ktls; then
		run_script bench-smoke bench/smoke.sh --build "$build"
	else
		run_script bench-smoke bench/smoke.sh --build "$build" --no-ktls
	fi
	# a real QEMU migrated through the proxy and fd mode, under prefer
	# (the userspace path on a kernel without kTLS; the kTLS tiers run
	# the require cases)
	run_script qemu-native tests/qemu/run.sh --build "$build" native
	# make install into a stage: files, .pc, examples built against it,
	# man pages (rendering, options against --help), units
	run_script install tests/install/run.sh --build "$build"
	run_script cli tests/install/cli.sh --build "$build"
	run_script docs tests/install/docs.sh
	run_script sandbox tests/install/sandbox.sh --build "$build"
	# libvirt 9.0 migrating a running guest through the proxy, two
	# libvirtd in namespaces (tests/libvirt/run.sh)
	run_script libvirt tests/libvirt/run.sh --build "$build"
	if [ -n "$san" ]; then
		export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
		export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
		run_bins unit-asan-ubsan "$san/tests/unit"
		run_bins session-asan-ubsan "$san/tests/session"
		unset ASAN_OPTIONS UBSAN_OPTIONS
	fi
	[ -z "$req" ] || export KTLS_REQUIRE=$req
}

native_ktls() {
	"$build/ktls-migrate" probe >/dev/null 2>&1
}

tier_ktls() {
	echo "# kernel-TLS tests natively on $(uname -r)"
	"$build/ktls-migrate" probe | sed 's/^/# probe: /'
	# every kernel-TLS test fails on a kernel WARN/BUG/TLS splat it caused
	# (needs root for /dev/kmsg)
	[ "$(id -u)" = 0 ] && export KTM_KMSG_CHECK=1
	run_bins "ktls-native" "$build/tests/ktls"
	run_bins "session-native" "$build/tests/session"
	unset KTM_KMSG_CHECK
	run_script qemu-ktls tests/qemu/run.sh --build "$build" guest
	if [ "$(id -u)" = 0 ] && dmesg >/dev/null 2>&1; then
		dmesg | grep -E 'BUG|WARNING|Call Trace|lockdep' | tail -5 | sed 's/^/# dmesg: /'
	fi
}

tier_vm() {
	local kernels k rel log rc
	kernels=$(bash tests/vm/fetch-kernels.sh --list 2>/dev/null)
	if [ -z "$kernels" ]; then
		echo "# vm: no guest kernel cached; run 'make deps' (as root) to fetch them"
		if [ $require = 1 ]; then
			failed=$((failed + 1))
		else
			skipped=$((skipped + 1))
		fi
		return
	fi
	# the guest (HOME=/root) finds QEMU 10's cached root where the host
	# keeps it: tests/vm/run.sh passes KTM_* variables in
	export KTM_CACHE_DIR=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
	for k in $kernels; do
		rel=$(cat "$k/release" 2>/dev/null || basename "$k")
		log=$logs/vm-$rel.tap
		echo "# == vm: kernel $rel =="
		# The guest runs every kernel-TLS binary; TAP comes back on the
		# serial console.  Exit codes are ignored: the TAP is counted.
		# Under TCG a guest kernel now and then dies while booting
		# (before it prints its version): boot it again, up to 3 times.
		for attempt in 1 2 3; do
			bash tests/vm/run.sh --timeout "${KTM_VM_TIMEOUT:-1500}" "$k" -- \
				sh -c "export KTM_KMSG_CHECK=1;
				       '$build/ktls-migrate' probe | sed 's/^/# probe: /';
				       for b in '$build'/tests/ktls/* '$build'/tests/session/*; do \"\$b\"; done;
				       bench/smoke.sh --build '$build';
				       bash tests/qemu/run.sh --build '$build' guest" \
				2>&1 | tee "$log"
			rc=${PIPESTATUS[0]}
			grep -q '^# guest kernel:' "$log" && break
			echo "# vm $rel: the guest died while booting (attempt $attempt, exit $rc)"
		done
		count_tap "$log"
		if ! grep -q '^1\.\.' "$log"; then
			echo "# vm $rel: no test output (run.sh exit $rc): counted as failed"
			failed=$((failed + 1))
		fi
	done
}

for t in "${tiers[@]}"; do
	case $t in
	unit) tier_unit ;;
	ktls) tier_ktls ;;
	vm) tier_vm ;;
	fuzz) run_script fuzz scripts/fuzz.sh --build "$build" \
		--seconds "${FUZZ_SECONDS:-30}" ;;
	package) run_script package tests/package/run.sh ;;
	all)
		tier_unit
		run_script package tests/package/run.sh
		if native_ktls; then tier_ktls; else
			echo "# this kernel ($(uname -r)) has no kernel TLS: running the kernel-TLS tests in QEMU guests"
			tier_vm
		fi ;;
	*) echo "tests/run.sh: unknown tier '$t'" >&2; exit 2 ;;
	esac
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
