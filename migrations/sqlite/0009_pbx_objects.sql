-- PBX objects configured through the API (SPEC P8, T7): business-hours schedules and ring
-- groups so far, one table for all of them.

-- One row per object. `kind` says which object (`schedule`, `ring_group`); `key` is what
-- callers and other objects refer to it by (a schedule's IANA time zone, a ring group's
-- number), unique per tenant and kind, and never changed after creation. `config_json` is the
-- object's settings in the contract's JSON form (`pbx_contract::schedule::Schedule`,
-- `pbx_contract::ring_group::RingGroup`), the key repeated in it. Rows go with their tenant.
CREATE TABLE pbx_objects (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    obj_key      TEXT NOT NULL,
    config_json  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, kind, obj_key)
);
