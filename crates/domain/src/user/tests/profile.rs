use super::*;
use serde_json::json;

#[test]
fn change_profile_emits_only_changed_fields() {
    let mut h = alice();
    let same = ProfileChange {
        display_name: Some(Some(DisplayName::parse("Alice Smith").unwrap())),
        emails: Some(vec![email("alice@example.com", false, false)]),
        ..Default::default()
    };
    assert!(
        h.state.change_profile(same).unwrap().is_empty(),
        "normalised to the current profile: nothing to push"
    );
    assert!(
        h.state
            .change_profile(ProfileChange::default())
            .unwrap()
            .is_empty()
    );

    let d = h.run(|u| {
        u.change_profile(ProfileChange {
            display_name: Some(None),
            title: Some(Some("Engineer".into())),
            preferred_language: Some(Some(LanguageTag::parse("de-CH").unwrap())),
            enterprise: Some(Some(Enterprise {
                department: Some("R&D".into()),
                manager: Some(Manager {
                    value: Some("42".into()),
                    display_name: None,
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
    });
    assert_eq!(d.event_types(), ["user.human.profile.changed"]);
    assert_eq!(
        d.events[0].1,
        json!({
            "displayName": null,
            "title": "Engineer",
            "preferredLanguage": "de-CH",
            "enterprise": {"department": "R&D", "manager": {"value": "42"}},
        })
    );
    let p = h.state.human().unwrap();
    assert_eq!(p.display_name, None);
    assert_eq!(p.title.as_deref(), Some("Engineer"));
    assert_eq!(p.name.given_name.as_deref(), Some("Alice"), "untouched");
    h.assert_rebuild_matches();
}

#[test]
fn change_profile_validates_the_result() {
    let h = alice();
    let err = h
        .state
        .change_profile(ProfileChange {
            nick_name: Some(Some("\u{1b}[31m".into())),
            emails: Some(vec![
                email("a@example.com", false, false),
                email("a@example.com", false, false),
            ]),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(fields(err), ["nick_name", "emails[1].value"]);
}

#[test]
fn emails_keep_their_verification_when_repeated() {
    let mut h = alice();
    h.run(|u| u.set_email(EmailAddress::parse("alice@example.com").unwrap(), true));
    assert!(h.state.email_verified());
    // A SCIM PUT that repeats the address without `verified` keeps it verified, and the new
    // second address starts unverified.
    let d = h.run(|u| {
        u.change_profile(ProfileChange {
            emails: Some(vec![
                email("ALICE@example.com", true, false),
                email("alice@home.example", false, false),
            ]),
            ..Default::default()
        })
    });
    let emails = &h.state.human().unwrap().emails;
    assert!(emails[0].verified && emails[0].primary);
    assert!(!emails[1].verified && !emails[1].primary);
    assert_eq!(d.events[0].1["emails"][0]["verified"], json!(true));
    h.assert_rebuild_matches();
}

#[test]
fn replace_profile_changes_name_profile_password_and_activity_at_once() {
    let mut h = alice();
    let mut extra = serde_json::Map::new();
    extra.insert("roles".into(), json!([{"value": "admin"}]));
    let new = HumanProfile {
        nick_name: Some("Al".into()),
        emails: vec![email("alice@example.com", false, false)],
        addresses: vec![Address {
            formatted: Some("1 Main St\nSpringfield".into()),
            country: Some("US".into()),
            ..Default::default()
        }],
        extra,
        ..Default::default()
    };
    let d = h.run(|u| {
        u.replace_profile(ReplaceHumanUser {
            user_name: uname("alice2"),
            profile: new.clone(),
            password_hash: Some(PasswordHash::parse("$argon2id$new").unwrap()),
            active: false,
        })
    });
    assert_eq!(
        d.event_types(),
        [
            "user.username.changed",
            "user.human.profile.changed",
            "user.human.password.changed",
            "user.deactivated"
        ]
    );
    assert_eq!(d.unique, [release("alice"), claim("alice2")]);
    let changed = &d.events[1].1;
    assert_eq!(changed["name"], json!({}), "the old name parts are cleared");
    assert_eq!(changed["displayName"], json!(null));
    assert_eq!(
        changed["addresses"][0]["primary"],
        json!(false),
        "entries are kept as given"
    );
    assert!(changed.get("emails").is_none(), "emails did not change");
    let p = h.state.human().unwrap();
    assert_eq!(p.extra["roles"], json!([{"value": "admin"}]));
    assert_eq!(h.state.state(), UserState::Inactive);

    // The same PUT again changes nothing (no password given this time).
    let again = ReplaceHumanUser {
        user_name: uname("alice2"),
        profile: new,
        password_hash: None,
        active: false,
    };
    assert!(h.state.replace_profile(again.clone()).unwrap().is_empty());
    let d = h.run(|u| {
        u.replace_profile(ReplaceHumanUser {
            active: true,
            ..again.clone()
        })
    });
    assert_eq!(d.event_types(), ["user.reactivated"]);
    h.run(User::lock);
    assert!(
        h.state
            .replace_profile(ReplaceHumanUser {
                active: true,
                ..again
            })
            .unwrap()
            .is_empty(),
        "active: true leaves a locked user locked"
    );
    h.assert_rebuild_matches();
}

#[test]
fn profile_change_payload_distinguishes_absent_from_null() {
    let change: ProfileChange = serde_json::from_value(json!({"title": null, "nickName": "Al"})).unwrap();
    assert_eq!(change.title, Some(None));
    assert_eq!(change.nick_name, Some(Some("Al".into())));
    assert_eq!(change.timezone, None);
    assert_eq!(
        serde_json::to_value(&change).unwrap(),
        json!({"title": null, "nickName": "Al"})
    );
    let bad = serde_json::from_value::<ProfileChange>(json!({"emails": [{"value": "nope"}]}));
    assert!(bad.is_err(), "payload values are parsed too");
}

#[test]
fn phone_numbers_replace_and_remove_the_primary() {
    let mut h = alice();
    h.run(|u| {
        u.change_profile(ProfileChange {
            phone_numbers: Some(vec![phone("+41 1"), phone("+41 2")]),
            ..Default::default()
        })
    });
    let primary = |h: &History<User>| {
        h.state
            .human()
            .unwrap()
            .primary_phone()
            .map(|p| p.value.to_string())
    };
    assert_eq!(primary(&h).as_deref(), Some("+41 1"));
    let same = PhoneNumber::parse("+41 1").unwrap();
    assert!(h.state.set_phone(Some(same)).unwrap().is_empty());
    let d = h.run(|u| u.set_phone(Some(PhoneNumber::parse("+41 9").unwrap())));
    assert_eq!(d.events[0].1, json!({"phone": "+41 9"}));
    assert_eq!(primary(&h).as_deref(), Some("+41 9"));
    let d = h.run(|u| u.set_phone(None));
    assert_eq!(d.events[0].1, json!({"phone": null}));
    assert_eq!(
        primary(&h).as_deref(),
        Some("+41 2"),
        "the next number becomes primary"
    );
    h.run(|u| u.set_phone(None));
    assert_eq!(primary(&h), None);
    assert!(h.state.set_phone(None).unwrap().is_empty());
    h.run(|u| u.set_phone(Some(PhoneNumber::parse("555 0100").unwrap())));
    assert_eq!(primary(&h).as_deref(), Some("555 0100"));
    h.assert_rebuild_matches();
}
