#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/libvirt/ns.sh WORK NAME: PID 1 of one libvirt "host" of
# tests/libvirt/run.sh, started by `unshare --mount --net --propagation
# private`.  Gives this mount namespace its own /run (tmpfs) and its own
# /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt
# (bind mounts of WORK/NAME/...), brings up lo, and runs libvirtd in the
# foreground with WORK/NAME/etc/libvirtd.conf (its own host_uuid; its
# control socket in WORK/sock-NAME, outside the namespace, so the other
# daemon and virsh reach it by path).  The network namespace gets its veth
# end from run.sh.  Ends with libvirtd.
set -eu
work=$1 name=$2
me=$work/$name

mount -t tmpfs -o mode=0755 ktm-run /run
mkdir -p /run/libvirt /run/ktm /run/lock
chown libvirt-qemu:kvm /run/ktm
chmod 0770 /run/ktm
for d in etc:/etc/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
	log:/var/log/libvirt; do
	mount --bind "$me/${d%%:*}" "${d#*:}"
done
ip link set lo up
echo ready > "$me/ns.ready"
exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirtd.pid
