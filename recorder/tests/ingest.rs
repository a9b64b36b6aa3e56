//! Ingest from GStreamer's RTSP server over loopback: H.264 and H.265, TCP and UDP, credentials.

mod common;

use std::sync::Arc;

use common::{
    drain_until_closed, nal_types, next_frame, now_90k, spec, wait_until, GstServer, LONG,
};
use tokio_util::sync::CancellationToken;
use understudy_recorder::{
    spawn_channel, ChannelState, Codec, Credentials, Frame, IngestItem, TransportPolicy,
};

/// Receives `n` frames and checks what every consumer relies on.
async fn check_frames(
    rx: &mut tokio::sync::mpsc::Receiver<IngestItem>,
    n: usize,
    codec: Codec,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        frames.push(next_frame(rx).await);
    }
    let h265 = codec == Codec::H265;
    let first = &frames[0];
    assert!(first.key, "first frame of a session must be a key frame");
    // A key frame really is an IDR: H.264 nal_unit_type 5; H.265 IDR_W_RADL/IDR_N_LP (19/20).
    let types = nal_types(&first.data, h265);
    assert!(
        types
            .iter()
            .any(|&t| if h265 { t == 19 || t == 20 } else { t == 5 }),
        "key frame NAL types {types:?}"
    );
    assert!(
        (first.time_90k - now_90k()).abs() < 60 * 90_000,
        "time_90k {} is not near the wall clock",
        first.time_90k
    );
    let p = &first.params;
    assert_eq!(p.codec, codec);
    assert_eq!((p.width, p.height), (320, 240));
    let fourcc: &[u8] = if h265 { b"hvc1" } else { b"avc1" };
    assert_eq!(&p.sample_entry[4..8], fourcc);
    let box_len = u32::from_be_bytes(p.sample_entry[0..4].try_into().unwrap()) as usize;
    assert_eq!(box_len, p.sample_entry.len(), "sample entry box size");
    let config: &[u8] = if h265 { b"hvcC" } else { b"avcC" };
    assert!(p.sample_entry.windows(4).any(|w| w == config));
    assert!(
        p.rfc6381.starts_with(if h265 { "hvc1." } else { "avc1." }),
        "{}",
        p.rfc6381
    );

    let mut keys = 0;
    for pair in frames.windows(2) {
        assert!(
            pair[1].time_90k > pair[0].time_90k,
            "times must strictly increase: {} then {}",
            pair[0].time_90k,
            pair[1].time_90k
        );
        assert!(Arc::ptr_eq(&pair[0].params, &pair[1].params));
    }
    for f in &frames {
        nal_types(&f.data, h265); // checks the 4-byte length framing
        keys += usize::from(f.key);
    }
    // 25 fps (3600 ticks; more if UDP lost some) with a key frame every 25 frames. These are RTP
    // timestamps, so this does not depend on the machine keeping up.
    let span = frames[n - 1].time_90k - frames[0].time_90k;
    let per_frame = span / (n as i64 - 1);
    assert!(
        (2_000..=9_000).contains(&per_frame),
        "{per_frame} ticks per frame"
    );
    assert!(keys >= 2, "only {keys} key frames in {n}");
    frames
}

async fn record_and_check(server_args: &[&str], transport: TransportPolicy, codec: Codec) {
    common::init_tracing();
    let server = GstServer::start(server_args);
    let mut s = spec(1, server.url());
    s.transport = transport;
    let (tx, mut rx) = s.queue();
    let handle = spawn_channel(s, tx, CancellationToken::new());

    check_frames(&mut rx, 60, codec).await;

    let snap = wait_until("bitrate and fps", LONG, &handle.stats, |s| {
        s.bitrate_bps > 0 && s.fps > 1.0
    })
    .await;
    assert_eq!(snap.state, ChannelState::Recording);
    assert!(snap.frames >= 60 && snap.bytes > 0, "{snap:?}");
    assert_eq!(snap.sessions, 1);
    assert_eq!((snap.width, snap.height), (Some(320), Some(240)));
    assert!(snap.codec.is_some());
    assert!(snap.last_error.is_none(), "{snap:?}");
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["state"], "recording");

    let stats = handle.stats.clone();
    handle.stop().await;
    assert_eq!(stats.snapshot().state, ChannelState::Stopped);
    // After stop: the rest of the run, then SessionEnded, then the queue closes.
    let rest = drain_until_closed(&mut rx).await;
    assert!(
        matches!(rest.last(), Some(IngestItem::SessionEnded)),
        "last item before close must be SessionEnded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_over_tcp() {
    record_and_check(&[], TransportPolicy::Tcp, Codec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_over_tcp() {
    record_and_check(&["--codec", "h265"], TransportPolicy::Tcp, Codec::H265).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_over_udp() {
    record_and_check(&[], TransportPolicy::Udp, Codec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_work_and_never_leak() {
    common::init_tracing();
    const PASSWORD: &str = "wonderland-secret";
    const WRONG: &str = "not-the-password-42";
    let server = GstServer::start(&["--auth", &format!("alice:{PASSWORD}")]);

    // Right password, given embedded in the URL: moved out of it, and it works.
    let mut url = server.url();
    url.set_username("alice").unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    let good = spec(1, url);
    assert!(!good.url.as_str().contains(PASSWORD));
    assert!(!format!("{good:?}").contains(PASSWORD));
    let (tx, mut rx) = good.queue();
    let handle = spawn_channel(good, tx, CancellationToken::new());
    let f = next_frame(&mut rx).await;
    assert!(f.key);
    handle.stop().await;

    // Wrong password, given separately: a clear error that names neither password.
    let mut bad = spec(2, server.url());
    bad.credentials = Some(Credentials {
        username: "alice".into(),
        password: WRONG.into(),
    });
    let dbg = format!("{bad:?}");
    assert!(!dbg.contains(WRONG) && dbg.contains("alice"), "{dbg}");
    let (tx, mut rx) = bad.queue();
    let handle = spawn_channel(bad, tx, CancellationToken::new());
    let snap = wait_until("an authentication error", LONG, &handle.stats, |s| {
        s.last_error.is_some() && s.state == ChannelState::Error
    })
    .await;
    let err = snap.last_error.unwrap();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(WRONG) && !err.contains(PASSWORD), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let json = serde_json::to_string(&handle.stats.snapshot()).unwrap();
    assert!(!json.contains(WRONG));
    handle.stop().await;
    assert!(drain_until_closed(&mut rx).await.is_empty());
}
