//! Multi-valued attributes: appending with de-duplication, one primary at a time, removal by
//! value (Entra), and value-filter paths (`emails[type eq "work"].value`, `members[value eq
//! "id"]`) including the creation of a missing element from the filter's `eq` terms.

use serde_json::{Map, Value};

use super::PatchOp;
use super::apply::{check_immutable, check_removable, merge_into, strip_nulls};
use super::value::{normalize_attr, normalize_scalar, normalize_single};
use crate::error::ScimError;
use crate::filter::{AttrPath, CompValue, CompareOp, Filter, matches_element};
use crate::json::{get_ci, remove_ci, set_ci};
use crate::schema::{AttributeDef, Mutability};

pub(super) fn is_primary(v: &Value) -> bool {
    v.as_object()
        .and_then(|o| get_ci(o, "primary"))
        .is_some_and(|p| p == &Value::Bool(true))
}

/// Clears `primary` on every element but `keep` when `keep` is primary.
pub(super) fn enforce_primary(items: &mut [Value], keep: Option<usize>) {
    let Some(k) = keep else { return };
    if !items.get(k).is_some_and(is_primary) {
        return;
    }
    for (i, item) in items.iter_mut().enumerate() {
        if i != k
            && is_primary(item)
            && let Some(o) = item.as_object_mut()
        {
            set_ci(o, "primary", Value::Bool(false));
        }
    }
}

/// Members are identified by `value` (an immutable id), other elements by their whole content.
pub(super) fn same_element(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    let by_value = def
        .sub("value")
        .is_some_and(|v| v.mutability == Mutability::Immutable);
    if by_value {
        let va = a.as_object().and_then(|o| get_ci(o, "value"));
        let vb = b.as_object().and_then(|o| get_ci(o, "value"));
        if va.is_some() && vb.is_some() {
            return va == vb;
        }
    }
    a == b
}

pub(super) fn take_items(c: &mut Map<String, Value>, def: &AttributeDef) -> Vec<Value> {
    match remove_ci(c, def.name) {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

pub(super) fn put_items(c: &mut Map<String, Value>, def: &AttributeDef, items: Vec<Value>) {
    if !items.is_empty() {
        c.insert(def.name.to_owned(), Value::Array(items));
    }
}

/// Entra's `{"op":"Remove","path":"members","value":[{"value":"id"}]}`: remove just those.
pub(super) fn remove_values(
    c: &mut Map<String, Value>,
    def: &AttributeDef,
    v: &Value,
) -> Result<(), ScimError> {
    let targets = match normalize_attr(def, v)? {
        Value::Array(a) => a,
        other => vec![other],
    };
    let value_def = def.sub("value");
    let matches = |e: &Value, t: &Value| {
        let tv = t.as_object().and_then(|o| get_ci(o, "value"));
        let ev = e.as_object().and_then(|o| get_ci(o, "value"));
        match (tv, ev, value_def) {
            (Some(Value::String(a)), Some(Value::String(b)), Some(d)) if !d.case_exact => {
                a.eq_ignore_ascii_case(b)
            }
            (Some(a), Some(b), _) => a == b,
            _ => strip_nulls(e.clone()) == strip_nulls(t.clone()),
        }
    };
    let mut items = take_items(c, def);
    items.retain(|e| !targets.iter().any(|t| matches(e, t)));
    put_items(c, def, items);
    Ok(())
}

/// The `eq` terms of a conjunction, as the element they describe (`type eq "work"` →
/// `{"type":"work"}`); `None` when the filter is anything else.
pub(super) fn eq_terms(def: &AttributeDef, f: &Filter) -> Option<Map<String, Value>> {
    match f {
        Filter::Compare {
            attr:
                AttrPath {
                    urn: None,
                    name,
                    sub: None,
                },
            op: CompareOp::Eq,
            value,
        } => {
            let sub = def.sub(name)?;
            let raw = match value {
                CompValue::String(s) => Value::String(s.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return None,
            };
            let mut m = Map::new();
            m.insert(sub.name.to_owned(), normalize_scalar(sub, &raw).ok()?);
            Some(m)
        }
        Filter::And(l, r) => {
            let mut m = eq_terms(def, l)?;
            m.extend(eq_terms(def, r)?);
            Some(m)
        }
        _ => None,
    }
}

/// A value-filter path: `emails[type eq "work"]`, `emails[type eq "work"].value`,
/// `members[value eq "id"]`.
pub(super) fn filtered(
    c: &mut Map<String, Value>,
    kind: PatchOp,
    def: &AttributeDef,
    filter: &Filter,
    fsub: Option<&AttributeDef>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let mut items = take_items(c, def);
    let hits: Vec<usize> = (0..items.len())
        .filter(|&i| matches_element(def, filter, &items[i]))
        .collect();
    let result = filtered_items(&mut items, &hits, kind, def, filter, fsub, value);
    if def.multi_valued {
        put_items(c, def, items);
    } else if let Some(obj) = items.into_iter().next() {
        c.insert(def.name.to_owned(), obj);
    }
    result
}

pub(super) fn filtered_items(
    items: &mut Vec<Value>,
    hits: &[usize],
    kind: PatchOp,
    def: &AttributeDef,
    filter: &Filter,
    fsub: Option<&AttributeDef>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let no_match = || ScimError::no_target(format!("no value of '{}' matches [{filter}]", def.name));
    if kind == PatchOp::Remove {
        match fsub {
            None => {
                let mut i = 0;
                items.retain(|_| {
                    i += 1;
                    !hits.contains(&(i - 1))
                });
            }
            Some(sub) => {
                for &i in hits {
                    if let Some(o) = items[i].as_object_mut() {
                        check_removable(sub, get_ci(o, sub.name))?;
                        remove_ci(o, sub.name);
                    }
                }
                items.retain(|e| e.as_object().is_none_or(|o| !o.is_empty()));
            }
        }
        return Ok(());
    }
    let v = value.ok_or_else(|| ScimError::invalid_value("a 'value' is required"))?;
    // The new content, as sub-attributes to merge into each matching element.
    let incoming: Map<String, Value> = match fsub {
        Some(sub) => {
            let mut m = Map::new();
            m.insert(sub.name.to_owned(), normalize_scalar(sub, v)?);
            m
        }
        None => match normalize_single(def, v)? {
            Value::Object(o) => o,
            other => {
                return Err(ScimError::invalid_value(format!(
                    "a value for '{}[...]' must be an object, got {other}",
                    def.name
                )));
            }
        },
    };
    if hits.is_empty() {
        if kind == PatchOp::Replace {
            return Err(no_match());
        }
        if !def.multi_valued && !items.is_empty() {
            return Err(no_match());
        }
        let mut element = eq_terms(def, filter).ok_or_else(no_match)?;
        element.extend(incoming);
        let element = strip_nulls(Value::Object(element));
        if !items.iter().any(|e| same_element(def, e, &element)) {
            items.push(element);
            let last = items.len() - 1;
            enforce_primary(items, Some(last));
        }
        return Ok(());
    }
    let mut keep = None;
    for &i in hits {
        let Some(o) = items[i].as_object_mut() else {
            continue;
        };
        if kind == PatchOp::Replace && fsub.is_none() {
            // The matching values are replaced whole; immutable sub-attributes must not change.
            for sub in def.sub_attributes {
                check_immutable(sub, get_ci(o, sub.name), incoming.get(sub.name))?;
            }
            *o = incoming
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), x.clone()))
                .collect();
        } else {
            merge_into(def, o, incoming.clone())?;
        }
        if is_primary(&items[i]) {
            keep = Some(i);
        }
    }
    enforce_primary(items, keep);
    Ok(())
}
