//! Case-insensitive access to JSON object members: SCIM attribute names are case-insensitive
//! (RFC 7643 §2.1), so a client's `USERNAME` and the stored `userName` are the same member.

use serde_json::{Map, Value};

/// The key of `obj` equal to `name` ignoring ASCII case, exact matches first.
pub(crate) fn key_ci(obj: &Map<String, Value>, name: &str) -> Option<String> {
    if obj.contains_key(name) {
        return Some(name.to_owned());
    }
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// The member of `obj` named `name`, ignoring ASCII case.
pub(crate) fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Removes every member whose key equals `name` ignoring ASCII case; returns the last removed.
pub(crate) fn remove_ci(obj: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let keys: Vec<String> = obj
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    let mut last = None;
    for k in keys {
        last = obj.remove(&k);
    }
    last
}

/// Sets `canonical` to `value`, removing any differently-cased duplicates first.
pub(crate) fn set_ci(obj: &mut Map<String, Value>, canonical: &str, value: Value) {
    remove_ci(obj, canonical);
    obj.insert(canonical.to_owned(), value);
}

/// Whether a value counts as present (RFC 7644 §3.4.2.2 `pr`): not null, not an empty string,
/// array or object.
pub(crate) fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(o) => o.values().any(is_present),
        _ => true,
    }
}
