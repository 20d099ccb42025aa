//! The queries behind the gRPC APIs (command-api's users, groups and organisations), always
//! scoped to one instance (and, for tokens bound to an organisation, to that organisation): a
//! resource of another tenant is indistinguishable from a missing one. Values are bound, never
//! interpolated. They sit beside the projections that write the same tables, so a column changes
//! in one crate.

use crate::rows::{GroupRow, OrgRow, UserRow};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Where a read may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The tenant.
    pub instance_id: Uuid,
    /// Only this organisation's resources, when the caller is bound to one.
    pub org_id: Option<Uuid>,
}

/// Filters for listing users; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// userName, case-insensitively.
    pub user_name: Option<String>,
    /// Any of the user's emails, case-insensitively.
    pub email: Option<String>,
    /// `active`, `inactive` or `locked`.
    pub state: Option<String>,
    /// Owning organisation.
    pub org_id: Option<Uuid>,
    /// externalId, exactly.
    pub external_id: Option<String>,
}

/// Sort keys for users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserSort {
    /// Creation time, then id (the default, stable).
    #[default]
    CreatedAt,
    /// Last change.
    ChangedAt,
    /// userName.
    UserName,
    /// Display name.
    DisplayName,
    /// Family name.
    FamilyName,
    /// Given name.
    GivenName,
    /// Primary email.
    Email,
}

impl UserSort {
    fn expr(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::ChangedAt => "changed_at",
            Self::UserName => "lower(user_name)",
            Self::DisplayName => "lower(display_name)",
            Self::FamilyName => "lower(family_name)",
            Self::GivenName => "lower(given_name)",
            Self::Email => "lower(primary_email)",
        }
    }
}

/// A page request: 0-based offset, at most `limit` rows.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return (1 to 1000).
    pub limit: u32,
    /// Ascending order.
    pub ascending: bool,
}

fn scoped(q: &mut QueryBuilder<'_, Postgres>, scope: Scope) {
    q.push(" WHERE instance_id = ").push_bind(scope.instance_id);
    if let Some(org) = scope.org_id {
        q.push(" AND org_id = ").push_bind(org);
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, sqlx::Error> {
    serde_json::from_value(value).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// One user.
pub async fn get_user(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT to_jsonb(u) FROM projections.users u");
    scoped(&mut q, scope);
    q.push(" AND id = ").push_bind(id);
    let row: Option<serde_json::Value> = q.build_query_scalar().fetch_optional(pool).await?;
    row.map(decode).transpose()
}

/// Users matching `filter`, one page, with the total count.
pub async fn list_users(
    pool: &PgPool,
    scope: Scope,
    filter: &UserFilter,
    sort: UserSort,
    page: Page,
) -> Result<(Vec<UserRow>, u64), sqlx::Error> {
    let build = |select: &str| {
        let mut q = QueryBuilder::new(format!("SELECT {select} FROM projections.users u"));
        scoped(&mut q, scope);
        if let Some(name) = &filter.user_name {
            q.push(" AND lower(user_name) = lower(")
                .push_bind(name.clone())
                .push(")");
        }
        if let Some(email) = &filter.email {
            q.push(" AND (lower(primary_email) = lower(")
                .push_bind(email.clone())
                .push(
                    ") OR EXISTS (SELECT 1 FROM jsonb_array_elements(profile -> 'emails') e \
                       WHERE lower(e ->> 'value') = lower(",
                )
                .push_bind(email.clone())
                .push(")))");
        }
        if let Some(state) = &filter.state {
            q.push(" AND state = ").push_bind(state.clone());
        }
        if let Some(org) = filter.org_id {
            q.push(" AND org_id = ").push_bind(org);
        }
        if let Some(external) = &filter.external_id {
            q.push(" AND external_id = ").push_bind(external.clone());
        }
        q
    };
    let total: i64 = build("count(*)").build_query_scalar().fetch_one(pool).await?;
    let mut q = build("to_jsonb(u)");
    let direction = if page.ascending { "ASC" } else { "DESC" };
    q.push(format!(
        " ORDER BY {} {direction} NULLS LAST, id {direction}",
        sort.expr()
    ));
    q.push(" LIMIT ").push_bind(i64::from(page.limit.clamp(1, 1000)));
    q.push(" OFFSET ").push_bind(page.offset as i64);
    let rows: Vec<serde_json::Value> = q.build_query_scalar().fetch_all(pool).await?;
    Ok((
        rows.into_iter().map(decode).collect::<Result<_, _>>()?,
        total as u64,
    ))
}

/// The ids of the groups a user belongs to.
pub async fn groups_of_user(pool: &PgPool, scope: Scope, user: Uuid) -> Result<Vec<GroupRow>, sqlx::Error> {
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT to_jsonb(g) FROM projections.group_members m \
         JOIN projections.groups g ON g.instance_id = m.instance_id AND g.id = m.group_id \
         WHERE m.instance_id = $1 AND m.user_id = $2 AND ($3::uuid IS NULL OR g.org_id = $3) \
         ORDER BY g.display_name, g.id",
    )
    .bind(scope.instance_id)
    .bind(user)
    .bind(scope.org_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(decode).collect()
}

/// One group.
pub async fn get_group(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<GroupRow>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT to_jsonb(g) FROM projections.groups g");
    scoped(&mut q, scope);
    q.push(" AND id = ").push_bind(id);
    let row: Option<serde_json::Value> = q.build_query_scalar().fetch_optional(pool).await?;
    row.map(decode).transpose()
}

/// Filters for listing groups.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// displayName, case-insensitively.
    pub display_name: Option<String>,
    /// externalId, exactly.
    pub external_id: Option<String>,
    /// Owning organisation.
    pub org_id: Option<Uuid>,
    /// Only groups this user belongs to.
    pub member_id: Option<Uuid>,
}

/// Groups matching `filter`, one page (ordered by creation, then id), with the total count.
pub async fn list_groups(
    pool: &PgPool,
    scope: Scope,
    filter: &GroupFilter,
    page: Page,
) -> Result<(Vec<GroupRow>, u64), sqlx::Error> {
    let build = |select: &str| {
        let mut q = QueryBuilder::new(format!("SELECT {select} FROM projections.groups g"));
        scoped(&mut q, scope);
        if let Some(name) = &filter.display_name {
            q.push(" AND lower(display_name) = lower(")
                .push_bind(name.clone())
                .push(")");
        }
        if let Some(external) = &filter.external_id {
            q.push(" AND external_id = ").push_bind(external.clone());
        }
        if let Some(org) = filter.org_id {
            q.push(" AND org_id = ").push_bind(org);
        }
        if let Some(member) = filter.member_id {
            q.push(
                " AND EXISTS (SELECT 1 FROM projections.group_members m WHERE m.instance_id = g.instance_id \
                     AND m.group_id = g.id AND m.user_id = ",
            )
            .push_bind(member)
            .push(")");
        }
        q
    };
    let total: i64 = build("count(*)").build_query_scalar().fetch_one(pool).await?;
    let mut q = build("to_jsonb(g)");
    let direction = if page.ascending { "ASC" } else { "DESC" };
    q.push(format!(" ORDER BY created_at {direction}, id {direction}"));
    q.push(" LIMIT ").push_bind(i64::from(page.limit.clamp(1, 1000)));
    q.push(" OFFSET ").push_bind(page.offset as i64);
    let rows: Vec<serde_json::Value> = q.build_query_scalar().fetch_all(pool).await?;
    Ok((
        rows.into_iter().map(decode).collect::<Result<_, _>>()?,
        total as u64,
    ))
}

/// A member as listed: the user id with its userName and display name (if the user row exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// The user's id.
    pub user_id: Uuid,
    /// userName.
    pub user_name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
}

/// One page of a group's members, ordered by user id (keyset-friendly), with the total.
pub async fn list_members(
    pool: &PgPool,
    scope: Scope,
    group: Uuid,
    page: Page,
) -> Result<(Vec<MemberRow>, u64), sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projections.group_members WHERE instance_id = $1 AND group_id = $2",
    )
    .bind(scope.instance_id)
    .bind(group)
    .fetch_one(pool)
    .await?;
    let rows: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT m.user_id, u.user_name, u.display_name FROM projections.group_members m \
         LEFT JOIN projections.users u ON u.instance_id = m.instance_id AND u.id = m.user_id \
         WHERE m.instance_id = $1 AND m.group_id = $2 ORDER BY m.user_id LIMIT $3 OFFSET $4",
    )
    .bind(scope.instance_id)
    .bind(group)
    .bind(i64::from(page.limit.clamp(1, 10_000)))
    .bind(page.offset as i64)
    .fetch_all(pool)
    .await?;
    Ok((
        rows.into_iter()
            .map(|(user_id, user_name, display_name)| MemberRow {
                user_id,
                user_name,
                display_name,
            })
            .collect(),
        total as u64,
    ))
}

/// Which of `users` exist (as users of the instance, within the scope).
pub async fn existing_users(pool: &PgPool, scope: Scope, users: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM projections.users WHERE instance_id = $1 AND id = ANY($2) AND ($3::uuid IS NULL OR org_id = $3)",
    )
    .bind(scope.instance_id)
    .bind(users)
    .bind(scope.org_id)
    .fetch_all(pool)
    .await
}

/// One organisation, with its domains as (name, verified, primary).
pub async fn get_org(
    pool: &PgPool,
    instance: Uuid,
    id: Uuid,
) -> Result<Option<(OrgRow, Vec<(String, bool, bool)>)>, sqlx::Error> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(o) FROM projections.orgs o WHERE instance_id = $1 AND id = $2")
            .bind(instance)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let domains: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT domain, verified, is_primary FROM projections.org_domains WHERE instance_id = $1 AND org_id = $2 ORDER BY domain",
    )
    .bind(instance)
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((decode(row)?, domains)))
}

/// Organisations of the instance, optionally by name, one page, with the total.
pub async fn list_orgs(
    pool: &PgPool,
    instance: Uuid,
    name: Option<&str>,
    page: Page,
) -> Result<(Vec<OrgRow>, u64), sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projections.orgs WHERE instance_id = $1 AND ($2::text IS NULL OR lower(name) = lower($2))",
    )
    .bind(instance)
    .bind(name)
    .fetch_one(pool)
    .await?;
    let direction = if page.ascending { "ASC" } else { "DESC" };
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(o) FROM projections.orgs o WHERE instance_id = $1 AND ($2::text IS NULL OR lower(name) = lower($2)) \
         ORDER BY created_at {direction}, id {direction} LIMIT $3 OFFSET $4"
    ))
    .bind(instance)
    .bind(name)
    .bind(i64::from(page.limit.clamp(1, 1000)))
    .bind(page.offset as i64)
    .fetch_all(pool)
    .await?;
    Ok((
        rows.into_iter().map(decode).collect::<Result<_, _>>()?,
        total as u64,
    ))
}
