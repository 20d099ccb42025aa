//! How SCIM attributes are stored in `projections.users` and `projections.groups`: the column maps
//! the pure filter translator of `cairn-scim` ([`cairn_scim::to_sql`], [`cairn_scim::sort_expression`])
//! is applied to. They name columns and tables, so they live with the tables; `cairn-scim` knows
//! only the shape of a map. The aliases are fixed: `u` for a user row, `g` for a group row (see
//! [`super`], which selects from those tables under those aliases).

use cairn_scim::{Column, FieldKind, JsonField, RelatedField, ResourceType, SchemaColumnMap};
use std::sync::LazyLock;

fn multi(column: &str) -> Column {
    Column::MultiJson {
        column: column.to_owned(),
        subs: JsonField::standard_multi(),
    }
}

/// SCIM User attributes over `projections.users u`.
pub(crate) static USER_COLUMNS: LazyLock<SchemaColumnMap> = LazyLock::new(|| {
    let text = |expr: &str| Column::text(expr, false);
    SchemaColumnMap::new(ResourceType::User)
        .with("id", Column::text("u.id::text", true))
        .with("externalId", Column::text("u.external_id", true))
        .with("userName", text("u.user_name"))
        .with("displayName", text("u.display_name"))
        .with("name.givenName", text("u.given_name"))
        .with("name.familyName", text("u.family_name"))
        .with("name.formatted", text("u.formatted_name"))
        .with("name.middleName", text("u.profile -> 'name' ->> 'middleName'"))
        .with("name.honorificPrefix", text("u.profile -> 'name' ->> 'honorificPrefix'"))
        .with("name.honorificSuffix", text("u.profile -> 'name' ->> 'honorificSuffix'"))
        .with("nickName", text("u.nick_name"))
        .with("profileUrl", text("u.profile ->> 'profileUrl'"))
        .with("title", text("u.title"))
        .with("userType", text("u.user_type"))
        .with("preferredLanguage", text("u.preferred_language"))
        .with("locale", text("u.locale"))
        .with("timezone", text("u.timezone"))
        .with("active", Column::Bool { expr: "(u.state = 'active')".into() })
        .with("emails", multi("u.profile -> 'emails'"))
        .with("phoneNumbers", multi("u.profile -> 'phoneNumbers'"))
        .with(
            "addresses",
            Column::MultiJson {
                column: "u.profile -> 'addresses'".into(),
                subs: ["formatted", "streetAddress", "locality", "region", "postalCode", "country", "type"]
                    .iter()
                    .map(|n| JsonField::text(n, false))
                    .chain([JsonField::of("primary", FieldKind::Bool)])
                    .collect(),
            },
        )
        .with("ims", multi("u.profile -> 'extra' -> 'ims'"))
        .with("photos", multi("u.profile -> 'extra' -> 'photos'"))
        .with("roles", multi("u.profile -> 'extra' -> 'roles'"))
        .with("entitlements", multi("u.profile -> 'extra' -> 'entitlements'"))
        .with(
            "groups",
            Column::Related {
                from: "projections.group_members gm JOIN projections.groups gg ON gg.instance_id = gm.instance_id AND gg.id = gm.group_id".into(),
                on: "gm.instance_id = u.instance_id AND gm.user_id = u.id".into(),
                subs: vec![
                    RelatedField { name: "value".into(), expr: "gm.group_id::text".into(), kind: FieldKind::Text, case_exact: true },
                    RelatedField { name: "display".into(), expr: "gg.display_name".into(), kind: FieldKind::Text, case_exact: false },
                ],
            },
        )
        .with("meta.created", Column::Timestamp { expr: "u.created_at".into() })
        .with("meta.lastModified", Column::Timestamp { expr: "u.changed_at".into() })
        .with("meta.version", Column::text("('W/\"' || u.sequence || '\"')", true))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", text("u.employee_number"))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter", text("u.cost_center"))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization", text("u.organization"))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division", text("u.division"))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", text("u.department"))
        .with("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", Column::text("u.manager_id", true))
});

/// SCIM Group attributes over `projections.groups g`.
pub(crate) static GROUP_COLUMNS: LazyLock<SchemaColumnMap> = LazyLock::new(|| {
    SchemaColumnMap::new(ResourceType::Group)
        .with("id", Column::text("g.id::text", true))
        .with("externalId", Column::text("g.external_id", true))
        .with("displayName", Column::text("g.display_name", false))
        .with(
            "members",
            Column::Related {
                from: "projections.group_members gm LEFT JOIN projections.users mu ON mu.instance_id = gm.instance_id AND mu.id = gm.user_id".into(),
                on: "gm.instance_id = g.instance_id AND gm.group_id = g.id".into(),
                subs: vec![
                    RelatedField { name: "value".into(), expr: "gm.user_id::text".into(), kind: FieldKind::Text, case_exact: true },
                    RelatedField { name: "display".into(), expr: "mu.display_name".into(), kind: FieldKind::Text, case_exact: false },
                    RelatedField { name: "type".into(), expr: "'User'".into(), kind: FieldKind::Text, case_exact: false },
                ],
            },
        )
        .with("meta.created", Column::Timestamp { expr: "g.created_at".into() })
        .with("meta.lastModified", Column::Timestamp { expr: "g.changed_at".into() })
        .with("meta.version", Column::text("('W/\"' || g.sequence || '\"')", true))
});
