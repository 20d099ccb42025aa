-- Read models, written only by projections (crates/readmodel) and read by the APIs (crates/query).
-- Every row carries instance_id; every query is scoped by it.

CREATE TABLE projections.instances (
    instance_id    uuid        PRIMARY KEY,
    name           text        NOT NULL,
    default_org_id uuid,
    created_at     timestamptz NOT NULL,
    changed_at     timestamptz NOT NULL,
    sequence       bigint      NOT NULL
);

CREATE TABLE projections.orgs (
    instance_id    uuid        NOT NULL,
    id             uuid        NOT NULL,
    name           text        NOT NULL,
    state          text        NOT NULL,
    primary_domain text,
    created_at     timestamptz NOT NULL,
    changed_at     timestamptz NOT NULL,
    sequence       bigint      NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE INDEX orgs_name ON projections.orgs (instance_id, lower(name));

CREATE TABLE projections.org_domains (
    instance_id uuid    NOT NULL,
    org_id      uuid    NOT NULL,
    domain      text    NOT NULL,
    verified    boolean NOT NULL DEFAULT false,
    is_primary  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (instance_id, org_id, domain)
);

-- Users, human and machine. Scalar columns are what filters and sorts use; `profile` is the whole
-- human profile (name, emails, phone numbers, addresses, enterprise fields, extra SCIM attributes)
-- for rendering. Removed users are deleted.
CREATE TABLE projections.users (
    instance_id         uuid        NOT NULL,
    id                  uuid        NOT NULL,
    org_id              uuid        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('human', 'machine')),
    user_name           text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('active', 'inactive', 'locked')),
    display_name        text,
    given_name          text,
    family_name         text,
    formatted_name      text,
    nick_name           text,
    title               text,
    user_type           text,
    preferred_language  text,
    locale              text,
    timezone            text,
    external_id         text,
    primary_email       text,
    email_verified      boolean     NOT NULL DEFAULT false,
    primary_phone       text,
    employee_number     text,
    cost_center         text,
    organization        text,
    division            text,
    department          text,
    manager_id          text,
    description         text,
    profile             jsonb       NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL,
    changed_at          timestamptz NOT NULL,
    sequence            bigint      NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE INDEX users_user_name ON projections.users (instance_id, lower(user_name));
CREATE INDEX users_external_id ON projections.users (instance_id, external_id);
CREATE INDEX users_primary_email ON projections.users (instance_id, lower(primary_email));
CREATE INDEX users_display_name ON projections.users (instance_id, lower(display_name));
CREATE INDEX users_changed_at ON projections.users (instance_id, changed_at);
CREATE INDEX users_org ON projections.users (instance_id, org_id);
CREATE INDEX users_emails ON projections.users USING gin ((profile -> 'emails') jsonb_path_ops);

CREATE TABLE projections.groups (
    instance_id  uuid        NOT NULL,
    id           uuid        NOT NULL,
    org_id       uuid        NOT NULL,
    display_name text        NOT NULL,
    external_id  text,
    description  text,
    member_count bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    changed_at   timestamptz NOT NULL,
    sequence     bigint      NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE INDEX groups_display_name ON projections.groups (instance_id, lower(display_name));
CREATE INDEX groups_external_id ON projections.groups (instance_id, external_id);
CREATE INDEX groups_changed_at ON projections.groups (instance_id, changed_at);

-- A row per membership: changing or paging a 100k-member group touches only the rows concerned.
CREATE TABLE projections.group_members (
    instance_id uuid        NOT NULL,
    group_id    uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    added_at    timestamptz NOT NULL,
    PRIMARY KEY (instance_id, group_id, user_id)
);
CREATE INDEX group_members_user ON projections.group_members (instance_id, user_id);

-- Milestones an instance has reached (instance created, first org, first user, ...).
CREATE TABLE projections.milestones (
    instance_id     uuid        NOT NULL,
    milestone       text        NOT NULL,
    reached_at      timestamptz NOT NULL,
    position        bigint      NOT NULL,
    position_offset integer     NOT NULL,
    PRIMARY KEY (instance_id, milestone)
);
