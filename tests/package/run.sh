#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/package/run.sh (make check-package): build the Debian packages from
# a copy of this tree and try them as a user would, in a throwaway root.
# TAP.
#
#   package.build      dpkg-buildpackage -us -uc -b makes libktm0,
#                      libktm-dev and ktls-migrate
#   package.lintian    lintian on the .changes reports no error
#   package.symbols    debian/libktm0.symbols lists every symbol the
#                      version script exports, and no other
#   root.install       the three .debs install (dpkg -i) into an overlay of
#                      a cached minimal bookworm root (tests/package/root.sh)
#   root.probe         ktls-migrate probe runs there (exit 0 or 1, not 2/3)
#   root.migrate_64m   a 64 MiB image (some zero pages) migrates over
#                      loopback between two installed ktls-migrate
#                      processes; cmp says the copy is exact
#   root.man           man -w finds ktls-migrate(1), libktm(3) and
#                      ktls-migrate-creds(5)
#   root.example       the installed examples compile with the installed
#                      .pc (pkg-config --cflags --libs libktm) and talk
#
# Needs root (debootstrap, chroot, mounts: all inside a private mount
# namespace, gone when the test ends), dpkg-buildpackage, lintian and
# debootstrap.  Without them every case is skipped with the reason; under
# CI=true or KTLS_REQUIRE=1 they fail instead.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
cases=(package.build package.lintian package.symbols root.install root.probe
       root.migrate_64m root.man root.example)

echo "TAP version 13"
echo "1..${#cases[@]}"

missing=
[ "$(id -u)" = 0 ] || missing="not root (chroot and mounts need it)"
for t in dpkg-buildpackage:dpkg-dev lintian:lintian debootstrap:debootstrap \
	 fakeroot:fakeroot dh:debhelper unshare:util-linux; do
	command -v "${t%%:*}" >/dev/null || missing+="${missing:+; }${t%%:*} is not installed (apt-get install ${t#*:})"
done
if [ -n "$missing" ]; then
	i=0
	for c in "${cases[@]}"; do
		i=$((i + 1))
		if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
			echo "not ok $i $c # $missing"
		else
			echo "ok $i $c # SKIP $missing"
		fi
	done
	exit 0
fi

work=$(mktemp -d /tmp/ktm-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
n=0
check() { # name problems: ok when empty
	n=$((n + 1))
	if [ -z "$2" ]; then echo "ok $n $1"; else
		echo "not ok $n $1"; printf '%s\n' "${2%$'\n'}" | sed 's/^/# /'
	fi
}
skip_rest() { # reason
	while [ $n -lt ${#cases[@]} ]; do
		n=$((n + 1)); echo "not ok $n ${cases[$((n - 1))]} # $1"
	done
	exit 0
}

# ---- build from a copy (the packages land next to it, inside $work) ----
src=$work/ktls-migrate-$version
mkdir -p "$src"
git ls-files -co --exclude-standard | grep -v -e '^build/' -e '^debian/\.debhelper' |
	while read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done |
	tar -cf - -T - | tar -xf - -C "$src"
(cd "$src" && nice dpkg-buildpackage -us -uc -b) > "$work/build.log" 2>&1; rc=$?
out=
[ $rc = 0 ] || out+="dpkg-buildpackage exit $rc; last lines:"$'\n'$(tail -15 "$work/build.log")$'\n'
debs=()
for p in libktm0 libktm-dev ktls-migrate; do
	d=$work/${p}_${version}_$arch.deb
	if [ -f "$d" ]; then debs+=("$d"); else out+="no $(basename "$d")"$'\n'; fi
done
check package.build "$out"
[ ${#debs[@]} = 3 ] || skip_rest "no packages to test"

lint=$(lintian "$work/ktls-migrate_${version}_$arch.changes" 2>&1 | grep -v 'running with root privileges')
echo "# lintian: $(grep -c '^E:' <<< "$lint") errors, $(grep -c '^W:' <<< "$lint") warnings"
sed 's/^/# lintian: /' <<< "$lint" | grep -v '^# lintian: $'
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

# ---- the throwaway root -------------------------------------------------
root=$(bash "$here/root.sh" 2> "$work/root.err") || skip_rest "no bookworm root: $(tail -1 "$work/root.err")"
bash scripts/make-creds.sh "$work/creds" localhost 127.0.0.1 >/dev/null
n0=$n
unshare --mount --propagation private \
	bash "$here/in-root.sh" "$root" "$work" "$n0" "${debs[@]}"
