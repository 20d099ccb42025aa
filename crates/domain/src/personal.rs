//! Which parts of an event are personal data, and the reserved payload members that mark a
//! payload whose personal part is sealed or erased (`docs/ARCHITECTURE.md`, "Personal data").
//!
//! Every event of the user aggregate is personal data apart from a short list of structural
//! fields ([`READABLE_USER_FIELDS`]). The list names what stays readable rather than what is
//! sealed, so that it fails closed: a field added to a user event later is sealed unless someone
//! decides otherwise. The other aggregates (organisations, groups, instances) hold no personal
//! data: group memberships name users by id only.
//!
//! Stored, a sealed payload keeps its readable fields and carries the rest in one member,
//! [`SEALED`]: `{"orgId": "...", "$sealed": {"fields": ["userName", ...], "nonce", "ciphertext"}}`.
//! Opened for a reader inside Cairn it is the original payload again. Once the user's data key is
//! destroyed it opens as the erased form: every sealed field's value is [`ERASED_VALUE`] and the
//! member [`ERASED`] is `true`, which is how the aggregate and the projections know to pass over
//! it.

use serde_json::{Map, Value};

/// The payload member that holds the sealed personal fields.
pub const SEALED: &str = "$sealed";

/// The payload member that marks an event whose personal fields are erased.
pub const ERASED: &str = "$erased";

/// What an erased event shows in place of each personal field.
pub const ERASED_VALUE: &str = "erased";

/// The aggregate type whose events hold personal data.
pub const PERSONAL_AGGREGATE: &str = "user";

/// The fields of user events that stay readable: the owning organisation, token ids and expiries,
/// the outcome of a verification attempt, and the verification code (already sealed under the
/// keyring, and not about the person) with its link template.
pub const READABLE_USER_FIELDS: &[&str] = &[
    "orgId",
    "tokenId",
    "expiresAt",
    "reason",
    "attempt",
    "voided",
    "returnCode",
    "code",
    "urlTemplate",
];

/// Whether events of `aggregate_type` hold personal data.
pub fn is_personal(aggregate_type: &str) -> bool {
    aggregate_type == PERSONAL_AGGREGATE
}

/// Splits a user event's payload object into its readable fields and its personal ones; `None`
/// when it has no personal field (nothing to seal) or is not an object.
pub fn split(payload: &Value) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let object = payload.as_object()?;
    let (readable, personal): (Map<String, Value>, Map<String, Value>) = object
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| READABLE_USER_FIELDS.contains(&k.as_str()));
    if personal.is_empty() {
        None
    } else {
        Some((readable, personal))
    }
}

/// Whether a payload is sealed (holds [`SEALED`]).
pub fn is_sealed(payload: &Value) -> bool {
    payload.get(SEALED).is_some()
}

/// Whether a payload is the erased form of a sealed one.
pub fn is_erased(payload: &Value) -> bool {
    payload.get(ERASED).and_then(Value::as_bool) == Some(true)
}

/// The erased form of a sealed payload: its readable fields, each sealed field (as listed in the
/// seal) shown as [`ERASED_VALUE`], and [`ERASED`] set.
pub fn erased_form(payload: &Value) -> Value {
    let mut out = Map::new();
    if let Some(object) = payload.as_object() {
        for (k, v) in object {
            if k == SEALED {
                let fields = v.get("fields").and_then(Value::as_array);
                for field in fields.into_iter().flatten().filter_map(Value::as_str) {
                    out.insert(field.to_owned(), Value::String(ERASED_VALUE.into()));
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert(ERASED.into(), Value::Bool(true));
    Value::Object(out)
}

/// The erased form of a payload that was never sealed (written before sealing existed): its
/// readable fields, each personal field shown as [`ERASED_VALUE`], and [`ERASED`] set; `None` when
/// it holds no personal field.
pub fn erase_plain(payload: &Value) -> Option<Value> {
    let (mut out, personal) = split(payload)?;
    for name in personal.keys() {
        out.insert(name.clone(), Value::String(ERASED_VALUE.into()));
    }
    out.insert(ERASED.into(), Value::Bool(true));
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_listed_fields_stay_readable_and_an_unknown_field_is_personal() {
        let payload = json!({"orgId": "o", "userName": "ada", "somethingNew": 1, "code": {"x": 1}});
        let (readable, personal) = split(&payload).expect("has personal fields");
        assert_eq!(Value::Object(readable), json!({"orgId": "o", "code": {"x": 1}}));
        assert_eq!(
            Value::Object(personal),
            json!({"userName": "ada", "somethingNew": 1})
        );
        assert!(split(&json!({"tokenId": "t"})).is_none());
        assert!(split(&json!({})).is_none());
    }

    #[test]
    fn the_erased_form_names_each_sealed_field_and_nothing_else() {
        let sealed = json!({"orgId": "o", SEALED: {"fields": ["userName", "emails"], "nonce": "n", "ciphertext": "c"}});
        let erased = erased_form(&sealed);
        assert_eq!(
            erased,
            json!({"orgId": "o", "userName": "erased", "emails": "erased", ERASED: true})
        );
        assert!(is_erased(&erased) && !is_sealed(&erased));
        assert!(is_sealed(&sealed) && !is_erased(&sealed));
        assert_eq!(
            erase_plain(&json!({"orgId": "o", "nickName": "Q"})),
            Some(json!({"orgId": "o", "nickName": "erased", ERASED: true}))
        );
        assert_eq!(erase_plain(&json!({"tokenId": "t"})), None);
    }
}
