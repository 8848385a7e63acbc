#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/deps.sh (make deps): install the build and test packages with apt
# and cache the Debian guest kernels the real-kernel test tier boots.
# Idempotent: a second run installs and downloads nothing.  Not root: says
# the exact command to run instead.
#
# --if-missing (make check, demo, bench): when every package is installed
# and every guest kernel is cached, return at once, without apt, the
# network or root; otherwise do what a plain run does.
set -euo pipefail
if_missing=0
[ "${1:-}" != --if-missing ] || if_missing=1

cd "$(dirname "$0")/.."

# jq and perl (JSON::PP) drive QEMU's QMP in tests/qemu; perl also runs
# scripts/check-layers.pl.  clang builds the libFuzzer targets (make fuzz),
# time measures their CPU; cppcheck and pmccabe are make analyze (in make
# check): the static checks and the complexity bound.
# libxxhash-dev gives the migration's default image digest (XXH3-128).
# debootstrap also makes the trixie root that holds QEMU 10
# (tests/qemu/fetch-qemu10.sh); libvirt and iproute2 (veth between
# namespaces) for tests/libvirt.
pkgs=(gcc make pkg-config libssl-dev openssl liburing-dev libxxhash-dev libnl-3-dev
      libnl-genl-3-dev libnl-route-3-dev qemu-system-x86 busybox-static cpio
      kmod xz-utils zstd jq perl clang time cppcheck pmccabe libvirt-daemon-system libvirt-clients
      libvirt-daemon-driver-qemu iproute2)
# packaging and installation: man pages (scdoc), units (systemd-analyze),
# .deb build and lint, the package test's chroot, man -w there
pkgs+=(scdoc systemd debhelper dpkg-dev fakeroot lintian debootstrap man-db)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ $if_missing = 1 ] && [ ${#missing[@]} -eq 0 ] &&
   [ "$(bash tests/vm/fetch-kernels.sh --list | wc -l)" -ge 2 ] &&
   [ -n "$(bash tests/package/root.sh build --print)" ] &&
   [ -n "$(bash tests/package/root.sh run --print)" ]; then
	exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# Guest kernels for tests/vm (downloaded, never installed).
bash tests/vm/fetch-kernels.sh --quiet

# The minimal bookworm roots the package test builds and installs the
# .debs in (debootstrap, once each; needs root).
for kind in build run; do
	if [ "$(id -u)" = 0 ]; then
		bash tests/package/root.sh $kind >/dev/null
	elif [ -z "$(bash tests/package/root.sh $kind --print)" ]; then
		echo "deps: the package test's bookworm $kind root is not cached; run as root: make deps" >&2
	fi
done

# Debian 13's QEMU 10 for tests/qemu, in a cached trixie root (not installed).
if ! bash tests/qemu/fetch-qemu10.sh --print >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: QEMU 10 is not cached; run as root: tests/qemu/fetch-qemu10.sh" >&2
		exit 1
	fi
	bash tests/qemu/fetch-qemu10.sh --quiet
fi
