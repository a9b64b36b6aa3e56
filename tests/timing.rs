//! Issue 8, video timing: cameras with B-frames (H.264 and H.265) recorded by `understudy run`
//! from camsim keep decode and presentation times apart and in order.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const H264_B: &str = "h264-bframes-360p25.mp4";
const H265_B: &str = "h265-bframes-360p25.mp4";

/// (pts, dts) of every video packet, in 90 kHz ticks, in file order.
fn packets(path: &Path) -> Vec<(i64, i64)> {
    ffprobe_video_csv(path, "packet=pts,dts")
        .iter()
        .map(|l| {
            let v: Vec<i64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

/// Decode times strictly increase, presentation never precedes decode, and sorting by
/// presentation time sorts camsim's capture numbers. Returns the packet count.
fn assert_b_frame_order(path: &Path) -> usize {
    let p = packets(path);
    assert!(!p.is_empty(), "{}: no packets", path.display());
    for w in p.windows(2) {
        assert!(w[1].1 > w[0].1, "{}: decode times {w:?}", path.display());
    }
    assert!(p.iter().all(|(pts, dts)| pts >= dts), "{}: pts < dts in {p:?}", path.display());
    let tags: Vec<u64> = understudy::camsim::find_camsim_tags(&std::fs::read(path).unwrap()).into_iter().map(|(_, f)| f).collect();
    assert_eq!(tags.len(), p.len(), "{}: one SEI tag per sample", path.display());
    // Any ten frames of these clips hold B-frames (a segment cut at stop may be shorter).
    assert!(p.len() < 10 || tags.windows(2).any(|w| w[1] < w[0]), "{}: no reordering recorded", path.display());
    let mut by_pts: Vec<(i64, u64)> = p.iter().map(|x| x.0).zip(tags).collect();
    by_pts.sort();
    for w in by_pts.windows(2) {
        assert!(w[1].1 > w[0].1, "{}: presentation order is not capture order: {w:?}", path.display());
    }
    p.len()
}

/// Acceptance (issue 8): B-frames from camsim, H.264 and H.265: per segment and in an export
/// across segments, decode times increase, pts ≥ dts, presentation order = capture order, and
/// `ffmpeg -xerror` decodes everything without a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_keep_presentation_order() {
    let sim = camsim(&[H264_B, H265_B]).await;
    let cams: String = (1..=2).map(|i| format!("[[camera]]\nchannel = {i}\nurl = \"{}\"\n\n", sim.url(i))).collect();
    let setup = Setup::new(2, "segment_duration = \"3s\"", &cams);
    let mut child = setup.spawn_run();
    let ok = wait_until_async(Duration::from_secs(60), || (1..=2).all(|c| setup.segment_files(c).len() >= 2)).await;
    assert!(ok, "no rotation on every channel: {}", setup.log());
    tokio::time::sleep(Duration::from_secs(4)).await;
    sigterm(&mut child);
    for ch in 1..=2u32 {
        let files = setup.segment_files(ch);
        let mut frames = 0;
        for f in &files {
            ffmpeg_decodes(f).unwrap_or_else(|e| panic!("channel {ch}: {e}"));
            frames += assert_b_frame_order(f);
        }
        assert!(frames > 100, "channel {ch}: {frames} frames");
        // An export across the segments keeps the offsets.
        let recs = setup.recordings(ch);
        let time = |r: &serde_json::Value, k: &str| understudy::commands::time::format_90k(r[k].as_i64().unwrap());
        let from = time(recs.first().unwrap(), "start_90k");
        let to = time(recs.last().unwrap(), "end_90k");
        let out = setup.dir.path().join(format!("export{ch}.mp4"));
        setup.cli(&["export", "--channel", &ch.to_string(), "--from", &from, "--to", &to, "-o", out.to_str().unwrap()]);
        ffmpeg_decodes(&out).unwrap_or_else(|e| panic!("channel {ch} export: {e}"));
        let exported = assert_b_frame_order(&out);
        assert!(exported + 10 >= frames, "channel {ch}: export has {exported} of {frames} frames");
    }
    sim.shutdown().await;
}

/// Acceptance (issue 8): RTP time jumping back and forward ends the run and re-anchors it to
/// wall time with an event each; every recording stays within 1 s of wall time and no sample
/// lasts under 1 ms or over 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_jumps_reanchor_to_wall_time() {
    use understudy::camsim::Fault;
    let sim = camsim(&[H264]).await;
    let setup = Setup::new(1, "", &format!("[[camera]]\nchannel = 1\nurl = \"{}\"\n", sim.url(1)));
    let started = understudy::commands::time::now_90k();
    let mut child = setup.spawn_run();
    let ok = wait_until_async(Duration::from_secs(60), || !setup.segment_files(1).is_empty()).await;
    assert!(ok, "no recording: {}", setup.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.inject(1, Fault::RtpBack);
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim.inject(1, Fault::RtpForward);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events = setup.api_get("/api/events?limit=1000").expect("events");
    sigterm(&mut child);
    let ended = understudy::commands::time::now_90k();
    let reanchors: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "time_reanchored" && e["channel"] == 1)
        .collect();
    assert!(reanchors.len() >= 2, "expected a re-anchor per jump: {events}");
    let recs = setup.recordings(1);
    assert!(recs.len() >= 3, "a run per anchor: {recs:?}");
    for r in &recs {
        let (s, e) = (r["start_90k"].as_i64().unwrap(), r["end_90k"].as_i64().unwrap());
        assert!(s >= started - 90_000 && e <= ended + 90_000, "recording {r} outside [{started}, {ended}]");
    }
    for f in setup.segment_files(1) {
        ffmpeg_decodes(&f).unwrap();
        let p = packets(&f);
        for w in p.windows(2) {
            let d = w[1].1 - w[0].1;
            assert!((90..=900_000).contains(&d), "{}: sample duration {d} ticks", f.display());
        }
    }
    sim.shutdown().await;
}

/// Pictures in the decoder's output order (the bitstream's own presentation order, from its
/// picture order counts, whatever the container says): their container pts, from ffprobe.
fn output_order_pts(path: &Path) -> Vec<i64> {
    ffprobe_video_csv(path, "frame=pts")
        .iter()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("{}: frame pts {l:?}", path.display())))
        .collect()
}

/// For a recording without capture tags: decode times strictly increase, pts ≥ dts, and the
/// container's presentation order is the bitstream's: the decoder emits every packet as a
/// picture, in increasing pts one frame duration apart (within the ±500 ppm slew). Returns the
/// packet count.
///
/// A file that starts at an H.265 CRA picture (open GOP) may lose its leading pictures: those
/// after the first packet in decode order but presented before it (RASL) refer to the GOP
/// before, and a decoder starting at the CRA skips them (H.265 section 8.1.3); every other
/// packet must still come out.
///
/// The last file of a recording stopped mid-GOP (`cut_at_stop`) may end with a reference
/// picture whose B-frames, presented before it, never arrived: gaps among its last pictures.
fn assert_presentation_order(path: &Path, frame_90k: i64) -> usize {
    assert_presentation_order_cut(path, frame_90k, false)
}

fn assert_presentation_order_cut(path: &Path, frame_90k: i64, cut_at_stop: bool) -> usize {
    let p = packets(path);
    assert!(!p.is_empty(), "{}: no packets", path.display());
    for w in p.windows(2) {
        assert!(w[1].1 > w[0].1, "{}: decode times {w:?}", path.display());
    }
    assert!(p.iter().all(|(pts, dts)| pts >= dts), "{}: pts < dts in {p:?}", path.display());
    assert!(p.len() < 10 || p.windows(2).any(|w| w[1].0 < w[0].0), "{}: no reordering recorded: {p:?}", path.display());
    let mut shown = output_order_pts(path);
    let leading: Vec<i64> = p.iter().map(|x| x.0).filter(|&pts| pts < p[0].0).collect();
    if shown.len() + leading.len() == p.len() {
        // Put the skipped leading pictures back where they belong for the checks below.
        shown.extend(&leading);
        shown.sort_unstable();
    }
    assert_eq!(shown.len(), p.len(), "{}: every packet (but a CRA's leading pictures) decodes to one picture", path.display());
    // Reorder depth 2 (these streams): the gaps lie among the last three pictures.
    let spaced = if cut_at_stop { &shown[..shown.len().saturating_sub(3)] } else { &shown[..] };
    for w in spaced.windows(2) {
        let d = w[1] - w[0];
        assert!((d - frame_90k).abs() <= frame_90k / 100, "{}: pictures in output order {w:?} are not one frame apart", path.display());
    }
    let mut sorted: Vec<i64> = p.iter().map(|x| x.0).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, shown, "{}: sorting by pts differs from the decoder's order", path.display());
    p.len()
}

/// Acceptance (issue 8): B-frames from GStreamer's RTSP server, H.264 and H.265 (an MP4 served
/// with qtdemux, which keeps PTS and DTS): per segment and in an export across segments, decode
/// times increase, pts ≥ dts, presentation order is the bitstream's, and `ffmpeg -xerror`
/// decodes everything without a message.
#[test]
fn b_frames_from_gstreamer_keep_presentation_order() {
    let dir = tempfile::tempdir().unwrap();
    // 20 s of each 4 s clip, stream-copied (timestamps kept), so a session spans segments.
    let servers: Vec<GstServer> = [("h264", H264_B), ("h265", H265_B)]
        .iter()
        .map(|(codec, clip)| {
            let list = dir.path().join(format!("{codec}.txt"));
            std::fs::write(&list, format!("file '{}'\n", fixture(clip).display()).repeat(5)).unwrap();
            let long = dir.path().join(format!("{codec}.mp4"));
            let st = Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i"])
                .arg(&list)
                .args(["-c", "copy"])
                .arg(&long)
                .status()
                .unwrap();
            assert!(st.success(), "ffmpeg concat {codec}");
            GstServer::start_args(&["--codec", codec, "--file", long.to_str().unwrap()])
        })
        .collect();
    let cams: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("[[camera]]\nchannel = {}\nurl = \"rtsp://127.0.0.1:{}/cam\"\n\n", i + 1, s.port))
        .collect();
    let setup = Setup::new(2, "segment_duration = \"4s\"", &cams);
    let mut child = setup.spawn_run();
    let ok = wait_until(Duration::from_secs(60), || {
        (1..=2).all(|ch| setup.try_recordings(ch).is_some_and(|r| r.iter().filter(|s| s["open"] == false).count() >= 3))
    });
    sigterm(&mut child);
    assert!(ok, "GStreamer B-frame streams were not recorded: {}", setup.log());
    for ch in 1..=2u32 {
        let files = setup.segment_files(ch);
        let mut frames = 0;
        for (i, f) in files.iter().enumerate() {
            ffmpeg_decodes(f).unwrap_or_else(|e| panic!("channel {ch}: {e}"));
            frames += assert_presentation_order_cut(f, 3600, i + 1 == files.len());
        }
        assert!(frames > 250, "channel {ch}: {frames} frames");
        let recs = setup.recordings(ch);
        let time = |r: &serde_json::Value, k: &str| understudy::commands::time::format_90k(r[k].as_i64().unwrap());
        let (first, third) = (&recs[0], &recs[2]);
        let out = setup.dir.path().join(format!("export{ch}.mp4"));
        setup.cli(&["export", "--channel", &ch.to_string(), "--from", &time(first, "start_90k"), "--to", &time(third, "end_90k"), "-o", out.to_str().unwrap()]);
        ffmpeg_decodes(&out).unwrap_or_else(|e| panic!("channel {ch} export: {e}"));
        let exported = assert_presentation_order(&out, 3600);
        let recorded: u64 = recs[..3].iter().map(|r| r["frames"].as_u64().unwrap()).sum();
        assert!(exported as u64 + 1 >= recorded && recorded >= 150, "channel {ch}: export has {exported} of the {recorded} frames recorded");
    }
}

/// Issue 8: H.265 with open GOPs (x265's default: a CRA picture starts every GOP, an IDR only
/// the first) and B-frames, live from GStreamer's RTSP server. retina marks only IDR pictures
/// as key frames, so such a run used to stay in one segment forever; now segments are cut at
/// CRA pictures, near the configured duration, and each one and an export across them decode
/// cleanly in presentation order.
#[test]
fn open_gop_h265_is_cut_at_cra_pictures() {
    let server = GstServer::start_args(&["--codec", "h265", "--size", "320x240", "--bframes", "2", "--open-gop"]);
    let cams = format!("[[camera]]\nchannel = 1\nurl = \"rtsp://127.0.0.1:{}/cam\"\n", server.port);
    let setup = Setup::new(1, "segment_duration = \"3s\"", &cams);
    let mut child = setup.spawn_run();
    let closed = || setup.try_recordings(1).map_or(0, |r| r.iter().filter(|s| s["open"] == false).count());
    let ok = wait_until(Duration::from_secs(60), || closed() >= 4);
    sigterm(&mut child);
    assert!(ok, "open-GOP H.265 was not cut into segments: {}", setup.log());
    let recs = setup.recordings(1);
    // Between the first (staggered) segment and the last (cut at stop), each is cut at the
    // first key frame (every second) at or after the configured 3 s, not at the end of the run.
    for r in &recs[1..recs.len() - 1] {
        let span = r["end_90k"].as_i64().unwrap() - r["start_90k"].as_i64().unwrap();
        assert!((2 * 90_000..=4 * 90_000 + 45_000).contains(&span), "segment of {span} ticks: {r}");
    }
    let files = setup.segment_files(1);
    for (i, f) in files.iter().enumerate() {
        ffmpeg_decodes(f).unwrap();
        let flags = ffprobe_video_csv(f, "packet=flags");
        assert!(flags.first().is_some_and(|l| l.starts_with('K')), "{}: does not start at a key frame: {flags:?}", f.display());
        assert_presentation_order_cut(f, 3600, i + 1 == files.len());
    }
    let time = |r: &serde_json::Value, k: &str| understudy::commands::time::format_90k(r[k].as_i64().unwrap());
    let out = setup.dir.path().join("export.mp4");
    setup.cli(&["export", "--channel", "1", "--from", &time(&recs[0], "start_90k"), "--to", &time(&recs[3], "end_90k"), "-o", out.to_str().unwrap()]);
    ffmpeg_decodes(&out).unwrap();
    let exported = assert_presentation_order(&out, 3600);
    assert!(exported >= 200, "export has {exported} frames");
}
