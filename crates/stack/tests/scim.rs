//! The SCIM gateway end to end over HTTP against the whole stack: CRUD, filters, paging, ETags,
//! Bulk, recorded identity-provider sequences (Entra ID, Okta), hostile input, and the external
//! `scim2-tester` conformance suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cairn_stack::{Stack, request};
use serde_json::{Value, json};
use std::collections::HashMap;

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Ada", "familyName": format!("Lovelace {name}")},
        "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
    })
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    // Dotted paths; an extension URN (with dots inside) is matched as one key.
    let mut current = value;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(object) = current.as_object()
            && let Some(key) = object
                .keys()
                .filter(|k| rest == k.as_str() || rest.starts_with(&format!("{k}.")))
                .max_by_key(|k| k.len())
        {
            current = &object[key];
            rest = rest[key.len()..].trim_start_matches('.');
            continue;
        }
        let (head, tail) = rest.split_once('.').unwrap_or((rest, ""));
        current = match current {
            Value::Array(items) => items.get(head.parse::<usize>().ok()?)?,
            Value::Object(map) => map.get(head)?,
            _ => return None,
        };
        rest = tail;
    }
    Some(current)
}

fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    vars.iter()
        .fold(text.to_owned(), |t, (k, v)| t.replace(&format!("{{{{{k}}}}}"), v))
}

async fn replay(stack: &Stack, file: &str) {
    let script: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/tests/idp/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap(),
    )
    .unwrap();
    let mut vars: HashMap<String, String> = HashMap::new();
    for (i, step) in script["steps"].as_array().unwrap().iter().enumerate() {
        let method = step["method"].as_str().unwrap();
        let path = substitute(step["path"].as_str().unwrap(), &vars);
        let body = step
            .get("body")
            .map(|b| serde_json::from_str::<Value>(&substitute(&b.to_string(), &vars)).unwrap());
        let response = stack.scim(method, &path, body.as_ref()).await.unwrap();
        let expected = step["expect"].as_u64().unwrap() as u16;
        assert_eq!(
            response.status, expected,
            "{file} step {i}: {method} {path}: {}",
            response.body
        );
        if response.status != 204 && response.status != 304 {
            assert!(
                response
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("application/scim+json")),
                "{file} step {i}: content type"
            );
        }
        let json = response.json();
        if let Some(capture) = step.get("capture").and_then(Value::as_object) {
            for (name, pointer) in capture {
                let value = lookup(&json, pointer.as_str().unwrap())
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_owned();
                vars.insert(name.clone(), value);
            }
        }
        if let Some(checks) = step.get("check").and_then(Value::as_object) {
            for (pointer, want) in checks {
                let want: Value = serde_json::from_str(&substitute(&want.to_string(), &vars)).unwrap();
                let got = lookup(&json, pointer);
                if want.is_null() {
                    assert!(
                        got.is_none_or(|g| g.is_null() || g.as_array().is_some_and(Vec::is_empty)),
                        "{file} step {i}: {pointer} should be absent, got {got:?}"
                    );
                } else {
                    assert_eq!(got, Some(&want), "{file} step {i}: {pointer} in {json}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entra_id_provisioning_sequence_replays() {
    let stack = Stack::start().await.unwrap();
    replay(&stack, "entra.json").await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn okta_provisioning_sequence_replays() {
    let stack = Stack::start().await.unwrap();
    replay(&stack, "okta.json").await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_filters_paging_etags_and_read_after_write() {
    let stack = Stack::start().await.unwrap();
    let created = stack.scim("POST", "/Users", Some(&user("ada"))).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let ada = created.json();
    let id = ada["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("location"), ada["meta"]["location"].as_str());
    let etag = created.header("etag").unwrap().to_owned();
    assert_eq!(etag, "W/\"1\"");

    // The write is visible to the very next read (no sleep anywhere).
    let got = stack.scim("GET", &format!("/Users/{id}"), None).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["userName"], "ada");
    let token = format!("Bearer {}", stack.scim_token);
    let not_modified = request(
        stack.scim,
        "GET",
        &format!("/scim/v2/Users/{id}"),
        &[("authorization", &token), ("if-none-match", &etag)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(not_modified.status, 304);

    // Uniqueness is case-insensitive.
    let duplicate = stack.scim("POST", "/Users", Some(&user("ADA"))).await.unwrap();
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.json()["scimType"], "uniqueness");

    for name in ["bob", "carol", "dave", "eve"] {
        assert_eq!(
            stack
                .scim("POST", "/Users", Some(&user(name)))
                .await
                .unwrap()
                .status,
            201
        );
    }
    let filtered = |filter: &str| {
        let query = format!(
            "/Users?filter={}",
            filter
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('[', "%5B")
                .replace(']', "%5D")
        );
        let stack = &stack;
        async move { stack.scim("GET", &query, None).await.unwrap().json() }
    };
    assert_eq!(filtered(r#"userName eq "ADA""#).await["totalResults"], 1);
    assert_eq!(
        filtered(r#"emails[type eq "work" and value ew "@example.com"]"#).await["totalResults"],
        5
    );
    assert_eq!(
        filtered(r#"name.familyName sw "Lovelace c""#).await["totalResults"],
        1
    );
    assert_eq!(
        filtered(r#"not (userName eq "ada") and active eq true"#).await["totalResults"],
        4
    );
    assert_eq!(
        filtered(r#"userName eq "bob" or userName eq "eve""#).await["totalResults"],
        2
    );
    assert_eq!(
        filtered(r#"meta.lastModified gt "2000-01-01T00:00:00Z""#).await["totalResults"],
        5
    );
    assert_eq!(filtered("title pr").await["totalResults"], 0);

    // 1-based paging over a stable sort.
    let page = stack
        .scim(
            "GET",
            "/Users?sortBy=userName&sortOrder=descending&startIndex=2&count=2&attributes=userName",
            None,
        )
        .await
        .unwrap()
        .json();
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["startIndex"], 2);
    let names: Vec<&str> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["dave", "carol"]);
    assert!(
        page["Resources"][0].get("emails").is_none(),
        "attributes=userName returns only what was asked"
    );

    // PATCH, then a stale If-Match is 412 and changes nothing.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let patched = stack
        .scim("PATCH", &format!("/Users/{id}"), Some(&patch))
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["active"], false);
    let stale = request(
        stack.scim,
        "PUT",
        &format!("/scim/v2/Users/{id}"),
        &[
            ("authorization", &token),
            ("content-type", "application/scim+json"),
            ("if-match", &etag),
        ],
        Some(&user("ada").to_string()),
    )
    .await
    .unwrap();
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(
        stack
            .scim("GET", &format!("/Users/{id}"), None)
            .await
            .unwrap()
            .json()["active"],
        false
    );

    // The password is write-only.
    let mut with_password = user("frank");
    with_password["password"] = json!("correct horse battery staple");
    let frank = stack.scim("POST", "/Users", Some(&with_password)).await.unwrap();
    assert_eq!(frank.status, 201);
    assert!(frank.json().get("password").is_none());

    let deleted = stack.scim("DELETE", &format!("/Users/{id}"), None).await.unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(
        stack
            .scim("GET", &format!("/Users/{id}"), None)
            .await
            .unwrap()
            .status,
        404
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_with_bulk_id_references_and_group_membership() {
    let stack = Stack::start().await.unwrap();
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "failOnErrors": 1,
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "u1", "data": user("grace")},
            {"method": "POST", "path": "/Users", "bulkId": "u2", "data": user("hopper")},
            {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Navy", "members": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}]}},
            {"method": "PATCH", "path": "/Groups/bulkId:g1", "data": {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": "members[value eq \"bulkId:u2\"]"}]}}
        ]
    });
    let response = stack.scim("POST", "/Bulk", Some(&bulk)).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let results = response.json()["Operations"].as_array().unwrap().clone();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["201", "201", "201", "200"], "{results:?}");
    let group_location = results[2]["location"].as_str().unwrap();
    let group_id = group_location.rsplit('/').next().unwrap();
    let group = stack
        .scim("GET", &format!("/Groups/{group_id}"), None)
        .await
        .unwrap()
        .json();
    assert_eq!(group["members"].as_array().unwrap().len(), 1);
    let grace_id = results[0]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(group["members"][0]["value"], grace_id.as_str());
    let grace = stack
        .scim("GET", &format!("/Users/{grace_id}"), None)
        .await
        .unwrap()
        .json();
    assert_eq!(grace["groups"][0]["value"], group_id);
    let by_member = stack
        .scim(
            "GET",
            &format!("/Groups?filter=members%5Bvalue%20eq%20%22{grace_id}%22%5D"),
            None,
        )
        .await
        .unwrap()
        .json();
    assert_eq!(by_member["totalResults"], 1);
    // Deleting the user removes it from its groups.
    assert_eq!(
        stack
            .scim("DELETE", &format!("/Users/{grace_id}"), None)
            .await
            .unwrap()
            .status,
        204
    );
    let group = stack
        .scim("GET", &format!("/Groups/{group_id}"), None)
        .await
        .unwrap()
        .json();
    assert!(group["members"].as_array().is_none_or(Vec::is_empty), "{group}");

    // Too many operations: 413.
    let too_many = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": (0..1001).map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")})).collect::<Vec<_>>()
    });
    assert_eq!(
        stack.scim("POST", "/Bulk", Some(&too_many)).await.unwrap().status,
        413
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_and_hostile_input_gets_a_clean_scim_error_and_changes_nothing() {
    let stack = Stack::start().await.unwrap();
    let base = "/scim/v2";
    // No token, a bogus token.
    for auth in [None, Some("Bearer cairn_scim_nope")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let response = request(stack.scim, "GET", &format!("{base}/Users"), &headers, None)
            .await
            .unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(
            response.json()["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert!(
            response
                .header("content-type")
                .unwrap()
                .starts_with("application/scim+json")
        );
    }
    let token = format!("Bearer {}", stack.scim_token);
    // Malformed JSON, a wrong content type, a body over the limit.
    let malformed = request(
        stack.scim,
        "POST",
        &format!("{base}/Users"),
        &[
            ("authorization", &token),
            ("content-type", "application/scim+json"),
        ],
        Some("{\"userName\": "),
    )
    .await
    .unwrap();
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["scimType"], "invalidSyntax");
    let wrong_type = request(
        stack.scim,
        "POST",
        &format!("{base}/Users"),
        &[("authorization", &token), ("content-type", "text/plain")],
        Some("{}"),
    )
    .await
    .unwrap();
    assert_eq!(wrong_type.status, 415);
    let big = json!({"userName": "big", "title": "x".repeat(1_100_000)}).to_string();
    let too_big = request(
        stack.scim,
        "POST",
        &format!("{base}/Users"),
        &[
            ("authorization", &token),
            ("content-type", "application/scim+json"),
        ],
        Some(&big),
    )
    .await
    .unwrap();
    assert_eq!(too_big.status, 413);
    // Hostile strings in filters: a clean 400 or an empty result, never a server error.
    let long = format!("userName eq \"{}\"", "a".repeat(5000));
    let deep = format!("{}userName eq \"x\"{}", "(".repeat(64), ")".repeat(64));
    for filter in [
        r#"userName eq "x' OR '1'='1""#,
        r#"userName eq "\"; DROP TABLE projections.users; --""#,
        r#"userName eq "\\\\""#,
        r#"userName co "%_\\""#,
        "displayName eq \"Zoë 🦀 \u{202e}\"",
        r#"userName eq"#,
        r#"nosuchattribute eq "x""#,
        r#"emails[type eq "work"]] eq 1"#,
        "userName eq \"x\" and (",
        long.as_str(),
        deep.as_str(),
    ] {
        let encoded: String = filter.bytes().map(|b| format!("%{b:02X}")).collect();
        let response = request(
            stack.scim,
            "GET",
            &format!("{base}/Users?filter={encoded}"),
            &[("authorization", &token)],
            None,
        )
        .await
        .unwrap();
        assert!(
            response.status == 200 || response.status == 400,
            "{filter:?}: {} {}",
            response.status,
            response.body
        );
        if response.status == 200 {
            assert_eq!(response.json()["totalResults"], 0, "{filter:?}");
        } else {
            assert_eq!(
                response.json()["scimType"],
                "invalidFilter",
                "{filter:?}: {}",
                response.body
            );
        }
    }
    // Hostile strings in fields are stored and returned as given.
    let hostile = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "o'brien\"; --", "title": "\\\\ ' \" ; DROP", "displayName": "Zoë 🦀"});
    let created = stack.scim("POST", "/Users", Some(&hostile)).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["title"], "\\\\ ' \" ; DROP");
    let users = stack.scim("GET", "/Users", None).await.unwrap().json();
    assert_eq!(users["totalResults"], 1, "nothing else was written: {users}");
    // Discovery is read-only; /Me is not supported.
    assert_eq!(
        stack
            .scim("POST", "/Schemas", Some(&json!({})))
            .await
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        stack
            .scim("GET", "/ServiceProviderConfig", None)
            .await
            .unwrap()
            .json()["bulk"]["maxOperations"],
        1000
    );
    assert_eq!(stack.scim("GET", "/Me", None).await.unwrap().status, 501);
    stack.stop().await.unwrap();
}

/// The external conformance suite: `scim2 test` (scim2-cli running scim2-tester) against the live
/// gateway. `scripts/test` installs it and sets `CAIRN_TEST_SCIM2`. Every check must pass but the
/// one documented in docs/SCIM.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scim2_tester_conformance() {
    let scim2 = std::env::var("CAIRN_TEST_SCIM2")
        .expect("CAIRN_TEST_SCIM2 must point at the scim2 CLI (scripts/test installs it)");
    let stack = Stack::start().await.unwrap();
    let output = tokio::process::Command::new(&scim2)
        .arg("--url")
        .arg(stack.scim_url())
        .env(
            "SCIM_CLI_HEADERS",
            format!("Authorization: Bearer {}", stack.scim_token),
        )
        .arg("test")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let successes = text.lines().filter(|l| l.starts_with("SUCCESS")).count();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("ERROR") || l.starts_with("CRITICAL"))
        .map(|(i, l)| format!("{l} {}", lines.get(i + 1).unwrap_or(&"")))
        .collect();
    // docs/SCIM.md: Cairn always returns `active` (every user has an administrative state).
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| !e.contains("did not remove attribute 'active'"))
        .collect();
    eprintln!(
        "scim2-tester: {successes} checks passed, {} failed ({} documented)",
        errors.len(),
        errors.len() - unexpected.len()
    );
    assert!(successes >= 100, "the suite did not run: {text}");
    assert!(
        unexpected.is_empty(),
        "conformance failures:\n{}",
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    stack.stop().await.unwrap();
}

// ----- guarantee 2 over SCIM: concurrent writes ----------------------------------------------

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

/// Creates `count` users named `{prefix}{i}` and returns their ids.
async fn create_users(stack: &Stack, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let created = stack
            .scim("POST", "/Users", Some(&user(&format!("{prefix}{i}"))))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The member ids of a group: in the read model (a SCIM GET, which waits for the tenant's latest
/// write) and in the write model (the group aggregate folded from its events), with each one's
/// version.
async fn group_members_both_ways(
    stack: &Stack,
    group: &str,
) -> (
    (std::collections::BTreeSet<String>, String),
    (std::collections::BTreeSet<String>, i64),
) {
    use cairn_domain::Aggregate;
    let read = stack
        .scim("GET", &format!("/Groups/{group}"), None)
        .await
        .unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    let read = read.json();
    let read_members = read["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let written: cairn_domain::Group = stack
        .api()
        .exec
        .load(
            stack.admin.instance_id,
            cairn_domain::AggregateId::from_uuid(group.parse().unwrap()),
        )
        .await
        .unwrap();
    let written_members = written.members().iter().map(|m| m.to_string()).collect();
    (
        (read_members, read["meta"]["version"].as_str().unwrap().to_owned()),
        (written_members, written.sequence()),
    )
}

/// Guarantee 2 for group PATCH. Clients add members with the fast path (`add` of `members`, a
/// delta) while others remove members with a value-filter path the gateway can only apply to the
/// whole group (`members[value eq ".." and type eq "User"]`: read, apply, write back). Whatever the
/// interleaving, every add answered 200 is in the group at the end, every remove answered 200 is
/// not, and a write answered 409 changed nothing; the read model and the events agree. Before the
/// fix the slow path wrote back the member set it had read without pinning its version, so a
/// member added in between was silently dropped (and a concurrently removed one brought back),
/// with 200 for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_group_patches_never_lose_an_acknowledged_member_change() {
    const ROUNDS: usize = 3;
    const ADDERS: usize = 4;
    const REMOVERS: usize = 4;
    const PER_CLIENT: usize = 8;
    const BYSTANDERS: usize = 3;
    let stack = std::sync::Arc::new(Stack::start().await.unwrap());
    let mut failures = Vec::new();
    let mut statuses: HashMap<(&str, u16), usize> = HashMap::new();
    for round in 0..ROUNDS {
        let keepers = create_users(&stack, &format!("keep{round}-"), ADDERS * PER_CLIENT).await;
        let removables = create_users(&stack, &format!("drop{round}-"), REMOVERS * PER_CLIENT).await;
        let bystanders = create_users(&stack, &format!("stay{round}-"), BYSTANDERS).await;
        let initial: Vec<Value> = removables
            .iter()
            .chain(&bystanders)
            .map(|id| json!({"value": id}))
            .collect();
        let created = stack
            .scim(
                "POST",
                "/Groups",
                Some(&json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": format!("contended {round}"),
                    "members": initial,
                })),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let group = created.json()["id"].as_str().unwrap().to_owned();

        // Each client writes its own members one PATCH at a time; all clients run at once.
        let mut clients = tokio::task::JoinSet::new();
        for (kind, ids) in [("add", &keepers), ("remove", &removables)] {
            for chunk in ids.chunks(PER_CLIENT) {
                let (stack, group, chunk) = (stack.clone(), group.clone(), chunk.to_vec());
                clients.spawn(async move {
                    let mut outcomes = Vec::new();
                    for id in chunk {
                        let operation = if kind == "add" {
                            json!({"op": "add", "path": "members", "value": [{"value": id}]})
                        } else {
                            json!({"op": "remove", "path": format!("members[value eq \"{id}\" and type eq \"User\"]")})
                        };
                        let response = stack
                            .scim(
                                "PATCH",
                                &format!("/Groups/{group}?excludedAttributes=members"),
                                Some(&patch_body(json!([operation]))),
                            )
                            .await
                            .unwrap();
                        assert!(
                            response.status == 200 || response.status == 409,
                            "{kind} {id}: {} {}",
                            response.status,
                            response.body
                        );
                        outcomes.push((kind, id, response.status));
                    }
                    outcomes
                });
            }
        }
        let mut expected: std::collections::BTreeSet<String> = bystanders.iter().cloned().collect();
        while let Some(outcomes) = clients.join_next().await {
            for (kind, id, status) in outcomes.unwrap() {
                *statuses.entry((kind, status)).or_default() += 1;
                // 200: the change is in; 409: nothing changed.
                match (kind, status) {
                    ("add", 200) | ("remove", 409) => {
                        expected.insert(id);
                    }
                    _ => {}
                }
            }
        }

        let ((read, read_version), (written, written_sequence)) =
            group_members_both_ways(&stack, &group).await;
        assert_eq!(
            read_version,
            format!("W/\"{written_sequence}\""),
            "round {round}: the read model's version is the aggregate's sequence"
        );
        let lost_adds: Vec<&String> = keepers
            .iter()
            .filter(|k| expected.contains(*k) && !written.contains(*k))
            .collect();
        let resurrected: Vec<&String> = removables
            .iter()
            .filter(|r| !expected.contains(*r) && written.contains(*r))
            .collect();
        if written != expected || read != written {
            failures.push(format!(
                "round {round}: {} acknowledged adds lost, {} acknowledged removes undone, \
                 {} members expected, {} in the events, {} in the read model",
                lost_adds.len(),
                resurrected.len(),
                expected.len(),
                written.len(),
                read.len()
            ));
        }
    }
    eprintln!("statuses (kind, status) -> count: {statuses:?}");
    assert!(
        failures.is_empty(),
        "acknowledged member changes were lost:\n{}",
        failures.join("\n")
    );
    std::sync::Arc::try_unwrap(stack)
        .ok()
        .unwrap()
        .stop()
        .await
        .unwrap();
}

/// Guarantee 2's status codes: a write that meets a concurrent change answers `409` (or succeeds)
/// when the client sent no `If-Match`, and `412` only when it sent a version that is stale.
/// Several clients PUT and PATCH one user and one group at once without `If-Match`; then a PUT and
/// a PATCH with a stale `If-Match` must be 412 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_write_racing_another_change_is_never_412_without_if_match_and_412_with_a_stale_one() {
    const PUTTERS: usize = 6;
    const PATCHERS: usize = 2;
    const PER_CLIENT: usize = 25;
    let stack = std::sync::Arc::new(Stack::start().await.unwrap());
    let created = stack.scim("POST", "/Users", Some(&user("racer"))).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let racer = created.json()["id"].as_str().unwrap().to_owned();
    let members = create_users(&stack, "member", PUTTERS + PATCHERS).await;
    let created = stack
        .scim(
            "POST",
            "/Groups",
            Some(
                &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "raced"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.json()["id"].as_str().unwrap().to_owned();

    let mut clients = tokio::task::JoinSet::new();
    for (client, member) in members.iter().enumerate() {
        let (stack, racer, group, member) = (stack.clone(), racer.clone(), group.clone(), member.clone());
        clients.spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..PER_CLIENT {
                let title = format!("c{client}-{n}");
                let (method, path, body) = if client < PUTTERS {
                    let mut body = user("racer");
                    body["title"] = json!(title);
                    ("PUT", format!("/Users/{racer}"), body)
                } else {
                    let op = json!({"op": "replace", "path": "title", "value": title});
                    ("PATCH", format!("/Users/{racer}"), patch_body(json!([op])))
                };
                let response = stack.scim(method, &path, Some(&body)).await.unwrap();
                outcomes.push((
                    format!("{method} User"),
                    Some(title),
                    response.status,
                    response.body,
                ));
                // The group: PUT with a member list, or a PATCH adding a member.
                let (method, body) = if client < PUTTERS {
                    let body = json!({
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "raced",
                        "members": [{"value": member}],
                    });
                    ("PUT", body)
                } else {
                    let op = json!({"op": "add", "path": "members", "value": [{"value": member}]});
                    ("PATCH", patch_body(json!([op])))
                };
                let response = stack
                    .scim(method, &format!("/Groups/{group}"), Some(&body))
                    .await
                    .unwrap();
                outcomes.push((format!("{method} Group"), None, response.status, response.body));
            }
            outcomes
        });
    }
    let mut statuses: HashMap<(String, u16), usize> = HashMap::new();
    let mut wrong = Vec::new();
    let mut acknowledged_titles = std::collections::HashSet::new();
    while let Some(outcomes) = clients.join_next().await {
        for (what, title, status, body) in outcomes.unwrap() {
            *statuses.entry((what.clone(), status)).or_default() += 1;
            match status {
                200 => acknowledged_titles.extend(title),
                409 => {}
                _ => wrong.push(format!("{what} without If-Match: {status} {body}")),
            }
        }
    }
    eprintln!("statuses (request, status) -> count: {statuses:?}");
    wrong.truncate(10);
    assert!(
        wrong.is_empty(),
        "a conflict without If-Match must be 409:\n{}",
        wrong.join("\n")
    );
    let current = stack.scim("GET", &format!("/Users/{racer}"), None).await.unwrap();
    let title = current.json()["title"].as_str().unwrap().to_owned();
    assert!(
        acknowledged_titles.contains(&title),
        "the final title {title:?} is one a client was told was written"
    );

    // With a stale If-Match: 412, and nothing changes.
    let token = format!("Bearer {}", stack.scim_token);
    let headers = [
        ("authorization", token.as_str()),
        ("content-type", "application/scim+json"),
        ("if-match", "W/\"1\""),
    ];
    let mut stale_user = user("racer");
    stale_user["title"] = json!("stale");
    let stale_group_patch = patch_body(json!([
        {"op": "remove", "path": format!("members[value eq \"{}\" and type eq \"User\"]", members[0])}
    ]));
    for (method, path, body) in [
        ("PUT", format!("/Users/{racer}"), stale_user.clone()),
        (
            "PATCH",
            format!("/Users/{racer}"),
            patch_body(json!([{"op": "replace", "path": "title", "value": "stale"}])),
        ),
        (
            "PUT",
            format!("/Groups/{group}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "stale"}),
        ),
        ("PATCH", format!("/Groups/{group}"), stale_group_patch),
        (
            "PATCH",
            format!("/Groups/{group}"),
            patch_body(json!([{"op": "replace", "path": "displayName", "value": "stale"}])),
        ),
    ] {
        let before = stack.scim("GET", &path, None).await.unwrap();
        let response = request(
            stack.scim,
            method,
            &format!("/scim/v2{path}"),
            &headers,
            Some(&body.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(
            response.status, 412,
            "{method} {path} with a stale If-Match: {}",
            response.body
        );
        let after = stack.scim("GET", &path, None).await.unwrap();
        assert_eq!(before.json(), after.json(), "{method} {path} changed nothing");
    }
    // With the current version: written.
    let etag = current.header("etag").unwrap().to_owned();
    let response = request(
        stack.scim,
        "PUT",
        &format!("/scim/v2/Users/{racer}"),
        &[
            ("authorization", token.as_str()),
            ("content-type", "application/scim+json"),
            ("if-match", etag.as_str()),
        ],
        Some(&stale_user.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    std::sync::Arc::try_unwrap(stack)
        .ok()
        .unwrap()
        .stop()
        .await
        .unwrap();
}

/// A group PATCH whose path filters members on `display` (the member's displayName, which
/// responses leave out) finds them: it is applied to the group as read with each member's
/// display, and only what it changed is written. A filter that matches nobody writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_patch_can_filter_members_on_their_display_name() {
    let stack = Stack::start().await.unwrap();
    let mut ids = Vec::new();
    for (name, display) in [("alice", "Alice Liddell"), ("bob", "Bob Cratchit")] {
        let mut body = user(name);
        body["displayName"] = json!(display);
        let created = stack.scim("POST", "/Users", Some(&body)).await.unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    let created = stack
        .scim(
            "POST",
            "/Groups",
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Readers",
                "members": [{"value": ids[0]}, {"value": ids[1]}],
            })),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.json()["id"].as_str().unwrap().to_owned();
    let version = created.header("etag").unwrap().to_owned();

    let nobody = patch_body(json!([{"op": "remove", "path": "members[display eq \"Nobody\"]"}]));
    let unchanged = stack
        .scim("PATCH", &format!("/Groups/{group}"), Some(&nobody))
        .await
        .unwrap();
    assert_eq!(unchanged.status, 200, "{}", unchanged.body);
    assert_eq!(
        unchanged.header("etag"),
        Some(version.as_str()),
        "nothing was written"
    );
    assert_eq!(unchanged.json()["members"].as_array().unwrap().len(), 2);

    let alice = patch_body(json!([{"op": "remove", "path": "members[display eq \"alice liddell\"]"}]));
    let patched = stack
        .scim("PATCH", &format!("/Groups/{group}"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(
        patched.json()["members"],
        json!([{"value": ids[1], "$ref": format!("{}/Users/{}", stack.scim_url(), ids[1]), "type": "User"}]),
        "alice is gone, bob stays, and display is not returned"
    );
    let ((read, _), (written, _)) = group_members_both_ways(&stack, &group).await;
    assert_eq!(read, written);
    assert_eq!(read.into_iter().collect::<Vec<_>>(), vec![ids[1].clone()]);
    stack.stop().await.unwrap();
}

/// RFC 7644 §3.5.2: the operations of a PATCH are applied in order. A group PATCH read as one
/// member delta must not reorder them (command-api applies a delta as: replace the list, then add,
/// then remove).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_patch_applies_its_operations_in_order() {
    let stack = Stack::start().await.unwrap();
    let ids = create_users(&stack, "order", 2).await;
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let created = stack
        .scim(
            "POST",
            "/Groups",
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Ordered",
                "members": [{"value": a}],
            })),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.json()["id"].as_str().unwrap().to_owned();
    let cases = [
        (
            "remove a, then add a back",
            json!([
                {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
                {"op": "add", "path": "members", "value": [{"value": a}]},
            ]),
            vec![a.clone()],
        ),
        (
            "add b, then replace the list with a",
            json!([
                {"op": "add", "path": "members", "value": [{"value": b}]},
                {"op": "replace", "path": "members", "value": [{"value": a}]},
            ]),
            vec![a.clone()],
        ),
        (
            "add b, then remove every member",
            json!([
                {"op": "add", "path": "members", "value": [{"value": b}]},
                {"op": "remove", "path": "members"},
            ]),
            vec![],
        ),
        (
            "replace the list with b, then add a, then remove b",
            json!([
                {"op": "replace", "path": "members", "value": [{"value": b}]},
                {"op": "add", "path": "members", "value": [{"value": a}]},
                {"op": "remove", "path": "members", "value": [{"value": b}]},
            ]),
            vec![a.clone()],
        ),
    ];
    for (what, operations, expected) in cases {
        let response = stack
            .scim(
                "PATCH",
                &format!("/Groups/{group}"),
                Some(&patch_body(operations)),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{what}: {}", response.body);
        let ((read, _), (written, _)) = group_members_both_ways(&stack, &group).await;
        let expected: std::collections::BTreeSet<String> = expected.into_iter().collect();
        assert_eq!(written, expected, "{what}: the events");
        assert_eq!(read, expected, "{what}: the read model");
        // Back to [a] for the next case.
        let reset = stack
            .scim(
                "PUT",
                &format!("/Groups/{group}"),
                Some(&json!({"displayName": "Ordered", "members": [{"value": a}]})),
            )
            .await
            .unwrap();
        assert_eq!(reset.status, 200, "{}", reset.body);
    }
    stack.stop().await.unwrap();
}

/// An `Idempotency-Key` on a Bulk request covers each of its operations on its own: every
/// operation runs once, and the same request sent again (a client retrying after a lost response)
/// answers with the same resources instead of creating them again or refusing the key as reused.
#[tokio::test]
async fn a_bulk_request_with_an_idempotency_key_runs_each_operation_once_and_replays_on_retry() {
    let stack = Stack::start().await.unwrap();
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": user("kay")},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": user("liskov")},
            {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Turing Award", "members": [{"value": "bulkId:a"}, {"value": "bulkId:b"}]}}
        ]
    })
    .to_string();
    let token = format!("Bearer {}", stack.scim_token);
    let headers = [
        ("authorization", token.as_str()),
        ("content-type", "application/scim+json"),
        ("idempotency-key", "provisioning-run-7"),
    ];
    let outcome = |response: cairn_stack::Response| -> Vec<(String, String)> {
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()["Operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["status"].as_str().unwrap_or_default().to_owned(),
                    r["location"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let first = outcome(
        request(stack.scim, "POST", "/scim/v2/Bulk", &headers, Some(&bulk))
            .await
            .unwrap(),
    );
    let statuses: Vec<&str> = first.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["201", "201", "201"], "{first:?}");
    let again = outcome(
        request(stack.scim, "POST", "/scim/v2/Bulk", &headers, Some(&bulk))
            .await
            .unwrap(),
    );
    assert_eq!(again, first, "the retry answers with the same resources");
    for name in ["kay", "liskov"] {
        let found = stack
            .scim(
                "GET",
                &format!("/Users?filter=userName%20eq%20%22{name}%22"),
                None,
            )
            .await
            .unwrap()
            .json();
        assert_eq!(found["totalResults"], 1, "{name}: {found}");
    }
    stack.stop().await.unwrap();
}
