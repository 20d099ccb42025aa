//! The queries behind the SCIM gateway: a filter translated to SQL with bound parameters (never
//! loading all rows), sorting and paging over `projections.users` and `projections.groups`, a
//! user's groups and a group's members. The gateway parses the request and renders the JSON; the
//! SQL is here, beside the projections that write these tables, so a column changes in one crate.
//!
//! Errors are [`ScimError`]s, as the gateway returns them: a filter or `sortBy` the tables cannot
//! answer is `400 invalidValue`; a database failure is logged and becomes `503`.

mod columns;

use crate::reads::{self, Scope};
use crate::rows::{GroupRow, UserRow};
use cairn_scim::sql::SqlParam;
use cairn_scim::{AttrPath, Filter, ResourceType, SchemaColumnMap, ScimError};
use columns::{GROUP_COLUMNS, USER_COLUMNS};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// One page of a SCIM list or `.search`, as the gateway parsed it.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// The filter, if any.
    pub filter: Option<&'a Filter>,
    /// The `sortBy` attribute as the client wrote it; `None` sorts by creation.
    pub sort_by: Option<&'a str>,
    /// Ascending order.
    pub ascending: bool,
    /// Rows to skip (`startIndex - 1`).
    pub offset: u64,
    /// Rows to return; 0 only counts.
    pub count: u64,
}

fn bind<'q>(
    mut query: sqlx::query::QueryScalar<'q, sqlx::Postgres, Value, sqlx::postgres::PgArguments>,
    params: &'q [SqlParam],
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, Value, sqlx::postgres::PgArguments> {
    for param in params {
        query = match param {
            SqlParam::Text(t) => query.bind(t),
            SqlParam::Bool(b) => query.bind(b),
            SqlParam::Timestamp(t) => query.bind(t),
            SqlParam::Number(n) => query.bind(n),
        };
    }
    query
}

fn db(error: sqlx::Error) -> ScimError {
    cairn_error::Error::unavailable(format!("scim query failed: {error}")).to_scim(false)
}

/// Human users matching `query` (machine users are API principals, not people an identity
/// provider manages), one page, with the total count.
pub async fn list_users(
    pool: &PgPool,
    scope: Scope,
    query: &ListQuery<'_>,
) -> Result<(Vec<UserRow>, u64), ScimError> {
    page(pool, scope, ResourceType::User, query).await
}

/// Groups matching `query`, one page, with the total count.
pub async fn list_groups(
    pool: &PgPool,
    scope: Scope,
    query: &ListQuery<'_>,
) -> Result<(Vec<GroupRow>, u64), ScimError> {
    page(pool, scope, ResourceType::Group, query).await
}

/// Runs a filtered, sorted, paged list over `table alias` and returns (rows, total).
async fn page<T: DeserializeOwned>(
    pool: &PgPool,
    scope: Scope,
    rt: ResourceType,
    query: &ListQuery<'_>,
) -> Result<(Vec<T>, u64), ScimError> {
    let (table, alias, map): (&str, &str, &SchemaColumnMap) = match rt {
        ResourceType::User => ("projections.users", "u", &USER_COLUMNS),
        ResourceType::Group => ("projections.groups", "g", &GROUP_COLUMNS),
    };
    let filter = query.filter.map(|f| cairn_scim::to_sql(f, map, 3)).transpose()?;
    let mut condition = format!("{alias}.instance_id = $1 AND ($2::uuid IS NULL OR {alias}.org_id = $2)");
    if rt == ResourceType::User {
        // Machine users are API principals, not people an identity provider manages.
        condition.push_str(" AND u.kind = 'human'");
    }
    if let Some(f) = &filter {
        condition.push_str(&format!(" AND ({})", f.sql));
    }
    let params_sql: &[SqlParam] = filter.as_ref().map_or(&[], |f| f.params.as_slice());
    let order = match query.sort_by {
        None => format!("{alias}.created_at"),
        Some(attr) => {
            let path = AttrPath::parse(attr)
                .map_err(|_| ScimError::invalid_value(format!("sortBy {attr:?} is not an attribute")))?;
            cairn_scim::sort_expression(map, &path)
                .ok_or_else(|| ScimError::invalid_value(format!("cannot sort by {attr:?}")))?
        }
    };
    let direction = if query.ascending { "ASC" } else { "DESC" };
    let (count, offset) = (query.count, query.offset);
    let total: Value = bind(
        sqlx::query_scalar(&format!(
            "SELECT to_jsonb(count(*)) FROM {table} {alias} WHERE {condition}"
        ))
        .bind(scope.instance_id)
        .bind(scope.org_id),
        params_sql,
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let total = total.as_u64().unwrap_or(0);
    if count == 0 {
        return Ok((Vec::new(), total));
    }
    // The page's ids first, then the JSON of those rows only: turning every matching row into JSON
    // before sorting them (what the planner does for a one-level query) cost seconds at 100,000
    // users.
    let sql = format!(
        "SELECT to_jsonb({alias}) FROM {table} {alias} JOIN ( \
           SELECT {alias}.id AS page_id, {order} AS page_key FROM {table} {alias} WHERE {condition} \
           ORDER BY {order} {direction} NULLS LAST, {alias}.id {direction} LIMIT {count} OFFSET {offset} \
         ) page ON {alias}.instance_id = $1 AND {alias}.id = page.page_id \
         ORDER BY page.page_key {direction} NULLS LAST, page.page_id {direction}"
    );
    let rows = bind(
        sqlx::query_scalar(&sql)
            .bind(scope.instance_id)
            .bind(scope.org_id),
        params_sql,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let rows = rows
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| db(sqlx::Error::Decode(Box::new(e))))?;
    Ok((rows, total))
}

/// One human user in `scope`; `None` for a missing user and for a machine user alike.
pub async fn user(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<UserRow>, ScimError> {
    Ok(reads::get_user(pool, scope, id)
        .await
        .map_err(db)?
        .filter(|r| r.kind == "human"))
}

/// One group in `scope`.
pub async fn group(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Option<GroupRow>, ScimError> {
    reads::get_group(pool, scope, id).await.map_err(db)
}

/// The groups of each of `users` in `instance`, as (group id, displayName), ordered by
/// displayName.
pub async fn groups_of(
    pool: &PgPool,
    instance: Uuid,
    users: &[Uuid],
) -> Result<HashMap<Uuid, Vec<(String, String)>>, ScimError> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT m.user_id, g.id, g.display_name FROM projections.group_members m \
         JOIN projections.groups g ON g.instance_id = m.instance_id AND g.id = m.group_id \
         WHERE m.instance_id = $1 AND m.user_id = ANY($2) ORDER BY g.display_name, g.id",
    )
    .bind(instance)
    .bind(users)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut out: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
    for (user, group, name) in rows {
        out.entry(user).or_default().push((group.to_string(), name));
    }
    Ok(out)
}

/// The members of a group in `instance`, as (user id, display), where display is the user's
/// display name, else its userName, else empty.
pub async fn members_of(
    pool: &PgPool,
    instance: Uuid,
    group: Uuid,
) -> Result<Vec<(String, String)>, ScimError> {
    let rows: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT m.user_id, u.display_name, u.user_name FROM projections.group_members m \
         LEFT JOIN projections.users u ON u.instance_id = m.instance_id AND u.id = m.user_id \
         WHERE m.instance_id = $1 AND m.group_id = $2 ORDER BY m.user_id",
    )
    .bind(instance)
    .bind(group)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(id, display, name)| (id.to_string(), display.or(name).unwrap_or_default()))
        .collect())
}
