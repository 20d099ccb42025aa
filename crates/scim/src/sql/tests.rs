use chrono::TimeZone;

use super::*;
use crate::error::ScimType;
use crate::schema::ResourceType;

fn users() -> SchemaColumnMap {
    SchemaColumnMap::new(ResourceType::User)
        .with("id", Column::text("u.id::text", true))
        .with("userName", Column::text("u.user_name", false))
        .with("externalId", Column::text("u.external_id", true))
        .with("name.familyName", Column::text("u.family_name", false))
        .with("title", Column::text("u.title", false))
        .with(
            "active",
            Column::Bool {
                expr: "u.active".into(),
            },
        )
        .with(
            "meta.lastModified",
            Column::Timestamp {
                expr: "u.updated_at".into(),
            },
        )
        .with(
            "loginCount",
            Column::Number {
                expr: "u.login_count".into(),
            },
        )
        .with(
            "emails",
            Column::MultiJson {
                column: "u.emails".into(),
                subs: JsonField::standard_multi(),
            },
        )
        .with(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            Column::text("u.employee_number", true),
        )
}

fn sql(filter: &str) -> SqlFilter {
    let f = Filter::parse(filter).unwrap();
    to_sql(&f, &users(), 1).unwrap_or_else(|e| panic!("{filter}: {e}"))
}

fn text(s: &str) -> SqlParam {
    SqlParam::Text(s.into())
}

fn err(filter: &str) -> ScimError {
    let f = Filter::parse(filter).unwrap();
    to_sql(&f, &users(), 1).expect_err(filter)
}

#[test]
fn case_insensitive_equality_uses_lower_on_both_sides() {
    let s = sql(r#"userName eq "BJensen""#);
    assert_eq!(s.sql, "lower(u.user_name) = lower($1)");
    assert_eq!(s.params, vec![text("BJensen")]);
}

#[test]
fn case_exact_equality_compares_directly() {
    let s = sql(r#"externalId eq "AbC""#);
    assert_eq!(s.sql, "u.external_id = $1");
    assert_eq!(s.params, vec![text("AbC")]);
}

#[test]
fn attribute_names_are_case_insensitive_and_may_be_urn_qualified() {
    assert_eq!(sql(r#"USERNAME eq "x""#).sql, "lower(u.user_name) = lower($1)");
    assert_eq!(
        sql(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#).sql,
        "lower(u.user_name) = lower($1)"
    );
    assert_eq!(
        sql(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#).sql,
        "u.employee_number = $1"
    );
}

#[test]
fn substring_operators_use_escaped_like_patterns() {
    let s = sql(r#"userName co "50%_off\\""#);
    assert_eq!(s.sql, "lower(u.user_name) LIKE lower($1) ESCAPE '\\'");
    assert_eq!(s.params, vec![text("%50\\%\\_off\\\\%")]);
    assert_eq!(sql(r#"userName sw "J""#).params, vec![text("J%")]);
    assert_eq!(
        sql(r#"externalId ew "z""#).sql,
        "u.external_id LIKE $1 ESCAPE '\\'"
    );
    assert_eq!(sql(r#"externalId ew "z""#).params, vec![text("%z")]);
}

#[test]
fn ne_is_null_safe() {
    let s = sql(r#"title ne "Boss""#);
    assert_eq!(s.sql, "(u.title IS NULL OR lower(u.title) <> lower($1))");
}

#[test]
fn presence_checks_for_non_empty_values() {
    assert_eq!(sql("title pr").sql, "(u.title IS NOT NULL AND u.title <> '')");
    assert_eq!(sql("active pr").sql, "u.active IS NOT NULL");
    assert_eq!(
        sql("emails pr").sql,
        "EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE (e->>'value' IS NOT NULL AND e->>'value' <> ''))"
    );
    assert!(sql("title pr").params.is_empty());
}

#[test]
fn null_comparisons_become_is_null() {
    assert_eq!(sql("title eq null").sql, "u.title IS NULL");
    assert_eq!(sql("title ne null").sql, "u.title IS NOT NULL");
    assert_eq!(err("title gt null").scim_type, Some(ScimType::InvalidFilter));
}

#[test]
fn booleans_timestamps_and_numbers_bind_typed_parameters() {
    let b = sql("active eq true");
    assert_eq!(
        (b.sql.as_str(), b.params),
        ("u.active = $1", vec![SqlParam::Bool(true)])
    );
    let t = sql(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#);
    assert_eq!(t.sql, "u.updated_at > $1");
    assert_eq!(
        t.params,
        vec![SqlParam::Timestamp(
            Utc.with_ymd_and_hms(2011, 5, 13, 4, 42, 34).unwrap()
        )]
    );
    let n = sql("loginCount ge 3");
    assert_eq!(
        (n.sql.as_str(), n.params),
        ("u.login_count >= $1", vec![SqlParam::Number(3.0)])
    );
}

#[test]
fn comparisons_a_type_cannot_do_are_invalid_filter() {
    for f in [
        "active gt true",
        r#"active co "t""#,
        r#"meta.lastModified gt "yesterday""#,
        r#"meta.lastModified co "2011""#,
        r#"loginCount eq "three""#,
        "userName eq 5",
        "userName eq true",
    ] {
        let e = err(f);
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{f}");
    }
}

#[test]
fn unknown_attributes_are_invalid_filter_naming_the_attribute() {
    let e = err(r#"nickName eq "x""#);
    assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
    assert!(e.detail.contains("nickName"), "{}", e.detail);
    assert!(err(r#"emails.nope eq "x""#).detail.contains("emails.nope"));
    assert!(err(r#"emails[nope eq "x"]"#).detail.contains("nope"));
}

#[test]
fn logical_operators_nest_with_parentheses_and_number_placeholders_in_order() {
    let s = sql(r#"userName eq "a" and (title eq "b" or not (externalId eq "c"))"#);
    assert_eq!(
        s.sql,
        "(lower(u.user_name) = lower($1) AND (lower(u.title) = lower($2) OR NOT COALESCE(u.external_id = $3, false)))"
    );
    assert_eq!(s.params, vec![text("a"), text("b"), text("c")]);
}

#[test]
fn placeholders_start_at_the_given_index() {
    let f = Filter::parse(r#"userName eq "a" or title eq "b""#).unwrap();
    let s = to_sql(&f, &users(), 4).unwrap();
    assert_eq!(
        s.sql,
        "(lower(u.user_name) = lower($4) OR lower(u.title) = lower($5))"
    );
}

#[test]
fn value_paths_become_exists_over_the_jsonb_array() {
    let s = sql(r#"emails[value eq "A@x.org" and primary eq true]"#);
    assert_eq!(
        s.sql,
        "EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE (lower(e->>'value') = lower($1) AND (e->>'primary')::boolean = $2))"
    );
    assert_eq!(s.params, vec![text("A@x.org"), SqlParam::Bool(true)]);
}

#[test]
fn multi_valued_attribute_without_sub_means_value() {
    let s = sql(r#"emails co "example.com""#);
    assert_eq!(
        s.sql,
        "EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE lower(e->>'value') LIKE lower($1) ESCAPE '\\')"
    );
    assert_eq!(s.params, vec![text("%example.com%")]);
    let t = sql(r#"emails.type eq "work""#);
    assert_eq!(
        t.sql,
        "EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE lower(e->>'type') = lower($1))"
    );
}

#[test]
fn ne_on_a_multi_valued_attribute_means_no_element_equals() {
    let s = sql(r#"emails ne "a@x.org""#);
    assert_eq!(
        s.sql,
        "NOT EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE lower(e->>'value') = lower($1))"
    );
}

#[test]
fn value_path_on_single_valued_complex_attribute_is_rewritten() {
    let s = sql(r#"name[familyName eq "Jensen"]"#);
    assert_eq!(s.sql, "lower(u.family_name) = lower($1)");
}

#[test]
fn values_never_appear_in_sql_text() {
    let evil = "x'); DROP TABLE users; --";
    let f = Filter::compare(
        AttrPath::new("userName"),
        CompareOp::Eq,
        CompValue::String(evil.into()),
    )
    .or(Filter::ValuePath {
        attr: AttrPath::new("emails"),
        filter: Box::new(Filter::compare(
            AttrPath::new("type"),
            CompareOp::Co,
            CompValue::String(evil.into()),
        )),
    });
    let s = to_sql(&f, &users(), 1).unwrap();
    assert!(!s.sql.contains("DROP"), "{}", s.sql);
    assert_eq!(s.params.len(), 2);
}

#[test]
fn sort_expressions_fold_case_and_pick_the_primary_element() {
    let m = users();
    assert_eq!(
        sort_expression(&m, &AttrPath::new("userName")).as_deref(),
        Some("lower(u.user_name)")
    );
    assert_eq!(
        sort_expression(&m, &AttrPath::new("externalId")).as_deref(),
        Some("u.external_id")
    );
    assert_eq!(
        sort_expression(&m, &AttrPath::new("meta").without_sub()).as_deref(),
        None
    );
    assert_eq!(
        sort_expression(&m, &AttrPath::with_sub("meta", "lastModified")).as_deref(),
        Some("u.updated_at")
    );
    assert_eq!(
        sort_expression(&m, &AttrPath::new("emails")).as_deref(),
        Some(
            "(SELECT lower(e->>'value') FROM jsonb_array_elements(u.emails) WITH ORDINALITY AS t(e, i) ORDER BY COALESCE((e->>'primary')::boolean, false) DESC, i LIMIT 1)"
        )
    );
    assert_eq!(sort_expression(&m, &AttrPath::new("nickName")), None);
}

#[test]
fn like_escape_escapes_wildcards_and_backslash() {
    assert_eq!(like_escape(r"a%b_c\d"), r"a\%b\_c\\d");
    assert_eq!(like_escape("plain"), "plain");
}

fn groups() -> SchemaColumnMap {
    SchemaColumnMap::new(ResourceType::Group)
        .with("displayName", Column::text("g.display_name", false))
        .with(
            "members",
            Column::Related {
                from: "projections.group_members m".into(),
                on: "m.instance_id = g.instance_id AND m.group_id = g.id".into(),
                subs: vec![RelatedField {
                    name: "value".into(),
                    expr: "m.user_id::text".into(),
                    kind: FieldKind::Text,
                    case_exact: true,
                }],
            },
        )
}

#[test]
fn related_rows_become_correlated_exists() {
    let f = Filter::parse(r#"members[value eq "u1"] and displayName sw "Tour""#).unwrap();
    let s = to_sql(&f, &groups(), 2).unwrap();
    assert_eq!(
        s.sql,
        "(EXISTS (SELECT 1 FROM projections.group_members m WHERE m.instance_id = g.instance_id AND m.group_id = g.id AND (m.user_id::text = $2)) AND lower(g.display_name) LIKE lower($3) ESCAPE '\\')"
    );
    assert_eq!(s.params, vec![text("u1"), text("Tour%")]);
    let plain = to_sql(&Filter::parse(r#"members.value eq "u1""#).unwrap(), &groups(), 1).unwrap();
    assert_eq!(
        plain.sql,
        "EXISTS (SELECT 1 FROM projections.group_members m WHERE m.instance_id = g.instance_id AND m.group_id = g.id AND (m.user_id::text = $1))"
    );
    let none = to_sql(&Filter::parse(r#"members ne "u1""#).unwrap(), &groups(), 1).unwrap();
    assert!(
        none.sql
            .starts_with("NOT EXISTS (SELECT 1 FROM projections.group_members m"),
        "{}",
        none.sql
    );
    assert_eq!(
        sort_expression(&groups(), &AttrPath::new("members")).as_deref(),
        Some(
            "(SELECT min(m.user_id::text) FROM projections.group_members m WHERE m.instance_id = g.instance_id AND m.group_id = g.id)"
        )
    );
}

#[test]
fn value_path_filters_resolve_only_declared_fields() {
    let e = to_sql(
        &Filter::parse(r#"members[display eq "x"]"#).unwrap(),
        &groups(),
        1,
    )
    .unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
    assert!(e.detail.contains("display"));
    let e = err(r#"nickName[value eq "x"]"#);
    assert!(e.detail.contains("nickName.value"), "{}", e.detail);
}

#[test]
fn not_inside_value_paths_is_null_safe() {
    let s = sql(r#"emails[not (type eq "work")]"#);
    assert_eq!(
        s.sql,
        "EXISTS (SELECT 1 FROM jsonb_array_elements(u.emails) e WHERE NOT COALESCE(lower(e->>'type') = lower($1), false))"
    );
}
