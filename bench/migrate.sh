#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/migrate.sh [--build DIR] [--size SIZE] [--runs N] [--channels LIST]
#                  [--digest D]
#
# `ktls-migrate migrate` itself over loopback, against its bound measured
# in the same run.  A random image (1G by default, 1/8 zero pages) in
# /dev/shm goes to a fresh file in /dev/shm, for each channel count
# (default 1,2,4).  Each run (default 3, interleaved) also measures
#   - the raw session stream of the same path and cipher
#     (`ktls-migrate bench --modes tls-user`, or ktls-sendfile where this
#     kernel has kernel TLS; 1 channel, the image's size), and
#   - the fresh-memory fill: `dd` of the same size into a new /dev/shm
#     file, its user+system CPU and its rate.
# The bound: the source can do no better than the stream's sender, the
# destination no better than the stream's receiver plus the fill; the
# rate bound is the slower of the stream and one core doing the
# destination's part (1 GiB / (receiver + fill CPU s/GiB)).  Reports
# medians (min-max) of MB/s and CPU s/GiB per end, migrate as a fraction
# of the bound, the issue-13 limits (source <= sender + 0.25, destination
# <= receiver + fill + 0.25) and where the time went per GiB (the
# migration's phase timers), into
# bench/results/migrate-<host>-<date>-<digest>.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=$top/build
size=1G
runs=3
channels=1,2,4
digest=xxh3
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$(cd "$2" && pwd); shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--channels) channels=$2; shift 2 ;;
	--digest) digest=$2; shift 2 ;;
	-h|--help) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/migrate.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
tool=$build/ktls-migrate
bytes=$(numfmt --from=iec "$size")
work=$(mktemp -d /dev/shm/ktm-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

"$top/scripts/make-creds.sh" "$work/creds" localhost 127.0.0.1 >/dev/null
head -c "$bytes" /dev/urandom > "$work/image"
for frac in 2 5 7; do
	dd if=/dev/zero of="$work/image" bs=1M conv=notrunc status=none \
		seek=$(( bytes * frac / 8 / 1048576 )) count=$(( bytes / 24 / 1048576 ))
done
if "$tool" probe > /dev/null 2>&1; then stream_mode=ktls-sendfile; else stream_mode=tls-user; fi

# dd into a new /dev/shm file: "MB/s cpu_s_per_gib" (children's rusage)
fill() {
	python3 - "$work/fresh" "$bytes" <<'PY'
import os, resource, subprocess, sys, time
path, n = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M",
                "count=%d" % (n // 1048576), "status=none"], check=True)
t = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
os.unlink(path)
print(n / t / 1e6, (ru.ru_utime + ru.ru_stime) / (n / 2**30))
PY
}

: > "$work/rows"
for run in $(seq "$runs"); do
	echo "fill $(fill)" >> "$work/rows"
	"$tool" bench --creds "$work/creds" --modes "$stream_mode" \
		--ciphers aes-gcm-128 --channels 1 --size "$size" --runs 1 \
		--no-ceiling -q --csv "$work/stream.csv" > /dev/null
	python3 - "$work/stream.csv" >> "$work/rows" <<'PY'
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if not l.startswith("#"))]
head, vals = rows[0], rows[1]
r = dict(zip(head, vals))
assert r["status"] == "ok", r
print("stream", r["mbps_median"], r["send_cpu_s_per_gib_median"],
      r["recv_cpu_s_per_gib_median"], r["mode"])
PY
	for n in ${channels//,/ }; do
		port=$(( 20000 + RANDOM % 30000 ))
		"$tool" migrate recv --listen "127.0.0.1:$port" --image "$work/out" \
			--creds "$work/creds" --quiet --json > "$work/recv.json" 2>/dev/null &
		rpid=$!
		sleep 0.3
		"$tool" migrate send --connect "localhost:$port" --image "$work/image" \
			--creds "$work/creds" --channels "$n" --digest "$digest" \
			--quiet --json > "$work/send.json"
		wait "$rpid"
		cmp -s "$work/image" "$work/out" || { echo "run $run, $n channel(s): images differ" >&2; exit 1; }
		rm -f "$work/out"
		python3 - "$n" "$work/send.json" "$work/recv.json" >> "$work/rows" <<'PY'
import json, sys
n, s, r = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert s["ok"] and r["ok"] and s["digest_ok"] and r["digest_ok"]
gib = s["image_bytes"] / 2**30
ph = ",".join("s.%s=%.4f" % (k, v / gib) for k, v in s["phases"].items()) + "," + \
     ",".join("d.%s=%.4f" % (k, v / gib) for k, v in r["phases"].items())
print("mig", n, s["mb_per_s"], s["cpu_s_per_gib"], r["cpu_s_per_gib"], s["paths"][0],
      s["send_path"], s["cipher"].replace(" ", "_"), s["digest_type"], ph)
PY
		echo "run $run, $n channel(s): done" >&2
	done
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
out=$top/bench/results/migrate-$(hostname)-$(date -u +%Y-%m-%d-%H%M)-$digest.md
[ ! -e "$out" ] || out=${out%.md}-$$.md
python3 - "$work/rows" "$size" "$runs" "$(uname -r)" "$("$tool" probe | head -1)" "$load" "$(nproc)" "$digest" > "$out" <<'PY'
import statistics as st, sys
lines = [l.split() for l in open(sys.argv[1]).read().split("\n") if l]
size, runs, kernel, probe, load, ncpu, digest = sys.argv[2:9]
fill = [(float(l[1]), float(l[2])) for l in lines if l[0] == "fill"]
stream = [(float(l[1]), float(l[2]), float(l[3]), l[4]) for l in lines if l[0] == "stream"]
mig = [l[1:] for l in lines if l[0] == "mig"]
med = lambda v: st.median(v)
def fmt(v, d=2):
    return f"{med(v):.{d}f} ({min(v):.{d}f}-{max(v):.{d}f})"
f_mbps, f_cpu = [x[0] for x in fill], [x[1] for x in fill]
s_mbps, s_tx, s_rx = [x[0] for x in stream], [x[1] for x in stream], [x[2] for x in stream]
src_bound, dst_bound = med(s_tx), med(s_rx) + med(f_cpu)
rate_bound = min(med(s_mbps), 2**30 / 1e6 / dst_bound)
print("# ktls-migrate migrate over loopback, against its bound\n")
print(f"Image {size} of random bytes with 1/8 zero pages, /dev/shm to a fresh file in /dev/shm; "
      f"{runs} interleaved runs; median (min-max).  Kernel {kernel}.  {probe}  "
      f"{ncpu} CPUs, load average at the end {load} (the machine is shared).\n")
print("## The bound, measured in the same runs\n")
print("| what | MB/s | sender CPU s/GiB | receiver CPU s/GiB |")
print("|---|---:|---:|---:|")
print(f"| raw session stream (`ktls-migrate bench --modes {stream[0][3]}`, AES-128-GCM, 1 channel) | "
      f"{fmt(s_mbps, 0)} | {fmt(s_tx, 3)} | {fmt(s_rx, 3)} |")
print(f"| fresh-memory fill (`dd` into a new /dev/shm file, user+system) | {fmt(f_mbps, 0)} | | {fmt(f_cpu, 3)} |")
print(f"| **bound**: source = sender, destination = receiver + fill | **{rate_bound:.0f}** | "
      f"**{src_bound:.3f}** | **{dst_bound:.3f}** |\n")
print("The rate bound is the slower of the stream and one core doing the destination's share "
      "(receiver + fill CPU per GiB).\n")
print("## migrate\n")
print("| channels | data path | send path | cipher | digest | MB/s of image | fraction of the bound | "
      "source CPU s/GiB | over sender | destination CPU s/GiB | over receiver + fill |")
print("|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|")
for n in sorted({r[0] for r in mig}, key=int):
    g = [r for r in mig if r[0] == n]
    mb, sc, dc = [float(r[1]) for r in g], [float(r[2]) for r in g], [float(r[3]) for r in g]
    print(f"| {n} | {g[0][4]} | {g[0][5]} | {g[0][6].replace('_', ' ')} | {g[0][7]} | {fmt(mb, 0)} | "
          f"{med(mb) / rate_bound:.2f} | {fmt(sc, 3)} | {med(sc) - src_bound:+.3f} | {fmt(dc, 3)} | "
          f"{med(dc) - dst_bound:+.3f} |")
one = [r for r in mig if r[0] == "1"]
if one:
    sc = med([float(r[2]) for r in one]); dc = med([float(r[3]) for r in one])
    ok = lambda b: "met" if b else "NOT met"
    print(f"\nIssue 13 limits, 1 channel: source {sc:.3f} <= sender {src_bound:.3f} + 0.25: "
          f"{ok(sc <= src_bound + 0.25)}; destination {dc:.3f} <= receiver + fill {dst_bound:.3f} + 0.25: "
          f"{ok(dc <= dst_bound + 0.25)}.\n")
    keys = [kv.split("=")[0] for kv in one[0][8].split(",")]
    ph = {k: med([float(dict(kv.split("=") for kv in r[8].split(","))[k]) for r in one]) for k in keys}
    print("Where the time went, 1 channel, seconds per GiB of wall time inside each phase "
          "(the migration's own timers, `--json` \"phases\"; a phase that waits for the peer "
          "counts its waiting):\n")
    print("| end | " + " | ".join(k.split(".")[1] for k in keys if k.startswith("s.")) + " |")
    print("|---|" + "---:|" * len([k for k in keys if k.startswith("s.")]))
    print("| source | " + " | ".join(f"{ph[k]:.3f}" for k in keys if k.startswith("s.")) + " |")
    print("| destination | " + " | ".join(f"{ph[k]:.3f}" for k in keys if k.startswith("d.")) + " |")
    print("\nThe digest's cost is the `hash` column (XXH3-128 by default; `--digest sha256` for SHA-256).")
print(f"\nReproduce: `bench/migrate.sh --size {size} --runs {runs} --digest {digest}`.")
PY
cat "$out"
echo "wrote $out" >&2
