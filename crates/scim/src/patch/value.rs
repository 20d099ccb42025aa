//! Checks a client's value against an attribute definition and normalises it: canonical key
//! case, `"True"`/`"False"` to booleans, numbers to strings for string attributes, a lone value
//! wrapped into an array for multi-valued attributes (and a one-element array unwrapped for a
//! single-valued one), unknown and read-only sub-attributes dropped inside complex values.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::schema::{AttrType, AttributeDef, Mutability};

fn type_error(def: &AttributeDef, expected: &str, got: &Value) -> ScimError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ScimError::invalid_value(format!("attribute '{}' expects {expected}, got {kind}", def.name))
}

/// Normalises a whole attribute value (an array for multi-valued attributes). `Null` stays
/// `Null` (the caller treats it as unassigning).
pub(super) fn normalize_attr(def: &AttributeDef, v: &Value) -> Result<Value, ScimError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if def.multi_valued {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().filter(|x| !x.is_null()).collect(),
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let n = normalize_single(def, item)?;
            if !n.is_null() && !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(Value::Array(out))
    } else {
        match v {
            // Entra sends `manager` as `[{"$ref": null, "value": "id"}]`.
            Value::Array(items) if items.len() == 1 => normalize_single(def, &items[0]),
            other => normalize_single(def, other),
        }
    }
}

/// Normalises one value of `def` (one element when multi-valued).
pub(super) fn normalize_single(def: &AttributeDef, v: &Value) -> Result<Value, ScimError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match def.ty {
        AttrType::Complex => match v {
            Value::Object(o) => Ok(Value::Object(normalize_object(def, o)?)),
            // `"emails": "a@b"` or a member id on its own: the element's `value`.
            scalar if def.sub("value").is_some() && !scalar.is_array() => {
                let mut m = Map::new();
                m.insert("value".to_owned(), scalar.clone());
                Ok(Value::Object(normalize_object(def, &m)?))
            }
            other => Err(type_error(def, "an object", other)),
        },
        _ => normalize_scalar(def, v),
    }
}

/// Normalises the sub-attributes of a complex value.
pub(super) fn normalize_object(
    def: &AttributeDef,
    o: &Map<String, Value>,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, val) in o {
        let Some(sub) = def.sub(k) else { continue };
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        // Nulls are kept: merging them unassigns the sub-attribute; stored elements drop them.
        out.insert(sub.name.to_owned(), normalize_scalar(sub, val)?);
    }
    Ok(out)
}

/// Normalises a value of a non-complex attribute or sub-attribute.
pub(super) fn normalize_scalar(def: &AttributeDef, v: &Value) -> Result<Value, ScimError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match def.ty {
        AttrType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            other => Err(type_error(def, "a boolean", other)),
        },
        AttrType::String | AttrType::Reference | AttrType::Binary => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            other => Err(type_error(def, "a string", other)),
        },
        AttrType::DateTime => match v {
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Ok(v.clone()),
            other => Err(type_error(def, "an RFC 3339 dateTime string", other)),
        },
        AttrType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            other => Err(type_error(def, "an integer", other)),
        },
        AttrType::Decimal => match v {
            Value::Number(_) => Ok(v.clone()),
            other => Err(type_error(def, "a number", other)),
        },
        AttrType::Complex => match v {
            Value::Object(o) => Ok(Value::Object(normalize_object(def, o)?)),
            other => Err(type_error(def, "an object", other)),
        },
    }
}
