//! Evaluates a filter against SCIM JSON in memory. The PATCH engine uses it to select the
//! elements a value-path filter names; [`matches`] also serves tests and callers that hold
//! resources in memory. Its semantics are the SQL translation's: string comparisons honour
//! `caseExact`; a comparison on a multi-valued attribute holds when some value satisfies it;
//! `ne` is the negation of `eq`; `eq null` holds for an unassigned attribute.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::{AttrPath, CompValue, CompareOp, Filter};
use crate::json::{get_ci, is_present};
use crate::schema::{AttrType, AttributeDef, ResourceType, resolve};

/// Whether `resource` (the full SCIM JSON of a resource of type `rt`) matches `filter`.
/// Attributes unknown to the schema match nothing.
pub fn matches(rt: ResourceType, filter: &Filter, resource: &Value) -> bool {
    eval(filter, &|attr: &AttrPath| resource_values(rt, resource, attr))
}

/// Whether `element`, one value of the complex attribute `parent`, matches the value filter
/// `filter` (whose attribute names are sub-attributes of `parent`).
pub fn matches_element(parent: &AttributeDef, filter: &Filter, element: &Value) -> bool {
    eval(filter, &|attr: &AttrPath| element_values(parent, element, attr))
}

/// The leaf values an attribute path denotes, with the definition that governs comparisons.
struct Values<'a> {
    values: Vec<&'a Value>,
    def: Option<&'static AttributeDef>,
    /// Elements for a value path: the complex values themselves, with their definition.
    elements: Vec<&'a Value>,
    complex: Option<&'static AttributeDef>,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => out.extend(items.iter().filter(|x| !x.is_null())),
        Value::Null => {}
        other => out.push(other),
    }
}

fn resource_values<'a>(rt: ResourceType, resource: &'a Value, attr: &AttrPath) -> Values<'a> {
    let empty = Values {
        values: vec![],
        def: None,
        elements: vec![],
        complex: None,
    };
    let (Some(r), Some(obj)) = (resolve(rt, attr), resource.as_object()) else {
        return empty;
    };
    let container = match r.extension {
        Some(urn) => get_ci(obj, urn).and_then(Value::as_object),
        None => Some(obj),
    };
    let Some(top) = container.and_then(|c| get_ci(c, r.attr.name)) else {
        return Values {
            def: Some(r.leaf()),
            ..empty
        };
    };
    let mut elements = Vec::new();
    flatten(top, &mut elements);
    let (sub, def) = match r.sub {
        Some(s) => (Some(s.name), Some(s)),
        // A filter on a multi-valued complex attribute without sub-attribute means `.value`.
        None if r.attr.ty == AttrType::Complex && r.attr.multi_valued => (Some("value"), r.attr.sub("value")),
        None => (None, Some(r.attr)),
    };
    let mut values = Vec::new();
    match sub {
        Some(s) => {
            for e in &elements {
                if let Some(v) = e.as_object().and_then(|o| get_ci(o, s)) {
                    flatten(v, &mut values);
                }
            }
        }
        None => values = elements.clone(),
    }
    Values {
        values,
        def,
        elements,
        complex: Some(r.attr),
    }
}

fn element_values<'a>(parent: &AttributeDef, element: &'a Value, attr: &AttrPath) -> Values<'a> {
    let def = parent.sub(&attr.name);
    let mut values = Vec::new();
    if attr.sub.is_none()
        && let Some(v) = element.as_object().and_then(|o| get_ci(o, &attr.name))
    {
        flatten(v, &mut values);
    }
    Values {
        values,
        def,
        elements: vec![],
        complex: None,
    }
}

fn eval<'a>(filter: &Filter, lookup: &dyn Fn(&AttrPath) -> Values<'a>) -> bool {
    match filter {
        Filter::And(l, r) => eval(l, lookup) && eval(r, lookup),
        Filter::Or(l, r) => eval(l, lookup) || eval(r, lookup),
        Filter::Not(f) => !eval(f, lookup),
        Filter::Present(attr) => lookup(attr).values.iter().any(|v| is_present(v)),
        Filter::ValuePath { attr, filter } => {
            let vals = lookup(attr);
            match vals.complex {
                Some(def) => vals.elements.iter().any(|e| matches_element(def, filter, e)),
                None => false,
            }
        }
        Filter::Compare { attr, op, value } => {
            let vals = lookup(attr);
            match (op, value) {
                (CompareOp::Eq, CompValue::Null) => vals.values.is_empty(),
                (CompareOp::Ne, CompValue::Null) => !vals.values.is_empty(),
                (CompareOp::Ne, v) => !vals.values.iter().any(|x| compare(x, CompareOp::Eq, v, vals.def)),
                (op, v) => vals.values.iter().any(|x| compare(x, *op, v, vals.def)),
            }
        }
    }
}

fn parse_dt(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

fn ordering_holds(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// Compares one attribute value with a filter literal.
fn compare(actual: &Value, op: CompareOp, lit: &CompValue, def: Option<&AttributeDef>) -> bool {
    let ty = def.map(|d| d.ty);
    match (actual, lit) {
        (Value::Bool(a), CompValue::Bool(b)) => matches!(op, CompareOp::Eq) && a == b,
        (Value::String(a), CompValue::Bool(b)) if ty == Some(AttrType::Boolean) => {
            matches!(op, CompareOp::Eq) && a.eq_ignore_ascii_case(if *b { "true" } else { "false" })
        }
        (Value::Number(a), CompValue::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|o| ordering_holds(op, o)),
            _ => false,
        },
        (Value::String(a), CompValue::String(b)) => {
            if ty == Some(AttrType::DateTime)
                && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
                && let (Some(x), Some(y)) = (parse_dt(a), parse_dt(b))
            {
                return ordering_holds(op, x.cmp(&y));
            }
            let case_exact = def.is_some_and(|d| d.case_exact);
            let (x, y) = if case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => x.contains(&y),
                CompareOp::Sw => x.starts_with(&y),
                CompareOp::Ew => x.ends_with(&y),
                other => ordering_holds(other, x.cmp(&y)),
            }
        }
        _ => false,
    }
}
