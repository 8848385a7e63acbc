#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/package/root.sh build|run [--print]: make (once) a minimal Debian
# bookworm root for the package test and print its directory.
#
#   build  debootstrap minbase + build-essential + the Build-Depends of
#          debian/control: dpkg-buildpackage there proves them complete
#   run    debootstrap minbase + man-db, gcc, libc6-dev, pkg-config: the
#          .debs are installed there with apt, which must find every
#          dependency from their Depends alone
#
# The mirror is the machine's own (apt-get indextargets), as for the guest
# kernels, or KTM_DEBIAN_MIRROR.  Cached, and never written afterwards (the
# test works on a throwaway overlay of it), in
#   ${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}/chroot/bookworm-KIND
# and made again when its package list changes (e.g. new Build-Depends).
# --print only prints the directory when it is ready (nothing otherwise).
set -euo pipefail

prog=package-root
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:-}
cache_dir=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin

die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

# Build-Depends without versions, architectures and profiles.
build_depends() {
	sed -n '/^Build-Depends:/,/^[A-Z]/p' "$here/../../debian/control" |
		sed -e '1s/^Build-Depends://' -e '/^[A-Z]/d' | tr ',' '\n' |
		sed -e 's/([^)]*)//g' -e 's/<[^>]*>//g' -e 's/\[[^]]*\]//g' -e 's/[[:space:]]//g' |
		sed -e 's/^debhelper-compat$/debhelper/' | grep -v '^$' | sort -u | paste -sd, -
}
case $kind in
build) include=build-essential,$(build_depends) ;;
run) include=man-db,gcc,libc6-dev,pkg-config ;;
*) echo "usage: root.sh build|run [--print]" >&2; exit 2 ;;
esac
root=$cache_dir/chroot/bookworm-$kind

if [ -f "$root/.ktm-ready" ] && [ "$(cat "$root/.ktm-ready")" = "$include" ]; then
	printf '%s\n' "$root"
	exit 0
fi
[ "${2:-}" != --print ] || exit 0

command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root to make $root (run as root)"

mirror=${KTM_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	# shellcheck disable=SC2016 # $(...) is apt's format syntax
	while read -r uri rel; do
		case $rel in *-security|*-updates|*-backports) continue ;; esac
		mirror=${uri%/}
		break
	done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null)
fi
[ -n "$mirror" ] || die "no Debian mirror in the machine's apt sources (set KTM_DEBIAN_MIRROR)"

rm -rf "$root.tmp"
mkdir -p "$(dirname "$root")"
echo "$prog: debootstrap bookworm ($kind: $include) from $mirror into $root (once; a few minutes)" >&2
debootstrap --variant=minbase --include="$include" bookworm "$root.tmp" "$mirror" \
	> "$root.log" 2>&1 || die "debootstrap failed (log: $root.log)"
rm -f "$root.tmp"/var/cache/apt/archives/*.deb
printf '%s\n' "$include" > "$root.tmp/.ktm-ready"
rm -rf "$root"
mv "$root.tmp" "$root"
printf '%s\n' "$root"
