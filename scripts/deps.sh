#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/deps.sh (make deps): install the build and test packages with apt
# and cache the Debian guest kernels the real-kernel test tier boots.
# Idempotent: a second run installs and downloads nothing.  Not root: says
# the exact command to run instead.
set -euo pipefail

cd "$(dirname "$0")/.."

# jq and perl (JSON::PP) drive QEMU's QMP in tests/qemu; debootstrap makes
# the trixie root that holds QEMU 10 (tests/qemu/fetch-qemu10.sh); libvirt
# and iproute2 (veth between namespaces) for tests/libvirt
pkgs=(gcc make pkg-config libssl-dev openssl liburing-dev libnl-3-dev
      libnl-genl-3-dev libnl-route-3-dev qemu-system-x86 busybox-static cpio
      kmod xz-utils zstd jq perl debootstrap libvirt-daemon-system
      libvirt-clients libvirt-daemon-driver-qemu iproute2)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

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
# Debian 13's QEMU 10 for tests/qemu, in a cached trixie root (not installed).
if ! bash tests/qemu/fetch-qemu10.sh --print >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: QEMU 10 is not cached; run as root: tests/qemu/fetch-qemu10.sh" >&2
		exit 1
	fi
	bash tests/qemu/fetch-qemu10.sh --quiet
fi
