#!/usr/bin/env bash
# Platform overhead benchmark: in one run, on one `clawy up`, time
#   (a) `clawy instances create NAME --plan small --wait` — API, placement, the
#       durable job, the agent — then until the API reports the gateway healthy
#       (the time at `running` is reported too), against
#   (b) the same agent alone: PUT /v1/vms/{id} + POST …/start with the same plan
#       (1 vCPU, 512 MiB, 2 GiB) and the same guest image, until the guest's gateway
#       port answers HTTP (the signal the health probe uses).
# Runs alternate a, b, a, b… so drift hits both; medians and the ratio
# (target: platform/agent <= 1.15) are printed and appended to docs/BENCHMARKS.md.
#
# Everything runs inside one throwaway network namespace (`ip netns exec NS clawy up`,
# exactly as the README tells people to try it); nothing in the machine's own
# namespace changes and no packet leaves. Needs root, like the tests.
#   N=3                 repetitions per path
#   CLAWY_BIN=…         clawy binary (default: target/debug/clawy, built if missing)
#   ACCEL=tcg           accelerator for both paths (tcg: nested KVM is unreliable here)
#   BENCH_NO_APPEND=1   print only, do not append to docs/BENCHMARKS.md
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-3}
ACCEL=${ACCEL:-tcg}
bin=${CLAWY_BIN:-$repo/target/debug/clawy}
if [ ! -x "$bin" ]; then
  (cd "$repo" && cargo build -q -p clawy-cli)
fi
image=$(bash "$repo/scripts/build-test-guest.sh" | tail -n1)
key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDFsAUfurDOVtzYkFhKbn+LH+gZhGmaH2c7s7r50h6XN bench@clawy"

tag=$$
NS=clawy-bp-$tag
work=$(mktemp -d /tmp/clawy-bench-platform.XXXXXX)
data=$work/data
up_pid=

cleanup() {
  set +e
  [ -n "$up_pid" ] && kill -TERM "$up_pid" 2>/dev/null && sleep 1
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
ip -n "$NS" link set lo up

# --- clawy up, inside the namespace ---
password="bench-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
export CLAWY_DATA_DIR=$data
env_up=(
  CLAWY_DATA_DIR="$data" CLAWY_LISTEN=127.0.0.1:8080
  CLAWY_OPERATOR_EMAIL=operator@clawy.localhost CLAWY_OPERATOR_PASSWORD="$password"
  CLAWY_GUEST_IMAGE="$image" CLAWY_UP_ACCELERATOR="$ACCEL"
  # Health is probed by the poller: probe every second so the platform path is not
  # charged for a 30 s production interval.
  CLAWY_METRICS_INTERVAL_SECS=1
)
in_ns env "${env_up[@]}" "$bin" up >"$work/up.out" 2>"$work/up.log" &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q 'dashboard:' "$work/up.out" 2>/dev/null && break
  kill -0 "$up_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q 'dashboard:' "$work/up.out" || { echo "bench-platform: clawy up did not start:" >&2; cat "$work/up.log" >&2; exit 1; }

api_key=$("$bin" admin create-api-key operator@clawy.localhost --tier admin --name bench 2>/dev/null)
cli() {
  in_ns env CLAWY_SERVER=http://127.0.0.1:8080 CLAWY_API_KEY="$api_key" XDG_CONFIG_HOME="$work/cfg" "$bin" "$@"
}
# The host must have reported its capacity before the first create.
for _ in $(seq 1 300); do
  cli instances create warmup --plan small >/dev/null 2>&1 && break
  sleep 0.2
done
cli instances delete warmup --yes --wait --timeout 300 >/dev/null

# --- the same agent, called directly (a second token of its own) ---
agent_cfg=$data/agent/agent.toml
token=$("$bin" agent --config "$agent_cfg" token create --name bench 2>/dev/null)
addr=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$agent_cfg")
pin=$(openssl x509 -in "$data/agent/state/agent-cert.pem" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)
api() {
  local method=$1 path=$2 body=${3:-}
  local args=(-sS --fail-with-body -k --pinnedpubkey "sha256//$pin" -H "Authorization: Bearer $token" -X "$method" -o /dev/null)
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data "$body")
  in_ns curl "${args[@]}" "https://$addr$path"
}
wait_http() {
  local ip=$1 deadline=$(( $(date +%s) + 300 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    code=$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$ip:18789/" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.05
  done
  echo "bench-platform: guest $ip never answered" >&2
  return 1
}
wait_gone() {
  for _ in $(seq 1 600); do
    code=$(in_ns curl -s -k --pinnedpubkey "sha256//$pin" -H "Authorization: Bearer $token" -o /dev/null -w '%{http_code}' "https://$addr/v1/vms/$1" || true)
    [ "$code" = 404 ] && return 0
    sleep 0.1
  done
}

# Prints "<s until running> <s until healthy>": `create --wait` returns at `running`;
# then the API is polled (every 50 ms, like --healthy does) until the gateway is `ok`.
run_platform() {
  local i=$1 t0 t1 t2
  t0=$(now)
  cli instances create "bp$i" --plan small --wait --timeout 300 --poll-interval 0.05 >/dev/null
  t1=$(now)
  until cli instances show "bp$i" --json | grep -q '"gateway": "ok"'; do sleep 0.05; done
  t2=$(now)
  cli instances delete "bp$i" --yes --wait --timeout 300 >/dev/null
  echo "$(elapsed "$t0" "$t1") $(elapsed "$t0" "$t2")"
}

run_agent() {
  # Addresses high in the subnet, away from the ones placement hands out (.2 up).
  local i=$1 ip="10.77.0.$((240 + $1))" spec t0 t1
  spec=$(printf '{"vcpus":1,"memory_mib":512,"disk_gib":2,"base_image":"%s","mac":"52:54:00:77:ff:%02x","private_ip":"%s","hostname":"bench-a%d","ssh_authorized_keys":["%s"]}' \
    "$(basename "$image")" "$i" "$ip" "$i" "$key")
  t0=$(now)
  api PUT "/v1/vms/bench-a$i" "$spec"
  api POST "/v1/vms/bench-a$i/start"
  wait_http "$ip"
  t1=$(now)
  api DELETE "/v1/vms/bench-a$i"
  wait_gone "bench-a$i"
  elapsed "$t0" "$t1"
}

r_times=()
a_times=()
b_times=()
for i in $(seq 1 "$N"); do
  read -r t_run t_healthy <<<"$(run_platform "$i")"
  r_times+=("$t_run")
  a_times+=("$t_healthy")
  b_times+=("$(run_agent "$i")")
  echo "run $i: platform running ${r_times[-1]} s, healthy ${a_times[-1]} s; agent ${b_times[-1]} s" >&2
done

stats=$(python3 - "${a_times[*]}" "${b_times[*]}" "${r_times[*]}" <<'EOF'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
r = [float(x) for x in sys.argv[3].split()]
ma, mb, mr = statistics.median(a), statistics.median(b), statistics.median(r)
print(f"{ma:.3f} {mb:.3f} {ma / mb:.3f} {mr:.3f}")
EOF
)
read -r med_a med_b ratio med_r <<<"$stats"
verdict=$(python3 -c "import sys; print('meets' if float(sys.argv[1]) <= 1.15 else 'MISSES')" "$ratio")

report=$(cat <<EOF

## Platform overhead: \`clawy instances create --wait\` until healthy vs the agent alone

Command: \`N=$N scripts/bench-platform.sh\` (root; one throwaway network namespace running
\`clawy up\`), run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, accelerator $ACCEL for
both paths, plan \`small\` (1 vCPU, 512 MiB, 2 GiB), guest: the test image. Binary:
\`$(basename "$bin")\` ($(case "$bin" in *release*) echo release;; *) echo debug build;; esac)).
Platform path: from the start of \`clawy instances create --wait\` (REST create,
placement + job in one transaction, job runner, agent ensure + start, CLI polling every
50 ms) until the API reports the gateway healthy (after the start the job runner asks
the agent to probe port 18789 every 250 ms until it answers, and records the health).
Agent path: the same agent's HTTPS API called with curl, until the guest's port 18789
answers (polled every 50 ms). Both include creating the overlay, seed ISO and tap.

| path | median (s) | runs (s) |
|---|---|---|
| platform: \`create --wait\` returns (state \`running\`) | $med_r | ${r_times[*]} |
| platform: … until the API reports the gateway healthy | $med_a | ${a_times[*]} |
| agent alone: \`PUT /v1/vms/{id}\` + \`POST …/start\` until the port answers | $med_b | ${b_times[*]} |

Ratio platform / agent = **$ratio** (target ≤ 1.15: $verdict).
EOF
)
echo "$report"
if [ -z "${BENCH_NO_APPEND:-}" ]; then
  doc=$repo/docs/BENCHMARKS.md
  [ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
  printf '%s\n' "$report" >>"$doc"
fi
