-- The relay's durable cursor and lease, one row per stream. The cursor only moves past events that
-- JetStream acknowledged, and only while the writer holds the lease (fencing).
CREATE TABLE eventstore.relay_cursors (
    stream           text        PRIMARY KEY,
    position         bigint      NOT NULL DEFAULT 0,
    in_tx_order      integer     NOT NULL DEFAULT 0,
    owner_id         uuid,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
