-- Foundation: tenants, identity, extensions, audit, transactional outbox, processed events.
-- Ids are UUID text, times are milliseconds since the epoch (BIGINT) so that one set of
-- queries (sqlx Any) runs on PostgreSQL and SQLite alike.

CREATE TABLE resellers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    plan            TEXT NOT NULL,
    state           TEXT NOT NULL,
    reseller_id     TEXT NULL REFERENCES resellers(id),
    config_version  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX tenants_reseller ON tenants(reseller_id);

CREATE TABLE users (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    reseller_id           TEXT NULL REFERENCES resellers(id) ON DELETE CASCADE,
    email                 TEXT NOT NULL,
    display_name          TEXT NOT NULL,
    role                  TEXT NOT NULL,
    password_hash         TEXT NULL,
    must_change_password  BIGINT NOT NULL DEFAULT 0,  -- 0/1: the Any driver decodes no SQLite BOOLEAN
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_platform_email ON users(email) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX users_tenant_email ON users(tenant_id, email) WHERE tenant_id IS NOT NULL;

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT NULL,
    revoked_at  BIGINT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NULL,
    revoked_at    BIGINT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE extensions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    number          TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    email           TEXT NULL,
    sip_secret_enc  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, number)
);

-- No foreign keys: the audit trail outlives what it describes.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NULL,
    actor_id     TEXT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    entity       TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    before_json  TEXT NULL,
    after_json   TEXT NULL,
    request_id   TEXT NULL,
    at           BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    stream        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    published_at  BIGINT NULL
);
CREATE INDEX outbox_unpublished ON outbox(id) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    event_id      TEXT PRIMARY KEY,
    processed_at  BIGINT NOT NULL
);

CREATE TABLE edge_nodes (
    node_id           TEXT PRIMARY KEY,
    state             TEXT NOT NULL,
    software_version  TEXT NULL,
    last_event_at     BIGINT NOT NULL
);

CREATE TABLE edge_node_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    node_id      TEXT NOT NULL,
    tenant_id    TEXT NULL,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL
);
