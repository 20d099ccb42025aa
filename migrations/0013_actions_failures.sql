-- The operator console's "recent failed calls" of an instance, newest first, without reading the
-- successful attempts (see crates/command-api/src/console.rs).
CREATE INDEX attempts_failed ON actions.attempts (instance_id, started_at DESC)
    WHERE status IS NULL OR status < 200 OR status > 299;
