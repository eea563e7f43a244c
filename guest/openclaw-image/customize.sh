#!/usr/bin/env bash
# mmdebstrap --customize-hook of scripts/build-guest-image.sh: runs on the host with
# the finished Debian rootfs at $1 (proc/sys/dev mounted by mmdebstrap). Installs the
# pinned node + OpenClaw inside the chroot under the pinned node, lays the guest side
# of the contract (rootfs/), and removes everything one VM must not share with
# another (host keys, machine id, the build host's resolv.conf).
#
# Never touches the build host's network state: ufw's rules are written as files,
# never loaded (no `ufw enable` in a chroot, which would program the host's kernel).
set -euo pipefail
root=$1 src=$2 node_tgz=$3 npm_tgz=$4 npm_cache=$5 name=$6 ca_bundle=${7:-}
. "$src/pins"
log() { printf 'customize: %s\n' "$*" >&2; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/opt/clawy/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root "$@"; }

# --- node (official binary) and npm, in the official layout ------------------------
opt=$root/opt/clawy
mkdir -p "$opt/node/bin" "$opt/node/lib/node_modules/npm" "$opt/openclaw"
tar -xzf "$node_tgz" -C "$opt/node" --strip-components=1 package/bin/node package/LICENSE
tar -xzf "$npm_tgz" -C "$opt/node/lib/node_modules/npm" --strip-components=1
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$opt/node/bin/npm"
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$opt/node/bin/npx"
chown -R 0:0 "$opt"
[ "$(in_root /opt/clawy/node/bin/node --version)" = "v$NODE_VERSION" ] || { log "pinned node does not run in the chroot"; exit 1; }

# --- OpenClaw: npm ci of the checked-in lockfile, under the pinned node ------------
cp "$src/npm/package.json" "$src/npm/package-lock.json" "$opt/openclaw/"
# mmdebstrap's copy of the host's resolv.conf may have been replaced by
# systemd-resolved's symlink: give npm the host's resolver for this step only.
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/var/cache/clawy-npm"
mount --bind "$npm_cache" "$root/var/cache/clawy-npm"
# The build host's CA bundle, for npm's downloads only (see build-guest-image.sh).
ca_env=
if [ -n "$ca_bundle" ]; then
  cp "$ca_bundle" "$root/tmp/clawy-build-ca.pem"
  ca_env=NODE_EXTRA_CA_CERTS=/tmp/clawy-build-ca.pem
fi
set +e
# Install scripts: only those package.json's allowScripts names (pinned versions);
# --strict-allow-scripts fails the build on any other. The user config is empty:
# nothing of the build host's npm setup leaks into the install.
in_root $ca_env sh -c "cd /opt/clawy/openclaw && npm ci --omit=dev --no-audit --no-fund --no-update-notifier \
  --userconfig=/dev/null --cache=/var/cache/clawy-npm --strict-allow-scripts" >&2
rc=$?
set -e
umount "$root/var/cache/clawy-npm"
rmdir "$root/var/cache/clawy-npm"
rm -f "$root/tmp/clawy-build-ca.pem"
[ "$rc" = 0 ] || { log "npm ci failed ($rc)"; exit 1; }
# Guard against the empty placeholder that an older node resolves openclaw to.
got=$(in_root /opt/clawy/node/bin/node -p 'require("/opt/clawy/openclaw/node_modules/openclaw/package.json").version')
[ "$got" = "$OPENCLAW_VERSION" ] || { log "installed openclaw is $got, pinned $OPENCLAW_VERSION"; exit 1; }
rm -rf "$root/root/.npm" "$root/root/.cache"

# Junk no running gateway reads: type declarations, source maps and docs of the
# dependencies, and prebuilt native modules for other systems. OpenClaw's own
# package is left whole (its postinstall inventory lists its files).
deps=$opt/openclaw/node_modules
before=$(du -sm "$opt/openclaw" | cut -f1)
find "$deps" -path "$deps/openclaw" -prune -o -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
  -o -name '*.map' -o -iname 'README*' -o -iname 'CHANGELOG*' -o -iname 'HISTORY*' \) -print0 | xargs -0 rm -f
find "$deps" -path "$deps/openclaw" -prune -o -type d \( -name 'darwin-*' -o -name 'win32-*' -o -name 'linux-arm*' \
  -o -name 'linux-ia32' -o -name 'linuxmusl-*' -o -name 'musl_*' -o -name 'freebsd-*' -o -name 'android-*' \) \
  -path '*/prebuilds/*' -print0 | xargs -0 rm -rf
log "node_modules trimmed from ${before} MB to $(du -sm "$opt/openclaw" | cut -f1) MB"

for b in node npm npx; do ln -sfn "/opt/clawy/node/bin/$b" "$root/usr/local/bin/$b"; done
ln -sfn /opt/clawy/openclaw/node_modules/.bin/openclaw "$root/usr/local/bin/openclaw"

# The version check of the issue: `openclaw --version` in the chroot, pinned node.
mkdir -p "$root/.clawy-build" "$root/tmp/ocv"
in_root sh -c 'HOME=/tmp/ocv openclaw --version' >"$root/.clawy-build/openclaw-version"
rm -rf "$root/tmp/ocv"
log "openclaw --version: $(cat "$root/.clawy-build/openclaw-version")"

# --- the openclaw user and the contract's directories ------------------------------
in_root useradd --system --user-group --home-dir /var/lib/openclaw --shell /usr/sbin/nologin \
  --comment 'OpenClaw gateway' openclaw
install -d -m 0700 -o "$(in_root id -u openclaw)" -g "$(in_root id -g openclaw)" \
  "$root/var/lib/openclaw" "$root/var/lib/openclaw/.openclaw"
install -d -m 0755 "$root/etc/clawy" "$root/var/lib/clawy"
printf '%s\n' "$name" >"$root/etc/clawy/image"

# --- files of the guest side (rootfs/), with explicit modes -------------------------
# install(1) per file: modes are set here, not taken from the checkout (whose umask
# could otherwise widen /etc's directories), owner root.
(cd "$src/rootfs" && find . -type f -print0) | while IFS= read -r -d '' f; do
  mode=0644
  case $f in ./usr/local/lib/clawy/*) mode=0755 ;; esac
  install -D -o 0 -g 0 -m "$mode" "$src/rootfs/$f" "$root/$f"
done
bash "$src/configure-ufw.sh" "$root"
in_root systemctl enable systemd-networkd.service openclaw-gateway.service clawy-heartbeat.service >&2
# Units a VM without LVM, FUSE, loop devices, GPUs or EFI pstore never needs, which
# each cost seconds of first boot under TCG.
in_root systemctl mask e2scrub_reap.service e2scrub_all.timer systemd-pstore.service \
  modprobe@dm_mod.service modprobe@fuse.service modprobe@loop.service modprobe@drm.service \
  modprobe@efi_pstore.service modprobe@configfs.service >&2
# Generators for what a cloud VM has not (GPT auto-mounts, encrypted or verity
# volumes, hibernation, boot counting, offline updates): each is a process at
# every boot, before any unit starts.
mkdir -p "$root/etc/systemd/system-generators"
for g in systemd-gpt-auto-generator systemd-cryptsetup-generator systemd-veritysetup-generator \
  systemd-integritysetup-generator systemd-hibernate-resume-generator systemd-bless-boot-generator \
  systemd-system-update-generator; do
  ln -sfn /dev/null "$root/etc/systemd/system-generators/$g"
done
# The initrd with only the VM disk drivers (rootfs/etc/initramfs-tools).
in_root update-initramfs -u -k all >&2

# --- nothing one VM may share with another, nothing of the build host --------------
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
in_root usermod --lock root
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/cloud-init*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
find "$root/var/log" -type f -delete
rm -rf "$root"/tmp/* "$root"/var/tmp/*

# --- what the manifest records ------------------------------------------------------
in_root dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\n' | sort >"$root/.clawy-build/dpkg.txt"
(cd "$root" && sha256sum opt/clawy/node/bin/node opt/clawy/openclaw/package-lock.json \
  usr/local/lib/clawy/clawy-heartbeat etc/cloud/cloud.cfg.d/90-clawy.cfg \
  etc/systemd/system/openclaw-gateway.service etc/systemd/system/clawy-heartbeat.service) \
  >"$root/.clawy-build/files.sha256"
