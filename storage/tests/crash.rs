//! A real crash: a child process records two channels and is killed with SIGKILL mid-run;
//! then files are torn further (cut inside a fragment, zeros appended, a file with no init)
//! and the store is reopened: everything is repaired, cataloged, clean, and no frame the
//! child saw become durable is lost.
//!
//! `harness = false`: `main` is the parent; with `UNDERSTUDY_CRASH_CHILD` set it is the child.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use understudy_storage::{InputFrame, Store};

const CHILD_ENV: &str = "UNDERSTUDY_CRASH_CHILD";
const CHANNELS: [u32; 2] = [1, 2];
/// Segments of 3 s (staggered): at the kill, channel 1 is writing a segment from 5 s holding
/// two whole fragments; channel 2 one from 6 s holding one.
const SEGMENT: Duration = Duration::from_secs(3);

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    } else {
        parent();
        println!("test crash_then_repair ... ok");
    }
}

/// Records 6 s per channel, reports what is durable, writes some more, then waits to be killed.
fn child(dir: &Path) {
    let base: i64 = std::env::var("UNDERSTUDY_CRASH_BASE")
        .unwrap()
        .parse()
        .unwrap();
    let clip = h264_clip(6, "320x240");
    let store = Store::open(config(dir, &[("v1", None)], SEGMENT)).unwrap();
    let mut writers: Vec<_> = CHANNELS
        .iter()
        .map(|&c| store.channel_writer(c, 400_000).unwrap())
        .collect();
    for w in &mut writers {
        feed(w, &clip, base, 1, None);
    }
    // The last second is still in the muxer; everything before it becomes durable.
    for (w, c) in writers.iter().zip(CHANNELS) {
        let st = w.stats();
        assert!(
            wait_until(Duration::from_secs(60), || st.frames_durable() >= 125),
            "channel {c}"
        );
        println!("durable {c} {}", st.frames_durable());
    }
    // More footage, written but (mostly) not yet synced when the kill comes.
    let clip_len = clip.frames.len() as i64 * FRAME_90K;
    for w in &mut writers {
        for (rel, key, data) in clip.frames.iter().take(50) {
            let f = InputFrame {
                cts_offset: 0,
                time_90k: base + clip_len + rel,
                key: *key,
                data: data.clone(),
            };
            w.push(&clip.params, f).unwrap();
        }
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn parent() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_time_90k();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, tmp.path())
        .env("UNDERSTUDY_CRASH_BASE", base.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut durable = std::collections::HashMap::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["durable", c, n] => {
                durable.insert(c.parse::<u32>().unwrap(), n.parse::<u64>().unwrap());
            }
            ["ready"] => break,
            _ => panic!("unexpected child output {line:?}"),
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(durable.len(), 2);

    // Tear files further, as a power loss might.
    let vol = tmp.path().join("v1");
    let newest = |c: u32| -> std::path::PathBuf {
        let files = mp4_files(&vol.join(format!("ch{c:03}")));
        files.into_iter().max().unwrap()
    };
    let cut = newest(1);
    let len = std::fs::metadata(&cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    let zeroed = newest(2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&zeroed)
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let date_dir = cut.parent().unwrap();
    let garbage = date_dir.join("20000101T000000.000Z.mp4");
    let garbage = date_dir
        .parent()
        .unwrap()
        .join("2000-01-01")
        .join(garbage.file_name().unwrap());
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, b"\0\0\0\x18ftypis").unwrap();

    let cfg = config(tmp.path(), &[("v1", None)], SEGMENT);
    let store = Store::open(cfg).unwrap();
    assert!(!garbage.exists(), "file without a complete init is deleted");
    let mut cataloged = 0;
    for c in CHANNELS {
        let recs = store.recordings(c, None, None).unwrap();
        assert!(
            recs.iter().all(|r| !r.open),
            "channel {c}: nothing left open"
        );
        let frames: u64 = recs.iter().map(|r| r.frames).sum();
        assert!(
            frames >= durable[&c],
            "channel {c}: {frames} frames cataloged < {} durable before the crash",
            durable[&c]
        );
        assert_eq!(recs[0].start_90k, base);
        for r in &recs {
            assert_eq!(
                std::fs::metadata(&r.path).unwrap().len(),
                r.bytes,
                "{}",
                r.path.display()
            );
            assert_ffprobe_clean(&r.path);
            assert_decodes(&r.path);
            assert_eq!(ffprobe_frames(&r.path), r.frames, "{}", r.path.display());
        }
        cataloged += recs.len();
    }
    assert_eq!(mp4_files(&vol).len(), cataloged, "every file is cataloged");
    let events = store.events_since(0, 1000).unwrap();
    let repaired: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "segment_repaired")
        .collect();
    assert!(repaired.len() >= 2, "{events:?}");
    for p in [&cut, &zeroed] {
        assert!(
            repaired
                .iter()
                .any(|e| e.detail["path"] == p.display().to_string()),
            "{} repaired",
            p.display()
        );
    }
    assert!(events
        .iter()
        .any(|e| e.kind == "segment_removed" && e.detail["path"] == garbage.display().to_string()));

    // And recording goes on after the crash.
    let clip = h264_clip(2, "320x240");
    let mut w = store.channel_writer(1, 400_000).unwrap();
    let later = base + 60 * 90_000;
    feed(&mut w, &clip, later, 1, None);
    w.close().unwrap();
    let last = store.recordings(1, Some(later), None).unwrap();
    assert_eq!(last.iter().map(|r| r.frames).sum::<u64>(), 50);
    store.shutdown().unwrap();
}
