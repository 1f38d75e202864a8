-- Call logs (SPEC T9) and two per-extension call settings (SPEC T3, T8).

-- 'off' or 'always' (RecordingPolicy in the contract crate).
ALTER TABLE extensions ADD COLUMN recording TEXT NOT NULL DEFAULT 'off';
-- Seconds a call to the extension rings before it ends unanswered (5..=300).
ALTER TABLE extensions ADD COLUMN ring_timeout_secs BIGINT NOT NULL DEFAULT 30;

-- One row per finished call, written once by the events consumer (insert-or-ignore on the
-- call id). Times are milliseconds since the epoch on the edge's clock; ring_ms and talk_ms
-- are derived from them at ingestion. Rows go with their tenant.
CREATE TABLE call_logs (
    call_id        TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    from_number    TEXT NOT NULL,
    from_name      TEXT NULL,
    to_number      TEXT NOT NULL,
    started_ms     BIGINT NOT NULL,
    answered_ms    BIGINT NULL,
    ended_ms       BIGINT NOT NULL,
    ring_ms        BIGINT NOT NULL,
    talk_ms        BIGINT NOT NULL,
    disposition    TEXT NOT NULL,
    hangup_side    TEXT NOT NULL,
    recording_key  TEXT NULL,
    node_id        TEXT NOT NULL,
    created_ms     BIGINT NOT NULL
);
-- Listing newest first per tenant, with (started_ms, call_id) as the keyset cursor.
CREATE INDEX call_logs_tenant_started ON call_logs(tenant_id, started_ms DESC, call_id DESC);
