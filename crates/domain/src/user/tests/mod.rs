//! Tests of the user aggregate, split by topic; shared fixtures live here.

mod email;
mod lifecycle;
mod profile;

use super::*;
use crate::aggregate::UniqueChange;
use crate::testing::History;
use crate::{Decision, EmailAddress, LanguageTag, PhoneNumber};

fn uname(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn email(value: &str, primary: bool, verified: bool) -> Email {
    Email {
        value: EmailAddress::parse(value).unwrap(),
        kind: Some("work".into()),
        display: None,
        primary,
        verified,
    }
}

fn phone(value: &str) -> Phone {
    Phone {
        value: PhoneNumber::parse(value).unwrap(),
        kind: None,
        display: None,
        primary: false,
    }
}

fn profile() -> HumanProfile {
    HumanProfile {
        name: PersonName {
            given_name: Some("Alice".into()),
            family_name: Some("Smith".into()),
            ..Default::default()
        },
        display_name: Some(DisplayName::parse("Alice Smith").unwrap()),
        emails: vec![email("alice@example.com", false, false)],
        ..Default::default()
    }
}

fn add_cmd(org: AggregateId, name: &str) -> AddHumanUser {
    AddHumanUser {
        org_id: org,
        user_name: uname(name),
        profile: profile(),
        password_hash: None,
        active: true,
    }
}

/// A history holding one freshly added, active human user `Alice`.
fn alice() -> History<User> {
    let org = AggregateId::new();
    let mut h = History::<User>::new(AggregateId::new(), org);
    h.run(|u| u.add_human(add_cmd(org, "Alice")));
    h
}

fn claim(value: &str) -> UniqueChange {
    UniqueChange::Claim {
        kind: "user.username",
        value: value.into(),
    }
}

fn release(value: &str) -> UniqueChange {
    UniqueChange::Release {
        kind: "user.username",
        value: value.into(),
    }
}

fn fields(err: DomainError) -> Vec<String> {
    match err {
        DomainError::Invalid(v) => v.into_iter().map(|f| f.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn event_catalogue_matches_the_contract() {
    for t in UserEvent::EVENT_TYPES {
        assert!(crate::EventType::parse(*t).is_ok(), "{t}");
    }
    for named in [
        "user.human.added",
        "user.machine.added",
        "user.human.profile.changed",
        "user.username.changed",
        "user.human.email.changed",
        "user.human.email.code.added",
        "user.human.email.verified",
        "user.human.email.verification.failed",
        "user.human.phone.changed",
        "user.deactivated",
        "user.reactivated",
        "user.locked",
        "user.unlocked",
        "user.removed",
        "user.erased",
        "user.pat.added",
        "user.pat.removed",
    ] {
        assert!(UserEvent::EVENT_TYPES.contains(&named), "{named} missing");
    }
    assert_eq!(UserEvent::EVENT_TYPES.len(), 19);
}
