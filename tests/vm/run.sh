#!/usr/bin/env bash
# run.sh - run one command inside a Debian kernel booted under QEMU.
#
# Usage: tests/vm/run.sh [--timeout SECONDS] [--mem MiB] [--smp N] KERNEL_DIR -- COMMAND [ARGS...]
#
# KERNEL_DIR is a directory prepared by tests/vm/fetch-kernels.sh. The guest
# sees the host's / read-only (virtio-9p) and the current directory read-write
# at the same path, chroots into the host root and runs COMMAND there as root,
# with the crypto and TLS modules preloaded. COMMAND's output appears on stdout;
# run.sh exits with COMMAND's status, 124 on timeout, 125 when the VM failed.
# See tests/vm/README.md.
set -euo pipefail

prog=vm
timeout=900
mem=2048
smp=2

usage() {
	cat <<'EOF'
Usage: run.sh [--timeout SECONDS] [--mem MiB] [--smp N] KERNEL_DIR -- COMMAND [ARGS...]
Exit status: COMMAND's, 124 on timeout, 125 when the VM failed, 2 on bad usage.
Environment: KTM_CACHE_DIR, KTM_VM_ACCEL (kvm|tcg), KTM_VM_MODULES (extra
modules to preload), KTM_VM_SKIP_MODULES (modules to leave out),
KTM_VM_PATH (guest PATH), KTM_VM_APPEND (kernel command line), KTM_VM_BOOT_TIMEOUT (default 120), KTM_QEMU, KTM_BUSYBOX, V=1|2.
Passed to the guest: CI, KTLS_REQUIRE, V and every KTM_* variable.
EOF
}

bad_usage() {
	printf 'run.sh: %s\n' "$1" >&2
	usage >&2
	exit 2
}
fail() { # infrastructure failure: not COMMAND's fault
	printf '# %s: error: %s\n' "$prog" "$*"
	exit 125
}
num() { [[ $2 =~ ^[1-9][0-9]*$ ]] || bad_usage "$1 needs a positive integer"; }

while (($#)); do
	case $1 in
	--timeout)
		(($# >= 2)) || bad_usage "--timeout needs a value"
		num "$1" "$2"
		timeout=$2
		shift 2
		;;
	--mem)
		(($# >= 2)) || bad_usage "--mem needs a value"
		num "$1" "$2"
		mem=$2
		shift 2
		;;
	--smp)
		(($# >= 2)) || bad_usage "--smp needs a value"
		num "$1" "$2"
		smp=$2
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	--) bad_usage "KERNEL_DIR missing" ;;
	-*) bad_usage "unknown option $1" ;;
	*) break ;;
	esac
done
(($# >= 3)) || bad_usage "expected KERNEL_DIR -- COMMAND [ARGS...]"
[[ $2 == -- ]] || bad_usage "expected KERNEL_DIR -- COMMAND [ARGS...]"
kernel_dir=$(cd "$1" 2>/dev/null && pwd -P) || fail "no such kernel directory: $1"
shift 2

verbose=0
[[ ${V:-0} == 0 || -z ${V:-} ]] || verbose=1
[[ ${V:-} != 2 ]] || verbose=2 # V=2: boot messages too
say() { ((verbose == 0)) || printf '# %s: %s\n' "$prog" "$*"; }

script_path=$(readlink -f "${BASH_SOURCE[0]}")
cache_dir=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
qemu=${KTM_QEMU:-qemu-system-x86_64}
busybox=${KTM_BUSYBOX:-$(command -v busybox || true)}
command -v "$qemu" >/dev/null || fail "$qemu not found (apt-get install qemu-system-x86)"
command -v cpio >/dev/null || fail "cpio not found (apt-get install cpio)"
[[ -n $busybox && -x $busybox ]] || fail "busybox not found (apt-get install busybox-static)"
# has_interp ELF: true when the ELF file has a PT_INTERP header (dynamic).
has_interp() {
	local phoff phentsize phnum i
	phoff=$(od -An -j32 -N8 -tu8 "$1" | tr -d ' ')
	phentsize=$(od -An -j54 -N2 -tu2 "$1" | tr -d ' ')
	phnum=$(od -An -j56 -N2 -tu2 "$1" | tr -d ' ')
	for ((i = 0; i < phnum; i++)); do
		[[ $(od -An -j$((phoff + i * phentsize)) -N4 -tu4 "$1" | tr -d ' ') != 3 ]] || return 0
	done
	return 1
}
if has_interp "$busybox"; then
	fail "$busybox is dynamically linked (apt-get install busybox-static)"
fi

mdir=$kernel_dir/modules
[[ -f $kernel_dir/vmlinuz && -f $mdir/modules.dep ]] ||
	fail "$kernel_dir has no vmlinuz or modules/modules.dep (run tests/vm/fetch-kernels.sh)"
if [[ -f $kernel_dir/release ]]; then
	release=$(<"$kernel_dir/release")
else
	release=${kernel_dir##*/}
fi

# --- modules ----------------------------------------------------------------
# Loaded in this order (each after its modules.dep dependencies). tls.ko does
# not depend on the ciphers, which it looks up at setsockopt time, so they go
# first. Names differ between kernel versions: absent ones are skipped.
modules=(
	virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio_rng netfs fscache 9pnet 9pnet_virtio 9p
	cryptd crypto_simd gf128mul ghash_generic ghash_clmulni_intel aesni_intel
	ctr gcm ccm crypto_null
	libchacha chacha_generic chacha_x86_64 chacha
	libpoly1305 poly1305_generic poly1305_x86_64
	libchacha20poly1305 chacha20poly1305 tls
)
required=(9pnet 9pnet_virtio 9p gcm ccm chacha20poly1305 tls)
if [[ -n ${KTM_VM_MODULES:-} ]]; then
	read -ra extra <<<"${KTM_VM_MODULES//,/ }"
	modules+=("${extra[@]}")
	required+=("${extra[@]}")
fi
# KTM_VM_SKIP_MODULES: leave these out (e.g. "gcm ccm chacha20poly1305":
# tls loads but TLS_TX fails with ENOENT, so the library must fall back;
# the tests under KTLS_REQUIRE=1 must then fail).
if [[ -n ${KTM_VM_SKIP_MODULES:-} ]]; then
	read -ra skip <<<"${KTM_VM_SKIP_MODULES//,/ }"
	mapfile -t modules < <(printf '%s\n' "${modules[@]}" | grep -vxF -f <(printf '%s\n' "${skip[@]}"))
	mapfile -t required < <(printf '%s\n' "${required[@]}" | grep -vxF -f <(printf '%s\n' "${skip[@]}"))
	# and the kernel must not load them on demand either
	skip_append=" module_blacklist=$(IFS=,; echo "${skip[*]}")"
fi

# Prints "R|O relative/path.ko" in load order; "missing NAME" for required
# modules that are neither modules nor builtin.
resolve_modules() {
	local builtin=$mdir/modules.builtin
	[[ -f $builtin ]] || builtin=/dev/null
	awk -v want="${modules[*]}" -v req="${required[*]}" '
		function norm(f) { sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?:?$/, "", f); gsub(/-/, "_", f); return f }
		function visit(f, flag,   n, d, i) {
			if (f in seen) return
			seen[f] = 1
			n = split(deps[f], d, " ")
			for (i = n; i >= 1; i--) visit(d[i], "O")
			print flag, f
		}
		FNR == NR { builtin[norm($1)] = 1; next }
		{ f = $1; sub(/:$/, "", f); path[norm(f)] = f; $1 = ""; deps[f] = $0 }
		END {
			n = split(req, r, " "); for (i = 1; i <= n; i++) isreq[r[i]] = 1
			n = split(want, w, " ")
			for (i = 1; i <= n; i++) {
				m = w[i]; gsub(/-/, "_", m)
				if (m in path) visit(path[m], (m in isreq) ? "R" : "O")
				else if (!(m in builtin) && (m in isreq)) print "missing", m
			}
		}
	' "$builtin" "$mdir/modules.dep"
}
load_list=$(resolve_modules)
if grep -q '^missing ' <<<"$load_list"; then
	fail "required modules not in $release:$(awk '$1=="missing"{printf " %s", $2}' <<<"$load_list")"
fi
say "modules: $(awk '{n=$2; sub(/.*\//,"",n); sub(/\.ko$/,"",n); printf "%s ", n}' <<<"$load_list")"

# --- the guest's /init -------------------------------------------------------
# Runs as PID 1 under busybox sh. /ktm/env (per run) sets VM_NONCE, VM_ACCEL,
# VM_CWD, VM_VERBOSE, VM_MODDIR.
init_script() {
	cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# shellcheck source=/dev/null
. /ktm/env
die() {
	echo "# vm: error: $*"
	poweroff -f
	sleep 60
}
while read -r flag path; do
	name=${path##*/}
	name=${name%.ko}
	if ! err=$(insmod "/mods/$path" 2>&1); then
		case $err in *"File exists"*) continue ;; esac
		[ "$flag" = R ] && die "insmod $name failed: $err"
		[ -n "$VM_VERBOSE" ] && echo "# vm: optional module $name not loaded: $err"
	fi
done </mods/load.list
ip link set lo up || die "cannot bring up lo"
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" hostroot /host || die "cannot mount the host root over 9p"
h=/host
mount -t proc proc $h/proc
mount -t sysfs sysfs $h/sys
mount -t devtmpfs devtmpfs $h/dev
mkdir -p $h/dev/pts $h/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $h/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $h/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $h/tmp
mount -t tmpfs -o mode=0755 tmpfs $h/run
if [ -n "$VM_CWD" ]; then
	mkdir -p "$h$VM_CWD" 2>/dev/null
	mount -t 9p -o "$opts,cache=mmap" hostcwd "$h$VM_CWD" || die "cannot mount $VM_CWD over 9p"
fi
# on-demand module loading (request_module) from the host's copy of the tree
if [ -n "$VM_MODDIR" ] && [ -d "$h$VM_MODDIR" ]; then
	mkdir -p /lib/modules /sbin
	ln -s "$h$VM_MODDIR" "/lib/modules/$(uname -r)"
	ln -s /bin/busybox /sbin/modprobe
fi
mkdir -p $h/run/ktm
cp /ktm/cmd.sh $h/run/ktm/cmd.sh
echo "# guest kernel: $(uname -r)"
echo "# accel: $VM_ACCEL"
env -i HOME=/root PATH="$VM_PATH" TERM=dumb LANG=C.UTF-8 \
	chroot $h /bin/sh /run/ktm/cmd.sh </dev/null
rc=$?
dmesg | grep -E 'BUG|WARNING|Call Trace|lockdep|general protection' |
	while IFS= read -r l; do echo "# dmesg: $l"; done
echo "@@ktm-exit:$VM_NONCE:$rc@@"
# wait until the UART has sent everything, then power off
stty -F /dev/console -echo 2>/dev/null
sync
poweroff -f
sleep 60
EOF
}

# --- scratch space, cleanup ----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktm-vm.XXXXXX")
qpid=
btmp=
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	[[ -z $qpid ]] || kill "$qpid" 2>/dev/null || true
	rm -rf "$tmp"
	[[ -z $btmp ]] || rm -rf "$btmp" "$btmp.cpio"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- initramfs (cached per kernel) -------------------------------------------
key=$({
	cat "$script_path"
	printf '%s\n' "$kernel_dir" "$load_list"
	sha256sum "$busybox"
} | sha256sum | cut -c1-16)
if [[ -w $kernel_dir ]]; then
	initrd_dir=$kernel_dir
else
	initrd_dir=$cache_dir/initramfs/$(printf '%s' "$kernel_dir" | sha256sum | cut -c1-16)
fi
initrd=$initrd_dir/initramfs-$key.cpio
build_initramfs() {
	local f
	say "building $initrd"
	mkdir -p "$initrd_dir"
	btmp=$(mktemp -d "$initrd_dir/.initramfs.XXXXXX")
	local tmp=$btmp
	mkdir -p "$tmp"/{bin,dev,proc,sys,host,tmp,mods,ktm}
	cp "$busybox" "$tmp/bin/busybox"
	init_script >"$tmp/init"
	chmod 755 "$tmp/init"
	awk '{print $1, $2}' <<<"$load_list" >"$tmp/mods/load.list"
	while read -r _ f; do
		mkdir -p "$tmp/mods/${f%/*}"
		cp "$mdir/$f" "$tmp/mods/$f"
	done <<<"$load_list"
	(cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$tmp.cpio"
	rm -rf "$tmp"
	mv -f "$tmp.cpio" "$initrd"
	btmp=
	for f in "$initrd_dir"/initramfs-*.cpio; do
		[[ $f == "$initrd" ]] || rm -f "$f"
	done
}
[[ -f $initrd ]] || build_initramfs

# --- accelerator ---------------------------------------------------------------
accel=${KTM_VM_ACCEL:-}
if [[ -z $accel ]]; then
	accel=tcg
	if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ ! -e /sys/module/kvm_pvm ]] &&
		[[ -r /dev/kvm && -w /dev/kvm ]]; then
		accel=kvm
	fi
fi
# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
case $accel in
kvm) accel_args=(-accel kvm -cpu host) ;;
tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
*) fail "KTM_VM_ACCEL must be kvm or tcg" ;;
esac

# --- per-run part of the initramfs -----------------------------------------------

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
cwd=$(pwd -P)
[[ $cwd != / ]] || cwd=
nonce=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
mkdir -p "$tmp/run/ktm"
{
	printf 'VM_NONCE=%s\n' "$nonce"
	printf 'VM_ACCEL=%s\n' "$accel"
	printf 'VM_CWD=%s\n' "$(q "$cwd")"
	printf 'VM_VERBOSE=%s\n' "$( ((verbose)) && echo 1)"
	printf 'VM_MODDIR=%s\n' "$(q "$mdir")"
	printf 'VM_PATH=%s\n' "$(q "${KTM_VM_PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}")"
} >"$tmp/run/ktm/env"
{
	while read -r name; do
		case $name in
		CI | KTLS_REQUIRE | V | KTM_*) printf 'export %s=%s\n' "$name" "$(q "${!name}")" ;;
		esac
	done < <(compgen -e)
	if [[ -n $cwd ]]; then
		printf 'cd %s || exit 125\n' "$(q "$cwd")"
	fi
	printf 'exec'
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	printf '\n'
} >"$tmp/run/ktm/cmd.sh"
mv "$tmp/run/ktm" "$tmp/ktm"
(cd "$tmp" && printf '%s\n' ktm ktm/env ktm/cmd.sh | cpio --quiet -o -H newc -R 0:0) >"$tmp/run.cpio"
# (another run.sh may have replaced the cached image meanwhile: build it again)
cat "$initrd" "$tmp/run.cpio" >"$tmp/initrd" 2>/dev/null || {
	build_initramfs
	cat "$initrd" "$tmp/run.cpio" >"$tmp/initrd"
}

# --- boot ---------------------------------------------------------------------
# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
qemu_args=(
	-nodefaults -no-user-config -display none -no-reboot
	"${accel_args[@]}" -m "$mem" -smp "$smp"
	-kernel "$kernel_dir/vmlinuz" -initrd "$tmp/initrd"
	-append "console=ttyS0 quiet loglevel=2 panic=-1 rdinit=/init 8250.nr_uarts=1${skip_append:-}${KTM_VM_APPEND:+ $KTM_VM_APPEND}"
	-serial stdio
	-device virtio-rng-pci
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
)
if [[ -n $cwd ]]; then
	qemu_args+=(-virtfs "local,path=$cwd,mount_tag=hostcwd,security_model=none,multidevs=remap")
fi
say "qemu: $qemu ${qemu_args[*]}"

# A TCG boot very rarely stops making progress before userspace (seen twice in
# ~300 boots of 7.3 on a loaded 2-core host). Nothing has run yet then, so a
# boot that has not reached /init's first line in KTM_VM_BOOT_TIMEOUT seconds
# is killed and retried (3 attempts, all within --timeout).
boot_timeout=${KTM_VM_BOOT_TIMEOUT:-120}
[[ $boot_timeout =~ ^[1-9][0-9]*$ ]] || fail "KTM_VM_BOOT_TIMEOUT must be a positive integer"
mkfifo "$tmp/console"
marker="@@ktm-exit:$nonce:"
start=$SECONDS
attempt=0
while :; do
	attempt=$((attempt + 1))
	boot_start=$SECONDS
	"$qemu" "${qemu_args[@]}" <"/dev/null" >"$tmp/console" 2>"$tmp/qemu.err" &
	qpid=$!
	exec 3<"$tmp/console"
	ring=()
	started=0
	status=
	result=
	while :; do
		wait_for=$((start + timeout - SECONDS))
		if ((wait_for <= 0)); then
			result=timeout
			break
		fi
		if ((!started)); then
			left=$((boot_start + boot_timeout - SECONDS))
			if ((left <= 0)); then
				result=hung
				break
			fi
			((left >= wait_for)) || wait_for=$left
		fi
		line=
		st=0
		IFS= read -r -t "$wait_for" -u 3 line || st=$?
		if ((st)); then
			((st <= 128)) || continue # read timed out: check the deadlines
			if [[ -z $line ]]; then
				result=died
				break
			fi
		fi
		line=${line//$'\r'/}
		ring+=("$line")
		((${#ring[@]} <= 30)) || ring=("${ring[@]:1}")
		if [[ $line == *"$marker"* ]]; then
			status=${line#*"$marker"}
			status=${status%%@@*}
			result=status
			break
		fi
		if ((started)); then
			printf '%s\n' "$line"
		elif [[ $line == "# guest kernel: "* ]]; then
			started=1
			printf '%s\n' "$line"
		elif ((verbose > 1)) || [[ $line == "# vm: "* ]]; then
			printf '%s\n' "$line"
		fi
	done
	if [[ $result != hung ]] || ((attempt >= 3)); then
		break
	fi
	kill "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
	qpid=
	exec 3<&-
	printf '# %s: the guest did not start within %s s; retrying (attempt %s)\n' \
		"$prog" "$boot_timeout" "$((attempt + 1))"
done

if [[ $result == timeout ]]; then
	line=${line//$'\r'/}
	if ((started)) && [[ -n $line ]]; then printf '%s\n' "$line"; fi
	kill "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
	qpid=
	printf '# %s: timeout after %s s\n' "$prog" "$timeout"
	exit 124
fi

# drain the console until QEMU exits (the guest powers off); give it 30 s
if [[ $result == status ]]; then
	while IFS= read -r -t 30 -u 3 _; do :; done || true
fi
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
qpid=
say "wall time $((SECONDS - start)) s"

if [[ $result == hung ]]; then
	printf '# %s: the guest did not start within %s s (%s attempts); last console lines:\n' \
		"$prog" "$boot_timeout" "$attempt"
	((${#ring[@]} == 0)) || printf '%s\n' "${ring[@]}"
	exit 125
fi
if [[ -z $status ]]; then
	if ((started)); then
		printf '# %s: the guest died without reporting an exit status (console above)\n' "$prog"
	else
		printf '# %s: the guest died without reporting an exit status; last console lines:\n' "$prog"
		((${#ring[@]} == 0)) || printf '%s\n' "${ring[@]}"
	fi
	if [[ -s $tmp/qemu.err ]]; then
		printf '# %s: qemu stderr:\n' "$prog"
		tail -n 20 "$tmp/qemu.err"
	fi
	exit 125
fi
[[ $status =~ ^[0-9]+$ ]] || fail "bad exit status from the guest: $status"
if ((verbose)) && [[ -s $tmp/qemu.err ]]; then
	sed "s/^/# $prog: qemu: /" "$tmp/qemu.err"
fi
exit "$status"
