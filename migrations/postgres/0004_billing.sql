-- Stripe billing (SPEC P5): the Stripe customer and subscription of a tenant, the seat
-- (extension) count owed to Stripe, and the webhook events already applied.

-- One row per tenant that started a checkout. `stripe_subscription_id` is set by the
-- webhooks once the subscription exists and cleared when it is deleted. `last_event_at`
-- (Stripe's `created`, seconds) orders webhooks, which Stripe may deliver out of order: an
-- event older than the last one applied changes nothing.
-- Seat sync: extension changes raise `seats_gen` and set `seats_due_at_ms` in their own
-- transaction; the billing worker sends the count to Stripe and clears the due time only if
-- `seats_gen` did not move meanwhile, else it sends again. Failures back off
-- (`seats_attempts`, `seats_error`); nothing is lost while Stripe is down.
CREATE TABLE billing_accounts (
    tenant_id               TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    stripe_customer_id      TEXT NOT NULL UNIQUE,
    stripe_subscription_id  TEXT NULL UNIQUE,
    subscription_item_id    TEXT NULL,
    subscription_status     TEXT NULL,
    price_id                TEXT NULL,
    last_event_at           BIGINT NOT NULL,
    seats_synced            BIGINT NULL,
    seats_gen               BIGINT NOT NULL,
    seats_due_at_ms         BIGINT NULL,
    seats_attempts          BIGINT NOT NULL,
    seats_error             TEXT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX billing_accounts_seats_due ON billing_accounts(seats_due_at_ms);

-- Stripe webhook events applied, written in the transaction of their effect: a replay
-- finds its id here and changes nothing. Kept when the tenant is deleted.
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    tenant_id    TEXT NULL,
    created      BIGINT NOT NULL,
    received_at  BIGINT NOT NULL
);
