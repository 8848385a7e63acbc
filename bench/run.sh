#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run.sh --build DIR [--out DIR] [-- BENCH-OPTIONS...]   (make bench)
#
# Run the comparison matrix natively with the already built DIR/ktls-migrate
# (this script builds nothing) and write
#   OUT/<host>-<date>.csv   every row: median/min/max, per-run MB/s, paths
#   OUT/<host>-<date>.md    the report: kernel, kTLS native/absent, CPU, date
#   OUT/<host>-<date>-mbps.png, -cpu.png   plots (gnuplot)
# OUT defaults to bench/results.  Defaults: 512 MiB per row, 5 interleaved
# runs, stopping early (never before 3) to stay inside a 780 s budget, so
# the whole thing ends in under 15 minutes on a 2-core machine.  Options
# after -- go to `ktls-migrate bench` and override these.
# gnuplot-nox is installed with apt when missing and we are root;
# otherwise the plots are skipped with the command to run.
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
	-h|--help) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case $build in /*) ;; *) build=$top/$build ;; esac
tool=$build/ktls-migrate
if [ ! -x "$tool" ]; then
	echo "bench/run.sh: $tool is missing; run make first" >&2
	exit 2
fi

if ! command -v gnuplot >/dev/null; then
	if [ "$(id -u)" = 0 ]; then
		echo "bench: installing gnuplot-nox for the plots" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q >&2 && apt-get install -y -q --no-install-recommends gnuplot-nox >&2 ||
			echo "bench: could not install gnuplot-nox; no plots" >&2
	else
		echo "bench: no gnuplot; plots skipped (as root: apt-get install gnuplot-nox)" >&2
	fi
fi

creds=$(mktemp -d)
trap 'rm -rf "$creds"' EXIT
"$top/scripts/make-creds.sh" "$creds" >/dev/null

mkdir -p "$out"
base=$out/$(hostname -s)-$(date -u +%Y-%m-%d-%H%M)
start=$(date +%s)
rc=0
"$tool" bench --creds "$creds" --size 512M --runs 5 --time-budget 780 \
	--csv "$base.csv" --md "$base.md" ${extra[@]+"${extra[@]}"} || rc=$?
if [ ! -s "$base.csv" ]; then
	echo "bench/run.sh: the bench wrote no results (exit status $rc)" >&2
	[ "$rc" != 0 ] || rc=1
	exit "$rc"
fi

if command -v gnuplot >/dev/null &&
	bash "$here/plot.sh" "$base.csv" "$base"; then
	{
		echo
		echo "## Plots"
		echo
		echo "![MB/s per mode]($(basename "$base")-mbps.png)"
		echo
		echo "![CPU seconds per GiB per mode, 1 channel]($(basename "$base")-cpu.png)"
	} >>"$base.md"
fi
echo "bench: $(($(date +%s) - start)) s; results in ${base#"$top"/}.{csv,md}" >&2
exit "$rc"
