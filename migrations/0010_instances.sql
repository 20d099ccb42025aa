-- Tenants as a product (issue 15): system tokens, the instance registry and instance domains.
--
-- The registry is write-side state, written in the same transaction as the instance's events (as
-- api.tokens is): authentication reads it on every uncached token lookup, so a deactivation or a
-- removal refuses the instance's tokens the moment it commits, without waiting for a projection.

-- A system token belongs to no instance; every other token belongs to exactly one.
ALTER TABLE api.tokens DROP CONSTRAINT IF EXISTS tokens_kind_check;
ALTER TABLE api.tokens ADD CONSTRAINT tokens_kind_check
    CHECK (kind IN ('pat', 'api', 'scim', 'system'));
ALTER TABLE api.tokens ALTER COLUMN instance_id DROP NOT NULL;
ALTER TABLE api.tokens ADD CONSTRAINT tokens_system_has_no_instance
    CHECK ((kind = 'system') = (instance_id IS NULL));

CREATE TABLE api.instances (
    id                      uuid        PRIMARY KEY,
    name                    text        NOT NULL,
    state                   text        NOT NULL CHECK (state IN ('active', 'inactive', 'removed')),
    default_org_id          uuid,
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Per-instance settings; NULL means the deployment's default (its environment variables).
    email_code_ttl_secs     integer     CHECK (email_code_ttl_secs >= 60),
    email_code_max_attempts integer     CHECK (email_code_max_attempts >= 1),
    scim_emails_verified    boolean,
    default_language        text,
    -- Per-instance limits (the quotas work reads them from here); a missing key is the default.
    limits                  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX instances_listing ON api.instances (state, lower(name), id);

CREATE TABLE api.instance_domains (
    domain      text        PRIMARY KEY,
    instance_id uuid        NOT NULL REFERENCES api.instances (id),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX instance_domains_instance ON api.instance_domains (instance_id);

-- Instances created before this migration: their name from the last event that set it.
INSERT INTO api.instances (id, name, state, default_org_id, created_at, changed_at)
SELECT a.aggregate_id,
       coalesce((SELECT c.payload->>'name' FROM eventstore.events c
                  WHERE c.instance_id = a.instance_id AND c.aggregate_type = 'instance'
                    AND c.aggregate_id = a.aggregate_id AND c.payload ? 'name'
                  ORDER BY c.sequence DESC LIMIT 1), a.payload->>'name'),
       CASE WHEN EXISTS (SELECT 1 FROM eventstore.events r
                          WHERE r.instance_id = a.instance_id AND r.aggregate_type = 'instance'
                            AND r.aggregate_id = a.aggregate_id AND r.event_type = 'instance.removed')
            THEN 'removed' ELSE 'active' END,
       (a.payload->>'defaultOrgId')::uuid,
       a.created_at, a.created_at
  FROM eventstore.events a
 WHERE a.aggregate_type = 'instance' AND a.event_type = 'instance.added'
ON CONFLICT (id) DO NOTHING;

-- A projection that has passed an instance's removal says so, and the projector lets its lease go.
ALTER TABLE projections.projection_states DROP CONSTRAINT IF EXISTS projection_states_status_check;
ALTER TABLE projections.projection_states ADD CONSTRAINT projection_states_status_check
    CHECK (status IN ('active', 'retrying', 'rebuilding', 'removed'));
