//! User and token management over HTTP, against `understudy run` on loopback: admins add,
//! change and delete users and create, list and revoke tokens; CSRF on cookie sessions; the
//! last admin stays; no password, hash or listed token in any answer; each change audited.
//! Also the session limits of `[server]`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

fn start(setup: &Setup) -> RunGuard {
    let child = setup.spawn_run();
    let up = wait_until(Duration::from_secs(60), || setup.api("GET", "/api/status").is_some_and(|a| a.status == 200));
    assert!(up, "the API never answered\n{}", setup.log());
    child
}

/// A request with a JSON body and `headers` (whole lines).
fn send(setup: &Setup, method: &str, path: &str, headers: &[String], body: serde_json::Value) -> Answer {
    let mut h = vec!["Content-Type: application/json".to_owned()];
    h.extend_from_slice(headers);
    setup.request(method, path, &h, body.to_string().as_bytes()).expect("the API answers")
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

/// As the admin `test`, with its token.
fn admin(setup: &Setup, method: &str, path: &str, body: serde_json::Value) -> Answer {
    send(setup, method, path, &[bearer(&setup.token)], body)
}

fn login(setup: &Setup, user: &str, pw: &str) -> Answer {
    send(setup, "POST", "/api/login", &[], json!({ "username": user, "password": pw }))
}

#[test]
fn admins_manage_users_and_tokens_over_http() {
    let setup = Setup::new(4, "session_idle = \"1h\"\nsession_max = \"2h\"", "");
    let mut child = start(&setup);
    let alice_pw = "alice-first-password";

    // Add: 201, the user without any secret; duplicates and bad fields are refused by name.
    let a = admin(&setup, "POST", "/api/users", json!({ "name": "alice", "role": "viewer", "channels": "1-2", "password": alice_pw }));
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json()["channels"], "1-2");
    assert!(!a.text().contains(alice_pw) && !a.text().contains("argon2"), "{}", a.text());
    let dup = admin(&setup, "POST", "/api/users", json!({ "name": "alice", "role": "viewer", "password": alice_pw }));
    assert_eq!(dup.status, 409, "{}", dup.text());
    let bad_role = admin(&setup, "POST", "/api/users", json!({ "name": "bob", "role": "boss", "password": alice_pw }));
    assert!(bad_role.status == 400 && bad_role.text().contains("role"), "{}", bad_role.text());
    let bad_name = admin(&setup, "POST", "/api/users", json!({ "name": "a b", "role": "viewer", "password": alice_pw }));
    assert!(bad_name.status == 400 && bad_name.text().contains("user name"), "{}", bad_name.text());
    let weak = admin(&setup, "POST", "/api/users", json!({ "name": "bob", "role": "viewer", "password": "x" }));
    assert!(weak.status == 400 && weak.text().contains("password"), "{}", weak.text());
    let list = admin(&setup, "GET", "/api/users", json!({}));
    let lj = list.json();
    let names: Vec<&str> = lj["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "test"]);
    assert!(!list.text().contains("argon2") && !list.text().contains("hash"), "{}", list.text());

    // A viewer may not manage users.
    let alice = login(&setup, "alice", alice_pw);
    assert_eq!(alice.status, 200, "{}", alice.text());
    let alice_cookie = alice.cookie();
    let alice_csrf = alice.json()["csrf"].as_str().unwrap().to_owned();
    let h = [format!("Cookie: {alice_cookie}"), format!("X-CSRF-Token: {alice_csrf}")];
    assert_eq!(send(&setup, "GET", "/api/users", &h, json!({})).status, 403);
    assert_eq!(send(&setup, "POST", "/api/tokens", &h, json!({ "user": "alice" })).status, 403);

    // The admin's own browser session: changes need the CSRF token; the cookie lives session_max.
    let s = login(&setup, "test", ADMIN_PASSWORD);
    assert!(s.header("set-cookie").unwrap().contains("Max-Age=7200"), "{}", s.head);
    let cookie = format!("Cookie: {}", s.cookie());
    let csrf = format!("X-CSRF-Token: {}", s.json()["csrf"].as_str().unwrap());
    let change = json!({ "role": "operator", "channels": "1-3" });
    let no_csrf = send(&setup, "PUT", "/api/users/alice", std::slice::from_ref(&cookie), change.clone());
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.text());
    let ok = send(&setup, "PUT", "/api/users/alice", &[cookie.clone(), csrf.clone()], change);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!((ok.json()["role"].as_str(), ok.json()["channels"].as_str()), (Some("operator"), Some("1-3")));
    // The new rights apply to alice's open session at once.
    let sess = send(&setup, "GET", "/api/session", std::slice::from_ref(&h[0]), json!({}));
    assert_eq!(sess.json()["role"], "operator", "{}", sess.text());
    assert_eq!(send(&setup, "PUT", "/api/users/nobody", &[cookie.clone(), csrf.clone()], json!({ "role": "viewer" })).status, 404);

    // A new password ends alice's sessions; the new one logs in, the old one does not.
    let new_pw = "alice-second-password";
    assert_eq!(admin(&setup, "PUT", "/api/users/alice", json!({ "password": new_pw })).status, 200);
    assert_eq!(send(&setup, "GET", "/api/session", std::slice::from_ref(&h[0]), json!({})).status, 401);
    assert_eq!(login(&setup, "alice", alice_pw).status, 401);
    assert_eq!(login(&setup, "alice", new_pw).status, 200);

    // Tokens: the value once, in the creating answer; scoped; listed without it; revocable.
    let t = admin(&setup, "POST", "/api/tokens", json!({ "user": "alice", "channels": "1", "expires": "1h" }));
    assert_eq!(t.status, 201, "{}", t.text());
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let id = t.json()["id"].as_i64().unwrap();
    let st = send(&setup, "GET", "/api/session", &[bearer(&token)], json!({}));
    assert_eq!((st.status, st.json()["user"].as_str(), st.json()["channels"].as_str()), (200, Some("alice"), Some("1")));
    let listed = admin(&setup, "GET", "/api/tokens", json!({}));
    assert!(!listed.text().contains(&token), "a listed token shows its value");
    let mine = listed.json()["tokens"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap();
    assert_eq!((mine["user"].as_str(), mine["state"].as_str()), (Some("alice"), Some("active")));
    assert_eq!(admin(&setup, "POST", "/api/tokens", json!({ "user": "nobody" })).status, 404);
    assert_eq!(admin(&setup, "POST", "/api/tokens", json!({ "user": "alice", "expires": "soon" })).status, 400);
    assert_eq!(admin(&setup, "DELETE", &format!("/api/tokens/{id}"), json!({})).status, 204);
    assert_eq!(send(&setup, "GET", "/api/session", &[bearer(&token)], json!({})).status, 401);
    assert_eq!(admin(&setup, "DELETE", &format!("/api/tokens/{id}"), json!({})).status, 404);
    let listed = admin(&setup, "GET", "/api/tokens", json!({}));
    assert!(listed.json()["tokens"].as_array().unwrap().iter().any(|x| x["id"] == id && x["state"] == "revoked"));

    // The last admin can be neither demoted nor deleted.
    let demote = admin(&setup, "PUT", "/api/users/test", json!({ "role": "viewer" }));
    assert!(demote.status == 409 && demote.text().contains("only admin"), "{}", demote.text());
    assert_eq!(admin(&setup, "DELETE", "/api/users/test", json!({})).status, 409);
    // Deleting a user takes their tokens with them.
    let t2 = admin(&setup, "POST", "/api/tokens", json!({ "user": "alice" })).json()["token"].as_str().unwrap().to_owned();
    assert_eq!(admin(&setup, "DELETE", "/api/users/alice", json!({})).status, 204);
    assert_eq!(admin(&setup, "DELETE", "/api/users/alice", json!({})).status, 404);
    assert_eq!(send(&setup, "GET", "/api/session", &[bearer(&t2)], json!({})).status, 401);

    // Each change is in the audit trail, by the admin, with no secret in it.
    let audit = admin(&setup, "GET", "/api/audit", json!({}));
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    for action in ["user_add", "user_change", "token_create", "token_revoke", "user_del"] {
        assert!(entries.iter().any(|e| e["action"] == action && e["user"] == "test" && e["result"] == "ok"), "no {action} entry: {entries:?}");
    }
    let change = entries.iter().find(|e| e["action"] == "user_change" && e["detail"]["password_changed"] == true).expect("password change audited");
    assert_eq!(change["detail"]["name"], "alice");
    for secret in [alice_pw, new_pw, token.as_str(), t2.as_str()] {
        assert!(!audit.text().contains(secret), "a secret in the audit trail");
    }
    sigterm(&mut child);
    for secret in [alice_pw, new_pw, token.as_str(), t2.as_str()] {
        assert!(!setup.log().contains(secret), "a secret in the log");
    }
}

#[test]
fn session_limits_are_validated() {
    let config = |server_extra: &str| {
        format!("[server]\nname = \"t\"\nchannels = 1\nstate_dir = \"/tmp/x\"\n{server_extra}\n[[volume]]\npath = \"/tmp/x\"\n")
    };
    let err = |extra: &str| understudy::config::Config::parse(&config(extra), Path::new("u.toml")).unwrap_err().to_string();
    assert!(err("session_idle = \"10s\"").contains("server.session_idle"));
    assert!(err("session_idle = \"2h\"\nsession_max = \"1h\"").contains("server.session_max"));
    assert!(err("session_max = \"400d\"").contains("server.session_max") || err("session_max = \"9000h\"").contains("server.session_max"));
    let cfg = understudy::config::Config::parse(&config("session_idle = \"30m\"\nsession_max = \"8h\""), Path::new("u.toml")).unwrap();
    assert_eq!((cfg.server.sessions.idle_s, cfg.server.sessions.max_s), (1800, 8 * 3600));
    let d = understudy::config::Config::parse(&config(""), Path::new("u.toml")).unwrap();
    assert_eq!((d.server.sessions.idle_s, d.server.sessions.max_s), (12 * 3600, 7 * 24 * 3600));
}

/// An admin limited to some channels, or a narrowed admin token, grants no more than it has:
/// users and tokens with broader rights are refused (403, saying so), and users with more
/// rights can be neither changed nor deleted. Also the `metrics` token scope over HTTP.
#[test]
fn narrowed_admins_grant_no_more_than_they_have() {
    let setup = Setup::new(4, "", "");
    let mut child = start(&setup);
    setup.add_user("ada", "admin", "1-2", "ada-password-1");
    let ada = setup.create_token(&["--user", "ada"]);
    let narrow = setup.create_token(&["--user", "test", "--channels", "1-2"]);
    let as_ = |token: &str, method: &str, path: &str, body: serde_json::Value| send(&setup, method, path, &[bearer(token)], body);
    let refused = |a: &Answer, what: &str| {
        assert_eq!(a.status, 403, "{what}: {}", a.text());
        assert!(a.text().contains("beyond"), "{what}: no sentence: {}", a.text());
    };

    for t in [&ada, &narrow] {
        // A user on more channels than the caller's, or on all of them: refused.
        for ch in [None, Some("all"), Some("1-3"), Some("4")] {
            let mut body = json!({ "name": "eve", "role": "viewer", "password": "eve-password-1" });
            if let Some(ch) = ch {
                body["channels"] = json!(ch);
            }
            refused(&as_(t, "POST", "/api/users", body), &format!("user on channels {ch:?}"));
        }
        // A token of the full admin `test` not narrowed to the caller's channels: refused.
        refused(&as_(t, "POST", "/api/tokens", json!({ "user": "test" })), "token of test on all channels");
        refused(&as_(t, "POST", "/api/tokens", json!({ "user": "test", "channels": "2-3" })), "token of test on 2-3");
        // The full admin can be neither changed (its password reset) nor deleted.
        refused(&as_(t, "PUT", "/api/users/test", json!({ "password": "taken-over-password" })), "password of test");
        refused(&as_(t, "DELETE", "/api/users/test", json!({})), "delete test");
    }
    assert_eq!(login(&setup, "test", ADMIN_PASSWORD).status, 200, "the admin's password is unchanged");
    let users = admin(&setup, "GET", "/api/users", json!({})).json();
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "no user was added: {users}");

    // Within the caller's rights: allowed.
    let a = as_(&ada, "POST", "/api/users", json!({ "name": "vic", "role": "viewer", "channels": "2", "password": "vic-password-1" }));
    assert_eq!(a.status, 201, "{}", a.text());
    let a = as_(&narrow, "POST", "/api/tokens", json!({ "user": "test", "channels": "1" }));
    assert_eq!(a.status, 201, "{}", a.text());
    let a = as_(&ada, "PUT", "/api/users/vic", json!({ "channels": "1-2" }));
    assert_eq!(a.status, 200, "{}", a.text());
    refused(&as_(&ada, "PUT", "/api/users/vic", json!({ "channels": "1-4" })), "vic widened past ada");
    assert_eq!(as_(&ada, "DELETE", "/api/users/vic", json!({})).status, 204);
    // The full admin still may.
    assert_eq!(admin(&setup, "POST", "/api/tokens", json!({ "user": "ada", "channels": "all" })).status, 201);

    // A metrics-scoped token over HTTP: stored and listed with its scope, /metrics only.
    let bad = admin(&setup, "POST", "/api/tokens", json!({ "user": "test", "scope": "everything" }));
    assert!(bad.status == 400 && bad.text().contains("scope"), "{}", bad.text());
    setup.add_user("val", "viewer", "all", "val-password-1");
    let viewer_metrics = admin(&setup, "POST", "/api/tokens", json!({ "user": "val", "scope": "metrics" }));
    assert!(viewer_metrics.status == 400 && viewer_metrics.text().contains("metrics"), "a viewer has no metrics right: {}", viewer_metrics.text());
    let m = admin(&setup, "POST", "/api/tokens", json!({ "user": "test", "scope": "metrics" }));
    assert_eq!((m.status, m.json()["scope"].as_str()), (201, Some("metrics")), "{}", m.text());
    let token = m.json()["token"].as_str().unwrap().to_owned();
    let id = m.json()["id"].clone();
    let listed = admin(&setup, "GET", "/api/tokens", json!({})).json();
    assert!(listed["tokens"].as_array().unwrap().iter().any(|t| t["id"] == id && t["scope"] == "metrics"), "{listed}");
    let cli_list = setup.cli(&["token", "list"]);
    assert!(cli_list.lines().any(|l| l.split_whitespace().next() == Some(id.to_string().as_str()) && l.contains("metrics")), "{cli_list}");
    let scraped = as_(&token, "GET", "/metrics", json!({}));
    assert_eq!(scraped.status, 200, "{}", scraped.text());
    assert!(scraped.text().contains("understudy_build_info"));
    for path in ["/api/status", "/api/users", "/api/tokens", "/api/config/cameras", "/api/channels/1/recordings", "/api/session"] {
        assert_eq!(as_(&token, "GET", path, json!({})).status, 403, "{path} with a metrics token");
    }
    // A metrics token cannot mint a broader one either (it lacks the users right).
    assert_eq!(as_(&token, "POST", "/api/tokens", json!({ "user": "test" })).status, 403);
    sigterm(&mut child);
}
