//! SCIM representations of users and groups, and the way back from SCIM JSON to command-api
//! requests. Reading is from the read-model rows; writing builds the full profile from the JSON.

use cairn_domain::user::HumanProfile;
use cairn_proto::user::v1 as pb;
use cairn_readmodel::rows::{GroupRow, UserRow};
use cairn_scim::ScimError;
use serde_json::{Map, Value, json};

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The Enterprise User extension.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Attributes Cairn keeps verbatim in the profile's `extra`.
pub const EXTRA_ATTRIBUTES: &[&str] = &["ims", "photos", "roles", "entitlements", "x509Certificates"];

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// A user as SCIM JSON; `groups` are (id, displayName) pairs.
pub fn user_json(
    row: &UserRow,
    groups: &[(String, String)],
    location: &str,
    group_location: impl Fn(&str) -> String,
    user_location: impl Fn(&str) -> String,
) -> Value {
    let mut out = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    out.insert("id".into(), json!(row.id.to_string()));
    put(&mut out, "externalId", row.external_id.as_deref());
    out.insert("userName".into(), json!(row.user_name));
    let profile: HumanProfile = serde_json::from_value(row.profile.clone()).unwrap_or_default();
    if row.kind == "human" {
        let mut name = Map::new();
        let n = &profile.name;
        put(&mut name, "formatted", n.formatted.as_deref());
        put(&mut name, "familyName", n.family_name.as_deref());
        put(&mut name, "givenName", n.given_name.as_deref());
        put(&mut name, "middleName", n.middle_name.as_deref());
        put(&mut name, "honorificPrefix", n.honorific_prefix.as_deref());
        put(&mut name, "honorificSuffix", n.honorific_suffix.as_deref());
        if !name.is_empty() {
            out.insert("name".into(), Value::Object(name));
        }
    }
    put(&mut out, "displayName", row.display_name.as_deref());
    put(&mut out, "nickName", profile.nick_name.as_deref());
    put(&mut out, "profileUrl", profile.profile_url.as_deref());
    put(&mut out, "title", profile.title.as_deref());
    put(&mut out, "userType", profile.user_type.as_deref());
    put(&mut out, "preferredLanguage", row.preferred_language.as_deref());
    put(&mut out, "locale", profile.locale.as_deref());
    put(&mut out, "timezone", profile.timezone.as_deref());
    out.insert("active".into(), json!(row.state == "active"));
    if !profile.emails.is_empty() {
        out.insert(
            "emails".into(),
            Value::Array(
                profile
                    .emails
                    .iter()
                    .map(|e| {
                        let mut m = Map::new();
                        m.insert("value".into(), json!(e.value.to_string()));
                        put(&mut m, "display", e.display.as_deref());
                        put(&mut m, "type", e.kind.as_deref());
                        m.insert("primary".into(), json!(e.primary));
                        Value::Object(m)
                    })
                    .collect(),
            ),
        );
    }
    if !profile.phone_numbers.is_empty() {
        out.insert(
            "phoneNumbers".into(),
            Value::Array(
                profile
                    .phone_numbers
                    .iter()
                    .map(|p| {
                        let mut m = Map::new();
                        m.insert("value".into(), json!(p.value.to_string()));
                        put(&mut m, "display", p.display.as_deref());
                        put(&mut m, "type", p.kind.as_deref());
                        m.insert("primary".into(), json!(p.primary));
                        Value::Object(m)
                    })
                    .collect(),
            ),
        );
    }
    if !profile.addresses.is_empty() {
        out.insert(
            "addresses".into(),
            Value::Array(
                profile
                    .addresses
                    .iter()
                    .map(|a| {
                        let mut m = Map::new();
                        put(&mut m, "formatted", a.formatted.as_deref());
                        put(&mut m, "streetAddress", a.street_address.as_deref());
                        put(&mut m, "locality", a.locality.as_deref());
                        put(&mut m, "region", a.region.as_deref());
                        put(&mut m, "postalCode", a.postal_code.as_deref());
                        put(&mut m, "country", a.country.as_deref());
                        put(&mut m, "type", a.kind.as_deref());
                        m.insert("primary".into(), json!(a.primary));
                        Value::Object(m)
                    })
                    .collect(),
            ),
        );
    }
    for key in EXTRA_ATTRIBUTES {
        if let Some(value) = profile.extra.get(*key) {
            out.insert((*key).to_owned(), value.clone());
        }
    }
    if !groups.is_empty() {
        out.insert(
            "groups".into(),
            Value::Array(
                groups
                    .iter()
                    .map(|(id, name)| json!({"value": id, "$ref": group_location(id), "display": name, "type": "direct"}))
                    .collect(),
            ),
        );
    }
    if let Some(e) = &profile.enterprise {
        let mut m = Map::new();
        put(&mut m, "employeeNumber", e.employee_number.as_deref());
        put(&mut m, "costCenter", e.cost_center.as_deref());
        put(&mut m, "organization", e.organization.as_deref());
        put(&mut m, "division", e.division.as_deref());
        put(&mut m, "department", e.department.as_deref());
        if let Some(manager) = &e.manager {
            let mut mm = Map::new();
            put(&mut mm, "value", manager.value.as_deref());
            if let Some(value) = manager.value.as_deref().filter(|v| !v.is_empty()) {
                mm.insert("$ref".into(), json!(user_location(value)));
            }
            put(&mut mm, "displayName", manager.display_name.as_deref());
            if !mm.is_empty() {
                m.insert("manager".into(), Value::Object(mm));
            }
        }
        if !m.is_empty() {
            schemas.push(json!(ENTERPRISE));
            out.insert(ENTERPRISE.into(), Value::Object(m));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(row.created_at),
            "lastModified": rfc3339(row.changed_at),
            "location": location,
            "version": crate::gateway::etag(row.sequence),
        }),
    );
    Value::Object(out)
}

/// A group as SCIM JSON; `members` are (id, display) pairs, `None` when not loaded.
pub fn group_json(
    row: &GroupRow,
    members: Option<&[(String, String)]>,
    location: &str,
    user_location: impl Fn(&str) -> String,
) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([GROUP_SCHEMA]));
    out.insert("id".into(), json!(row.id.to_string()));
    out.insert("displayName".into(), json!(row.display_name));
    put(&mut out, "externalId", row.external_id.as_deref());
    if let Some(members) = members {
        out.insert(
            "members".into(),
            Value::Array(
                members
                    .iter()
                    // `display` is left out: clients that compare what they sent with what they read
                    // back (scim2-tester, Okta) expect exactly their members.
                    .map(|(id, _display)| json!({"value": id, "$ref": user_location(id), "type": "User"}))
                    .collect(),
            ),
        );
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": rfc3339(row.created_at),
            "lastModified": rfc3339(row.changed_at),
            "location": location,
            "version": crate::gateway::etag(row.sequence),
        }),
    );
    Value::Object(out)
}

/// Case-insensitive lookup of a key in a JSON object.
pub fn get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A boolean that identity providers may send as `"True"`/`"False"`.
pub fn boolean(value: Option<&Value>) -> Result<Option<bool>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(ScimError::invalid_value(format!("{other} is not a boolean"))),
    }
}

fn list<'a>(object: &'a Map<String, Value>, key: &str) -> Result<Vec<&'a Map<String, Value>>, ScimError> {
    match get(object, key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_object()
                    .ok_or_else(|| ScimError::invalid_syntax(format!("{key} must hold objects")))
            })
            .collect(),
        Some(_) => Err(ScimError::invalid_syntax(format!("{key} must be an array"))),
    }
}

/// A user resource parsed from SCIM JSON (POST or PUT body, or a patched resource).
pub struct UserInput {
    /// userName.
    pub user_name: String,
    /// The profile.
    pub profile: pb::HumanProfile,
    /// The password, if given.
    pub password: String,
    /// `active`.
    pub active: bool,
}

/// Parses a user resource. Attributes Cairn does not know are ignored (identity providers send
/// many); read-only ones (`id`, `meta`, `groups`) are ignored as the RFC requires.
pub fn user_input(body: &Value, trust_emails: bool) -> Result<UserInput, ScimError> {
    let object = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body must be a JSON object"))?;
    let user_name = text(get(object, "userName"));
    if user_name.trim().is_empty() {
        return Err(ScimError::invalid_value("userName is required"));
    }
    let name = match get(object, "name") {
        Some(Value::Object(n)) => Some(pb::Name {
            formatted: text(get(n, "formatted")),
            family_name: text(get(n, "familyName")),
            given_name: text(get(n, "givenName")),
            middle_name: text(get(n, "middleName")),
            honorific_prefix: text(get(n, "honorificPrefix")),
            honorific_suffix: text(get(n, "honorificSuffix")),
        }),
        None | Some(Value::Null) => None,
        Some(_) => return Err(ScimError::invalid_syntax("name must be an object")),
    };
    let mut emails = Vec::new();
    for e in list(object, "emails")? {
        emails.push(pb::Email {
            value: text(get(e, "value")),
            r#type: text(get(e, "type")),
            primary: boolean(get(e, "primary"))?.unwrap_or(false),
            verified: trust_emails,
            display: text(get(e, "display")),
        });
    }
    let mut phone_numbers = Vec::new();
    for p in list(object, "phoneNumbers")? {
        phone_numbers.push(pb::Phone {
            value: text(get(p, "value")),
            r#type: text(get(p, "type")),
            primary: boolean(get(p, "primary"))?.unwrap_or(false),
            display: text(get(p, "display")),
        });
    }
    let mut addresses = Vec::new();
    for a in list(object, "addresses")? {
        addresses.push(pb::Address {
            formatted: text(get(a, "formatted")),
            street_address: text(get(a, "streetAddress")),
            locality: text(get(a, "locality")),
            region: text(get(a, "region")),
            postal_code: text(get(a, "postalCode")),
            country: text(get(a, "country")),
            r#type: text(get(a, "type")),
            primary: boolean(get(a, "primary"))?.unwrap_or(false),
        });
    }
    let mut extra = Map::new();
    for key in EXTRA_ATTRIBUTES {
        if let Some(value) = get(object, key).filter(|v| !v.is_null()) {
            if !value.is_array() {
                return Err(ScimError::invalid_syntax(format!("{key} must be an array")));
            }
            extra.insert((*key).to_owned(), value.clone());
        }
    }
    let enterprise = match get(object, ENTERPRISE) {
        Some(Value::Object(e)) => {
            let manager = match get(e, "manager") {
                Some(Value::Object(m)) => Some(pb::Manager {
                    value: text(get(m, "value")),
                    display_name: text(get(m, "displayName")),
                }),
                Some(Value::String(id)) => Some(pb::Manager {
                    value: id.clone(),
                    display_name: String::new(),
                }),
                _ => None,
            };
            Some(pb::Enterprise {
                employee_number: text(get(e, "employeeNumber")),
                cost_center: text(get(e, "costCenter")),
                organization: text(get(e, "organization")),
                division: text(get(e, "division")),
                department: text(get(e, "department")),
                manager,
            })
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ScimError::invalid_syntax(
                "the enterprise extension must be an object",
            ));
        }
    };
    let password = match get(object, "password") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Err(ScimError::invalid_value("password must be a string")),
    };
    Ok(UserInput {
        user_name,
        profile: pb::HumanProfile {
            name,
            display_name: text(get(object, "displayName")),
            nick_name: text(get(object, "nickName")),
            profile_url: text(get(object, "profileUrl")),
            title: text(get(object, "title")),
            user_type: text(get(object, "userType")),
            preferred_language: text(get(object, "preferredLanguage")),
            locale: text(get(object, "locale")),
            timezone: text(get(object, "timezone")),
            emails,
            phone_numbers,
            addresses,
            external_id: text(get(object, "externalId")),
            enterprise,
            extra_json: if extra.is_empty() {
                String::new()
            } else {
                Value::Object(extra).to_string()
            },
        },
        password,
        active: boolean(get(object, "active"))?.unwrap_or(true),
    })
}

/// The member ids in a group resource's `members`.
pub fn member_ids(object: &Map<String, Value>) -> Result<Vec<String>, ScimError> {
    list(object, "members")?
        .into_iter()
        .map(|m| {
            let value = text(get(m, "value"));
            if value.is_empty() {
                Err(ScimError::invalid_value("members[].value is required"))
            } else {
                Ok(value)
            }
        })
        .collect()
}

/// The text of a key, or empty.
pub fn text_of(object: &Map<String, Value>, key: &str) -> String {
    text(get(object, key))
}
