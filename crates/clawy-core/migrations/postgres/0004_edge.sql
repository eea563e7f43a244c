-- The edge and DNS (issue 9). Numbered 0004: 0003 is taken by the guest branch.
--
-- Every instance gets a public hostname `<name>-<short id>.<instances_domain>` at
-- create time. Instance rows are never removed (deleted ones keep `deleted_at`), so
-- this unique index keeps a hostname reserved for ever: never reused for anyone.
ALTER TABLE instances ADD COLUMN hostname TEXT;
CREATE UNIQUE INDEX instances_hostname ON instances(hostname);
-- ACCESS-1: the DNS records as published (what the owner sees) and where the
-- publication stands: `pending` (to publish), `published`, `removing` (the VM is
-- gone, the records are to be removed), `removed`, or NULL (no hostname / no DNS).
-- dns_error: the last failure in words, shown to operators; cleared on success.
ALTER TABLE instances ADD COLUMN dns_state TEXT;
ALTER TABLE instances ADD COLUMN dns_a TEXT;
ALTER TABLE instances ADD COLUMN dns_aaaa TEXT;
ALTER TABLE instances ADD COLUMN dns_error TEXT;
ALTER TABLE instances ADD COLUMN dns_checked_at BIGINT;

-- The public addresses an instance's records point at: the host whose edge serves
-- it. Set by the operator (`clawy admin hosts set-public-address`); NULL = no record
-- of that type.
ALTER TABLE hosts ADD COLUMN public_ipv4 TEXT;
ALTER TABLE hosts ADD COLUMN public_ipv6 TEXT;

-- Secrets the operator hands over once (the TSIG key), sealed with the operator key
-- (DATA-4), never stored or shown in plain text.
CREATE TABLE sealed_settings (
    name TEXT PRIMARY KEY NOT NULL,
    -- Non-secret companion (e.g. the TSIG key's name), shown to operators.
    label TEXT NOT NULL DEFAULT '',
    value_sealed TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
