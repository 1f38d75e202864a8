-- Tenant FQDN certificates by ACME (SPEC P3).

-- The ACME account of this platform at one directory: created once, its credentials (which
-- hold the account's private key) sealed with the master key.
CREATE TABLE acme_accounts (
    directory_url      TEXT PRIMARY KEY,
    credentials_sealed TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

-- HTTP-01 key authorizations being validated, by token: every control plane behind the
-- load balancer answers `/.well-known/acme-challenge/{token}` from here.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    key_authorization TEXT NOT NULL,
    expires_at_ms     BIGINT NOT NULL
);

-- One certificate per tenant name. `state`: pending (never issued), issued, failed (the
-- last attempt failed; an older chain may still be served). The key is sealed, bound to the
-- row. `next_attempt_at_ms` is when the worker tries again (backoff after failures, 30 days
-- before expiry after success).
CREATE TABLE certificates (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    state              TEXT NOT NULL,
    issuer             TEXT NULL,
    chain_pem          TEXT NULL,
    key_sealed         TEXT NULL,
    not_after_ms       BIGINT NULL,
    attempts           BIGINT NOT NULL,
    last_error         TEXT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX certificates_next_attempt ON certificates(next_attempt_at_ms);
