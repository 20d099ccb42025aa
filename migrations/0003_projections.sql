-- Projection bookkeeping. See docs/ARCHITECTURE.md, "Projections".
CREATE SCHEMA IF NOT EXISTS projections;

-- Where each projection stands, per instance. Written in the same transaction as the read-model
-- rows of the batch it records.
CREATE TABLE projections.projection_states (
    name              text        NOT NULL,
    instance_id       uuid        NOT NULL,
    position          bigint      NOT NULL DEFAULT 0,
    position_offset   integer     NOT NULL DEFAULT 0,
    aggregate_type    text,
    aggregate_id      uuid,
    sequence          bigint,
    event_timestamp   timestamptz,
    last_processed_at timestamptz,
    status            text        NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'retrying', 'rebuilding')),
    error_count       bigint      NOT NULL DEFAULT 0,
    last_error        text,
    rebuild_requested boolean     NOT NULL DEFAULT false,
    rebuild_target    bigint,
    PRIMARY KEY (name, instance_id)
);

-- Events whose reduce failed: retried up to a limit, then skipped (and kept here for operators).
CREATE TABLE projections.projection_failed_events (
    projection_name  text        NOT NULL,
    instance_id      uuid        NOT NULL,
    position         bigint      NOT NULL,
    position_offset  integer     NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     uuid        NOT NULL,
    sequence         bigint      NOT NULL,
    event_type       text        NOT NULL,
    failure_count    integer     NOT NULL,
    error            text        NOT NULL,
    event_data       jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'retrying' CHECK (status IN ('retrying', 'skipped', 'resolved')),
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    PRIMARY KEY (projection_name, instance_id, position, position_offset)
);

-- Who may write a (projection, instance): at most one live replica at a time.
CREATE TABLE projection_locks (
    projection_name text        NOT NULL,
    instance_id     uuid        NOT NULL,
    owner_id        uuid        NOT NULL,
    acquired_at     timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (projection_name, instance_id)
);
CREATE INDEX projection_locks_owner ON projection_locks (owner_id);

-- Live projector replicas (heartbeats) and the projections each runs; a projection's leases are
-- spread by rendezvous hashing over the live replicas that run it.
CREATE TABLE projections.projector_replicas (
    owner_id     uuid        PRIMARY KEY,
    projections  text[]      NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
