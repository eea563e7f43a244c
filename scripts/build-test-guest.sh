#!/usr/bin/env bash
# Builds Clawy's small test guest from Debian packages only:
# the real cloud kernel (unpacked with dpkg-deb, never installed on this host),
# busybox-static, and dropbear (a real SSH server, key-only) with its shared libs,
# plus icmpcraft (guest/test-image/icmpcraft.c, built here with gcc -static), the
# packet tool the ISO-3 rule-order test needs.
# Output: a qcow2 disk that boots under SeaBIOS (MBR + FAT16 partition + syslinux)
# into an initramfs whose /init is guest/test-image/init.
#
# Cached: rebuilding with the same inputs is a no-op. Prints the image's path.
#   CLAWY_GUEST_DIR  output directory (default <repo>/target/guest)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${CLAWY_GUEST_DIR:-$repo/target/guest}
image=$out/clawy-test-guest.qcow2
stamp=$out/clawy-test-guest.stamp
mkdir -p "$out"

# One builder at a time (tests may ask for the image in parallel).
exec 9>"$out/.lock"
flock 9

need() { command -v "$1" >/dev/null || { echo "build-test-guest: missing $1 (run scripts/install-deps.sh)" >&2; exit 1; }; }
for c in apt-cache apt-get dpkg-deb cpio gzip mkfs.vfat mcopy syslinux qemu-img busybox gcc; do need "$c"; done

candidate() { apt-cache policy "$1" | sed -n 's/^ *Candidate: //p'; }
# What this checkout contributes (the second line of the stamp).
local_key=$(
  {
    echo "busybox=$(dpkg-query -W -f='${Version}' busybox-static)"
    sha256sum "$0" "$repo/guest/test-image/init" "$repo/guest/test-image/acpi-power-button" "$repo/guest/test-image/icmpcraft.c" | cut -d' ' -f1
    gcc --version | head -n1
  } | sha256sum | cut -d' ' -f1
)
# linux-image-cloud-amd64 is a metapackage: resolve it to the versioned kernel.
resolve_kernel() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1; }
kpkg=$(resolve_kernel || true)
if [ -z "$kpkg" ]; then
  # A fresh machine may have no package lists yet (or something removed them).
  apt-get update -qq >&2 || echo "build-test-guest: apt-get update failed" >&2
  kpkg=$(resolve_kernel || true)
fi
if [ -z "$kpkg" ]; then
  # No package lists: an image built from these same local inputs is still good
  # (the Debian packages only change with a point release).
  if [ -f "$image" ] && [ "$(sed -n 2p "$stamp" 2>/dev/null)" = "$local_key" ]; then
    echo "build-test-guest: no apt package lists; reusing $image" >&2
    echo "$image"
    exit 0
  fi
  echo "build-test-guest: cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2
  exit 1
fi
pkgs=("$kpkg" dropbear-bin libtomcrypt1 libtommath1)
inputs=$(
  for p in "${pkgs[@]}"; do echo "$p=$(candidate "$p")"; done
  echo "$local_key"
)
key=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)
if [ -f "$image" ] && [ "$(sed -n 1p "$stamp" 2>/dev/null)" = "$key" ]; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
debs=$out/debs
mkdir -p "$debs"
for p in "${pkgs[@]}"; do
  v=$(candidate "$p")
  if ! ls "$debs/${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1; then
    (cd "$debs" && apt-get download -q "$p" >&2 2> >(grep -v '^W: Download is performed unsandboxed' >&2))
  fi
  dpkg-deb -x "$(ls "$debs/${p}_${v//:/%3a}_"*.deb | head -n1)" "$work/pkgs"
done

kver=${kpkg#linux-image-}
moddir=$work/pkgs/lib/modules/$kver
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,lib/modules,lib64,usr/bin,usr/sbin,root,proc,sys,dev,tmp,run,www}

# busybox: the host's busybox-static package (static, so nothing else to copy).
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$repo/guest/test-image/init" "$root/init"
gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/icmpcraft" "$repo/guest/test-image/icmpcraft.c"
strip "$root/bin/icmpcraft"
chmod 755 "$root/init"
# The ACPI power-button handler busybox acpid runs (its default action for PWRF).
mkdir -p "$root/etc/acpi/PWRF" "$root/var/log"
cp "$repo/guest/test-image/acpi-power-button" "$root/etc/acpi/PWRF/00000080"
chmod 755 "$root/etc/acpi/PWRF/00000080"

# Kernel modules the guest needs, with their dependencies first (order file read by
# /init; no depmod/modprobe needed in the guest).
declare -A done_mods=()
order=()
add_mod() {
  local name=$1 f deps d
  [ -n "${done_mods[$name]:-}" ] && return 0
  done_mods[$name]=1
  f=$(find "$moddir" -name "$name.ko" -o -name "${name//_/-}.ko" | head -n1)
  [ -n "$f" ] || return 0 # built into the kernel
  deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | head -n1)
  for d in ${deps//,/ }; do add_mod "$d"; done
  cp "$f" "$root/lib/modules/"
  order+=("$(basename "$f")")
}
# button + evdev: the ACPI power button as an input event for acpid (graceful stop).
# ata_piix + sr_mod and virtio_scsi: the cloud-init drive as Proxmox VE attaches it
# (an IDE or SCSI CD-ROM on the i440fx machine PVE uses by default; pve-sim does
# the same), so the guest can stand in for a PVE template too.
for m in virtio virtio_ring virtio_pci virtio_blk virtio_net isofs vfat nls_cp437 nls_ascii button evdev \
  ata_piix sr_mod virtio_scsi sd_mod; do add_mod "$m"; done
printf '%s\n' "${order[@]}" > "$root/etc/modules.order"

# dropbear and the shared libraries it links (from the unpacked packages or the
# host's identical Debian libc).
cp "$work/pkgs/usr/sbin/dropbear" "$root/usr/sbin/dropbear"
libpath="$work/pkgs/usr/lib/x86_64-linux-gnu:$work/pkgs/lib/x86_64-linux-gnu"
mkdir -p "$root/lib/x86_64-linux-gnu"
if LD_LIBRARY_PATH=$libpath ldd "$root/usr/sbin/dropbear" | grep -q 'not found'; then
  echo "build-test-guest: dropbear has unresolved libraries" >&2
  exit 1
fi
# Libraries go to the guest's /lib/x86_64-linux-gnu, the loader to /lib64.
LD_LIBRARY_PATH=$libpath ldd "$root/usr/sbin/dropbear" | awk '/=> \// { print $3 }' |
  while read -r lib; do cp -L "$lib" "$root/lib/x86_64-linux-gnu/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# `claw` is the owner's user on every guest (the SSH command the platform shows);
# in the stand-in it is an alias of root with root's keys (dropbear reads the
# home's authorized_keys).
printf 'root:x:0:0:root:/root:/bin/sh\nclaw:x:0:0:claw:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf '/bin/sh\n' > "$root/etc/shells"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"

# FAT16 partition image with syslinux, starting at sector 2048 of the disk.
part_mib=48
cat > "$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet panic=-1
CFG
mkfs.vfat -F 16 -n CLAWYBOOT -h 2048 -C "$work/part.img" $((part_mib * 1024)) >/dev/null
mcopy -i "$work/part.img" "$work/pkgs/boot/vmlinuz-$kver" ::vmlinuz
mcopy -i "$work/part.img" "$work/initrd.gz" ::initrd.gz
mcopy -i "$work/part.img" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$work/part.img"

# MBR: syslinux's boot code + one active FAT16 (LBA) partition entry.
disk=$work/disk.raw
sectors=$((part_mib * 1024 * 1024 / 512))
truncate -s $(((2048 + sectors) * 512)) "$disk"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" conv=notrunc bs=440 count=1 status=none
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
{
  printf '\x80\xfe\xff\xff\x0e\xfe\xff\xff'
  le32 2048
  le32 "$sectors"
} | dd of="$disk" conv=notrunc bs=1 seek=446 status=none
printf '\x55\xaa' | dd of="$disk" conv=notrunc bs=1 seek=510 status=none
dd if="$work/part.img" of="$disk" conv=notrunc bs=1M seek=1 status=none

qemu-img convert -q -O qcow2 "$disk" "$work/out.qcow2"
mv "$work/out.qcow2" "$image"
printf '%s\n%s\n' "$key" "$local_key" > "$stamp"
echo "$image"
