//! The operator console end to end against the whole stack: the page in headless Chromium
//! (Debian's `chromium`, which `scripts/test` installs and names in `CAIRN_TEST_CHROMIUM`), its
//! JSON endpoints' authentication, authorisation, tenancy and input checks, and retrying and
//! skipping a failed event over HTTP while the projector runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_auth::Role;
use cairn_proto::user::v1 as user;
use cairn_stack::{Options, Response, Stack, chromium, request};
use cairn_testkit::eventually;
use serde_json::Value;
use std::time::Duration;
use tonic::Request;

const DEADLINE: Duration = Duration::from_secs(60);
const PROJECTIONS: [&str; 5] = ["groups", "instances", "milestones", "orgs", "users"];

/// Makes the users read model refuse users whose name starts with `poison`: a cause of failure
/// that an operator can remove. The message carries markup, to prove the page renders it as text.
async fn poison_users(stack: &Stack) {
    sqlx::raw_sql(
        "CREATE FUNCTION projections.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.user_name LIKE 'poison%' THEN \
             RAISE EXCEPTION 'user % refused: <b id=\"injected\">markup</b>', NEW.user_name; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER poison BEFORE INSERT ON projections.users FOR EACH ROW EXECUTE FUNCTION projections.poison();",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
}

async fn cure_users(stack: &Stack) {
    sqlx::raw_sql("DROP TRIGGER poison ON projections.users")
        .execute(&stack.db.pool)
        .await
        .unwrap();
}

/// Adds a human user over gRPC (commands do not wait for the read models).
async fn add_user(stack: &Stack, name: &str) -> String {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = Request::new(user::AddHumanUserRequest {
        user_name: name.into(),
        profile: Some(user::HumanProfile {
            display_name: format!("User {name}"),
            emails: vec![user::Email {
                value: format!("{name}@example.com"),
                r#type: "work".into(),
                primary: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.admin.token.as_str()).parse().unwrap(),
    );
    user::user_service_client::UserServiceClient::new(channel)
        .add_human_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}

async fn user_projected(stack: &Stack, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projections.users WHERE user_name = $1)")
        .bind(name)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap()
}

async fn call(stack: &Stack, method: &str, path: &str, token: Option<&str>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    request(stack.api_http, method, path, &headers, None)
        .await
        .unwrap()
}

async fn admin_call(stack: &Stack, method: &str, path: &str) -> Response {
    call(stack, method, path, Some(stack.admin.token.as_str())).await
}

fn assert_problem(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let body = response.json();
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{what}: {body}"
    );
    assert!(body["type"].is_string(), "{what}: {body}");
}

/// The failed event of `projection` in `status` whose error mentions `needle`, once it exists.
async fn failed_event(stack: &Stack, projection: &str, status: &str, needle: &str) -> Value {
    eventually(
        &format!("a {status} failed event of {projection} about {needle}"),
        DEADLINE,
        || async {
            let response = admin_call(
                stack,
                "GET",
                &format!("/api/v1/admin/projections/failed-events?projection={projection}&status={status}"),
            )
            .await;
            assert_eq!(response.status, 200, "{}", response.body);
            Ok(response.json()["failed_events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["error"].as_str().is_some_and(|m| m.contains(needle)))
                .cloned())
        },
    )
    .await
    .unwrap()
}

async fn health_of(stack: &Stack, projection: &str) -> Value {
    let response = admin_call(stack, "GET", "/api/v1/admin/projections/health").await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["projection"] == projection)
        .cloned()
        .unwrap_or(Value::Null)
}

fn action_path(event: &Value, action: &str) -> String {
    let (position, offset) = event["position"].as_str().unwrap().split_once('.').unwrap();
    format!(
        "/api/v1/admin/projections/failed-events/{}/{}/{position}/{offset}/{action}",
        event["projection"].as_str().unwrap(),
        event["instance_id"].as_str().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_page_shows_every_projection_and_a_failed_event_in_headless_chromium() {
    let binary = std::env::var("CAIRN_TEST_CHROMIUM").expect(
        "CAIRN_TEST_CHROMIUM must name Debian's chromium (scripts/test installs it and sets it to /usr/bin/chromium)",
    );
    let stack = Stack::start_with(Options::default().projector_max_attempts(1000))
        .await
        .unwrap();
    let instance = stack.admin.instance_id.to_string();
    poison_users(&stack).await;
    add_user(&stack, "poison-ada").await;
    add_user(&stack, "grace").await;
    failed_event(&stack, "users", "retrying", "poison-ada").await;
    eventually("every projection to report", DEADLINE, || async {
        let response = admin_call(&stack, "GET", "/api/v1/admin/projections/health").await;
        let names: Vec<String> = response.json()["projections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["projection"].as_str().unwrap().to_owned())
            .collect();
        Ok((names == PROJECTIONS).then_some(()))
    })
    .await
    .unwrap();

    // The page itself needs no token; it is static and strict.
    let page = call(&stack, "GET", "/console/projections", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'self'") && csp.contains("default-src 'none'"))
    );
    assert!(page.body.contains("/console/assets/common.js"));
    assert!(page.body.contains("/console/assets/console.js"));
    for asset in [
        "/console/assets/console.css",
        "/console/assets/common.js",
        "/console/assets/console.js",
        "/console/assets/actions.js",
    ] {
        let response = call(&stack, "GET", asset, None).await;
        assert_eq!(response.status, 200, "{asset}");
        assert!(!response.body.is_empty());
        assert!(
            !response.body.contains("innerHTML"),
            "{asset}: the pages render data as text only"
        );
    }

    let url = format!(
        "http://{}/console/projections#token={}",
        stack.api_http,
        stack.admin.token.as_str()
    );
    let output = chromium(&binary, &["--dump-dom".into(), url.clone()])
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("data-loaded=\"true\""),
        "the page did not load its data; status {:?}\nDOM:\n{dom}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for projection in PROJECTIONS {
        let row = format!("<tr data-projection=\"{projection}\" data-instance=\"{instance}\" data-status=\"");
        assert!(dom.contains(&row), "no row for {projection}:\n{dom}");
    }
    assert!(
        dom.contains(&format!(
            "<tr data-projection=\"users\" data-instance=\"{instance}\" data-status=\"retrying\""
        )),
        "users waits behind the failing event:\n{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<tr data-projection=\"orgs\" data-instance=\"{instance}\" data-status=\"active\""
        )),
        "{dom}"
    );
    assert!(dom.contains(&format!("<code>{instance}</code>")), "{dom}");
    let failed_row = dom
        .split("<tbody>")
        .nth(2)
        .and_then(|t| t.split("</tbody>").next())
        .expect("a failed-events table body");
    assert!(failed_row.contains("data-status=\"retrying\""), "{failed_row}");
    assert!(failed_row.contains("user.human.added"), "{failed_row}");
    assert!(failed_row.contains(">Retry</button>") && failed_row.contains(">Skip</button>"));
    assert!(
        failed_row.contains("&lt;b id=\"injected\"&gt;markup&lt;/b&gt;")
            && !dom.contains("<b id=\"injected\">"),
        "data must be rendered as text, never as markup:\n{failed_row}"
    );
    assert!(
        !dom.contains(stack.admin.token.as_str()),
        "the token does not end up in the page"
    );

    // A refused token brings the token form back with the reason, and shows no data.
    let refused = format!(
        "http://{}/console/projections#token=cairn_pat_refused",
        stack.api_http
    );
    let output = chromium(&binary, &["--dump-dom".into(), refused]).await.unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dom.contains("<form id=\"login\">"), "the form is shown:\n{dom}");
    assert!(dom.contains("The token was refused (401)"), "{dom}");
    assert!(
        !dom.contains("data-loaded") && !dom.contains("<tr data-projection"),
        "{dom}"
    );

    // A screenshot, kept under the target directory for people to look at.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("projections.png");
    let _ = std::fs::remove_file(&shot);
    let output = chromium(&binary, &[format!("--screenshot={}", shot.display()), url])
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a suspiciously small screenshot: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_endpoints_need_an_instance_admin_and_stay_in_the_callers_instance() {
    let stack = Stack::start_with(Options::default().projector_max_attempts(1000))
        .await
        .unwrap();
    poison_users(&stack).await;
    add_user(&stack, "poison-bob").await;
    let event = failed_event(&stack, "users", "retrying", "poison-bob").await;
    let retry = action_path(&event, "retry");
    let skip = action_path(&event, "skip");
    let list = "/api/v1/admin/projections/failed-events";
    let health = "/api/v1/admin/projections/health";

    // No or a bad token: 401, with a challenge.
    for (method, path) in [("GET", list), ("POST", retry.as_str()), ("POST", skip.as_str())] {
        for token in [None, Some("cairn_pat_nonsense"), Some("Basic abc")] {
            let response = call(&stack, method, path, token).await;
            assert_problem(&response, 401, &format!("{method} {path} with {token:?}"));
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Valid tokens without the instance-administration permission: 403.
    let read_only = stack.token_with(&[Role::ReadOnly]).await.unwrap();
    let managers = stack
        .token_with(&[Role::UserManager, Role::OrgAdmin])
        .await
        .unwrap();
    for token in [read_only.as_str(), managers.as_str(), stack.scim_token.as_str()] {
        for (method, path) in [
            ("GET", list),
            ("GET", health),
            ("POST", retry.as_str()),
            ("POST", skip.as_str()),
        ] {
            assert_problem(
                &call(&stack, method, path, Some(token)).await,
                403,
                &format!("{method} {path}"),
            );
        }
    }
    // Malformed ids and parameters: 400, naming the field.
    let (projection, instance) = (
        event["projection"].as_str().unwrap(),
        event["instance_id"].as_str().unwrap(),
    );
    let base = "/api/v1/admin/projections/failed-events";
    for (path, field) in [
        (format!("{base}/users/not-a-uuid/1/0/retry"), "instance"),
        (format!("{base}/users/{instance}/x/0/retry"), "position"),
        (format!("{base}/users/{instance}/-1/0/skip"), "position"),
        (format!("{base}/users/{instance}/1/0.5/skip"), "offset"),
        (format!("{base}/users/{instance}/1/99999999999/skip"), "offset"),
        (format!("{base}/Users%3B/{instance}/1/0/retry"), "projection"),
        (format!("{list}?status=broken"), "status"),
        (format!("{list}?limit=0"), "limit"),
        (format!("{list}?limit=many"), "limit"),
        (format!("{list}?projection=../etc"), "projection"),
        (format!("{list}?unknown=1"), "query"),
    ] {
        let method = if path.ends_with("retry") || path.ends_with("skip") {
            "POST"
        } else {
            "GET"
        };
        let response = admin_call(&stack, method, &path).await;
        assert_problem(&response, 400, &path);
        assert_eq!(
            response.json()["invalid_params"][0]["name"],
            field,
            "{path}: {}",
            response.body
        );
    }
    // Well-formed but unknown: 404.
    let (position, offset) = event["position"].as_str().unwrap().split_once('.').unwrap();
    for path in [
        format!(
            "{base}/{projection}/{instance}/{position}/{}/retry",
            offset.parse::<i32>().unwrap() + 9
        ),
        format!("{base}/nothing/{instance}/{position}/{offset}/skip"),
        format!(
            "{base}/{projection}/{}/{position}/{offset}/skip",
            uuid::Uuid::new_v4()
        ),
    ] {
        assert_problem(&admin_call(&stack, "POST", &path).await, 404, &path);
    }

    // Another tenant's admin sees none of this instance's projections or failed events, and its
    // actions on them are "not found", exactly like a missing event.
    let other = stack.new_instance("Other").await.unwrap();
    let other_token = other.token.as_str();
    let response = call(&stack, "GET", list, Some(other_token)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["failed_events"], Value::Array(vec![]));
    eventually("the other instance's projections", DEADLINE, || async {
        let response = call(&stack, "GET", health, Some(other_token)).await;
        let rows = response.json()["projections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok((!rows.is_empty()).then_some(rows))
    })
    .await
    .unwrap()
    .iter()
    .for_each(|row| assert_eq!(row["instance_id"], other.instance_id.to_string(), "{row}"));
    for path in [&retry, &skip] {
        assert_problem(&call(&stack, "POST", path, Some(other_token)).await, 404, path);
    }
    let still = failed_event(&stack, "users", "retrying", "poison-bob").await;
    assert_eq!(still["status"], "retrying", "the other tenant changed nothing");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_and_retry_over_http_move_a_stuck_projection_on_without_losing_events() {
    let stack = Stack::start_with(Options::default().projector_max_attempts(1000))
        .await
        .unwrap();
    poison_users(&stack).await;
    add_user(&stack, "poison-a").await;
    let stuck = failed_event(&stack, "users", "retrying", "poison-a").await;
    assert_eq!(stuck["passed"], false);
    add_user(&stack, "after-a").await;

    // The projection waits behind the failing event: it is retrying and lags.
    eventually("users to show retrying with a lag", DEADLINE, || async {
        let users = health_of(&stack, "users").await;
        Ok((users["status"] == "retrying" && users["lag_events"].as_i64() >= Some(1)).then_some(()))
    })
    .await
    .unwrap();
    assert!(!user_projected(&stack, "after-a").await);

    // Skip: the projector passes over it and applies what follows.
    let response = admin_call(&stack, "POST", &action_path(&stuck, "skip")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["failed_event"]["status"], "skipped");
    eventually("after-a to be projected", DEADLINE, || async {
        Ok(user_projected(&stack, "after-a").await.then_some(()))
    })
    .await
    .unwrap();
    assert!(
        !user_projected(&stack, "poison-a").await,
        "the skipped event was not applied"
    );
    let skipped = failed_event(&stack, "users", "skipped", "poison-a").await;
    assert_eq!(skipped["passed"], true);
    // Once passed it can only come back through a rebuild.
    let response = admin_call(&stack, "POST", &action_path(&skipped, "retry")).await;
    assert_problem(&response, 422, "retry of a passed event");
    assert!(response.json()["detail"].as_str().unwrap().contains("rebuild"));

    // Retry: a new failing event gets a fresh attempt budget; once the operator has removed the
    // cause, it applies, and so does what waited behind it.
    add_user(&stack, "poison-b").await;
    let stuck = failed_event(&stack, "users", "retrying", "poison-b").await;
    add_user(&stack, "after-b").await;
    let response = admin_call(&stack, "POST", &action_path(&stuck, "retry")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let retried = &response.json()["failed_event"];
    assert_eq!(
        (&retried["status"], &retried["failure_count"]),
        (&Value::from("retrying"), &Value::from(0))
    );
    cure_users(&stack).await;
    let resolved = failed_event(&stack, "users", "resolved", "poison-b").await;
    assert_eq!(resolved["passed"], true);
    for name in ["poison-b", "after-b"] {
        eventually(&format!("{name} to be projected"), DEADLINE, || async {
            Ok(user_projected(&stack, name).await.then_some(()))
        })
        .await
        .unwrap();
    }
    let users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projections.users WHERE user_name IN ('poison-a', 'after-a', 'poison-b', 'after-b')",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(users, 3, "every event but the skipped one applied, each once");
    eventually("users to be active again", DEADLINE, || async {
        let users = health_of(&stack, "users").await;
        Ok((users["status"] == "active" && users["lag_events"] == 0).then_some(users))
    })
    .await
    .map(|users| {
        assert_eq!(users["skipped_events"], 1, "{users}");
        assert_eq!(
            users["error_count"], 1,
            "only the skipped event still counts: {users}"
        );
    })
    .unwrap();
    assert_problem(
        &admin_call(&stack, "POST", &action_path(&resolved, "skip")).await,
        422,
        "skip of a resolved event",
    );
    stack.stop().await.unwrap();
}
