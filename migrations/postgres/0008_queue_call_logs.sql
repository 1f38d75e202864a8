-- Queue call logs, agent session logs and queue e-mail notifications (SPEC Q11, Q13, Q14),
-- built by the events consumer from the edges' `QueueEvent` events. Rows go with their tenant.

-- Control-plane-only settings of a queue (never in the edge snapshot): the managers' e-mail
-- addresses, which notifications they get, and the disposition auto-sync window. JSON of
-- `db::queue_calls::QueueNotify`; '{}' means the defaults.
ALTER TABLE queues ADD COLUMN notify_json TEXT NOT NULL DEFAULT '{}';

-- One row per queue call: the call id the edge reports and the queue (a call that fails over
-- to another queue has a row in each). Every column is filled in by the
-- event that knows it, whatever order the events arrive in. `outcome` is answered,
-- abandoned, missed, callback_requested, callback_succeeded or callback_failed (NULL while
-- the caller waits); `disposition` (unhandled, handling, handled) only for missed,
-- abandoned and failed-callback calls; `auto_synced` 0/1.
CREATE TABLE queue_calls (
    call_id          TEXT NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    queue_number     TEXT NOT NULL,
    caller_number    TEXT NULL,
    joined_ms        BIGINT NULL,
    answered_ms      BIGINT NULL,
    ended_ms         BIGINT NULL,
    wait_ms          BIGINT NULL,
    talk_ms          BIGINT NULL,
    agent            TEXT NULL,
    outcome          TEXT NULL,
    outcome_reason   TEXT NULL,
    callback_number  TEXT NULL,
    disposition      TEXT NULL,
    disposition_ms   BIGINT NULL,
    auto_synced      BIGINT NOT NULL DEFAULT 0,
    survey_score     BIGINT NULL,
    first_event_ms   BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    PRIMARY KEY (call_id, queue_number)
);
CREATE INDEX queue_calls_tenant_time ON queue_calls(tenant_id, first_event_ms DESC, call_id DESC);
CREATE INDEX queue_calls_caller ON queue_calls(tenant_id, queue_number, caller_number, joined_ms);

-- Agent state intervals: kind logged_in, paused (with its reason) or wrap_up, per agent
-- (extension number) and queue ('' = all queues). `ended_ms` NULL while open.
CREATE TABLE agent_sessions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent         TEXT NOT NULL,
    queue_number  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    reason_code   TEXT NULL,
    reason        TEXT NULL,
    auto          BIGINT NOT NULL DEFAULT 0,
    started_ms    BIGINT NOT NULL,
    ended_ms      BIGINT NULL
);
CREATE INDEX agent_sessions_tenant_time ON agent_sessions(tenant_id, started_ms DESC, id DESC);
CREATE INDEX agent_sessions_open ON agent_sessions(tenant_id, agent, queue_number, kind) WHERE ended_ms IS NULL;

-- Mails to queue managers, written in the transaction of what they announce and sent by
-- `workers::queue_mail`. `dedup_key` (kind and call id, or the SLA interval) makes each
-- notice once only; `claimed_ms` is set before sending so a mail is never sent twice.
CREATE TABLE queue_mail_outbox (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    dedup_key     TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    subject       TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    claimed_ms    BIGINT NULL,
    sent_ms       BIGINT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NULL,
    UNIQUE (tenant_id, dedup_key)
);
CREATE INDEX queue_mail_outbox_pending ON queue_mail_outbox(created_ms) WHERE sent_ms IS NULL;
