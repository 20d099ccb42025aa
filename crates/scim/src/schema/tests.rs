use serde_json::Value;

use super::*;

#[test]
fn find_attribute_resolves_case_insensitive_and_urn_qualified_names() {
    let u = find_attribute(ResourceType::User, "USERNAME").unwrap();
    assert_eq!(u.attr.name, "userName");
    assert!(u.attr.required);
    let q = find_attribute(
        ResourceType::User,
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
    )
    .unwrap();
    assert_eq!(q, u);
    let g = find_attribute(ResourceType::User, "name.GIVENNAME").unwrap();
    assert_eq!((g.attr.name, g.sub.map(|s| s.name)), ("name", Some("givenName")));
    let m = find_attribute(
        ResourceType::User,
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    )
    .unwrap();
    assert_eq!(m.extension, Some(ENTERPRISE_USER_SCHEMA));
    assert_eq!(m.leaf().name, "value");
    assert_eq!(
        m.canonical_path().to_string(),
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"
    );
    let e = find_attribute(ResourceType::User, "emails.value").unwrap();
    assert!(e.attr.multi_valued);
    assert_eq!(
        find_attribute(ResourceType::User, "id").unwrap().attr.returned,
        Returned::Always
    );
    assert_eq!(
        find_attribute(ResourceType::Group, "externalId")
            .unwrap()
            .attr
            .name,
        "externalId"
    );
}

#[test]
fn find_attribute_rejects_unknown_names_and_wrong_resource_types() {
    assert!(find_attribute(ResourceType::User, "nope").is_none());
    assert!(find_attribute(ResourceType::User, "name.nope").is_none());
    assert!(find_attribute(ResourceType::Group, "userName").is_none());
    assert!(
        find_attribute(
            ResourceType::Group,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"
        )
        .is_none()
    );
    assert!(
        find_attribute(
            ResourceType::User,
            "urn:ietf:params:scim:schemas:core:2.0:Group:displayName"
        )
        .is_none()
    );
    assert!(find_attribute(ResourceType::User, "bad path").is_none());
}

#[test]
fn user_schema_has_every_rfc7643_attribute_with_the_right_characteristics() {
    let names: Vec<&str> = USER_ATTRIBUTES.iter().map(|a| a.name).collect();
    for n in [
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "password",
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
    ] {
        assert!(names.contains(&n), "missing {n}");
    }
    let pw = find_attribute(ResourceType::User, "password").unwrap().attr;
    assert_eq!(
        (pw.mutability, pw.returned),
        (Mutability::WriteOnly, Returned::Never)
    );
    let groups = find_attribute(ResourceType::User, "groups").unwrap().attr;
    assert_eq!(groups.mutability, Mutability::ReadOnly);
    let active = find_attribute(ResourceType::User, "active").unwrap().attr;
    assert_eq!(active.ty, AttrType::Boolean);
    let name_subs: Vec<&str> = find_attribute(ResourceType::User, "name")
        .unwrap()
        .attr
        .sub_attributes
        .iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(
        name_subs,
        [
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix"
        ]
    );
    let x509 = find_attribute(ResourceType::User, "x509Certificates.value").unwrap();
    assert_eq!(x509.leaf().ty, AttrType::Binary);
    let primary = find_attribute(ResourceType::User, "phoneNumbers.primary").unwrap();
    assert_eq!(primary.leaf().ty, AttrType::Boolean);
    let members_value = find_attribute(ResourceType::Group, "members.value").unwrap();
    assert_eq!(members_value.leaf().mutability, Mutability::Immutable);
    assert!(find_attribute(ResourceType::Group, "members.$ref").is_some());
    let ent: Vec<&str> = ENTERPRISE_USER_ATTRIBUTES.iter().map(|a| a.name).collect();
    assert_eq!(
        ent,
        [
            "employeeNumber",
            "costCenter",
            "organization",
            "division",
            "department",
            "manager"
        ]
    );
}

#[test]
fn schemas_endpoint_lists_full_attribute_definitions() {
    let v = schemas_json("https://h/scim/v2");
    assert_eq!(v["totalResults"], 3);
    let res = v["Resources"].as_array().unwrap();
    let user = res.iter().find(|s| s["id"] == USER_SCHEMA).unwrap();
    let user_name = user["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "userName")
        .unwrap();
    assert_eq!(user_name["type"], "string");
    assert_eq!(user_name["multiValued"], false);
    assert_eq!(user_name["required"], true);
    assert_eq!(user_name["caseExact"], false);
    assert_eq!(user_name["mutability"], "readWrite");
    assert_eq!(user_name["returned"], "default");
    assert_eq!(user_name["uniqueness"], "server");
    let emails = user["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "emails")
        .unwrap();
    assert_eq!(emails["multiValued"], true);
    let ty = emails["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "type")
        .unwrap();
    assert_eq!(
        ty["canonicalValues"],
        serde_json::json!(["work", "home", "other"])
    );
    assert_eq!(
        user["meta"]["location"],
        format!("https://h/scim/v2/Schemas/{USER_SCHEMA}")
    );
    let one = schema_json(&GROUP_SCHEMA.to_uppercase(), "https://h/scim/v2").unwrap();
    assert_eq!(one["id"], GROUP_SCHEMA);
    assert!(schema_json("urn:nope", "x").is_none());
}

#[test]
fn resource_types_name_schema_and_extensions() {
    let v = resource_types_json("https://h/scim/v2");
    assert_eq!(v["totalResults"], 2);
    let user = &v["Resources"][0];
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], USER_SCHEMA);
    assert_eq!(user["schemaExtensions"][0]["schema"], ENTERPRISE_USER_SCHEMA);
    assert_eq!(user["schemaExtensions"][0]["required"], false);
    let group = resource_type_json(ResourceType::Group, "https://h/scim/v2");
    assert_eq!(group["endpoint"], "/Groups");
    assert!(group.get("schemaExtensions").is_none());
}

#[test]
fn service_provider_config_reports_the_given_features() {
    let spc = ServiceProviderConfig {
        documentation_uri: None,
        patch: true,
        bulk: BulkConfig {
            supported: true,
            max_operations: 1000,
            max_payload_size: 1_048_576,
        },
        filter: FilterConfig {
            supported: true,
            max_results: 200,
        },
        change_password: false,
        sort: true,
        etag: true,
        authentication_schemes: vec![AuthenticationScheme::oauth_bearer_token()],
    };
    let v = spc.to_json("https://h/scim/v2");
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
    );
    assert_eq!(v["patch"]["supported"], true);
    assert_eq!(v["bulk"]["maxOperations"], 1000);
    assert_eq!(v["bulk"]["maxPayloadSize"], 1_048_576);
    assert_eq!(v["filter"]["maxResults"], 200);
    assert_eq!(v["changePassword"]["supported"], false);
    assert_eq!(v["sort"]["supported"], true);
    assert_eq!(v["etag"]["supported"], true);
    assert_eq!(v["authenticationSchemes"][0]["type"], "oauthbearertoken");
    assert_eq!(v["meta"]["location"], "https://h/scim/v2/ServiceProviderConfig");
    assert_eq!(v.get("documentationUri"), None::<&Value>);
}
