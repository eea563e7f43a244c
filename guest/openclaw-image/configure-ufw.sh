#!/usr/bin/env bash
# Bakes UFW's state into the rootfs at $1 as files (NET-1): enabled, default deny
# inbound (Debian's default policy, asserted here), SSH allowed. The seed adds the
# gateway port from the edge's address only. Never runs `ufw` itself: in a chroot
# that would program the build host's kernel.
set -euo pipefail
root=$1
conf=$root/etc/ufw/ufw.conf
defaults=$root/etc/default/ufw
[ -f "$conf" ] && [ -f "$defaults" ] || { echo "configure-ufw: ufw is not installed in $root" >&2; exit 1; }
sed -i 's/^ENABLED=.*/ENABLED=yes/' "$conf"
grep -qx 'ENABLED=yes' "$conf" || { echo "configure-ufw: could not enable ufw" >&2; exit 1; }
grep -qx 'DEFAULT_INPUT_POLICY="DROP"' "$defaults" || { echo "configure-ufw: default input policy is not DROP" >&2; exit 1; }
# The tuple comments are how ufw itself lists and deletes these rules later.
add_rule() { # file chain cidr
  local file=$1 chain=$2 any=$3
  grep -q "### tuple ### allow tcp 22 $any any $any in" "$file" && return 0
  python3 - "$file" "$chain" "$any" <<'PY'
import sys
path, chain, any_ = sys.argv[1:4]
text = open(path).read()
rule = (f"\n### tuple ### allow tcp 22 {any_} any {any_} in\n"
        f"-A {chain} -p tcp --dport 22 -j ACCEPT\n")
marker = "### RULES ###\n"
if marker not in text:
    sys.exit(f"configure-ufw: no '### RULES ###' in {path}")
open(path, "w").write(text.replace(marker, marker + rule, 1))
PY
}
add_rule "$root/etc/ufw/user.rules" ufw-user-input 0.0.0.0/0
add_rule "$root/etc/ufw/user6.rules" ufw6-user-input ::/0
