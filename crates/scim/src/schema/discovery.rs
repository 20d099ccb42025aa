//! JSON for the discovery endpoints (RFC 7644 §4): `/Schemas`, `/Schemas/{id}`,
//! `/ResourceTypes`, `/ResourceTypes/{name}` and `/ServiceProviderConfig`. `base_url` is the SCIM
//! base (e.g. `https://host/scim/v2`, no trailing slash) used for `meta.location`.

use serde_json::{Map, Value, json};

use super::{ALL_SCHEMAS, AttrType, AttributeDef, Mutability, ResourceType, Returned, Schema, Uniqueness};

/// The ListResponse message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

fn type_str(t: AttrType) -> &'static str {
    match t {
        AttrType::String => "string",
        AttrType::Boolean => "boolean",
        AttrType::Decimal => "decimal",
        AttrType::Integer => "integer",
        AttrType::DateTime => "dateTime",
        AttrType::Reference => "reference",
        AttrType::Complex => "complex",
        AttrType::Binary => "binary",
    }
}

fn mutability_str(m: Mutability) -> &'static str {
    match m {
        Mutability::ReadOnly => "readOnly",
        Mutability::ReadWrite => "readWrite",
        Mutability::Immutable => "immutable",
        Mutability::WriteOnly => "writeOnly",
    }
}

fn returned_str(r: Returned) -> &'static str {
    match r {
        Returned::Always => "always",
        Returned::Never => "never",
        Returned::Default => "default",
        Returned::Request => "request",
    }
}

fn uniqueness_str(u: Uniqueness) -> &'static str {
    match u {
        Uniqueness::None => "none",
        Uniqueness::Server => "server",
        Uniqueness::Global => "global",
    }
}

/// One attribute as RFC 7643 §7 renders it.
pub(crate) fn attribute_json(a: &AttributeDef) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), a.name.into());
    m.insert("type".into(), type_str(a.ty).into());
    m.insert("multiValued".into(), a.multi_valued.into());
    m.insert("description".into(), a.description.into());
    m.insert("required".into(), a.required.into());
    if !a.canonical_values.is_empty() {
        m.insert("canonicalValues".into(), a.canonical_values.to_vec().into());
    }
    if matches!(a.ty, AttrType::String | AttrType::Reference | AttrType::Binary) {
        m.insert("caseExact".into(), a.case_exact.into());
    }
    m.insert("mutability".into(), mutability_str(a.mutability).into());
    m.insert("returned".into(), returned_str(a.returned).into());
    if a.ty != AttrType::Complex {
        m.insert("uniqueness".into(), uniqueness_str(a.uniqueness).into());
    }
    if !a.reference_types.is_empty() {
        m.insert("referenceTypes".into(), a.reference_types.to_vec().into());
    }
    if !a.sub_attributes.is_empty() {
        let subs: Vec<Value> = a.sub_attributes.iter().map(attribute_json).collect();
        m.insert("subAttributes".into(), subs.into());
    }
    Value::Object(m)
}

fn one_schema(s: &Schema, base_url: &str) -> Value {
    let attrs: Vec<Value> = s.attributes.iter().map(attribute_json).collect();
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "attributes": attrs,
        "meta": {"resourceType": "Schema", "location": format!("{base_url}/Schemas/{}", s.id)},
    })
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

/// The `/Schemas` ListResponse with every schema.
pub fn schemas_json(base_url: &str) -> Value {
    list(ALL_SCHEMAS.iter().map(|s| one_schema(s, base_url)).collect())
}

/// `/Schemas/{id}`, or `None` for an unknown URN (the gateway answers 404).
pub fn schema_json(id: &str, base_url: &str) -> Option<Value> {
    super::schema_by_id(id).map(|s| one_schema(s, base_url))
}

/// `/ResourceTypes/{name}` for one resource type.
pub fn resource_type_json(rt: ResourceType, base_url: &str) -> Value {
    let exts: Vec<Value> = rt
        .extensions()
        .iter()
        .map(|e| json!({"schema": e.id, "required": false}))
        .collect();
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": rt.name(),
        "name": rt.name(),
        "endpoint": rt.endpoint(),
        "description": match rt { ResourceType::User => "User Account", ResourceType::Group => "Group" },
        "schema": rt.core_schema().id,
        "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/{}", rt.name())},
    });
    if !exts.is_empty() {
        v["schemaExtensions"] = exts.into();
    }
    v
}

/// The `/ResourceTypes` ListResponse.
pub fn resource_types_json(base_url: &str) -> Value {
    list(
        [ResourceType::User, ResourceType::Group]
            .into_iter()
            .map(|rt| resource_type_json(rt, base_url))
            .collect(),
    )
}

/// An authentication scheme advertised in the ServiceProviderConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationScheme {
    /// `oauthbearertoken`, `httpbasic`, ...
    pub ty: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Whether this is the preferred scheme.
    pub primary: bool,
}

impl AuthenticationScheme {
    /// The OAuth bearer token scheme (RFC 6750) Cairn's gateway uses.
    pub fn oauth_bearer_token() -> Self {
        Self {
            ty: "oauthbearertoken".into(),
            name: "OAuth Bearer Token".into(),
            description: "Authentication with a bearer token issued by Cairn's command API (RFC 6750)".into(),
            primary: true,
        }
    }
}

/// `bulk` feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkConfig {
    /// Whether `/Bulk` is served.
    pub supported: bool,
    /// Maximum operations per bulk request.
    pub max_operations: u32,
    /// Maximum bulk payload in bytes.
    pub max_payload_size: u64,
}

/// `filter` feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterConfig {
    /// Whether filtering is supported.
    pub supported: bool,
    /// Maximum number of resources returned in one response.
    pub max_results: u32,
}

/// The real feature set of a deployment, rendered as `/ServiceProviderConfig` (RFC 7643 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProviderConfig {
    /// Link to human-readable documentation, if any.
    pub documentation_uri: Option<String>,
    /// PATCH support.
    pub patch: bool,
    /// Bulk support and limits.
    pub bulk: BulkConfig,
    /// Filter support and limits.
    pub filter: FilterConfig,
    /// Whether `password` can be changed.
    pub change_password: bool,
    /// sortBy/sortOrder support.
    pub sort: bool,
    /// ETag support.
    pub etag: bool,
    /// Accepted authentication schemes.
    pub authentication_schemes: Vec<AuthenticationScheme>,
}

impl ServiceProviderConfig {
    /// The JSON body, with `meta.location` under `base_url`.
    pub fn to_json(&self, base_url: &str) -> Value {
        let schemes: Vec<Value> = self
            .authentication_schemes
            .iter()
            .map(
                |s| json!({"type": s.ty, "name": s.name, "description": s.description, "primary": s.primary}),
            )
            .collect();
        let mut v = json!({
            "schemas": [SPC_SCHEMA],
            "patch": {"supported": self.patch},
            "bulk": {
                "supported": self.bulk.supported,
                "maxOperations": self.bulk.max_operations,
                "maxPayloadSize": self.bulk.max_payload_size,
            },
            "filter": {"supported": self.filter.supported, "maxResults": self.filter.max_results},
            "changePassword": {"supported": self.change_password},
            "sort": {"supported": self.sort},
            "etag": {"supported": self.etag},
            "authenticationSchemes": schemes,
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base_url}/ServiceProviderConfig"),
            },
        });
        if let Some(doc) = &self.documentation_uri {
            v["documentationUri"] = doc.clone().into();
        }
        v
    }
}
