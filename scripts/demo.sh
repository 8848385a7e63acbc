#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/demo.sh [--build DIR] [--size SIZE] [--emulated]
#                                               (make demo, make demo-vm)
#
# A local encrypted migration with the defaults: a throwaway PKI, a random
# memory image (1G by default) with some zero pages, `ktls-migrate migrate`
# from a source to a destination over loopback (kernel TLS when this kernel
# has it, otherwise the userspace fallback, saying which and why), an
# independent byte-for-byte comparison, and both sides' reports.
# --emulated (make demo-vm): the CPU is emulated, so no progress line and a
# warning that the times are not speeds.
set -euo pipefail

build=build
size=1G
emulated=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--emulated) emulated=1; shift ;;
	*) echo "usage: $0 [--build DIR] [--size SIZE] [--emulated]" >&2; exit 2 ;;
	esac
done
quiet=()
[ "$emulated" = 0 ] || quiet=(--quiet)
tool=$(cd "$(dirname "$build/ktls-migrate")" && pwd)/ktls-migrate
here=$(cd "$(dirname "$0")" && pwd)
bytes=$(numfmt --from=iec "$size")

# The image lives where a VM's RAM file would: /dev/shm when it has room.
base=/tmp
if [ -d /dev/shm ] && [ "$(df --output=avail -B1 /dev/shm | tail -1)" -gt $((bytes * 3)) ]; then
	base=/dev/shm
fi
work=$(mktemp -d "$base/ktm-demo-XXXXXX")
recv_pid=
cleanup() {
	[ -z "$recv_pid" ] || kill "$recv_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== ktls-migrate demo: a $size memory image over loopback =="
if [ "$emulated" = 1 ]; then
	echo "   (inside a QEMU guest with an emulated CPU: the times and MB/s below"
	echo "    show that it works, they are not speeds)"
fi
{ "$tool" probe || true; } | sed 's/^/   probe: /'
echo

printf '   making a throwaway PKI (QEMU tls-creds-x509 layout) ... '
"$here/make-creds.sh" "$work/creds" localhost 127.0.0.1
echo "done"
printf '   making a %s random image with zero pages ... ' "$size"
head -c "$bytes" /dev/urandom > "$work/image"
# about 1/8 of it zero, in three runs, as an idle guest would have
for frac in 2 5 7; do
	dd if=/dev/zero of="$work/image" bs=1M conv=notrunc status=none \
		seek=$(( bytes * frac / 8 / 1048576 )) count=$(( bytes / 24 / 1048576 ))
done
echo "done"

port=$(( 20000 + RANDOM % 30000 ))
"$tool" migrate recv --listen "127.0.0.1:$port" --image "$work/received" \
	--creds "$work/creds" --quiet > "$work/recv.report" 2> "$work/recv.err" &
recv_pid=$!
sleep 0.3

echo "   migrating (source → destination, 127.0.0.1:$port) ..."
echo
echo "-- source --"
status=0
"$tool" migrate send --connect "localhost:$port" --image "$work/image" \
	--creds "$work/creds" "${quiet[@]}" || status=$?
wait "$recv_pid" || status=$?
recv_pid=
echo
echo "-- destination --"
cat "$work/recv.report"
sed 's/^/   /' "$work/recv.err" | grep -v 'waiting for the source' || true
echo
if [ "$status" -ne 0 ]; then
	echo "== demo FAILED (exit $status): see the errors above =="
	exit 1
fi
if cmp -s "$work/image" "$work/received"; then
	echo "== independent check: cmp says the received image equals the source, byte for byte =="
else
	echo "== independent check FAILED: the received image differs =="
	exit 1
fi
