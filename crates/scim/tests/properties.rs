//! Property tests: the filter printer and parser round-trip, no input makes the parsers or the
//! PATCH engine panic, and the SQL translation binds exactly the parameters it numbers.

use cairn_scim::sql::{Column, JsonField, SchemaColumnMap};
use cairn_scim::{
    AttrPath, CompValue, CompareOp, Filter, PatchPath, ResourceType, apply_patch, filter,
    parse_attribute_list, parse_patch_request, to_sql,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const URNS: &[&str] = &[
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:acme:params:custom:1.0:Thing",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}",
        Just("$ref".to_owned()),
        Just("not".to_owned()),
        Just("and".to_owned()),
        Just("pr".to_owned()),
    ]
}

fn attr_path(allow_sub: bool) -> impl Strategy<Value = AttrPath> {
    let sub = if allow_sub {
        proptest::option::of(name()).boxed()
    } else {
        Just(None).boxed()
    };
    (proptest::option::of(proptest::sample::select(URNS)), name(), sub).prop_map(|(urn, name, sub)| {
        AttrPath {
            urn: urn.map(str::to_owned),
            name,
            sub,
        }
    })
}

fn comp_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        Just(CompValue::Null),
        any::<bool>().prop_map(CompValue::Bool),
        any::<i64>().prop_map(|n| CompValue::Number(n.into())),
        any::<f64>()
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(CompValue::Number),
        any::<String>().prop_map(CompValue::String),
        "[a-z\"\\\\ ()\\[\\]]{0,12}".prop_map(CompValue::String),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> {
    proptest::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ])
}

fn leaf() -> impl Strategy<Value = Filter> {
    prop_oneof![
        (attr_path(true), op(), comp_value()).prop_map(|(attr, op, value)| Filter::Compare {
            attr,
            op,
            value
        }),
        attr_path(true).prop_map(Filter::Present),
    ]
}

fn logic(inner: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
    prop_oneof![
        inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
        (inner.clone(), inner.clone()).prop_map(|(l, r)| l.and(r)),
        (inner.clone(), inner).prop_map(|(l, r)| l.or(r)),
    ]
    .boxed()
}

/// Filters without value paths (what may appear inside brackets).
fn flat_filter() -> BoxedStrategy<Filter> {
    leaf().prop_recursive(4, 24, 2, logic).boxed()
}

fn any_filter() -> BoxedStrategy<Filter> {
    let base = prop_oneof![
        3 => leaf(),
        1 => (attr_path(false), flat_filter())
            .prop_map(|(attr, f)| Filter::ValuePath { attr, filter: Box::new(f) }),
    ];
    base.prop_recursive(4, 32, 2, logic).boxed()
}

fn filter_soup() -> impl Strategy<Value = String> {
    let tokens = proptest::sample::select(vec![
        "(", ")", "[", "]", " ", "not", "and", "or", "\"", "\\", "\"x\"", "emails", "eq", "pr", "gt", "1",
        "-", ".", ":", "urn:", "value", "true", "null", "é", "\u{0}", ".value",
    ]);
    proptest::collection::vec(tokens, 0..600).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printed_filters_parse_back_to_the_same_ast(f in any_filter()) {
        let printed = f.to_string();
        let parsed = Filter::parse(&printed);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&f), "printed: {}", printed);
    }

    #[test]
    fn printed_patch_paths_parse_back(attr in attr_path(false), vf in proptest::option::of(flat_filter()), sub in proptest::option::of("[a-z][a-zA-Z]{0,6}")) {
        // A URN path that is exactly a known schema would denote the schema itself.
        let path = PatchPath::Attr { sub_attr: vf.as_ref().and(sub), value_filter: vf, attr };
        let printed = path.to_string();
        prop_assert_eq!(PatchPath::parse(&printed).ok(), Some(path), "printed: {}", printed);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in any::<String>()) {
        if let Err(e) = Filter::parse(&s) {
            prop_assert_eq!(e.status, 400);
        }
        let _ = PatchPath::parse(&s);
        let _ = parse_attribute_list(&s);
    }

    #[test]
    fn parsers_never_panic_on_filter_like_soup(s in filter_soup()) {
        match Filter::parse(&s) {
            Ok(f) => prop_assert_eq!(Filter::parse(&f.to_string()).ok(), Some(f)),
            Err(e) => prop_assert_eq!(e.scim_type, Some(cairn_scim::ScimType::InvalidFilter)),
        }
        let _ = PatchPath::parse(&s);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(n in 0usize..6000, kind in 0u8..3) {
        let s = match kind {
            0 => format!("{}a pr{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{}a pr{}", "not(".repeat(n), ")".repeat(n)),
            _ => format!("{}a pr", "a[".repeat(n)),
        };
        let r = Filter::parse(&s);
        if n > cairn_scim::filter::MAX_FILTER_DEPTH {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn sql_translation_numbers_every_bound_parameter(f in any_filter(), start in 1usize..5) {
        let map = SchemaColumnMap::new(ResourceType::User)
            .with("userName", Column::text("u.user_name", false))
            .with("emails", Column::MultiJson { column: "u.emails".into(), subs: JsonField::standard_multi() });
        if let Ok(s) = to_sql(&f, &map, start) {
            let count = s.sql.matches('$').count();
            prop_assert_eq!(count, s.params.len());
            for i in 0..s.params.len() {
                let placeholder = format!("${}", start + i);
                prop_assert!(s.sql.contains(&placeholder), "{}", &s.sql);
            }
        }
    }

    #[test]
    fn evaluator_never_panics(f in any_filter()) {
        let user = json!({"userName": "a", "emails": [{"value": "x", "primary": true}], "name": {"givenName": "g"}});
        let _ = filter::matches(ResourceType::User, &f, &user);
    }
}

// --- PATCH ------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        proptest::sample::select(vec![
            "True",
            "False",
            "work",
            "x@y.org",
            "2011-05-13T04:42:34Z",
            "u1",
            ""
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "value",
        "type",
        "primary",
        "display",
        "givenName",
        "active",
        "userName",
        "id",
        "emails",
        "members",
        "name",
        "schemas",
        "$ref",
        "displayName",
        "manager",
        "employeeNumber",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "meta",
        "password",
        "bogus",
    ])
    .prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(
        0.85,
        proptest::sample::select(vec![
            "userName",
            "active",
            "name",
            "name.givenName",
            "emails",
            "emails.value",
            "emails.primary",
            "emails[type eq \"work\"]",
            "emails[type eq \"work\"].value",
            "emails[type eq \"work\" and primary eq true].primary",
            "emails[not (type eq \"work\")]",
            "members",
            "members[value eq \"u1\"]",
            "members[value eq \"u1\"].display",
            "members[value eq \"u1\"].value",
            "displayName",
            "id",
            "meta",
            "groups",
            "password",
            "addresses[type eq \"home\"].locality",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "bogus",
            "emails[",
            "",
            "name[givenName pr].familyName",
        ])
        .prop_map(str::to_owned),
    )
}

/// Values that fit some attribute, so that many generated operations succeed.
fn plausible_value() -> impl Strategy<Value = Value> {
    proptest::sample::select(vec![
        json!("True"),
        json!(false),
        json!("x@y.org"),
        json!({"value": "u3"}),
        json!([{"value": "u3"}, {"value": "u1", "display": "One"}]),
        json!({"givenName": "Z", "familyName": null}),
        json!([{"value": "n@x.org", "type": "work", "primary": true}]),
        json!({"value": "h@x.org", "type": "home", "primary": "True"}),
        json!({"active": false}),
        json!({"displayName": "New", "id": "g-1"}),
        json!({"id": "u-1", "userName": "renamed"}),
        json!({"employeeNumber": "7", "manager": "m1"}),
        json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D"}}),
    ])
}

fn operation() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            10 => proptest::sample::select(vec!["add", "Add", "replace", "Replace", "remove", "Remove"]),
            1 => Just("bogus"),
        ],
        path(),
        proptest::option::weighted(0.9, prop_oneof![3 => plausible_value(), 1 => json_value()]),
    )
        .prop_map(|(op, path, value)| {
            let mut o = serde_json::Map::new();
            o.insert("op".into(), Value::String(op.to_owned()));
            if let Some(p) = path {
                o.insert("path".into(), Value::String(p));
            }
            if let Some(v) = value {
                o.insert("value".into(), v);
            }
            Value::Object(o)
        })
}

fn fixtures() -> Vec<(ResourceType, Value)> {
    vec![
        (
            ResourceType::User,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "u-1", "userName": "bjensen", "active": true,
                "name": {"givenName": "B"},
                "emails": [{"value": "a@x.org", "type": "work", "primary": true}, {"value": "b@x.org", "type": "home"}],
                "groups": [{"value": "g1"}],
                "meta": {"resourceType": "User", "version": "W/\"1\""}
            }),
        ),
        (
            ResourceType::Group,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g-1", "displayName": "G",
                "members": [{"value": "u1", "type": "User"}, {"value": "u2"}],
                "meta": {"resourceType": "Group"}
            }),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Any op list either fails with a 400 SCIM error or yields an object whose read-only
    /// attributes are untouched and which has at most one primary email.
    #[test]
    fn patch_engine_never_panics_and_keeps_invariants(ops in proptest::collection::vec(operation(), 0..6)) {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        for (rt, resource) in fixtures() {
            let result = parse_patch_request(&body).and_then(|ops| apply_patch(rt, &resource, &ops));
            match result {
                Ok(v) => {
                    prop_assert!(v.is_object());
                    prop_assert_eq!(&v["id"], &resource["id"]);
                    prop_assert_eq!(&v["meta"], &resource["meta"]);
                    prop_assert_eq!(&v["groups"], &resource["groups"]);
                    prop_assert!(v["schemas"].is_array());
                    let primaries = v["emails"].as_array().map_or(0, |e| e.iter().filter(|x| x["primary"] == true).count());
                    prop_assert!(primaries <= 1, "{}", v);
                }
                Err(e) => {
                    prop_assert_eq!(e.status, 400);
                    prop_assert!(e.scim_type.is_some());
                }
            }
        }
    }
}
