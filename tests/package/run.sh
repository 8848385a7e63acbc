#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/package/run.sh (make check-package): build the Debian packages in a
# clean chroot and try them as a user would, in another one.  TAP.
#
#   package.build      dpkg-buildpackage -us -uc -b, in an overlay of a
#                      minimal bookworm root holding only build-essential
#                      and the Build-Depends (so they are complete), makes
#                      libktm0, libktm-dev and ktls-migrate
#   package.lintian    lintian on the .changes reports no error
#   package.symbols    debian/libktm0.symbols lists every symbol the
#                      version script exports, and no other
#   root.install       apt installs the three .debs into an overlay of a
#                      minimal root (man-db, gcc, pkg-config only), fetching
#                      what their Depends name and nothing else
#   root.probe         ktls-migrate probe runs there (exit 0 or 1, not 2/3)
#   root.migrate_64m   a 64 MiB image (16 MiB of zero pages) migrates over
#                      loopback between two installed ktls-migrate
#                      processes; cmp says the copy is exact
#   root.man           man -w finds ktls-migrate(1), -migrate(1), libktm(3)
#                      and ktls-migrate-creds(5)
#   root.example       the installed examples compile with the installed
#                      .pc (pkg-config --cflags --libs libktm) and talk
#
# Roots: tests/package/root.sh (debootstrap once, cached outside the tree,
# never written: the test mounts an overlay).  All mounts live in a private
# mount namespace and vanish with it.  Needs root, debootstrap, lintian and
# unshare; without them every case is skipped with the reason, and under
# CI=true or KTLS_REQUIRE=1 they fail instead.  The run root reaches the
# machine's Debian mirror for the packages' dependencies (downloaded once,
# kept in the cache).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../install/lib.sh"
version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
cache_dir=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
cases=(package.build package.lintian package.symbols root.install root.probe
       root.migrate_64m root.man root.example)

if [ -z "${KTM_PACKAGE_NS:-}" ]; then
	echo "TAP version 13"
	echo "1..${#cases[@]}"
	missing=
	[ "$(id -u)" = 0 ] || missing="not root (chroot and mounts need it)"
	for t in lintian:lintian debootstrap:debootstrap unshare:util-linux \
		 dpkg-deb:dpkg python3:python3; do
		command -v "${t%%:*}" >/dev/null ||
			missing+="${missing:+; }${t%%:*} is not installed (apt-get install ${t#*:})"
	done
	if [ -n "$missing" ]; then
		for c in "${cases[@]}"; do
			n=$((n + 1))
			if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
				echo "not ok $n $c # $missing"
			else
				echo "ok $n $c # SKIP $missing"
			fi
		done
		exit 0
	fi
	KTM_PACKAGE_NS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi

work=$(mktemp -d /tmp/ktm-package.XXXXXX)
cleanup() {
	# mounts first (the namespace dies with us anyway), then the files
	for m in $(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
skip_rest() { # reason
	while [ $n -lt ${#cases[@]} ]; do
		n=$((n + 1)); echo "not ok $n ${cases[$((n - 1))]} # $1"
	done
	exit 0
}
# overlay LOWER DIR: a writable throwaway view of LOWER at DIR, with /proc
# and /dev, and the machine's resolver (the run root talks to the mirror).
overlay() {
	mkdir -p "$2" "$2.upper" "$2.work" &&
	mount -t overlay overlay -o "lowerdir=$1,upperdir=$2.upper,workdir=$2.work" "$2" &&
	mount -t proc proc "$2/proc" &&
	mount --rbind /dev "$2/dev" &&
	cp -L /etc/resolv.conf "$2/etc/resolv.conf"
}
# in_root DIR COMMAND: a shell command in the root, as a login sees it.
in_root() {
	chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
		sh -c "$2"
}

# ---- build in the build root ------------------------------------------------
broot=$(bash "$here/root.sh" build 2> "$work/root.err") ||
	skip_rest "no build root: $(tail -1 "$work/root.err")"
b=$work/b
overlay "$broot" "$b" 2> "$work/mount.err" || skip_rest "cannot mount the build root: $(cat "$work/mount.err")"
src=/tmp/src/ktls-migrate-$version
mkdir -p "$b$src"
# the tree's files: git's list when this is a clone, else everything
{ git ls-files -co --exclude-standard 2>/dev/null ||
  find . -path ./.git -prune -o -type f -print | sed 's|^\./||'; } |
	grep -v -e '^build/' -e '^debian/\.' |
	while read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done |
	tar -cf - -T - | tar -xf - -C "$b$src"
in_root "$b" "cd $src && dpkg-checkbuilddeps && nice dpkg-buildpackage -us -uc -b" \
	> "$work/build.log" 2>&1; rc=$?
out=
[ $rc = 0 ] || out+="dpkg-buildpackage in the build root: exit $rc; last lines:"$'\n'$(tail -15 "$work/build.log")$'\n'
mkdir -p "$work/out"
cp "$b"/tmp/src/*.deb "$b"/tmp/src/*.changes "$b"/tmp/src/*.buildinfo "$work/out/" 2>/dev/null
debs=()
for p in libktm0 libktm-dev ktls-migrate; do
	d=$work/out/${p}_${version}_$arch.deb
	if [ -f "$d" ]; then debs+=("$d"); else out+="no $(basename "$d")"$'\n'; fi
done
check package.build "$out"
[ ${#debs[@]} = 3 ] || skip_rest "no packages to test"

lint=$(lintian "$work/out/ktls-migrate_${version}_$arch.changes" 2>&1 | grep -v 'running with root privileges')
echo "# lintian: $(grep -c '^E:' <<< "$lint") errors, $(grep -c '^W:' <<< "$lint") warnings"
grep -v '^$' <<< "$lint" | sed 's/^/# lintian: /'
check package.lintian "$(grep '^E:' <<< "$lint")"

exported=$(awk '/global:/ { g = 1; next } /local:/ { g = 0 } g && /;/ { gsub(/[ \t;]/, ""); print }' lib/libktm.map | sort)
listed=$(awk '/^ [a-z_0-9]+@/ { sub(/@.*/, "", $1); print $1 }' debian/libktm0.symbols | sort)
out=
for s in $(comm -23 <(echo "$exported") <(echo "$listed")); do
	out+="$s is exported (lib/libktm.map) but not in debian/libktm0.symbols: add ' $s@KTM_0.1 $version'"$'\n'
done
for s in $(comm -13 <(echo "$exported") <(echo "$listed")); do
	out+="$s is in debian/libktm0.symbols but not exported by lib/libktm.map"$'\n'
done
check package.symbols "$out"

# ---- install and use in the run root ----------------------------------------
rroot=$(bash "$here/root.sh" run 2> "$work/root.err") ||
	skip_rest "no run root: $(tail -1 "$work/root.err")"
r=$work/r
overlay "$rroot" "$r" 2> "$work/mount.err" || skip_rest "cannot mount the run root: $(cat "$work/mount.err")"
# apt's lists and downloads persist in the cache: fetched once
for d in lists:var/lib/apt/lists archives:var/cache/apt/archives; do
	keep=$cache_dir/chroot/apt-${d%%:*}
	[ -d "$keep" ] || { mkdir -p "$keep" && cp -a "$rroot/${d#*:}/." "$keep/"; }
	mount --bind "$keep" "$r/${d#*:}"
done
mkdir -p "$r/tmp/debs" "$r/tmp/creds"
cp "${debs[@]}" "$r/tmp/debs/"
bash scripts/make-creds.sh "$r/tmp/creds" localhost 127.0.0.1 >/dev/null

out=
in_root "$r" 'apt-get -q update && apt-get install -y -q --no-install-recommends /tmp/debs/*.deb' \
	> "$work/apt.log" 2>&1 || out="apt-get install of the .debs failed: $(tail -20 "$work/apt.log")"$'\n'
for f in /usr/bin/ktls-migrate /usr/include/ktm.h \
	 /lib/systemd/system/ktls-migrate-proxy-dest@.service \
	 /lib/systemd/system/ktls-migrate-proxy-source@.service; do
	in_root "$r" "test -f $f" || out+="$f is not installed"$'\n'
done
in_root "$r" 'ldd /usr/bin/ktls-migrate' | grep 'not found' | sed 's/^/ktls-migrate lacks /' >> "$work/ldd"
out+=$(cat "$work/ldd")
check root.install "$out"

p=$(in_root "$r" 'ktls-migrate probe' 2>&1); rc=$?
out=
[ $rc = 0 ] || [ $rc = 1 ] || out+="probe exit status $rc: $p"$'\n'
[[ $p == "kernel TLS: "* ]] || out+="probe said: $p"$'\n'
echo "# probe in the root: $(head -1 <<< "$p")"
check root.probe "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(in_root "$r" "
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
	w=$(in_root "$r" "man -w $pg" 2>&1)
	[ "$w" = "/usr/share/man/man${pg%% *}/${pg#* }.${pg%% *}.gz" ] || out+="man -w $pg: $w"$'\n'
done
page=$(in_root "$r" 'MANWIDTH=80 man ktls-migrate-qemu-recv 2>&1')
[[ $page == *"qemu-recv --qmp"* ]] ||
	out+="man ktls-migrate-qemu-recv does not show the qemu-send page"$'\n'
check root.man "$out"

out=$(in_root "$r" '
	set -e
	mkdir -p /tmp/ex && cd /tmp/ex
	for e in server client poll_pair; do
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
	./poll_pair /tmp/creds > pp.out 2>&1 || echo "poll_pair exit status $?"
	grep -qx "client got: pong" pp.out || cat pp.out
' 2>&1) || out="example failed: $out"
check root.example "$out"
