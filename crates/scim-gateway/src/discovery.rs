//! `.search` over one or both resource types (RFC 7644 §3.4.3), and the discovery endpoints
//! (`/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`; §4), which need a valid token too
//! (RFC 7644 lets them be public; Cairn's are not).

use crate::extract::{Answer, Reader, Reject, ScimJson};
use crate::gateway::{Gateway, scim_response};
use crate::query::{self, ListParams};
use crate::resources::get;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_scim::{ResourceType, ScimError};
use serde_json::{Value, json};

/// `POST /.search`, `/Users/.search`, `/Groups/.search`: the SearchRequest body's parameters.
pub async fn search(
    gw: &Gateway,
    caller: &cairn_auth::Caller,
    body: &Value,
    types: &[ResourceType],
) -> Answer {
    let object = body.as_object().cloned().unwrap_or_default();
    let params = ListParams::parse(|name| match get(&object, name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    })?;
    gw.consistent(caller).await?;
    if let [only] = types {
        let page = query::list(gw, caller, *only, &params).await?;
        return Ok(scim_response(StatusCode::OK, &page, None, None));
    }
    // Root search over both types: users first, then groups, paged across both.
    let max = u64::from(gw.limits.max_results);
    let mut all = Vec::new();
    let mut total = 0;
    for rt in types {
        let mut wide = params.clone();
        wide.start_index = 1;
        wide.count = Some(max);
        let page = query::list(gw, caller, *rt, &wide).await?;
        total += page["totalResults"].as_u64().unwrap_or(0);
        all.extend(page["Resources"].as_array().cloned().unwrap_or_default());
    }
    let start = (params.start_index - 1) as usize;
    let count = params.count.unwrap_or(max).min(max) as usize;
    let page: Vec<Value> = all.into_iter().skip(start).take(count).collect();
    let body = json!({
        "schemas": [query::LIST_RESPONSE],
        "totalResults": total,
        "startIndex": params.start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(scim_response(StatusCode::OK, &body, None, None))
}

/// `POST /Users/.search`.
pub async fn search_users(
    State(gw): State<Gateway>,
    Reader(caller): Reader,
    ScimJson(body): ScimJson,
) -> Answer {
    search(&gw, &caller, &body, &[ResourceType::User]).await
}

/// `POST /Groups/.search`.
pub async fn search_groups(
    State(gw): State<Gateway>,
    Reader(caller): Reader,
    ScimJson(body): ScimJson,
) -> Answer {
    search(&gw, &caller, &body, &[ResourceType::Group]).await
}

/// `POST /.search`.
pub async fn search_all(
    State(gw): State<Gateway>,
    Reader(caller): Reader,
    ScimJson(body): ScimJson,
) -> Answer {
    search(&gw, &caller, &body, &[ResourceType::User, ResourceType::Group]).await
}

/// Writes to discovery endpoints and other unsupported methods.
pub async fn method_not_allowed() -> Reject {
    Reject(ScimError::method_not_allowed("this endpoint is read-only"))
}

/// An unknown path under `/scim/v2`.
pub async fn no_such_endpoint() -> Reject {
    Reject(ScimError::not_found("no such SCIM endpoint"))
}

/// `/Me`: Cairn's SCIM tokens belong to provisioning clients, not to end users. A caller without
/// a valid token learns nothing about that: it gets 401 like everywhere else.
pub async fn me(_: Reader) -> Reject {
    cairn_error::Error::new(
        cairn_error::Code::Unimplemented,
        "/Me is not supported: SCIM tokens act for provisioning clients, not for a user",
    )
    .into()
}

fn document(document: Option<Value>) -> Answer {
    let document = document.ok_or_else(|| ScimError::not_found("no such schema or resource type"))?;
    Ok(scim_response(StatusCode::OK, &document, None, None))
}

/// Wraps an array of resources in a ListResponse (what `/Schemas` and `/ResourceTypes` return).
fn list_of(document: Value) -> Value {
    match document {
        Value::Array(items) => json!({
            "schemas": [query::LIST_RESPONSE],
            "totalResults": items.len(),
            "startIndex": 1,
            "itemsPerPage": items.len(),
            "Resources": items,
        }),
        other => other,
    }
}

/// `GET /ServiceProviderConfig`.
pub async fn service_provider_config(State(gw): State<Gateway>, _: Reader) -> Answer {
    document(Some(provider_config(&gw)))
}

/// `GET /ResourceTypes`.
pub async fn resource_types(State(gw): State<Gateway>, _: Reader) -> Answer {
    document(Some(list_of(cairn_scim::schema::resource_types_json(
        &gw.limits.base_url,
    ))))
}

/// `GET /ResourceTypes/{name}`.
pub async fn resource_type(State(gw): State<Gateway>, _: Reader, Path(name): Path<String>) -> Answer {
    document(
        [ResourceType::User, ResourceType::Group]
            .into_iter()
            .find(|rt| rt.name().eq_ignore_ascii_case(&name))
            .map(|rt| cairn_scim::schema::resource_type_json(rt, &gw.limits.base_url)),
    )
}

/// `GET /Schemas`.
pub async fn schemas(State(gw): State<Gateway>, _: Reader) -> Answer {
    document(Some(list_of(cairn_scim::schema::schemas_json(
        &gw.limits.base_url,
    ))))
}

/// `GET /Schemas/{id}`.
pub async fn schema(State(gw): State<Gateway>, _: Reader, Path(id): Path<String>) -> Answer {
    document(cairn_scim::schema::schema_json(&id, &gw.limits.base_url))
}

/// The ServiceProviderConfig, honest about what this gateway does.
pub fn provider_config(gw: &Gateway) -> Value {
    cairn_scim::schema::ServiceProviderConfig {
        documentation_uri: None,
        patch: true,
        bulk: cairn_scim::schema::BulkConfig {
            supported: true,
            max_operations: gw.limits.bulk_max_operations as u32,
            max_payload_size: gw.limits.max_payload_bytes as u64,
        },
        filter: cairn_scim::schema::FilterConfig {
            supported: true,
            max_results: gw.limits.max_results,
        },
        change_password: true,
        sort: true,
        etag: true,
        authentication_schemes: vec![cairn_scim::schema::AuthenticationScheme::oauth_bearer_token()],
    }
    .to_json(&gw.limits.base_url)
}
