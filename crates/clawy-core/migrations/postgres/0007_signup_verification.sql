-- Signup abuse: the email address is verified before the first instance, and an
-- operator may make signup invite-only. Conventions as in 0001.

-- NULL until the owner opened the emailed link. Accounts that existed before
-- verification was required are treated as verified.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
UPDATE users SET email_verified_at = created_at;

-- Verification links: SHA-256 only, single use.
CREATE TABLE email_verifications (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_verifications_user ON email_verifications(user_id);

-- Invitations for invite-only signup: SHA-256 only, single use.
CREATE TABLE invites (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);
