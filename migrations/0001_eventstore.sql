-- The append-only event store. See docs/ARCHITECTURE.md, "Global order without gaps".
CREATE SCHEMA IF NOT EXISTS eventstore;

CREATE TABLE eventstore.events (
    instance_id     uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    revision        smallint    NOT NULL,
    payload         jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    creator         text        NOT NULL,
    resource_owner  uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    -- the id (xid8) of the pushing transaction: shared by every event of one push
    position        bigint      NOT NULL,
    -- the event's index within its transaction
    in_tx_order     integer     NOT NULL,
    id              uuid        NOT NULL,
    trace_context   text,
    CONSTRAINT events_aggregate_sequence PRIMARY KEY (instance_id, aggregate_type, aggregate_id, sequence)
);

-- Tailing in global order, for everyone and per tenant.
CREATE UNIQUE INDEX events_global_position ON eventstore.events (position, in_tx_order);
CREATE INDEX events_instance_position ON eventstore.events (instance_id, position, in_tx_order);

-- Uniqueness that users rely on (userName per instance, group displayName per organisation, ...),
-- claimed and released in the same transaction as the events that need it.
CREATE TABLE eventstore.unique_constraints (
    instance_id  uuid NOT NULL,
    unique_type  text NOT NULL,
    unique_value text NOT NULL,
    PRIMARY KEY (instance_id, unique_type, unique_value)
);

-- The latest snapshot of an aggregate's state; ignored when written by another schema version.
CREATE TABLE eventstore.snapshots (
    instance_id    uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   uuid        NOT NULL,
    sequence       bigint      NOT NULL,
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (instance_id, aggregate_type, aggregate_id)
);

-- One push, atomically, in one call and one round trip. Parameters are parallel arrays:
--   a_*  one entry per aggregate: instance, type, id, expected sequence (NULL = any);
--   e_*  one entry per event in push order: its aggregate (1-based index into a_*), its 1-based
--        place within that aggregate, id, type, revision, payload, creator, owner, traceparent;
--   u_*  unique-constraint operations: 'add' | 'remove', instance, type, value;
--   in_transaction  true when the caller's transaction may already have pushed (offsets continue).
-- The position is the pushing transaction's id. Errors: CA409 (fail_conflict), CA423
-- (fail_unique), and 23505 on events_aggregate_sequence when a concurrent push appended the same
-- sequence first.
CREATE FUNCTION eventstore.push(
    a_instance uuid[], a_type text[], a_id uuid[], a_expected bigint[],
    e_agg integer[], e_nth integer[], e_id uuid[], e_type text[], e_revision smallint[],
    e_payload jsonb[], e_creator text[], e_owner uuid[], e_trace text[],
    u_op text[], u_instance uuid[], u_type text[], u_value text[],
    in_transaction boolean,
    OUT out_position bigint, OUT out_first_offset integer, OUT out_created_at timestamptz,
    OUT out_sequences bigint[], OUT out_inserted bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
BEGIN
    out_position := pg_current_xact_id()::text::bigint;
    out_created_at := statement_timestamp();
    out_sequences := '{}';
    FOR i IN 1 .. cardinality(a_id) LOOP
        SELECT coalesce(max(ev.sequence), 0) INTO v_current
          FROM eventstore.events ev
         WHERE ev.instance_id = a_instance[i] AND ev.aggregate_type = a_type[i] AND ev.aggregate_id = a_id[i];
        IF a_expected[i] IS NOT NULL AND a_expected[i] <> v_current THEN
            PERFORM eventstore.fail_conflict(i, a_expected[i], v_current);
        END IF;
        out_sequences[i] := v_current;
    END LOOP;

    IF cardinality(u_op) > 0 THEN
        PERFORM eventstore.apply_unique_ops(u_op, u_instance, u_type, u_value);
    END IF;

    out_first_offset := 0;
    IF in_transaction THEN
        SELECT coalesce(max(ev.in_tx_order) + 1, 0) INTO out_first_offset
          FROM eventstore.events ev WHERE ev.position = out_position;
    END IF;

    INSERT INTO eventstore.events (instance_id, aggregate_type, aggregate_id, sequence, event_type,
                                   revision, payload, creator, resource_owner, created_at,
                                   position, in_tx_order, id, trace_context)
    SELECT a_instance[x.agg], a_type[x.agg], a_id[x.agg], out_sequences[x.agg] + x.nth,
           x.typ, x.rev, x.payload, x.creator, x.owner, out_created_at,
           out_position, out_first_offset + (x.ord - 1)::integer, x.id, x.trace
      FROM unnest(e_agg, e_nth, e_id, e_type, e_revision, e_payload, e_creator, e_owner, e_trace)
           WITH ORDINALITY AS x(agg, nth, id, typ, rev, payload, creator, owner, trace, ord);
    GET DIAGNOSTICS out_inserted = ROW_COUNT;
END;
$$;

-- Applies a push's unique-constraint operations: releases first (except values the same push
-- claims again, which keep their row), then claims. Returns the number of operations.
CREATE FUNCTION eventstore.apply_unique_ops(ops text[], instances uuid[], types text[], vals text[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
    v_value text;
BEGIN
    DELETE FROM eventstore.unique_constraints uc
     USING unnest(ops, instances, types, vals) AS r(op, instance_id, unique_type, unique_value)
     WHERE r.op = 'remove' AND uc.instance_id = r.instance_id AND uc.unique_type = r.unique_type
       AND uc.unique_value = r.unique_value
       AND NOT EXISTS (SELECT 1 FROM unnest(ops, instances, types, vals) AS a(op, instance_id, unique_type, unique_value)
                        WHERE a.op = 'add' AND a.instance_id = r.instance_id
                          AND a.unique_type = r.unique_type AND a.unique_value = r.unique_value);

    WITH wanted AS (
        SELECT DISTINCT a.instance_id, a.unique_type, a.unique_value,
               EXISTS (SELECT 1 FROM unnest(ops, instances, types, vals) AS r(op, instance_id, unique_type, unique_value)
                        WHERE r.op = 'remove' AND r.instance_id = a.instance_id
                          AND r.unique_type = a.unique_type AND r.unique_value = a.unique_value) AS reclaimed
          FROM unnest(ops, instances, types, vals) AS a(op, instance_id, unique_type, unique_value)
         WHERE a.op = 'add'
    ), claimed AS (
        INSERT INTO eventstore.unique_constraints (instance_id, unique_type, unique_value)
        SELECT instance_id, unique_type, unique_value FROM wanted
        ON CONFLICT DO NOTHING
        RETURNING instance_id, unique_type, unique_value
    )
    SELECT w.unique_type, w.unique_value INTO v_type, v_value
      FROM wanted w
     WHERE NOT w.reclaimed
       AND NOT EXISTS (SELECT 1 FROM claimed c WHERE c.instance_id = w.instance_id
                          AND c.unique_type = w.unique_type AND c.unique_value = w.unique_value)
     LIMIT 1;
    IF v_type IS NOT NULL THEN
        PERFORM eventstore.fail_unique(v_type, v_value);
    END IF;
    RETURN cardinality(ops);
END;
$$;

-- These raise the push's typed errors.
-- CA409: an aggregate is not at the expected sequence. DETAIL: <aggregate index>/<expected>/<actual>.
CREATE FUNCTION eventstore.fail_conflict(idx bigint, expected bigint, actual bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'aggregate sequence conflict'
        USING ERRCODE = 'CA409', DETAIL = format('%s/%s/%s', idx, expected, actual);
END;
$$;

-- CA423: a unique value is already claimed. DETAIL: the constraint type; HINT: the value.
CREATE FUNCTION eventstore.fail_unique(unique_type text, unique_value text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'unique constraint violated'
        USING ERRCODE = 'CA423', DETAIL = unique_type, HINT = unique_value;
END;
$$;
