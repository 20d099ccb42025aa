//! Reads for SCIM: the list and `.search` parameters (filter, sorting, 1-based paging), the
//! `attributes` / `excludedAttributes` projection, and the resources rendered as SCIM JSON. The
//! SQL, with the column maps the filter is translated through, is the read models'
//! (`cairn_readmodel::scim`).

use crate::gateway::Gateway;
use crate::gateway::ReadScope;
use crate::resources::{group_json, user_json};
use cairn_auth::Caller;
use cairn_readmodel::rows::{GroupRow, UserRow};
use cairn_readmodel::scim::{self as readmodel, ListQuery};
use cairn_scim::{AttrSelector, Filter, ResourceType, ScimError};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

/// The list-response schema.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// The parameters of a list or `.search` request.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// The filter.
    pub filter: Option<Filter>,
    /// 1-based start index.
    pub start_index: u64,
    /// Page size.
    pub count: Option<u64>,
    /// The attribute to sort by.
    pub sort_by: Option<String>,
    /// Descending when false.
    pub ascending: bool,
    /// `attributes`.
    pub attributes: Vec<AttrSelector>,
    /// `excludedAttributes`.
    pub excluded: Vec<AttrSelector>,
}

impl ListParams {
    /// No parameters: no filter, the first page, every attribute.
    pub fn none() -> Self {
        Self {
            start_index: 1,
            ascending: true,
            ..Self::default()
        }
    }

    /// From query parameters (GET) or a SearchRequest body (POST .search).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, ScimError> {
        let filter = get("filter")
            .filter(|f| !f.trim().is_empty())
            .map(|f| Filter::parse(&f))
            .transpose()?;
        let number = |name: &str| -> Result<Option<i64>, ScimError> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
                })
                .transpose()
        };
        let start_index = number("startIndex")?.unwrap_or(1).max(1) as u64;
        let count = number("count")?.map(|c| c.max(0) as u64);
        let ascending = match get("sortOrder").as_deref() {
            None | Some("ascending") => true,
            Some("descending") => false,
            Some(other) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder {other:?} is not ascending or descending"
                )));
            }
        };
        let attributes = get("attributes")
            .map(|a| cairn_scim::parse_attribute_list(&a))
            .transpose()?
            .unwrap_or_default();
        let excluded = get("excludedAttributes")
            .map(|a| cairn_scim::parse_attribute_list(&a))
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            filter,
            start_index,
            count,
            sort_by: get("sortBy"),
            ascending,
            attributes,
            excluded,
        })
    }

    /// Whether the response needs `name` at all (to skip loading members or groups).
    pub fn wants(&self, rt: ResourceType, name: &str) -> bool {
        let probe = json!({ name: [], "id": "x", "schemas": [] });
        cairn_scim::project(rt, &probe, &self.attributes, &self.excluded)
            .get(name)
            .is_some()
    }
}

/// A user's SCIM JSON, or 404.
pub async fn user(gw: &Gateway, caller: &Caller, id: Uuid) -> Result<Value, ScimError> {
    let row = readmodel::user(&gw.pool, caller.scope(), id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))?;
    let groups = readmodel::groups_of(&gw.pool, caller.instance_id.as_uuid(), &[id]).await?;
    Ok(render_user(
        gw,
        &row,
        groups.get(&id).map(Vec::as_slice).unwrap_or(&[]),
    ))
}

fn render_user(gw: &Gateway, row: &UserRow, groups: &[(String, String)]) -> Value {
    user_json(
        row,
        groups,
        &gw.location("Users", &row.id.to_string()),
        |g| gw.location("Groups", g),
        |u| gw.location("Users", u),
    )
}

/// A group's SCIM JSON (members loaded when `with_members`), or 404.
pub async fn group(gw: &Gateway, caller: &Caller, id: Uuid, with_members: bool) -> Result<Value, ScimError> {
    let row = readmodel::group(&gw.pool, caller.scope(), id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("Group {id} not found")))?;
    let members = if with_members {
        Some(readmodel::members_of(&gw.pool, caller.instance_id.as_uuid(), id).await?)
    } else {
        None
    };
    Ok(render_group(gw, &row, members.as_deref()))
}

/// A group as a PATCH is applied to it: with its members, each with its `display` (so that
/// `members[display eq "..."]` finds them; responses leave `display` out). The version is read
/// before the members: were a change projected in between, the members would be newer than the
/// version, and a write pinned to that version meets a conflict and is retried; a version newer
/// than the members cannot happen.
pub async fn group_to_patch(gw: &Gateway, caller: &Caller, id: Uuid) -> Result<Value, ScimError> {
    let row = readmodel::group(&gw.pool, caller.scope(), id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("Group {id} not found")))?;
    let members = readmodel::members_of(&gw.pool, caller.instance_id.as_uuid(), id).await?;
    let mut resource = render_group(gw, &row, Some(&members));
    if let Some(items) = resource["members"].as_array_mut() {
        for (item, (_, display)) in items.iter_mut().zip(&members) {
            if !display.is_empty() {
                item["display"] = json!(display);
            }
        }
    }
    Ok(resource)
}

fn render_group(gw: &Gateway, row: &GroupRow, members: Option<&[(String, String)]>) -> Value {
    group_json(row, members, &gw.location("Groups", &row.id.to_string()), |u| {
        gw.location("Users", u)
    })
}

/// A ListResponse for `rt`.
pub async fn list(
    gw: &Gateway,
    caller: &Caller,
    rt: ResourceType,
    params: &ListParams,
) -> Result<Value, ScimError> {
    let max = u64::from(gw.limits.max_results);
    let query = ListQuery {
        filter: params.filter.as_ref(),
        sort_by: params.sort_by.as_deref(),
        ascending: params.ascending,
        offset: params.start_index - 1,
        count: params.count.unwrap_or(max).min(max),
    };
    let (resources, total): (Vec<Value>, u64) = match rt {
        ResourceType::User => {
            let (rows, total) = readmodel::list_users(&gw.pool, caller.scope(), &query).await?;
            let groups = if params.wants(rt, "groups") {
                let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                readmodel::groups_of(&gw.pool, caller.instance_id.as_uuid(), &ids).await?
            } else {
                HashMap::new()
            };
            let resources = rows
                .iter()
                .map(|r| render_user(gw, r, groups.get(&r.id).map(Vec::as_slice).unwrap_or(&[])))
                .collect();
            (resources, total)
        }
        ResourceType::Group => {
            let (rows, total) = readmodel::list_groups(&gw.pool, caller.scope(), &query).await?;
            let with_members = params.wants(rt, "members");
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let members = if with_members {
                    Some(readmodel::members_of(&gw.pool, caller.instance_id.as_uuid(), r.id).await?)
                } else {
                    None
                };
                out.push(render_group(gw, r, members.as_deref()));
            }
            (out, total)
        }
    };
    let resources: Vec<Value> = resources
        .iter()
        .map(|r| cairn_scim::project(rt, r, &params.attributes, &params.excluded))
        .collect();
    Ok(json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": params.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}
