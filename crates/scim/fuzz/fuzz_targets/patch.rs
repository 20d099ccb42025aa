//! Fuzzes the PATCH engine with arbitrary request bodies against a user and a group.
#![no_main]

use cairn_scim::{ResourceType, apply_patch, parse_patch_request};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(ops) = parse_patch_request(&body) else {
        return;
    };
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "u-1", "userName": "bjensen", "active": true,
        "emails": [{"value": "a@x.org", "type": "work", "primary": true}],
        "groups": [{"value": "g1"}]
    });
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g-1", "displayName": "G", "members": [{"value": "u1"}]
    });
    for (rt, resource) in [(ResourceType::User, user), (ResourceType::Group, group)] {
        match apply_patch(rt, &resource, &ops) {
            Ok(v) => {
                assert_eq!(v["id"], resource["id"], "PATCH changed a readOnly id");
                assert_eq!(v["groups"], resource["groups"], "PATCH changed readOnly groups");
            }
            Err(e) => assert_eq!(e.status, 400),
        }
    }
});
