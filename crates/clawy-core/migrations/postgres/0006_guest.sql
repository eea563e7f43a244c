-- The real guest (OpenClaw gateway, hardened Debian VM).
--
-- Plans: the gateway's RSS is about 1 GB, so a default plan below 2 GiB cannot run
-- it. The seeded 512 MiB plan keeps its id (instances made with it keep pointing at
-- the same numbers) and is renamed `stand-in`: the busybox test stand-in's plan. A new
-- `small` (1 vCPU, 2 GiB, 10 GiB) takes its name, unless an operator already
-- renamed or replaced the seeded rows.
UPDATE plans SET name = 'stand-in'
    WHERE id = 'small' AND name = 'small' AND memory_mib = 512
      AND NOT EXISTS (SELECT 1 FROM plans WHERE name = 'stand-in');
INSERT INTO plans (id, name, vcpus, memory_mib, disk_gib, created_at, updated_at)
    SELECT 'small-2g', 'small', 1, 2048, 10, 0, 0
    WHERE NOT EXISTS (SELECT 1 FROM plans WHERE name = 'small');

-- DATA-5: the owner's secrets for the guest (the gateway token the platform made,
-- and the Telegram bot token and model key the owner gave, if any), sealed with the
-- operator key (XChaCha20-Poly1305, the instance id authenticated with it) until
-- the guest's heartbeat confirms the configuration was applied. Then the row is
-- deleted and `secrets_delivered_at` says when; nothing of them is kept.
CREATE TABLE instance_guest_secrets (
    instance_id TEXT PRIMARY KEY NOT NULL REFERENCES instances(id),
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE instances ADD COLUMN secrets_delivered_at BIGINT;

-- ACCESS-1: the guest's latest service-health heartbeat (the allow-listed facts as
-- the agent accepted them, JSON) and when the agent received it.
ALTER TABLE instance_health ADD COLUMN heartbeat TEXT;
ALTER TABLE instance_health ADD COLUMN heartbeat_at BIGINT;
