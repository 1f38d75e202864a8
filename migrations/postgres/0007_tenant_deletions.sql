-- Tenant deletion jobs (SPEC P2): `DELETE /tenants/{slug}` marks the tenant `deleting` and
-- inserts a row here; the deletion worker then runs the steps in order, recording each one
-- done before starting the next, so a restart resumes where it stopped:
-- export (archive written at `export_key`) -> billing (Stripe subscription cancelled) ->
-- objects (the tenant's objects erased) -> rows (the tenant's rows erased; `done`).
-- No foreign key to `tenants`: the job and its report outlive the tenant row.
-- `report_json` holds the counts erased (rows per table, objects), filled in as steps finish.
CREATE TABLE tenant_deletions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL UNIQUE,
    tenant_slug   TEXT NOT NULL,
    reseller_id   TEXT NULL,
    step          TEXT NOT NULL,
    export_key    TEXT NULL,
    report_json   TEXT NOT NULL,
    attempts      BIGINT NOT NULL,
    last_error    TEXT NULL,
    requested_by  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    finished_at   BIGINT NULL
);
CREATE INDEX tenant_deletions_step ON tenant_deletions(step, created_at);
