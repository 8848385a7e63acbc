#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/migrate.sh [--build DIR] [--size SIZE] [--runs N] [--channels LIST]
#
# `ktls-migrate migrate` itself over loopback: a random image (1G by
# default, 1/8 zero pages) in /dev/shm sent to a fresh file in /dev/shm,
# for each channel count (default 1,2,4), runs interleaved (default 3).
# Reports median (min-max) MB/s of image and CPU seconds per GiB of each
# process from the tools' --json reports, into
# bench/results/migrate-<host>-<date>.md.  The data path is whatever this
# kernel gives (kernel TLS, or the userspace fallback, named in the file).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=$top/build
size=1G
runs=3
channels=1,2,4
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$(cd "$2" && pwd); shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--channels) channels=$2; shift 2 ;;
	-h|--help) sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/migrate.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
tool=$build/ktls-migrate
bytes=$(numfmt --from=iec "$size")
work=$(mktemp -d /dev/shm/ktm-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

"$top/scripts/make-creds.sh" "$work/creds" localhost 127.0.0.1
head -c "$bytes" /dev/urandom > "$work/image"
for frac in 2 5 7; do
	dd if=/dev/zero of="$work/image" bs=1M conv=notrunc status=none \
		seek=$(( bytes * frac / 8 / 1048576 )) count=$(( bytes / 24 / 1048576 ))
done

: > "$work/rows"
for run in $(seq "$runs"); do
	# the ceiling of any receiver of a fresh image on this host: filling
	# a new /dev/shm file of the same size (page allocation and zeroing)
	t0=$(date +%s.%N)
	dd if=/dev/zero of="$work/fresh" bs=1M count=$(( bytes / 1048576 )) status=none
	t1=$(date +%s.%N)
	rm -f "$work/fresh"
	echo "fresh $(python3 -c "print($bytes / ($t1 - $t0) / 1e6)")" >> "$work/rows"
	for n in ${channels//,/ }; do
		port=$(( 20000 + RANDOM % 30000 ))
		"$tool" migrate recv --listen "127.0.0.1:$port" --image "$work/out" \
			--creds "$work/creds" --quiet --json > "$work/recv.json" 2>/dev/null &
		rpid=$!
		sleep 0.3
		"$tool" migrate send --connect "localhost:$port" --image "$work/image" \
			--creds "$work/creds" --channels "$n" --quiet --json > "$work/send.json"
		wait "$rpid"
		cmp -s "$work/image" "$work/out" || { echo "run $run, $n channel(s): images differ" >&2; exit 1; }
		rm -f "$work/out"
		python3 - "$n" "$work/send.json" "$work/recv.json" >> "$work/rows" <<'PY'
import json, sys
n, s, r = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert s["ok"] and r["ok"] and s["digest_ok"] and r["digest_ok"]
print(n, s["mb_per_s"], s["cpu_s_per_gib"], r["cpu_s_per_gib"], s["paths"][0],
      s["send_path"], s["cipher"].replace(" ", "_"), sep="\t")
PY
		echo "run $run, $n channel(s): done" >&2
	done
done

out=$top/bench/results/migrate-$(hostname)-$(date -u +%Y-%m-%d-%H%M).md
python3 - "$work/rows" "$size" "$runs" "$(uname -r)" "$("$tool" probe | head -1)" > "$out" <<'PY'
import statistics, sys
lines = [l for l in open(sys.argv[1]).read().split("\n") if l]
fresh = [float(l.split()[1]) for l in lines if l.startswith("fresh ")]
rows = [l.split("\t") for l in lines if not l.startswith("fresh ")]
size, runs, kernel, probe = sys.argv[2:6]
print("# ktls-migrate migrate over loopback\n")
print(f"Image {size} of random bytes with 1/8 zero pages, /dev/shm to a fresh file in /dev/shm; "
      f"{runs} interleaved runs; median (min-max).  Kernel {kernel}.  {probe}\n")
print("| channels | data path | send path | cipher | MB/s of image | source CPU s/GiB | destination CPU s/GiB |")
print("|---:|---|---|---|---:|---:|---:|")
def fmt(v):
    v = [float(x) for x in v]
    return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" if max(v) < 10 else \
           f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
for n in sorted({r[0] for r in rows}, key=int):
    g = [r for r in rows if r[0] == n]
    print(f"| {n} | {g[0][4]} | {g[0][5]} | {g[0][6].replace('_', ' ')} | {fmt([r[1] for r in g])} | "
          f"{fmt([r[2] for r in g])} | {fmt([r[3] for r in g])} |")
print(f"\nFor scale, in the same runs: writing {size} of zeros into a new /dev/shm file "
      f"(`dd`, page allocation and zeroing only, no network, no crypto) ran at {fmt(fresh)} MB/s. "
      "Every destination of a fresh image pays that part.  The rest of the gap to the raw "
      "userspace-TLS stream (`make bench`, tls-user) is the SHA-256 image digest, one pass on "
      "each side, and the page scan and record batching.")
print(f"\nReproduce: `bench/migrate.sh --size {size} --runs {runs}`.")
PY
cat "$out"
echo "wrote $out" >&2
