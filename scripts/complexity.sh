#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/complexity.sh (make analyze): no function in lib/, ktls/ or
# tools/ longer than MAX_LINES (60) lines or with more than MAX_DECISIONS
# (15) decision points, measured by pmccabe (Debian package pmccabe):
# lines are the function's lines from its first to its closing brace,
# decision points are pmccabe's modified McCabe number minus one (if,
# loops, ?:, && and ||; a switch counts once, however many cases).
#
# Functions over the bound today are listed with their size in
# scripts/complexity-allow ("FILE FUNCTION LINES DECISIONS"): they may
# shrink, never grow, and each one split should leave the list.  Any
# other function over the bound fails.  --strict (ANALYZE_STRICT=1 in
# make analyze) also fails while the list names any function: the bound
# with no exception, as issue 9 asks once the last ones are split.
#
#   scripts/complexity.sh [--all] [--strict]
#     --all: also print every allowed one
set -uo pipefail

cd "$(dirname "$0")/.."
max_lines=${MAX_LINES:-60}
max_dec=${MAX_DECISIONS:-15}
allow=scripts/complexity-allow
all=0
strict=0
for a in "$@"; do
	case $a in
	--all) all=1 ;;
	--strict) strict=1 ;;
	*) echo "usage: $0 [--all] [--strict]" >&2; exit 2 ;;
	esac
done

if ! command -v pmccabe >/dev/null; then
	echo "analyze: pmccabe is not installed (apt-get install pmccabe, or make deps)" >&2
	exit 1
fi

pmccabe lib/*.c ktls/*.c tools/*.c 2>/dev/null |
awk -v ml="$max_lines" -v md="$max_dec" -v all="$all" -v allow="$allow" \
    -v strict="$strict" '
BEGIN {
	while ((getline line < allow) > 0) {
		if (line ~ /^#/ || line ~ /^[ \t]*$/) continue
		split(line, f, " ")
		key = f[1] " " f[2]
		al[key] = f[3]; ad[key] = f[4]; seen[key] = 0
	}
}
{
	# mod trad statements first-line lines file(line): name
	dec = $1 - 1; lines = $5
	loc = $6; sub(/:$/, "", loc)
	file = loc; sub(/\(.*$/, "", file)
	name = $7
	key = file " " name
	if (lines <= ml && dec <= md) {
		if (key in al) seen[key] = 2	# now inside the bound
		next
	}
	if (key in al) {
		seen[key] = 1
		if (lines > al[key] || dec > ad[key]) {
			printf "analyze: %s: %s grew to %d lines, %d decision points (listed at %d, %d; bound %d, %d): split it\n", loc, name, lines, dec, al[key], ad[key], ml, md
			bad++
		} else if (all) {
			printf "analyze: %s: %s %d lines, %d decision points (allowed for now)\n", loc, name, lines, dec
		}
		next
	}
	printf "analyze: %s: %s has %d lines and %d decision points (bound: %d lines, %d decision points): split it\n", loc, name, lines, dec, ml, md
	bad++
}
END {
	for (k in seen) {
		if (seen[k] == 2)
			printf "analyze: %s is inside the bound now: remove it from %s\n", k, allow
		else if (seen[k] == 0)
			printf "analyze: %s is gone: remove it from %s\n", k, allow
		if (seen[k] != 1) stale++
	}
	n = 0; for (k in al) n++
	printf "analyze: %d function(s) over the bound, %d allowed for now, %d stale entr%s\n", bad + 0, n - stale, stale + 0, stale == 1 ? "y" : "ies"
	if (strict && n > 0)
		printf "analyze: --strict: %s still grandfathers %d function(s): split them and remove their lines (the bound has no exception)\n", allow, n
	exit bad || stale || (strict && n > 0) ? 1 : 0
}'
