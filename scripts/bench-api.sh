#!/usr/bin/env bash
# API benchmark: API-key-authenticated `GET /api/v1/me` against `/healthz` on
# the same release server in the same run, plus login throughput (bcrypt cost 12).
#
#   scripts/bench-api.sh                 # 3 alternating rounds of 5 s per endpoint, 2 threads, 32 connections
#   DURATION=5s CONNS=16 scripts/bench-api.sh
#   BENCH_DB=postgres scripts/bench-api.sh   # after: eval "$(scripts/start-postgres.sh)"
#
# Everything runs on loopback: a fresh data dir under a temp dir, SQLite, the real
# `clawy` binary (release), `wrk` from Debian. Prints a Markdown table for
# docs/BENCHMARKS.md. Loads are bounded (DURATION each, fixed connections).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-32}"
LOGIN_CONNS="${LOGIN_CONNS:-4}"
BIN="${CLAWY_BIN:-target/release/clawy}"

command -v wrk >/dev/null || { echo "bench-api: wrk is missing (apt-get install wrk)" >&2; exit 1; }
if [ -z "${CLAWY_BIN:-}" ]; then
  cargo build --release -p clawy-cli --bin clawy >&2
fi

WORK="$(mktemp -d /tmp/clawy-bench.XXXXXX)"
SERVER_PID=""
PG_DB=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$PG_DB" ]; then psql "$CLAWY_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
CFG="$WORK/clawy.toml"
cat >"$CFG" <<EOF
listen = "127.0.0.1:$PORT"
base_url = "$BASE"
data_dir = "$WORK/data"
# Production settings: bcrypt cost 12 (the default), default throttles.
EOF
DB_LABEL="SQLite"
if [ "${BENCH_DB:-sqlite}" = "postgres" ]; then
  : "${CLAWY_TEST_POSTGRES_URL:?run: eval \"\$(scripts/start-postgres.sh)\" first}"
  PG_DB="clawy_bench_$$"
  psql "$CLAWY_TEST_POSTGRES_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
  echo "database_url = \"$(echo "$CLAWY_TEST_POSTGRES_URL" | sed "s#/postgres?#/$PG_DB?#")\"" >>"$CFG"
  DB_LABEL="PostgreSQL 15 (TLS, verify-full)"
fi

EMAIL="bench@example.test"
PASSWORD="Bench-lantern-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$PASSWORD" | "$BIN" admin --config "$CFG" create-user "$EMAIL" >/dev/null
KEY="$("$BIN" admin --config "$CFG" create-api-key "$EMAIL" --tier read --name bench 2>/dev/null)"

# warn: per-request info logs to a terminal would measure the terminal, not the server.
RUST_LOG=warn "$BIN" server --config "$CFG" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null
curl -fsS -H "Authorization: Bearer $KEY" "$BASE/api/v1/me" >/dev/null

# Login: the form with a double-submit CSRF token we choose (cookie == field) and our
# own Origin, exactly as a browser would send it.
CSRF="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "__Host-clawy_csrf=$CSRF"
wrk.headers["Origin"] = "$BASE"
wrk.body = "csrf_token=$CSRF&email=bench%40example.test&password=$PASSWORD&password_confirm="
EOF
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Content-Type: application/x-www-form-urlencoded" \
  -H "Cookie: __Host-clawy_csrf=$CSRF" -H "Origin: $BASE" \
  --data "csrf_token=$CSRF&email=bench%40example.test&password=$PASSWORD&password_confirm=" "$BASE/login")"
[ "$code" = "303" ] || { echo "bench-api: login probe answered $code, not 303" >&2; exit 1; }

run() { # name, wrk args…
  local name="$1"; shift
  wrk --latency -t"$THREADS" "$@" >"$WORK/$name.txt"
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.txt"; }
p99() { awk '$1=="99%" {print $2}' "$WORK/$1.txt"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ {print $5}' "$WORK/$1.txt" | grep . || echo 0; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# p99 in ms whatever unit wrk printed (us, ms, s).
p99ms() { p99 "$1" | awk '/us$/ { printf "%.2f", $1 / 1000; next } /ms$/ { printf "%.2f", $1 + 0; next } /s$/ { printf "%.2f", $1 * 1000 }'; }

# Warm-up (connections, SQLite page cache), not reported.
wrk -t"$THREADS" -c"$CONNS" -d2s "$BASE/healthz" >/dev/null
# Alternating rounds, so load from other processes on the machine hits both alike.
: >"$WORK/healthz.rps"; : >"$WORK/me.rps"; : >"$WORK/healthz.p99"; : >"$WORK/me.p99"; : >"$WORK/ratios"
for r in $(seq 1 "$ROUNDS"); do
  run "healthz$r" -c"$CONNS" -d"$DURATION" "$BASE/healthz"
  run "me$r" -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $KEY" "$BASE/api/v1/me"
  for e in healthz me; do
    rps "$e$r" >>"$WORK/$e.rps"; p99ms "$e$r" >>"$WORK/$e.p99"; echo >>"$WORK/$e.p99"
    [ "$(non2xx "$e$r")" = "0" ] || { echo "bench-api: $e answered non-2xx: $(non2xx "$e$r")" >&2; exit 1; }
  done
  awk -v a="$(rps "me$r")" -v b="$(rps "healthz$r")" 'BEGIN { printf "%.2f\n", a / b }' >>"$WORK/ratios"
done
run login -c"$LOGIN_CONNS" -d10s -s "$WORK/login.lua" "$BASE/login"

H_RPS="$(median <"$WORK/healthz.rps")"; M_RPS="$(median <"$WORK/me.rps")"
H_P99="$(grep . "$WORK/healthz.p99" | median)"; M_P99="$(grep . "$WORK/me.p99" | median)"
RATIO="$(awk -v a="$M_RPS" -v b="$H_RPS" 'BEGIN { printf "%.2f", a / b }')"
PER_ROUND="$(paste -sd' ' "$WORK/ratios")"
CPU="$(nproc) cores ($(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo))"

cat <<EOF
Run: \`scripts/bench-api.sh\` ($ROUNDS alternating rounds × $DURATION per endpoint, $THREADS wrk threads, $CONNS connections; login 10 s, $LOGIN_CONNS connections), $(date -u +%Y-%m-%dT%H:%MZ), $CPU, $DB_LABEL, release build, RUST_LOG=warn.

| Endpoint | Requests/s | p99 latency | non-2xx/3xx |
|---|---|---|---|
| \`GET /healthz\` (no auth, one \`SELECT 1\`) | $H_RPS | ${H_P99} ms | 0 |
| \`GET /api/v1/me\` (bearer API key, read tier) | $M_RPS | ${M_P99} ms | 0 |
| \`POST /login\` (form, bcrypt cost 12, new session) | $(rps login) | $(p99ms login) ms | $(non2xx login) |

(Requests/s and p99 are medians over the rounds.) Authenticated / unauthenticated
throughput: **$RATIO** (target ≥ 0.70); per round: $PER_ROUND.
EOF
if awk -v r="$RATIO" 'BEGIN { exit !(r < 0.70) }'; then
  echo "bench-api: ratio $RATIO is below the 0.70 target" >&2
  exit 2
fi
