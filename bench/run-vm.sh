#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run-vm.sh --build DIR [--out DIR] [-- BENCH-OPTIONS...]  (make bench-vm)
#
# Run the kernel-TLS rows (ktls-* and the openssl-ktls peer, every cipher,
# 1 and 2 channels, 8 MiB, one run) inside a QEMU guest on every cached
# Debian kernel (tests/vm/fetch-kernels.sh --list) with
# `ktls-migrate bench --functional`, and write
#   OUT/<host>-<date>-guest-<kernel>-functional.csv and .md
# marked "functional-only (emulated)".  They show that each kernel-TLS path
# moves verified data on a real kTLS kernel; they hold no speed or CPU
# figure, because the guest CPU is emulated (TCG), and they are never
# merged into the native results.  Builds nothing; about a minute per
# kernel.  Exit status 1 when a row failed or a guest did not finish.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=build
out=$here/results
extra=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=${2:?--build needs a directory}; shift 2 ;;
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	--) shift; extra=("$@"); break ;;
	-h|--help) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/run-vm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$PWD/$out ;; esac
if [ ! -x "$build/ktls-migrate" ]; then
	echo "bench/run-vm.sh: $build/ktls-migrate is missing; run make first" >&2
	exit 2
fi
mapfile -t kernels < <(bash "$top/tests/vm/fetch-kernels.sh" --list)
if [ ${#kernels[@]} -eq 0 ]; then
	echo "bench/run-vm.sh: no cached guest kernel; run make deps" >&2
	exit 2
fi
mkdir -p "$out"
stamp=$(hostname -s)-$(date -u +%Y-%m-%d-%H%M)

# The guest sees the host's / read-only and the current directory
# read-write at the same path: run from $out so the results land there;
# its /tmp is a fresh tmpfs for the throwaway credentials.
# shellcheck disable=SC2016 # expanded by the guest's bash
guest_cmd='set -e
scripts=$1; tool=$2; base=$3; shift 3
"$scripts/make-creds.sh" /tmp/creds >/dev/null
exec "$tool" bench --functional --creds /tmp/creds \
	--modes ktls,openssl-ktls --size 8M --runs 1 --channels 1,2 \
	--no-ceiling --csv "$base.csv" --md "$base.md" "$@"'

rc=0
for k in "${kernels[@]}"; do
	rel=$(cat "$k/release" 2>/dev/null || basename "$k")
	base=$out/$stamp-guest-$rel-functional
	start=$(date +%s)
	echo "bench-vm: $rel (TCG guest, functional-only)" >&2
	(cd "$out" && bash "$top/tests/vm/run.sh" --timeout 900 "$k" -- \
		bash -c "$guest_cmd" guest "$top/scripts" "$build/ktls-migrate" \
		"$base" ${extra[@]+"${extra[@]}"}) || rc=1
	if [ -s "$base.md" ]; then
		{
			echo
			echo "Produced by bench/run-vm.sh on $(hostname -s): guest kernel $rel" \
				"booted under QEMU TCG (emulated CPU).  Functional-only:" \
				"never quote these rows as speeds; see docs/performance.md."
		} >>"$base.md"
	else
		rc=1
	fi
	echo "bench-vm: $rel: $(($(date +%s) - start)) s; ${base#"$top"/}.{csv,md}" >&2
done
exit "$rc"
