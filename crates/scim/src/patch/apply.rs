//! Dispatch of one operation: target resolution (paths, extension URNs, no-path objects),
//! mutability checks, and the add / replace / remove semantics of RFC 7644 §3.5.2.1-3 for whole
//! attributes and dotted sub-attributes. Multi-valued specifics live in `multi`.

use serde_json::{Map, Value};

use super::multi::{
    enforce_primary, filtered, is_primary, put_items, remove_values, same_element, take_items,
};
use super::value::{normalize_attr, normalize_scalar};
use super::{PatchOp, PatchOperation};
use crate::error::ScimError;
use crate::filter::PatchPath;
use crate::json::{get_ci, key_ci, remove_ci, set_ci};
use crate::schema::{AttrType, AttributeDef, Mutability, ResourceType, resolve};

pub(super) fn apply_operation(
    rt: ResourceType,
    doc: &mut Map<String, Value>,
    op: &PatchOperation,
) -> Result<(), ScimError> {
    match &op.path {
        None => no_path(rt, doc, op.op, op.value.as_ref()),
        Some(PatchPath::Schema(urn)) if urn.eq_ignore_ascii_case(rt.core_schema().id) => {
            no_path(rt, doc, op.op, op.value.as_ref())
        }
        Some(PatchPath::Schema(urn)) => {
            let ext = rt
                .extension(urn)
                .ok_or_else(|| ScimError::invalid_path(format!("unknown schema '{urn}'")))?;
            if op.op == PatchOp::Remove {
                remove_ci(doc, ext.id);
                return Ok(());
            }
            let members = op.value.as_ref().and_then(Value::as_object).ok_or_else(|| {
                ScimError::invalid_value(format!("a value for '{}' must be an object", ext.id))
            })?;
            for (k, v) in members {
                // Some clients echo `schemas` inside the extension object; it is not an attribute.
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let path = PatchPath::parse(&format!("{}:{k}", ext.id))
                    .map_err(|_| ScimError::invalid_path(format!("unknown attribute '{k}'")))?;
                apply_path(rt, doc, op.op, &path, Some(v))?;
            }
            Ok(())
        }
        Some(path) => apply_path(rt, doc, op.op, path, op.value.as_ref()),
    }
}

/// `add`/`replace` without a path: each member of the object value is applied as its own path.
fn no_path(
    rt: ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOp,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if kind == PatchOp::Remove {
        return Err(ScimError::no_target("a remove operation requires a 'path'"));
    }
    let members = value
        .and_then(Value::as_object)
        .ok_or_else(|| ScimError::invalid_value("an operation without 'path' requires an object 'value'"))?;
    for (k, v) in members {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        let path =
            PatchPath::parse(k).map_err(|_| ScimError::invalid_path(format!("unknown attribute '{k}'")))?;
        // Okta sends `id` (read-only) beside the changed attributes: ignore it when unchanged.
        if let PatchPath::Attr {
            attr,
            value_filter: None,
            sub_attr: None,
        } = &path
            && let Some(r) = resolve(rt, attr)
            && r.sub.is_none()
            && r.extension.is_none()
            && r.attr.mutability == Mutability::ReadOnly
            && get_ci(doc, r.attr.name) == Some(v)
        {
            continue;
        }
        let op = PatchOperation {
            op: kind,
            path: Some(path),
            value: Some(v.clone()),
        };
        apply_operation(rt, doc, &op)?;
    }
    Ok(())
}

fn container<'a>(
    doc: &'a mut Map<String, Value>,
    extension: Option<&str>,
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let Some(urn) = extension else {
        return Some(doc);
    };
    let key = match key_ci(doc, urn) {
        Some(k) => k,
        None if create => {
            doc.insert(urn.to_owned(), Value::Object(Map::new()));
            urn.to_owned()
        }
        None => return None,
    };
    let slot = doc.get_mut(&key)?;
    if !slot.is_object() {
        if !create {
            return None;
        }
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn apply_path(
    rt: ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOp,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let (attr, value_filter, sub_attr) = match path {
        PatchPath::Attr {
            attr,
            value_filter,
            sub_attr,
        } => (attr, value_filter, sub_attr),
        PatchPath::Schema(_) => {
            let op = PatchOperation {
                op: kind,
                path: Some(path.clone()),
                value: value.cloned(),
            };
            return apply_operation(rt, doc, &op);
        }
    };
    let r =
        resolve(rt, attr).ok_or_else(|| ScimError::invalid_path(format!("unknown attribute '{attr}'")))?;
    let fsub = match sub_attr {
        Some(s) => Some(r.attr.sub(s).ok_or_else(|| {
            ScimError::invalid_path(format!("unknown sub-attribute '{s}' of '{}'", r.attr.name))
        })?),
        None => None,
    };
    if value_filter.is_some() && r.attr.ty != AttrType::Complex {
        return Err(ScimError::invalid_path(format!(
            "'{}' is not complex and cannot take a value filter",
            r.attr.name
        )));
    }
    let leaf = fsub.or(r.sub).unwrap_or(r.attr);
    if r.attr.mutability == Mutability::ReadOnly || leaf.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!("attribute '{path}' is readOnly")));
    }
    if kind != PatchOp::Remove && value.is_none() {
        return Err(ScimError::invalid_value("add and replace require a 'value'"));
    }
    let Some(c) = container(doc, r.extension, kind != PatchOp::Remove) else {
        return Ok(()); // removing from an absent extension: nothing to do
    };
    match (value_filter, r.sub) {
        (Some(f), _) => filtered(c, kind, r.attr, f, fsub, value),
        (None, Some(sub)) => sub_op(c, kind, r.attr, sub, value),
        (None, None) => whole(c, kind, r.attr, value),
    }
}

pub(super) fn is_set(v: Option<&Value>) -> bool {
    v.is_some_and(|v| !v.is_null())
}

pub(super) fn check_immutable(
    def: &AttributeDef,
    existing: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ScimError> {
    if def.mutability == Mutability::Immutable && is_set(existing) && existing != new {
        return Err(ScimError::mutability(format!(
            "attribute '{}' is immutable and already set",
            def.name
        )));
    }
    Ok(())
}

pub(super) fn check_removable(def: &AttributeDef, existing: Option<&Value>) -> Result<(), ScimError> {
    if def.required {
        return Err(ScimError::invalid_value(format!(
            "required attribute '{}' cannot be removed",
            def.name
        )));
    }
    check_immutable(def, existing, None)
}

pub(super) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, x)| !x.is_null()).collect()),
        other => other,
    }
}

/// The whole attribute: `emails`, `active`, `name`, `members`.
fn whole(
    c: &mut Map<String, Value>,
    kind: PatchOp,
    def: &AttributeDef,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let existing = get_ci(c, def.name).cloned();
    let new = match (kind, value) {
        (PatchOp::Remove, Some(v)) if def.multi_valued && !v.is_null() => {
            return remove_values(c, def, v);
        }
        (PatchOp::Remove, _) => {
            check_removable(def, existing.as_ref())?;
            remove_ci(c, def.name);
            return Ok(());
        }
        (_, Some(v)) => normalize_attr(def, v)?,
        (_, None) => return Err(ScimError::invalid_value("a 'value' is required")),
    };
    let empty = new.is_null() || new.as_array().is_some_and(Vec::is_empty);
    if empty {
        if kind == PatchOp::Replace {
            check_removable(def, existing.as_ref())?;
            remove_ci(c, def.name);
        }
        return Ok(());
    }
    if def.multi_valued {
        let incoming: Vec<Value> = match new {
            Value::Array(a) => a.into_iter().map(strip_nulls).collect(),
            other => vec![strip_nulls(other)],
        };
        let mut items = if kind == PatchOp::Add {
            take_items(c, def)
        } else {
            check_immutable(def, existing.as_ref(), Some(&Value::Array(incoming.clone())))?;
            remove_ci(c, def.name);
            Vec::new()
        };
        let mut keep = None;
        for n in incoming {
            if let Some(i) = items.iter().position(|e| same_element(def, e, &n)) {
                if is_primary(&n) {
                    keep = Some(i);
                }
                continue;
            }
            items.push(n);
            if is_primary(items.last().unwrap_or(&Value::Null)) {
                keep = Some(items.len() - 1);
            }
        }
        enforce_primary(&mut items, keep);
        put_items(c, def, items);
        return Ok(());
    }
    if def.ty == AttrType::Complex {
        let Value::Object(incoming) = new else {
            return Err(ScimError::invalid_value(format!(
                "'{}' expects an object",
                def.name
            )));
        };
        let mut obj = match remove_ci(c, def.name) {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        merge_into(def, &mut obj, incoming)?;
        if !obj.is_empty() {
            c.insert(def.name.to_owned(), Value::Object(obj));
        }
        return Ok(());
    }
    check_immutable(def, existing.as_ref(), Some(&new))?;
    set_ci(c, def.name, new);
    Ok(())
}

/// Merges sub-attributes into a complex value; a null sub-attribute value unassigns it.
pub(super) fn merge_into(
    def: &AttributeDef,
    obj: &mut Map<String, Value>,
    incoming: Map<String, Value>,
) -> Result<(), ScimError> {
    for (k, v) in incoming {
        let Some(sub) = def.sub(&k) else { continue };
        check_immutable(sub, get_ci(obj, sub.name), Some(&v))?;
        if v.is_null() {
            remove_ci(obj, sub.name);
        } else {
            set_ci(obj, sub.name, v);
        }
    }
    Ok(())
}

/// A dotted sub-attribute without filter: `name.givenName`, `emails.type`.
fn sub_op(
    c: &mut Map<String, Value>,
    kind: PatchOp,
    def: &AttributeDef,
    sub: &AttributeDef,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let new = match (kind, value) {
        (PatchOp::Remove, _) | (_, None) => Value::Null,
        (_, Some(v)) => normalize_scalar(sub, v)?,
    };
    if !def.multi_valued {
        let mut obj = match remove_ci(c, def.name) {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        let mut incoming = Map::new();
        incoming.insert(sub.name.to_owned(), new);
        let result = merge_into(def, &mut obj, incoming);
        if !obj.is_empty() {
            c.insert(def.name.to_owned(), Value::Object(obj));
        }
        return result;
    }
    let mut items = take_items(c, def);
    if items.is_empty() && !new.is_null() {
        items.push(Value::Object(Map::new()));
    }
    let mut result = Ok(());
    for item in items.iter_mut() {
        if let Some(o) = item.as_object_mut() {
            let mut incoming = Map::new();
            incoming.insert(sub.name.to_owned(), new.clone());
            result = result.and(merge_into(def, o, incoming));
        }
    }
    items.retain(|e| e.as_object().is_none_or(|o| !o.is_empty()));
    if sub.name == "primary" {
        let last = items.len().checked_sub(1);
        enforce_primary(&mut items, last);
    }
    put_items(c, def, items);
    result
}

/// Moves each extension object to its canonical key and keeps `schemas` in step: an extension
/// with data is listed, one without is dropped from the resource and from `schemas`.
pub(super) fn sync_extensions(rt: ResourceType, doc: &mut Map<String, Value>) {
    for ext in rt.extensions() {
        let data = remove_ci(doc, ext.id).filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
        let listed = data.is_some();
        if let Some(d) = data {
            doc.insert(ext.id.to_owned(), d);
        }
        let schemas = match doc.get_mut("schemas") {
            Some(Value::Array(a)) => a,
            _ if !listed => continue,
            _ => {
                doc.insert(
                    "schemas".to_owned(),
                    Value::Array(vec![Value::String(rt.core_schema().id.to_owned())]),
                );
                match doc.get_mut("schemas") {
                    Some(Value::Array(a)) => a,
                    _ => continue,
                }
            }
        };
        let is_ext = |s: &Value| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ext.id));
        if !listed {
            schemas.retain(|s| !is_ext(s));
        } else if !schemas.iter().any(is_ext) {
            schemas.push(Value::String(ext.id.to_owned()));
        }
    }
}
