#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/libvirt/run.sh [--build DIR] [--keep] - libvirt migrating a running
# guest through ktls-migrate proxy, TAP.
#
# Two "hosts" on this machine: two libvirtd (Debian 12's libvirt 9.0, QEMU
# 7.2), each PID-1-less in its own mount and network namespace
# (tests/libvirt/ns.sh: own /run, /etc/libvirt with its own host_uuid,
# /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt), joined by a veth
# pair (10.77.0.1 A, 10.77.0.2 B).  libvirt's "migration using only UNIX
# sockets" (docs/migration.rst): the control connection is B's libvirtd
# socket by path; the migration stream to B (and the NBD stream of
# --copy-storage-all) leaves QEMU on A at /run/ktm/to-B.sock
# (/run/ktm/nbd.sock), where `ktls-migrate proxy source` listens (the socket
# given to libvirt-qemu, the user QEMU runs as, with --unix-owner), crosses the veth as TLS
# to `proxy dest` in B, which hands it to B's QEMU listening at the same
# path in B's namespace; back to A the same way through /run/ktm/to-A.sock.
# The proxies run for the whole test, as the contrib/libvirt units run them.
#
# The guest: the newest cached guest kernel (tests/vm/fetch-kernels.sh),
# direct kernel boot under TCG, a busybox initramfs whose init writes a
# random marker into RAM (and onto its disk when it has one), then dirties
# 4 MiB of RAM a second and prints "ALIVE N MARKER disk=..." on the serial
# console (a file per namespace).  Cases, with virsh migrate --live --p2p:
#   live          a guest booted on A, to B
#   parallel      the same guest back to A, --parallel --parallel-connections 2
#   postcopy      and to B again, --postcopy with a 4 MiB/s precopy and
#                 `virsh migrate-postcopy` once 2 MiB moved; libvirt's
#                 lifecycle events must show the switch (A: "Suspended
#                 Post-copy", B: "Resumed Post-copy")
#   copy_storage  a guest with a disk booted on A, to B, --copy-storage-all
#                 --disks-uri unix:///run/ktm/nbd.sock
# Each must leave the guest running on the destination, gone from the
# source, printing new ALIVE lines with the marker from before (and, for
# copy_storage, B's disk image holding it); the proxies report clean
# connections.  KTM_LIBVIRT_CASES picks cases (in this order).
# Needs root, libvirt-daemon-system, busybox-static, cpio, iproute2 and a
# cached guest kernel (make deps).  About 2-3 minutes.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$here/../.." && pwd)
BUILD=$TOP/build
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "$2" && pwd); shift 2 ;;
	--keep) keep=1; shift ;;
	-h|--help) sed -n '3,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "tests/libvirt/run.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
TOOL=$BUILD/ktls-migrate
require=0
if [ "${CI:-}" = true ] || [ "${KTLS_REQUIRE:-}" = 1 ]; then
	require=1
fi
cases=(live parallel postcopy copy_storage)
if [ -n "${KTM_LIBVIRT_CASES:-}" ]; then	# e.g. "live copy_storage"
	read -ra cases <<< "$KTM_LIBVIRT_CASES"
fi
dom=ktm-guest

note() { printf '# %s\n' "$*"; }
bail() {	# REASON: the whole test cannot run
	echo "TAP version 13"
	echo "1..1"
	if [ $require = 1 ] || [ "${2:-}" = fail ]; then
		echo "not ok 1 libvirt # $1"
		exit 1
	fi
	echo "ok 1 libvirt # SKIP $1"
	exit 0
}

[ -x "$TOOL" ] || bail "$TOOL missing: run make" fail
[ "$(id -u)" = 0 ] || bail "needs root (two libvirtd in namespaces)"
for c in libvirtd virsh unshare nsenter ip busybox cpio; do
	command -v "$c" >/dev/null || bail "$c not installed (make deps)"
done
kdir=$(bash "$TOP/tests/vm/fetch-kernels.sh" --list 2>/dev/null | tail -n 1)
[ -n "$kdir" ] || bail "no guest kernel cached (make deps)"

cache=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}/libvirt-cache
WORK=$(mktemp -d /var/tmp/ktm-lv.XXXXXX) || exit 1
chmod 0755 "$WORK"
pids=()
veth=ktm$$
cleanup() {
	local p
	restore_uffd
	for n in A B; do
		virsh -c "$(uri $n)" destroy "$dom" >/dev/null 2>&1
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	ip link del "${veth}a" 2>/dev/null
	if [ $keep = 1 ]; then note "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

uri() { echo "qemu+unix:///system?socket=$WORK/sock-$1/libvirt-sock"; }
in_ns() {	# NAME COMMAND...: run in that host's namespaces
	local n=$1
	shift
	nsenter -t "$(cat "$WORK/$n/pid")" -m -n -- "$@"
}
vsh() { local n=$1; shift; virsh -q -c "$(uri "$n")" "$@"; }
wait_for() {	# SECONDS COMMAND...: until the command succeeds
	local n=$(($1 * 10))
	shift
	while ((n-- > 0)); do
		"$@" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ---- the guest -----------------------------------------------------------------

make_initrd() {
	local root=$WORK/initrd.d mdir=$kdir/modules m f
	mkdir -p "$root"/{bin,proc,sys,dev,mods}
	cp "$(command -v busybox)" "$root/bin/busybox"
	# virtio-blk and what it needs, where the kernel has them as modules
	for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev \
		 virtio/virtio_pci_modern_dev virtio/virtio_pci block/virtio_blk; do
		f=$mdir/kernel/drivers/$m.ko
		[ -f "$f" ] && cp "$f" "$root/mods/"
	done
	cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
	[ -f /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null
done
marker=ktm-$(cat /proc/sys/kernel/random/uuid)
echo "$marker" > /marker
disk=-
if [ -b /dev/vda ]; then
	printf 'KTMDISK %s\n' "$marker" | dd of=/dev/vda conv=notrunc 2>/dev/null
	sync
fi
echo "READY $marker"
n=0
while :; do
	n=$((n + 1))
	dd if=/dev/urandom of=/dirty bs=64k count=64 2>/dev/null
	[ -b /dev/vda ] && disk=$(dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -n 1)
	echo "ALIVE $n $(cat /marker) disk=$disk"
	sleep 1
done
EOF
	chmod 755 "$root/init"
	(cd "$root" && find . | cpio --quiet -o -H newc -R 0:0) > "$WORK/initrd"
}

domain_xml() {	# DISK(0|1)
	cat <<EOF
<domain type='qemu'>
  <name>$dom</name>
  <memory unit='MiB'>160</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <kernel>/run/ktm/vmlinuz</kernel>
    <initrd>/run/ktm/initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='/run/ktm/console.log'/>
      <target port='0'/>
    </serial>
$( [ "$1" = 1 ] && cat <<'DISK'
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/run/ktm/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
DISK
)
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# ---- the two hosts ----------------------------------------------------------------

host_conf() {	# NAME UUID
	local me=$WORK/$1
	mkdir -p "$me"/{etc/qemu,lib,log} "$WORK/sock-$1"
	# libvirtd probes every QEMU binary when its cache is empty (a minute
	# or more on a busy 2-core machine): keep each host's cache between
	# runs, outside the tree (libvirt revalidates it against the binaries)
	mkdir -p "$cache/$1"
	ln -s "$cache/$1" "$me/cache"
	cat > "$me/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$WORK/sock-$1"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "$2"
log_outputs = "3:file:$me/libvirtd.log"
EOF
	# QEMU as libvirt-qemu, as Debian runs it; no cgroups, no private /dev,
	# no virtlogd: there is no systemd here
	cat > "$me/etc/qemu.conf" <<'EOF'
user = "libvirt-qemu"
group = "kvm"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
remember_owner = 0
EOF
}

start_host() {	# NAME UUID
	local n=$1
	host_conf "$n" "$2"
	unshare --mount --net --propagation private -- \
		bash "$here/ns.sh" "$WORK" "$n" > "$WORK/$n/ns.log" 2>&1 &
	pids+=($!)
	echo $! > "$WORK/$n/pid"
	wait_for 30 test -f "$WORK/$n/ns.ready" || return 1
	in_ns "$n" cp "$kdir/vmlinuz" /run/ktm/vmlinuz &&
		in_ns "$n" cp "$WORK/initrd" /run/ktm/initrd || return 1
	wait_for 60 vsh "$n" version >/dev/null
}

link_hosts() {
	ip link add "${veth}a" type veth peer name "${veth}b" || return 1
	ip link set "${veth}a" netns "$(cat "$WORK/A/pid")" &&
		ip link set "${veth}b" netns "$(cat "$WORK/B/pid")" || return 1
	in_ns A ip addr add 10.77.0.1/24 dev "${veth}a" &&
		in_ns A ip link set "${veth}a" up &&
		in_ns B ip addr add 10.77.0.2/24 dev "${veth}b" &&
		in_ns B ip link set "${veth}b" up
}

# proxy NAME NS ARGS...: a long-running proxy end in that namespace
proxy() {
	local name=$1 n=$2
	shift 2
	# nsenter itself, not the in_ns function: a function in the
	# background is a subshell, and killing that at cleanup would leave
	# the proxy running (nsenter -m -n execs the tool: $! is the proxy)
	nsenter -t "$(cat "$WORK/$n/pid")" -m -n -- "$TOOL" proxy "$@" \
		--creds "$WORK/creds" > "$WORK/$name.out" 2> "$WORK/$name.err" &
	pids+=($!)
	wait_for 30 grep -q '^listening on ' "$WORK/$name.out" || {
		note "proxy $name did not start: $(head -n 3 "$WORK/$name.err")"
		return 1
	}
}

start_proxies() {
	bash "$TOP/scripts/make-creds.sh" "$WORK/creds" >/dev/null || return 1
	# A -> B: migration and NBD; B -> A: migration.  The path of each
	# direction is the same on both hosts (libvirt's --migrateuri)
	proxy pd-to-B B dest --listen 10.77.0.2:4444 --unix /run/ktm/to-B.sock &&
	proxy pd-nbd B dest --listen 10.77.0.2:4445 --unix /run/ktm/nbd.sock &&
	proxy pd-to-A A dest --listen 10.77.0.1:4446 --unix /run/ktm/to-A.sock &&
	# QEMU runs as libvirt-qemu: the source ends give it their sockets
	# (and admit it by SO_PEERCRED) as libvirt would have them run
	proxy ps-to-B A source --unix /run/ktm/to-B.sock --connect 10.77.0.2:4444 \
		--hostname localhost --unix-owner libvirt-qemu --unix-group kvm \
		--unix-mode 0660 &&
	proxy ps-nbd A source --unix /run/ktm/nbd.sock --connect 10.77.0.2:4445 \
		--hostname localhost --unix-owner libvirt-qemu --unix-group kvm \
		--unix-mode 0660 &&
	proxy ps-to-A B source --unix /run/ktm/to-A.sock --connect 10.77.0.1:4446 \
		--hostname localhost --unix-owner libvirt-qemu --unix-group kvm \
		--unix-mode 0660 || return 1
	# the dest ends' sockets are QEMU's own (it listens there)
}

setup() {
	make_initrd || return 1
	start_host A "$(cat /proc/sys/kernel/random/uuid)" || return 1
	start_host B "$(cat /proc/sys/kernel/random/uuid)" || return 1
	link_hosts || return 1
	start_proxies || return 1
	note "libvirt $(vsh A version | sed -n 's/^Using library: //p'), kernel $(cat "$kdir/release"), proxies: $(head -n 1 "$WORK/ps-to-B.out")"
}

# ---- one migration ------------------------------------------------------------------

bad=0
check() {
	local what=$1
	shift
	"$@" && return 0
	note "FAILED: $what"
	bad=1
	return 1
}
ok_lines() { grep -c ': ok: ' "$1" 2>/dev/null; }
console() { in_ns "$1" cat /run/ktm/console.log 2>/dev/null; }
alive_after() {	# NAME N MARKER: an ALIVE line past N with MARKER
	console "$1" | awk -v n="$2" -v m="$3" '$1 == "ALIVE" && $2 > n && $3 == m { f = 1 } END { exit !f }'
}

# boot DISK(0|1): a fresh guest on A, running its loop
boot() {
	local t0=$SECONDS
	for n in A B; do
		vsh $n destroy "$dom" >/dev/null 2>&1
		in_ns $n rm -f /run/ktm/console.log
	done
	domain_xml "$1" > "$WORK/dom.xml"
	vsh A create "$WORK/dom.xml" > "$WORK/create.out" 2>&1 || {
		note "FAILED: virsh create on A: $(cat "$WORK/create.out")"; return 1; }
	check "the guest boots on A and prints its marker" \
		wait_for 180 sh -c "nsenter -t $(cat "$WORK/A/pid") -m -n -- grep -q '^ALIVE 2 ' /run/ktm/console.log" ||
		{ console A | tail -n 5 | sed 's/^/#   A: /'; return 1; }
	marker=$(console A | sed -n 's/^READY //p' | tr -d '\r')
	note "booted on A after $((SECONDS - t0)) s: marker $marker"
}

# migrate_case CASE FROM TO: the running guest migrated FROM -> TO
migrate_case() {
	local c=$1 from=$2 to=$3 flags=(--live --p2p) last before_m before_n t0 mig_pid
	local out=$WORK/ps-to-$3.out
	bad=0
	case $c in
	live) boot 0 || return 1 ;;
	parallel) flags+=(--parallel --parallel-connections 2) ;;
	postcopy)
		# a low precopy bandwidth keeps it in precopy until
		# postcopy_switch; after the switch QEMU sends at full speed
		# (max-postcopy-bandwidth 0)
		flags+=(--postcopy --bandwidth 4)
		events_start "$from" && events_start "$to" || return 1
		# QEMU 7.2 running as libvirt-qemu needs unprivileged
		# userfaultfd for postcopy (libvirt 9.0 does not hand it
		# /dev/userfaultfd); set for this case only, restored after
		uffd_old=$(sysctl -n vm.unprivileged_userfaultfd)
		sysctl -q -w vm.unprivileged_userfaultfd=1 ;;
	copy_storage)
		flags+=(--copy-storage-all --disks-uri unix:///run/ktm/nbd.sock)
		for n in A B; do
			in_ns $n rm -f /run/ktm/disk.raw
			in_ns $n truncate -s 16M /run/ktm/disk.raw
			in_ns $n chown libvirt-qemu:kvm /run/ktm/disk.raw
		done
		boot 1 || return 1 ;;
	esac
	last=$(console "$from" | awk '$1 == "ALIVE" { n = $2 } END { print n }')
	note "guest on $from: ALIVE $last; migrating to $to"
	before_m=$(($(ok_lines "$out") + 0))
	before_n=$(($(ok_lines "$WORK/ps-nbd.out") + 0))
	t0=$SECONDS
	vsh "$from" migrate "${flags[@]}" "$dom" "$(uri "$to")" \
		--migrateuri "unix:///run/ktm/to-$to.sock" > "$WORK/migrate.out" 2>&1 &
	mig_pid=$!
	[ "$c" = postcopy ] && postcopy_switch "$from"
	wait "$mig_pid"
	check "virsh migrate ${flags[*]} succeeds" test $? = 0 ||
		sed 's/^/#   /' "$WORK/migrate.out"
	note "virsh migrate: $((SECONDS - t0)) s"
	if [ "$c" = postcopy ]; then
		events_stop
		sed 's/^/#   events: /' "$WORK/events-$from" "$WORK/events-$to"
		# libvirt's own record of the switch (its lifecycle events)
		check "libvirt on $from: the guest was suspended for post-copy" \
			grep -q "lifecycle' for domain '$dom': Suspended Post-copy" "$WORK/events-$from"
		check "libvirt on $to: the guest resumed in post-copy" \
			grep -q "lifecycle' for domain '$dom': Resumed Post-copy" "$WORK/events-$to"
	fi
	vsh "$to" domjobinfo --completed "$dom" 2>&1 | grep -iE 'postcopy|time elapsed|data processed' |
		tr -s ' ' | paste -sd ';' | sed 's/^/# job on destination: /'
	restore_uffd
	check "the guest runs on $to" test "$(vsh "$to" domstate "$dom" 2>&1)" = running
	check "the guest is gone from $from" eval '! vsh "$from" domstate "$dom" >/dev/null 2>&1'
	check "the guest on $to prints new ALIVE lines with the marker from before" \
		wait_for 60 alive_after "$to" "$last" "$marker"
	console "$to" | grep ALIVE | tail -n 1 | sed "s/^/#   $to: /"
	if [ "$c" = copy_storage ]; then
		check "B's copied disk holds the marker written on A" \
			test "$(in_ns B head -c 60 /run/ktm/disk.raw | head -n 1)" = "KTMDISK $marker"
		check "the guest on B reads the marker from its disk" \
			sh -c "nsenter -t $(cat "$WORK/B/pid") -m -n -- cat /run/ktm/console.log | grep -q 'disk=KTMDISK $marker'"
		check "the NBD stream went through the proxy (new clean connections)" \
			test "$(($(ok_lines "$WORK/ps-nbd.out") + 0))" -gt "$before_n"
	fi
	wait_for 10 test "$(($(ok_lines "$out") + 0))" -gt "$before_m"
	check "the migration stream went through the proxy ($(($(ok_lines "$out") - before_m)) new clean connection(s))" \
		test "$(($(ok_lines "$out") + 0))" -gt "$before_m"
	if [ "$c" = parallel ]; then
		check "--parallel-connections 2: 3 TLS sessions (main + 2)" \
			test "$(($(ok_lines "$out") - before_m))" = 3
	fi
	check "no proxy reported a failed connection" \
		eval '! grep -q ": failed: " "$WORK"/p[sd]-*.out'
	tail -n "$(($(ok_lines "$out") - before_m))" "$out" | sed 's/^/#   /'
	return $bad
}

# events_start NAME: libvirt's lifecycle events on host NAME, into
# $WORK/events-NAME, until events_stop
ev_pids=()
events_start() {
	stdbuf -oL virsh -c "$(uri "$1")" event --event lifecycle --loop \
		--timestamp > "$WORK/events-$1" 2>&1 &
	ev_pids+=($!)
	pids+=($!)
	sleep 0.5	# registered before the migration starts
	kill -0 "$!" 2>/dev/null
}
events_stop() {
	local p
	sleep 1	# the last events reach the watchers
	for p in "${ev_pids[@]}"; do kill -INT "$p" 2>/dev/null; done
	for p in "${ev_pids[@]}"; do wait "$p" 2>/dev/null; done
	ev_pids=()
}

# postcopy_switch FROM: once the precopy job on FROM has moved 2 MiB,
# `virsh migrate-postcopy` (the switch to postcopy of a migration started
# with --postcopy)
postcopy_switch() {
	local from=$1 n=600 mib=0
	while ((n-- > 0)); do
		mib=$(vsh "$from" domjobinfo "$dom" 2>/dev/null | awk '
			/^Data processed:/ { v = $3; if ($4 == "KiB") v /= 1024
			if ($4 == "GiB") v *= 1024; print int(v) }')
		[ "${mib:-0}" -ge 2 ] && break
		kill -0 "$mig_pid" 2>/dev/null || return 0	# virsh migrate ended
		sleep 0.1
	done
	note "switching to postcopy after ${mib:-0} MiB of precopy"
	vsh "$from" migrate-postcopy "$dom" 2>&1 | sed 's/^/#   migrate-postcopy: /'
}

uffd_old=
restore_uffd() {
	[ -n "$uffd_old" ] && sysctl -q -w vm.unprivileged_userfaultfd="$uffd_old"
	uffd_old=
}

echo "TAP version 13"
echo "1..$((${#cases[@]} + 1))"
if setup; then
	echo "ok 1 libvirt.setup"
else
	echo "not ok 1 libvirt.setup"
	for f in "$WORK"/A/ns.log "$WORK"/A/libvirtd.log "$WORK"/B/libvirtd.log; do
		[ -s "$f" ] && tail -n 5 "$f" | sed "s|^|#   $(basename "$(dirname "$f")")/$(basename "$f"): |"
	done
	i=1
	for c in "${cases[@]}"; do i=$((i + 1)); echo "not ok $i libvirt.$c # setup failed"; done
	exit 1
fi
i=1 rc=0 marker=
for c in "${cases[@]}"; do
	i=$((i + 1))
	t0=$SECONDS
	# live boots the guest on A; parallel brings it back, postcopy takes it
	# to B again; copy_storage boots a guest with a disk on A
	case $c in parallel) dir=(B A) ;; *) dir=(A B) ;; esac
	if migrate_case "$c" "${dir[@]}"; then
		echo "ok $i libvirt.$c"
	else
		echo "not ok $i libvirt.$c"
		rc=1
		tail -n 5 "$WORK/A/libvirtd.log" "$WORK/B/libvirtd.log" 2>/dev/null | sed 's/^/#   /'
	fi
	note "libvirt.$c: $((SECONDS - t0)) s"
done
exit $rc
