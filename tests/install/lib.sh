# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# tests/install/lib.sh: the preamble the install and package tests share
# (tests/install/{run,cli,sandbox}.sh, tests/package/run.sh), sourced.
#   top              the tree's top; the working directory from here on
#   build_arg "$@"   [--build DIR] (default build) into $build, absolute
#   ok NAME [SKIP]   the next TAP line; under CI=true a skip is a failure
#                    (what it needs is part of make deps)
#   check NAME PROBLEMS  ok when PROBLEMS is empty, else "not ok" with
#                    each problem line as a comment
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$top" || exit 1
n=0

build_arg() {
	build=build
	while [ $# -gt 0 ]; do
		case $1 in
		--build) build=$2; shift 2 ;;
		*) echo "usage: $0 [--build DIR]" >&2; exit 2 ;;
		esac
	done
	case $build in /*) ;; *) build=$top/$build ;; esac
}

ok() {
	n=$((n + 1))
	if [ -n "${2:-}" ] && [ "${CI:-}" = true ]; then
		echo "not ok $n $1 # $2"
	else
		echo "ok $n $1${2:+ # SKIP $2}"
	fi
}

check() {
	if [ -z "$2" ]; then ok "$1"; else
		n=$((n + 1)); echo "not ok $n $1"; printf '%s\n' "${2%$'\n'}" | sed 's/^/# /'
	fi
}
