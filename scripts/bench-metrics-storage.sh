#!/usr/bin/env bash
# Storage per instance for the metrics retention promise (raw samples 24 h, hourly
# rollups 30 days): fills scratch databases with N instances' worth of FULL retention
# at the default 30 s poll interval (2,880 raw samples + 720 rollups each) and prints
# bytes per instance, table + indexes, on PostgreSQL and SQLite.
#
#   N=200 scripts/bench-metrics-storage.sh        # root; PostgreSQL from scripts/start-postgres.sh
#
# The table definitions below are those of migrations 0002 + 0006
# (crates/clawy-core/migrations/*/0002_instances.sql); keep them in step.
# The PostgreSQL scratch database is created and dropped on the local test cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-200}"
PORT="${CLAWY_PG_PORT:-54329}"
DB=clawy_storage_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

cat > "$tmp/pg.sql" <<SQL
CREATE TABLE metric_samples (instance_id TEXT NOT NULL, at BIGINT NOT NULL, cpu_percent DOUBLE PRECISION, memory_used_bytes BIGINT, disk_used_bytes BIGINT, net_rx_bytes BIGINT, net_tx_bytes BIGINT, uptime_secs BIGINT, PRIMARY KEY (instance_id, at));
CREATE INDEX metric_samples_at ON metric_samples(at);
CREATE TABLE metric_rollups (instance_id TEXT NOT NULL, hour BIGINT NOT NULL, samples BIGINT NOT NULL, cpu_avg DOUBLE PRECISION, cpu_max DOUBLE PRECISION, memory_avg DOUBLE PRECISION, memory_max BIGINT, disk_max BIGINT, net_rx_max BIGINT, net_tx_max BIGINT, uptime_max BIGINT, PRIMARY KEY (instance_id, hour));
CREATE INDEX metric_rollups_hour ON metric_rollups(hour);
CREATE TABLE instance_health (instance_id TEXT PRIMARY KEY NOT NULL, checked_at BIGINT NOT NULL, vm_state TEXT, tcp_ok BIGINT, http_status BIGINT, latency_ms BIGINT, uptime_secs BIGINT, heartbeat TEXT, heartbeat_at BIGINT);
CREATE TEMP TABLE ids AS SELECT gen_random_uuid()::text AS id FROM generate_series(1,$N);
-- In poll order (time-major), as the poller writes them.
INSERT INTO metric_samples SELECT i.id, 1764547200000 + t::bigint*30000, random()*100, (random()*2e9)::bigint, (random()*2e10)::bigint, (random()*1e12)::bigint, (random()*1e12)::bigint, t*30 FROM generate_series(0,2879) t CROSS JOIN ids i ORDER BY t;
INSERT INTO metric_rollups SELECT i.id, 1764547200000 + h::bigint*3600000, 120, random()*100, random()*100, random()*2e9, (random()*2e9)::bigint, (random()*2e10)::bigint, (random()*1e12)::bigint, (random()*1e12)::bigint, h*3600 FROM generate_series(0,719) h CROSS JOIN ids i ORDER BY h;
-- A heartbeat of the real image's size (docs/BENCHMARKS.md, "The heartbeat from a real boot").
INSERT INTO instance_health SELECT id, 1764547200000, 'running', 1, 200, 3, 86400, repeat('x', 420), 1764547200000 FROM ids;
VACUUM ANALYZE metric_samples; VACUUM ANALYZE metric_rollups; VACUUM ANALYZE instance_health;
SELECT relname AS "table", pg_total_relation_size(relid) / $N AS bytes_per_instance, n_live_tup AS rows
FROM pg_stat_user_tables WHERE relname <> 'ids' ORDER BY relname;
SQL
echo "== PostgreSQL, $N instances at full retention"
runuser -u postgres -- psql -p "$PORT" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
runuser -u postgres -- psql -p "$PORT" -d "$DB" -q -f "$tmp/pg.sql"
runuser -u postgres -- psql -p "$PORT" -qc "DROP DATABASE $DB"

echo "== SQLite, $N instances at full retention"
sqlite3 "$tmp/st.db" <<SQL
CREATE TABLE metric_samples (instance_id TEXT NOT NULL, at BIGINT NOT NULL, cpu_percent DOUBLE PRECISION, memory_used_bytes BIGINT, disk_used_bytes BIGINT, net_rx_bytes BIGINT, net_tx_bytes BIGINT, uptime_secs BIGINT, PRIMARY KEY (instance_id, at));
CREATE INDEX metric_samples_at ON metric_samples(at);
CREATE TABLE metric_rollups (instance_id TEXT NOT NULL, hour BIGINT NOT NULL, samples BIGINT NOT NULL, cpu_avg DOUBLE PRECISION, cpu_max DOUBLE PRECISION, memory_avg DOUBLE PRECISION, memory_max BIGINT, disk_max BIGINT, net_rx_max BIGINT, net_tx_max BIGINT, uptime_max BIGINT, PRIMARY KEY (instance_id, hour));
CREATE INDEX metric_rollups_hour ON metric_rollups(hour);
CREATE TABLE instance_health (instance_id TEXT PRIMARY KEY NOT NULL, checked_at BIGINT NOT NULL, vm_state TEXT, tcp_ok BIGINT, http_status BIGINT, latency_ms BIGINT, uptime_secs BIGINT, heartbeat TEXT, heartbeat_at BIGINT);
CREATE TEMP TABLE ids AS WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k+1 FROM n WHERE k<$N) SELECT lower(hex(randomblob(4))||'-'||hex(randomblob(2))||'-'||hex(randomblob(2))||'-'||hex(randomblob(2))||'-'||hex(randomblob(6))) AS id FROM n;
BEGIN;
INSERT INTO metric_samples WITH RECURSIVE t(k) AS (SELECT 0 UNION ALL SELECT k+1 FROM t WHERE k<2879) SELECT i.id, 1764547200000 + k*30000, abs(random()%10000)/100.0, abs(random()%2000000000), abs(random()%20000000000), abs(random()%1000000000000), abs(random()%1000000000000), k*30 FROM t CROSS JOIN ids i ORDER BY k;
INSERT INTO metric_rollups WITH RECURSIVE t(k) AS (SELECT 0 UNION ALL SELECT k+1 FROM t WHERE k<719) SELECT i.id, 1764547200000 + k*3600000, 120, abs(random()%10000)/100.0, abs(random()%10000)/100.0, abs(random()%2000000000)*1.0, abs(random()%2000000000), abs(random()%20000000000), abs(random()%1000000000000), abs(random()%1000000000000), k*3600 FROM t CROSS JOIN ids i ORDER BY k;
INSERT INTO instance_health SELECT id, 1764547200000, 'running', 1, 200, 3, 86400, printf('%.420c', 'x'), 1764547200000 FROM ids;
COMMIT;
VACUUM;
SELECT name, sum(pgsize) / $N AS bytes_per_instance FROM dbstat GROUP BY name ORDER BY name;
SQL
