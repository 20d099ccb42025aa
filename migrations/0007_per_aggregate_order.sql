-- Per-aggregate order (DESIGN.md guarantee 11) and a push whose plans do not depend on statistics.
-- See docs/ARCHITECTURE.md, "Per-aggregate order".
--
-- 1. An event's position is its transaction's id, fixed when the transaction first writes. A
--    transaction that took its id before another transaction appended to an aggregate and
--    committed must not append that aggregate's next event: it would stand below its predecessor
--    in position order, and every reader in position order (the relay, the projections) would see
--    sequence n + 1 before n. The push now reads the position of the aggregate's last event with
--    its sequence and refuses with CA40R when that position is above its own; nothing is written,
--    and the caller runs its whole transaction again (a new transaction gets a new, higher id).
--    An autocommit push that meets CA40R is simply sent again.
-- 2. The lookup of an aggregate's last event is planned on every call (EXECUTE), with the actual
--    aggregate: a plan cached while the table was small (and never analysed, with autovacuum off)
--    scanned every event of the instance through events_instance_position instead of reading one
--    entry of the primary key.
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
    out_position := pg_current_xact_id()::text::bigint;
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

-- CA40R: the pushing transaction's position is below the aggregate's last event, which a
-- transaction that started later has committed. DETAIL: <aggregate index>/<last position>/<own
-- position>. Nothing was written; run the whole transaction again.
CREATE FUNCTION eventstore.fail_order(idx bigint, last_position bigint, own_position bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction is older than the aggregate''s last event'
        USING ERRCODE = 'CA40R', DETAIL = format('%s/%s/%s', idx, last_position, own_position),
              HINT = 'roll back and run the transaction again';
END;
$$;
