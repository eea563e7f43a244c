#!/usr/bin/env bash
# Installs every Debian package the platform's tests need. Idempotent: a package
# that is already installed costs one dpkg query.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
  # storage
  postgresql postgresql-client
  # host agent: VMs, seeds, networking
  qemu-system-x86 qemu-utils genisoimage nftables iproute2 iputils-ping netcat-openbsd
  # test guest image ingredients (unpacked, never installed on the host)
  busybox-static cpio
  # test guest disk (scripts/build-test-guest.sh) and the netns port forwarder
  syslinux syslinux-common mtools dosfstools socat
  # the test guest's static packet tool (guest/test-image/icmpcraft.c); util-linux
  # brings setpriv, which the ISO-4 test uses to act as a VM's QEMU user
  gcc libc6-dev util-linux
  # the real guest image (scripts/build-guest-image.sh): Debian rootfs, ext4 filled
  # from a directory, extlinux on an MBR disk; OpenSSL for the npm tarballs' sha512
  mmdebstrap e2fsprogs extlinux
  # SSH client for the key-login test through a port forward; the real guest's boot
  # test scans ports (nmap) and tries password logins (sshpass) that must fail
  openssh-client sshpass
  # mail sink for password-reset and report notifications
  python3-aiosmtpd
  # edge and browser tests, load tool
  caddy chromium chromium-driver wrk
  # authoritative DNS server for the RFC 2136 + TSIG tests (knotd, kdig)
  knot knot-dnsutils
  curl ca-certificates openssl
  # attack tools: Schemathesis' venv (scripts/schemathesis.sh), scans from outside
  # (nmap, testssl.sh, ssh-audit: crates/clawy-cli/tests/standalone/outside_scans.rs)
  python3-venv nmap testssl.sh ssh-audit
  # `cloud-init schema` checks the seed generator's user-data (the agent's tests);
  # it must never configure this machine: masked and disabled below, before install
  cloud-init
)

# npm fetches the pinned node/npm tarballs for the guest image (their sha512 is
# checked by the build). Debian's npm only where no npm is installed: the machine's
# own Node.js packaging may provide one that Debian's would conflict with.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# cloud-init is installed for its schema checker only. Before the package exists,
# its units are masked (a /dev/null link works without a running systemd) and the
# generator is told to stay off, so it never runs on this machine, not even at boot.
if ! dpkg-query -W -f='${Status}' cloud-init 2>/dev/null | grep -q "install ok installed"; then
  mkdir -p /etc/cloud /etc/systemd/system
  touch /etc/cloud/cloud-init.disabled
  for u in cloud-init-local cloud-init cloud-config cloud-final cloud-init-hotplugd; do
    ln -sfn /dev/null "/etc/systemd/system/$u.service"
  done
  ln -sfn /dev/null /etc/systemd/system/cloud-init-hotplugd.socket
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts services it installs; the tests start their own instances.
systemctl disable --now caddy >/dev/null 2>&1 || true
systemctl disable --now knot >/dev/null 2>&1 || true
