//! A consumer that stops reading must not block ingest: whole GOPs are dropped, and delivery
//! resumes with `SessionEnded` and a key frame.

mod common;

use common::{next_item, spec, wait_until, GstServer, LONG};
use tokio_util::sync::CancellationToken;
use understudy_recorder::{spawn_channel, ChannelState, IngestItem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_whole_gops_and_resumes_at_a_key_frame() {
    common::init_tracing();
    let server = GstServer::start(&[]);
    let mut s = spec(1, server.url());
    s.queue_frames = 5;
    let (tx, mut rx) = s.queue();
    let handle = spawn_channel(s, tx, CancellationToken::new());
    // A second channel on the same server, with a consumer that keeps up.
    let s2 = spec(2, server.url());
    let (tx2, mut rx2) = s2.queue();
    let other = spawn_channel(s2, tx2, CancellationToken::new());

    // Nobody reads: ingest must keep running and drop (GOP = 25 frames at 25 fps).
    let snap = wait_until("two dropped GOPs", LONG, &handle.stats, |s| {
        s.dropped_gops >= 2
    })
    .await;
    assert_eq!(snap.state, ChannelState::Recording);
    assert!(snap.dropped_frames > snap.dropped_gops, "{snap:?}");
    assert!(snap.frames >= 5 + snap.dropped_frames, "{snap:?}");

    // The stuck consumer of channel 1 does not hold up channel 2.
    for i in 0..50 {
        match next_item(&mut rx2).await {
            IngestItem::Frame(f) => assert!(i > 0 || f.key),
            IngestItem::SessionEnded => panic!("channel 2 ended a run"),
            IngestItem::Audio(_) => panic!("camsim serves no audio here"),
        }
    }
    let snap2 = other.stats.snapshot();
    assert_eq!(
        (snap2.dropped_gops, snap2.dropped_frames),
        (0, 0),
        "{snap2:?}"
    );
    other.stop().await;

    // What was queued before the overflow: the first 5 frames of the session, key first.
    let mut items = Vec::new();
    for _ in 0..5 {
        items.push(next_item(&mut rx).await);
    }
    for (i, item) in items.iter().enumerate() {
        match item {
            IngestItem::Frame(f) => assert!(f.key == (i == 0), "frame {i} key={}", f.key),
            IngestItem::SessionEnded => panic!("SessionEnded at {i}, before any overflow"),
            IngestItem::Audio(_) => panic!("camsim serves no audio here"),
        }
    }
    let IngestItem::Frame(last_before) = &items[4] else {
        unreachable!()
    };
    // Then the gap is marked, and delivery resumes at a key frame with a later time.
    assert!(matches!(next_item(&mut rx).await, IngestItem::SessionEnded));
    let IngestItem::Frame(resumed) = next_item(&mut rx).await else {
        panic!("expected a frame after SessionEnded");
    };
    assert!(resumed.key, "first frame after a drop must be a key frame");
    assert!(resumed.time_90k > last_before.time_90k + 90_000 / 2);

    // Reading on (a loaded machine may still overflow the tiny queue now and then): times keep
    // increasing and every gap is followed by a key frame.
    let mut prev = resumed;
    let mut after_gap = false;
    for _ in 0..30 {
        match next_item(&mut rx).await {
            IngestItem::Frame(f) => {
                assert!(f.time_90k > prev.time_90k);
                assert!(f.key || !after_gap, "non-key frame right after a gap");
                after_gap = false;
                prev = f;
            }
            IngestItem::SessionEnded => after_gap = true,
            IngestItem::Audio(_) => panic!("camsim serves no audio here"),
        }
    }
    handle.stop().await;
}
