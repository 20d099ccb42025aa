-- Delivery records of the notifier (DESIGN.md guarantee 10). See docs/ARCHITECTURE.md,
-- "Guarantee 10 — notifications".
--
-- One row per `user.human.email.code.added` event, keyed by the event's id and inserted by the
-- `notifications` projection in the same transaction as its position, so every event gets exactly
-- one row however often it is read. Senders claim due rows with FOR UPDATE SKIP LOCKED; a claim
-- carries an expiry so the claims of a dead sender return to the queue.
CREATE SCHEMA IF NOT EXISTS notification;

CREATE TABLE notification.deliveries (
    event_id         uuid        PRIMARY KEY,
    instance_id      uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    org_id           uuid        NOT NULL,
    kind             text        NOT NULL DEFAULT 'email_verification',
    email            text        NOT NULL,
    -- The language the message was rendered in (set when it is rendered).
    language         text,
    -- The sealed code ({keyId, nonce, ciphertext}) as the event carries it; cleared once the row is
    -- final (sent, failed, skipped), so the queue holds no code material longer than needed.
    code             jsonb,
    url_template     text,
    expires_at       timestamptz NOT NULL,
    event_position   bigint      NOT NULL,
    event_offset     integer     NOT NULL,
    event_created_at timestamptz NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    -- Claims so far (each claim is one attempt to send).
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_by       uuid,
    claim_expires_at timestamptz,
    last_error       text,
    smtp_reply       text,
    -- The Message-ID header, derived from the event id: every copy of one delivery carries it.
    message_id       text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at          timestamptz
);

-- The senders' claim query: due pending rows, and rows whose claim expired.
CREATE INDEX deliveries_due ON notification.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_claims ON notification.deliveries (claim_expires_at) WHERE status = 'sending';
-- The admin listing, newest first, per instance (and per user).
CREATE INDEX deliveries_instance ON notification.deliveries (instance_id, created_at DESC);
CREATE INDEX deliveries_user ON notification.deliveries (instance_id, user_id, created_at DESC);
