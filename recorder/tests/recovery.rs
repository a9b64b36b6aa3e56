//! Failure handling against a real GStreamer RTSP server: nothing listening, server killed and
//! restarted on the same port, server frozen (stall).

mod common;

use std::time::Duration;

use common::{drain_until_closed, next_frame, next_item, spec, wait_until, GstServer, LONG};
use tokio_util::sync::CancellationToken;
use understudy_recorder::{spawn_channel, ChannelState, IngestItem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_backs_off_and_counts_reconnects() {
    common::init_tracing();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = spec(1, format!("rtsp://127.0.0.1:{port}/cam").parse().unwrap());
    let (tx, mut rx) = s.queue();
    let shutdown = CancellationToken::new();
    let handle = spawn_channel(s, tx, shutdown.clone());

    let snap = wait_until("backoff with an error", LONG, &handle.stats, |s| {
        s.state == ChannelState::Backoff && s.last_error.is_some()
    })
    .await;
    let err = snap.last_error.unwrap();
    assert!(err.contains("DESCRIBE"), "{err}");
    assert!(
        err.contains(&port.to_string()),
        "error should name the server: {err}"
    );
    wait_until("3 reconnects", LONG, &handle.stats, |s| s.reconnects >= 3).await;
    let snap = handle.stats.snapshot();
    assert_eq!((snap.frames, snap.sessions), (0, 0));

    // The shared shutdown token stops the channel too.
    let stats = handle.stats.clone();
    shutdown.cancel();
    tokio::time::timeout(LONG, handle.task)
        .await
        .expect("task ends after shutdown")
        .expect("task did not panic");
    assert_eq!(stats.snapshot().state, ChannelState::Stopped);
    assert!(drain_until_closed(&mut rx).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_then_back_on_same_port() {
    common::init_tracing();
    let mut server = GstServer::start(&[]);
    let s = spec(1, server.url());
    let (tx, mut rx) = s.queue();
    let handle = spawn_channel(s, tx, CancellationToken::new());

    let mut last = next_frame(&mut rx).await;
    assert!(last.key);
    for _ in 0..10 {
        last = next_frame(&mut rx).await;
    }
    server.kill();
    // The rest of the run, then SessionEnded.
    while let IngestItem::Frame(f) = next_item(&mut rx).await {
        last = f;
    }
    let snap = wait_until("backoff after the kill", LONG, &handle.stats, |s| {
        s.reconnects >= 1 && s.last_error.is_some()
    })
    .await;
    assert_ne!(snap.state, ChannelState::Recording);

    server.restart();
    let f = next_frame(&mut rx).await;
    assert!(f.key, "first frame after reconnect must be a key frame");
    assert!(f.time_90k > last.time_90k, "time went back across sessions");
    let snap = wait_until("recording again", LONG, &handle.stats, |s| {
        s.state == ChannelState::Recording
    })
    .await;
    assert!(snap.sessions >= 2, "{snap:?}");
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_a_stall_and_recovers() {
    common::init_tracing();
    let server = GstServer::start(&[]);
    let mut s = spec(1, server.url());
    s.stall_timeout = Duration::from_secs(2);
    let (tx, mut rx) = s.queue();
    let handle = spawn_channel(s, tx, CancellationToken::new());

    for _ in 0..5 {
        next_frame(&mut rx).await;
    }
    // SIGSTOP keeps the TCP connection open but nothing is sent: only our timeout notices.
    server.signal("STOP");
    loop {
        if let IngestItem::SessionEnded = next_item(&mut rx).await {
            break;
        }
    }
    let snap = handle.stats.snapshot();
    assert_eq!(
        snap.last_error.as_deref(),
        Some("no frames for 2 s"),
        "{snap:?}"
    );
    // Reconnecting to the frozen server: the kernel accepts, DESCRIBE gets no answer.
    let snap = wait_until("DESCRIBE timeout", LONG, &handle.stats, |s| {
        s.last_error.as_deref().is_some_and(|e| {
            e.starts_with("DESCRIBE rtsp://127.0.0.1:")
                && e.ends_with("/cam got no response within 2 s")
        })
    })
    .await;
    assert!(snap.reconnects >= 1);

    server.signal("CONT");
    let f = next_frame(&mut rx).await;
    assert!(f.key);
    wait_until("recording again", LONG, &handle.stats, |s| {
        s.state == ChannelState::Recording
    })
    .await;
    handle.stop().await;
    let rest = drain_until_closed(&mut rx).await;
    assert!(matches!(rest.last(), Some(IngestItem::SessionEnded)));
}
