#!/usr/bin/env bash
# Fleet-scale benchmark: 10,000 instances on 200 hosts answered by FAKE
# in-process agents (crates/clawy-testkit/src/fake_agent.rs, for this benchmark
# only), one reconcile pass, and — through a real release `clawy server` on the same
# SQLite database — user and operator list latencies (p50/p99) and the server's RSS.
#
#   scripts/bench-fleet.sh                      # release build, 200 hosts, 10,000 instances
#   HOSTS=20 INSTANCES=1000 scripts/bench-fleet.sh
#   BENCH_DATABASE_URL=postgres://… scripts/bench-fleet.sh   # a fresh PostgreSQL database
#
# Everything runs on loopback; nothing touches the network or a real hypervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS="${HOSTS:-200}"
INSTANCES="${INSTANCES:-10000}"
REQUESTS="${REQUESTS:-1000}"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p clawy-cli --bin clawy >&2
  cargo build --release -p clawy-orchestrator --example bench_fleet >&2
fi
args=(--hosts "$HOSTS" --instances "$INSTANCES" --requests "$REQUESTS" --clawy-bin target/release/clawy)
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  args+=(--database-url "$BENCH_DATABASE_URL")
fi
exec target/release/examples/bench_fleet "${args[@]}"
