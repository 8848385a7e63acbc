#!/bin/sh
# SPDX-License-Identifier: MIT
#
# ./setup.sh demo | check | TARGET...
# The README's entry point on a fresh Debian 12 machine: makes sure make and
# a C compiler are there (apt, as root), then runs `make TARGET`.  Every
# other package is installed by `make deps`, which demo and check call.
set -eu
cd "$(dirname "$0")"
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: need make and gcc; run as root: apt-get update && apt-get install -y make gcc" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q make gcc
fi
[ $# -gt 0 ] || set -- demo
exec make "$@"
