-- Actions: targets, executions and outbound webhook deliveries (DESIGN.md guarantee 13). See
-- docs/ARCHITECTURE.md, "Guarantee 13 — outbound delivery".
--
-- Targets and executions are event-sourced (`action.target.*`, `action.execution.*`); the tables
-- below are the `actions` projection's view of them, written by the same projection, in the same
-- transaction and in event order, as the deliveries each event makes. So an event is matched
-- against the executions as they stood at that event's position, on a live run and on a replay.
CREATE SCHEMA IF NOT EXISTS actions;

CREATE TABLE actions.targets (
    instance_id          uuid        NOT NULL,
    id                   uuid        NOT NULL,
    name                 text        NOT NULL,
    endpoint             text        NOT NULL,
    kind                 text        NOT NULL CHECK (kind IN ('webhook', 'call', 'async')),
    timeout_ms           integer     NOT NULL CHECK (timeout_ms > 0),
    interrupt_on_error   boolean     NOT NULL,
    strict_order         boolean     NOT NULL,
    -- The signing secret, sealed by the keyring ({keyId, nonce, ciphertext}); during a rotation
    -- the previous one too, valid until previous_expires_at.
    secret               jsonb       NOT NULL,
    previous_secret      jsonb,
    previous_expires_at  timestamptz,
    state                text        NOT NULL CHECK (state IN ('active', 'disabled')),
    disabled_reason      text,
    created_at           timestamptz NOT NULL,
    changed_at           timestamptz NOT NULL,
    sequence             bigint      NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE UNIQUE INDEX targets_name ON actions.targets (instance_id, lower(name));

-- One execution per (instance, condition): `event:<type>`, `event:<group>.*`, `event:*`,
-- `request:/<service>/<method>`, `request:<service>`, `request:*`.
CREATE TABLE actions.executions (
    instance_id uuid        NOT NULL,
    condition   text        NOT NULL,
    targets     uuid[]      NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (instance_id, condition)
);

-- The health of a target as the dispatchers see it (not event-sourced: it changes with every
-- attempt). failing_since is set by the first failure after a success and cleared by a success.
CREATE TABLE actions.target_health (
    instance_id       uuid        NOT NULL,
    target_id         uuid        NOT NULL,
    failing_since     timestamptz,
    last_success_at   timestamptz,
    last_failure_at   timestamptz,
    last_error        text,
    PRIMARY KEY (instance_id, target_id)
);

-- One row per (event, target), inserted by the `actions` projection with its position; keyed by
-- both, so a replay (a rebuild, a second read of a batch) never makes a second delivery. A
-- delivery is claimable when it is due and no earlier delivery of the same aggregate to the same
-- target (of any aggregate, for a strict-order target) is still open.
CREATE TABLE actions.deliveries (
    instance_id      uuid        NOT NULL,
    target_id        uuid        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     uuid        NOT NULL,
    sequence         bigint      NOT NULL,
    event_position   bigint      NOT NULL,
    event_offset     integer     NOT NULL,
    event_created_at timestamptz NOT NULL,
    state            text        NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    -- attempts when the current retry schedule began (a retry or replay starts a new one); the
    -- attempt numbers themselves keep counting, so the attempt log keeps every round.
    schedule_from    integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_by       uuid,
    claim_expires_at timestamptz,
    last_status      integer,
    last_error       text,
    -- A replay of a range makes a delivered row pending again; replays counts them.
    replays          integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at     timestamptz,
    PRIMARY KEY (target_id, event_id)
);
CREATE INDEX deliveries_due ON actions.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_claims ON actions.deliveries (claim_expires_at) WHERE state = 'delivering';
-- The order check: the open deliveries of one target, by aggregate and by position.
CREATE INDEX deliveries_open_aggregate ON actions.deliveries
    (target_id, aggregate_type, aggregate_id, event_position, event_offset)
    WHERE state IN ('pending', 'delivering');
CREATE INDEX deliveries_open_target ON actions.deliveries (target_id, event_position, event_offset)
    WHERE state IN ('pending', 'delivering');
-- The delivery log: per instance and target, newest first; by event.
CREATE INDEX deliveries_listing ON actions.deliveries (instance_id, target_id, created_at DESC);
CREATE INDEX deliveries_event ON actions.deliveries (instance_id, event_id);

-- Every attempt: its status (NULL when no HTTP response came), latency, the first 2 KiB of the
-- response body, the error.
CREATE TABLE actions.attempts (
    instance_id  uuid        NOT NULL,
    target_id    uuid        NOT NULL,
    event_id     uuid        NOT NULL,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    status       integer,
    latency_ms   double precision NOT NULL,
    response     text,
    error        text,
    PRIMARY KEY (target_id, event_id, attempt)
);
CREATE INDEX attempts_listing ON actions.attempts (instance_id, target_id, started_at DESC);
