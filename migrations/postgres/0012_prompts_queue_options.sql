-- Uploaded prompts (SPEC T7, P8) and the tenant-wide queue options (SPEC Q9, 队列 > 选项).

-- One row per uploaded prompt. The audio is in the object store at `object_key`
-- (`{tenant}/prompts/{name}-{hash}.wav`, 8 kHz mono 16-bit PCM WAV, converted at upload);
-- `sha256` (hex) and `size_bytes` describe that object. A replacement gets a new key; the row
-- points at it before the old object is deleted. Rows go with their tenant.
CREATE TABLE prompts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    object_key   TEXT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Options of all the tenant's queues besides the pause reasons (which have their own table):
-- shared wrap-up, and the state dynamic agents start in (`logged_out` or `logged_in`). No row:
-- the defaults (off, logged out).
CREATE TABLE queue_options (
    tenant_id              TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    shared_wrap_up         BIGINT NOT NULL,  -- 0/1: the Any driver decodes no SQLite BOOLEAN
    dynamic_agent_default  TEXT NOT NULL,
    updated_at             BIGINT NOT NULL
);
