#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/complexity.sh (make analyze): no function in lib/, ktls/ or
# tools/ longer than MAX_LINES (60) lines or with more than MAX_DECISIONS
# (15) decision points, measured by pmccabe (Debian package pmccabe):
# lines are the function's lines from its first to its closing brace,
# decision points are pmccabe's modified McCabe number minus one (if,
# loops, ?:, && and ||; a switch counts once, however many cases).
# There is no exception list: a function over the bound fails the build.
#
#   scripts/complexity.sh [--all]
#     --all: also print the largest functions inside the bound
set -uo pipefail

cd "$(dirname "$0")/.."
max_lines=${MAX_LINES:-60}
max_dec=${MAX_DECISIONS:-15}
all=0
for a in "$@"; do
	case $a in
	--all) all=1 ;;
	*) echo "usage: $0 [--all]" >&2; exit 2 ;;
	esac
done

if ! command -v pmccabe >/dev/null; then
	echo "analyze: pmccabe is not installed (apt-get install pmccabe, or make deps)" >&2
	exit 1
fi

pmccabe lib/*.c ktls/*.c tools/*.c 2>/dev/null |
awk -v ml="$max_lines" -v md="$max_dec" -v all="$all" '
{
	# mod trad statements first-line lines file(line): name
	dec = $1 - 1; lines = $5
	loc = $6; sub(/:$/, "", loc)
	name = $7
	n++
	if (lines <= ml && dec <= md) {
		if (all && (lines > ml * 3 / 4 || dec > md * 3 / 4))
			printf "analyze: %s: %s %d lines, %d decision points\n", loc, name, lines, dec
		next
	}
	printf "analyze: %s: %s has %d lines and %d decision points (bound: %d lines, %d decision points): split it\n", loc, name, lines, dec, ml, md
	bad++
}
END {
	printf "analyze: %d of %d function(s) over the bound (%d lines, %d decision points)\n", bad + 0, n + 0, ml, md
	exit bad ? 1 : 0
}'
