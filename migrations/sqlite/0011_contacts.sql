-- Company contacts and contact groups (SPEC P8; seed 001 企业联系人).

-- One contact of a tenant's company directory. `numbers_json` holds `[{type, number}]` as
-- entered; `number_digits` the digits of each number between spaces (` 0592123 86138 `), and
-- `search_key` the lower-case name, company and email, so a search by number or name is one
-- LIKE on the tenant's rows. Listed by `name_key` (the lower-case name), then id.
CREATE TABLE contacts (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL,
    company       TEXT NULL,
    email         TEXT NULL,
    notes         TEXT NULL,
    numbers_json  TEXT NOT NULL,
    number_digits TEXT NOT NULL,
    search_key    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX contacts_tenant_name ON contacts(tenant_id, name_key, id);

-- Named groups of contacts; a name is unique per tenant.
CREATE TABLE contact_groups (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Members of a group: contacts of the same tenant. Gone with the group or the contact.
CREATE TABLE contact_group_members (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    group_id   TEXT NOT NULL REFERENCES contact_groups(id) ON DELETE CASCADE,
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX contact_group_members_contact ON contact_group_members(contact_id);
