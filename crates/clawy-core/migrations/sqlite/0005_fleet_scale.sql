-- Fleet scale (issue 13). Numbered 0005: 0003/0004 are taken by parallel branches.
-- Rollups are written once per completed hour: this row remembers the first hour
-- not rolled up yet (unix ms), so a poll cycle no longer re-aggregates raw samples.
CREATE TABLE metric_rollup_progress (
    id BIGINT PRIMARY KEY NOT NULL,
    rolled_until BIGINT NOT NULL
);
