-- Tables owned by command-api: API/SCIM/personal access tokens (hashes only), the idempotent
-- command store, per-instance SMTP settings and email template overrides.
CREATE SCHEMA IF NOT EXISTS api;

CREATE TABLE api.tokens (
    id           text        PRIMARY KEY,
    instance_id  uuid        NOT NULL,
    org_id       uuid,
    principal_id uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('pat', 'api', 'scim')),
    roles        text[]      NOT NULL,
    hash         text        NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX tokens_principal ON api.tokens (instance_id, principal_id);

-- Idempotency keys: a repeated key with the same request gets the stored response.
CREATE TABLE api.commands (
    instance_id  uuid        NOT NULL,
    key          text        NOT NULL,
    method       text        NOT NULL,
    request_hash text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('pending', 'processed', 'failed')),
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (instance_id, key)
);
CREATE INDEX commands_expiry ON api.commands (expires_at);

CREATE TABLE api.smtp_settings (
    instance_id  uuid        PRIMARY KEY,
    host         text        NOT NULL,
    port         integer     NOT NULL,
    tls          text        NOT NULL CHECK (tls IN ('none', 'starttls', 'implicit')),
    username     text,
    password     jsonb,
    from_address text        NOT NULL,
    from_name    text,
    reply_to     text,
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE api.email_templates (
    instance_id uuid        NOT NULL,
    language    text        NOT NULL,
    template    jsonb       NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (instance_id, language)
);
