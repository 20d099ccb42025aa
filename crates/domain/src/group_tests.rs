use super::*;
use crate::aggregate::UniqueChange;
use crate::testing::History;
use serde_json::json;

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}

fn add_cmd(org: AggregateId, n: &str) -> AddGroup {
    AddGroup {
        org_id: org,
        display_name: name(n),
        external_id: Some("ext-1".into()),
        description: None,
    }
}

fn added(n: &str) -> History<Group> {
    let org = AggregateId::new();
    let mut h = History::<Group>::new(AggregateId::new(), org);
    h.run(|g| g.add(add_cmd(org, n)));
    h
}

#[test]
fn add_claims_the_name_per_organisation() {
    let org = AggregateId::new();
    let d = Group::default().add(add_cmd(org, "Sales Team")).unwrap();
    assert_eq!(d.event_types(), ["group.added"]);
    assert_eq!(
        d.events[0].1,
        json!({"orgId": org.to_string(), "displayName": "Sales Team", "externalId": "ext-1"})
    );
    assert_eq!(
        d.unique,
        [UniqueChange::Claim {
            kind: "group.displayname",
            value: format!("{org}:sales team")
        }]
    );
    let h = added("Sales");
    assert!(matches!(
        h.state.add(add_cmd(org, "Other")),
        Err(DomainError::AlreadyExists { .. })
    ));
}

#[test]
fn add_validates_free_text() {
    let org = AggregateId::new();
    let mut cmd = add_cmd(org, "Sales");
    cmd.external_id = Some("bad\u{1}".into());
    cmd.description = Some("x".repeat(MAX_GROUP_TEXT + 1));
    match Group::default().add(cmd) {
        Err(DomainError::Invalid(v)) => {
            let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, ["external_id", "description"]);
        }
        other => panic!("{other:?}"),
    }
    let long = add_cmd(org, &"😀".repeat(256)); // 4 bytes each: the claim exceeds 1024 bytes
    assert!(matches!(Group::default().add(long), Err(DomainError::Invalid(_))));
}

#[test]
fn change_emits_only_what_changed_and_moves_the_claim() {
    let mut h = added("Sales");
    let org = h.state.org_id().unwrap();
    let same = GroupChange {
        display_name: Some(name("Sales")),
        external_id: Some(Some("ext-1".into())),
        description: Some(None),
    };
    assert!(h.state.change(same).unwrap().is_empty());

    let d = h.run(|g| {
        g.change(GroupChange {
            display_name: Some(name("SALES")),
            external_id: Some(None),
            description: Some(Some("all of sales".into())),
        })
    });
    assert_eq!(
        d.events[0].1,
        json!({"displayName": "SALES", "externalId": null, "description": "all of sales"})
    );
    assert_eq!(
        d.unique,
        [
            UniqueChange::Release {
                kind: "group.displayname",
                value: format!("{org}:sales")
            },
            UniqueChange::Claim {
                kind: "group.displayname",
                value: format!("{org}:sales")
            }
        ]
    );
    assert_eq!(h.state.external_id(), None);
    assert_eq!(h.state.description(), Some("all of sales"));
    let d = h.run(|g| {
        g.change(GroupChange {
            description: Some(Some("new".into())),
            ..Default::default()
        })
    });
    assert!(d.unique.is_empty(), "no rename, no claim");
    assert_eq!(d.events[0].1, json!({"description": "new"}));
    assert!(matches!(
        h.state.change(GroupChange {
            external_id: Some(Some("\u{0}".into())),
            ..Default::default()
        }),
        Err(DomainError::Invalid(_))
    ));
    h.assert_rebuild_matches();
}

#[test]
fn membership_changes_are_idempotent() {
    let mut h = added("Sales");
    let (a, b, c) = (AggregateId::new(), AggregateId::new(), AggregateId::new());
    let d = h.run(|g| g.add_members(&[a, b, a]));
    assert_eq!(d.event_types(), ["group.member.added", "group.member.added"]);
    assert_eq!(d.events[0].1, json!({"userId": a.to_string()}));
    assert!(h.state.add_members(&[a, b]).unwrap().is_empty());
    let d = h.run(|g| g.add_members(&[b, c]));
    assert_eq!(d.events.len(), 1, "only c is new");
    assert_eq!(h.state.members().len(), 3);

    let d = h.run(|g| g.remove_members(&[a, AggregateId::new(), a]));
    assert_eq!(d.event_types(), ["group.member.removed"]);
    assert!(h.state.remove_members(&[a]).unwrap().is_empty());
    assert!(!h.state.members().contains(&a));

    let d = h.run(|g| g.set_members(&[c, a]));
    assert_eq!(d.event_types(), ["group.member.removed", "group.member.added"]);
    assert_eq!(d.events[0].1, json!({"userId": b.to_string()}));
    assert_eq!(h.state.members().iter().copied().collect::<Vec<_>>(), {
        let mut v = vec![a, c];
        v.sort();
        v
    });
    assert!(h.state.set_members(&[a, c]).unwrap().is_empty());
    h.assert_rebuild_matches();
}

#[test]
fn a_removed_group_is_gone_and_releases_its_name() {
    let mut h = added("Sales");
    let org = h.state.org_id().unwrap();
    let d = h.run(Group::remove);
    assert_eq!(
        d.unique,
        [UniqueChange::Release {
            kind: "group.displayname",
            value: format!("{org}:sales")
        }]
    );
    assert!(!h.state.exists());
    let a = AggregateId::new();
    assert_eq!(h.state.add_members(&[a]), Err(DomainError::NotFound));
    assert_eq!(h.state.remove_members(&[a]), Err(DomainError::NotFound));
    assert_eq!(h.state.change(GroupChange::default()), Err(DomainError::NotFound));
    assert_eq!(h.state.remove(), Err(DomainError::NotFound));
    assert_eq!(Group::default().remove(), Err(DomainError::NotFound));
    h.assert_rebuild_matches();
}

#[test]
fn a_large_group_is_cheap_to_extend() {
    let mut h = added("Everyone");
    let ids: Vec<AggregateId> = (0..5_000).map(|_| AggregateId::new()).collect();
    h.run(|g| g.add_members(&ids));
    assert_eq!(h.state.members().len(), 5_000);
    assert!(h.state.add_members(&ids).unwrap().is_empty());
    assert_eq!(h.state.sequence(), 5_001);
}

#[test]
fn folding_rejects_foreign_gapped_and_unknown_events() {
    let h = added("Sales");
    let mut event = h.events[0].clone();
    let mut fresh = Group::default();
    event.sequence = 2;
    assert!(matches!(fresh.apply(&event), Err(DomainError::Corrupt(_))));
    event.sequence = 1;
    event.aggregate_type = crate::AggregateType::parse("user").unwrap();
    assert!(matches!(fresh.apply(&event), Err(DomainError::Corrupt(_))));
    event.aggregate_type = Group::aggregate_type();
    event.event_type = crate::EventType::parse("group.exploded").unwrap();
    assert!(matches!(fresh.apply(&event), Err(DomainError::Corrupt(_))));
    event.event_type = crate::EventType::parse("group.added").unwrap();
    event.payload = json!({"displayName": ""});
    assert!(matches!(fresh.apply(&event), Err(DomainError::Corrupt(_))));
    assert_eq!(
        fresh,
        Group::default(),
        "a refused event leaves the state untouched"
    );
    for t in GroupEvent::EVENT_TYPES {
        assert!(crate::EventType::parse(*t).is_ok(), "{t}");
    }
}
