#!/usr/bin/env bash
# fetch-kernels.sh - download and unpack the Debian kernels the VM tests boot.
#
# Usage: tests/vm/fetch-kernels.sh [--list] [--quiet] [--refresh]
#
# Downloads (never installs) two Debian kernels with `apt-get download`,
# unpacks them with `dpkg-deb -x` and prepares them for tests/vm/run.sh:
#   bookworm          linux-image-amd64 of the machine's own apt state (6.1.x)
#   trixie-backports  linux-image-amd64 from trixie-backports (>= 6.14), fetched
#                     through a private apt state directory
# Cache: ${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}/kernels/
# See tests/vm/README.md.
set -euo pipefail

prog=fetch-kernels
quiet=0
list=0
refresh=0

usage() {
	cat <<'EOF'
Usage: fetch-kernels.sh [--list] [--quiet] [--refresh]
  --list     print the directories of ready kernels, one per line, and exit
  --quiet    no progress messages
  --refresh  update the private apt lists (trixie-backports) before resolving
Environment: KTM_CACHE_DIR, XDG_CACHE_HOME, KTM_DEBIAN_MIRROR (override the
mirror URI otherwise read from the machine's apt sources).
EOF
}

while (($#)); do
	case $1 in
	--list) list=1 ;;
	--quiet | -q) quiet=1 ;;
	--refresh) refresh=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done

cache_dir=${KTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-migrate}
kdir=$cache_dir/kernels
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin # depmod lives in sbin

log() { ((quiet)) || printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}

list_ready() {
	local d
	for d in "$kdir"/*/; do
		d=${d%/}
		[[ -L $d || ! -f $d/ready ]] || printf '%s\n' "$d"
	done
}

if ((list)); then
	list_ready
	exit 0
fi

# --- host prerequisites -------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need depmod kmod
need xz xz-utils
need zstd zstd
need flock util-linux
[[ -r $keyring ]] || missing+=(debian-archive-keyring)
if ((${#missing[@]})); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	cmd="apt-get install -y --no-install-recommends ${missing[*]}"
	if ((EUID != 0)); then
		printf '%s: missing host packages; run as root:\n  %s\n' "$prog" "$cmd" >&2
		exit 1
	fi
	log "installing ${missing[*]}"
	$cmd >&2
fi

mkdir -p "$kdir"
exec 9>"$kdir/.lock"
flock 9

# apt options common to every call; as root keep apt from switching to _apt,
# which cannot enter a private cache under $HOME.
apt_common=(-o Acquire::Languages=none)
((EUID != 0)) || apt_common+=(-o APT::Sandbox::User=root)
if ((quiet)); then apt_common+=(-qq); else apt_common+=(-q); fi

# --- mirrors from the machine's own apt configuration ------------------------
# Prints "MAIN_URI SECURITY_URI" (security may be "-").
read_mirrors() {
	local main=${KTM_DEBIAN_MIRROR:-} sec=- uri rel
	# shellcheck disable=SC2016 # $(...) is apt's format syntax
	local fmt='$(REPO_URI) $(RELEASE)'
	while read -r uri rel; do
		uri=${uri%/}
		case $rel in
		*-security) [[ $sec != - ]] || sec=$uri ;;
		*) [[ -n $main ]] || main=$uri ;;
		esac
	done < <(apt-get indextargets --format "$fmt" 'Identifier: Packages' 2>/dev/null)
	[[ -n $main ]] || die "no Debian mirror found in the machine's apt sources (set KTM_DEBIAN_MIRROR)"
	printf '%s %s\n' "$main" "$sec"
}
read -r mirror sec_mirror < <(read_mirrors)

# --- private apt state ------------------------------------------------------
# papt_init NAME SOURCES_TEXT: creates $cache_dir/apt/NAME; sets papt_opts.
papt_opts=()
papt_init() {
	local name=$1 text=$2 dir=$cache_dir/apt/$1
	mkdir -p "$dir"/{lists/partial,cache/archives/partial,etc/sources.list.d,etc/preferences.d}
	: >"$dir/etc/sources.list"
	[[ -e $dir/status ]] || : >"$dir/status"
	if [[ ! -f $dir/etc/sources.list.d/ktm.sources ]] ||
		[[ $(<"$dir/etc/sources.list.d/ktm.sources") != "$text" ]]; then
		printf '%s\n' "$text" >"$dir/etc/sources.list.d/ktm.sources"
		rm -f "$dir/lists/"*_Packages* "$dir/lists/"*Release* "$dir/cache/"*.bin
	fi
	papt_opts=(
		-o "Dir::State=$dir" -o "Dir::State::Lists=$dir/lists"
		-o "Dir::State::status=$dir/status" -o "Dir::Cache=$dir/cache"
		-o Dir::Cache::pkgcache=pkgcache.bin -o Dir::Cache::srcpkgcache=
		-o "Dir::Etc::SourceList=$dir/etc/sources.list"
		-o "Dir::Etc::SourceParts=$dir/etc/sources.list.d"
		-o "Dir::Etc::Preferences=$dir/etc/preferences"
		-o "Dir::Etc::PreferencesParts=$dir/etc/preferences.d"
		-o APT::Architecture=amd64 -o APT::Architectures=amd64
	)
	papt_name=$name
}
papt_update() {
	log "updating private apt lists ($papt_name)"
	apt-get "${apt_common[@]}" "${papt_opts[@]}" update >&2 ||
		die "apt-get update failed for the private $papt_name state"
}
papt_has_lists() { compgen -G "$cache_dir/apt/$papt_name/lists/*Packages*" >/dev/null; }

sources_stanza() { # URI SUITES...
	local uri=$1
	shift
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$*" "$keyring"
}

# --- resolving the kernel packages -------------------------------------------
# resolve OPTS_NAME SUITE_REGEX: prints "RELEASE VERSION PKG..." for the newest
# linux-image-amd64 of a suite matching SUITE_REGEX, using the apt options in
# the array named OPTS_NAME.
resolve() {
	local -n _o=$1
	local suite=$2 ver img deps pkgs=() d
	ver=$(apt-cache "${_o[@]}" madison linux-image-amd64 2>/dev/null |
		awk -F'|' -v s="$suite" '{
			gsub(/ /, "", $2); split($3, w, " "); sub(/\/.*/, "", w[2])
			if (w[2] ~ ("^(" s ")$")) print $2
		}' | sort -V | tail -n1)
	[[ -n $ver ]] || return 1
	img=$(apt-cache "${_o[@]}" depends "linux-image-amd64=$ver" 2>/dev/null |
		awk '$1=="Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
	[[ -n $img ]] || return 1
	deps=$(apt-cache "${_o[@]}" depends "$img=$ver" 2>/dev/null | awk '$1=="Depends:" {print $2}')
	for d in $deps; do
		case $d in
		linux-binary-* | linux-modules-* | linux-base-*-amd64) pkgs+=("$d=$ver") ;;
		esac
	done
	((${#pkgs[@]})) || pkgs=("$img=$ver")
	printf '%s %s %s\n' "${img#linux-image-}" "$ver" "${pkgs[*]}"
}

# --- unpacking ----------------------------------------------------------------
# Module subtrees no test can need (relative to modules/kernel/). Modules named
# *virtio* and anything a kept module depends on are kept anyway.
prune_dirs=(
	sound drivers/gpu drivers/media drivers/infiniband drivers/staging
	drivers/net/wireless drivers/net/ethernet drivers/net/can drivers/net/usb
	drivers/net/wwan drivers/net/ieee802154 drivers/net/hamradio drivers/net/wan
	drivers/net/fddi drivers/net/arcnet drivers/iio drivers/usb drivers/hid
	drivers/input drivers/comedi drivers/mtd drivers/video drivers/bluetooth
	drivers/isdn drivers/hwmon drivers/platform drivers/scsi drivers/target
	drivers/mmc drivers/ata drivers/thunderbolt drivers/nfc drivers/leds
	drivers/pinctrl drivers/gnss drivers/fpga drivers/mfd drivers/regulator
	drivers/power drivers/spi drivers/i2c drivers/w1 drivers/edac
	drivers/accel drivers/soundwire drivers/mux drivers/misc
	net/bluetooth net/mac80211 net/wireless net/nfc net/ieee802154 net/can
	fs/xfs fs/btrfs fs/ocfs2 fs/gfs2 fs/f2fs fs/nfs fs/nfsd fs/ceph fs/smb
	fs/cifs fs/jfs fs/ubifs fs/bcachefs
)

depmod_tree() { # MODULES_DIR RELEASE
	local tmp
	tmp=$(mktemp -d "$kdir/.depmod.XXXXXX")
	mkdir -p "$tmp/lib/modules"
	ln -s "$1" "$tmp/lib/modules/$2"
	depmod -b "$tmp" "$2" || {
		rm -rf "$tmp"
		return 1
	}
	rm -rf "$tmp"
}

prune_modules() { # MODULES_DIR RELEASE
	local mdir=$1 rel=$2 before after
	depmod_tree "$mdir" "$rel"
	before=$(du -sm "$mdir" | cut -f1)
	# modules.dep: "path: dep dep ...". Keep every module outside the pruned
	# subtrees (or named *virtio*) and everything those depend on.
	(cd "$mdir" && awk -v prune="${prune_dirs[*]}" '
		BEGIN { n = split(prune, p, " ") }
		function denied(f,   i) {
			if (f ~ /virtio/) return 0
			for (i = 1; i <= n; i++)
				if (index(f, "kernel/" p[i] "/") == 1) return 1
			return 0
		}
		{
			f = $1; sub(/:$/, "", f); all[f] = 1
			if (!denied(f)) { keep[f] = 1; for (i = 2; i <= NF; i++) keep[$i] = 1 }
		}
		END { for (f in all) if (!(f in keep)) print f }
	' modules.dep | xargs -r rm -f --)
	find "$mdir/kernel" -depth -type d -empty -delete
	after=$(du -sm "$mdir" | cut -f1)
	log "pruned modules: ${before} MiB -> ${after} MiB"
}

decompress_modules() { # MODULES_DIR
	local n
	n=$(find "$1" -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' | wc -l)
	((n)) || return 0
	log "decompressing $n modules"
	find "$1" -name '*.ko.xz' -print0 | xargs -0 -r -n 64 -P "$(nproc)" xz -d -q
	find "$1" -name '*.ko.zst' -print0 | xargs -0 -r -n 64 -P "$(nproc)" zstd -d -q --rm
	find "$1" -name '*.ko.gz' -print0 | xargs -0 -r -n 64 -P "$(nproc)" gzip -d -q
}

# fetch TARGET APT_OPTS_NAME RELEASE VERSION PKG...
fetch() {
	local target=$1 optsname=$2 rel=$3 ver=$4
	shift 4
	local -n _fo=$optsname
	local dest=$kdir/$rel stage root out f mdir
	if [[ -f $dest/ready ]]; then
		log "$target: $rel already ready in $dest"
		return 0
	fi
	log "$target: fetching $rel ($ver): $*"
	stage=$(mktemp -d "$kdir/.stage-$rel.XXXXXX")
	# shellcheck disable=SC2064 # expand now: the trap must remove this stage
	trap "rm -rf '$stage'" EXIT
	root=$stage/root out=$stage/out
	mkdir -p "$stage/debs" "$root" "$out"
	if ! (cd "$stage/debs" && apt-get "${apt_common[@]}" "${_fo[@]}" download "$@" >&2); then
		return 1
	fi
	for f in "$stage"/debs/*.deb; do
		dpkg-deb -x "$f" "$root"
	done
	rm -rf "$stage/debs"
	for mdir in "$root/usr/lib/modules/$rel" "$root/lib/modules/$rel"; do
		[[ -d $mdir ]] && break
	done
	[[ -d $mdir ]] || die "$target: no lib/modules/$rel in the packages"
	for f in "$root/boot/vmlinuz-$rel" "$mdir/vmlinuz"; do
		[[ -f $f ]] && mv "$f" "$out/vmlinuz"
	done
	[[ -f $out/vmlinuz ]] || die "$target: no vmlinuz in the packages"
	for f in "$root/boot/config-$rel" "$mdir/config"; do
		[[ -f $f ]] && mv "$f" "$out/config"
	done
	rm -f "$mdir/System.map" "$mdir/build" "$mdir/source"
	mv "$mdir" "$out/modules"
	rm -rf "$root"
	prune_modules "$out/modules" "$rel"
	decompress_modules "$out/modules"
	depmod_tree "$out/modules" "$rel"
	printf '%s\n' "$rel" >"$out/release"
	printf '%s\n' "$target" >"$out/target"
	printf '%s\n' "$@" >"$out/packages"
	rm -rf "$dest"
	mv "$out" "$dest"
	: >"$dest/ready"
	rm -rf "$stage"
	trap - EXIT
	log "$target: ready: $dest ($(du -sm "$dest" | cut -f1) MiB)"
	# older kernels of the same target are superseded
	for f in "$kdir"/*/target; do
		[[ $f != "$dest/target" && $(<"$f") == "$target" ]] || continue
		log "$target: removing superseded ${f%/target}"
		rm -rf "${f%/target}"
	done
}

# fetch_target TARGET OPTS_NAME SUITE UPDATE_FN
fetch_target() {
	local target=$1 optsname=$2 suite=$3 update=$4 res
	if ((refresh)) && [[ $update != - ]]; then $update; fi
	if ! res=$(resolve "$optsname" "$suite"); then
		[[ $update != - ]] || return 1
		$update
		res=$(resolve "$optsname" "$suite") || die "$target: cannot resolve linux-image-amd64 in $suite"
	fi
	# shellcheck disable=SC2086 # RELEASE VERSION PKG... are words
	set -- $res
	if ! fetch "$target" "$optsname" "$@"; then
		[[ $update != - ]] || return 1
		log "$target: download failed; refreshing the lists once"
		$update
		res=$(resolve "$optsname" "$suite") || die "$target: cannot resolve linux-image-amd64 in $suite"
		# shellcheck disable=SC2086
		set -- $res
		fetch "$target" "$optsname" "$@" || die "$target: download failed"
	fi
}
verlt() { [[ $1 != "$2" && $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$1" ]]; }

# a. bookworm: the machine's own apt state when it resolves to 6.1, otherwise a
#    private bookworm state (same mirror).
# shellcheck disable=SC2034 # the *_opts arrays are used through namerefs
sys_opts=()
bookworm_suites='bookworm|bookworm-security|bookworm-updates'
if res=$(resolve sys_opts "$bookworm_suites") && [[ $res == 6.1.* ]]; then
	# shellcheck disable=SC2086
	set -- $res
	fetch bookworm sys_opts "$@" ||
		die "bookworm: download failed; the system apt lists may be stale: run as root: apt-get update"
else
	text=$(sources_stanza "$mirror" bookworm bookworm-updates)
	if [[ $sec_mirror != - ]]; then
		text+=$'\n\n'$(sources_stanza "$sec_mirror" bookworm-security)
	fi
	papt_init bookworm "$text"
	# shellcheck disable=SC2034
	bw_opts=("${papt_opts[@]}")
	papt_has_lists || papt_update
	fetch_target bookworm bw_opts "$bookworm_suites" papt_update
fi

# b. trixie-backports through a private apt state.
papt_init trixie-backports "$(sources_stanza "$mirror" trixie trixie-backports)"
# shellcheck disable=SC2034
tb_opts=("${papt_opts[@]}")
papt_has_lists || papt_update
fetch_target trixie-backports tb_opts trixie-backports papt_update
for d in "$kdir"/*/target; do
	[[ $(<"$d") == trixie-backports ]] || continue
	r=$(<"${d%/target}/release")
	if verlt "${r%%-*}" 6.14; then
		log "warning: trixie-backports kernel $r is older than 6.14 (no TLS rekey)"
	fi
done
log "ready kernels:"
((quiet)) || list_ready >&2
