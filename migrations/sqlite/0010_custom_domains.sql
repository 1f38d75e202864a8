-- Custom domains, DNS-01 challenges and the platform's wildcard certificate (SPEC P3).

-- A tenant's own domain (e.g. `pbx.customer.com`), unique across tenants. `state`: pending
-- (its CNAME does not point at `{slug}.{base_domain}` yet), verified (it does: the domain
-- selects the tenant at the edge and gets a certificate), failed (it was verified and its
-- CNAME went away; `last_error` says what the last check saw). The worker checks it again at
-- `next_check_at_ms`.
CREATE TABLE tenant_domains (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name             TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,
    last_error       TEXT NULL,
    checked_at_ms    BIGINT NULL,
    verified_at_ms   BIGINT NULL,
    next_check_at_ms BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX tenant_domains_tenant ON tenant_domains(tenant_id);
CREATE INDEX tenant_domains_next_check ON tenant_domains(next_check_at_ms);

-- DNS-01 TXT records being validated (`_acme-challenge.{name}`, lower case, no trailing
-- dot): every control plane's DNS responder answers from here. A name may hold several
-- values at once (a wildcard and its base share one name).
CREATE TABLE acme_dns_records (
    name          TEXT NOT NULL,
    value         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name, value)
);

-- Certificates of the platform itself, not of one tenant: the wildcard `*.{base_domain}`
-- every tenant FQDN is served with under `[acme] wildcard = true`. Same columns and
-- lifecycle as `certificates`.
CREATE TABLE platform_certificates (
    name               TEXT PRIMARY KEY,
    state              TEXT NOT NULL,
    issuer             TEXT NULL,
    chain_pem          TEXT NULL,
    key_sealed         TEXT NULL,
    not_after_ms       BIGINT NULL,
    attempts           BIGINT NOT NULL,
    last_error         TEXT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
