-- Online sign-up (SPEC P1) and the free trial (SPEC P2, P4).

-- When a sign-up's 30-day trial ends (ms since the epoch); NULL for tenants created by the
-- operator or a reseller. Only read while the tenant's state is 'trial'.
ALTER TABLE tenants ADD COLUMN trial_ends_at_ms BIGINT NULL;
CREATE INDEX tenants_trial_end ON tenants(state, trial_ends_at_ms);

-- Sign-ups waiting for their email to be verified. Nothing else exists for them yet: the
-- tenant, its admin and its first `cfg` entry are made by the verification. A pending
-- sign-up holds its slug until it expires (one row per slug). The token is stored as its
-- SHA-256 (hex) and the password as its argon2id hash; the row is deleted when used.
CREATE TABLE signups (
    id             TEXT PRIMARY KEY,
    slug           TEXT NOT NULL UNIQUE,
    company_name   TEXT NOT NULL,
    email          TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    client_ip      TEXT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

-- Accepted sign-ups per client address, for the hourly limit; rows older than the window
-- are purged by the next sign-up.
CREATE TABLE signup_attempts (
    client_ip  TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX signup_attempts_ip ON signup_attempts(client_ip, at_ms);
CREATE INDEX signup_attempts_at ON signup_attempts(at_ms);

-- Pause reasons of the tenant's queue agents (SPEC Q9: at most 20; Enterprise, SPEC P4), in
-- the order they are listed. `code` is the feature-code suffix that selects the reason.
CREATE TABLE pause_reasons (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    code       TEXT NOT NULL,
    name       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, position),
    UNIQUE (tenant_id, code),
    UNIQUE (tenant_id, name)
);
