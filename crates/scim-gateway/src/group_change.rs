//! What a group PATCH or PUT asks command-api for: one atomic `ModifyGroup`.
//!
//! Most group PATCHes (members added or removed by id, renames, externalId changes) are read as
//! deltas without loading the member list ([`GroupChange::fast`]): they cost the same for a group
//! of ten members or of a hundred thousand, and they need no version, because adding or removing
//! a given member means the same whatever else changed meanwhile. Any other PATCH is applied to
//! the whole group as read, and what it changed ([`GroupChange::between`]) is sent pinned to the
//! version that was read, so a change the gateway did not see is never overwritten (guarantee 2;
//! `crate::conflict` retries it).

use crate::resources::{member_ids, text_of};
use cairn_proto::group::v1 as gpb;
use cairn_scim::{PatchOp, PatchOperation, PatchPath, ScimError};
use serde_json::Value;
use std::collections::HashSet;
use uuid::Uuid;

/// The changes a group PATCH or PUT asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupChange {
    /// The new displayName.
    pub display_name: Option<String>,
    /// The new externalId (empty: none).
    pub external_id: Option<String>,
    /// Members to add.
    pub add: Vec<String>,
    /// Members to remove.
    pub remove: Vec<String>,
    /// The whole member list, replacing the current one (applied before `add` and `remove`).
    pub set: Option<Vec<String>>,
}

impl GroupChange {
    /// The PATCH `operations` as a delta that needs no read, or `None` when one of them needs the
    /// whole group or the delta would not apply them in their order (RFC 7644 §3.5.2).
    pub fn fast(operations: &[PatchOperation]) -> Result<Option<Self>, ScimError> {
        let mut change = Self::default();
        for op in operations {
            if !fast_op(op, &mut change)? {
                return Ok(None);
            }
        }
        Ok(Some(change))
    }

    /// What turns the group resource `current` into `patched`: displayName and externalId where
    /// they differ, and the members to add and to remove (not the whole list, so the request stays
    /// small for a large group and only new members are checked).
    pub fn between(current: &Value, patched: &Value) -> Result<Self, ScimError> {
        let (Some(before), Some(after)) = (current.as_object(), patched.as_object()) else {
            return Err(ScimError::invalid_syntax("a group must be an object"));
        };
        let display_name = text_of(after, "displayName");
        if display_name.trim().is_empty() {
            return Err(ScimError::invalid_value("displayName is required"));
        }
        let external_id = text_of(after, "externalId");
        let (old, new) = (member_ids(before)?, member_ids(after)?);
        let (was, is): (HashSet<&String>, HashSet<&String>) = (old.iter().collect(), new.iter().collect());
        let mut added = HashSet::new();
        Ok(Self {
            display_name: (display_name != text_of(before, "displayName")).then_some(display_name),
            external_id: (external_id != text_of(before, "externalId")).then_some(external_id),
            add: new
                .iter()
                .filter(|m| !was.contains(m) && added.insert(*m))
                .cloned()
                .collect(),
            remove: old.iter().filter(|m| !is.contains(m)).cloned().collect(),
            set: None,
        })
    }

    /// Adds `ids` to the members to add; `false` when one of them is removed by an earlier
    /// operation (command-api removes after adding, so the delta would reverse the two).
    fn add_members(&mut self, ids: Vec<String>) -> bool {
        if ids.iter().any(|id| self.remove.contains(id)) {
            return false;
        }
        self.add.extend(ids);
        true
    }

    /// Replaces the member list; `false` after an earlier addition or removal (command-api
    /// replaces the list first, so the delta would apply them to the new list).
    fn set_members(&mut self, ids: Vec<String>) -> bool {
        if !self.add.is_empty() || !self.remove.is_empty() {
            return false;
        }
        self.set = Some(ids);
        true
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The `ModifyGroup` request for group `id`, expecting it at version `expected` (0: any).
    pub fn request(&self, id: Uuid, expected: i64) -> gpb::ModifyGroupRequest {
        let mut fields = Vec::new();
        if self.external_id.is_some() {
            fields.push("external_id".to_owned());
        }
        gpb::ModifyGroupRequest {
            group_id: id.to_string(),
            display_name: self.display_name.clone().unwrap_or_default(),
            fields,
            external_id: self.external_id.clone().unwrap_or_default(),
            description: String::new(),
            add_user_ids: self.add.clone(),
            remove_user_ids: self.remove.clone(),
            replace_members: self.set.is_some(),
            set_user_ids: self.set.clone().unwrap_or_default(),
            expected_sequence: expected,
        }
    }
}

/// Adds `op` to `change` as a change of displayName, externalId or members, without loading the
/// members; `false` when it needs the whole resource.
fn fast_op(op: &PatchOperation, change: &mut GroupChange) -> Result<bool, ScimError> {
    let values = |value: &Option<Value>| -> Result<Vec<String>, ScimError> {
        match value {
            Some(Value::Array(items)) => items
                .iter()
                .map(|m| match m {
                    Value::Object(o) => {
                        let v = text_of(o, "value");
                        if v.is_empty() {
                            Err(ScimError::invalid_value("members[].value is required"))
                        } else {
                            Ok(v)
                        }
                    }
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ScimError::invalid_value("members must be objects with a value")),
                })
                .collect(),
            Some(Value::Object(o)) => member_ids(&serde_json::Map::from_iter([(
                "members".to_owned(),
                Value::Array(vec![Value::Object(o.clone())]),
            )])),
            None => Ok(Vec::new()),
            Some(_) => Err(ScimError::invalid_value("members must be an array")),
        }
    };
    match (&op.op, &op.path) {
        (PatchOp::Add | PatchOp::Replace, None) => {
            let Some(Value::Object(object)) = &op.value else {
                return Ok(false);
            };
            for (key, value) in object {
                match key.to_ascii_lowercase().as_str() {
                    "displayname" => change.display_name = value.as_str().map(str::to_owned),
                    "externalid" => change.external_id = Some(value.as_str().unwrap_or_default().to_owned()),
                    "members" if op.op == PatchOp::Add => {
                        if !change.add_members(values(&Some(value.clone()))?) {
                            return Ok(false);
                        }
                    }
                    "members" => {
                        if !change.set_members(values(&Some(value.clone()))?) {
                            return Ok(false);
                        }
                    }
                    "id" | "schemas" | "meta" => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
        (
            _,
            Some(PatchPath::Attr {
                attr,
                value_filter,
                sub_attr,
            }),
        ) => {
            let name = attr.name.to_ascii_lowercase();
            match (name.as_str(), &op.op, value_filter, sub_attr) {
                ("displayname", PatchOp::Add | PatchOp::Replace, None, None) => {
                    change.display_name = op.value.as_ref().and_then(Value::as_str).map(str::to_owned);
                    Ok(change.display_name.is_some())
                }
                ("externalid", PatchOp::Add | PatchOp::Replace, None, None) => {
                    change.external_id = Some(
                        op.value
                            .as_ref()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    Ok(true)
                }
                ("externalid", PatchOp::Remove, None, None) => {
                    change.external_id = Some(String::new());
                    Ok(true)
                }
                ("members", PatchOp::Add, None, None) => Ok(change.add_members(values(&op.value)?)),
                ("members", PatchOp::Replace, None, None) => Ok(change.set_members(values(&op.value)?)),
                ("members", PatchOp::Remove, None, None) if op.value.is_some() => {
                    change.remove.extend(values(&op.value)?);
                    Ok(true)
                }
                ("members", PatchOp::Remove, None, None) => Ok(change.set_members(Vec::new())),
                ("members", PatchOp::Remove, Some(filter), None) => match member_filter_value(filter) {
                    Some(id) => {
                        change.remove.push(id);
                        Ok(true)
                    }
                    None => Ok(false),
                },
                _ => Ok(false),
            }
        }
        _ => Ok(false),
    }
}

/// `value eq "<id>"` → the id.
fn member_filter_value(filter: &cairn_scim::Filter) -> Option<String> {
    match filter {
        cairn_scim::Filter::Compare {
            attr,
            op: cairn_scim::CompareOp::Eq,
            value: cairn_scim::CompValue::String(v),
        } if attr.name.eq_ignore_ascii_case("value") && attr.sub.is_none() => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(operations: Value) -> Vec<PatchOperation> {
        cairn_scim::parse_patch_request(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        }))
        .unwrap()
    }

    fn group(members: &[&str]) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g",
            "displayName": "Readers",
            "members": members.iter().map(|m| json!({"value": m, "display": m.to_uppercase(), "type": "User"})).collect::<Vec<_>>(),
            "meta": {"version": "W/\"7\""},
        })
    }

    #[test]
    fn member_deltas_by_id_need_no_read() {
        let change = GroupChange::fast(&ops(json!([
            {"op": "add", "path": "members", "value": [{"value": "a"}]},
            {"op": "remove", "path": "members[value eq \"b\"]"},
            {"op": "replace", "path": "displayName", "value": "Writers"},
        ])))
        .unwrap()
        .unwrap();
        assert_eq!(change.add, vec!["a"]);
        assert_eq!(change.remove, vec!["b"]);
        assert_eq!(change.display_name.as_deref(), Some("Writers"));
        assert_eq!(change.set, None);
    }

    #[test]
    fn other_filters_need_the_whole_group() {
        for path in [
            "members[display eq \"Alice\"]",
            "members[value eq \"a\" and type eq \"User\"]",
            "members[value sw \"a\"]",
        ] {
            assert_eq!(
                GroupChange::fast(&ops(json!([{"op": "remove", "path": path}]))).unwrap(),
                None,
                "{path}"
            );
        }
    }

    #[test]
    fn operations_a_delta_would_reorder_need_the_whole_group() {
        for operations in [
            json!([
                {"op": "remove", "path": "members[value eq \"a\"]"},
                {"op": "add", "path": "members", "value": [{"value": "a"}]},
            ]),
            json!([
                {"op": "add", "path": "members", "value": [{"value": "b"}]},
                {"op": "replace", "path": "members", "value": [{"value": "a"}]},
            ]),
            json!([
                {"op": "remove", "path": "members", "value": [{"value": "b"}]},
                {"op": "remove", "path": "members"},
            ]),
            json!([
                {"op": "add", "path": "members", "value": [{"value": "b"}]},
                {"op": "replace", "value": {"members": [{"value": "a"}]}},
            ]),
        ] {
            assert_eq!(
                GroupChange::fast(&ops(operations.clone())).unwrap(),
                None,
                "{operations}"
            );
        }
        // In the delta's own order (replace, add, remove) they stay one delta.
        let change = GroupChange::fast(&ops(json!([
            {"op": "replace", "path": "members", "value": [{"value": "a"}]},
            {"op": "add", "path": "members", "value": [{"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"b\"]"},
        ])))
        .unwrap()
        .unwrap();
        assert_eq!(change.set, Some(vec!["a".to_owned()]));
        assert_eq!(
            (change.add, change.remove),
            (vec!["b".to_owned()], vec!["b".to_owned()])
        );
    }

    #[test]
    fn the_slow_path_sends_only_what_the_patch_changed() {
        let current = group(&["a", "b", "c"]);
        let patched = cairn_scim::apply_patch(
            cairn_scim::ResourceType::Group,
            &current,
            &ops(json!([
                {"op": "remove", "path": "members[display eq \"B\"]"},
                {"op": "add", "path": "members", "value": [{"value": "d"}, {"value": "a"}]},
            ])),
        )
        .unwrap();
        let change = GroupChange::between(&current, &patched).unwrap();
        assert_eq!(
            change,
            GroupChange {
                add: vec!["d".into()],
                remove: vec!["b".into()],
                ..GroupChange::default()
            }
        );
        let request = change.request(Uuid::nil(), 7);
        assert_eq!(request.expected_sequence, 7);
        assert!(!request.replace_members && request.set_user_ids.is_empty());
        assert!(request.fields.is_empty(), "externalId is left alone");
    }

    #[test]
    fn a_patch_that_changes_nothing_is_empty_and_renames_are_kept() {
        let current = group(&["a"]);
        assert!(GroupChange::between(&current, &current).unwrap().is_empty());
        let mut renamed = current.clone();
        renamed["displayName"] = json!("Writers");
        renamed["externalId"] = json!("ext-1");
        let change = GroupChange::between(&current, &renamed).unwrap();
        assert_eq!(change.display_name.as_deref(), Some("Writers"));
        assert_eq!(change.external_id.as_deref(), Some("ext-1"));
        assert!(change.add.is_empty() && change.remove.is_empty());
    }
}
