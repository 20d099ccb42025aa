-- The deliveries being called, by key: what ends a call (`finish`, `finish_delivered`, `release`)
-- looks its rows up here. Without statistics the planner otherwise took the open rows' index
-- (deliveries_open_aggregate) by target and read every open delivery of the target per batch,
-- so dispatch slowed as a target's backlog grew. This index holds only the calls in flight.
CREATE UNIQUE INDEX deliveries_in_flight ON actions.deliveries (target_id, event_id) WHERE state = 'delivering';

-- A target's given-up deliveries (GetTarget, ListTargets and the console count them): without
-- it the count read every delivery the target ever had.
CREATE INDEX deliveries_failed ON actions.deliveries (target_id) WHERE state = 'failed';
