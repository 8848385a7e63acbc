#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/plot.sh RESULTS.csv PREFIX: draw PREFIX-mbps.png (median MB/s with
# min-max bars, one cluster per row, one bar per channel count) and
# PREFIX-cpu.png (send, receive and both ends' CPU s/GiB at 1 channel) from a
# `ktls-migrate bench --csv` file with gnuplot (bench/plot.gp).  Rows that
# were not measured, and functional-only files, draw nothing.
set -euo pipefail

csv=${1:?usage: plot.sh RESULTS.csv PREFIX}
prefix=${2:?usage: plot.sh RESULTS.csv PREFIX}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Columns (see the CSV header): 1 measurement 2 mode 3 cipher 4 channels
# 5 status 10-12 MB/s min/median/max 14 send, 17 recv, 19 both ends CPU
# medians.
# Fields before the note hold no commas, so plain -F, is safe.
awk -F, -v dir="$tmp" '
	function short(c) {
		if (c == "none") return ""
		if (c == "aes-gcm-128" || c == "aes-128-gcm") return "/aes128"
		if (c == "aes-gcm-256" || c == "aes-256-gcm") return "/aes256"
		if (c == "chacha20-poly1305") return "/chacha"
		return "/" c
	}
	/^#/ || $1 == "measurement" { next }
	$1 != "speed" || $5 != "ok" { next }
	{
		l = $2 short($3)
		if (!(l in seen)) { seen[l] = 1; order[++n] = l }
		ch[$4] = 1
		v[l, $4] = $11 " " $10 " " $12
		if ($4 == 1) cpu[l] = $14 " " $17 " " $19
	}
	END {
		for (i = 1; i <= n; i++) {
			l = order[i]
			line = l
			for (c = 1; c <= 4; c *= 2)
				line = line " " ((l, c) in v ? v[l, c] : "? ? ?")
			print line > (dir "/mbps.dat")
			if (l in cpu) print l, cpu[l] > (dir "/cpu.dat")
		}
	}' "$csv"
[ -s "$tmp/mbps.dat" ] || exit 1
title=$(sed -n '1s/^# ktls-migrate bench [^;]*; //p' "$csv" | cut -d';' -f1-3,6 | tr -d '"')
gnuplot -e "dir='$tmp'; out='$prefix'; subtitle='${title//\'/}'" "$here/plot.gp"
