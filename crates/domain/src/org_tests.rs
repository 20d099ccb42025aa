use super::*;
use crate::aggregate::UniqueChange;
use crate::testing::History;
use serde_json::json;

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}

fn dom(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

fn added(org_name: &str) -> History<Org> {
    let id = AggregateId::new();
    let mut h = History::<Org>::new(id, id);
    h.run(|o| o.add(name(org_name)));
    h
}

fn claim(kind: &'static str, value: &str) -> UniqueChange {
    UniqueChange::Claim {
        kind,
        value: value.into(),
    }
}

fn release(kind: &'static str, value: &str) -> UniqueChange {
    UniqueChange::Release {
        kind,
        value: value.into(),
    }
}

#[test]
fn add_claims_the_lower_cased_name() {
    let org = Org::default();
    assert_eq!(org.rename(name("x")), Err(DomainError::NotFound));
    let d = org.add(name("ACME Corp")).unwrap();
    assert_eq!(d.event_types(), ["org.added"]);
    assert_eq!(d.events[0].1, json!({"name": "ACME Corp"}));
    assert_eq!(d.unique, [claim("org.name", "acme corp")]);

    let h = added("ACME Corp");
    assert_eq!(h.state.state(), OrgState::Active);
    assert!(matches!(
        h.state.add(name("Other")),
        Err(DomainError::AlreadyExists { .. })
    ));
}

#[test]
fn rename_releases_the_old_name_and_claims_the_new() {
    let mut h = added("Acme");
    assert!(h.state.rename(name("Acme")).unwrap().is_empty());
    let d = h.run(|o| o.rename(name("Acme AG")));
    assert_eq!(d.event_types(), ["org.changed"]);
    assert_eq!(
        d.unique,
        [release("org.name", "acme"), claim("org.name", "acme ag")]
    );
    assert_eq!(h.state.name().unwrap().as_str(), "Acme AG");
    h.assert_rebuild_matches();
}

#[test]
fn state_machine_transitions() {
    type Cmd = fn(&Org) -> Result<Decision, DomainError>;
    let deactivate: Cmd = Org::deactivate;
    let reactivate: Cmd = Org::reactivate;
    let remove: Cmd = Org::remove;
    // (setup commands, command under test, expected event or error kind)
    let table: Vec<(Vec<Cmd>, Cmd, Result<&str, &str>)> = vec![
        (vec![], deactivate, Ok("org.deactivated")),
        (vec![], reactivate, Err("precondition")),
        (vec![deactivate], deactivate, Err("precondition")),
        (vec![deactivate], reactivate, Ok("org.reactivated")),
        (vec![], remove, Ok("org.removed")),
        (vec![deactivate], remove, Ok("org.removed")),
        (vec![remove], remove, Err("not found")),
        (vec![remove], reactivate, Err("not found")),
        (vec![remove], deactivate, Err("not found")),
    ];
    for (i, (setup, cmd, expected)) in table.into_iter().enumerate() {
        let mut h = added("Acme");
        for step in setup {
            h.run(step);
        }
        match (cmd(&h.state), expected) {
            (Ok(d), Ok(event)) => assert_eq!(d.event_types(), [event], "row {i}"),
            (Err(DomainError::FailedPrecondition(_)), Err("precondition")) => {}
            (Err(DomainError::NotFound), Err("not found")) => {}
            (got, want) => panic!("row {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn domains_are_claimed_when_verified_and_released_when_removed() {
    let mut h = added("Acme");
    assert_eq!(h.state.verify_domain(dom("acme.com")), Err(DomainError::NotFound));
    let d = h.run(|o| o.add_domain(dom("Acme.com")));
    assert_eq!(d.events[0].1, json!({"domain": "acme.com"}));
    assert!(d.unique.is_empty(), "an unverified domain claims nothing");
    assert!(matches!(
        h.state.add_domain(dom("acme.com")),
        Err(DomainError::AlreadyExists { .. })
    ));
    assert!(matches!(
        h.state.set_primary_domain(dom("acme.com")),
        Err(DomainError::FailedPrecondition(_))
    ));

    let d = h.run(|o| o.verify_domain(dom("acme.com")));
    assert_eq!(d.unique, [claim("org.domain", "acme.com")]);
    assert!(matches!(
        h.state.verify_domain(dom("acme.com")),
        Err(DomainError::FailedPrecondition(_))
    ));
    h.run(|o| o.set_primary_domain(dom("acme.com")));
    assert_eq!(h.state.primary_domain(), Some(&dom("acme.com")));
    assert!(matches!(
        h.state.set_primary_domain(dom("acme.com")),
        Err(DomainError::FailedPrecondition(_))
    ));
    assert!(matches!(
        h.state.remove_domain(dom("acme.com")),
        Err(DomainError::FailedPrecondition(_))
    ));

    h.run(|o| o.add_domain(dom("acme.ch")));
    h.run(|o| o.verify_domain(dom("acme.ch")));
    h.run(|o| o.set_primary_domain(dom("acme.ch")));
    assert_eq!(h.state.primary_domain(), Some(&dom("acme.ch")));
    assert!(!h.state.domains()[0].primary);

    let d = h.run(|o| o.remove_domain(dom("acme.com")));
    assert_eq!(d.unique, [release("org.domain", "acme.com")]);
    h.run(|o| o.add_domain(dom("unverified.io")));
    let d = h.run(|o| o.remove_domain(dom("unverified.io")));
    assert!(d.unique.is_empty());
    assert_eq!(h.state.domains().len(), 1);
    assert_eq!(h.state.remove_domain(dom("nope.io")), Err(DomainError::NotFound));

    let d = h.run(Org::remove);
    assert_eq!(
        d.unique,
        [release("org.name", "acme"), release("org.domain", "acme.ch")]
    );
    assert_eq!(h.state.add_domain(dom("x.io")), Err(DomainError::NotFound));
    h.assert_rebuild_matches();
}

#[test]
fn domain_count_is_bounded() {
    let mut h = added("Acme");
    for i in 0..MAX_ORG_DOMAINS {
        h.run(|o| o.add_domain(dom(&format!("d{i}.example"))));
    }
    assert!(matches!(
        h.state.add_domain(dom("one-too-many.example")),
        Err(DomainError::Invalid(_))
    ));
}

#[test]
fn event_catalogue_is_well_formed() {
    for t in OrgEvent::EVENT_TYPES {
        assert!(crate::EventType::parse(*t).is_ok(), "{t}");
    }
    assert_eq!(OrgEvent::EVENT_TYPES.len(), 9);
}
