-- Call queues (SPEC Q1-Q16, configured through the API, SPEC P8).

-- One row per queue. `number` is what callers dial (default range 6400-6499) and never
-- changes after creation. `config_json` is the queue's settings in the contract's JSON form
-- (`pbx_contract::queue::QueueConfig` with members as extension numbers), exactly what
-- the edge snapshot carries; `number` and `name` are repeated in it. Rows go with their tenant.
CREATE TABLE queues (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    number       TEXT NOT NULL,
    name         TEXT NOT NULL,
    config_json  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, number)
);
