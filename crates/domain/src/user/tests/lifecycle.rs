use super::*;
use chrono::Duration;
use serde_json::json;

#[test]
fn add_human_emits_the_profile_and_claims_the_normalised_name() {
    let org = AggregateId::new();
    let mut cmd = add_cmd(org, "Alice.Smith");
    cmd.password_hash = Some(PasswordHash::parse("$argon2id$v=19$abc").unwrap());
    let d = User::default().add_human(cmd).unwrap();
    assert_eq!(d.event_types(), ["user.human.added"]);
    assert_eq!(d.unique, [claim("alice.smith")]);
    assert_eq!(
        d.events[0].1,
        json!({
            "orgId": org.to_string(),
            "userName": "Alice.Smith",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "displayName": "Alice Smith",
            "emails": [{"value": "alice@example.com", "type": "work", "primary": false, "verified": false}],
            "passwordHash": "$argon2id$v=19$abc",
        })
    );

    let h = alice();
    assert_eq!(h.state.state(), UserState::Active);
    assert_eq!(h.state.user_name(), Some(&uname("Alice")));
    assert_eq!(h.state.org_id(), Some(h.owner));
    assert_eq!(h.state.id(), Some(h.id));
    assert!(
        h.state
            .human()
            .unwrap()
            .primary_email()
            .is_some_and(|e| e.value.as_str() == "alice@example.com"),
        "without a primary entry the first email counts as primary"
    );
    assert!(!h.state.has_password());
    assert!(matches!(
        h.state.add_human(add_cmd(org, "Bob")),
        Err(DomainError::AlreadyExists { .. })
    ));
    h.assert_rebuild_matches();
}

#[test]
fn add_human_inactive_also_deactivates() {
    let org = AggregateId::new();
    let mut h = History::<User>::new(AggregateId::new(), org);
    let d = h.run(|u| {
        u.add_human(AddHumanUser {
            active: false,
            ..add_cmd(org, "bob")
        })
    });
    assert_eq!(d.event_types(), ["user.human.added", "user.deactivated"]);
    assert_eq!(h.state.state(), UserState::Inactive);
    h.assert_rebuild_matches();
}

#[test]
fn add_human_reports_every_invalid_field() {
    let mut cmd = add_cmd(AggregateId::new(), "x");
    cmd.profile.emails = vec![
        email("a@example.com", true, false),
        email("A@Example.com", true, false),
    ];
    cmd.profile.title = Some("t".repeat(2000));
    cmd.profile.addresses = vec![Address {
        street_address: Some("bad\u{0}".into()),
        ..Default::default()
    }];
    cmd.profile.phone_numbers = (0..33).map(|i| phone(&format!("+41 {i:03}"))).collect();
    cmd.profile
        .extra
        .insert("photos".into(), json!("x".repeat(70_000)));
    let got = fields(User::default().add_human(cmd).unwrap_err());
    assert_eq!(
        got,
        [
            "title",
            "addresses[0].street_address",
            "emails",
            "phone_numbers",
            "emails[1].value",
            "extra"
        ]
    );
}

#[test]
fn state_machine_transitions() {
    use UserState::*;
    type Cmd = fn(&User) -> Result<Decision, DomainError>;
    let setups: [(UserState, Vec<Cmd>); 4] = [
        (Active, vec![]),
        (Inactive, vec![User::deactivate]),
        (Locked, vec![User::lock]),
        (Removed, vec![User::remove]),
    ];
    let commands: [(&str, Cmd); 5] = [
        ("deactivate", User::deactivate),
        ("reactivate", User::reactivate),
        ("lock", User::lock),
        ("unlock", User::unlock),
        ("remove", User::remove),
    ];
    // Expected state after each command from each state; None = FailedPrecondition,
    // Some(Absent) = NotFound.
    let expected = |from: UserState, cmd: &str| -> Option<UserState> {
        match (from, cmd) {
            (Removed, _) => Some(Absent),
            (Active | Locked, "deactivate") => Some(Inactive),
            (Inactive, "reactivate") => Some(Active),
            (Active, "lock") => Some(Locked),
            (Locked, "unlock") => Some(Active),
            (_, "remove") => Some(Removed),
            _ => None,
        }
    };
    for (from, setup) in &setups {
        for (name, cmd) in &commands {
            let mut h = alice();
            for step in setup {
                h.run(*step);
            }
            assert_eq!(h.state.state(), *from);
            match (cmd(&h.state), expected(*from, name)) {
                (Err(DomainError::NotFound), Some(Absent)) => {}
                (Err(DomainError::FailedPrecondition(_)), None) => {}
                (Ok(d), Some(to)) if to != Absent => {
                    h.commit(&d);
                    assert_eq!(h.state.state(), to, "{from:?} --{name}-->");
                    h.assert_rebuild_matches();
                }
                (got, want) => panic!("{from:?} --{name}--> got {got:?}, want {want:?}"),
            }
        }
    }
    for (_, cmd) in commands {
        assert_eq!(cmd(&User::default()), Err(DomainError::NotFound));
    }
}

#[test]
fn remove_releases_the_user_name_and_hides_the_user() {
    let mut h = alice();
    let d = h.run(User::remove);
    assert_eq!(d.event_types(), ["user.removed"]);
    assert_eq!(d.unique, [release("alice")]);
    assert!(!h.state.exists());
    assert_eq!(h.state.change_username(uname("x")), Err(DomainError::NotFound));
    assert_eq!(
        h.state.change_profile(ProfileChange::default()),
        Err(DomainError::NotFound)
    );
    h.assert_rebuild_matches();
}

#[test]
fn change_username_moves_the_claim() {
    let mut h = alice();
    assert!(h.state.change_username(uname("Alice")).unwrap().is_empty());
    let d = h.run(|u| u.change_username(uname("ALICE")));
    assert_eq!(d.event_types(), ["user.username.changed"]);
    assert_eq!(d.unique, [release("alice"), claim("alice")]);
    let d = h.run(|u| u.change_username(uname("alice.smith")));
    assert_eq!(d.events[0].1, json!({"userName": "alice.smith"}));
    assert_eq!(d.unique, [release("alice"), claim("alice.smith")]);
    assert_eq!(h.state.user_name(), Some(&uname("alice.smith")));
    h.assert_rebuild_matches();
}

#[test]
fn machine_users_have_their_own_commands() {
    let org = AggregateId::new();
    let mut h = History::<User>::new(AggregateId::new(), org);
    let d = h.run(|u| {
        u.add_machine(AddMachineUser {
            org_id: org,
            user_name: uname("CI-Bot"),
            name: DisplayName::parse("CI bot").unwrap(),
            description: None,
        })
    });
    assert_eq!(d.unique, [claim("ci-bot")]);
    assert_eq!(
        d.events[0].1,
        json!({"orgId": org.to_string(), "userName": "CI-Bot", "name": "CI bot"})
    );
    assert!(h.state.human().is_none());
    let not_human = |r: Result<Decision, DomainError>| {
        assert_eq!(r, Err(DomainError::precondition("not a human user")));
    };
    not_human(h.state.change_profile(ProfileChange::default()));
    not_human(h.state.set_email(EmailAddress::parse("a@b.io").unwrap(), false));
    not_human(h.state.set_password(PasswordHash::parse("$x").unwrap()));

    assert!(
        h.state
            .change_machine(MachineChange::default())
            .unwrap()
            .is_empty()
    );
    let d = h.run(|u| {
        u.change_machine(MachineChange {
            name: Some(DisplayName::parse("CI bot").unwrap()),
            description: Some(Some("builds".into())),
        })
    });
    assert_eq!(d.events[0].1, json!({"description": "builds"}));
    assert_eq!(h.state.machine().unwrap().description.as_deref(), Some("builds"));
    assert!(matches!(
        h.state.change_machine(MachineChange {
            description: Some(Some("\u{1}".into())),
            ..Default::default()
        }),
        Err(DomainError::Invalid(_))
    ));
    assert_eq!(
        alice().state.change_machine(MachineChange::default()),
        Err(DomainError::precondition("not a machine user"))
    );
    h.assert_rebuild_matches();
}

#[test]
fn personal_access_tokens() {
    let now = crate::testing::t0();
    let mut h = alice();
    let token = uuid::Uuid::now_v7();
    let cmd = AddPat {
        token_id: token,
        expires_at: Some(now + Duration::days(30)),
    };
    let d = h.run(|u| u.add_pat(cmd, now));
    assert_eq!(
        d.events[0].1,
        json!({"tokenId": token.to_string(), "expiresAt": "2023-12-14T22:13:20Z"})
    );
    assert_eq!(h.state.pats().get(&token), Some(&cmd.expires_at));
    assert!(matches!(
        h.state.add_pat(cmd, now),
        Err(DomainError::AlreadyExists { .. })
    ));
    let past = AddPat {
        token_id: uuid::Uuid::now_v7(),
        expires_at: Some(now),
    };
    assert_eq!(fields(h.state.add_pat(past, now).unwrap_err()), ["expires_at"]);
    let forever = AddPat {
        token_id: uuid::Uuid::now_v7(),
        expires_at: None,
    };
    h.run(|u| u.add_pat(forever, now));
    h.run(|u| u.remove_pat(token));
    assert_eq!(h.state.pats().len(), 1);
    assert_eq!(h.state.remove_pat(token), Err(DomainError::NotFound));
    h.assert_rebuild_matches();
}

#[test]
fn password_hashes_are_stored_but_never_shown() {
    let mut h = alice();
    let hash = PasswordHash::parse("$argon2id$v=19$secret").unwrap();
    let d = h.run(|u| u.set_password(hash.clone()));
    assert_eq!(d.event_types(), ["user.human.password.changed"]);
    assert_eq!(h.state.password_hash(), Some(&hash));
    assert!(h.state.set_password(hash).unwrap().is_empty());
    let view = serde_json::to_string(h.state.human().unwrap()).unwrap();
    assert!(!view.contains("secret"), "the profile view carries no hash");
    assert!(!format!("{:?}", h.state).contains("secret"), "Debug redacts");
    h.assert_rebuild_matches();
}
