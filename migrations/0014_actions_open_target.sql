-- The strict-order head check's index, made usable by the strict-order queries only: they state
-- `event_offset >= 0` (true of every row), which the per-aggregate queries do not. Without
-- statistics (autovacuum off, a table never analysed) the planner estimated one row for either
-- partial index and took this smaller one for the per-aggregate check too, reading every open
-- delivery of the target for each new row: quadratic in a down target's backlog. Now only
-- deliveries_open_aggregate fits the per-aggregate check.
DROP INDEX actions.deliveries_open_target;
CREATE INDEX deliveries_open_target ON actions.deliveries (target_id, event_position, event_offset)
    WHERE state IN ('pending', 'delivering') AND event_offset >= 0;
