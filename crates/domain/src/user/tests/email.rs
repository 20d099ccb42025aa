use super::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

fn at(minutes: i64) -> DateTime<Utc> {
    crate::testing::t0() + Duration::minutes(minutes)
}

fn code(n: u32) -> EmailCode {
    EmailCode {
        encrypted: json!({"keyId": "k1", "nonce": format!("n{n}"), "ciphertext": format!("c{n}")}),
        expires_at: at(10),
        url_template: None,
        return_code: false,
    }
}

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

#[test]
fn set_email_changes_and_optionally_verifies() {
    let mut h = alice();
    assert!(
        h.state
            .set_email(addr("ALICE@example.com"), false)
            .unwrap()
            .is_empty()
    );
    let d = h.run(|u| u.set_email(addr("alice@example.com"), true));
    assert_eq!(d.event_types(), ["user.human.email.verified"]);
    assert!(h.state.email_verified());
    let d = h.run(|u| u.set_email(addr("new@example.com"), false));
    assert_eq!(d.event_types(), ["user.human.email.changed"]);
    assert_eq!(d.events[0].1, json!({"email": "new@example.com"}));
    assert!(!h.state.email_verified(), "a new address starts unverified");
    assert_eq!(
        h.state.human().unwrap().emails.len(),
        1,
        "the primary is replaced"
    );
    let d = h.run(|u| u.set_email(addr("admin@example.com"), true));
    assert_eq!(
        d.event_types(),
        ["user.human.email.changed", "user.human.email.verified"]
    );
    assert!(h.state.email_verified());
    h.assert_rebuild_matches();
}

#[test]
fn the_right_code_verifies_the_address() {
    let mut h = alice();
    assert_eq!(
        h.state.verify_email(true, at(0), 5),
        Err(DomainError::precondition(
            "no valid verification code; request a new one"
        ))
    );
    let d = h.run(|u| u.add_email_code(code(1)));
    assert_eq!(
        d.events[0].1,
        json!({
            "email": "alice@example.com",
            "code": {"keyId": "k1", "nonce": "n1", "ciphertext": "c1"},
            "expiresAt": "2023-11-14T22:23:20Z",
            "returnCode": false,
        })
    );
    let pending = h.state.pending_code().unwrap();
    assert_eq!((pending.attempts, pending.voided), (0, false));
    assert_eq!(pending.expires_at, at(10));

    let outcome = h.state.verify_email(true, at(9), 5).unwrap();
    assert!(outcome.verified);
    assert_eq!(outcome.reason, None);
    assert_eq!(outcome.decision.event_types(), ["user.human.email.verified"]);
    h.commit(&outcome.decision);
    assert!(h.state.email_verified());
    assert!(h.state.pending_code().is_none());
    assert_eq!(
        h.state.verify_email(true, at(9), 5),
        Err(DomainError::precondition("email is already verified"))
    );
    assert_eq!(
        h.state.add_email_code(code(2)),
        Err(DomainError::precondition("email is already verified"))
    );
    h.assert_rebuild_matches();
}

#[test]
fn five_wrong_codes_void_the_code() {
    let mut h = alice();
    h.run(|u| u.add_email_code(code(1)));
    for attempt in 1..=5u32 {
        let outcome = h.state.verify_email(false, at(1), 5).unwrap();
        assert!(!outcome.verified);
        assert_eq!(outcome.reason, Some("mismatch"));
        assert_eq!(
            outcome.decision.events[0].1,
            json!({"reason": "mismatch", "attempt": attempt, "voided": attempt == 5})
        );
        h.commit(&outcome.decision);
        assert_eq!(h.state.pending_code().unwrap().attempts, attempt);
    }
    assert!(h.state.pending_code().unwrap().voided);
    assert_eq!(
        h.state.verify_email(true, at(1), 5),
        Err(DomainError::precondition(
            "no valid verification code; request a new one"
        )),
        "even the right code is refused once voided"
    );
    // A new code starts afresh.
    h.run(|u| u.add_email_code(code(2)));
    let pending = h.state.pending_code().unwrap();
    assert_eq!((pending.attempts, pending.voided), (0, false));
    assert!(h.state.verify_email(true, at(2), 5).unwrap().verified);
    h.assert_rebuild_matches();
}

#[test]
fn an_expired_code_fails_and_is_voided() {
    let mut h = alice();
    h.run(|u| u.add_email_code(code(1)));
    let outcome = h.state.verify_email(true, at(10), 5).unwrap();
    assert!(!outcome.verified);
    assert_eq!(outcome.reason, Some("expired"));
    assert_eq!(
        outcome.decision.events[0].1,
        json!({"reason": "expired", "attempt": 1, "voided": true})
    );
    assert_eq!(
        outcome.decision.event_types(),
        ["user.human.email.verification.failed"]
    );
    h.commit(&outcome.decision);
    assert!(matches!(
        h.state.verify_email(true, at(11), 5),
        Err(DomainError::FailedPrecondition(_))
    ));
    h.assert_rebuild_matches();
}

#[test]
fn a_resent_code_voids_the_previous_one() {
    let mut h = alice();
    h.run(|u| u.add_email_code(code(1)));
    h.commit(&h.state.verify_email(false, at(1), 5).unwrap().decision);
    h.run(|u| u.add_email_code(code(2)));
    let pending = h.state.pending_code().unwrap();
    assert_eq!(
        pending.encrypted["nonce"],
        json!("n2"),
        "only the latest code is kept"
    );
    assert_eq!(pending.attempts, 0);
    h.assert_rebuild_matches();
}

#[test]
fn changing_the_address_drops_the_pending_code() {
    let mut h = alice();
    h.run(|u| u.add_email_code(code(1)));
    h.run(|u| u.set_email(addr("other@example.com"), false));
    assert!(h.state.pending_code().is_none());
    h.run(|u| u.add_email_code(code(2)));
    assert_eq!(h.state.pending_code().unwrap().email, addr("other@example.com"));
    // A profile change that keeps the primary address keeps the code.
    h.run(|u| {
        u.change_profile(ProfileChange {
            title: Some(Some("CTO".into())),
            ..Default::default()
        })
    });
    assert!(h.state.pending_code().is_some());
    h.run(|u| {
        u.change_profile(ProfileChange {
            emails: Some(vec![email("third@example.com", false, false)]),
            ..Default::default()
        })
    });
    assert!(h.state.pending_code().is_none());
    h.assert_rebuild_matches();
}

#[test]
fn codes_need_an_address_and_well_formed_input() {
    let org = AggregateId::new();
    let mut h = History::<User>::new(AggregateId::new(), org);
    let mut cmd = add_cmd(org, "noemail");
    cmd.profile.emails.clear();
    h.run(|u| u.add_human(cmd));
    assert_eq!(
        h.state.add_email_code(code(1)),
        Err(DomainError::precondition("user has no email address"))
    );
    assert_eq!(
        h.state.verify_email(true, at(0), 5),
        Err(DomainError::precondition("user has no email address"))
    );
    let h = alice();
    let bad = EmailCode {
        encrypted: json!("plain"),
        url_template: Some("x".repeat(3000)),
        ..code(1)
    };
    assert_eq!(
        fields(h.state.add_email_code(bad).unwrap_err()),
        ["encrypted", "url_template"]
    );
    assert_eq!(
        User::default().add_email_code(code(1)),
        Err(DomainError::NotFound)
    );
}

#[test]
fn a_zero_attempt_limit_still_allows_one_try() {
    let mut h = alice();
    h.run(|u| u.add_email_code(code(1)));
    let outcome = h.state.verify_email(false, at(1), 0).unwrap();
    assert_eq!(outcome.decision.events[0].1["voided"], json!(true));
    h.commit(&outcome.decision);
    assert!(h.state.pending_code().unwrap().voided);
}
