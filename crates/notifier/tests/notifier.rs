//! The notifier end to end over real SMTP (aiosmtpd), with the relay, the projector and
//! command-api on real PostgreSQL and NATS: DESIGN.md guarantees 9 and 10.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use cairn_proto::user::v1 as user;
use cairn_testkit::eventually;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;
use support::{Sink, Stack, WAIT, assert_logs_free_of, authed, code_in};

async fn verify(stack: &Stack, id: &str, code: &str) -> Result<(), tonic::Status> {
    stack
        .users()
        .verify_email(authed(
            &stack.admin.token,
            user::VerifyEmailRequest {
                user_id: id.into(),
                code: code.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn email_verified_in_read_model(stack: &Stack, id: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT email_verified FROM projections.users WHERE id = $1::uuid")
        .bind(id)
        .fetch_optional(&stack.db.pool)
        .await
        .unwrap()
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setting_an_email_sends_one_message_in_the_users_language_whose_code_verifies() {
    let stack = Stack::start().await;
    let sink = Sink::started(&[]).await;
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;

    let ada = stack.add_user("ada", "en").await;
    let grete = stack.add_user("grete", "de-CH").await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;
    stack
        .set_email(&grete, "grete@new.test", user::EmailVerification::SendCode)
        .await;

    let english = stack.wait_status(&ada, "sent").await;
    let german = stack.wait_status(&grete, "sent").await;
    let to_ada = sink.messages_to("ada@new.test");
    let to_grete = sink.messages_to("grete@new.test");
    assert_eq!(to_ada.len(), 1, "exactly one message for ada");
    assert_eq!(to_grete.len(), 1, "exactly one message for grete");
    assert_eq!(english.language.as_deref(), Some("en"));
    assert_eq!(german.language.as_deref(), Some("de"));
    assert_eq!(english.attempts, 1);
    assert!(!english.holds_code, "a sent delivery keeps no sealed code");
    assert!(english.smtp_reply.as_deref().unwrap().starts_with("250"));

    let (en, de) = (&to_ada[0], &to_grete[0]);
    assert_eq!(en["message_id"].as_str().unwrap(), english.message_id);
    assert_eq!(
        en["message_id"].as_str().unwrap(),
        format!("<{}@notifier.cairn>", english.event_id)
    );
    assert!(
        en["subject"].as_str().unwrap().contains("verify your email"),
        "{en}"
    );
    assert!(en["to"].as_str().unwrap().contains("Ada ada"), "{en}");
    assert!(de["subject"].as_str().unwrap().contains("Bestätigen"), "{de}");
    assert!(de["text"].as_str().unwrap().contains("Hallo Ada grete"), "{de}");
    assert!(de["text"].as_str().unwrap().contains("für Default"), "{de}");
    for message in [en, de] {
        let code = code_in(message);
        assert!(message["html"].as_str().unwrap().contains(&code));
        // The link carries the user id and the code (URL template of the request).
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .contains(&format!("code={code}"))
        );
    }

    // The codes verify the addresses, and the read model shows them verified.
    let ada_code = code_in(en);
    let grete_code = code_in(de);
    verify(&stack, &ada, &ada_code).await.unwrap();
    verify(&stack, &grete, &grete_code).await.unwrap();
    for id in [&ada, &grete] {
        eventually("the read model to show the email verified", WAIT, || async {
            Ok(email_verified_in_read_model(&stack, id).await.then_some(()))
        })
        .await
        .unwrap();
    }
    assert_eq!(notifier.metrics.sent.get(), 2);
    let (status, metrics) = cairn_testkit::http_get(notifier.http_addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    for name in [
        "cairn_notifier_sent_total 2",
        "cairn_notifier_failed_total 0",
        "cairn_notifier_retries_total",
        "cairn_notifier_queue_depth",
        "cairn_notifier_event_to_accept_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing in {metrics}");
    }
    assert_eq!(
        cairn_testkit::http_get(notifier.http_addr, "/readyz")
            .await
            .unwrap()
            .0,
        200
    );

    notifier.stop().await;
    let lines = assert_logs_free_of(&[
        &ada_code,
        &grete_code,
        &stack.admin.token,
        stack.keys().split(':').nth(1).unwrap(),
    ]);
    assert!(lines > 10, "the capture holds the run's logs ({lines} lines)");
    let captured = String::from_utf8_lossy(&support::logs().lock().unwrap()).into_owned();
    assert!(
        captured.contains("message accepted"),
        "the sender's lines are captured"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_then_up_delivers_exactly_once() {
    let stack = Stack::start().await;
    let mut sink = Sink::new(support::free_port(), &[]);
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;
    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;

    // Nobody listens: the delivery is retried with backoff and shows the error.
    let retrying = eventually("two failed attempts", WAIT, || async {
        Ok(stack
            .deliveries(&ada)
            .await
            .pop()
            .filter(|d| d.attempts >= 2 && d.status != "sent"))
    })
    .await
    .unwrap();
    assert!(retrying.last_error.is_some(), "{retrying:?}");
    assert!(notifier.metrics.retries.get() >= 1);

    sink.start().await;
    let sent = stack.wait_status(&ada, "sent").await;
    let messages = sink.wait_for("ada@new.test", 1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message_id"].as_str().unwrap(), sent.message_id);
    assert!(sent.attempts >= 3, "{sent:?}");

    // A later message arrives; the first one has not come again.
    let bob = stack.add_user("bob", "en").await;
    stack
        .set_email(&bob, "bob@new.test", user::EmailVerification::SendCode)
        .await;
    sink.wait_for("bob@new.test", 1).await;
    assert_eq!(sink.messages_to("ada@new.test").len(), 1);
    // The sender counts a message after the server's 250, so the sink can have it a moment before
    // the counter moves: wait for the count (a third send would never make it exactly 2).
    eventually("two messages counted as sent", WAIT, || async {
        Ok((notifier.metrics.sent.get() == 2).then_some(()))
    })
    .await
    .unwrap();
    notifier.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_smtp_550_is_recorded_as_a_permanent_failure_and_not_retried() {
    let stack = Stack::start().await;
    let sink = Sink::started(&["--reject", "bounce@new.test"]).await;
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;
    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "bounce@new.test", user::EmailVerification::SendCode)
        .await;
    let failed = stack.wait_status(&ada, "failed").await;
    assert_eq!(failed.attempts, 1, "{failed:?}");
    let error = failed.last_error.clone().unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(failed.smtp_reply.unwrap().contains("550"));
    assert!(!failed.holds_code);

    // Later deliveries go out, and the failed one was offered exactly once.
    let bob = stack.add_user("bob", "en").await;
    stack
        .set_email(&bob, "bob@new.test", user::EmailVerification::SendCode)
        .await;
    sink.wait_for("bob@new.test", 1).await;
    let offered = sink
        .rcpts()
        .iter()
        .filter(|r| r.as_str() == "bounce@new.test")
        .count();
    assert_eq!(offered, 1, "the rejected recipient was offered once");
    assert!(sink.messages_to("bounce@new.test").is_empty());
    let again = stack.deliveries(&ada).await.pop().unwrap();
    assert_eq!((again.status.as_str(), again.attempts), ("failed", 1));
    assert_eq!(notifier.metrics.failed.get(), 1);
    assert_eq!(notifier.metrics.retries.get(), 0);
    notifier.stop().await;
    stack.stop().await;
}

/// The design's answer to "the notifier died after the SMTP server accepted a message but before
/// the record was stored": the claim expires, another sender sends it again with the same
/// Message-ID, and records it. Measured: exactly two copies, one Message-ID; never a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_killed_between_smtp_accept_and_record_sends_exactly_one_duplicate_with_the_same_message_id()
{
    let stack = Stack::start().await;
    let sink = Sink::started(&[]).await;
    let hooks = cairn_notifier::Hooks {
        crash_after_accepts: Some(Arc::new(AtomicI64::new(1))),
    };
    let first = stack.notifier_with(stack.notifier_config(sink.port), hooks).await;
    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;
    let copies = sink.wait_for("ada@new.test", 1).await;
    // The server has the message; the record still says it is being sent (by the dead sender).
    let row = stack.deliveries(&ada).await.pop().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("sending", 1), "{row:?}");
    first.stop().await;

    // A new replica takes over once the claim expires, and sends it again.
    let second = stack.notifier(stack.notifier_config(sink.port)).await;
    let sent = stack.wait_status(&ada, "sent").await;
    let copies_after = sink.messages_to("ada@new.test");
    assert_eq!(copies_after.len(), 2, "measured: one duplicate");
    assert_eq!(sent.attempts, 2);
    for copy in &copies_after {
        assert_eq!(copy["message_id"].as_str().unwrap(), sent.message_id);
    }
    assert_eq!(code_in(&copies[0]), code_in(&copies_after[1]), "the same code");

    // Recorded as sent, it is never sent again: a third replica delivers a later message only.
    second.stop().await;
    let third = stack.notifier(stack.notifier_config(sink.port)).await;
    let bob = stack.add_user("bob", "en").await;
    stack
        .set_email(&bob, "bob@new.test", user::EmailVerification::SendCode)
        .await;
    sink.wait_for("bob@new.test", 1).await;
    assert_eq!(sink.messages_to("ada@new.test").len(), 2);
    eprintln!(
        "MEASURED kill between SMTP accept and record: {} copies of {} (Message-ID {})",
        copies_after.len(),
        sent.event_id,
        sent.message_id
    );
    third.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_returned_to_the_caller_is_not_mailed_and_a_superseded_code_is_skipped() {
    let stack = Stack::start().await;
    let mut sink = Sink::new(support::free_port(), &[]);
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;

    // return_code: recorded as skipped, no email.
    let ada = stack.add_user("ada", "en").await;
    let returned = stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::ReturnCode)
        .await;
    assert_eq!(returned.len(), 8);
    let skipped = stack.wait_status(&ada, "skipped").await;
    assert!(skipped.last_error.unwrap().contains("returned"));

    // While SMTP is down, bob's first code is replaced by a resend: only the new one goes out.
    let bob = stack.add_user("bob", "en").await;
    stack
        .set_email(&bob, "bob@new.test", user::EmailVerification::SendCode)
        .await;
    eventually("bob's first code to be tried", WAIT, || async {
        Ok(stack
            .deliveries(&bob)
            .await
            .first()
            .filter(|d| d.attempts >= 1 && d.status == "pending")
            .cloned())
    })
    .await
    .unwrap();
    stack
        .users()
        .resend_email_code(authed(
            &stack.admin.token,
            user::ResendEmailCodeRequest {
                user_id: bob.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    sink.start().await;
    let newest = stack.wait_status(&bob, "sent").await;
    let rows = stack.deliveries(&bob).await;
    assert_eq!(rows.len(), 2);
    eventually("bob's first code to be skipped", WAIT, || async {
        let rows = stack.deliveries(&bob).await;
        Ok((rows[0].status == "skipped").then_some(rows[0].clone()))
    })
    .await
    .unwrap();
    let messages = sink.wait_for("bob@new.test", 1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message_id"].as_str().unwrap(), newest.message_id);
    // The mailed code is the valid one.
    verify(&stack, &bob, &code_in(&messages[0])).await.unwrap();
    assert!(sink.messages_to("ada@new.test").is_empty());
    notifier.stop().await;
    assert_logs_free_of(&[&returned, &code_in(&messages[0]), &stack.admin.token]);
    stack.stop().await;
}

/// The instance's own SMTP settings, set over command-api with a password that is stored sealed:
/// a wrong password is a permanent failure that the admin call lists with the server's reply; after
/// the fix an administrator retries it and it goes out, authenticated. No password, code or token
/// reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_smtp_settings_a_wrong_password_shows_as_failed_and_an_admin_retry_sends_it() {
    use cairn_proto::admin::v1 as admin;
    use cairn_proto::notification::v1 as pb;
    let stack = Stack::start().await;
    let right = "Right-Pa55word-Q7";
    let wrong = "Wrong-Pa55word-Z9";
    let sink = Sink::started(&["--auth", &format!("mailer:{right}")]).await;
    // The defaults point at a port where nobody listens: only the instance's settings can work.
    let notifier = stack.notifier(stack.notifier_config(support::free_port())).await;
    let set_smtp = |password: &'static str| {
        let request = admin::SetSmtpSettingsRequest {
            settings: Some(admin::SmtpSettings {
                host: "127.0.0.1".into(),
                port: u32::from(sink.port),
                tls: admin::SmtpTls::None as i32,
                user: "mailer".into(),
                from_address: "accounts@engines.test".into(),
                from_name: "Engines Accounts".into(),
                reply_to: "help@engines.test".into(),
                password: password.into(),
                has_password: false,
            }),
        };
        let mut client = stack.admin_client();
        let token = stack.admin.token.clone();
        async move { client.set_smtp_settings(authed(&token, request)).await.unwrap() }
    };
    set_smtp(wrong).await;
    let stored: serde_json::Value = sqlx::query_scalar("SELECT password FROM api.smtp_settings")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert!(
        !stored.to_string().contains(wrong),
        "the password is stored sealed"
    );

    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;
    let failed = stack.wait_status(&ada, "failed").await;
    assert_eq!(failed.attempts, 1);
    assert!(
        failed.last_error.as_deref().unwrap().contains("535"),
        "{failed:?}"
    );

    // The admin call lists it with the server's reply; only an administrator may call it.
    let mut client = notifier.client();
    let listed = client
        .list_deliveries(authed(
            &stack.admin.token,
            pb::ListDeliveriesRequest {
                status: pb::DeliveryStatus::Failed as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, failed.event_id.to_string());
    assert!(listed[0].smtp_reply.contains("535"), "{:?}", listed[0]);
    let unauthenticated = client
        .list_deliveries(pb::ListDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    // Fixed settings, then a retry: sent, authenticated, from the instance's sender.
    set_smtp(right).await;
    let retried = client
        .retry_delivery(authed(
            &stack.admin.token,
            pb::RetryDeliveryRequest {
                event_id: failed.event_id.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.status, pb::DeliveryStatus::Pending as i32);
    let sent = stack.wait_status(&ada, "sent").await;
    let messages = sink.wait_for("ada@new.test", 1).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["authenticated"], true);
    assert_eq!(message["mail_from"], "accounts@engines.test");
    assert!(message["from"].as_str().unwrap().contains("Engines Accounts"));
    assert!(
        message["reply_to"]
            .as_str()
            .unwrap()
            .contains("help@engines.test")
    );
    assert_eq!(message["message_id"].as_str().unwrap(), sent.message_id);
    // A sent delivery is never sent again, not even on request.
    let again = client
        .retry_delivery(authed(
            &stack.admin.token,
            pb::RetryDeliveryRequest {
                event_id: failed.event_id.to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let code = code_in(message);
    verify(&stack, &ada, &code).await.unwrap();
    notifier.stop().await;
    assert_logs_free_of(&[right, wrong, &code, &stack.admin.token]);
    stack.stop().await;
}

/// The verification rules with codes that really went out by email: five wrong codes void the
/// code, a resend voids the old one and mails a new one, and an expired code fails (the clock is
/// injected, nothing sleeps). A code that expires while SMTP is down is not sent at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_wrong_codes_void_the_code_a_resend_voids_the_old_one_and_expiry_follows_the_clock() {
    let clock = cairn_domain::FixedClock::new(cairn_domain::Clock::now(&cairn_domain::SystemClock));
    let stack = Stack::start_with_clock(Arc::new(clock.clone())).await;
    let mut sink = Sink::started(&[]).await;
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;

    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;
    let first = code_in(&sink.wait_for("ada@new.test", 1).await[0]);
    for attempt in 1..=4 {
        let error = verify(&stack, &ada, "WRONG234").await.unwrap_err();
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "attempt {attempt}: {error:?}"
        );
    }
    let fifth = verify(&stack, &ada, "WRONG234").await.unwrap_err();
    assert!(fifth.message().contains("too many attempts"), "{fifth:?}");
    // The right code no longer helps.
    let voided = verify(&stack, &ada, &first).await.unwrap_err();
    assert_eq!(voided.code(), tonic::Code::FailedPrecondition, "{voided:?}");

    stack
        .users()
        .resend_email_code(authed(
            &stack.admin.token,
            user::ResendEmailCodeRequest {
                user_id: ada.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let second = code_in(&sink.wait_for("ada@new.test", 2).await[1]);
    assert_ne!(first, second);
    assert!(
        verify(&stack, &ada, &first).await.is_err(),
        "the old code is void"
    );
    verify(&stack, &ada, &second).await.unwrap();

    // Expiry: the code is mailed, the clock passes its expiry, the code fails.
    let bob = stack.add_user("bob", "en").await;
    stack
        .set_email(&bob, "bob@new.test", user::EmailVerification::SendCode)
        .await;
    let bobs = code_in(&sink.wait_for("bob@new.test", 1).await[0]);
    clock.advance(chrono::Duration::hours(2));
    let expired = verify(&stack, &bob, &bobs).await.unwrap_err();
    assert!(expired.message().contains("expired"), "{expired:?}");

    // A code that expires before SMTP comes back is skipped, not sent.
    sink.stop();
    let cid = stack.add_user("cid", "en").await;
    stack
        .set_email(&cid, "cid@new.test", user::EmailVerification::SendCode)
        .await;
    eventually("cid's code to be tried", WAIT, || async {
        Ok(stack
            .deliveries(&cid)
            .await
            .pop()
            .filter(|d| d.attempts >= 1 && d.status == "pending"))
    })
    .await
    .unwrap();
    clock.advance(chrono::Duration::hours(2));
    sink.start().await;
    let skipped = stack.wait_status(&cid, "skipped").await;
    assert!(skipped.last_error.unwrap().contains("expired"));
    assert!(sink.messages_to("cid@new.test").is_empty());
    notifier.stop().await;
    assert_logs_free_of(&[&first, &second, &bobs]);
    stack.stop().await;
}

/// Two replicas: the intake is leased per instance, senders claim rows with SKIP LOCKED; every
/// one of 40 codes over two instances is mailed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_send_every_message_exactly_once() {
    let stack = Stack::start().await;
    let sink = Sink::started(&[]).await;
    let a = stack.notifier(stack.notifier_config(sink.port)).await;
    let b = stack.notifier(stack.notifier_config(sink.port)).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = stack.add_user(&format!("user{i}"), "en").await;
        stack
            .set_email(
                &id,
                &format!("user{i}@new.test"),
                user::EmailVerification::SendCode,
            )
            .await;
        ids.push(id);
    }
    for id in &ids {
        stack.wait_status(id, "sent").await;
    }
    for i in 0..40 {
        assert_eq!(sink.messages_to(&format!("user{i}@new.test")).len(), 1, "user{i}");
    }
    assert_eq!(sink.messages().len(), 40);
    let (sa, sb) = (a.metrics.sent.get(), b.metrics.sent.get());
    assert_eq!(sa + sb, 40);
    eprintln!("replica a sent {sa}, replica b sent {sb}");
    a.stop().await;
    b.stop().await;
    stack.stop().await;
}

/// Guarantee 10 with a slow SMTP server and no crash: every reply comes 1.2 s late, so one send
/// (greeting, EHLO, MAIL, RCPT, DATA, final reply) takes about 7 s, longer than the 5 s claim.
/// Each command answers well within the 2 s command timeout, so nothing fails; the claim must
/// still not pass to another sender mid-send. Two replicas with two workers each (one worker
/// idle, ready to take over an expired claim); each of three codes arrives exactly once and its
/// record says sent after one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_smtp_server_never_gets_a_second_copy_of_a_code() {
    let stack = Stack::start().await;
    let sink = Sink::started(&["--delay", "1.2"]).await;
    let config = || {
        let mut config = stack.notifier_config(sink.port);
        config.smtp_timeout_secs = 2;
        config.claim_ttl_secs = 5;
        config.concurrency = 2;
        config
    };
    let a = stack.notifier(config()).await;
    let b = stack.notifier(config()).await;
    let mut users = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let id = stack.add_user(name, "en").await;
        stack
            .set_email(
                &id,
                &format!("{name}@slow.test"),
                user::EmailVerification::SendCode,
            )
            .await;
        users.push((name, id));
    }
    // Done when every record is sent and every claim made on it has come to an outcome (an
    // acceptance, a retry, a failure, a skip or a send abandoned because the claim was lost,
    // counted by some replica): a sender that took a claim over mid-send has finished by then.
    eventually("every delivery sent and every claim concluded", WAIT, || async {
        let mut claims = 0;
        for (_, id) in &users {
            let Some(row) = stack.deliveries(id).await.pop() else {
                return Ok(None);
            };
            if row.status != "sent" {
                return Ok(None);
            }
            claims += i64::from(row.attempts);
        }
        let outcomes: i64 = [&a, &b]
            .iter()
            .map(|n| {
                let m = &n.metrics;
                (m.sent.get() + m.retries.get() + m.failed.get() + m.skipped.get() + m.claims_lost.get())
                    as i64
            })
            .sum();
        Ok((outcomes >= claims).then_some(()))
    })
    .await
    .unwrap();
    for (name, id) in &users {
        let address = format!("{name}@slow.test");
        let copies = sink.messages_to(&address);
        let row = stack.deliveries(id).await.pop().unwrap();
        assert_eq!(
            copies.len(),
            1,
            "exactly one message for {address}; its record: {row:?}; offered RCPT {:?}",
            sink.rcpts()
        );
        assert_eq!(copies[0]["message_id"].as_str().unwrap(), row.message_id);
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 1), "{row:?}");
    }
    assert_eq!(a.metrics.sent.get() + b.metrics.sent.get(), 3);
    a.stop().await;
    b.stop().await;
    stack.stop().await;
}

/// The check right before DATA: while a sender talks to a slow server, its claim is taken over
/// (as happens when its renewals could not reach the database for a whole TTL). It abandons the
/// transaction without sending the message body; the new claim's holder delivers the only copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_whose_claim_was_taken_over_never_sends_the_message_body() {
    let stack = Stack::start().await;
    let sink = Sink::started(&["--delay", "1.5"]).await;
    let mut config = stack.notifier_config(sink.port);
    config.concurrency = 1;
    let notifier = stack.notifier(config).await;
    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&ada, "ada@slow.test", user::EmailVerification::SendCode)
        .await;
    // The server has been offered the recipient and holds back its reply for 1.5 s: the sender
    // is between RCPT and DATA. Another owner takes the claim for two seconds.
    eventually("the recipient offered", WAIT, || async {
        Ok(sink.rcpts().iter().any(|r| r == "ada@slow.test").then_some(()))
    })
    .await
    .unwrap();
    let taken = sqlx::query(
        "UPDATE notification.deliveries SET claimed_by = gen_random_uuid(), \
           claim_expires_at = clock_timestamp() + interval '2 seconds' \
         WHERE user_id = $1::uuid AND status = 'sending'",
    )
    .bind(&ada)
    .execute(&stack.db.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(taken, 1);
    eventually("the first sender to give up its send", WAIT, || async {
        Ok((notifier.metrics.claims_lost.get() == 1).then_some(()))
    })
    .await
    .unwrap();
    assert!(
        sink.messages_to("ada@slow.test").is_empty(),
        "no body after a lost claim"
    );
    assert_eq!(notifier.metrics.sent.get(), 0);

    // The foreign claim expires unrecorded; the delivery is claimed again and sent once.
    let sent = stack.wait_status(&ada, "sent").await;
    assert_eq!(sent.attempts, 2, "{sent:?}");
    assert_eq!(sink.messages_to("ada@slow.test").len(), 1);
    assert_eq!(notifier.metrics.sent.get(), 1);
    notifier.stop().await;
    stack.stop().await;
}

/// An instance's template override, set over the notifier's gRPC API, is what German users get;
/// an override that would hide the code is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_override_set_over_grpc_is_used_for_its_language() {
    use cairn_proto::notification::v1 as pb;
    let stack = Stack::start().await;
    let sink = Sink::started(&[]).await;
    let notifier = stack.notifier(stack.notifier_config(sink.port)).await;
    let mut client = notifier.client();
    let set = |text: &str| pb::SetEmailTemplateRequest {
        kind: pb::MessageKind::EmailVerification as i32,
        language: "de".into(),
        r#override: Some(pb::TemplateParts {
            subject: "Ihr Code für {{ organisation }}".into(),
            html: String::new(),
            text: text.into(),
        }),
    };
    let refused = client
        .set_email_template(authed(&stack.admin.token, set("Kein Code hier")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    client
        .set_email_template(authed(
            &stack.admin.token,
            set("Moin {{ name }}, Ihr Code:\n{{ code }}\n"),
        ))
        .await
        .unwrap();
    let got = client
        .get_email_template(authed(
            &stack.admin.token,
            pb::GetEmailTemplateRequest {
                kind: 0,
                language: "DE".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.language, "de");
    assert!(got.r#override.unwrap().text.starts_with("Moin"));
    assert!(got.defaults.unwrap().subject.contains("Bestätigen"));

    let grete = stack.add_user("grete", "de-AT").await;
    let ada = stack.add_user("ada", "en").await;
    stack
        .set_email(&grete, "grete@new.test", user::EmailVerification::SendCode)
        .await;
    stack
        .set_email(&ada, "ada@new.test", user::EmailVerification::SendCode)
        .await;
    let de = &sink.wait_for("grete@new.test", 1).await[0];
    let en = &sink.wait_for("ada@new.test", 1).await[0];
    assert_eq!(de["subject"], "Ihr Code für Default");
    assert!(de["text"].as_str().unwrap().starts_with("Moin Ada grete"), "{de}");
    // The HTML part had no override: the German default.
    assert!(de["html"].as_str().unwrap().contains(&code_in(de)));
    assert!(en["subject"].as_str().unwrap().contains("verify your email"));
    verify(&stack, &grete, &code_in(de)).await.unwrap();
    notifier.stop().await;
    stack.stop().await;
}

/// Issue 13: a transaction left prepared (`PREPARE TRANSACTION`) holds the event store's
/// visibility horizon, and with it every reader, until someone ends it. A private cluster with
/// `max_prepared_transactions > 0` (the shared server has 0); a replica's `/metrics` counts the
/// prepared transaction at once, its `/readyz` turns 503 naming the gid and its age once it is
/// older than the threshold (10 s), and ready again after `ROLLBACK PREPARED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_left_prepared_makes_the_service_not_ready_naming_its_gid() {
    let cluster = tokio::task::spawn_blocking(|| {
        cairn_testkit::PrivateCluster::start(&["max_prepared_transactions=4"])
    })
    .await
    .unwrap()
    .unwrap();
    let mut config = cairn_notifier::Config::for_tests(&cluster.url, &cairn_stack::new_keys().unwrap());
    config.nats_url = cairn_testkit::nats_url();
    (config.stream_name, config.subject_prefix) = cairn_testkit::unique_stream();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = cairn_notifier::start(config, shutdown.clone()).await.unwrap();
    let http = service.http_addr;
    let get = |path: &'static str| async move { cairn_testkit::http_get(http, path).await.unwrap() };
    eventually("the replica ready", WAIT, || async {
        Ok((get("/readyz").await.0 == 200).then_some(()))
    })
    .await
    .unwrap();

    let admin = sqlx::PgPool::connect(&cluster.url).await.unwrap();
    sqlx::query("CREATE TABLE held (x int)")
        .execute(&admin)
        .await
        .unwrap();
    let mut session = admin.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; INSERT INTO held VALUES (1); PREPARE TRANSACTION 'cairn-test-held'")
        .execute(&mut *session)
        .await
        .unwrap();
    drop(session); // the prepared transaction outlives its session
    let (_, metrics) = get("/metrics").await;
    assert!(metrics.contains("\ncairn_prepared_transactions 1\n"), "{metrics}");
    // Younger than the threshold: ready still.
    assert_eq!(get("/readyz").await.0, 200);

    let (status, body) = eventually("the replica not ready", Duration::from_secs(30), || async {
        let (status, body) = get("/readyz").await;
        Ok((status == 503).then_some((status, body)))
    })
    .await
    .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("prepared_transactions"), "{body}");
    assert!(
        body.contains("'cairn-test-held' (database postgres, owner postgres, prepared 1"),
        "{body}"
    );
    assert!(body.contains("ROLLBACK PREPARED"), "{body}");
    let (_, metrics) = get("/metrics").await;
    let oldest: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_prepared_transactions_oldest_age_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(oldest > 10.0, "{oldest}");
    eprintln!("MEASURED /readyz with a prepared transaction: {body}");

    sqlx::query("ROLLBACK PREPARED 'cairn-test-held'")
        .execute(&admin)
        .await
        .unwrap();
    eventually("the replica ready again", WAIT, || async {
        Ok((get("/readyz").await.0 == 200).then_some(()))
    })
    .await
    .unwrap();
    let (_, metrics) = get("/metrics").await;
    assert!(metrics.contains("\ncairn_prepared_transactions 0\n"), "{metrics}");
    assert!(
        metrics.contains("\ncairn_prepared_transactions_oldest_age_seconds 0"),
        "{metrics}"
    );
    admin.close().await;
    shutdown.cancel();
    service.wait().await.unwrap();
    drop(cluster);
}
