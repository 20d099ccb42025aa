-- Positions keep rising across backup and restore (DESIGN.md guarantee 11). See
-- docs/ARCHITECTURE.md, "Positions across backup and restore".
--
-- An event's position is its transaction's id plus a base kept here (0 until raised). Transaction
-- ids belong to the PostgreSQL cluster, not to the database: after pg_dump/pg_restore or logical
-- replication into another cluster, the new cluster's counter may be far below the stored
-- positions, and new events would land behind every reader's cursor. raise_position_base moves
-- the base so that every transaction from now on, and every one still running that has not yet
-- read the base, gets a position above every stored event. It waits (ACCESS EXCLUSIVE on this
-- table) until every transaction that read the old base has ended: pushes read it, and hold the
-- lock to their commit. Readers compute their horizon with the same base.
CREATE TABLE eventstore.position_base (
    only_row  boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    base      bigint      NOT NULL DEFAULT 0 CHECK (base >= 0),
    raised_at timestamptz
);
INSERT INTO eventstore.position_base DEFAULT VALUES;

-- The horizon of a reader: every position below it belongs to a transaction that has ended.
CREATE FUNCTION eventstore.visible_below() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint + base FROM eventstore.position_base
$$;

-- Raises the base, if needed, so that new positions lie above every stored event and above
-- `above` (for example the last position a stream or a backup of the stream already holds).
-- Returns the base before and after.
CREATE FUNCTION eventstore.raise_position_base(above bigint, OUT before bigint, OUT after bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_floor  bigint;
    v_needed bigint;
BEGIN
    -- One raiser at a time: two that both read the base and then both asked for the exclusive
    -- lock would deadlock.
    PERFORM pg_advisory_xact_lock(hashtextextended('cairn.eventstore.position_base', 0));
    SELECT base INTO before FROM eventstore.position_base;
    SELECT greatest(coalesce(max(position), 0), above) INTO v_needed FROM eventstore.events;
    v_floor := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    after := before;
    IF v_floor + before > v_needed THEN
        RETURN;
    END IF;
    LOCK TABLE eventstore.position_base IN ACCESS EXCLUSIVE MODE;
    SELECT base INTO before FROM eventstore.position_base;
    SELECT greatest(coalesce(max(position), 0), above) INTO v_needed FROM eventstore.events;
    v_floor := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    after := before;
    IF v_floor + before <= v_needed THEN
        after := v_needed + 1 - v_floor;
        UPDATE eventstore.position_base SET base = after, raised_at = clock_timestamp();
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION eventstore.push(
    a_instance uuid[], a_type text[], a_id uuid[], a_expected bigint[],
    e_agg integer[], e_nth integer[], e_id uuid[], e_type text[], e_revision smallint[],
    e_payload jsonb[], e_creator text[], e_owner uuid[], e_trace text[],
    u_op text[], u_instance uuid[], u_type text[], u_value text[],
    in_transaction boolean,
    OUT out_position bigint, OUT out_first_offset integer, OUT out_created_at timestamptz,
    OUT out_sequences bigint[], OUT out_inserted bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_current  bigint;
    v_last_pos bigint;
BEGIN
    SELECT pg_current_xact_id()::text::bigint + pb.base INTO out_position FROM eventstore.position_base pb;
    out_created_at := statement_timestamp();
    out_sequences := '{}';
    FOR i IN 1 .. cardinality(a_id) LOOP
        v_current := NULL;
        v_last_pos := NULL;
        EXECUTE 'SELECT ev.sequence, ev.position FROM eventstore.events ev '
                'WHERE ev.instance_id = $1 AND ev.aggregate_type = $2 AND ev.aggregate_id = $3 '
                'ORDER BY ev.sequence DESC LIMIT 1'
           INTO v_current, v_last_pos
          USING a_instance[i], a_type[i], a_id[i];
        v_current := coalesce(v_current, 0);
        IF a_expected[i] IS NOT NULL AND a_expected[i] <> v_current THEN
            PERFORM eventstore.fail_conflict(i, a_expected[i], v_current);
        END IF;
        IF v_last_pos > out_position THEN
            PERFORM eventstore.fail_order(i, v_last_pos, out_position);
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
