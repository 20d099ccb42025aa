use serde_json::{Value, json};

use super::*;
use crate::error::ScimType;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "2819c223",
        "userName": "bjensen",
        "name": {"familyName": "Jensen", "givenName": "Barbara"},
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "addresses": [
            {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood"},
            {"type": "home", "streetAddress": "456 Hollywood Blvd"}
        ],
        "groups": [{"value": "g1", "display": "Tour Guides"}],
        "meta": {"resourceType": "User", "version": "W/\"1\""}
    })
}

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "e9e30dba",
        "displayName": "Tour Guides",
        "members": [
            {"value": "2819c223", "type": "User"},
            {"value": "902c246b", "type": "User"}
        ]
    })
}

fn body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
}

fn patch(rt: ResourceType, resource: &Value, ops: Value) -> Result<Value, ScimError> {
    let ops = parse_patch_request(&body(ops))?;
    apply_patch(rt, resource, &ops)
}

fn ok(rt: ResourceType, resource: &Value, ops: Value) -> Value {
    patch(rt, resource, ops).unwrap_or_else(|e| panic!("patch failed: {e}"))
}

fn fails(rt: ResourceType, resource: &Value, ops: Value) -> ScimError {
    match patch(rt, resource, ops) {
        Ok(v) => panic!("patch should fail, got {v}"),
        Err(e) => e,
    }
}

fn member_ids(g: &Value) -> Vec<&str> {
    g["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["value"].as_str()).collect())
        .unwrap_or_default()
}

// --- request parsing -------------------------------------------------------------------------

#[test]
fn request_requires_the_patchop_schema_and_operations() {
    let no_schema = json!({"Operations": [{"op": "remove", "path": "title"}]});
    let e = parse_patch_request(&no_schema).unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
    assert!(e.detail.contains(PATCH_OP_SCHEMA));
    let empty = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []});
    assert_eq!(
        parse_patch_request(&empty).unwrap_err().scim_type,
        Some(ScimType::InvalidSyntax)
    );
    let missing = json!({"schemas": [PATCH_OP_SCHEMA]});
    assert_eq!(
        parse_patch_request(&missing).unwrap_err().scim_type,
        Some(ScimType::InvalidSyntax)
    );
    assert_eq!(
        parse_patch_request(&json!([])).unwrap_err().scim_type,
        Some(ScimType::InvalidSyntax)
    );
}

#[test]
fn request_parses_ops_in_any_case_and_checks_each_operation() {
    let ops = parse_patch_request(&body(json!([
        {"op": "Add", "path": "title", "value": "x"},
        {"op": "REPLACE", "value": {"active": false}},
        {"op": "remove", "path": "members[value eq \"1\"]"}
    ])))
    .unwrap();
    assert_eq!(
        ops.iter().map(|o| o.op).collect::<Vec<_>>(),
        [PatchOp::Add, PatchOp::Replace, PatchOp::Remove]
    );
    assert!(ops[1].path.is_none());
    let bad_op = body(json!([{"op": "merge", "path": "title", "value": "x"}]));
    assert_eq!(
        parse_patch_request(&bad_op).unwrap_err().scim_type,
        Some(ScimType::InvalidSyntax)
    );
    let bad_path = body(json!([{"op": "add", "path": "emails[type eq", "value": "x"}]));
    assert_eq!(
        parse_patch_request(&bad_path).unwrap_err().scim_type,
        Some(ScimType::InvalidPath)
    );
    let no_value = body(json!([{"op": "add", "path": "title"}]));
    assert_eq!(
        parse_patch_request(&no_value).unwrap_err().scim_type,
        Some(ScimType::InvalidValue)
    );
}

// --- RFC 7644 §3.5.2 examples ----------------------------------------------------------------

#[test]
fn rfc_add_members_appends() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([{
            "op": "add", "path": "members",
            "value": [{"display": "Babs Jensen", "$ref": "https://example.com/v2/Users/1111", "value": "1111"}]
        }]),
    );
    assert_eq!(member_ids(&g), ["2819c223", "902c246b", "1111"]);
    // `display` is readOnly: computed by the server, dropped from client input.
    assert_eq!(
        g["members"][2],
        json!({"value": "1111", "$ref": "https://example.com/v2/Users/1111"})
    );
}

#[test]
fn rfc_add_without_path_merges_attributes_in_canonical_case() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "add",
            "value": {"emails": [{"value": "babs@example.org", "type": "other"}], "nickname": "Babs"}
        }]),
    );
    assert_eq!(u["nickName"], "Babs");
    assert!(u.get("nickname").is_none());
    assert_eq!(u["emails"].as_array().unwrap().len(), 3);
    assert_eq!(u["emails"][2]["value"], "babs@example.org");
}

#[test]
fn rfc_remove_single_member_by_filter() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "remove", "path": "members[value eq \"2819c223\"]"}
        ]),
    );
    assert_eq!(member_ids(&g), ["902c246b"]);
}

#[test]
fn rfc_remove_all_members() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([{"op": "remove", "path": "members"}]),
    );
    assert!(g.get("members").is_none());
}

#[test]
fn rfc_remove_with_or_filter_then_add() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "remove", "path": "members[value eq \"2819c223\" or value eq \"902c246b\"]"},
            {"op": "add", "path": "members", "value": [{"value": "abc"}]}
        ]),
    );
    assert_eq!(member_ids(&g), ["abc"]);
}

#[test]
fn rfc_replace_all_members() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}
        ]),
    );
    assert_eq!(member_ids(&g), ["a", "b"]);
}

#[test]
fn rfc_replace_filtered_element_whole() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "replace", "path": "addresses[type eq \"work\"]",
            "value": {"type": "work", "streetAddress": "911 Universal City Plaza", "primary": true}
        }]),
    );
    assert_eq!(
        u["addresses"][0],
        json!({"type": "work", "streetAddress": "911 Universal City Plaza", "primary": true})
    );
    assert_eq!(u["addresses"][1]["type"], "home");
}

#[test]
fn rfc_replace_filtered_sub_attribute() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1010 Broadway Ave"
        }]),
    );
    assert_eq!(u["addresses"][0]["streetAddress"], "1010 Broadway Ave");
    assert_eq!(u["addresses"][0]["locality"], "Hollywood");
}

#[test]
fn rfc_replace_without_path_replaces_multi_valued_attributes() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "replace",
            "value": {"emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}], "nickName": "Babs"}
        }]),
    );
    assert_eq!(u["emails"].as_array().unwrap().len(), 1);
    assert_eq!(u["nickName"], "Babs");
}

#[test]
fn replace_of_complex_attribute_merges_sub_attributes() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "replace", "path": "name", "value": {"givenName": "Babs", "middleName": "Jane"}}
        ]),
    );
    assert_eq!(
        u["name"],
        json!({"familyName": "Jensen", "givenName": "Babs", "middleName": "Jane"})
    );
}

#[test]
fn replace_with_filter_matching_nothing_is_no_target() {
    let e = fails(
        ResourceType::User,
        &user(),
        json!([
            {"op": "replace", "path": "emails[type eq \"other\"].value", "value": "x@y"}
        ]),
    );
    assert_eq!(e.scim_type, Some(ScimType::NoTarget));
}

#[test]
fn remove_without_path_is_no_target() {
    let e = fails(ResourceType::User, &user(), json!([{"op": "remove"}]));
    assert_eq!(e.scim_type, Some(ScimType::NoTarget));
}

#[test]
fn remove_of_sub_attribute_and_empty_parent() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "remove", "path": "name.givenName"},
            {"op": "remove", "path": "name.familyName"},
            {"op": "remove", "path": "emails[type eq \"home\"]"},
            {"op": "remove", "path": "addresses[type eq \"work\"].locality"}
        ]),
    );
    assert!(u.get("name").is_none());
    assert_eq!(u["emails"].as_array().unwrap().len(), 1);
    assert!(u["addresses"][0].get("locality").is_none());
    // Removing what is not there changes nothing and succeeds.
    let same = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "remove", "path": "nickName"},
            {"op": "remove", "path": "emails[type eq \"other\"]"}
        ]),
    );
    assert_eq!(same, user());
}

// --- mutability ------------------------------------------------------------------------------

#[test]
fn read_only_attributes_cannot_be_changed() {
    for op in [
        json!({"op": "replace", "path": "id", "value": "other"}),
        json!({"op": "add", "path": "groups", "value": [{"value": "g2"}]}),
        json!({"op": "remove", "path": "groups"}),
        json!({"op": "replace", "path": "meta.version", "value": "x"}),
        json!({"op": "replace", "value": {"id": "other"}}),
        json!({"op": "add", "path": format!("{ENT}:manager.displayName"), "value": "Boss"}),
    ] {
        let e = fails(ResourceType::User, &user(), json!([op.clone()]));
        assert_eq!(e.scim_type, Some(ScimType::Mutability), "{op}: {e}");
    }
}

#[test]
fn immutable_sub_attributes_can_be_set_once_but_not_changed() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "add", "path": "members[value eq \"2819c223\"].type", "value": "User"}
        ]),
    );
    assert_eq!(g, group(), "setting the same immutable value is a no-op");
    let mut untyped = group();
    untyped["members"][0] = json!({"value": "2819c223"});
    let g = ok(
        ResourceType::Group,
        &untyped,
        json!([
            {"op": "add", "path": "members[value eq \"2819c223\"].type", "value": "User"}
        ]),
    );
    assert_eq!(g["members"][0]["type"], "User");
    let e = fails(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "replace", "path": "members[value eq \"2819c223\"].value", "value": "zzz"}
        ]),
    );
    assert_eq!(e.scim_type, Some(ScimType::Mutability));
}

#[test]
fn required_attributes_cannot_be_removed() {
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "remove", "path": "userName"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    let e = fails(
        ResourceType::Group,
        &group(),
        json!([{"op": "replace", "path": "displayName", "value": null}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
}

#[test]
fn unknown_paths_and_bad_values_are_rejected() {
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "add", "path": "shoeSize", "value": "9"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    assert!(e.detail.contains("shoeSize"));
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "add", "path": "name.nope", "value": "9"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "add", "path": "title[value eq \"x\"]", "value": "9"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "replace", "path": "active", "value": "maybe"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "replace", "path": "name", "value": 3}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    let e = fails(
        ResourceType::User,
        &user(),
        json!([{"op": "add", "value": "not an object"}]),
    );
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
}

#[test]
fn operations_are_atomic() {
    let ops = json!([
        {"op": "replace", "path": "title", "value": "Boss"},
        {"op": "replace", "path": "id", "value": "nope"}
    ]);
    let e = fails(ResourceType::User, &user(), ops);
    assert_eq!(e.scim_type, Some(ScimType::Mutability));
    // The first operation alone would have succeeded; together nothing is returned.
    let only_first = ok(
        ResourceType::User,
        &user(),
        json!([{"op": "replace", "path": "title", "value": "Boss"}]),
    );
    assert_eq!(only_first["title"], "Boss");
}

// --- multi-valued semantics ------------------------------------------------------------------

#[test]
fn add_deduplicates_identical_values_and_members_by_id() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]
        }]),
    );
    assert_eq!(u["emails"].as_array().unwrap().len(), 2);
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "Add", "path": "members", "value": [{"value": "2819c223"}, {"value": "new"}, {"value": "new"}]}
        ]),
    );
    assert_eq!(member_ids(&g), ["2819c223", "902c246b", "new"]);
}

#[test]
fn one_primary_at_a_time() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "add", "path": "emails", "value": [{"value": "new@example.com", "type": "work", "primary": true}]
        }]),
    );
    let primaries: Vec<bool> = u["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["primary"] == true)
        .collect();
    assert_eq!(primaries, [false, false, true]);
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{
            "op": "replace", "path": "emails[type eq \"home\"].primary", "value": true
        }]),
    );
    assert_eq!(u["emails"][0]["primary"], false);
    assert_eq!(u["emails"][1]["primary"], true);
}

// --- identity-provider dialects --------------------------------------------------------------

#[test]
fn entra_boolean_strings_and_capitalised_ops() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    );
    assert_eq!(u["active"], false);
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{"op": "Replace", "value": {"active": "True", "emails[type eq \"work\"].value": "w@x.org"}}]),
    );
    assert_eq!(u["active"], true);
    assert_eq!(u["emails"][0]["value"], "w@x.org");
}

#[test]
fn entra_add_with_value_filter_creates_the_missing_element() {
    let mut u = user();
    u.as_object_mut().unwrap().remove("emails");
    let u = ok(
        ResourceType::User,
        &u,
        json!([
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "new@example.com"},
            {"op": "Add", "path": "emails[type eq \"work\"].primary", "value": "True"}
        ]),
    );
    assert_eq!(
        u["emails"],
        json!([{"type": "work", "value": "new@example.com", "primary": true}])
    );
    let u2 = ok(
        ResourceType::User,
        &u,
        json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "changed@example.com"}
        ]),
    );
    assert_eq!(u2["emails"][0]["value"], "changed@example.com");
}

#[test]
fn entra_group_membership_shapes() {
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([{"op": "Add", "path": "members", "value": [{"value": "u3"}]}]),
    );
    assert_eq!(member_ids(&g), ["2819c223", "902c246b", "u3"]);
    let g = ok(
        ResourceType::Group,
        &g,
        json!([{"op": "Remove", "path": "members[value eq \"u3\"]"}]),
    );
    assert_eq!(member_ids(&g), ["2819c223", "902c246b"]);
    let g = ok(
        ResourceType::Group,
        &g,
        json!([{"op": "Remove", "path": "members", "value": [{"value": "2819c223"}]}]),
    );
    assert_eq!(member_ids(&g), ["902c246b"]);
    // Removing an absent member is idempotent.
    let g2 = ok(
        ResourceType::Group,
        &g,
        json!([{"op": "Remove", "path": "members", "value": [{"value": "ghost"}]}]),
    );
    assert_eq!(g2, g);
}

#[test]
fn entra_enterprise_extension_paths() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "Add", "path": format!("{ENT}:employeeNumber"), "value": "701984"},
            {"op": "Add", "path": format!("{ENT}:manager"), "value": "26118915"},
            {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:name.givenName", "value": "Babs"}
        ]),
    );
    assert_eq!(u[ENT]["employeeNumber"], "701984");
    assert_eq!(u[ENT]["manager"], json!({"value": "26118915"}));
    assert_eq!(u["name"]["givenName"], "Babs");
    assert_eq!(
        u["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENT])
    );
    let removed = ok(ResourceType::User, &u, json!([{"op": "remove", "path": ENT}]));
    assert!(removed.get(ENT).is_none());
    assert_eq!(
        removed["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
    );
    let via_schema = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "replace", "path": ENT, "value": {"department": "Tour Operations", "manager": {"value": "m1"}}}
        ]),
    );
    assert_eq!(via_schema[ENT]["department"], "Tour Operations");
    assert_eq!(via_schema[ENT]["manager"]["value"], "m1");
    let via_key = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "add", "value": {ENT: {"costCenter": "4130"}}}
        ]),
    );
    assert_eq!(via_key[ENT]["costCenter"], "4130");
}

#[test]
fn okta_replace_without_path() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{"op": "replace", "value": {"active": false}}]),
    );
    assert_eq!(u["active"], false);
    let g = ok(
        ResourceType::Group,
        &group(),
        json!([
            {"op": "replace", "value": {"id": "e9e30dba", "displayName": "Guides"}},
            {"op": "remove", "path": "members[value eq \"902c246b\"]"},
            {"op": "add", "path": "members", "value": [{"value": "u9", "display": "Nine"}]}
        ]),
    );
    assert_eq!(g["displayName"], "Guides");
    assert_eq!(g["id"], "e9e30dba");
    assert_eq!(member_ids(&g), ["2819c223", "u9"]);
}

#[test]
fn attribute_names_in_paths_are_case_insensitive() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([
            {"op": "replace", "path": "EMAILS[TYPE eq \"work\"].VALUE", "value": "W@x.org"},
            {"op": "add", "path": "NICKNAME", "value": "Babs"},
            {"op": "replace", "path": "Name.GivenName", "value": "B"}
        ]),
    );
    assert_eq!(u["emails"][0]["value"], "W@x.org");
    assert_eq!(u["nickName"], "Babs");
    assert_eq!(u["name"]["givenName"], "B");
}

#[test]
fn password_is_write_only_and_can_be_set() {
    let u = ok(
        ResourceType::User,
        &user(),
        json!([{"op": "replace", "path": "password", "value": "t1meMa$heen"}]),
    );
    assert_eq!(u["password"], "t1meMa$heen");
}
