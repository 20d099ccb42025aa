-- The stream sequence beside the relay's cursor (DESIGN.md guarantee 4; docs/ARCHITECTURE.md,
-- "Guarantee 4 — publication"). It is the JetStream stream sequence of the last message the cursor
-- has passed, as JetStream acknowledged it: the relay fences every publish with
-- `Nats-Expected-Last-Sequence`, which survives a restart of the server, and compares the stream's
-- last sequence with this one when it takes the lease, to notice a stream that lost acknowledged
-- messages or was deleted and recreated. 0 means nothing recorded yet (rows from before this
-- migration): the comparison then finds nothing until the relay's next acknowledged publish.
ALTER TABLE eventstore.relay_cursors
    ADD COLUMN stream_sequence bigint NOT NULL DEFAULT 0 CHECK (stream_sequence >= 0);
