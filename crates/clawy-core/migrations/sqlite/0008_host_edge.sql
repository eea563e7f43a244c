-- The HTTPS edge each host's agent runs (docs/EDGE.md), as the agent last reported
-- it in its HostInfo. Conventions as in 0001.
--
-- edge_apex: the apex its instances are served under; NULL = the agent runs no
-- edge (no `[edge]` section, or an agent from before the edge).
-- edge_working: 1 when the agent's last check found Caddy running the edge
-- config. DATA-1/NET-4 are shown as kept only while a reachable host says so.
-- edge_error: why not, in words (shown to operators).
ALTER TABLE hosts ADD COLUMN edge_apex TEXT;
ALTER TABLE hosts ADD COLUMN edge_working BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN edge_error TEXT;
