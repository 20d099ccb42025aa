//! PATCH bodies in the exact shapes Microsoft Entra ID and Okta send, replayed against the
//! engine. Each body is kept verbatim as the provider's documentation records it.

use serde_json::{Value, json};

use super::*;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn replay(rt: ResourceType, resource: &Value, raw_body: &str) -> Value {
    let body: Value = serde_json::from_str(raw_body).unwrap();
    let ops = parse_patch_request(&body).unwrap_or_else(|e| panic!("{raw_body}: {e}"));
    apply_patch(rt, resource, &ops).unwrap_or_else(|e| panic!("{raw_body}: {e}"))
}

fn entra_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "u-1",
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@testuser.com",
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
        "name": {"familyName": "familyName", "givenName": "givenName"}
    })
}

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g-1",
        "displayName": "Group A",
        "members": [{"value": "f648f8d5ea4e4cd38e9c"}]
    })
}

#[test]
fn entra_update_work_email_and_family_name() {
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
        ]
    }"#,
    );
    assert_eq!(
        u["emails"],
        json!([{"primary": true, "type": "work", "value": "updatedEmail@microsoft.com"}])
    );
    assert_eq!(u["name"]["familyName"], "updatedFamilyName");
    assert_eq!(u["name"]["givenName"], "givenName");
}

#[test]
fn entra_disable_user_with_boolean_and_with_string() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}"#;
    assert_eq!(replay(ResourceType::User, &entra_user(), body)["active"], false);
    let legacy = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#;
    assert_eq!(replay(ResourceType::User, &entra_user(), legacy)["active"], false);
}

#[test]
fn entra_set_and_remove_manager() {
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{
            "op": "Add",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "value": [{"$ref": null, "value": "2819c223-7f76-453a-919d-ab1234567891"}]
        }]
    }"#,
    );
    assert_eq!(
        u[ENT]["manager"],
        json!({"value": "2819c223-7f76-453a-919d-ab1234567891"})
    );
    assert!(u["schemas"].as_array().unwrap().contains(&json!(ENT)));
    let removed = replay(
        ResourceType::User,
        &u,
        r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]
    }"#,
    );
    assert!(removed.get(ENT).is_none());
    assert!(!removed["schemas"].as_array().unwrap().contains(&json!(ENT)));
}

#[test]
fn entra_profile_sync_with_new_filtered_elements() {
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Add", "path": "displayName", "value": "Test User"},
            {"op": "Add", "path": "title", "value": "Engineer"},
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
            {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Redmond"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
            {"op": "Replace", "path": "externalId", "value": "new-object-id"}
        ]
    }"#,
    );
    assert_eq!(u["displayName"], "Test User");
    assert_eq!(
        u["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0100"}])
    );
    assert_eq!(u["addresses"], json!([{"type": "work", "locality": "Redmond"}]));
    assert_eq!(u[ENT]["department"], "R&D");
    assert_eq!(u["externalId"], "new-object-id");
}

#[test]
fn entra_group_rename_and_member_changes() {
    let g = replay(
        ResourceType::Group,
        &group(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"displayName","value":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]}"#,
    );
    assert_eq!(
        g["displayName"],
        "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    );
    let g = replay(
        ResourceType::Group,
        &g,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"a1b2c3"}]}]}"#,
    );
    assert_eq!(
        g["members"],
        json!([{"value": "f648f8d5ea4e4cd38e9c"}, {"value": "a1b2c3"}])
    );
    let g = replay(
        ResourceType::Group,
        &g,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}"#,
    );
    assert_eq!(g["members"], json!([{"value": "a1b2c3"}]));
    let g = replay(
        ResourceType::Group,
        &g,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members[value eq \"a1b2c3\"]"}]}"#,
    );
    assert!(g.get("members").is_none());
}

#[test]
fn okta_deactivate_and_password_change() {
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#,
    );
    assert_eq!(u["active"], false);
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"password":"Sup3rS3cret!"}}]}"#,
    );
    assert_eq!(u["password"], "Sup3rS3cret!");
}

#[test]
fn okta_group_rename_and_membership_in_one_request() {
    let g = replay(
        ResourceType::Group,
        &group(),
        r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "value": {"id": "g-1", "displayName": "Test SCIMv2"}},
            {"op": "remove", "path": "members[value eq \"f648f8d5ea4e4cd38e9c\"]"},
            {"op": "add", "path": "members", "value": [{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}]}
        ]
    }"#,
    );
    assert_eq!(g["displayName"], "Test SCIMv2");
    assert_eq!(
        g["members"],
        json!([{"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173"}])
    );
}

#[test]
fn replace_with_null_sub_attribute_unassigns_it() {
    let u = replay(
        ResourceType::User,
        &entra_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"name","value":{"familyName":null,"middleName":"J"}}]}"#,
    );
    assert_eq!(u["name"], json!({"givenName": "givenName", "middleName": "J"}));
}
