#!/usr/bin/env bash
# Boot-time benchmark of the real guest image: boots the image with a
# hand-written NoCloud seed (user `claw` with a throwaway key, the gateway config,
# the heartbeat config and the config-applied marker, as CONTRACT.md describes) and
# measures the time until an SSH key login as `claw` succeeds; then reads
# `systemd-analyze` (total, blame, critical chain of ssh.service) over that SSH login.
#
# QEMU runs like the agent runs it (q35, -cpu max, virtio disk overlay + raw seed
# drive, no display), plus a serial log for this report, with user-mode networking
# restricted to a loopback port forward, inside a network namespace this script
# creates and removes: no packet leaves it. The guest's heartbeat reporter reaches a
# small receiver in that namespace through QEMU's guestfwd (10.0.2.100:9180), which
# records what it got; the last heartbeat is printed. Needs root.
#   IMAGE=…      qcow2 to boot (default: scripts/build-guest-image.sh's output)
#   MEM=2048     guest RAM (MiB)   SMP=2  vCPUs   ACCEL=tcg
#   RUNS=1       boots (each on a fresh overlay: every boot is a first boot)
#   KEEP=1       keep the work dir (serial logs, seed) and print its path
#   HOLD=1       leave the last VM running for a look inside (prints the ssh command;
#                the script waits until it is interrupted)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
MEM=${MEM:-2048}
SMP=${SMP:-2}
ACCEL=${ACCEL:-tcg}
RUNS=${RUNS:-1}
TIMEOUT=${TIMEOUT:-600}
image=${IMAGE:-$(bash "$repo/scripts/build-guest-image.sh" | tail -n1)}
[ -f "$image" ] || { echo "bench-guest-boot: no image $image" >&2; exit 1; }
for c in qemu-system-x86_64 qemu-img genisoimage ssh ssh-keygen ip socat python3; do
  command -v "$c" >/dev/null || { echo "bench-guest-boot: missing $c (scripts/install-deps.sh)" >&2; exit 1; }
done

ns=clawy-gboot-$$
work=$(mktemp -d /tmp/clawy-bench-guest.XXXXXX)
qpid=
cleanup() {
  set +e
  [ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  if [ "${KEEP:-}" = 1 ]; then echo "bench-guest-boot: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up

ssh-keygen -q -t ed25519 -N '' -C bench@clawy -f "$work/id"
pub=$(cat "$work/id.pub")
gw_token=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
hb_token=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
mkdir -p "$work/seed"
cat >"$work/seed/meta-data" <<EOF
instance-id: bench-$$
local-hostname: bench-claw
EOF
# The agent's network-config shape (static address), on QEMU's user network.
cat >"$work/seed/network-config" <<'EOF'
version: 2
ethernets:
  eth0:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: eth0
    addresses:
      - 10.0.2.15/24
    routes:
      - to: 0.0.0.0/0
        via: 10.0.2.2
EOF
cat >"$work/seed/user-data" <<EOF
#cloud-config
users:
  - name: claw
    shell: /bin/bash
    lock_passwd: true
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
      - $pub
ssh_pwauth: false
disable_root: true
write_files:
  - path: /etc/ssh/sshd_config.d/50-clawy.conf
    permissions: "0644"
    content: |
      PasswordAuthentication no
      KbdInteractiveAuthentication no
      PermitRootLogin no
      AuthenticationMethods publickey
  - path: /var/lib/openclaw/.openclaw/openclaw.json
    owner: openclaw:openclaw
    permissions: "0600"
    content: |
      {"gateway": {"mode": "local", "port": 18789, "bind": "lan",
                   "auth": {"mode": "token", "token": "$gw_token"}}}
  - path: /etc/clawy/heartbeat.json
    permissions: "0600"
    content: |
      {"agent_address": "10.0.2.100", "agent_port": 9180, "token": "$hb_token"}
  - path: /var/lib/clawy/config-applied
    permissions: "0644"
    content: ""
runcmd:
  - [ufw, allow, proto, tcp, from, 10.0.2.2, to, any, port, "18789"]
EOF
genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock \
  "$work/seed/user-data" "$work/seed/meta-data" "$work/seed/network-config"

port=$((22000 + $$ % 1000))
hbport=$((23000 + $$ % 1000))
# The heartbeat receiver: checks the bearer token, records each body (one per line).
cat >"$work/receiver.py" <<'PY'
import http.server, sys
token, out = sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.path == "/v1/heartbeat" and self.headers.get("Authorization") == f"Bearer {token}"
        with open(out, "ab") as f:
            f.write((b"" if ok else b"REFUSED ") + body + b"\n")
        self.send_response(204 if ok else 401)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
ip netns exec "$ns" python3 "$work/receiver.py" "$hbport" "$hb_token" "$work/heartbeats.jsonl" &
disown
for _ in $(seq 1 50); do ip netns exec "$ns" bash -c "echo >/dev/tcp/127.0.0.1/$hbport" 2>/dev/null && break; sleep 0.1; done
sshopts=(-i "$work/id" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 -o LogLevel=ERROR)
in_ns() { ip netns exec "$ns" "$@"; }

echo "bench-guest-boot: image $(basename "$image") ($(du -h "$image" | cut -f1)), ${MEM} MiB, ${SMP} vCPU, accel $ACCEL"
for run in $(seq 1 "$RUNS"); do
  qemu-img create -q -f qcow2 -F qcow2 -b "$image" "$work/disk-$run.qcow2" 8G
  t0=$(date +%s.%N)
  in_ns qemu-system-x86_64 -machine q35,accel="$ACCEL" -cpu max -smp "$SMP" -m "$MEM" \
    -nodefaults -no-user-config -display none -vga none \
    -drive "file=$work/disk-$run.qcow2,if=virtio,format=qcow2,cache=none,discard=unmap" \
    -drive "file=$work/seed.iso,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22,guestfwd=tcp:10.0.2.100:9180-cmd:socat - TCP:127.0.0.1:$hbport" \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
    -serial "file:$work/serial-$run.log" &
  qpid=$!
  ok=
  while :; do
    now=$(date +%s.%N)
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) > float(sys.argv[3]) else 1)" "$t0" "$now" "$TIMEOUT"; then break; fi
    kill -0 "$qpid" 2>/dev/null || break
    # A guest kernel panic never turns into a login: stop waiting.
    grep -q "Kernel panic" "$work/serial-$run.log" 2>/dev/null && break
    if in_ns ssh "${sshopts[@]}" claw@127.0.0.1 true 2>/dev/null; then ok=1; break; fi
    sleep 0.5
  done
  t_ssh=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
  if [ -z "$ok" ]; then
    echo "bench-guest-boot: run $run: no SSH login after ${t_ssh}s; serial log tail:" >&2
    tail -n 40 "$work/serial-$run.log" >&2
    exit 1
  fi
  echo "run $run: SSH key login as claw after ${t_ssh} s"
  # When sshd started and when it accepted the first key, by the guest's clock.
  in_ns ssh "${sshopts[@]}" claw@127.0.0.1 'sudo journalctl -b -o short-monotonic --no-pager -u ssh.service |
    grep -m1 -E "Started ssh.service|Server listening"; sudo journalctl -b -o short-monotonic --no-pager -u ssh.service |
    grep -m1 "Accepted publickey"' | sed 's/^/  /' 
  # Boot finished (or degraded), then systemd's own numbers.
  in_ns ssh "${sshopts[@]}" claw@127.0.0.1 'timeout 600 systemctl is-system-running --wait >/dev/null; systemctl is-system-running' |
    sed 's/^/  system state: /'
  in_ns ssh "${sshopts[@]}" claw@127.0.0.1 'systemd-analyze; echo "  slowest units:"; systemd-analyze blame --no-pager | head -n 15;
    echo "  critical chain of ssh.service:"; systemd-analyze critical-chain --no-pager ssh.service | tail -n +3;
    echo "  cloud-init:"; cloud-init analyze show 2>/dev/null | grep -E "^Finished stage|Total Time" | head;
    echo "  failed units:"; systemctl --failed --no-legend --no-pager' | sed 's/^/  /'
  # Host memory per VM: QEMU's resident set minus the guest RAM's own mapping (the
  # largest anonymous mapping, MEM MiB) from /proc/<pid>/smaps: what QEMU itself
  # costs the host beside the RAM it gives the guest.
  python3 - "$qpid" "$MEM" <<'PY'
import re, sys
pid, mem_mib = sys.argv[1], int(sys.argv[2])
maps, cur = [], None
for line in open(f"/proc/{pid}/smaps"):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        cur = {"name": line.split()[5] if len(line.split()) > 5 else "", "size": 0, "rss": 0}
        maps.append(cur)
    elif line.startswith("Size:"):
        cur["size"] = int(line.split()[1])
    elif line.startswith("Rss:"):
        cur["rss"] = int(line.split()[1])
total = sum(m["rss"] for m in maps)
ram = max((m for m in maps if not m["name"]), key=lambda m: m["size"])
assert ram["size"] >= mem_mib * 1024, f"no guest RAM mapping of {mem_mib} MiB: {ram}"
print(f"  host memory: QEMU RSS {total / 1024:.0f} MiB = guest RAM touched {ram['rss'] / 1024:.0f} MiB"
      f" (of {ram['size'] / 1024:.0f} MiB) + QEMU's own {(total - ram['rss']) / 1024:.0f} MiB")
PY
  # Give the reporter a moment after boot to send its "done" beat.
  sleep 10
  echo "  heartbeats received: $(grep -vc '^REFUSED' "$work/heartbeats.jsonl" 2>/dev/null || true), refused: $(grep -c '^REFUSED' "$work/heartbeats.jsonl" 2>/dev/null || true); last:"
  tail -n 1 "$work/heartbeats.jsonl" 2>/dev/null | sed 's/^/    /'
  if [ "${HOLD:-}" = 1 ] && [ "$run" = "$RUNS" ]; then
    echo "bench-guest-boot: holding; ssh: ip netns exec $ns ssh ${sshopts[*]} claw@127.0.0.1"
    wait "$qpid" || true
  fi
  kill -9 "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
done
