#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/package/root.sh [--print]: make (once) the minimal Debian bookworm
# root the package test installs our .debs into, and print its directory.
#
# debootstrap --variant=minbase with what the installed packages and the
# test need (the libraries, man-db, a compiler and the -dev packages the
# .pc file's Requires.private names).  The mirror is the machine's own
# (apt-get indextargets), as for the guest kernels.  Cached, never modified
# afterwards (the test runs on a throwaway overlay of it):
#   ${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}/chroot/bookworm
# --print only prints the directory when it is ready (nothing otherwise).
set -euo pipefail

prog=package-root
cache_dir=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
root=$cache_dir/chroot/bookworm
include=libssl3,liburing2,libnl-3-200,libnl-genl-3-200,libnl-route-3-200
include+=,man-db,gcc,libc6-dev,pkg-config,libssl-dev,liburing-dev
include+=,libnl-3-dev,libnl-genl-3-dev,libnl-route-3-dev
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin

die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

if [ -f "$root/.ktm-ready" ]; then
	printf '%s\n' "$root"
	exit 0
fi
[ "${1:-}" != --print ] || exit 0

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
echo "$prog: debootstrap bookworm from $mirror into $root (once; a few minutes)" >&2
debootstrap --variant=minbase --include="$include" bookworm "$root.tmp" "$mirror" \
	> "$root.log" 2>&1 || die "debootstrap failed (log: $root.log)"
rm -f "$root.tmp"/var/cache/apt/archives/*.deb
rm -rf "$root"
mv "$root.tmp" "$root"
touch "$root/.ktm-ready"
printf '%s\n' "$root"
