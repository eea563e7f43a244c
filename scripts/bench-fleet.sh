#!/usr/bin/env bash
# Fleet-scale benchmark (issues 4 and 13): N instances on H hosts answered by FAKE
# in-process agents (crates/clawy-testkit/src/fake_agent.rs, for this benchmark
# only): reconcile passes, poll passes (1 replica, and on PostgreSQL 2 replicas with
# host leases), and — through a real release `clawy server` on the same database —
# user and operator list latencies (p50/p99) and the server's RSS.
#
#   scripts/bench-fleet.sh                      # release build, 200 hosts, 10,000 instances, SQLite
#   HOSTS=400 INSTANCES=20000 scripts/bench-fleet.sh
#   BENCH_DATABASE_URL=postgres://…/somedb scripts/bench-fleet.sh   # SQLite, then PostgreSQL
#   PROFILE=debug SKIP_SERVER=1 …               # quick: dev build, passes only
#
# BENCH_DATABASE_URL must name a fresh PostgreSQL database (it is filled, not
# cleaned). The table at the end has one column per backend.
# Everything runs on loopback; nothing touches the network or a real hypervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS="${HOSTS:-200}"
INSTANCES="${INSTANCES:-10000}"
REQUESTS="${REQUESTS:-1000}"
PROFILE="${PROFILE:-release}"
flag=(--release); dir=release
if [ "$PROFILE" = debug ]; then flag=(); dir=debug; fi
if [ -z "${SKIP_BUILD:-}" ]; then
  [ -n "${SKIP_SERVER:-}" ] || cargo build "${flag[@]}" -p clawy-cli --bin clawy >&2
  cargo build "${flag[@]}" -p clawy-orchestrator --example bench_fleet >&2
fi
args=(--hosts "$HOSTS" --instances "$INSTANCES" --requests "$REQUESTS")
[ -n "${SKIP_SERVER:-}" ] || args+=(--clawy-bin "target/$dir/clawy")

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
backends=(sqlite)
[ -z "${BENCH_DATABASE_URL:-}" ] || backends+=(postgres)
for b in "${backends[@]}"; do
  echo "== $b" >&2
  extra=()
  [ "$b" = sqlite ] || extra=(--database-url "$BENCH_DATABASE_URL")
  "target/$dir/examples/bench_fleet" "${args[@]}" "${extra[@]}" | tee "$out/$b" >&2
done

# One row per figure, one column per backend (the lines the example prints).
pick() { grep -m1 "$2" "$out/$1" | sed -E "s/.*$3.*/\\1/" || true; }
row() {
  local label=$1 pat=$2 re=$3 line="| $1 |"
  for b in "${backends[@]}"; do line+=" $(pick "$b" "$pat" "$re") |"; done
  echo "$line"
}
echo
echo "fleet: $HOSTS hosts, $INSTANCES instances, $PROFILE build"
hdr="| figure |"; sep="|---|"
for b in "${backends[@]}"; do hdr+=" $b |"; sep+="---|"; done
echo "$hdr"; echo "$sep"
row "one reconcile pass" '^reconcile pass' 'reconcile pass: ([0-9]+ ms).*'
row "one metrics poll pass (first, inserts health)" '^metrics poll pass:' 'metrics poll pass: ([0-9]+ ms).*'
row "one metrics poll pass, 1 replica" 'poll pass, 1 replica' '1 replica: ([0-9]+ ms).*'
row "one metrics poll pass, 2 replicas (ratio)" 'poll pass, 2 replicas' '2 replicas [^:]*: ([0-9]+ ms, ratio to 1 replica [0-9.]+).*'
row "user list p99" '^GET /api/v1/instances' '.*(p99 [0-9.]+ ms).*'
row "operator list ?limit=100 p99" '^GET /api/v1/admin' '.*(p99 [0-9.]+ ms).*'
row "server RSS" '^clawy server RSS' '.*: ([0-9]+ MiB).*'
