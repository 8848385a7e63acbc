#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/install/docs.sh: the documentation stands alone.  TAP.
#
#   docs.no_outside_notes  no tracked file cites a design file or a path
#                          that is not in the repository (DESIGN.md, the
#                          shared notes, /work/...)
#   docs.links_resolve     every relative link in a tracked Markdown file
#                          points at a file or directory of the tree
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.." || exit 1
echo "TAP version 13"
echo "1..2"
# this file names the patterns it looks for; results files are data
files=$({ git ls-files 2>/dev/null || find . -path ./.git -prune -o -path ./build -prune -o -type f -print | sed 's|^\./||'; } |
	grep -v -e '^tests/install/docs.sh$' -e '^bench/results/')
# shellcheck disable=SC2086 # one path per word
out=$(grep -n -I -E 'DESIGN\.md|shared notes|/work/' $files 2>/dev/null)
if [ -z "$out" ]; then echo "ok 1 docs.no_outside_notes"; else
	echo "not ok 1 docs.no_outside_notes"
	sed 's/^/# refers outside the repository: /' <<< "$out"
fi

out=
for md in $(grep '\.md$' <<< "$files"); do
	dir=$(dirname "$md")
	# [text](target) with a relative target; drop #anchors
	for t in $(grep -o -E '\]\([^)#[:space:]]+' "$md" | sed 's/^](//'); do
		case $t in http:*|https:*|mailto:*|/*) continue ;; esac
		[ -e "$dir/$t" ] || out+="$md: link to $t, which does not exist"$'\n'
	done
done
if [ -z "$out" ]; then echo "ok 2 docs.links_resolve"; else
	echo "not ok 2 docs.links_resolve"
	printf '%s' "$out" | sed 's/^/# /'
fi
