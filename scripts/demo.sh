#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/demo.sh BUILD_DIR (make demo): what this host can do.  The
# migration demo (a 1 GiB image over loopback) replaces this once
# `ktls-migrate migrate` exists; until then the demo is the probe.
set -uo pipefail
build=${1:-build}
echo "== ktls-migrate probe =="
"$build/ktls-migrate" probe
rc=$?
echo
case $rc in
0) echo "This kernel has kernel TLS: migrations here run with the crypto in the kernel." ;;
1) echo "This kernel has no kernel TLS: migrations here would use the userspace TLS fallback."
   echo "The kernel-TLS test tier runs in a QEMU guest instead: make check-vm" ;;
*) echo "The probe failed (exit $rc)."; exit "$rc" ;;
esac
