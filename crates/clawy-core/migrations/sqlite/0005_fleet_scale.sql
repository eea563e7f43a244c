-- Fleet scale (issue 13). Numbered 0005: 0003/0004 are taken by parallel branches.
-- Rollups are written once per completed hour: this row remembers the first hour
-- not rolled up yet (unix ms), so a poll cycle no longer re-aggregates raw samples.
CREATE TABLE metric_rollup_progress (
    id BIGINT PRIMARY KEY NOT NULL,
    rolled_until BIGINT NOT NULL
);

-- Host leases (PostgreSQL replicas; crates/clawy-orchestrator/src/leases.rs): every
-- replica renews its row here; each host is polled and reconciled by the replica
-- holding its lease. `polled_at` stays with the host when its lease changes hands,
-- so a new owner does not poll it again within the same interval.
CREATE TABLE control_replicas (
    id TEXT PRIMARY KEY NOT NULL,
    alive_until BIGINT NOT NULL
);
CREATE TABLE host_leases (
    host_id TEXT PRIMARY KEY NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    polled_at BIGINT
);
CREATE INDEX host_leases_owner ON host_leases(owner);
