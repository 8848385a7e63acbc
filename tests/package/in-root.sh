#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/package/in-root.sh ROOT WORK N DEB...: the root.* cases of
# tests/package/run.sh, numbered from N+1.  Runs inside a private mount
# namespace (unshare --mount): the overlay of ROOT, /proc and /dev mounted
# here vanish with it, and ROOT itself is never written.
set -uo pipefail

lower=$1 work=$2 n=$3
shift 3
r=$work/root
check() { # name problems: ok when empty
	n=$((n + 1))
	if [ -z "$2" ]; then echo "ok $n $1"; else
		echo "not ok $n $1"; printf '%s\n' "${2%$'\n'}" | sed 's/^/# /'
	fi
}
# Run a shell command in the root, as a login would see it.
in_root() {
	chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LC_ALL=C.UTF-8 TERM=dumb sh -c "$1"
}

mkdir -p "$work/upper" "$work/ovl" "$r"
if ! mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/ovl" "$r" 2> "$work/mount.err" ||
   ! mount -t proc proc "$r/proc" 2>> "$work/mount.err" ||
   ! mount --rbind /dev "$r/dev" 2>> "$work/mount.err"; then
	check root.install "cannot mount the throwaway root: $(cat "$work/mount.err")"
	for c in root.probe root.migrate_64m root.man root.example; do
		check "$c" "no root (see root.install)"
	done
	exit 0
fi
mkdir -p "$r/tmp/debs" "$r/tmp/creds"
cp "$@" "$r/tmp/debs/"
cp -p "$work"/creds/* "$r/tmp/creds/"

out=
in_root 'dpkg -i /tmp/debs/*.deb' > "$work/dpkg.log" 2>&1 ||
	out="dpkg -i failed: $(tail -20 "$work/dpkg.log")"
if [ -z "$out" ]; then
	for f in /usr/bin/ktls-migrate /usr/include/ktm.h \
		 /lib/systemd/system/ktls-migrate-proxy-dest@.service \
		 /lib/systemd/system/ktls-migrate-proxy-source@.service; do
		in_root "test -f $f" || out+="$f is not installed"$'\n'
	done
	in_root 'ldd /usr/bin/ktls-migrate' | grep -q 'not found' && out+="ktls-migrate lacks a library: $(in_root 'ldd /usr/bin/ktls-migrate')"$'\n'
fi
check root.install "$out"

p=$(in_root 'ktls-migrate probe' 2>&1); rc=$?
out=
[ $rc = 0 ] || [ $rc = 1 ] || out+="probe exit status $rc: $p"$'\n'
[[ $p == "kernel TLS: "* ]] || out+="probe said: $p"$'\n'
echo "# probe in the root: $(head -1 <<< "$p")"
check root.probe "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(in_root "
	set -e
	head -c 48M /dev/urandom > /tmp/src.img
	head -c 16M /dev/zero >> /tmp/src.img
	ktls-migrate migrate recv --listen 127.0.0.1:$port --image /tmp/dst.img \
		--creds /tmp/creds --accept-timeout 60 --quiet > /tmp/recv.out 2>&1 &
	pid=\$!
	i=0
	until ktls-migrate migrate send --connect 127.0.0.1:$port --image /tmp/src.img \
		--creds /tmp/creds --quiet > /tmp/send.out 2>&1; do
		i=\$((i + 1))
		grep -q refused /tmp/send.out && [ \$i -lt 50 ] || { cat /tmp/send.out; exit 1; }
		sleep 0.1
	done
	wait \$pid || { cat /tmp/recv.out; exit 1; }
	cmp /tmp/src.img /tmp/dst.img
	grep -q 'zero pages skipped: 16777216 bytes' /tmp/send.out || cat /tmp/send.out
" 2>&1) || out="migration failed: $out"
check root.migrate_64m "$out"

out=
for pg in "1 ktls-migrate" "1 ktls-migrate-migrate" "3 libktm" "5 ktls-migrate-creds"; do
	w=$(in_root "man -w $pg" 2>&1)
	[ "$w" = "/usr/share/man/man${pg%% *}/${pg#* }.${pg%% *}.gz" ] || out+="man -w $pg: $w"$'\n'
done
in_root 'MANWIDTH=80 man ktls-migrate-qemu-recv 2>&1' | grep -q 'qemu-recv --qmp' ||
	out+="man ktls-migrate-qemu-recv does not show the qemu-send page"$'\n'
check root.man "$out"

out=$(in_root '
	set -e
	mkdir -p /tmp/ex && cd /tmp/ex
	for e in server client; do
		cc -Wall -Werror -o $e /usr/share/doc/libktm-dev/examples/$e.c $(pkg-config --cflags --libs libktm)
	done
	./server /tmp/creds 0 > srv.out 2>&1 &
	pid=$!
	i=0
	until grep -q "^listening" srv.out; do i=$((i + 1)); [ $i -lt 50 ]; sleep 0.1; done
	port=$(sed -n "s/^listening on 127.0.0.1://p" srv.out)
	./client /tmp/creds 127.0.0.1 "$port" "installed" > cli.out 2>&1
	wait $pid
	grep -qx "reply: INSTALLED" cli.out || cat cli.out srv.out
' 2>&1) || out="example failed: $out"
check root.example "$out"
