-- Control plane, part 2 (issue 4): hosts, plans, instances, IPAM, durable jobs,
-- metrics and health, instance events. Same conventions as 0001: TEXT ids, BIGINT
-- unix-ms UTC times, BIGINT 0/1 booleans.

-- Agents the control plane drives. DATA-3/DATA-4: the agent's bearer token is stored
-- sealed with the operator key (XChaCha20-Poly1305), never in plain text.
CREATE TABLE hosts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token_sealed TEXT NOT NULL,
    country TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    -- From the agent's HostInfo (ISO-2: what the agent may hand out).
    cap_vcpus BIGINT NOT NULL DEFAULT 0,
    cap_memory_mib BIGINT NOT NULL DEFAULT 0,
    cap_disk_gib BIGINT NOT NULL DEFAULT 0,
    subnet TEXT,
    gateway TEXT,
    ssh_port_min BIGINT,
    ssh_port_max BIGINT,
    accelerator TEXT,
    driver TEXT,
    hostname TEXT,
    agent_version TEXT,
    agent_location TEXT,
    info_updated_at BIGINT,
    -- Reachability is a host property: instances on an unreachable host show `unknown`.
    reachable BIGINT NOT NULL DEFAULT 0,
    last_contact_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Operator-defined sizes. Instances copy the numbers at create time, so editing a plan
-- never changes what existing instances hold (ISO-2 accounting stays exact).
CREATE TABLE plans (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_gib BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO plans (id, name, vcpus, memory_mib, disk_gib, created_at, updated_at) VALUES
    ('small', 'small', 1, 512, 2, 0, 0),
    ('medium', 'medium', 2, 2048, 10, 0, 0),
    ('large', 'large', 4, 8192, 40, 0, 0);

-- One row per instance; the agent's VM id IS the instance id. private_ip, mac and
-- ssh_port are the allocations: NULL once the delete job confirmed the VM is gone.
CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    plan_name TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_gib BIGINT NOT NULL,
    region TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts(id),
    private_ip TEXT,
    mac TEXT,
    ssh_port BIGINT,
    base_image TEXT NOT NULL,
    state TEXT NOT NULL,
    error_reason TEXT,
    desired_power TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
-- Names are unique per owner among instances that are not deleted.
CREATE UNIQUE INDEX instances_owner_name ON instances(owner_id, name) WHERE deleted_at IS NULL;
-- IPAM: never two holders of one address, port or MAC (NULLs = released, distinct).
CREATE UNIQUE INDEX instances_host_ip ON instances(host_id, private_ip);
CREATE UNIQUE INDEX instances_host_port ON instances(host_id, ssh_port);
CREATE UNIQUE INDEX instances_mac ON instances(mac);
CREATE INDEX instances_owner ON instances(owner_id, created_at, id);
CREATE INDEX instances_host ON instances(host_id, state);
CREATE INDEX instances_list ON instances(created_at, id);

-- AUTH-4: the key texts chosen at create time, copied (deleting a key from the
-- account later does not change a VM that already trusts it).
CREATE TABLE instance_ssh_keys (
    instance_id TEXT NOT NULL REFERENCES instances(id),
    position BIGINT NOT NULL,
    ssh_key_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    public_key TEXT NOT NULL,
    PRIMARY KEY (instance_id, position)
);

-- Durable lifecycle jobs. `seq` orders jobs (ties in created_at are common with a
-- manual clock); SQLite fills it with a trigger, PostgreSQL with a sequence.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    seq BIGINT UNIQUE,
    instance_id TEXT NOT NULL REFERENCES instances(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    created_by TEXT NOT NULL DEFAULT 'system',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE TRIGGER jobs_seq AFTER INSERT ON jobs WHEN NEW.seq IS NULL
BEGIN UPDATE jobs SET seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs) WHERE id = NEW.id; END;
CREATE INDEX jobs_claim ON jobs(state, run_after);
CREATE INDEX jobs_instance ON jobs(instance_id, seq);

CREATE TABLE job_attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- ACCESS-1: metadata only (what the host sees of the VM), never guest contents.
-- Raw samples are kept 24 h, hourly rollups 30 days.
CREATE TABLE metric_samples (
    instance_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    cpu_percent DOUBLE PRECISION,
    memory_used_bytes BIGINT,
    disk_used_bytes BIGINT,
    net_rx_bytes BIGINT,
    net_tx_bytes BIGINT,
    uptime_secs BIGINT,
    PRIMARY KEY (instance_id, at)
);
CREATE INDEX metric_samples_at ON metric_samples(at);

CREATE TABLE metric_rollups (
    instance_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    cpu_avg DOUBLE PRECISION,
    cpu_max DOUBLE PRECISION,
    memory_avg DOUBLE PRECISION,
    memory_max BIGINT,
    disk_max BIGINT,
    net_rx_max BIGINT,
    net_tx_max BIGINT,
    uptime_max BIGINT,
    PRIMARY KEY (instance_id, hour)
);
CREATE INDEX metric_rollups_hour ON metric_rollups(hour);

-- Latest health per instance (gateway probe + VM state as the agent reports it).
CREATE TABLE instance_health (
    instance_id TEXT PRIMARY KEY NOT NULL,
    checked_at BIGINT NOT NULL,
    vm_state TEXT,
    tcp_ok BIGINT,
    http_status BIGINT,
    latency_ms BIGINT,
    uptime_secs BIGINT
);

-- ACCESS-3: instance events live in the audit log; the owner reads them per instance.
ALTER TABLE audit_events ADD COLUMN instance_id TEXT;
CREATE INDEX audit_events_instance ON audit_events(instance_id, id);
