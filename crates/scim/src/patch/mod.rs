//! The PATCH engine (RFC 7644 §3.5.2) over a resource's SCIM JSON.
//!
//! [`parse_patch_request`] checks a PatchOp body and parses every `path`; [`apply_patch`]
//! applies the operations to a copy of the resource and returns the new JSON, or the first
//! error — never a half-applied resource. Attribute names are case-insensitive and normalised
//! to the schema's canonical case; values are checked against the schema's types.
//!
//! Identity-provider dialects accepted on top of the RFC:
//! - capitalised `op` values (`"Add"`, `"Replace"`, `"Remove"`) — Entra ID;
//! - booleans as the strings `"True"`/`"False"` for boolean attributes — Entra ID;
//! - `{"op":"replace","value":{"active":false}}` and `{"op":"replace","value":{"id":..,
//!   "displayName":..}}` without path: each member is applied as its own path, and read-only
//!   members equal to the stored value (`id`, `schemas`) are ignored — Okta;
//! - `{"op":"Remove","path":"members","value":[{"value":"id"}]}`: removes just those members —
//!   Entra ID;
//! - `add` with a value-filter path that matches nothing (`emails[type eq "work"].value`)
//!   creates the element from the filter's `eq` terms — Entra ID. (`replace` in that case
//!   answers `noTarget`, as RFC 7644 §3.5.2.3 requires.)
//!
//! Other choices: `remove` of an unassigned attribute or with a filter matching nothing
//! changes nothing and succeeds (the RFC demands `noTarget` only for a missing path); adding a
//! value already present changes nothing; members are identified by `value`; when an operation
//! sets `primary: true` on one element, the others lose it; unknown sub-attributes and
//! read-only sub-attributes inside values are dropped (the server computes the latter).
//! A dotted sub-attribute of a multi-valued attribute without filter (`emails.type`) applies to
//! every element, as RFC 7644 §3.5.2.3 reads for unfiltered multi-valued targets; a `null`
//! sub-attribute inside a complex value unassigns it. `meta` is the caller's to update.

mod apply;
mod multi;
mod value;

use serde_json::Value;

use crate::error::ScimError;
use crate::filter::PatchPath;
use crate::json::get_ci;
use crate::schema::ResourceType;

/// The PatchOp message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    /// `add`
    Add,
    /// `replace`
    Replace,
    /// `remove`
    Remove,
}

impl PatchOp {
    /// Parses `add`/`replace`/`remove` in any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Some(PatchOp::Add),
            "replace" => Some(PatchOp::Replace),
            "remove" => Some(PatchOp::Remove),
            _ => None,
        }
    }
}

/// One parsed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// The kind.
    pub op: PatchOp,
    /// The parsed `path`, if present and non-empty.
    pub path: Option<PatchPath>,
    /// The `value`, if present.
    pub value: Option<Value>,
}

/// Parses a PatchOp request body: `schemas` must contain [`PATCH_OP_SCHEMA`], `Operations` must
/// be a non-empty array of objects with a valid `op` (any case), an optional `path` (parsed;
/// errors are `invalidPath`) and a `value` for `add` and `replace`.
pub fn parse_patch_request(body: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the PATCH body must be a JSON object"))?;
    let has_schema = get_ci(obj, "schemas").and_then(Value::as_array).is_some_and(|s| {
        s.iter().any(|u| {
            u.as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
        })
    });
    if !has_schema {
        return Err(ScimError::invalid_syntax(format!(
            "'schemas' must contain \"{PATCH_OP_SCHEMA}\""
        )));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("'Operations' must be an array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("'Operations' must not be empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| parse_operation(i, op))
        .collect()
}

fn parse_operation(i: usize, op: &Value) -> Result<PatchOperation, ScimError> {
    let o = op
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax(format!("Operations[{i}] must be an object")))?;
    let kind = get_ci(o, "op")
        .and_then(Value::as_str)
        .and_then(PatchOp::parse)
        .ok_or_else(|| {
            ScimError::invalid_syntax(format!(
                "Operations[{i}].op must be \"add\", \"replace\" or \"remove\""
            ))
        })?;
    let path = match get_ci(o, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(PatchPath::parse(s)?),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "Operations[{i}].path must be a string"
            )));
        }
    };
    let value = get_ci(o, "value").cloned();
    if kind != PatchOp::Remove && value.is_none() {
        return Err(ScimError::invalid_value(format!(
            "Operations[{i}] ({}) requires a 'value'",
            if kind == PatchOp::Add { "add" } else { "replace" }
        )));
    }
    Ok(PatchOperation {
        op: kind,
        path,
        value,
    })
}

/// Applies `ops` in order to a copy of `resource` (the full SCIM JSON of a `rt`) and returns
/// the result, or the first error with nothing applied. `meta` is left to the caller.
pub fn apply_patch(rt: ResourceType, resource: &Value, ops: &[PatchOperation]) -> Result<Value, ScimError> {
    let mut doc = resource.clone();
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_syntax("the resource must be a JSON object"))?;
    for op in ops {
        apply::apply_operation(rt, obj, op)?;
    }
    apply::sync_extensions(rt, obj);
    Ok(doc)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dialect_tests;
