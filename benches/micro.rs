//! Criterion micro-benches of the storage crate's hot paths: fragment muxing (frames/s), the
//! export read path (MB/s over a 10-minute range) and catalog range queries over a month of
//! 60 s segments for 100 channels, and the cost of a login (Argon2id) and of a token lookup hash. Frame sizes and the `avc1` sample entry come from
//! fixtures/h264-1080p25.mp4 (ffprobe); frame payloads are zeros (nothing here decodes them).
//! Files go under target/bench-micro/ on the real disk. See benches/README.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use understudy_storage::fmp4::FragmentMuxer;
use understudy_storage::{InputFrame, Store, StoreConfig, TrackParams, VolumeConfig};

const CLIP: &str = "fixtures/h264-1080p25.mp4";
/// 25 fps at 90 kHz.
const FRAME_90K: i64 = 3600;
/// 2026-01-01T00:00:00Z, 90 kHz.
const START_90K: i64 = 1_767_225_600 * 90_000;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo().join(target)
    };
    target.join("bench-micro").join(name)
}

/// (size, key) of every frame of the clip, in decode order.
fn clip_frames() -> Vec<(usize, bool)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=size,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(repo().join(CLIP))
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg)");
    let frames: Vec<(usize, bool)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (size, flags) = l.split_once(',')?;
            Some((size.parse().ok()?, flags.contains('K')))
        })
        .collect();
    assert!(
        frames.first().is_some_and(|f| f.1),
        "{CLIP}: expected frames starting with a key frame"
    );
    frames
}

/// The clip's `avc1` sample entry, cut out of its `stsd` (ISO/IEC 14496-12 §8.5.2).
fn track_params() -> Arc<TrackParams> {
    let file = std::fs::read(repo().join(CLIP)).expect("fixture clip readable");
    let stsd = file
        .windows(4)
        .position(|w| w == b"stsd")
        .expect("clip has an stsd box");
    // After the type: version/flags (4), entry_count (4), then the first entry box.
    let at = stsd + 4 + 8;
    let size = u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes")) as usize;
    assert_eq!(&file[at + 4..at + 8], b"avc1", "first sample entry is avc1");
    Arc::new(TrackParams {
        codec: "avc1.640028".into(),
        width: 1920,
        height: 1080,
        sample_entry: Bytes::copy_from_slice(&file[at..at + size]),
        audio: None,
    })
}

/// `n` frames cycling through the clip's sizes; payloads share zeroed buffers.
fn frames(n: usize) -> Vec<(i64, bool, Bytes)> {
    let clip = clip_frames();
    let max = clip.iter().map(|f| f.0).max().unwrap_or(1);
    let zeros = Bytes::from(vec![0u8; max]);
    (0..n)
        .map(|i| {
            let (size, key) = clip[i % clip.len()];
            (i as i64 * FRAME_90K, key, zeros.slice(..size))
        })
        .collect()
}

fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig::new(
        "bench-micro",
        dir.join("state"),
        vec![VolumeConfig {
            path: dir.join("disk"),
            max_bytes: None,
            reserve: None,
        }],
    )
}

/// One channel's frames through `FragmentMuxer`, fragment headers encoded on every cut.
fn bench_mux(c: &mut Criterion) {
    let input = frames(250); // 10 s, 5 GOPs
    let mut g = c.benchmark_group("fragment_mux");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("1080p_10s", |b| {
        b.iter(|| {
            let mut m = FragmentMuxer::default();
            let mut bytes = 0u64;
            for (t, key, data) in &input {
                if let Some(f) = m.push(*t, *key, data.clone()) {
                    bytes += f.len();
                }
            }
            if let Some(f) = m.flush() {
                bytes += f.len();
            }
            black_box(bytes)
        })
    });
    g.finish();
}

/// Writes 10 minutes of channel 1 through a `ChannelWriter`, then exports it into a sink.
fn bench_export(c: &mut Criterion) {
    let dir = work_dir(&format!("export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(store_config(&dir)).expect("store opens");
    let params = track_params();
    let mut w = store.channel_writer(1, 4_000_000).expect("channel writer");
    for (t, key, data) in frames(25 * 600) {
        w.push(
            &params,
            InputFrame {
                cts_offset: 0,
                time_90k: START_90K + t,
                key,
                data,
            },
        )
        .expect("frame written");
    }
    w.close().expect("segments durable");
    let (from, to) = (START_90K, START_90K + 600 * 90_000);
    let probe = store
        .export(1, from, to, &mut std::io::sink(), &mut |_, _| {})
        .expect("export works");
    eprintln!(
        "export: {} frames, {} bytes from {} segments",
        probe.frames, probe.bytes, probe.segments
    );
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Bytes(probe.bytes))
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    g.bench_function("10min_1080p_to_sink", |b| {
        b.iter(|| {
            black_box(
                store
                    .export(1, from, to, &mut std::io::sink(), &mut |_, _| {})
                    .expect("export")
                    .bytes,
            )
        })
    });
    // The same from disk: the segment files' pages are dropped from the page cache first.
    let files = segment_files(&dir.join("disk"));
    g.bench_function("10min_1080p_to_sink_cold", |b| {
        b.iter_batched(
            || drop_cached(&files),
            |()| {
                black_box(
                    store
                        .export(1, from, to, &mut std::io::sink(), &mut |_, _| {})
                        .expect("export")
                        .bytes,
                )
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    let _ = store.shutdown();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("volume readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out
}

/// Asks the kernel to drop the files' (clean, already synced) pages from the page cache.
fn drop_cached(files: &[PathBuf]) {
    use std::os::fd::AsRawFd;
    for f in files {
        let file = std::fs::File::open(f).expect("segment opens");
        // SAFETY: posix_fadvise only reads its integer arguments.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise on {}", f.display());
    }
}

const CATALOG_CHANNELS: u32 = 100;
const SEGMENT_S: i64 = 60;

fn catalog_days() -> i64 {
    std::env::var("UNDERSTUDY_BENCH_CATALOG_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .filter(|d| *d > 0)
        .unwrap_or(30)
}

/// A catalog of `days` × 1440 closed 60 s segments per channel, as the syncer would leave it
/// (rows interleaved across channels in time order, each with a 60-fragment index blob). The
/// catalog module is private to storage, so rows go in through SQL with its schema; built
/// once and kept in target/bench-micro/ (several GB for 30 days).
fn month_catalog(days: i64) -> PathBuf {
    let dir = work_dir(&format!("catalog-{days}d-{CATALOG_CHANNELS}ch"));
    if dir.join("complete").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(store_config(&dir)).expect("store opens");
    store.shutdown().expect("store shuts down");
    drop(store);
    let started = std::time::Instant::now();
    let mut conn = rusqlite::Connection::open(dir.join("state/catalog.db")).expect("catalog opens");
    conn.pragma_update(None, "journal_mode", "OFF")
        .expect("pragma");
    conn.pragma_update(None, "synchronous", "OFF")
        .expect("pragma");
    conn.pragma_update(None, "cache_size", -262_144)
        .expect("pragma");
    let volume_id: i64 = conn
        .query_row("SELECT id FROM volume", [], |r| r.get(0))
        .expect("volume row");
    let params = track_params();
    // A version byte and 60 entries of 25 bytes: the size of a real 60 s segment's index.
    let blob = vec![1u8; 1 + 60 * 25];
    let per_day = 86_400 / SEGMENT_S;
    for day in 0..days {
        let tx = conn.transaction().expect("transaction");
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO segment (channel, volume_id, path, start_90k, end_90k, bytes, frames, codec, width, height,
                                          sample_entry, open, fragments)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12)",
                )
                .expect("prepare");
            for i in 0..per_day {
                for ch in 1..=CATALOG_CHANNELS {
                    // Channels start staggered, like the writer's first segments.
                    let start = START_90K
                        + ((day * per_day + i) * SEGMENT_S * 1000 + i64::from(ch) * 7919 % 60_000)
                            * 90;
                    let end = start + SEGMENT_S * 90_000;
                    let ts = jiff::Timestamp::from_millisecond(start / 90).expect("time in range");
                    let path = format!(
                        "ch{ch:03}/{}/{}.mp4",
                        ts.strftime("%Y-%m-%d"),
                        ts.strftime("%Y%m%dT%H%M%S%.3fZ")
                    );
                    st.execute(rusqlite::params![
                        ch,
                        volume_id,
                        path,
                        start,
                        end,
                        31_500_000i64,
                        1500i64,
                        params.codec,
                        params.width,
                        params.height,
                        params.sample_entry.as_ref(),
                        blob
                    ])
                    .expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
        eprintln!(
            "catalog: day {}/{days} ({:.0} s)",
            day + 1,
            started.elapsed().as_secs_f64()
        );
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("back to WAL");
    drop(conn);
    std::fs::write(dir.join("complete"), b"").expect("marker");
    dir
}

fn bench_catalog(c: &mut Criterion) {
    let days = catalog_days();
    let dir = month_catalog(days);
    let store = Store::open_read_only(store_config(&dir)).expect("catalog opens read-only");
    let end = START_90K + days * 86_400 * 90_000;
    let hour = 3600 * 90_000;
    let ch = CATALOG_CHANNELS / 2;
    let cases: [(&str, Option<i64>, Option<i64>); 4] = [
        ("last_hour", Some(end - hour), Some(end)),
        ("first_hour", Some(START_90K), Some(START_90K + hour)),
        (
            "one_day_mid",
            Some(START_90K + days / 2 * 24 * hour),
            Some(START_90K + (days / 2 + 1) * 24 * hour),
        ),
        ("everything", None, None),
    ];
    let mut g = c.benchmark_group(format!("catalog_recordings_{days}d_{CATALOG_CHANNELS}ch"));
    for (name, from, to) in cases {
        let n = store.recordings(ch, from, to).expect("query").len();
        eprintln!("catalog: {name}: {n} segments");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(from, to),
            |b, &(from, to)| {
                b.iter(|| black_box(store.recordings(ch, from, to).expect("query").len()))
            },
        );
    }
    g.finish();
}

/// Login cost: one Argon2id verification (m = 19 MiB, t = 2, p = 1), what every login and
/// every failed login costs in CPU; and the SHA-256 lookup hash of a bearer token.
fn bench_auth(c: &mut Criterion) {
    use understudy::auth::{password, secret};
    let pw = secret::Password::new("correct horse battery");
    let phc = password::hash(&pw).expect("hash");
    let mut g = c.benchmark_group("auth");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| b.iter(|| black_box(password::verify(&pw, &phc))));
    g.bench_function("token_sha256", |b| b.iter(|| black_box(secret::digest_hex("us_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"))));
    g.finish();
}

criterion_group!(benches, bench_mux, bench_export, bench_catalog, bench_auth);
criterion_main!(benches);
