-- The claim's way to the due deliveries (crates/actions/src/deliveries.rs, `claim`): the targets
-- with scheduled deliveries are found by skipping from one target to the next in this index, and
-- each target's due rows read from its start up to the target's room. A claim over the due index
-- in time order read past every due row of a target at its cap, on every claim.
CREATE INDEX deliveries_scheduled ON actions.deliveries (target_id, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at < 'infinity';
