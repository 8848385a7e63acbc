#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/install/sandbox.sh [--build DIR]: the proxy still works inside the
# sandbox the systemd units give it.  TAP.
#
#   units.sandbox_relay  proxy dest and proxy source, each run as the units
#                        run them as far as this machine (no systemd as PID
#                        1) can reproduce: the whole file system read-only
#                        (ProtectSystem=strict), no capability in the
#                        bounding set (CapabilityBoundingSet=), no new
#                        privileges; the source gets one writable runtime
#                        directory (RuntimeDirectory=).  A fake QEMU pair
#                        (unix sockets) moves 8 MiB through them; the bytes
#                        that arrive equal the bytes sent and both proxies
#                        exit 0.  The system-call filter is not reproduced
#                        here (systemd-analyze verify checks its syntax).
set -uo pipefail

. "$(dirname "$0")/lib.sh"
build_arg "$@"
echo "TAP version 13"
echo "1..1"
missing=
[ "$(id -u)" = 0 ] || missing="not root (mount namespaces need it)"
for t in unshare:util-linux setpriv:util-linux python3:python3; do
	command -v "${t%%:*}" >/dev/null || missing+="${missing:+; }${t%%:*} is not installed (apt-get install ${t#*:})"
done
if [ -n "$missing" ]; then
	if [ "${CI:-}" = true ]; then echo "not ok 1 units.sandbox_relay # $missing"
	else echo "ok 1 units.sandbox_relay # SKIP $missing"; fi
	exit 0
fi

work=$(mktemp -d /tmp/ktm-sandbox.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
bash scripts/make-creds.sh "$work/creds" localhost 127.0.0.1 >/dev/null
head -c 8M /dev/urandom > "$work/sent"
mkdir -p "$work/run"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# sandboxed WRITABLE_DIR COMMAND...: / read-only in a private mount
# namespace (WRITABLE_DIR, if not "-", a fresh tmpfs there), then the
# command with an empty capability bounding set and no_new_privs.
sandboxed() {
	local rw=$1
	shift
	unshare --mount --propagation private sh -c '
		rw=$1; shift
		mount -o remount,bind,ro / || exit 1
		[ "$rw" = - ] || mount -t tmpfs -o mode=0755 tmpfs "$rw" || exit 1
		exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all "$@"
	' sandboxed "$rw" "$@"
}

# the destination QEMU: -incoming unix:PATH, keeps what arrives
python3 - "$work/qemu-in.sock" "$work/received" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(1); s.settimeout(60)
c, _ = s.accept()
with open(sys.argv[2], "wb") as f:
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        f.write(b)
PY
pids+=("$!")
qemu_dst=$!
for _ in $(seq 50); do [ -S "$work/qemu-in.sock" ] && break; sleep 0.1; done

sandboxed - timeout 60 "$build/ktls-migrate" proxy dest --listen "127.0.0.1:$port" \
	--unix "$work/qemu-in.sock" --creds "$work/creds" --max-conns 1 \
	> "$work/dest.out" 2>&1 &
dest=$!
pids+=("$dest")
# the source's socket lives in its runtime directory, a tmpfs only it sees:
# the fake source QEMU runs in the same namespace.  Everything else is
# read-only there, so the output goes through the tmpfs to standard output.
sandboxed "$work/run" sh -c '
	timeout 60 "$1" proxy source --unix "$2/src.sock" --connect "127.0.0.1:$3" \
		--creds "$4" --max-conns 1 > "$2/source.out" 2>&1 &
	pid=$!
	i=0
	until [ -S "$2/src.sock" ]; do
		i=$((i + 1))
		[ $i -lt 50 ] || { echo "no socket $2/src.sock after 5 s"; cat "$2/source.out"; exit 3; }
		sleep 0.1
	done
	timeout 60 python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(open(sys.argv[2], \"rb\").read()); s.shutdown(socket.SHUT_WR)
while s.recv(65536): pass
" "$2/src.sock" "$5/sent" || { cat "$2/source.out"; exit 4; }
	wait $pid; rc=$?
	cat "$2/source.out"
	exit $rc
' sandboxed "$build/ktls-migrate" "$work/run" "$port" "$work/creds" "$work" \
	> "$work/src-sh.out" 2>&1
src_rc=$?
[ $src_rc = 0 ] || kill "$dest" 2>/dev/null
wait "$dest"; dest_rc=$?
wait "$qemu_dst"
pids=()

out=
[ $src_rc = 0 ] || out+="source end (sandboxed) exit $src_rc: $(cat "$work/src-sh.out")"$'\n'
[ $dest_rc = 0 ] || out+="dest end (sandboxed) exit $dest_rc: $(cat "$work/dest.out")"$'\n'
cmp -s "$work/sent" "$work/received" || out+="the destination QEMU received $(stat -c %s "$work/received" 2>/dev/null || echo no) bytes, not the 8388608 sent"$'\n'
if [ -z "$out" ]; then
	echo "ok 1 units.sandbox_relay"
	grep '^conn' "$work/dest.out" | sed 's/^/# dest: /'
else
	echo "not ok 1 units.sandbox_relay"
	printf '%s' "$out" | sed 's/^/# /'
fi
