//! The operator page at `GET /`: served by `understudy run`, driven in a real headless
//! Chromium like an operator would (mouse clicks on the channel and on a recording), and
//! checked through the DOM: live status, recordings list, playback without a media error, an
//! API error shown as a sentence, events, and no script errors.
//!
//! Chromium is Debian's (`apt-get install chromium`, done by `tests/run-all.sh`), driven over
//! the DevTools protocol (tests/cdp), so the page carries no test hooks.
//! `UI_SCREENSHOT=/path.png` saves a screenshot of the page while it plays.

mod cdp;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cdp::{chromium_path, Browser};
use common::*;
use serde_json::json;


const BULK_EVENTS: usize = 2500;

/// Appends events to the catalog as `run` would (SQLite allows a second writer; WAL).
fn add_events(catalog: &Path, kind: &str, n: usize, detail: &str) {
    let mut db = rusqlite::Connection::open(catalog)
        .unwrap_or_else(|e| panic!("{}: {e}", catalog.display()));
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let tx = db.transaction().unwrap();
    for _ in 0..n {
        tx.execute("INSERT INTO event (time_ms, kind, main, channel, detail) VALUES (?1, ?2, NULL, NULL, ?3)", rusqlite::params![now_ms, kind, detail])
            .unwrap();
    }
    tx.commit().unwrap();
}

fn newest_event_id(catalog: &Path) -> i64 {
    let db = rusqlite::Connection::open(catalog).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.query_row("SELECT max(id) FROM event", [], |r| r.get(0))
        .unwrap()
}

/// The ids of the events table's rows, top to bottom.
const EVENT_IDS: &str =
    "[...document.querySelectorAll('#events tbody tr')].map((tr) => Number(tr.dataset.key))";

/// Static guarantees of the page itself: self-contained, and nothing put in as HTML.
#[test]
fn page_is_self_contained_and_uses_text_only() {
    let page = include_str!("../src/api/ui/index.html");
    for bad in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "rel=\"stylesheet\"",
        "href=\"http",
        "href=\"//",
        "src=\"//",
        "@import",
        "src=\"http",
        "url(http",
    ] {
        assert!(!page.contains(bad), "the page contains {bad:?}");
    }
    for needed in [
        "/api/status",
        "/api/events",
        "/recordings?",
        "/play.mp4?",
        "<video",
    ] {
        assert!(page.contains(needed), "the page lacks {needed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_page_shows_status_and_plays_a_recording() {
    chromium_path(); // fail fast, before recording, when the browser is missing
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(
        4,
        "segment_duration = \"4s\"",
        &format!(
            "[[camera]]\nchannel = 1\nurl = \"{}\"\nname = \"lobby\"\n",
            sim.url(1)
        ),
    );
    let mut child = setup.spawn_run();
    let ok = wait_until_async(Duration::from_secs(90), || {
        setup
            .api_get("/api/channels/1/recordings")
            .and_then(|v| v["recordings"].as_array().map(|a| a.len() >= 2))
            .unwrap_or(false)
    })
    .await;
    assert!(ok, "channel 1 never had two segments\n{}", setup.log());

    // A long-lived box: more events than one API page, so the page must find the newest.
    let catalog = setup.dir.path().join("state").join("catalog.db");
    add_events(&catalog, "ui_test_bulk", BULK_EVENTS, "{\"n\":1}");

    // The page itself needs no login (it holds no data and shows the login screen).
    let page = setup.request("GET", "/", &[], b"").expect("GET /");
    let (head, body) = (page.head.clone(), page.text());
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(
        body,
        include_str!("../src/api/ui/index.html"),
        "GET / serves the page as embedded"
    );

    let url = format!("https://127.0.0.1:{}/", setup.api);
    let log = setup.dir.path().join("chromium.log");
    let shot = std::env::var_os("UI_SCREENSHOT").map(PathBuf::from);
    let (report, page_errors) =
        tokio::task::spawn_blocking(move || drive(&url, &log, &catalog, shot.as_deref()))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    eprintln!("{report}");
    sigterm(&mut child);
    sim.shutdown().await;
    assert!(
        page_errors.is_empty(),
        "the page had script errors: {page_errors:#?}"
    );
}

/// Drives the page; panics on the first unmet expectation. Returns what it saw and the page's
/// script errors.
fn drive(url: &str, log: &Path, catalog: &Path, shot: Option<&Path>) -> (String, Vec<String>) {
    const LIMIT: Duration = Duration::from_secs(90);
    let mut b = Browser::open(log);
    b.call("Page.navigate", json!({ "url": url })).unwrap();

    // The login screen first; a wrong password is refused on it, the right one opens the page.
    b.wait_for("the login screen", LIMIT, "document.getElementById('login').hidden ? null : true");
    let login = |b: &mut Browser, pw: &str| {
        b.eval(&format!(
            "document.getElementById('login-user').value = 'test'; document.getElementById('login-password').value = {pw:?}; true"
        ))
        .unwrap();
        b.click("#login-btn");
    };
    login(&mut b, "wrong-password");
    b.wait_for(
        "a refused login",
        LIMIT,
        "(() => { const e = document.getElementById('login-error'); return !e.hidden && e.textContent.includes('wrong') ? e.textContent : null; })()",
    );
    login(&mut b, ADMIN_PASSWORD);

    // Live status: channel 1 recording, from the 2 s refresh.
    let state = b.wait_for(
        "channel 1 shown as recording",
        LIMIT,
        "(() => { const td = document.querySelector('#channels tr[data-channel=\"1\"] td[data-col=state]'); \
         return td && td.textContent === 'recording' ? td.textContent : null; })()",
    );
    let header = b
        .eval("[document.getElementById('server-name').textContent, document.getElementById('recording-count').textContent, document.getElementById('capacity').textContent, document.getElementById('volumes').textContent]")
        .unwrap();
    assert_eq!(header[0], "Understudy · test", "{header}");
    assert_eq!(
        (header[1].as_str(), header[2].as_str()),
        (Some("1"), Some("4")),
        "{header}"
    );
    assert!(
        header[3]
            .as_str()
            .is_some_and(|v| v.contains("used") && v.contains("free")),
        "{header}"
    );
    let row = b
        .eval("[...document.querySelectorAll('#channels tr[data-channel=\"1\"] td')].map((td) => [td.dataset.col, td.textContent])")
        .unwrap();
    let cell = |col: &str| {
        row.as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == col)
            .map(|c| c[1].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        (cell("owner"), cell("camera")),
        ("local".to_owned(), "lobby".to_owned()),
        "{row}"
    );
    assert!(cell("frames").parse::<u64>().is_ok_and(|f| f > 0), "{row}");

    // Select channel 1 by clicking its row: the recordings of the last 5 minutes are listed.
    b.click("#channels tr[data-channel=\"1\"] td[data-col=camera]");
    let n = b.wait_for(
        "channel 1's recordings listed",
        LIMIT,
        "document.querySelectorAll('#recordings li button').length || null",
    );
    let selected = b
        .eval("[document.getElementById('play-channel').value, document.querySelector('#channels tr[data-channel=\"1\"]').classList.contains('selected')]")
        .unwrap();
    assert_eq!(selected, json!(["1", true]));

    // Play the most recent (listed first) by clicking it.
    let newest = b
        .eval("document.querySelector('#recordings li').dataset.start")
        .unwrap();
    b.click("#recordings li button");
    let played = b.wait_for(
        "the recording to play",
        LIMIT,
        "(() => { const v = document.getElementById('video'); \
         if (v.error) return { error: v.error.code, message: v.error.message }; \
         const q = v.getVideoPlaybackQuality(); \
         return v.readyState >= 2 && (v.ended || v.currentTime > Math.min(0.3, v.duration / 2)) && q.totalVideoFrames > 0 \
           ? { src: v.getAttribute('src'), width: v.videoWidth, height: v.videoHeight, duration: v.duration, t: v.currentTime, \
               frames: q.totalVideoFrames, page_error: document.getElementById('play-error').hidden ? null : document.getElementById('play-error').textContent, \
               playing_item: document.querySelector('#recordings li.playing') !== null } : null; })()",
    );
    assert!(
        played.get("error").is_none(),
        "media error: {played}\n{}",
        b.log_tail()
    );
    assert_eq!(
        (played["width"].as_u64(), played["height"].as_u64()),
        (Some(640), Some(360)),
        "{played}"
    );
    // The recording itself, not a GOP more: the duration is the recording's length.
    let length = b
        .eval("(() => { const li = document.querySelector('#recordings li'); return (new Date(li.dataset.end) - new Date(li.dataset.start)) / 1000; })()")
        .unwrap();
    let (duration, length) = (
        played["duration"].as_f64().unwrap_or(f64::NAN),
        length.as_f64().unwrap_or(f64::NAN),
    );
    assert!(
        duration > 0.0 && (duration - length).abs() < 0.5,
        "duration {duration} s, recording {length} s: {played}"
    );
    assert!(played["page_error"].is_null(), "{played}");
    assert_eq!(played["playing_item"], true, "{played}");
    let src = played["src"].as_str().unwrap_or_default();
    assert!(
        src.starts_with("/api/channels/1/play.mp4?from="),
        "{played}"
    );
    if let Some(p) = shot {
        b.screenshot(p);
    }

    // An API error (nothing recorded in that range) is shown as the API's sentence, and the
    // player is emptied instead of showing a broken video.
    b.eval(
        "(() => { const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); }; \
         set('play-from', '2001-01-01T10:00:00'); set('play-to', '2001-01-01T10:05:00'); })()",
    )
    .unwrap();
    b.click("#play-range-btn");
    let err = b.wait_for(
        "the API error shown",
        LIMIT,
        "(() => { const e = document.getElementById('play-error'); return e.hidden ? null : \
         { text: e.textContent, src: document.getElementById('video').getAttribute('src'), media_error: document.getElementById('video').error }; })()",
    );
    assert!(
        err["text"]
            .as_str()
            .is_some_and(|t| t.contains("nothing recorded")),
        "{err}"
    );
    assert!(
        err["src"].is_null() && err["media_error"].is_null(),
        "{err}"
    );

    // Events: the newest 50 of the whole log, newest first, though the API pages 1000 at a time.
    let ids = b.wait_for(
        "50 events",
        LIMIT,
        &format!("(() => {{ const ids = {EVENT_IDS}; return ids.length === 50 ? ids : null; }})()"),
    );
    let ids: Vec<i64> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    assert_eq!(
        ids[0],
        newest_event_id(catalog),
        "the top row is not the newest event: {ids:?}"
    );
    assert!(ids[0] > BULK_EVENTS as i64, "{ids:?}");

    // A new event appears on top by the next refresh, its detail as text (markup stays text).
    let hostile = r#"{"note":"<b id=\"injected\">bold</b><img src=x onerror=alert(1)>"}"#;
    add_events(catalog, "ui_test_marker", 1, hostile);
    let marker_id = newest_event_id(catalog);
    let top = b.wait_for(
        "the new event on top",
        LIMIT,
        "(() => { const tr = document.querySelector('#events tbody tr');          return tr && tr.querySelector('td[data-col=kind]').textContent === 'ui_test_marker'            ? { id: Number(tr.dataset.key), detail: tr.querySelector('td[data-col=detail]').textContent, rows: document.querySelectorAll('#events tbody tr').length,                injected: document.getElementById('injected') !== null || document.querySelector('#events img') !== null } : null; })()",
    );
    assert_eq!(top["id"], marker_id, "{top}");
    assert_eq!(top["detail"], hostile, "{top}");
    assert_eq!(top["injected"], false, "{top}");
    assert_eq!(top["rows"], 50, "{top}");

    let report = format!("channel 1: {state}; {n} recordings listed, newest {newest}; played {played}; error shown: {err}; events top {top}");
    // Let pending console/exception events arrive, then collect them.
    let _ = b.eval("new Promise((ok) => setTimeout(ok, 500))");
    let errors = std::mem::take(&mut b.page_errors);
    (report, errors)
}
