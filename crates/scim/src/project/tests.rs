use serde_json::{Value, json};

use super::*;
use crate::filter::parse_attribute_list;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
        "id": "2819c223",
        "externalId": "701984",
        "userName": "bjensen",
        "password": "secret",
        "name": {"familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs",
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "meta": {"resourceType": "User", "version": "W/\"1\""},
        ENT: {"employeeNumber": "701984", "manager": {"value": "m1", "displayName": "Boss"}}
    })
}

fn proj(attrs: &str, excluded: &str) -> Value {
    let a = parse_attribute_list(attrs).unwrap();
    let e = parse_attribute_list(excluded).unwrap();
    project(ResourceType::User, &user(), &a, &e)
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn default_projection_drops_never_returned_attributes() {
    let v = proj("", "");
    assert!(v.get("password").is_none());
    let mut expected = user();
    expected.as_object_mut().unwrap().remove("password");
    assert_eq!(v, expected);
}

#[test]
fn attributes_keeps_only_named_and_always_returned() {
    let v = proj("userName", "");
    assert_eq!(keys(&v), ["id", "schemas", "userName"]);
}

#[test]
fn attributes_are_case_insensitive_and_may_be_urn_qualified() {
    let v = proj(
        "USERNAME,urn:ietf:params:scim:schemas:core:2.0:User:displayName",
        "",
    );
    assert_eq!(keys(&v), ["displayName", "id", "schemas", "userName"]);
}

#[test]
fn attributes_can_name_sub_attributes() {
    let v = proj("name.givenName,emails.value", "");
    assert_eq!(v["name"], json!({"givenName": "Barbara"}));
    assert_eq!(
        v["emails"],
        json!([{"value": "bjensen@example.com"}, {"value": "babs@jensen.org"}])
    );
    assert!(v.get("userName").is_none());
}

#[test]
fn attributes_can_name_extensions_and_their_attributes() {
    let whole = proj(ENT, "");
    assert_eq!(whole[ENT], user()[ENT]);
    assert!(whole.get("userName").is_none());
    let one = proj(&format!("{ENT}:manager.value"), "");
    assert_eq!(one[ENT], json!({"manager": {"value": "m1"}}));
}

#[test]
fn attributes_cannot_bring_back_never_returned_attributes() {
    let v = proj("password,userName", "");
    assert!(v.get("password").is_none());
    assert_eq!(v["userName"], "bjensen");
}

#[test]
fn excluded_attributes_remove_attributes_subs_and_extensions() {
    let v = proj("", "emails,name.familyName");
    assert!(v.get("emails").is_none());
    assert_eq!(v["name"], json!({"givenName": "Barbara"}));
    assert_eq!(v["userName"], "bjensen");
    let v = proj("", &format!("{ENT},meta"));
    assert!(v.get(ENT).is_none());
    assert!(v.get("meta").is_none());
    let v = proj("", &format!("{ENT}:manager"));
    assert_eq!(v[ENT], json!({"employeeNumber": "701984"}));
}

#[test]
fn excluded_attributes_cannot_remove_always_returned_ones() {
    let v = proj("", "id,schemas,emails.type");
    assert_eq!(v["id"], "2819c223");
    assert!(v.get("schemas").is_some());
    assert_eq!(
        v["emails"][0],
        json!({"value": "bjensen@example.com", "primary": true})
    );
}

#[test]
fn unknown_names_are_ignored() {
    let v = proj("", "shoeSize");
    assert_eq!(keys(&v), keys(&proj("", "")));
    let only_unknown = proj("shoeSize", "");
    assert_eq!(keys(&only_unknown), ["id", "schemas"]);
}

#[test]
fn groups_project_members_sub_attributes() {
    let g = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g1",
        "displayName": "Tour Guides",
        "members": [{"value": "u1", "display": "Babs", "type": "User"}]
    });
    let a = parse_attribute_list("members.value").unwrap();
    let v = project(ResourceType::Group, &g, &a, &[]);
    assert_eq!(
        v,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1", "members": [{"value": "u1"}]})
    );
    let e = parse_attribute_list("members").unwrap();
    let v = project(ResourceType::Group, &g, &[], &e);
    assert_eq!(keys(&v), ["displayName", "id", "schemas"]);
}
