use serde_json::json;

use super::*;
use crate::error::ScimType;
use crate::schema::ResourceType;

fn p(s: &str) -> Filter {
    match Filter::parse(s) {
        Ok(f) => f,
        Err(e) => panic!("{s:?} failed to parse: {e}"),
    }
}

fn attr(s: &str) -> AttrPath {
    AttrPath::parse(s).unwrap()
}

fn s(v: &str) -> CompValue {
    CompValue::String(v.into())
}

fn cmp(a: &str, op: CompareOp, v: CompValue) -> Filter {
    Filter::compare(attr(a), op, v)
}

fn assert_invalid_filter(input: &str) {
    let err = Filter::parse(input).expect_err(input);
    assert_eq!(err.status, 400, "{input}");
    assert_eq!(err.scim_type, Some(ScimType::InvalidFilter), "{input}: {err}");
}

/// Every example filter of RFC 7644 §3.4.2.2 parses and round-trips through the printer.
#[test]
fn rfc7644_examples_parse_and_round_trip() {
    let examples = [
        r#"userName eq "bjensen""#,
        r#"name.familyName co "O'Malley""#,
        r#"userName sw "J""#,
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        "title pr",
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
        r#"title pr and userType eq "Employee""#,
        r#"title pr or userType eq "Intern""#,
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType eq "Employee" and (emails.type eq "work")"#,
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
    ];
    for e in examples {
        let f = p(e);
        let printed = f.to_string();
        assert_eq!(p(&printed), f, "{e} -> {printed}");
    }
}

#[test]
fn simple_comparison_builds_the_expected_ast() {
    assert_eq!(
        p(r#"userName eq "bjensen""#),
        cmp("userName", CompareOp::Eq, s("bjensen"))
    );
    assert_eq!(p("title pr"), Filter::Present(attr("title")));
    assert_eq!(
        p("name.familyName co \"O'Malley\""),
        Filter::compare(
            AttrPath::with_sub("name", "familyName"),
            CompareOp::Co,
            s("O'Malley")
        )
    );
}

#[test]
fn operators_and_keywords_are_case_insensitive() {
    let f = p(r#"userName EQ "a" AND NOT (title Pr) OR active Eq TRUE"#);
    let expected = cmp("userName", CompareOp::Eq, s("a"))
        .and(Filter::Not(Box::new(Filter::Present(attr("title")))))
        .or(cmp("active", CompareOp::Eq, CompValue::Bool(true)));
    assert_eq!(f, expected);
    for (kw, op) in [
        ("eq", CompareOp::Eq),
        ("NE", CompareOp::Ne),
        ("Co", CompareOp::Co),
        ("sW", CompareOp::Sw),
        ("ew", CompareOp::Ew),
        ("gt", CompareOp::Gt),
        ("GE", CompareOp::Ge),
        ("lt", CompareOp::Lt),
        ("Le", CompareOp::Le),
    ] {
        assert_eq!(p(&format!("x {kw} 1")), cmp("x", op, CompValue::Number(1.into())));
    }
}

#[test]
fn and_binds_tighter_than_or() {
    let f = p("a pr or b pr and c pr");
    let expected = Filter::Present(attr("a")).or(Filter::Present(attr("b")).and(Filter::Present(attr("c"))));
    assert_eq!(f, expected);
    let g = p("a pr and b pr or c pr");
    let expected = Filter::Present(attr("a"))
        .and(Filter::Present(attr("b")))
        .or(Filter::Present(attr("c")));
    assert_eq!(g, expected);
}

#[test]
fn not_binds_tighter_than_and() {
    let f = p("not (a pr) and b pr");
    assert_eq!(
        f,
        Filter::Not(Box::new(Filter::Present(attr("a")))).and(Filter::Present(attr("b")))
    );
}

#[test]
fn parentheses_override_precedence_and_print_minimally() {
    let f = p("(a pr or b pr) and c pr");
    assert_eq!(
        f,
        Filter::Present(attr("a"))
            .or(Filter::Present(attr("b")))
            .and(Filter::Present(attr("c")))
    );
    assert_eq!(f.to_string(), "(a pr or b pr) and c pr");
    assert_eq!(p("((a pr))").to_string(), "a pr");
    // Right-nested same-precedence operands keep their parentheses.
    let right = Filter::Present(attr("a")).and(Filter::Present(attr("b")).and(Filter::Present(attr("c"))));
    assert_eq!(right.to_string(), "a pr and (b pr and c pr)");
    assert_eq!(p(&right.to_string()), right);
}

#[test]
fn binary_operators_are_left_associative() {
    assert_eq!(
        p("a pr or b pr or c pr"),
        Filter::Present(attr("a"))
            .or(Filter::Present(attr("b")))
            .or(Filter::Present(attr("c")))
    );
}

#[test]
fn value_paths_parse_with_inner_logic() {
    let f = p(r#"emails[type eq "work" and primary eq true]"#);
    assert_eq!(
        f,
        Filter::ValuePath {
            attr: attr("emails"),
            filter: Box::new(cmp("type", CompareOp::Eq, s("work")).and(cmp(
                "primary",
                CompareOp::Eq,
                CompValue::Bool(true)
            ))),
        }
    );
    assert_eq!(f.to_string(), r#"emails[type eq "work" and primary eq true]"#);
}

#[test]
fn value_path_rules_are_enforced() {
    assert_invalid_filter(r#"emails[type eq "work"].value eq "x""#);
    assert_invalid_filter(r#"emails[type[value eq "x"] pr]"#);
    assert_invalid_filter(r#"name.givenName[value eq "x"]"#);
    assert_invalid_filter(r#"emails[type eq "work""#);
}

#[test]
fn urn_qualified_paths_split_at_the_last_colon() {
    let a = attr("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
    assert_eq!(
        a.urn.as_deref(),
        Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
    );
    assert_eq!(a.name, "manager");
    assert_eq!(a.sub.as_deref(), Some("value"));
    let f = p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#);
    let printed = f.to_string();
    assert_eq!(p(&printed), f);
    assert!(AttrPath::parse("urn:x").is_err());
    assert!(AttrPath::parse("1abc").is_err());
    assert!(AttrPath::parse("a.b.c").is_err());
    assert_eq!(attr("members.$ref").sub.as_deref(), Some("$ref"));
}

#[test]
fn values_cover_json_literals_and_escapes() {
    assert_eq!(p("x eq null"), cmp("x", CompareOp::Eq, CompValue::Null));
    assert_eq!(p("x eq false"), cmp("x", CompareOp::Eq, CompValue::Bool(false)));
    assert_eq!(
        p("x gt -1.5e3"),
        cmp(
            "x",
            CompareOp::Gt,
            CompValue::Number(serde_json::Number::from_f64(-1500.0).unwrap())
        )
    );
    assert_eq!(
        p("x eq 42"),
        cmp("x", CompareOp::Eq, CompValue::Number(42.into()))
    );
    assert_eq!(
        p(r#"x eq "a \"quoted\" \\ back\nslash \u00e9""#),
        cmp("x", CompareOp::Eq, s("a \"quoted\" \\ back\nslash é"))
    );
    let tricky = cmp("x", CompareOp::Eq, s("par(en) [br] and or \" \\ \t"));
    assert_eq!(p(&tricky.to_string()), tricky);
}

#[test]
fn malformed_filters_are_invalid_filter() {
    for bad in [
        "",
        "   ",
        "userName",
        "userName eq",
        "userName eq bjensen",
        r#"userName xx "a""#,
        r#"userName eq "unterminated"#,
        r#"userName eq "bad \q escape""#,
        r#"(userName eq "a""#,
        r#"userName eq "a")"#,
        r#"userName eq "a" and"#,
        r#"userName eq "a" userName eq "b""#,
        "not userName pr",
        "x eq 01",
        "x eq 1e999",
        "x eq -",
        "and pr pr",
        "[a pr]",
        "a..b pr",
        r#"emails[] pr"#,
    ] {
        assert_invalid_filter(bad);
    }
}

#[test]
fn keywords_can_be_attribute_names_where_unambiguous() {
    assert_eq!(
        p("not eq 1"),
        cmp("not", CompareOp::Eq, CompValue::Number(1.into()))
    );
    assert_eq!(p("and pr"), Filter::Present(attr("and")));
}

#[test]
fn length_bound_is_enforced() {
    let long = format!(r#"userName eq "{}""#, "a".repeat(MAX_FILTER_LEN));
    assert_invalid_filter(&long);
    let ok = format!(r#"userName eq "{}""#, "a".repeat(MAX_FILTER_LEN - 20));
    assert!(Filter::parse(&ok).is_ok());
}

#[test]
fn depth_bound_is_enforced_without_overflow() {
    let nest = |n: usize| format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
    assert!(Filter::parse(&nest(MAX_FILTER_DEPTH)).is_ok());
    assert_invalid_filter(&nest(MAX_FILTER_DEPTH + 1));
    let nots = |n: usize| format!("{}a pr{}", "not (".repeat(n), ")".repeat(n));
    assert!(Filter::parse(&nots(MAX_FILTER_DEPTH)).is_ok());
    assert_invalid_filter(&nots(MAX_FILTER_DEPTH + 1));
    // Far beyond the bound, and unbalanced: still a clean error.
    assert_invalid_filter(&"(".repeat(4000));
    assert_invalid_filter(&"not (".repeat(800));
}

#[test]
fn long_flat_chains_parse() {
    let chain = vec!["a pr"; 400].join(" and ");
    let f = p(&chain);
    assert_eq!(p(&f.to_string()), f);
}

#[test]
fn patch_paths_parse_every_rfc_form() {
    assert_eq!(
        PatchPath::parse("members").unwrap(),
        PatchPath::Attr {
            attr: attr("members"),
            value_filter: None,
            sub_attr: None
        }
    );
    assert_eq!(
        PatchPath::parse("name.givenName").unwrap(),
        PatchPath::Attr {
            attr: AttrPath::with_sub("name", "givenName"),
            value_filter: None,
            sub_attr: None
        }
    );
    assert_eq!(
        PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap(),
        PatchPath::Attr {
            attr: attr("emails"),
            value_filter: Some(cmp("type", CompareOp::Eq, s("work"))),
            sub_attr: Some("value".into()),
        }
    );
    assert_eq!(
        PatchPath::parse(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#).unwrap(),
        PatchPath::Attr {
            attr: attr("members"),
            value_filter: Some(cmp(
                "value",
                CompareOp::Eq,
                s("2819c223-7f76-453a-919d-413861904646")
            )),
            sub_attr: None,
        }
    );
    assert_eq!(
        PatchPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").unwrap(),
        PatchPath::Schema("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".into())
    );
    let m = PatchPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager").unwrap();
    let PatchPath::Attr { attr: a, .. } = &m else {
        panic!("{m:?}")
    };
    assert_eq!(a.name, "manager");
    let g = PatchPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName").unwrap();
    let PatchPath::Attr { attr: a, .. } = &g else {
        panic!("{g:?}")
    };
    assert_eq!((a.name.as_str(), a.sub.as_deref()), ("name", Some("givenName")));
    for text in ["members", r#"emails[type eq "work"].value"#, "name.givenName"] {
        assert_eq!(PatchPath::parse(text).unwrap().to_string(), text);
    }
}

#[test]
fn malformed_patch_paths_are_invalid_path() {
    for bad in [
        "emails[type eq \"work\"",
        "emails[type eq \"work\"]value",
        "emails[type eq \"work\"].",
        "emails[type eq \"work\"].value.x",
        "name.givenName[x pr]",
        "a b",
        "1abc",
        "emails[type eq]",
    ] {
        let e = PatchPath::parse(bad).expect_err(bad);
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{bad}: {e}");
    }
}

#[test]
fn attribute_lists_parse_names_subs_and_urns() {
    let list = parse_attribute_list(
        "userName, name.givenName,,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    )
    .unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0], AttrSelector::Attr(attr("userName")));
    assert_eq!(
        list[1],
        AttrSelector::Attr(AttrPath::with_sub("name", "givenName"))
    );
    assert_eq!(
        list[2],
        AttrSelector::Schema("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".into())
    );
    assert!(matches!(&list[3], AttrSelector::Attr(a) if a.name == "manager"));
    assert_eq!(
        parse_attribute_list("user name").unwrap_err().scim_type,
        Some(ScimType::InvalidValue)
    );
}

fn user() -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "2819c223",
        "userName": "BJensen",
        "name": {"familyName": "Jensen", "givenName": "Barbara"},
        "title": "Tour Guide",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "meta": {"lastModified": "2011-05-13T04:42:34Z"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984"}
    })
}

#[test]
fn evaluator_honours_case_exactness_and_multi_values() {
    let u = user();
    let yes = |f: &str| assert!(matches(ResourceType::User, &p(f), &u), "{f} should match");
    let no = |f: &str| assert!(!matches(ResourceType::User, &p(f), &u), "{f} should not match");
    yes(r#"userName eq "bjensen""#); // userName is caseExact=false
    yes(r#"USERNAME EQ "BJENSEN""#);
    no(r#"id eq "2819C223""#); // id is caseExact
    yes(r#"id eq "2819c223""#);
    yes(r#"name.familyName co "ens""#);
    yes(r#"emails co "jensen.org""#);
    yes(r#"emails[type eq "work" and primary eq true]"#);
    no(r#"emails[type eq "home" and primary eq true]"#);
    yes(r#"emails.type eq "home""#);
    yes(r#"meta.lastModified gt "2011-01-01T00:00:00Z""#);
    no(r#"meta.lastModified gt "2011-05-13T04:42:34+00:00""#);
    yes("active eq true");
    no("active eq false");
    yes("title pr and not (nickName pr)");
    yes(r#"nickName eq null"#);
    yes(r#"nickName ne "x""#);
    no(r#"emails ne "babs@jensen.org""#);
    yes(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#);
    yes(r#"userName sw "bj" and userName ew "sen""#);
    no(r#"unknownAttr eq "x""#);
}
